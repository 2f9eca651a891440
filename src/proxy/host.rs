//! The host a request addresses, checked as RFC 9112 section 3.2 asks of a server: an HTTP/1.1
//! request has exactly one `Host` line, every request at most one, and its value is a valid
//! `host[:port]`. When the request target also names an authority (absolute form, or HTTP/2's
//! `:authority`), `Host` must name the same one: an intermediary in front that routed on `Host`
//! and this gateway routing on the target must never see two different requests.

use http::header::HOST;
use http::{Request, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadHost {
    #[error("HTTP/1.1 request without a Host header")]
    Missing,
    #[error("more than one Host header")]
    Repeated,
    #[error("Host is not a valid host[:port]")]
    Invalid,
    #[error("Host differs from the authority of the request target")]
    Conflicting,
}

/// The host the client addressed: the target's authority when it has one, else `Host`; `None`
/// for an HTTP/1.0 request without either.
pub(crate) fn addressed<B>(req: &Request<B>) -> Result<Option<&str>, BadHost> {
    // One lookup for both "absent" and "repeated".
    let mut lines = req.headers().get_all(HOST).iter();
    let host = lines.next();
    if lines.next().is_some() {
        return Err(BadHost::Repeated);
    }
    let host = match host {
        Some(v) => {
            let text = v.to_str().map_err(|_| BadHost::Invalid)?;
            if !valid_host(text.as_bytes()) {
                return Err(BadHost::Invalid);
            }
            Some(text)
        }
        None if req.version() == Version::HTTP_11 => return Err(BadHost::Missing),
        None => None,
    };
    let Some(authority) = req.uri().authority() else {
        return Ok(host);
    };
    // User info in a request target is deprecated and a known phishing vector (RFC 9110
    // section 4.2.4): treat it as an error.
    if authority.as_str().contains('@') {
        return Err(BadHost::Invalid);
    }
    if let Some(host) = host {
        let default_port = match req.uri().scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        };
        if !same_authority(authority.as_str(), host, default_port) {
            return Err(BadHost::Conflicting);
        }
    }
    Ok(Some(authority.as_str()))
}

/// `host [":" port]` where host is an IP literal in brackets or a reg-name (RFC 3986).
fn valid_host(v: &[u8]) -> bool {
    let port = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        &rest[end + 1..]
    } else {
        let end = v.iter().position(|&b| b == b':').unwrap_or(v.len());
        let reg_name = &v[..end];
        if !reg_name.iter().all(|&b| is_reg_name_byte(b)) {
            return false;
        }
        &v[end..]
    };
    match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// unreserved, sub-delims and `%` of pct-encoded.
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// Hosts compared case-insensitively, ports with the scheme's default filled in.
fn same_authority(a: &str, b: &str, default_port: Option<u16>) -> bool {
    let (host_a, port_a) = split_port(a);
    let (host_b, port_b) = split_port(b);
    if !host_a.eq_ignore_ascii_case(host_b) {
        return false;
    }
    let port = |p: Option<&str>| match p {
        None | Some("") => default_port,
        Some(p) => p.parse::<u16>().ok(),
    };
    match (port_a, port_b) {
        (None, None) => true,
        (a, b) if a == b => true,
        (a, b) => port(a).is_some() && port(a) == port(b),
    }
}

fn split_port(authority: &str) -> (&str, Option<&str>) {
    // A colon after the closing bracket of an IP literal, or any colon in a reg-name.
    let search_from = authority.rfind(']').unwrap_or(0);
    match authority[search_from..].find(':') {
        Some(i) => {
            let i = search_from + i;
            (&authority[..i], Some(&authority[i + 1..]))
        }
        None => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::get(uri).version(version);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).expect("test request")
    }

    #[test]
    fn host_counts() {
        let v11 = Version::HTTP_11;
        assert_eq!(addressed(&req(v11, "/", &[])), Err(BadHost::Missing));
        assert_eq!(
            addressed(&req(v11, "/", &["a", "a"])),
            Err(BadHost::Repeated)
        );
        assert_eq!(
            addressed(&req(v11, "/", &["a.example"])),
            Ok(Some("a.example"))
        );
        assert_eq!(addressed(&req(Version::HTTP_10, "/", &[])), Ok(None));
        assert_eq!(
            addressed(&req(Version::HTTP_10, "/", &["a", "b"])),
            Err(BadHost::Repeated)
        );
        // HTTP/2: :authority alone is enough.
        assert_eq!(
            addressed(&req(Version::HTTP_2, "https://a.example/", &[])),
            Ok(Some("a.example"))
        );
    }

    #[test]
    fn host_syntax() {
        for good in [
            "a.example",
            "a.example:8080",
            "[::1]",
            "[::1]:443",
            "127.0.0.1:80",
            "",
            "xn--bcher-kva.example",
            "a.example:",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "a b",
            "user@a.example",
            "a.example:80x",
            "a.example:123456",
            "[::1",
            "[]",
            "[::1]x",
            "a/b",
            "a:1:2",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn absolute_form_must_agree_with_host() {
        let v11 = Version::HTTP_11;
        assert_eq!(
            addressed(&req(v11, "http://a.example/x", &["b.example"])),
            Err(BadHost::Conflicting)
        );
        assert_eq!(
            addressed(&req(v11, "http://a.example/x", &["A.EXAMPLE:80"])),
            Ok(Some("a.example"))
        );
        assert_eq!(
            addressed(&req(v11, "https://a.example:443/x", &["a.example"])),
            Ok(Some("a.example:443"))
        );
        assert_eq!(
            addressed(&req(v11, "http://a.example:8080/x", &["a.example"])),
            Err(BadHost::Conflicting)
        );
        assert_eq!(
            addressed(&req(v11, "http://[::1]:8080/x", &["[::1]:8080"])),
            Ok(Some("[::1]:8080"))
        );
        assert_eq!(
            addressed(&req(v11, "http://u@a.example/x", &["a.example"])),
            Err(BadHost::Invalid)
        );
        // Absolute form does not replace the Host line HTTP/1.1 requires.
        assert_eq!(
            addressed(&req(v11, "http://a.example/x", &[])),
            Err(BadHost::Missing)
        );
    }
}
