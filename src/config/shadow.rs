//! Routes that can never match: an earlier route (first match wins) takes every request they
//! would. Reported by `rategate check`. The check is sound: it reports a route only when one
//! earlier route certainly matches every request the later one matches (its methods, host,
//! header conditions and paths all include the later route's); shadowing by several earlier
//! routes together is not looked for.

use super::compiled::{HeaderCondition, PathMatch, Route, Segment};
use super::routes::method_listed;

/// `(shadowed, by)`: indices of each route that can never match and of the first earlier route
/// that takes all its requests.
pub(crate) fn shadowed(routes: &[Route]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (j, later) in routes.iter().enumerate() {
        if let Some(i) = routes[..j]
            .iter()
            .position(|earlier| covers(earlier, later))
        {
            out.push((j, i));
        }
    }
    out
}

/// Whether every request `later` matches is matched by `earlier`.
fn covers(earlier: &Route, later: &Route) -> bool {
    // A method list takes its methods in any case, HEAD with GET and a POST overridden to one
    // of them; all three only grow with the list, so the earlier route takes every request of
    // the later one when it takes each method the later one lists.
    let methods = earlier.methods.is_empty()
        || (!later.methods.is_empty()
            && later
                .methods
                .iter()
                .all(|m| method_listed(&earlier.methods, m.as_str())));
    let host = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(a), Some(b)) => bare_host(a) == bare_host(b),
        (Some(_), None) => false,
    };
    let headers = earlier
        .headers
        .iter()
        .all(|cond| implied(cond, &later.headers));
    methods
        && host
        && headers
        && path_covers(
            &shape(&earlier.path),
            earlier.case_insensitive,
            &shape(&later.path),
            later.case_insensitive,
        )
}

/// Configured hosts are lower-cased already; brackets and a trailing dot do not change the host.
fn bare_host(h: &str) -> &str {
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    h.strip_suffix('.').unwrap_or(h)
}

/// A condition of the earlier route that every request of the later one satisfies.
fn implied(cond: &HeaderCondition, later: &[HeaderCondition]) -> bool {
    later
        .iter()
        .any(|c| c.name == cond.name && (cond.value.is_none() || cond.value == c.value))
}

/// One segment position of a path match.
enum Seg<'a> {
    Literal(&'a str),
    /// `{name}`: any non-empty segment.
    Any,
}

/// What may follow the fixed segments.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Nothing but one optional trailing slash (exact paths, patterns without `*`).
    End,
    /// Any number of further segments, none included (`path_prefix`).
    ZeroOrMore,
    /// At least one further segment, possibly empty (`/*`).
    OneOrMore,
}

/// Every path match as segments (after the leading `/`) and a tail.
fn shape(path: &PathMatch) -> (Vec<Seg<'_>>, Tail) {
    fn literals(p: &str) -> Vec<Seg<'_>> {
        p.get(1..)
            .map_or_else(Vec::new, |p| p.split('/').map(Seg::Literal).collect())
    }
    match path {
        PathMatch::Exact(p) => (literals(p), Tail::End),
        PathMatch::Prefix(p) => {
            let base = p.trim_end_matches('/');
            let segs = if base.is_empty() {
                Vec::new()
            } else {
                literals(base)
            };
            (segs, Tail::ZeroOrMore)
        }
        PathMatch::Pattern(p) => {
            let segs = p
                .segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(text) => Seg::Literal(text),
                    Segment::Param(_) => Seg::Any,
                })
                .collect();
            (segs, if p.rest { Tail::OneOrMore } else { Tail::End })
        }
    }
}

/// Whether every normalized path `later` matches is matched by `earlier`.
fn path_covers(
    (earlier, e_tail): &(Vec<Seg<'_>>, Tail),
    e_ci: bool,
    (later, l_tail): &(Vec<Seg<'_>>, Tail),
    l_ci: bool,
) -> bool {
    // The later route matches paths exactly `later.len()` segments long (or longer): the
    // earlier one must need no more than that.
    if later.len() < earlier.len() {
        return false;
    }
    let fixed = earlier
        .iter()
        .zip(later)
        .all(|(e, l)| segment_covers(e, e_ci, l, l_ci));
    if !fixed {
        return false;
    }
    if later.len() > earlier.len() {
        // The later route's extra segments fall in the earlier one's tail; an exact path or a
        // pattern without `*` takes one trailing slash, so an earlier `/a` covers a later `/a/`
        // (the empty last segment) and nothing longer.
        return match e_tail {
            Tail::End => {
                later.len() == earlier.len() + 1
                    && *l_tail == Tail::End
                    && matches!(later.last(), Some(Seg::Literal("")))
            }
            Tail::ZeroOrMore | Tail::OneOrMore => true,
        };
    }
    matches!(
        (e_tail, l_tail),
        (Tail::ZeroOrMore, _) | (Tail::End, Tail::End) | (Tail::OneOrMore, Tail::OneOrMore)
    )
}

fn segment_covers(earlier: &Seg<'_>, e_ci: bool, later: &Seg<'_>, l_ci: bool) -> bool {
    match (earlier, later) {
        (Seg::Any, Seg::Any) => true,
        (Seg::Any, Seg::Literal(l)) => !l.is_empty(),
        (Seg::Literal(_), Seg::Any) => false,
        (Seg::Literal(e), Seg::Literal(l)) if e_ci => e.eq_ignore_ascii_case(l),
        // A case-insensitive later literal also matches its case variants: only a literal
        // without letters has none.
        (Seg::Literal(e), Seg::Literal(l)) if l_ci => {
            e == l && !l.bytes().any(|b| b.is_ascii_alphabetic())
        }
        (Seg::Literal(e), Seg::Literal(l)) => e == l,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{HeaderName, Method, StatusCode};

    use super::*;
    use crate::config::compiled::{PathPattern, Target};

    fn route(path: PathMatch) -> Route {
        Route {
            name: Arc::from("r"),
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
            cost: Default::default(),
            retry: None,
            index: 0,
            auth: None,
            upgrade: Vec::new(),
        }
    }

    fn exact(p: &str) -> Route {
        route(PathMatch::Exact(p.into()))
    }

    fn prefix(p: &str) -> Route {
        route(PathMatch::Prefix(p.into()))
    }

    /// `{x}` segments named, a trailing `*` the rest.
    fn pattern(p: &str) -> Route {
        let (body, rest) = match p.strip_suffix("/*") {
            Some(b) => (b, true),
            None => (p, false),
        };
        let segments = body
            .get(1..)
            .filter(|b| !b.is_empty())
            .map_or_else(Vec::new, |b| {
                b.split('/')
                    .map(|s| match s.strip_prefix('{') {
                        Some(n) => Segment::Param(n.trim_end_matches('}').into()),
                        None => Segment::Literal(s.into()),
                    })
                    .collect()
            });
        route(PathMatch::Pattern(PathPattern {
            text: p.into(),
            segments: segments.into_boxed_slice(),
            rest,
        }))
    }

    fn ci(mut r: Route) -> Route {
        r.case_insensitive = true;
        r
    }

    #[test]
    fn paths() {
        let yes = [
            (prefix("/"), exact("/a")),
            (prefix("/"), pattern("/{id}")),
            (prefix("/api"), pattern("/api/users/{id}/orders")),
            (prefix("/api"), exact("/api")),
            (pattern("/api/users/{id}"), exact("/api/users/7")),
            (pattern("/api/{a}/{b}"), pattern("/api/users/{id}")),
            (pattern("/static/*"), exact("/static/")),
            (pattern("/static/*"), pattern("/static/{f}")),
            (pattern("/static/*"), prefix("/static/css")),
            (pattern("/*"), prefix("/a")),
            (ci(prefix("/api")), prefix("/API/x")),
            (ci(prefix("/api")), ci(prefix("/Api/x"))),
            (prefix("/1"), ci(prefix("/1/2"))),
            // `/a` takes `/a/` as well.
            (exact("/a"), exact("/a/")),
            (pattern("/a/{id}"), exact("/a/b/")),
            (ci(exact("/A")), exact("/a/")),
        ];
        for (i, (e, l)) in yes.iter().enumerate() {
            assert!(covers(e, l), "case {i}");
        }
        let no = [
            (exact("/a"), prefix("/a")),
            (pattern("/api/users/{id}"), exact("/api/users/")),
            (pattern("/api/users/{id}"), prefix("/api/users")),
            (pattern("/static/*"), prefix("/static")),
            (pattern("/static/*"), exact("/static")),
            (prefix("/api/users/7"), pattern("/api/users/{id}")),
            (pattern("/{id}"), prefix("/")),
            (pattern("/{id}"), exact("/")),
            (prefix("/api"), ci(prefix("/api/x"))),
            (prefix("/v1"), ci(prefix("/v1/2"))),
            (prefix("/apix"), prefix("/api")),
            (exact("/api/x"), pattern("/api/*")),
            (exact("/a/"), exact("/a")),
            (exact("/a"), exact("/a/b")),
            (exact("/a"), pattern("/a/{id}")),
        ];
        for (i, (e, l)) in no.iter().enumerate() {
            assert!(!covers(e, l), "case {i}");
        }
    }

    #[test]
    fn methods_hosts_and_headers() {
        let mut get = prefix("/");
        get.methods = vec![Method::GET];
        let mut get_post = prefix("/a");
        get_post.methods = vec![Method::GET, Method::POST];
        assert!(!covers(&get, &get_post));
        assert!(!covers(&get, &prefix("/a")));
        let mut only_get = prefix("/a");
        only_get.methods = vec![Method::GET];
        assert!(covers(&get, &only_get));
        // A GET route takes HEAD requests too; a HEAD route no GET requests.
        let mut only_head = prefix("/a");
        only_head.methods = vec![Method::HEAD];
        assert!(covers(&get, &only_head));
        let mut head = prefix("/");
        head.methods = vec![Method::HEAD];
        assert!(!covers(&head, &only_get));

        let mut host = prefix("/");
        host.host = Some("api.example.com".into());
        let mut same = prefix("/x");
        same.host = Some("api.example.com.".into());
        assert!(covers(&host, &same));
        assert!(!covers(&host, &prefix("/x")));

        let tenant = HeaderName::from_static("x-tenant");
        let cond = |value: Option<&str>| HeaderCondition {
            name: tenant.clone(),
            value: value.map(|v| v.as_bytes().into()),
        };
        let mut present = prefix("/");
        present.headers = vec![cond(None)];
        let mut gold = prefix("/a");
        gold.headers = vec![cond(Some("gold"))];
        assert!(covers(&present, &gold));
        assert!(!covers(&gold, &present));
        assert!(!covers(&present, &prefix("/a")));
        assert!(covers(&prefix("/"), &gold));
    }

    #[test]
    fn first_shadowing_route_is_named() {
        let routes = [
            prefix("/api"),
            prefix("/"),
            exact("/api/x"),
            pattern("/other/{id}"),
        ];
        assert_eq!(shadowed(&routes), vec![(2, 0), (3, 1)]);
    }
}
