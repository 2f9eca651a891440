//! `[[route]]`: what a route matches (path under the server's path rules, methods, host), where
//! it goes (an upstream or a fixed answer), its policies by name, and its request cost.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderName, Method, StatusCode};
use toml::Spanned;

use super::check::{
    bounded, later, Check, Issue, COST_RANGE, RESPOND_STATUS_RANGE, RETRY_ATTEMPTS_RANGE,
};
use super::policy::is_param_name;
use super::validator::Validator;
use crate::auth::Authenticator;
use crate::config::compiled::{
    Cost, HeaderCondition, KeyPart, PathMatch, PathPattern, Policy, Retry, Route, Segment, Target,
    UpgradeProtocol, Upstream, DEFAULT_MAX_COST,
};
use crate::config::file;
use crate::uri_path::{self as path, EscapedSlashes, PathRules, Semicolons};

const STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

impl Validator<'_> {
    pub(super) fn routes(
        &mut self,
        list: &[Spanned<file::Route>],
        refs: &References<'_>,
        rules: PathRules,
    ) -> Option<Vec<Route>> {
        if list.is_empty() {
            self.issues.push(Issue {
                span: None,
                key: Some("route".into()),
                message: "no routes: at least one [[route]] is required".into(),
                external: None,
            });
            return None;
        }
        let routes: Vec<Option<Route>> = list
            .iter()
            .enumerate()
            .map(|(index, r)| self.route(r, index, refs, rules))
            .collect();
        routes.into_iter().collect()
    }

    fn route(
        &mut self,
        spanned: &Spanned<file::Route>,
        index: usize,
        refs: &References<'_>,
        rules: PathRules,
    ) -> Option<Route> {
        let r = spanned.get_ref();
        let path = self.take(path_match(r, rules));
        let methods = match &r.methods {
            None => Some(Vec::new()),
            Some(methods) => self.take(route_methods(methods)),
        };
        let host = match &r.host {
            None => Some(None),
            Some(host) => self.take(route_host(host)).map(Some),
        };
        let headers = match &r.headers {
            None => Some(Vec::new()),
            Some(headers) => self.take(header_conditions(headers)),
        };
        let target = self.take(self.target(spanned, refs)).flatten();
        let policies = self.take(route_policies(r, &refs.policies)).flatten();
        if let (Some(path), Some(policies), Some(names)) = (&path, &policies, &r.policies) {
            self.take(params_exist(path, policies, names));
        }
        let strip_prefix = self.take(strip_prefix(r));
        let cost = self.take(route_cost(r));
        let auth = match &r.auth {
            None => Some(None),
            Some(name) => self
                .take(refs.auths.resolve(name))
                .and_then(|a| a.map(Some)),
        };
        if let (Some(None), Some(policies)) = (&auth, &policies) {
            if let Err(issue) = token_keys_need_auth(r, policies) {
                self.issues.push(issue);
            }
        }
        let upgrade = match &r.upgrade {
            None => Some(Vec::new()),
            Some(list) => self.take(route_upgrade(list, r.respond.is_some())),
        };
        let retry = match &r.retry {
            None => Some(None),
            Some(retry) => self.take(route_retry(r, retry)).map(Some),
        };
        Some(Route {
            name: Arc::from(r.name.get_ref().as_str()),
            path: path?,
            methods: methods?,
            host: host?,
            headers: headers?,
            target: target?,
            policies: policies?,
            strip_prefix: strip_prefix?,
            case_insensitive: r.case_insensitive.unwrap_or(false),
            cost: cost?,
            auth: auth?,
            upgrade: upgrade?,
            retry: retry?,
            index,
        })
    }

    /// `Ok(None)` when the named upstream exists but failed its own checks (already reported).
    fn target(
        &self,
        spanned: &Spanned<file::Route>,
        refs: &References<'_>,
    ) -> Check<Option<Target>> {
        let r = spanned.get_ref();
        match (&r.upstream, &r.respond) {
            (Some(upstream), Some(respond)) => Err(Issue::at(
                &later(upstream, respond),
                "a route has either `upstream` or `respond`, not both",
            )),
            (Some(upstream), None) => Ok(refs.upstreams.resolve(upstream)?.map(Target::Upstream)),
            (None, Some(respond)) => self.respond(respond.get_ref()).map(Some),
            (None, None) => Err(Issue::at(
                spanned,
                "a route needs a target: `upstream = \"NAME\"` or \
                 `respond = { status = 200, body = \"...\" }`",
            )),
        }
    }

    fn respond(&self, respond: &file::Respond) -> Check<Target> {
        let code: u16 = bounded(&respond.status, RESPOND_STATUS_RANGE)?;
        let status = StatusCode::from_u16(code)
            .map_err(|_| Issue::at(&respond.status, "must be between 200 and 599"))?;
        let body = match &respond.body {
            None => Bytes::new(),
            Some(body) => Bytes::from(self.expand(body)?),
        };
        Ok(Target::Respond { status, body })
    }
}

/// Resolution of route references by name.
pub(super) struct References<'a> {
    pub(super) upstreams: Named<'a, Upstream>,
    pub(super) policies: Named<'a, Policy>,
    pub(super) auths: Named<'a, Authenticator>,
}

pub(super) struct Named<'a, T> {
    kind: &'static str,
    by_name: HashMap<&'a str, usize>,
    items: &'a [Option<Arc<T>>],
}

impl<'a, T> Named<'a, T> {
    pub(super) fn new(
        kind: &'static str,
        by_name: HashMap<&'a str, usize>,
        items: &'a [Option<Arc<T>>],
    ) -> Self {
        Named {
            kind,
            by_name,
            items,
        }
    }

    /// `Ok(None)` when the item exists but failed its own checks (already reported).
    fn resolve(&self, name: &Spanned<String>) -> Check<Option<Arc<T>>> {
        match self.by_name.get(name.get_ref().as_str()) {
            Some(&index) => Ok(self.items.get(index).cloned().flatten()),
            None => Err(Issue::at(
                name,
                format!(
                    "dangling reference: no [[{}]] named `{}` (defined: {})",
                    self.kind,
                    name.get_ref(),
                    self.defined()
                ),
            )),
        }
    }

    fn defined(&self) -> String {
        let mut names: Vec<(&usize, &&str)> = self.by_name.iter().map(|(n, i)| (i, n)).collect();
        names.sort();
        let names: Vec<&str> = names.into_iter().map(|(_, n)| *n).collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }
}

fn path_match(r: &file::Route, rules: PathRules) -> Check<PathMatch> {
    match (&r.path, &r.path_prefix) {
        (Some(path), Some(prefix)) => Err(Issue::at(
            &later(path, prefix),
            "`path` and `path_prefix` cannot both be set; use `path` for one exact path or \
             `path_prefix` for a subtree",
        )),
        (Some(path), None) if is_pattern(path.get_ref()) => {
            Ok(PathMatch::Pattern(route_pattern(path, rules)?))
        }
        (Some(path), None) => Ok(PathMatch::Exact(route_path(path, rules)?)),
        (None, Some(prefix)) => {
            let prefix = route_path(prefix, rules)?;
            let trimmed = prefix.trim_end_matches('/');
            Ok(PathMatch::Prefix(if trimmed.is_empty() {
                "/".to_owned()
            } else {
                trimmed.to_owned()
            }))
        }
        (None, None) => Ok(PathMatch::Prefix("/".to_owned())),
    }
}

/// A `path` with a `{name}` segment or a `*` segment is a pattern. (`*` inside a segment, as in
/// `/a*b`, is an ordinary character of an exact path.)
fn is_pattern(text: &str) -> bool {
    text.contains(['{', '}']) || text.split('/').any(|s| s == "*")
}

/// `/api/users/{id}/orders`, `/static/*`: each `{name}` a whole segment with a unique name, `*`
/// only as the whole last segment, the literal segments normalized like any route path.
fn route_pattern(path: &Spanned<String>, rules: PathRules) -> Check<PathPattern> {
    let text = path.get_ref();
    let fail = |message: String| Issue::at(path, message);
    let Some(body) = text.strip_prefix('/') else {
        return Err(fail(format!("`{text}` must start with `/`")));
    };
    let (body, rest) = match body.strip_suffix('*') {
        Some(b) if b.is_empty() || b.ends_with('/') => (b.strip_suffix('/').unwrap_or(b), true),
        _ => (body, false),
    };
    let mut segments: Vec<Segment> = Vec::new();
    let pieces: Vec<&str> = if body.is_empty() && rest {
        Vec::new()
    } else {
        body.split('/').collect()
    };
    let last = pieces.len().saturating_sub(1);
    for (i, piece) in pieces.iter().enumerate() {
        if let Some(name) = piece.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if !is_param_name(name) {
                return Err(fail(format!(
                    "`{text}`: `{{{name}}}` is not a segment name; names are letters, digits \
                     and `_`"
                )));
            }
            if segments
                .iter()
                .any(|s| matches!(s, Segment::Param(n) if &**n == name))
            {
                return Err(fail(format!("`{text}`: `{{{name}}}` is named twice")));
            }
            segments.push(Segment::Param(name.into()));
        } else if piece.contains(['{', '}']) {
            return Err(fail(format!(
                "`{text}`: a named segment is a whole segment, as in `/users/{{id}}/orders`"
            )));
        } else if *piece == "*" {
            return Err(fail(format!(
                "`{text}`: `*` stands for the rest of the path, so it can only be the last \
                 segment"
            )));
        } else if piece.is_empty() && (i != last || rest) {
            return Err(fail(format!("`{text}` is not normalized: no `//`")));
        } else {
            // A literal segment must be what a normalized request path holds there.
            route_path_text(&format!("/{piece}"), rules)
                .map_err(|message| fail(format!("`{text}`: {message}")))?;
            segments.push(Segment::Literal((*piece).into()));
        }
    }
    Ok(PathPattern {
        text: text.clone(),
        segments: segments.into_boxed_slice(),
        rest,
    })
}

/// Requests are matched after normalization, so a path that is not normalized could never match.
fn route_path(path: &Spanned<String>, rules: PathRules) -> Check<String> {
    route_path_text(path.get_ref(), rules).map_err(|message| Issue::at(path, message))?;
    Ok(path.get_ref().clone())
}

fn route_path_text(text: &str, rules: PathRules) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!("`{text}` must start with `/`"));
    }
    if text.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#') {
        return Err(format!(
            "`{text}` must be a path only: no whitespace, query (`?`) or fragment (`#`)"
        ));
    }
    let dotted = text[1..].split('/').any(|s| s == "." || s == "..");
    if text.contains("//") || dotted {
        return Err(format!(
            "`{text}` is not normalized: no `//`, `.` or `..` segments"
        ));
    }
    route_path_under_rules(text, rules)
}

/// Every `param:NAME` of the route's policies names a `{NAME}` of its path: otherwise the
/// policy would have nothing to key by on this route.
fn params_exist(
    path: &PathMatch,
    policies: &[Arc<Policy>],
    names: &[Spanned<String>],
) -> Check<()> {
    for (policy, name) in policies.iter().zip(names) {
        for part in &policy.key {
            let KeyPart::Param(param) = part else {
                continue;
            };
            let found = match path {
                PathMatch::Pattern(p) => p.param_position(param).is_some(),
                _ => false,
            };
            if !found {
                return Err(Issue::at(
                    name,
                    format!(
                        "policy `{}` is keyed by `param:{param}`, but this route's path has no \
                         `{{{param}}}` segment (e.g. path = \"/users/{{{param}}}\")",
                        policy.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `headers = { "x-tenant" = "gold", "x-beta" = true }`.
fn header_conditions(
    headers: &Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
) -> Check<Vec<HeaderCondition>> {
    if headers.get_ref().is_empty() {
        return Err(Issue::at(
            headers,
            "must name at least one header (omit `headers` to match any request)",
        ));
    }
    let mut out: Vec<HeaderCondition> = Vec::with_capacity(headers.get_ref().len());
    // In file order, so the first problem reported is the first one written.
    let mut entries: Vec<_> = headers.get_ref().iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (key, want) in entries {
        let name = HeaderName::from_bytes(key.get_ref().as_bytes()).map_err(|_| {
            Issue::at(
                key,
                format!("`{}` is not a valid HTTP header name", key.get_ref()),
            )
        })?;
        if out.iter().any(|c| c.name == name) {
            return Err(Issue::at(
                key,
                format!("header `{name}` is listed twice (names are case-insensitive)"),
            ));
        }
        let value = match want.get_ref() {
            toml::Value::Boolean(true) => None,
            toml::Value::String(v) => {
                let valid = !v.is_empty()
                    && v.trim() == v
                    && v.bytes()
                        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
                if !valid {
                    return Err(Issue::at(
                        want,
                        format!(
                            "`{v}` can never match a header value: it must be non-empty \
                             visible ASCII without surrounding spaces"
                        ),
                    ));
                }
                Some(v.as_bytes().into())
            }
            toml::Value::Boolean(false) => {
                return Err(Issue::at(
                    want,
                    "`false` is not a condition: write `true` (the header is present) or a \
                     string (its exact value); for requests without the header, list this route \
                     after the one with the condition",
                ))
            }
            _ => {
                return Err(Issue::at(
                    want,
                    "expected a value to match exactly (a string) or `true` for presence",
                ))
            }
        };
        out.push(HeaderCondition { name, value });
    }
    Ok(out)
}

/// A route path that the path rules would refuse or rewrite in a request can never match.
fn route_path_under_rules(text: &str, rules: PathRules) -> Result<(), String> {
    let upper = text.to_ascii_uppercase();
    let semicolon = text.contains(';') || upper.contains("%3B");
    match rules.semicolons {
        Semicolons::Keep => {}
        _ if !semicolon => {}
        Semicolons::Reject => {
            return Err(format!(
                "`{text}` can never match: server.path_semicolons = \"reject\" refuses requests \
                 whose path holds `;` or `%3B`"
            ))
        }
        Semicolons::Strip => {
            return Err(format!(
                "`{text}` can never match: server.path_semicolons = \"strip\" removes `;` \
                 parameters before matching (and refuses `%3B`)"
            ))
        }
    }
    if upper.contains("%2F") || upper.contains("%5C") {
        match rules.escaped_slashes {
            EscapedSlashes::Keep => {}
            EscapedSlashes::Reject => {
                return Err(format!(
                    "`{text}` can never match: server.escaped_slashes = \"reject\" refuses \
                     requests whose path holds `%2F` or `%5C`"
                ))
            }
            EscapedSlashes::Decode => {
                return Err(format!(
                    "`{text}` can never match: server.escaped_slashes = \"decode\" turns `%2F` \
                     into `/` before matching (and refuses `%5C`); write `/`"
                ))
            }
        }
    }
    match path::normalize(text, rules) {
        Ok(normal) if normal == text => Ok(()),
        Ok(normal) => Err(format!(
            "`{text}` is not normalized: requests are matched in their normalized form, here \
             `{normal}`"
        )),
        Err(e) => Err(format!(
            "`{text}` can never match: requests with this path are refused ({e})"
        )),
    }
}

fn route_methods(methods: &Spanned<Vec<Spanned<String>>>) -> Check<Vec<Method>> {
    if methods.get_ref().is_empty() {
        return Err(Issue::at(
            methods,
            "must name at least one method (omit `methods` to match any method)",
        ));
    }
    let mut out: Vec<Method> = Vec::with_capacity(methods.get_ref().len());
    for item in methods.get_ref() {
        let upper = item.get_ref().to_ascii_uppercase();
        let method = STANDARD_METHODS
            .iter()
            .find(|m| m.as_str() == upper)
            .ok_or_else(|| {
                Issue::at(
                    item,
                    format!(
                        "unknown HTTP method `{}`; expected one of GET, HEAD, POST, PUT, DELETE, \
                         CONNECT, OPTIONS, TRACE, PATCH",
                        item.get_ref()
                    ),
                )
            })?;
        if !out.contains(method) {
            out.push(method.clone());
        }
    }
    Ok(out)
}

fn route_upgrade(
    list: &Spanned<Vec<Spanned<String>>>,
    responds: bool,
) -> Check<Vec<UpgradeProtocol>> {
    if responds {
        return Err(Issue::at(
            list,
            "`upgrade` needs an `upstream` to switch protocols with; this route has `respond`",
        ));
    }
    let mut out: Vec<UpgradeProtocol> = Vec::with_capacity(list.get_ref().len());
    for item in list.get_ref() {
        let protocol = UpgradeProtocol::ALL
            .into_iter()
            .find(|p| p.token().eq_ignore_ascii_case(item.get_ref()))
            .ok_or_else(|| {
                let known: Vec<&str> = UpgradeProtocol::ALL.iter().map(|p| p.token()).collect();
                Issue::at(
                    item,
                    format!(
                        "unknown upgrade protocol `{}`; expected one of: {}",
                        item.get_ref(),
                        known.join(", ")
                    ),
                )
            })?;
        if !out.contains(&protocol) {
            out.push(protocol);
        }
    }
    Ok(out)
}

fn route_host(host: &Spanned<String>) -> Check<String> {
    let text = host.get_ref();
    let bad = || {
        Issue::at(
            host,
            format!("`{text}` is not a host name; expected e.g. \"api.example.com\""),
        )
    };
    if text.contains(['@', '/']) {
        return Err(bad());
    }
    let authority: Authority = text.parse().map_err(|_| bad())?;
    if authority.host().is_empty() {
        return Err(bad());
    }
    // Ports are ignored when matching, and host names are case-insensitive.
    Ok(authority.host().to_ascii_lowercase())
}

/// `Ok(None)` when a named policy exists but failed its own checks (already reported).
fn route_policies(
    r: &file::Route,
    policies: &Named<'_, Policy>,
) -> Check<Option<Vec<Arc<Policy>>>> {
    let Some(names) = &r.policies else {
        return Ok(Some(Vec::new()));
    };
    let mut out = Vec::with_capacity(names.len());
    let mut complete = true;
    for (i, name) in names.iter().enumerate() {
        if names[..i].iter().any(|n| n.get_ref() == name.get_ref()) {
            return Err(Issue::at(
                name,
                format!("policy `{}` is listed twice", name.get_ref()),
            ));
        }
        match policies.resolve(name)? {
            Some(policy) => out.push(policy),
            None => complete = false,
        }
    }
    Ok(complete.then_some(out))
}

/// A policy keyed by a token's claims (or taking its tier from one) on a route without `auth`
/// would never see a verified claim.
fn token_keys_need_auth(r: &file::Route, policies: &[Arc<Policy>]) -> Check<()> {
    let names = r.policies.iter().flatten();
    for (policy, name) in policies.iter().zip(names) {
        let part = policy.key.iter().find(|p| p.needs_token());
        if part.is_some() || policy.overrides_from.is_some() {
            let what = part.map_or_else(
                || "takes its tier from a token claim (`overrides_from`)".to_owned(),
                |p| format!("is keyed by `{p}`"),
            );
            return Err(Issue::at(
                name,
                format!(
                    "policy `{}` {what}, which needs a verified token: set `auth = \"NAME\"` on \
                     this route",
                    policy.name
                ),
            ));
        }
    }
    Ok(())
}

fn strip_prefix(r: &file::Route) -> Check<bool> {
    let Some(flag) = &r.strip_prefix else {
        return Ok(false);
    };
    if *flag.get_ref() && (r.path_prefix.is_none() || r.upstream.is_none()) {
        return Err(Issue::at(
            flag,
            "`strip_prefix = true` needs both `path_prefix` and `upstream`",
        ));
    }
    Ok(*flag.get_ref())
}

/// A route's `cost`, `cost_header` and `max_cost`.
fn route_cost(r: &file::Route) -> Check<Cost> {
    if let (Some(max), None) = (&r.max_cost, &r.cost_header) {
        return Err(Issue::at(
            max,
            "`max_cost` needs `cost_header` (it bounds the cost a request may name)",
        ));
    }
    let header = match &r.cost_header {
        None => None,
        Some(name) => Some(
            HeaderName::from_bytes(name.get_ref().as_bytes()).map_err(|_| {
                Issue::at(
                    name,
                    format!("`{}` is not a valid HTTP header name", name.get_ref()),
                )
            })?,
        ),
    };
    let max = match &r.max_cost {
        None => DEFAULT_MAX_COST,
        Some(max) => bounded(max, COST_RANGE)?,
    };
    let fixed = match &r.cost {
        None => 1,
        Some(cost) if header.is_some() => bounded(cost, 1..=max).map_err(|mut issue| {
            issue.message.push_str(" (max_cost)");
            issue
        })?,
        Some(cost) => bounded(cost, COST_RANGE)?,
    };
    Ok(Cost { fixed, header, max })
}

/// `retry = { attempts, on }`: only for routes to an upstream.
fn route_retry(r: &file::Route, spanned: &Spanned<file::Retry>) -> Check<Retry> {
    if r.upstream.is_none() {
        return Err(Issue::at(spanned, "`retry` needs `upstream`"));
    }
    let retry = spanned.get_ref();
    let attempts = match &retry.attempts {
        Some(n) => bounded(n, RETRY_ATTEMPTS_RANGE)?,
        None => 1,
    };
    let on: &[file::RetryOn] = match &retry.on {
        Some(on) if on.get_ref().is_empty() => {
            return Err(Issue::at(
                on,
                "must name at least one of \"reset\", \"timeout\", \"gateway_error\"",
            ))
        }
        Some(on) => on.get_ref(),
        None => &[file::RetryOn::Reset, file::RetryOn::Timeout],
    };
    Ok(Retry {
        attempts,
        on_reset: on.contains(&file::RetryOn::Reset),
        on_timeout: on.contains(&file::RetryOn::Timeout),
        on_gateway_error: on.contains(&file::RetryOn::GatewayError),
    })
}
