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

/// The value of cookie `name` across every `Cookie` header (HTTP/2 sends one per cookie).
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Invalid> {
    let mut found = None;
    for value in headers.get_all(COOKIE) {
        // A cookie header that is not text cannot hold a token; other cookies may still.
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            if k.trim() != name {
                continue;
            }
            if found.is_some() {
                return Err(Invalid::Ambiguous);
            }
            let v = v.trim();
            found = Some(
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v),
            );
        }
    }
    Ok(found)
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
        assert!(TokenSource::parse("query:t").is_err());
        assert_eq!(c.to_string(), "cookie:session");
    }
}
