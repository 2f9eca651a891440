//! Routing sees the path the upstream will see: `;` path parameters (`server.path_semicolons`),
//! encoded slashes (`server.escaped_slashes`) and case-insensitive routes, through the real
//! binary over real sockets. Which route took a request shows in `X-RateLimit-Policy` (each
//! route has its own policy) and what the upstream received in the echo's `uri`.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn echo_json(resp: &str) -> Value {
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// The `X-RateLimit-Policy` of a raw response: the policy (so the route) that took it.
fn policy_of(resp: &str) -> Option<&str> {
    resp.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-ratelimit-policy")
            .then(|| value.trim())
    })
}

/// A config with `server_extra` lines in `[server]`, one upstream `api`, the policies `auth`
/// and `api`, and `routes`.
fn config(upstream: &str, server_extra: &str, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"
{server_extra}

[admin]
listen = "127.0.0.1:0"

[[upstream]]
name = "api"
url = "{upstream}"
connect_timeout = "1s"
timeout = "2s"

[[policy]]
name = "auth"
algorithm = "fixed_window"
limit = 1000
window = "60s"

[[policy]]
name = "api"
algorithm = "fixed_window"
limit = 1000
window = "60s"

{routes}
"#
    )
}

/// The strict route first, the looser one after it: the usual layout.
const STRICT_THEN_LOOSE: &str = r#"
[[route]]
name = "auth"
path_prefix = "/api/auth"
upstream = "api"
policies = ["auth"]

[[route]]
name = "api"
path_prefix = "/api"
upstream = "api"
policies = ["api"]
"#;

const SEMICOLON_PATHS: [&str; 3] = [
    "/api/auth;jsessionid=0123/login",
    "/api/auth;/login",
    "/api/auth%3B/login",
];

#[track_caller]
fn assert_bad_path(resp: &str, needle: &str) {
    assert_eq!(raw_status(resp), 400, "{resp}");
    let body = echo_json(resp);
    assert_eq!(body["error"], "bad_request", "{resp}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

#[test]
fn semicolons_are_refused_by_default() {
    let echo = Echo::start();
    let gw = Gateway::start(&config(&echo.url(), "", STRICT_THEN_LOOSE));
    for path in SEMICOLON_PATHS
        .into_iter()
        .chain(["/api/auth%3b/login", "/api;x"])
    {
        let resp = raw_get(gw.addr, path, "");
        assert_bad_path(&resp, "semicolon");
    }
    assert_eq!(echo.count(), 0, "nothing reached the upstream");
    // Paths without a semicolon are untouched, and an encoded `%` before `3B` is not one.
    let resp = raw_get(gw.addr, "/api/auth/login", "");
    assert_eq!(policy_of(&resp), Some("auth"), "{resp}");
    let resp = raw_get(gw.addr, "/api/a%253Bb", "");
    assert_eq!(echo_json(&resp)["uri"], "/api/a%253Bb", "{resp}");
}

#[test]
fn strip_removes_parameters_before_matching_and_forwarding() {
    let echo = Echo::start();
    let gw = Gateway::start(&config(
        &echo.url(),
        "path_semicolons = \"strip\"",
        STRICT_THEN_LOOSE,
    ));
    for path in [
        "/api/auth;jsessionid=0123/login",
        "/api/auth;/login",
        "/api;v=1/auth;x/login;y=2",
    ] {
        let resp = raw_get(gw.addr, path, "");
        assert_eq!(raw_status(&resp), 200, "{path}: {resp}");
        assert_eq!(policy_of(&resp), Some("auth"), "{path}: {resp}");
        assert_eq!(echo_json(&resp)["uri"], "/api/auth/login", "{path}");
    }
    // Tomcat's `..;` climbs once the parameter is gone: so does matching.
    let resp = raw_get(gw.addr, "/api/x/..;/auth/login", "");
    assert_eq!(policy_of(&resp), Some("auth"), "{resp}");
    assert_eq!(echo_json(&resp)["uri"], "/api/auth/login");
    // An encoded semicolon is ambiguous between servers: refused, never a way around a route.
    let resp = raw_get(gw.addr, "/api/auth%3B/login", "");
    assert_bad_path(&resp, "semicolon");
    assert!(echo.seen().iter().all(|s| !s.uri.contains(';')));
}

#[test]
fn keep_leaves_semicolons_as_data() {
    let echo = Echo::start();
    let gw = Gateway::start(&config(
        &echo.url(),
        "path_semicolons = \"keep\"",
        STRICT_THEN_LOOSE,
    ));
    let resp = raw_get(gw.addr, "/api/auth;jsessionid=0123/login", "");
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(policy_of(&resp), Some("api"), "{resp}");
    assert_eq!(echo_json(&resp)["uri"], "/api/auth;jsessionid=0123/login");
    let resp = raw_get(gw.addr, "/api/auth%3b/login", "");
    assert_eq!(echo_json(&resp)["uri"], "/api/auth%3B/login");
    // The `..;` dot segment in disguise stays refused.
    let resp = raw_get(gw.addr, "/api/x/..;/auth/login", "");
    assert_bad_path(&resp, "malformed");
}

#[test]
fn escaped_slashes_keep_by_default() {
    let echo = Echo::start();
    let gw = Gateway::start(&config(&echo.url(), "", STRICT_THEN_LOOSE));
    let resp = raw_get(gw.addr, "/api/a%2fb", "");
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(echo_json(&resp)["uri"], "/api/a%2Fb");
}

#[test]
fn escaped_slashes_reject() {
    let echo = Echo::start();
    let gw = Gateway::start(&config(
        &echo.url(),
        "escaped_slashes = \"reject\"",
        STRICT_THEN_LOOSE,
    ));
    for path in [
        "/api%2Fauth/login",
        "/api%2fauth/login",
        "/api/a%5Cb",
        "/api/a%5cb",
    ] {
        let resp = raw_get(gw.addr, path, "");
        assert_bad_path(&resp, "encoded slash");
    }
    assert_eq!(echo.count(), 0);
    let resp = raw_get(gw.addr, "/api/a%252Fb", "");
    assert_eq!(echo_json(&resp)["uri"], "/api/a%252Fb", "{resp}");
}

#[test]
fn escaped_slashes_decode_then_match_and_forward() {
    let echo = Echo::start();
    let gw = Gateway::start(&config(
        &echo.url(),
        "escaped_slashes = \"decode\"",
        STRICT_THEN_LOOSE,
    ));
    for path in [
        "/api%2Fauth/login",
        "/api%2fauth%2flogin",
        "/api/x%2F..%2Fauth/login",
        "/api/x/%2E%2E%2Fauth/login",
    ] {
        let resp = raw_get(gw.addr, path, "");
        assert_eq!(raw_status(&resp), 200, "{path}: {resp}");
        assert_eq!(policy_of(&resp), Some("auth"), "{path}: {resp}");
        assert_eq!(echo_json(&resp)["uri"], "/api/auth/login", "{path}");
    }
    // Climbing above the root through decoded slashes is still refused.
    for path in ["/api%2F..%2F..%2Fetc/passwd", "/%2F..%2F..", "/..%2Fapi"] {
        let resp = raw_get(gw.addr, path, "");
        assert_bad_path(&resp, "above the root");
    }
    // `%5C` would decode to a backslash, which is refused raw as well.
    let resp = raw_get(gw.addr, "/api/a%5Cb", "");
    assert_bad_path(&resp, "encoded slash");
    assert!(echo.seen().iter().all(|s| !s.uri.contains('%')));
}

#[test]
fn case_insensitive_routes_match_any_letter_case() {
    let echo = Echo::start();
    let routes = r#"
[[route]]
name = "auth"
path_prefix = "/api/auth"
upstream = "api"
policies = ["auth"]
case_insensitive = true

[[route]]
name = "login"
path = "/login"
respond = { status = 204 }
case_insensitive = true

[[route]]
name = "svc"
path_prefix = "/svc"
upstream = "api"
strip_prefix = true
case_insensitive = true

[[route]]
name = "api"
path_prefix = "/api"
upstream = "api"
policies = ["api"]
"#;
    let gw = Gateway::start(&config(&echo.url(), "", routes));
    for path in ["/API/Auth/login", "/api/AUTH/login", "/Api/auth"] {
        let resp = raw_get(gw.addr, path, "");
        assert_eq!(policy_of(&resp), Some("auth"), "{path}: {resp}");
        // The upstream gets the path as sent (it is the one ignoring case).
        assert_eq!(echo_json(&resp)["uri"], path);
    }
    for path in ["/LOGIN", "/Login", "/login"] {
        assert_eq!(raw_status(&raw_get(gw.addr, path, "")), 204, "{path}");
    }
    assert_eq!(raw_status(&raw_get(gw.addr, "/LOGIN/x", "")), 404);
    // The prefix is stripped in whatever case it matched.
    let resp = raw_get(gw.addr, "/SVC/Users", "");
    assert_eq!(echo_json(&resp)["uri"], "/Users", "{resp}");
}

/// The attack: a looser case-sensitive route first, the strict case-insensitive one later. File
/// order stays the rule, so all-upper-case lands on the strict route (the loose one does not
/// match it), while `/api/AUTH` is the loose route's, as documented.
#[test]
fn case_insensitive_route_after_a_looser_one_keeps_file_order() {
    let echo = Echo::start();
    let routes = r#"
[[route]]
name = "api"
path_prefix = "/api"
upstream = "api"
policies = ["api"]

[[route]]
name = "auth"
path_prefix = "/api/auth"
upstream = "api"
policies = ["auth"]
case_insensitive = true
"#;
    let gw = Gateway::start(&config(&echo.url(), "", routes));
    let resp = raw_get(gw.addr, "/API/AUTH/login", "");
    assert_eq!(policy_of(&resp), Some("auth"), "{resp}");
    let resp = raw_get(gw.addr, "/api/AUTH/login", "");
    assert_eq!(policy_of(&resp), Some("api"), "{resp}");
}

/// On a case-insensitive route, `/API/x` and `/api/x` are one resource upstream, so a
/// path-keyed policy counts them together: changing case is not a fresh quota.
#[test]
fn case_insensitive_path_keys_share_a_counter() {
    let echo = Echo::start();
    let config = config_with(
        &echo.url(),
        r#"
[[policy]]
name = "per-path"
algorithm = "fixed_window"
limit = 2
window = "60s"
key = ["path"]

[[route]]
name = "auth"
path_prefix = "/api/auth"
upstream = "api"
policies = ["per-path"]
case_insensitive = true
"#,
    );
    let gw = Gateway::start(&config);
    for (path, want) in [
        ("/api/auth/login", 200),
        ("/API/AUTH/LOGIN", 200),
        ("/Api/Auth/Login", 429),
        ("/api/auth/other", 200),
    ] {
        let resp = raw_get(gw.addr, path, "");
        assert_eq!(raw_status(&resp), want, "{path}: {resp}");
    }
}

#[test]
fn check_validates_and_summarizes_the_path_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rategate.toml");
    let run_check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_rategate"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let routes = "[[route]]\nname = \"auth\"\npath_prefix = \"/api/auth\"\n\
                  respond = { status = 200 }\ncase_insensitive = true\n";
    let (code, out) = run_check(&format!(
        "[server]\npath_semicolons = \"strip\"\nescaped_slashes = \"decode\"\n{routes}"
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("paths: path_semicolons strip, escaped_slashes decode"),
        "{out}"
    );
    assert!(
        out.contains("path_prefix /api/auth (case-insensitive)"),
        "{out}"
    );
    let (code, out) = run_check(routes);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("paths: path_semicolons reject, escaped_slashes keep"),
        "{out}"
    );

    let (code, out) = run_check(&format!("[server]\npath_semicolons = \"drop\"\n{routes}"));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(":2:19: key `server.path_semicolons`"), "{out}");
    // A route path that the rules refuse in requests could never match.
    let (code, out) =
        run_check("[[route]]\nname = \"r\"\npath_prefix = \"/a;b\"\nrespond = { status = 200 }\n");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(":3:15: key `route[0].path_prefix`"), "{out}");
    assert!(out.contains("can never match"), "{out}");
}
