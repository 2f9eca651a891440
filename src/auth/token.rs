//! Where a request's token is: `Authorization: Bearer`, a named header, or a named cookie.

use std::fmt;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName};

use super::Invalid;

/// Tokens longer than this are refused unread (a JWT with a handful of claims is well under
/// 2 KiB; the bound keeps signature checks of junk cheap).
const MAX_TOKEN_LEN: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// `Authorization: Bearer <token>` (the default).
    Bearer,
    /// The whole value of this header.
    Header(HeaderName),
    /// The value of this cookie.
    Cookie(Box<str>),
}

/// The config spelling.
impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Bearer => f.write_str("bearer"),
            TokenSource::Header(name) => write!(f, "header:{name}"),
            TokenSource::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

impl TokenSource {
    /// Parse the config spelling; `Err` says what is accepted.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text == "bearer" {
            return Ok(TokenSource::Bearer);
        }
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(name.as_bytes())
                .map(TokenSource::Header)
                .map_err(|_| format!("`{name}` is not a valid HTTP header name"));
        }
        if let Some(name) = text.strip_prefix("cookie:") {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            return if valid {
                Ok(TokenSource::Cookie(name.into()))
            } else {
                Err(format!("`{name}` is not a valid cookie name"))
            };
        }
        Err(format!(
            "unknown token source `{text}`; expected \"bearer\", \"header:NAME\" or \
             \"cookie:NAME\""
        ))
    }

    /// The token, `Ok(None)` when the request carries none. A token sent twice is ambiguous (the
    /// upstream may read either copy) and refused as invalid, never picked from.
    pub(crate) fn find<'h>(&self, headers: &'h HeaderMap) -> Result<Option<&'h str>, Invalid> {
        let token = match self {
            TokenSource::Bearer => {
                let Some(value) = single(headers, &AUTHORIZATION)? else {
                    return Ok(None);
                };
                // Another scheme (Basic, say) carries no bearer token.
                match value.split_once(' ') {
                    Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
                    _ => return Ok(None),
                }
            }
            TokenSource::Header(name) => match single(headers, name)? {
                Some(value) => value.trim(),
                None => return Ok(None),
            },
            TokenSource::Cookie(name) => match cookie(headers, name)? {
                Some(value) => value,
                None => return Ok(None),
            },
        };
        if token.is_empty() {
            return Ok(None);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Invalid::Malformed);
        }
        Ok(Some(token))
    }
}

/// The one value of `name`, as text; a repeated or non-text value is invalid.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, Invalid> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Invalid::Ambiguous);
    }
    value.to_str().map(Some).map_err(|_| Invalid::Malformed)
}

/// The value of cookie `name` across every `Cookie` header (HTTP/2 sends one per cookie). Read
/// as bytes: a header that is not text may still carry the cookie for an upstream that reads it
/// (a copy the gateway skipped would be the one the upstream takes), so every copy counts, and
/// one in a name an upstream would decode to `name` (`sess%69on`) counts too.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Invalid> {
    let mut found = None;
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if !names_cookie(pair[..eq].trim_ascii(), name.as_bytes()) {
                continue;
            }
            if found.is_some() {
                return Err(Invalid::Ambiguous);
            }
            let v =
                std::str::from_utf8(pair[eq + 1..].trim_ascii()).map_err(|_| Invalid::Malformed)?;
            found = Some(
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v),
            );
        }
    }
    Ok(found)
}

/// Whether cookie name `raw` (as sent) is `name`, as sent or once percent-decoded, in any ASCII
/// case (ASP.NET Core looks cookies up without case).
fn names_cookie(raw: &[u8], name: &[u8]) -> bool {
    if raw.eq_ignore_ascii_case(name) {
        return true;
    }
    if !raw.contains(&b'%') {
        return false;
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    decoded.eq_ignore_ascii_case(name)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer() {
        let s = TokenSource::Bearer;
        assert_eq!(
            s.find(&headers(&[("authorization", "Bearer a.b.c")])),
            Ok(Some("a.b.c"))
        );
        assert_eq!(
            s.find(&headers(&[("authorization", "bearer  a.b.c ")])),
            Ok(Some("a.b.c"))
        );
        assert_eq!(
            s.find(&headers(&[("authorization", "Basic eHk6eg==")])),
            Ok(None)
        );
        assert_eq!(s.find(&headers(&[("authorization", "Bearer ")])), Ok(None));
        assert_eq!(s.find(&headers(&[])), Ok(None));
        let twice = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(s.find(&twice), Err(Invalid::Ambiguous));
    }

    #[test]
    fn header_and_cookie() {
        let s = TokenSource::parse("header:X-Token").unwrap();
        assert_eq!(s.find(&headers(&[("x-token", "t")])), Ok(Some("t")));
        let c = TokenSource::parse("cookie:session").unwrap();
        let h = headers(&[("cookie", "a=1; session=tok; b=2")]);
        assert_eq!(c.find(&h), Ok(Some("tok")));
        let h = headers(&[("cookie", "a=1"), ("cookie", "session=\"tok\"")]);
        assert_eq!(c.find(&h), Ok(Some("tok")));
        let h = headers(&[("cookie", "session=a"), ("cookie", "session=b")]);
        assert_eq!(c.find(&h), Err(Invalid::Ambiguous));
        assert_eq!(c.find(&headers(&[("cookie", "sessionx=a")])), Ok(None));
        assert!(TokenSource::parse("cookie:a;b").is_err());
        // A copy in a header that is not text, or under an encoded name, still counts.
        let mut h = headers(&[("cookie", "session=good")]);
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"session=revoked; z=\xe9").unwrap(),
        );
        assert_eq!(c.find(&h), Err(Invalid::Ambiguous));
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_bytes(b"z=\xe9; session=tok").unwrap(),
        );
        assert_eq!(c.find(&h), Ok(Some("tok")));
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_bytes(b"session=\xe9").unwrap());
        assert_eq!(c.find(&h), Err(Invalid::Malformed));
        let h = headers(&[("cookie", "sess%69on=a; session=b")]);
        assert_eq!(c.find(&h), Err(Invalid::Ambiguous));
        let h = headers(&[("cookie", "SESSION=a; session=b")]);
        assert_eq!(c.find(&h), Err(Invalid::Ambiguous));
        let h = headers(&[("cookie", "sess%6=a; session=b")]);
        assert_eq!(c.find(&h), Ok(Some("b")));
        assert!(TokenSource::parse("query:t").is_err());
        assert_eq!(c.to_string(), "cookie:session");
    }
}
