//! Route matching: the first route in file order whose method, host, header conditions and path
//! all match.
//!
//! Methods match as the common frameworks dispatch them (docs/operations.md section 3a,
//! "Methods"): without regard to ASCII case (Werkzeug and others upper-case the method, so `post`
//! runs the POST handler), `HEAD` wherever `GET` is listed (Express, Flask, Go and nginx serve
//! HEAD with the GET handler), and for a `POST`, also by the method an override header names
//! (`X-HTTP-Method-Override` and its aliases), since an upstream that honours one runs that
//! handler. A route matches when either the method or an override value does, so a request
//! never falls through past a route that the upstream's view (whichever it is) would pick.
//!
//! `path` is the normalized path (see `uri_path`); config prefixes are expected in the same
//! normalized form without a trailing slash. A pattern's `{name}` takes one non-empty segment of
//! the normalized path, so an encoded slash (`%2F`, kept encoded by `escaped_slashes = "keep"`)
//! is part of the segment, exactly as the upstream receives it.
//!
//! A `case_insensitive` route compares ASCII letters without regard to case (percent-escapes are
//! upper-case on both sides already). It changes nothing about order: the first route in file
//! order that matches wins, so a case-sensitive `/api` listed before a case-insensitive
//! `/api/auth` still takes `/api/AUTH/login`. Routes to a case-insensitive upstream should all
//! be case-insensitive, stricter ones first, as always.

use std::cell::OnceCell;

use http::{HeaderMap, HeaderName, Method};

use crate::config::compiled::{HeaderCondition, PathMatch, PathPattern, Route, Routes, Segment};
use crate::config::routes::method_listed;
use crate::limiter::query;

/// First route (file order) matching the normalized path, method, host (port ignored,
/// case-insensitive) and header conditions.
///
/// `host` is the raw Host header or `:authority` (`Example.COM:443`, `[::1]:8080`, a trailing
/// dot); `None` never matches a route that names a host.
pub fn find<'c>(
    routes: &'c Routes,
    method: &Method,
    host: Option<&str>,
    headers: &HeaderMap,
    path: &str,
    query: Option<&str>,
) -> Option<&'c Route> {
    // Parse the request host once, not once per route.
    let req_host = host.map(host_only);
    // Whether the request is a POST with an override header: looked for at most once, and only
    // when a route's methods do not list the request's own.
    let overridable = OnceCell::new();
    routes.first(path, |r| {
        method_matches(&r.methods, method, headers, query, &overridable)
            && match (&r.host, req_host) {
                (None, _) => true,
                (Some(want), Some(got)) => host_eq(want, got),
                (Some(_), None) => false,
            }
            && path_matches(&r.path, r.case_insensitive, path)
            && r.headers.iter().all(|c| condition_holds(c, headers))
    })
}

/// Headers by which a client asks a framework to dispatch a `POST` as another method (Express
/// `method-override`, Symfony, Laravel, Go `handlers.HTTPMethodOverrideHandler`, Spring's
/// `HiddenHttpMethodFilter` headers variant).
static METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// Whether a request with `method` (and, for a POST, its override headers) matches a route
/// listing `listed` (empty: any method). Every copy of every override header counts: the
/// upstream may read any of them. `overridable` caches whether there is any to read.
fn method_matches(
    listed: &[Method],
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    overridable: &OnceCell<bool>,
) -> bool {
    if listed.is_empty() || method_listed(listed, method.as_str()) {
        return true;
    }
    let overridable = *overridable.get_or_init(|| {
        // One pass over the names present (no hashing); most POSTs carry none.
        method.as_str().eq_ignore_ascii_case("POST")
            && (headers.keys().any(|name| METHOD_OVERRIDES.contains(name))
                || query.is_some_and(|q| query::all_values(q, METHOD_PARAM).next().is_some()))
    });
    let listed_as =
        |v: &[u8]| std::str::from_utf8(v).is_ok_and(|v| method_listed(listed, v.trim_ascii()));
    overridable
        && (METHOD_OVERRIDES.iter().any(|name| {
            headers
                .get_all(name)
                .iter()
                .any(|v| listed_as(v.as_bytes()))
        }) || query.is_some_and(|q| query::all_values(q, METHOD_PARAM).any(|v| listed_as(&v))))
}

/// The query parameter by which Laravel (and Symfony with `http_method_override`) dispatch a
/// `POST` as another method. Its form-body twin (Rails, Laravel) is not seen: bodies are not
/// read for routing.
const METHOD_PARAM: &str = "_method";

/// A header condition: present (any number of times), or present exactly once with exactly this
/// value. A repeated header never satisfies a value condition: a client could add its own copy in
/// front of the one a trusted proxy set, and the upstream may read either.
fn condition_holds(cond: &HeaderCondition, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(&cond.name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    match &cond.value {
        None => true,
        Some(want) => values.next().is_none() && first.as_bytes().trim_ascii() == &**want,
    }
}

/// The path the upstream receives: `path` with the route prefix removed when `strip_prefix`.
/// The result always starts with `/`: `/api` stripped from `/api` or `/api/` is `/`, from
/// `/api/x` is `/x`. An exact route with `strip_prefix` forwards `/`.
pub(crate) fn forward_path<'p>(route: &Route, path: &'p str) -> &'p str {
    if !route.strip_prefix {
        return path;
    }
    let prefix = match &route.path {
        PathMatch::Prefix(p) => prefix_base(p),
        PathMatch::Exact(p) => p.as_str(),
        // Validation allows `strip_prefix` on `path_prefix` routes only.
        PathMatch::Pattern(_) => return path,
    };
    // Only strip what actually matched; anything else is forwarded untouched.
    match strip(path, prefix, route.case_insensitive) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// Segment-aware path match. An exact path also matches with one trailing slash added, as a
/// pattern does: Express (non-strict routing) and Spring serve `/login/` with the `/login`
/// handler, so it must not fall through to a looser route here.
fn path_matches(m: &PathMatch, case_insensitive: bool, path: &str) -> bool {
    match m {
        PathMatch::Exact(p) => {
            let eq = |path: &str| {
                if case_insensitive {
                    path.eq_ignore_ascii_case(p)
                } else {
                    path == p
                }
            };
            eq(path) || path.strip_suffix('/').is_some_and(eq)
        }
        PathMatch::Prefix(p) => {
            let base = prefix_base(p);
            // `/api` matches `/api`, `/api/`, `/api/x` but not `/apix`; "/" (base "") matches
            // every path since every normalized path starts with `/`.
            strip(path, base, case_insensitive)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }
        PathMatch::Pattern(p) => pattern_matches(p, case_insensitive, path),
    }
}

/// Segment by segment, without allocating: a literal compares whole, `{name}` takes any
/// non-empty segment, a trailing `*` any rest after a `/` (so `/static/*` matches `/static/` and
/// `/static/a/b`, not `/static`); without `*`, one trailing slash may follow.
fn pattern_matches(p: &PathPattern, case_insensitive: bool, path: &str) -> bool {
    let mut rest = path;
    for segment in &*p.segments {
        let Some(after) = rest.strip_prefix('/') else {
            return false;
        };
        let end = after.find('/').unwrap_or(after.len());
        let (seg, tail) = after.split_at(end);
        let ok = match segment {
            Segment::Param(_) => !seg.is_empty(),
            Segment::Literal(lit) if case_insensitive => seg.eq_ignore_ascii_case(lit),
            Segment::Literal(lit) => seg == &**lit,
        };
        if !ok {
            return false;
        }
        rest = tail;
    }
    if p.rest {
        rest.starts_with('/')
    } else {
        rest.is_empty() || rest == "/"
    }
}

/// `path` without `prefix`, comparing ASCII letters without case when `case_insensitive`.
fn strip<'p>(path: &'p str, prefix: &str, case_insensitive: bool) -> Option<&'p str> {
    if !case_insensitive {
        return path.strip_prefix(prefix);
    }
    // `get` refuses a cut inside a UTF-8 character (normalized paths are ASCII anyway).
    let head = path.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &path[prefix.len()..])
}

/// The prefix without trailing slashes: config compiles it that way, but a stray `/api/` must
/// not turn `/api` into a non-match or `/` into a prefix that matches nothing.
fn prefix_base(p: &str) -> &str {
    p.trim_end_matches('/')
}

/// The host part of a Host header / authority: no userinfo, no port, no brackets, no trailing
/// dot. Lenient on purpose: a malformed port must not let a request escape its host's route.
fn host_only(raw: &str) -> &str {
    let raw = raw.trim();
    // Userinfo is not allowed in Host, but `:authority` parsers accept it; the host follows it.
    let raw = raw.rsplit_once('@').map_or(raw, |(_, h)| h);
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        rest.split_once(']').map_or(rest, |(inner, _)| inner)
    } else {
        match raw.split_once(':') {
            // More than one colon without brackets is a bare IPv6 address: no port to strip.
            Some((_, after)) if after.contains(':') => raw,
            Some((h, _)) => h,
            None => raw,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Compare a route's configured host (lower-cased, no port) with the request host.
fn host_eq(want: &str, got: &str) -> bool {
    let want = want
        .strip_prefix('[')
        .and_then(|w| w.strip_suffix(']'))
        .unwrap_or(want);
    let want = want.strip_suffix('.').unwrap_or(want);
    !got.is_empty() && want.eq_ignore_ascii_case(got)
}

#[cfg(test)]
mod tests_support {
    use crate::config::compiled::{PathMatch, Route, Target};
    use bytes::Bytes;
    use http::StatusCode;

    /// A route answering directly, any method and host, no policies.
    pub(crate) fn test_route(name: &str, path: PathMatch) -> Route {
        Route {
            name: name.into(),
            path,
            methods: Vec::new(),
            host: None,
            headers: Vec::new(),
            target: Target::Respond {
                status: StatusCode::OK,
                body: Bytes::new(),
            },
            policies: Vec::new(),
            strip_prefix: false,
            case_insensitive: false,
            upgrade: Vec::new(),
            cost: Default::default(),
            auth: None,
            retry: None,
            index: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::test_route;
    use super::*;

    fn route(
        name: &str,
        path: PathMatch,
        methods: &[Method],
        host: Option<&str>,
        strip: bool,
    ) -> Route {
        Route {
            methods: methods.to_vec(),
            host: host.map(str::to_owned),
            strip_prefix: strip,
            ..test_route(name, path)
        }
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.to_owned())
    }

    fn exact(p: &str) -> PathMatch {
        PathMatch::Exact(p.to_owned())
    }

    fn name<'c>(routes: &'c Routes, m: &Method, host: Option<&str>, path: &str) -> Option<&'c str> {
        find(routes, m, host, &HeaderMap::new(), path, None).map(|r| &*r.name)
    }

    #[test]
    fn prefix_is_segment_aware() {
        let rs = Routes::new(vec![route("api", prefix("/api"), &[], None, false)]);
        for p in ["/api", "/api/", "/api/x", "/api/x/y"] {
            assert_eq!(name(&rs, &Method::GET, None, p), Some("api"), "{p}");
        }
        for p in ["/apix", "/ap", "/", "/x/api", "/API"] {
            assert_eq!(name(&rs, &Method::GET, None, p), None, "{p}");
        }
    }

    #[test]
    fn root_prefix_matches_everything() {
        let rs = Routes::new(vec![route("all", prefix("/"), &[], None, false)]);
        for p in ["/", "/a", "/a/b/"] {
            assert_eq!(name(&rs, &Method::GET, None, p), Some("all"), "{p}");
        }
    }

    #[test]
    fn stray_trailing_slash_in_prefix() {
        let rs = Routes::new(vec![route("api", prefix("/api/"), &[], None, false)]);
        assert_eq!(name(&rs, &Method::GET, None, "/api"), Some("api"));
        assert_eq!(name(&rs, &Method::GET, None, "/apix"), None);
    }

    #[test]
    fn exact_compares_whole_path() {
        let rs = Routes::new(vec![route("login", exact("/login"), &[], None, false)]);
        assert_eq!(name(&rs, &Method::GET, None, "/login"), Some("login"));
        assert_eq!(name(&rs, &Method::GET, None, "/login/"), Some("login"));
        for p in ["/login/x", "/loginx", "/", "/logi/"] {
            assert_eq!(name(&rs, &Method::GET, None, p), None, "{p}");
        }
    }

    #[test]
    fn exact_and_patterns_take_one_trailing_slash() {
        let orders = PathMatch::Pattern(PathPattern {
            text: "/api/users/{id}/orders".into(),
            segments: vec![
                Segment::Literal("api".into()),
                Segment::Literal("users".into()),
                Segment::Param("id".into()),
                Segment::Literal("orders".into()),
            ]
            .into_boxed_slice(),
            rest: false,
        });
        let rs = Routes::new(vec![
            route("login", exact("/login"), &[], None, false),
            route("orders", orders, &[], None, false),
            route("all", prefix("/"), &[], None, false),
        ]);
        for (p, want) in [
            ("/login/", "login"),
            ("/api/users/1/orders", "orders"),
            ("/api/users/1/orders/", "orders"),
            ("/api/users/1/orders/x", "all"),
            ("/api/users//orders/", "all"),
            ("/login/x", "all"),
        ] {
            assert_eq!(name(&rs, &Method::GET, None, p), Some(want), "{p}");
        }
        // Forwarded as sent; a stripped exact route forwards `/`.
        let r = route("login", exact("/login"), &[], None, true);
        assert_eq!(forward_path(&r, "/login/"), "/");
    }

    #[test]
    fn first_match_wins() {
        let rs = Routes::new(vec![
            route("auth", prefix("/api/auth"), &[], None, false),
            route("api", prefix("/api"), &[], None, false),
            route("all", prefix("/"), &[], None, false),
        ]);
        assert_eq!(
            name(&rs, &Method::GET, None, "/api/auth/login"),
            Some("auth")
        );
        assert_eq!(name(&rs, &Method::GET, None, "/api/authx"), Some("api"));
        assert_eq!(name(&rs, &Method::GET, None, "/other"), Some("all"));
    }

    #[test]
    fn methods_filter() {
        let rs = Routes::new(vec![
            route(
                "post",
                prefix("/login"),
                &[Method::POST, Method::PUT],
                None,
                false,
            ),
            route("any", prefix("/login"), &[], None, false),
        ]);
        assert_eq!(name(&rs, &Method::POST, None, "/login"), Some("post"));
        assert_eq!(name(&rs, &Method::PUT, None, "/login"), Some("post"));
        assert_eq!(name(&rs, &Method::GET, None, "/login"), Some("any"));
        let custom = Method::from_bytes(b"PURGE").expect("valid method");
        assert_eq!(name(&rs, &custom, None, "/login"), Some("any"));
        for m in ["post", "Post", "pOST", "put"] {
            let m = Method::from_bytes(m.as_bytes()).expect("valid method");
            assert_eq!(name(&rs, &m, None, "/login"), Some("post"), "{m}");
        }
        let postx = Method::from_bytes(b"POSTX").expect("valid method");
        assert_eq!(name(&rs, &postx, None, "/login"), Some("any"));
    }

    #[test]
    fn head_matches_a_get_route() {
        let rs = Routes::new(vec![
            route("get", prefix("/r"), &[Method::GET], None, false),
            route("any", prefix("/"), &[], None, false),
        ]);
        let lower_head = Method::from_bytes(b"head").expect("valid method");
        for m in [Method::GET, Method::HEAD, lower_head] {
            assert_eq!(name(&rs, &m, None, "/r"), Some("get"), "{m}");
        }
        let rs = Routes::new(vec![
            route("head", prefix("/r"), &[Method::HEAD], None, false),
            route("any", prefix("/"), &[], None, false),
        ]);
        assert_eq!(name(&rs, &Method::GET, None, "/r"), Some("any"));
    }

    #[test]
    fn a_post_matches_by_its_override_header_too() {
        let rs = Routes::new(vec![
            route("delete", prefix("/items"), &[Method::DELETE], None, false),
            route("get", prefix("/items"), &[Method::GET], None, false),
            route("any", prefix("/"), &[], None, false),
        ]);
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for &(k, v) in pairs {
                h.append(k, http::HeaderValue::from_static(v));
            }
            h
        };
        let chosen =
            |m: &Method, h: &HeaderMap| find(&rs, m, None, h, "/items", None).map(|r| &*r.name);
        let lower_post = Method::from_bytes(b"post").expect("valid method");
        for h in [
            with(&[("x-http-method-override", "DELETE")]),
            with(&[("x-http-method", "delete")]),
            with(&[("x-method-override", " Delete ")]),
            // Any copy: the upstream may read either.
            with(&[
                ("x-http-method-override", "PUT"),
                ("x-http-method-override", "DELETE"),
            ]),
            with(&[("x-http-method", "PATCH"), ("x-method-override", "DELETE")]),
        ] {
            assert_eq!(chosen(&Method::POST, &h), Some("delete"), "{h:?}");
            assert_eq!(chosen(&lower_post, &h), Some("delete"), "{h:?}");
        }
        // An overridden HEAD is served by the GET handler.
        let head = with(&[("x-http-method-override", "HEAD")]);
        assert_eq!(chosen(&Method::POST, &head), Some("get"));
        // Only a POST is overridden; other values and other methods change nothing.
        let delete = with(&[("x-http-method-override", "DELETE")]);
        assert_eq!(chosen(&Method::PUT, &delete), Some("any"));
        assert_eq!(chosen(&Method::GET, &delete), Some("get"));
        let odd = with(&[("x-http-method-override", "DELETEX")]);
        assert_eq!(chosen(&Method::POST, &odd), Some("any"));
        // Laravel's `_method` query parameter: any copy, spelled any way a parser decodes.
        let by_query = |m: &Method, q: &str| {
            find(&rs, m, None, &HeaderMap::new(), "/items", Some(q)).map(|r| &*r.name)
        };
        for q in [
            "_method=DELETE",
            "a=1&_method=delete",
            "_method=PUT&_method=DELETE",
            "_m%65thod=%44ELETE",
            "_METHOD=DELETE",
        ] {
            assert_eq!(by_query(&Method::POST, q), Some("delete"), "{q}");
        }
        assert_eq!(by_query(&Method::PUT, "_method=DELETE"), Some("any"));
        assert_eq!(by_query(&Method::POST, "method=DELETE"), Some("any"));
        assert_eq!(chosen(&Method::POST, &HeaderMap::new()), Some("any"));
        // The POST itself still matches a POST route listed first.
        let rs = Routes::new(vec![
            route("post", prefix("/items"), &[Method::POST], None, false),
            route("delete", prefix("/items"), &[Method::DELETE], None, false),
        ]);
        assert_eq!(
            find(&rs, &Method::POST, None, &delete, "/items", None).map(|r| &*r.name),
            Some("post")
        );
    }

    #[test]
    fn host_matching() {
        let rs = Routes::new(vec![
            route("api", prefix("/"), &[], Some("api.example.com"), false),
            route("v6", prefix("/"), &[], Some("::1"), false),
            route("v6b", prefix("/"), &[], Some("[::2]"), false),
        ]);
        for h in [
            "api.example.com",
            "API.Example.COM",
            "api.example.com:443",
            "Api.Example.Com:8080",
            "api.example.com.",
            "api.example.com.:443",
            "api.example.com:",
            "user@api.example.com:443",
            " api.example.com ",
        ] {
            assert_eq!(name(&rs, &Method::GET, Some(h), "/"), Some("api"), "{h}");
        }
        for h in ["[::1]:8080", "[::1]", "::1"] {
            assert_eq!(name(&rs, &Method::GET, Some(h), "/"), Some("v6"), "{h}");
        }
        assert_eq!(name(&rs, &Method::GET, Some("[::2]:80"), "/"), Some("v6b"));
        for h in [
            "example.com",
            "api.example.com.evil",
            "evil-api.example.com",
            "api.example.co",
            "",
            "[::3]:80",
        ] {
            assert_eq!(name(&rs, &Method::GET, Some(h), "/"), None, "{h}");
        }
        assert_eq!(name(&rs, &Method::GET, None, "/"), None);
    }

    #[test]
    fn host_route_falls_through_to_hostless() {
        let rs = Routes::new(vec![
            route("api", prefix("/"), &[], Some("api.example.com"), false),
            route("default", prefix("/"), &[], None, false),
        ]);
        assert_eq!(
            name(&rs, &Method::GET, Some("www.example.com"), "/"),
            Some("default")
        );
        assert_eq!(name(&rs, &Method::GET, None, "/"), Some("default"));
        assert_eq!(
            name(&rs, &Method::GET, Some("api.example.com:1"), "/"),
            Some("api")
        );
    }

    #[test]
    fn empty_routes() {
        let none = Routes::new(Vec::new());
        assert!(find(&none, &Method::GET, None, &HeaderMap::new(), "/", None).is_none());
    }

    #[test]
    fn forward_path_strips_prefix() {
        let r = route("api", prefix("/api"), &[], None, true);
        assert_eq!(forward_path(&r, "/api"), "/");
        assert_eq!(forward_path(&r, "/api/"), "/");
        assert_eq!(forward_path(&r, "/api/x"), "/x");
        assert_eq!(forward_path(&r, "/api/x/"), "/x/");
        // Not matched: untouched (never `/apix` -> `x`).
        assert_eq!(forward_path(&r, "/apix"), "/apix");
        let root = route("all", prefix("/"), &[], None, true);
        assert_eq!(forward_path(&root, "/a/b"), "/a/b");
        assert_eq!(forward_path(&root, "/"), "/");
    }

    #[test]
    fn forward_path_without_strip_is_identity() {
        let r = route("api", prefix("/api"), &[], None, false);
        assert_eq!(forward_path(&r, "/api/x"), "/api/x");
    }

    #[test]
    fn forward_path_exact() {
        let r = route("login", exact("/login"), &[], None, true);
        assert_eq!(forward_path(&r, "/login"), "/");
        let r = route("login", exact("/login"), &[], None, false);
        assert_eq!(forward_path(&r, "/login"), "/login");
    }

    fn insensitive(mut r: Route) -> Route {
        r.case_insensitive = true;
        r
    }

    #[test]
    fn case_insensitive_prefix_and_exact() {
        let rs = Routes::new(vec![
            insensitive(route("auth", prefix("/api/auth"), &[], None, false)),
            insensitive(route("login", exact("/Login"), &[], None, false)),
        ]);
        for p in ["/api/auth", "/API/Auth/login", "/Api/AUTH/", "/api/auth/x"] {
            assert_eq!(name(&rs, &Method::GET, None, p), Some("auth"), "{p}");
        }
        for p in ["/login", "/LOGIN", "/Login", "/LOGIN/"] {
            assert_eq!(name(&rs, &Method::GET, None, p), Some("login"), "{p}");
        }
        for p in ["/API/Authx", "/login/x", "/api", "/%41PI/auth"] {
            assert_eq!(name(&rs, &Method::GET, None, p), None, "{p}");
        }
    }

    #[test]
    fn case_insensitive_keeps_file_order() {
        // A case-sensitive looser route first: it still takes the paths it matches.
        let rs = Routes::new(vec![
            route("api", prefix("/api"), &[], None, false),
            insensitive(route("auth", prefix("/api/auth"), &[], None, false)),
        ]);
        assert_eq!(
            name(&rs, &Method::GET, None, "/API/AUTH/login"),
            Some("auth")
        );
        assert_eq!(
            name(&rs, &Method::GET, None, "/api/AUTH/login"),
            Some("api")
        );
    }

    #[test]
    fn case_insensitive_strip_prefix() {
        let r = insensitive(route("api", prefix("/api"), &[], None, true));
        assert_eq!(forward_path(&r, "/API/x"), "/x");
        assert_eq!(forward_path(&r, "/Api"), "/");
        assert_eq!(forward_path(&r, "/APIx"), "/APIx");
        // Never cut inside a multi-byte character.
        assert_eq!(strip("/\u{e9}", "/a", true), None);
    }
}

/// The route chosen for a raw path is the route chosen for its normalized form, and for the
/// path the upstream will resolve it to, under every path rule.
#[cfg(test)]
mod properties {
    use super::tests_support::*;
    use super::*;
    use crate::uri_path::{self, EscapedSlashes, PathRules, Semicolons};
    use proptest::prelude::*;

    fn segment() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "api", "API", "Auth", "auth", "x", "login", "a%2Fb", "v1",
        ])
        .prop_map(str::to_owned)
    }

    /// A pattern's segments: some named, maybe a trailing `*`.
    fn pattern(segs: &[String], named: &[bool], rest: bool) -> PathPattern {
        let segments = segs
            .iter()
            .zip(named.iter().chain(std::iter::repeat(&false)))
            .enumerate()
            .map(|(i, (s, &n))| {
                if n {
                    Segment::Param(format!("p{i}").into())
                } else {
                    Segment::Literal(s.as_str().into())
                }
            })
            .collect();
        PathPattern {
            text: String::new(),
            segments,
            rest,
        }
    }

    fn routes() -> impl Strategy<Value = Vec<Route>> {
        let spec = (
            prop::collection::vec(segment(), 0..3),
            0u8..3,
            any::<bool>(),
            prop::collection::vec(any::<bool>(), 3),
            any::<bool>(),
            any::<bool>(),
        );
        prop::collection::vec(spec, 1..6).prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (segs, kind, ci, named, rest, slash))| {
                    let p = format!("/{}", segs.join("/"));
                    let m = match kind {
                        // An exact path may end in `/` (`/api/`).
                        0 if slash && !segs.is_empty() => PathMatch::Exact(format!("{p}/")),
                        0 => PathMatch::Exact(p),
                        1 => PathMatch::Prefix(p),
                        _ => PathMatch::Pattern(pattern(&segs, &named, rest)),
                    };
                    let mut r = test_route(&format!("r{i}"), m);
                    r.case_insensitive = ci;
                    r
                })
                .collect()
        })
    }

    fn raw_path() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => segment(),
            2 => prop::sample::select(vec![
                "/", "//", ".", "..", ";x", ";", "%2F", "%2e%2e", "%61", "%3B", "%41UTH",
            ])
            .prop_map(str::to_owned),
        ];
        prop::collection::vec(piece, 0..10).prop_map(|pieces| {
            let mut s = String::from("/");
            for p in pieces {
                if !s.ends_with('/') && !p.starts_with(['/', ';', '%']) {
                    s.push('/');
                }
                s.push_str(&p);
            }
            s
        })
    }

    fn all_rules() -> impl Strategy<Value = PathRules> {
        (
            prop::sample::select(vec![
                Semicolons::Reject,
                Semicolons::Strip,
                Semicolons::Keep,
            ]),
            prop::sample::select(vec![
                EscapedSlashes::Keep,
                EscapedSlashes::Reject,
                EscapedSlashes::Decode,
            ]),
        )
            .prop_map(|(semicolons, escaped_slashes)| PathRules {
                semicolons,
                escaped_slashes,
            })
    }

    fn chosen<'r>(routes: &'r Routes, path: &str) -> Option<&'r str> {
        find(routes, &Method::GET, None, &HeaderMap::new(), path, None).map(|r| &*r.name)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// `rategate check`'s shadowing report is sound: a route reported as shadowed matches
        /// no path that the route shadowing it does not match too.
        #[test]
        fn reported_shadowing_is_certain(routes in routes(), raws in prop::collection::vec(raw_path(), 16)) {
            let shadowed = crate::config::shadow::shadowed(&routes);
            for raw in &raws {
                let Ok(normal) = uri_path::normalize(raw, PathRules::default()) else { continue };
                for &(later, earlier) in &shadowed {
                    let (l, e) = (&routes[later], &routes[earlier]);
                    if path_matches(&l.path, l.case_insensitive, &normal) {
                        prop_assert!(
                            path_matches(&e.path, e.case_insensitive, &normal),
                            "{normal}: {:?} reported shadowed by {:?}", l.path, e.path
                        );
                    }
                }
            }
        }

        /// The first-segment index never changes the answer: it is the first route in file
        /// order whose path matches, as a plain scan finds it.
        #[test]
        fn index_agrees_with_a_scan(routes in routes(), raw in raw_path()) {
            let Ok(normal) = uri_path::normalize(&raw, PathRules::default()) else { return Ok(()) };
            let scan = routes
                .iter()
                .find(|r| path_matches(&r.path, r.case_insensitive, &normal))
                .map(|r| r.name.to_string());
            let routes = Routes::new(routes);
            prop_assert_eq!(chosen(&routes, &normal).map(str::to_owned), scan);
        }

        #[test]
        fn raw_and_normalized_choose_the_same_route(
            routes in routes(),
            raw in raw_path(),
            rules in all_rules(),
        ) {
            let routes = Routes::new(routes);
            let Ok(normal) = uri_path::normalize(&raw, rules) else { return Ok(()) };
            // What the handler matches on is what it would match if the client had sent the
            // normalized form in the first place.
            let again = uri_path::normalize(&normal, rules).map(|p| p.into_owned());
            prop_assert_eq!(again.as_deref(), Ok(&*normal));
            prop_assert_eq!(chosen(&routes, &normal), chosen(&routes, again.as_deref().unwrap_or("")));
            // What the upstream receives (without strip_prefix) is what the route saw.
            if let Some(r) = find(&routes, &Method::GET, None, &HeaderMap::new(), &normal, None) {
                prop_assert_eq!(forward_path(r, &normal), &*normal);
            }
        }

        /// A Tomcat-style upstream cuts `;params` and decodes `%2F`: with "strip" and "decode"
        /// the route chosen is the one for the path it resolves to.
        #[test]
        fn upstream_view_chooses_the_same_route(routes in routes(), raw in raw_path()) {
            let rules = PathRules {
                semicolons: Semicolons::Strip,
                escaped_slashes: EscapedSlashes::Decode,
            };
            let routes = Routes::new(routes);
            let Ok(normal) = uri_path::normalize(&raw, rules) else { return Ok(()) };
            let upstream_view: String = raw
                .split('/')
                .map(|seg| seg.split(';').next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("/")
                .replace("%2F", "/");
            let Ok(seen) = uri_path::normalize(&upstream_view, rules) else {
                return Err(TestCaseError::fail(format!("{raw:?}: {upstream_view:?} refused")));
            };
            prop_assert_eq!(chosen(&routes, &normal), chosen(&routes, &seen));
        }

        /// An exact or `*`-less pattern route that takes a path takes it with one trailing
        /// slash too (the upstream serves both with one handler).
        #[test]
        fn a_trailing_slash_keeps_an_exact_or_pattern_route(routes in routes(), raw in raw_path()) {
            let Ok(normal) = uri_path::normalize(&raw, PathRules::default()) else { return Ok(()) };
            if normal.ends_with('/') {
                return Ok(());
            }
            let slashed = format!("{normal}/");
            for r in &routes {
                let fixed = matches!(&r.path, PathMatch::Exact(_))
                    || matches!(&r.path, PathMatch::Pattern(p) if !p.rest);
                if fixed && path_matches(&r.path, r.case_insensitive, &normal) {
                    prop_assert!(path_matches(&r.path, r.case_insensitive, &slashed), "{:?} {slashed}", r.path);
                }
            }
        }

        /// With every route case-insensitive, the letter case of the request path never changes
        /// the route.
        #[test]
        fn case_never_changes_an_insensitive_route(mut routes in routes(), raw in raw_path()) {
            for r in &mut routes {
                r.case_insensitive = true;
            }
            let routes = Routes::new(routes);
            let rules = PathRules { semicolons: Semicolons::Keep, ..PathRules::default() };
            let Ok(normal) = uri_path::normalize(&raw, rules) else { return Ok(()) };
            let lower = normal.to_ascii_lowercase();
            let upper = normal.to_ascii_uppercase();
            prop_assert_eq!(chosen(&routes, &normal), chosen(&routes, &lower));
            prop_assert_eq!(chosen(&routes, &normal), chosen(&routes, &upper));
        }
    }
}
