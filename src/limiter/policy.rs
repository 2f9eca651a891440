//! Counter keys for a policy: the policy name and one typed, escaped, bounded component per key
//! part (format in `store::keys`).

use std::borrow::Cow;

use http::HeaderMap;

use crate::config::compiled::{KeyPart, Policy, Route};
use crate::store::keys::{self, Tag};

use super::{query, ClientId, RequestView};

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
                keys::push_component(out, Tag::Method, method_identity(req.method).as_bytes())
            }
            KeyPart::Route => keys::push_component(out, Tag::Route, route.name.as_bytes()),
            KeyPart::Global => keys::push_global(out),
            KeyPart::Param(name) => match route.param(name, req.path) {
                Some(value) => keys::push_component(out, Tag::Param, &param_identity(route, value)),
                // Validation refuses a route whose path lacks the segment; should one get here,
                // its requests share the client's counter rather than go unlimited.
                None => keys::push_component(out, Tag::Ip, client.key.as_bytes()),
            },
            KeyPart::Query(name) => match query::value(req.query, name) {
                Some(value) => keys::push_component(out, Tag::Query, &value),
                // Absent or ambiguous: the client's own counter, as for a header.
                None => keys::push_component(out, Tag::Ip, client.key.as_bytes()),
            },
            // A request without a verified identity falls back to its address, tagged as an
            // IP so it never shares a counter with an identity that spells an address.
            KeyPart::JwtSub
            | KeyPart::JwtClaim(_)
            | KeyPart::TlsSubject
            | KeyPart::TlsFingerprint => match verified(part, req) {
                Some((tag, value)) => keys::push_component(out, tag, value.as_bytes()),
                None => keys::push_component(out, Tag::Ip, client.key.as_bytes()),
            },
        }
    }
}

/// The verified identity a key part names, with its tag; `None` when the request has none.
fn verified<'r>(part: &KeyPart, req: RequestView<'r>) -> Option<(Tag, Cow<'r, str>)> {
    let id = req.identity;
    match part {
        KeyPart::JwtSub => Some((Tag::JwtSub, id.claims?.text("sub")?)),
        KeyPart::JwtClaim(name) => Some((Tag::JwtClaim, id.claims?.text(name)?)),
        KeyPart::TlsSubject => Some((Tag::TlsSubject, Cow::Borrowed(&*id.peer?.subject))),
        KeyPart::TlsFingerprint => {
            Some((Tag::TlsFingerprint, Cow::Borrowed(&*id.peer?.fingerprint)))
        }
        _ => None,
    }
}

/// The tier override of `policy` for this request: looked up by the value of the policy's single
/// key component (the client key, the header value, the path, the method or the route name). A
/// header-keyed request without the header has no value, so it gets the default limit.
pub(crate) fn override_limit(
    policy: &Policy,
    route: &Route,
    client: &ClientId,
    req: RequestView<'_>,
) -> Option<u64> {
    if policy.overrides.is_empty() {
        return None;
    }
    if let Some(claim) = &policy.overrides_from {
        return policy.overrides.get(&req.identity.claims?.text(claim)?);
    }
    if let [KeyPart::Query(name)] = policy.key.as_slice() {
        let value = query::value(req.query, name)?;
        return policy.overrides.get(std::str::from_utf8(&value).ok()?);
    }
    let value: &str = match policy.key.as_slice() {
        [KeyPart::Ip] => &client.key,
        [KeyPart::Header(name)] => std::str::from_utf8(header_identity(req.headers, name)?).ok()?,
        [KeyPart::Path] => req.path,
        [KeyPart::Method] => return policy.overrides.get(&method_identity(req.method)),
        [KeyPart::Route] => &route.name,
        // Decoded like the key, but not case-folded: an override key is looked up as written.
        [KeyPart::Param(name)] => {
            let value = query::segment_decoded(route.param(name, req.path)?);
            return policy.overrides.get(std::str::from_utf8(&value).ok()?);
        }
        [part @ (KeyPart::JwtSub
        | KeyPart::JwtClaim(_)
        | KeyPart::TlsSubject
        | KeyPart::TlsFingerprint)] => {
            return policy.overrides.get(&verified(part, req)?.1);
        }
        // Validation allows overrides on one non-global component only.
        _ => return None,
    };
    policy.overrides.get(value)
}

/// A `{NAME}` segment as a `param:NAME` key component: percent-decoded, as the upstream reads it
/// (`a%40b` is `a@b`), and on a `case_insensitive` route lower-cased (its upstream serves `/BOB`
/// as `/bob`), so no spelling earns a fresh counter. Borrowed when neither changes anything.
fn param_identity<'p>(route: &Route, segment: &'p str) -> Cow<'p, [u8]> {
    let mut value = query::segment_decoded(segment);
    if route.case_insensitive && value.iter().any(u8::is_ascii_uppercase) {
        value.to_mut().make_ascii_lowercase();
    }
    value
}

/// The method as a `method` key component: upper-cased, since frameworks dispatch `post` as
/// POST, so case variants share a counter (and an override tier, whose keys config upper-cases).
/// Standard methods arrive upper-case already: no allocation for them.
fn method_identity(method: &http::Method) -> Cow<'_, str> {
    let text = method.as_str();
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(text.to_ascii_uppercase())
    } else {
        Cow::Borrowed(text)
    }
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
pub(crate) struct UnaddressableKey {
    pub(crate) policy: String,
    pub(crate) part: &'static str,
}

/// Append the key the admin API means by "policy P, client C": the counter of requests from client
/// key `client`. Fails for policies keyed by a header, path, method or route, whose counters are
/// not determined by the client alone (a header-keyed policy counts per header value, and falls
/// back to the client only for requests without the header: naming the client would silently
/// address that fallback counter, not the one the operator means).
pub(crate) fn build_client_key(
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
            KeyPart::Param(_) => return Err(unaddressable("a path segment")),
            KeyPart::Query(_) => return Err(unaddressable("a query parameter")),
            KeyPart::JwtSub | KeyPart::JwtClaim(_) => return Err(unaddressable("a token claim")),
            KeyPart::TlsSubject | KeyPart::TlsFingerprint => {
                return Err(unaddressable("a client certificate"))
            }
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

    pub(super) fn route() -> Route {
        Route {
            name: Arc::from("api"),
            path: PathMatch::Prefix("/".into()),
            methods: vec![],
            host: None,
            headers: Vec::new(),
            target: Target::Respond {
                status: StatusCode::OK,
                body: Bytes::new(),
            },
            policies: vec![],
            strip_prefix: false,
            case_insensitive: false,
            upgrade: Vec::new(),
            cost: Default::default(),
            auth: None,
            retry: None,
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
            query: None,
            headers,
            cost: 1,
            identity: Default::default(),
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
    fn param_spellings_share_a_key() {
        let p = policy("u", vec![KeyPart::Param("id".into())]);
        let mut r = route();
        r.path = PathMatch::Pattern(crate::config::compiled::PathPattern {
            text: "/users/{id}".into(),
            segments: vec![
                crate::config::compiled::Segment::Literal("users".into()),
                crate::config::compiled::Segment::Param("id".into()),
            ]
            .into_boxed_slice(),
            rest: false,
        });
        let c = client("1.2.3.4");
        let h = HeaderMap::new();
        let key_of = |r: &Route, path: &str| {
            let mut out = String::new();
            let req = RequestView {
                method: &Method::GET,
                path,
                query: None,
                headers: &h,
                cost: 1,
                identity: Default::default(),
            };
            build_key(&mut out, &p, r, &c, req);
            out
        };
        let plain = key_of(&r, "/users/a@b");
        assert_eq!(plain, "u|s:a@b");
        assert_eq!(key_of(&r, "/users/a%40b"), plain);
        assert_eq!(key_of(&r, "/users/a%40b/"), plain);
        assert_eq!(key_of(&r, "/users/%C3%A9"), "u|s:%C3%A9");
        assert_ne!(key_of(&r, "/users/A@b"), plain);
        r.case_insensitive = true;
        assert_eq!(key_of(&r, "/users/A%40B"), plain);
    }

    #[test]
    fn method_case_variants_share_a_key() {
        let p = policy("m", vec![KeyPart::Method]);
        let c = client("1.2.3.4");
        let h = HeaderMap::new();
        let post = key(&p, &c, &Method::POST, "/", &h);
        assert_eq!(post, "m|m:POST");
        for m in ["post", "Post", "pOST"] {
            let m = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(key(&p, &c, &m, "/", &h), post);
        }
        let purge = Method::from_bytes(b"purge").unwrap();
        assert_eq!(key(&p, &c, &purge, "/", &h), "m|m:PURGE");
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

/// Two different identities never share a counter key: the key is equal exactly when the policy
/// name and every component the policy is keyed by are equal, whatever bytes the client put in
/// them (separators, escapes, hash look-alikes, long values).
#[cfg(test)]
mod properties {
    use std::net::IpAddr;
    use std::sync::Arc;

    use http::{HeaderName, HeaderValue, Method};
    use proptest::prelude::*;

    use super::*;
    use crate::config::compiled::{Algorithm, PathMatch};

    /// Values chosen to collide if escaping, tagging or hashing were not injective.
    fn tricky() -> impl Strategy<Value = String> {
        let atom = prop::sample::select(vec![
            "a", "A", "|", ":", "#", "%", "%7C", "%25", "h", "i:", "|h:", "|i:", "g", "|g", " ",
            "1.2.3.4", "/", "{", "}", "\u{e9}",
        ]);
        prop_oneof![
            4 => prop::collection::vec(atom, 0..5).prop_map(|v| v.concat()),
            // Past the 64-byte bound: hashed.
            1 => ("[a|]{1,3}", 20usize..40).prop_map(|(s, n)| s.repeat(n)),
        ]
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Ident {
        client: String,
        header: Option<String>,
        path: String,
        method: Method,
        route: String,
        /// The verified token's `sub` (`None`: anonymous).
        sub: Option<String>,
    }

    fn ident() -> impl Strategy<Value = Ident> {
        (
            tricky(),
            prop::option::of(tricky()),
            tricky(),
            prop::sample::select(vec![
                Method::GET,
                Method::POST,
                Method::from_bytes(b"post").unwrap_or(Method::POST),
            ]),
            prop::sample::select(vec!["r", "r-ci", "r|m:GET"]),
            prop::option::of(tricky()),
        )
            .prop_map(|(client, header, path, method, route, sub)| Ident {
                client,
                header,
                path: format!("/{path}"),
                method,
                route: route.to_owned(),
                sub,
            })
    }

    fn parts() -> impl Strategy<Value = Vec<KeyPart>> {
        let x = HeaderName::from_static("x-key");
        prop::sample::subsequence(
            vec![
                KeyPart::Ip,
                KeyPart::Header(x),
                KeyPart::Path,
                KeyPart::Method,
                KeyPart::Route,
                KeyPart::Global,
                KeyPart::JwtSub,
            ],
            0..=7,
        )
        .prop_shuffle()
    }

    fn policy_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec!["p", "p|i:x", "p%7Ci:x", "#p"]).prop_map(str::to_owned),
            tricky(),
        ]
    }

    /// What the key is about, written independently of the builder: the name and, per part,
    /// its kind and value (a header that names no one falls back to the client, as an IP).
    fn meaning(name: &str, parts: &[KeyPart], id: &Ident) -> (String, Vec<(char, String)>) {
        let ci = id.route.ends_with("-ci");
        let header = id
            .header
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
            .and_then(|v| v.to_str().ok().map(|s| s.trim().to_owned()))
            .filter(|v| !v.is_empty());
        let comps = parts
            .iter()
            .map(|part| match part {
                KeyPart::Ip => ('i', id.client.clone()),
                KeyPart::Header(_) => header
                    .clone()
                    .map_or(('i', id.client.clone()), |v| ('h', v)),
                KeyPart::Path if ci => ('p', id.path.to_ascii_lowercase()),
                KeyPart::Path => ('p', id.path.clone()),
                KeyPart::Method => ('m', id.method.as_str().to_ascii_uppercase()),
                KeyPart::Route => ('r', id.route.clone()),
                KeyPart::Global => ('g', String::new()),
                // The route here has no pattern and the request no query: the client's counter.
                KeyPart::Param(_) | KeyPart::Query(_) => ('i', id.client.clone()),
                // A missing or empty `sub` identifies no one: the client, as an IP.
                KeyPart::JwtSub => id
                    .sub
                    .clone()
                    .filter(|s| !s.is_empty())
                    .map_or(('i', id.client.clone()), |s| ('u', s)),
                other => unreachable!("not generated: {other}"),
            })
            .collect();
        (name.to_owned(), comps)
    }

    fn key(name: &str, parts: &[KeyPart], id: &Ident) -> String {
        let policy = Policy {
            key: parts.to_vec(),
            ..Policy::new(
                name,
                Algorithm::FixedWindow,
                10,
                std::time::Duration::from_secs(1),
            )
        };
        let mut route = super::tests::route();
        route.name = Arc::from(id.route.as_str());
        route.path = PathMatch::Prefix("/".into());
        route.case_insensitive = id.route.ends_with("-ci");
        let mut headers = HeaderMap::new();
        if let Some(v) = id
            .header
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert("x-key", v);
        }
        let client = ClientId {
            ip: IpAddr::from([0, 0, 0, 0]),
            key: id.client.clone(),
        };
        let claims = id
            .sub
            .as_ref()
            .map(|sub| crate::auth::Claims::from_json(serde_json::json!({ "sub": sub })));
        let req = RequestView {
            method: &id.method,
            path: &id.path,
            query: None,
            headers: &headers,
            cost: 1,
            identity: crate::limiter::Identity {
                claims: claims.as_ref(),
                peer: None,
            },
        };
        let mut out = String::new();
        build_key(&mut out, &policy, &route, &client, req);
        out
    }

    /// A key component's value as the key holds it: escaped raw bytes, or the hash of long ones.
    #[derive(Debug, PartialEq)]
    enum Held {
        Raw(Vec<u8>),
        Hash(String),
    }

    fn held(raw: &[u8]) -> Held {
        if crate::store::keys::escaped_len(raw) > crate::store::keys::MAX_RAW_LEN {
            let mut h = String::new();
            crate::store::keys::push_sha256(&mut h, raw);
            Held::Hash(h)
        } else {
            Held::Raw(raw.to_vec())
        }
    }

    /// Undo the escaping; `None` when a byte that must be escaped appears raw.
    fn unescape(text: &str) -> Option<Vec<u8>> {
        let b = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else if b[i].is_ascii_alphanumeric() || b"-._~/:@".contains(&b[i]) {
                out.push(b[i]);
                i += 1;
            } else {
                return None;
            }
        }
        Some(out)
    }

    fn parse_value(text: &str, hashed: bool) -> Option<Held> {
        if hashed {
            Some(Held::Hash(text.to_owned()))
        } else {
            unescape(text).map(Held::Raw)
        }
    }

    /// Read a key back into its name and components: the format is decodable, so two keys are
    /// equal only when what they were built from is.
    fn parse(key: &str) -> Option<(Held, Vec<(char, Held)>)> {
        let mut pieces = key.split('|');
        let name = pieces.next()?;
        let name = match name.strip_prefix('#') {
            Some(hash) => parse_value(hash, true)?,
            None => parse_value(name, false)?,
        };
        let mut comps = Vec::new();
        for piece in pieces {
            let mut chars = piece.chars();
            let tag = chars.next()?;
            let rest = chars.as_str();
            let value = match (tag, rest.chars().next()) {
                ('g', None) => Held::Raw(Vec::new()),
                (_, Some(':')) => parse_value(&rest[1..], false)?,
                (_, Some('#')) => parse_value(&rest[1..], true)?,
                _ => return None,
            };
            comps.push((tag, value));
        }
        Some((name, comps))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn keys_read_back_as_what_they_were_built_from(
            name in policy_name(),
            parts in parts(),
            id in ident(),
        ) {
            let k = key(&name, &parts, &id);
            let (want_name, comps) = meaning(&name, &parts, &id);
            let want = (
                held(want_name.as_bytes()),
                comps
                    .into_iter()
                    .map(|(tag, v)| (tag, if tag == 'g' { Held::Raw(Vec::new()) } else { held(v.as_bytes()) }))
                    .collect::<Vec<_>>(),
            );
            prop_assert_eq!(parse(&k), Some(want), "{}", k);
        }

        #[test]
        fn keys_are_equal_exactly_when_identities_are(
            (name_a, name_b) in (policy_name(), policy_name()),
            (parts_a, parts_b) in (parts(), parts()),
            a in ident(),
            b_differs in prop::collection::vec(any::<bool>(), 7),
            b in ident(),
        ) {
            // Mostly near-identical pairs, so that equal keys are actually reached.
            let name_b = if b_differs[0] { name_b } else { name_a.clone() };
            let parts_b = if b_differs[1] { parts_b } else { parts_a.clone() };
            let b = Ident {
                client: if b_differs[2] { b.client } else { a.client.clone() },
                header: if b_differs[3] { b.header } else { a.header.clone() },
                path: if b_differs[4] { b.path } else { a.path.clone() },
                method: if b_differs[5] { b.method } else { a.method.clone() },
                route: b.route,
                sub: if b_differs[6] { b.sub } else { a.sub.clone() },
            };
            let (ka, kb) = (key(&name_a, &parts_a, &a), key(&name_b, &parts_b, &b));
            let (ma, mb) = (meaning(&name_a, &parts_a, &a), meaning(&name_b, &parts_b, &b));
            prop_assert_eq!(ka == kb, ma == mb, "{} vs {}: {:?} vs {:?}", ka, kb, ma, mb);
            // Structure characters never come from a value.
            prop_assert!(!ka.contains(['{', '}', ' ']), "{}", ka);
        }
    }
}
