//! Who may call `/admin/*`.
//!
//! With `admin.token` set: `Authorization: Bearer <token>`, compared in constant time. Both sides
//! are hashed first, so the comparison always runs over 32 bytes and leaks neither where the
//! first difference is nor the token's length.
//!
//! Without a token (only allowed when the admin listener is loopback-only) the API is open to
//! local processes, but not to web pages the operator happens to visit: a request naming another
//! site as its `Origin`, or reaching us under a DNS name (DNS rebinding), is refused.

use http::header::{AUTHORIZATION, HOST, ORIGIN};
use http::Request;
use sha2::{Digest, Sha256};

use super::reply::ApiError;

pub(crate) fn check<B>(req: &Request<B>, token: Option<&str>) -> Result<(), ApiError> {
    match token {
        Some(token) => bearer(req, token),
        None => local_only(req),
    }
}

fn bearer<B>(req: &Request<B>, token: &str) -> Result<(), ApiError> {
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or(ApiError::Unauthorized(
            "missing `Authorization: Bearer <admin token>` header",
        ))?;
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("invalid admin token"))
    }
}

/// Equality of two secrets in time independent of their contents and lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn local_only<B>(req: &Request<B>) -> Result<(), ApiError> {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !is_local_host(host) {
        return Err(ApiError::Forbidden(
            "without admin.token the admin API only answers requests addressed to a loopback \
             address (Host 127.0.0.1, [::1] or localhost)"
                .into(),
        ));
    }
    if let Some(origin) = req.headers().get(ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
        if !same {
            return Err(ApiError::Forbidden(
                "cross-origin requests to the admin API are refused".into(),
            ));
        }
    }
    Ok(())
}

/// A Host header naming a loopback address or `localhost`, with an optional port.
fn is_local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(inside, _)| inside),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("/admin/blocks");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn bearer_tokens() {
        let ok = |h: &[(&str, &str)]| check(&req(h), Some("s3cret")).is_ok();
        assert!(ok(&[("authorization", "Bearer s3cret")]));
        assert!(ok(&[("authorization", "bearer  s3cret ")]));
        assert!(!ok(&[]));
        assert!(!ok(&[("authorization", "Bearer s3cre")]));
        assert!(!ok(&[("authorization", "Bearer s3crett")]));
        assert!(!ok(&[("authorization", "Basic s3cret")]));
        assert!(!ok(&[("authorization", "s3cret")]));
        assert!(!ok(&[("authorization", "Bearer")]));
    }

    #[test]
    fn open_mode_is_local_only() {
        let ok = |h: &[(&str, &str)]| check(&req(h), None).is_ok();
        assert!(ok(&[("host", "127.0.0.1:9100")]));
        assert!(ok(&[("host", "[::1]:9100")]));
        assert!(ok(&[("host", "localhost:9100")]));
        assert!(ok(&[
            ("host", "127.0.0.1:9100"),
            ("origin", "http://127.0.0.1:9100")
        ]));
        assert!(!ok(&[("host", "evil.example:9100")]));
        assert!(!ok(&[]));
        assert!(!ok(&[
            ("host", "127.0.0.1:9100"),
            ("origin", "https://evil.example")
        ]));
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
