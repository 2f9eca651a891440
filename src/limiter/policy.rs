//! Counter keys for a policy: the policy name and one typed, escaped, bounded component per key
//! part (format in `store::keys`).

use http::HeaderMap;

use crate::config::compiled::{KeyPart, Policy, Route};
use crate::store::keys::{self, Tag};

use super::{ClientId, RequestView};

/// Append the counter key of `policy` for this request to `out`: the policy name and every key
/// component, escaped so that distinct identities never share a key, long values hashed.
pub fn build_key(
    out: &mut String,
    policy: &Policy,
    route: &Route,
    client: &ClientId,
    req: RequestView<'_>,
) {
    keys::push_name(out, &policy.name);
    for part in &policy.key {
        match part {
            KeyPart::Ip => keys::push_component(out, Tag::Ip, client.key.as_bytes()),
            KeyPart::Header(name) => match header_identity(req.headers, name) {
                Some(value) => keys::push_component(out, Tag::Header, value),
                // Tagged as an IP identity, so a header value spelling an IP is never confused
                // with the fallback.
                None => keys::push_component(out, Tag::Ip, client.key.as_bytes()),
            },
            // The upstream of a case-insensitive route serves `/API` and `/api` alike: one counter.
            KeyPart::Path if route.case_insensitive => {
                keys::push_component(out, Tag::Path, req.path.to_ascii_lowercase().as_bytes())
            }
            KeyPart::Path => keys::push_component(out, Tag::Path, req.path.as_bytes()),
            KeyPart::Method => {
                keys::push_component(out, Tag::Method, req.method.as_str().as_bytes())
            }
            KeyPart::Route => keys::push_component(out, Tag::Route, route.name.as_bytes()),
            KeyPart::Global => keys::push_global(out),
        }
    }
}

/// The tier override of `policy` for this request: looked up by the value of the policy's single
/// key component (the client key, the header value, the path, the method or the route name). A
/// header-keyed request without the header has no value, so it gets the default limit.
pub fn override_limit(
    policy: &Policy,
    route: &Route,
    client: &ClientId,
    req: RequestView<'_>,
) -> Option<u64> {
    if policy.overrides.is_empty() {
        return None;
    }
    let value: &str = match policy.key.as_slice() {
        [KeyPart::Ip] => &client.key,
        [KeyPart::Header(name)] => std::str::from_utf8(header_identity(req.headers, name)?).ok()?,
        [KeyPart::Path] => req.path,
        [KeyPart::Method] => req.method.as_str(),
        [KeyPart::Route] => &route.name,
        // Validation allows overrides on one non-global component only.
        _ => return None,
    };
    policy.overrides.get(value)
}

/// The header value that identifies the client, or `None` to fall back to the client key: when the
/// header is absent, empty, not UTF-8, or sent more than once. A repeated header is ambiguous (the
/// upstream may read either copy), and keying on the whole list would let a client mint a fresh
/// identity per request by varying an extra copy; the client key cannot be varied that way.
fn header_identity<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Option<&'h [u8]> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?.trim();
    (!text.is_empty()).then_some(text.as_bytes())
}

/// The policy's key part that needs request data and so cannot be addressed by client alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {policy} is keyed by {part}, which a client address alone does not determine")]
pub struct UnaddressableKey {
    pub policy: String,
    pub part: &'static str,
}

/// Append the key the admin API means by "policy P, client C": the counter of requests from client
/// key `client`. Fails for policies keyed by a header, path, method or route, whose counters are
/// not determined by the client alone (a header-keyed policy counts per header value, and falls
/// back to the client only for requests without the header: naming the client would silently
/// address that fallback counter, not the one the operator means).
pub fn build_client_key(
    out: &mut String,
    policy: &Policy,
    client: &str,
) -> Result<(), UnaddressableKey> {
    keys::push_name(out, &policy.name);
    for part in &policy.key {
        let unaddressable = |part| UnaddressableKey {
            policy: policy.name.to_string(),
            part,
        };
        match part {
            KeyPart::Ip => keys::push_component(out, Tag::Ip, client.as_bytes()),
            KeyPart::Global => keys::push_global(out),
            KeyPart::Header(_) => return Err(unaddressable("a header")),
            KeyPart::Path => return Err(unaddressable("path")),
            KeyPart::Method => return Err(unaddressable("method")),
            KeyPart::Route => return Err(unaddressable("route")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{HeaderName, HeaderValue, Method, StatusCode};

    use super::*;
    use crate::config::compiled::{Algorithm, PathMatch, Target};

    fn policy(name: &str, key: Vec<KeyPart>) -> Policy {
        Policy {
            key,
            ..Policy::new(
                name,
                Algorithm::FixedWindow,
                10,
                std::time::Duration::from_secs(1),
            )
        }
    }

    fn route() -> Route {
        Route {
            name: Arc::from("api"),
            path: PathMatch::Prefix("/".into()),
            methods: vec![],
            host: None,
            target: Target::Respond {
                status: StatusCode::OK,
                body: Bytes::new(),
            },
            policies: vec![],
            strip_prefix: false,
            case_insensitive: false,
            cost: Default::default(),
            index: 0,
        }
    }

    fn client(key: &str) -> ClientId {
        ClientId {
            ip: key.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            key: key.into(),
        }
    }

    fn key(p: &Policy, c: &ClientId, method: &Method, path: &str, headers: &HeaderMap) -> String {
        let mut out = String::new();
        let req = RequestView {
            method,
            path,
            headers,
            cost: 1,
        };
        build_key(&mut out, p, &route(), c, req);
        out
    }

    #[test]
    fn every_part() {
        let x_key = HeaderName::from_static("x-api-key");
        let p = policy(
            "auth",
            vec![
                KeyPart::Ip,
                KeyPart::Header(x_key.clone()),
                KeyPart::Path,
                KeyPart::Method,
                KeyPart::Route,
                KeyPart::Global,
            ],
        );
        let mut h = HeaderMap::new();
        h.insert(x_key, HeaderValue::from_static("k|1"));
        let k = key(&p, &client("1.2.3.4"), &Method::POST, "/a b", &h);
        assert_eq!(k, "auth|i:1.2.3.4|h:k%7C1|p:/a%20b|m:POST|r:api|g");
    }

    #[test]
    fn header_fallback_is_not_a_header_value() {
        let x_key = HeaderName::from_static("x-api-key");
        let p = policy("p", vec![KeyPart::Header(x_key.clone())]);
        let c = client("1.2.3.4");
        let empty = HeaderMap::new();
        let absent = key(&p, &c, &Method::GET, "/", &empty);
        let mut h = HeaderMap::new();
        h.insert(x_key.clone(), HeaderValue::from_static("1.2.3.4"));
        let spelled = key(&p, &c, &Method::GET, "/", &h);
        assert_ne!(absent, spelled);
        assert_eq!(absent, "p|i:1.2.3.4");

        let mut blank = HeaderMap::new();
        blank.insert(x_key.clone(), HeaderValue::from_static("  "));
        assert_eq!(key(&p, &c, &Method::GET, "/", &blank), absent);

        let mut binary = HeaderMap::new();
        binary.insert(x_key.clone(), HeaderValue::from_bytes(b"\xffa").unwrap());
        assert_eq!(key(&p, &c, &Method::GET, "/", &binary), absent);

        let mut twice = HeaderMap::new();
        twice.append(x_key.clone(), HeaderValue::from_static("a"));
        twice.append(x_key, HeaderValue::from_static("b"));
        assert_eq!(key(&p, &c, &Method::GET, "/", &twice), absent);
    }

    #[test]
    fn names_cannot_collide_through_components() {
        // Policy "a|h:b" with no parts vs policy "a" keyed by a header "b".
        let x = HeaderName::from_static("x");
        let p1 = policy("a|h:b", vec![]);
        let p2 = policy("a", vec![KeyPart::Header(x.clone())]);
        let mut h = HeaderMap::new();
        h.insert(x, HeaderValue::from_static("b"));
        let c = client("1.2.3.4");
        assert_ne!(
            key(&p1, &c, &Method::GET, "/", &h),
            key(&p2, &c, &Method::GET, "/", &h)
        );
    }

    #[test]
    fn client_key_matches_request_key() {
        let p = policy("ip", vec![KeyPart::Ip, KeyPart::Global]);
        let c = client("9.9.9.9");
        let mut admin = String::new();
        build_client_key(&mut admin, &p, "9.9.9.9").unwrap();
        assert_eq!(admin, key(&p, &c, &Method::GET, "/", &HeaderMap::new()));
        let p = policy("path", vec![KeyPart::Path]);
        assert!(build_client_key(&mut String::new(), &p, "9.9.9.9").is_err());
        let p = policy(
            "hdr",
            vec![KeyPart::Header(http::HeaderName::from_static("x-key"))],
        );
        let err = build_client_key(&mut String::new(), &p, "9.9.9.9").unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy hdr is keyed by a header, which a client address alone does not determine"
        );
    }
}
