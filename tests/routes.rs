//! Route patterns (`{name}` segments, a trailing `*`), header conditions, `param:` and `query:`
//! key components and `rategate check`'s shadowing report, through the real binary over real
//! sockets. Which route took a request shows in `X-RateLimit-Policy` (each route has its own
//! policy) and what the upstream received in the echo's `uri`.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::redis::{have_redis, RedisServer};
use common::*;
use serde_json::Value;

/// The `X-RateLimit-Policy` of a raw response: the policy (so the route) that took it.
fn policy_of(resp: &str) -> Option<&str> {
    resp.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-ratelimit-policy")
            .then(|| value.trim())
    })
}

fn echo_uri(resp: &str) -> String {
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    v["uri"].as_str().unwrap_or_default().to_owned()
}

/// A fixed-window policy `name`: `limit` per hour keyed by `key`.
fn policy(name: &str, limit: u64, key: &str) -> String {
    format!(
        "[[policy]]\nname = \"{name}\"\nalgorithm = \"fixed_window\"\nlimit = {limit}\n\
         window = \"1h\"\nkey = {key}\n"
    )
}

/// `(path, expected status, expected policy)` in order, each as a fresh GET.
fn expect(gw: &Gateway, steps: &[(&str, u16, &str)]) {
    expect_with(gw, "", steps);
}

fn expect_with(gw: &Gateway, extra: &str, steps: &[(&str, u16, &str)]) {
    for (i, &(path, status, policy)) in steps.iter().enumerate() {
        let resp = raw_get(gw.addr, path, extra);
        assert_eq!(raw_status(&resp), status, "step {i} {path}: {resp}");
        assert_eq!(policy_of(&resp), Some(policy), "step {i} {path}: {resp}");
    }
}

/// A raw request `method path` with `extra` header lines; its status, policy and the method the
/// upstream received (empty for a HEAD or a gateway answer).
fn send(gw: &Gateway, method: &str, path: &str, extra: &str) -> (u16, Option<String>, String) {
    let resp = raw(
        gw.addr,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: test.local\r\n{extra}Content-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    (
        raw_status(&resp),
        policy_of(&resp).map(str::to_owned),
        v["method"].as_str().unwrap_or_default().to_owned(),
    )
}

/// `(method, path, extra header lines, expected status, expected policy)` in order; an answer
/// from the upstream must show the method as sent.
fn expect_sent(gw: &Gateway, steps: &[(&str, &str, &str, u16, &str)]) {
    for (i, &(method, path, extra, status, policy)) in steps.iter().enumerate() {
        let (got, pol, upstream_method) = send(gw, method, path, extra);
        assert_eq!(
            (got, pol.as_deref()),
            (status, Some(policy)),
            "step {i}: {method} {path} {extra:?}"
        );
        if got == 200 && !upstream_method.is_empty() {
            assert_eq!(upstream_method, method, "step {i}: forwarded as sent");
        }
    }
}

const CATCH_ALL: &str = r#"
[[route]]
name = "all"
path_prefix = "/"
upstream = "api"
policies = ["all"]
"#;

/// A route `/api/users/{id}/orders` limited to `limit` per id (`param:id`), and a roomy
/// catch-all.
fn orders_config(echo: &Echo, limit: u64) -> TestConfig {
    config_with(
        &echo.url(),
        &format!(
            "{}{}\n[[route]]\nname = \"orders\"\npath = \"/api/users/{{id}}/orders\"\n\
             upstream = \"api\"\npolicies = [\"per_user\"]\n{CATCH_ALL}",
            policy("per_user", limit, "[\"param:id\"]"),
            policy("all", 1000, "[\"ip\"]"),
        ),
    )
}

#[test]
fn a_named_segment_route_keys_each_id_exactly_and_independently() {
    let echo = Echo::start();
    let cfg = orders_config(&echo, 3);
    let gw = Gateway::start(&cfg);
    expect(
        &gw,
        &[
            ("/api/users/1/orders", 200, "per_user"),
            ("/api/users/1/orders", 200, "per_user"),
            // The same id spelled differently is the same id after normalization.
            ("/api/users/%31/orders", 200, "per_user"),
            ("/api/users/1/orders", 429, "per_user"),
            ("/api/users/1/./orders", 429, "per_user"),
            ("/api/users/x/../1/orders", 429, "per_user"),
            ("/api//users/1/orders", 429, "per_user"),
            // Another id has its own counter.
            ("/api/users/2/orders", 200, "per_user"),
            ("/api/users/2/orders", 200, "per_user"),
            ("/api/users/2/orders", 200, "per_user"),
            ("/api/users/2/orders", 429, "per_user"),
            ("/api/users/3/orders", 200, "per_user"),
            // Not this route: one segment too many or too few, or an empty id.
            ("/api/users/1/orders/7", 200, "all"),
            ("/api/users/1", 200, "all"),
            ("/api/users//orders", 200, "all"),
            // One trailing slash is the same route and id (Express, Spring serve it alike).
            ("/api/users/1/orders/", 429, "per_user"),
        ],
    );
    // The upstream receives the normalized path the route matched.
    let resp = raw_get(gw.addr, "/api/users/3/./orders?x=1", "");
    assert_eq!(echo_uri(&resp), "/api/users/3/orders?x=1", "{resp}");
}

/// On a `case_insensitive` route the literals match in any case and the id is lower-cased for
/// its key: the upstream serves `/users/BOB` as `/users/bob`, so changing case earns no counter.
#[test]
fn a_case_insensitive_pattern_keys_ids_without_case() {
    let echo = Echo::start();
    let cfg = config_with(
        &echo.url(),
        &format!(
            "{}{}\n[[route]]\nname = \"users\"\npath = \"/api/users/{{id}}\"\n\
             case_insensitive = true\nupstream = \"api\"\npolicies = [\"per_user\"]\n{CATCH_ALL}",
            policy("per_user", 2, "[\"param:id\"]"),
            policy("all", 1000, "[\"ip\"]"),
        ),
    );
    let gw = Gateway::start(&cfg);
    expect(
        &gw,
        &[
            ("/api/users/bob", 200, "per_user"),
            ("/API/Users/BOB", 200, "per_user"),
            ("/api/USERS/Bob", 429, "per_user"),
            ("/api/users/alice", 200, "per_user"),
            ("/API/users", 200, "all"),
        ],
    );
}

#[test]
fn a_star_route_takes_the_rest_of_the_path() {
    let echo = Echo::start();
    let cfg = config_with(
        &echo.url(),
        &format!(
            "{}{}\n[[route]]\nname = \"static\"\npath = \"/static/*\"\nupstream = \"api\"\n\
             policies = [\"static\"]\n{CATCH_ALL}",
            policy("static", 1000, "[\"ip\"]"),
            policy("all", 1000, "[\"ip\"]"),
        ),
    );
    let gw = Gateway::start(&cfg);
    expect(
        &gw,
        &[
            ("/static/", 200, "static"),
            ("/static/app.css", 200, "static"),
            ("/static/img/a/b.png", 200, "static"),
            ("/static/img/../app.js", 200, "static"),
            ("/static", 200, "all"),
            ("/staticx/app.css", 200, "all"),
            ("/static/../other", 200, "all"),
        ],
    );
}

#[test]
fn header_conditions_select_a_route_by_value_or_presence() {
    let echo = Echo::start();
    let routes = r#"
[[route]]
name = "gold"
path_prefix = "/api"
headers = { "X-Tenant" = "gold" }
upstream = "api"
policies = ["gold"]

[[route]]
name = "beta"
path_prefix = "/api"
headers = { "x-beta" = true }
upstream = "api"
policies = ["beta"]

[[route]]
name = "api"
path_prefix = "/api"
upstream = "api"
policies = ["api"]
"#;
    let cfg = config_with(
        &echo.url(),
        &format!(
            "{}{}{}{routes}",
            policy("gold", 1000, "[\"ip\"]"),
            policy("beta", 1000, "[\"ip\"]"),
            policy("api", 1000, "[\"ip\"]"),
        ),
    );
    let gw = Gateway::start(&cfg);
    for (extra, want) in [
        ("x-tenant: gold\r\n", "gold"),
        ("X-TENANT:   gold  \r\n", "gold"),
        ("x-tenant: Gold\r\n", "api"),
        ("x-tenant: gold2\r\n", "api"),
        // A second copy makes the value ambiguous: no exact match.
        ("x-tenant: gold\r\nx-tenant: gold\r\n", "api"),
        ("x-tenant: silver\r\nx-tenant: gold\r\n", "api"),
        ("x-beta: 1\r\n", "beta"),
        ("x-beta:\r\n", "beta"),
        ("x-tenant: gold\r\nx-beta: 1\r\n", "gold"),
        ("x-tenant: silver\r\nx-beta: 1\r\n", "beta"),
        ("", "api"),
    ] {
        let resp = raw_get(gw.addr, "/api/x", extra);
        assert_eq!(raw_status(&resp), 200, "{extra:?}: {resp}");
        assert_eq!(policy_of(&resp), Some(want), "{extra:?}: {resp}");
    }
}

#[test]
fn the_first_match_in_file_order_wins_among_patterns() {
    let echo = Echo::start();
    let routes = r#"
[[route]]
name = "me"
path = "/api/users/me/orders"
upstream = "api"
policies = ["me"]

[[route]]
name = "orders"
path = "/api/users/{id}/orders"
upstream = "api"
policies = ["orders"]

[[route]]
name = "files"
path = "/api/*"
upstream = "api"
policies = ["files"]

[[route]]
name = "api"
path_prefix = "/api"
upstream = "api"
policies = ["api"]
"#;
    let cfg = config_with(
        &echo.url(),
        &format!(
            "{}{}{}{}{routes}",
            policy("me", 1000, "[\"ip\"]"),
            policy("orders", 1000, "[\"ip\"]"),
            policy("files", 1000, "[\"ip\"]"),
            policy("api", 1000, "[\"ip\"]"),
        ),
    );
    let gw = Gateway::start(&cfg);
    expect(
        &gw,
        &[
            ("/api/users/me/orders", 200, "me"),
            ("/api/users/you/orders", 200, "orders"),
            ("/api/users/you/orders/1", 200, "files"),
            ("/api/", 200, "files"),
            ("/api", 200, "api"),
        ],
    );
}

/// With `escaped_slashes = "keep"` (the default) `%2F` is data inside one segment, so a segment
/// holding one still belongs to the route and counts against its limit; with "decode" the
/// request is matched as the path it decodes to.
#[test]
fn an_encoded_slash_does_not_let_a_request_escape_its_route_limit() {
    let echo = Echo::start();
    let routes = format!(
        "{}{}\n[[route]]\nname = \"files\"\npath = \"/files/{{name}}\"\nupstream = \"api\"\n\
         policies = [\"files\"]\n{CATCH_ALL}",
        policy("files", 2, "[\"ip\"]"),
        policy("all", 1000, "[\"ip\"]"),
    );
    let gw = Gateway::start(&config_with(&echo.url(), &routes));
    let resp = raw_get(gw.addr, "/files/a%2Fb", "");
    assert_eq!(
        (raw_status(&resp), policy_of(&resp)),
        (200, Some("files")),
        "{resp}"
    );
    // Forwarded as matched: still encoded, one segment.
    assert_eq!(echo_uri(&resp), "/files/a%2Fb");
    // Dot segments next to an encoded slash are refused, as they are everywhere.
    assert_eq!(raw_status(&raw_get(gw.addr, "/files/a%2F..%2Fb", "")), 400);
    expect(
        &gw,
        &[
            ("/files/x%2f", 200, "files"),
            ("/files/%2Fetc%2Fpasswd", 429, "files"),
            ("/files/c", 429, "files"),
        ],
    );

    let decode = config_with(&echo.url(), &routes).set("server.escaped_slashes", "decode");
    let gw = Gateway::start(&decode);
    expect(
        &gw,
        &[
            ("/files%2Fa", 200, "files"),
            ("/files/..%2Ffiles%2Fb", 200, "files"),
            ("/files/c", 429, "files"),
            // Two segments once decoded: not this route, and the upstream sees the same path.
            ("/files/a%2Fb", 200, "all"),
        ],
    );
    let resp = raw_get(gw.addr, "/files/a%2Fb", "");
    assert_eq!(echo_uri(&resp), "/files/a/b");
}

#[test]
fn a_query_key_counts_per_decoded_value_and_ambiguity_falls_back_to_the_client() {
    let echo = Echo::start();
    let cfg = config_with(
        &echo.url(),
        &format!(
            "{}\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"api\"\n\
             policies = [\"per_key\"]\n",
            policy("per_key", 2, "[\"query:api_key\"]"),
        ),
    );
    let gw = Gateway::start(&cfg);
    for (path, status) in [
        ("/x?api_key=k1", 200),
        ("/x?other=1&api_key=k1", 200),
        ("/x?api_key=k1", 429),
        // Percent-encoded names and values are the same parameter and value.
        ("/x?api_key=%6B1", 429),
        ("/x?%61pi_key=k1", 429),
        ("/y?a=b&api_key=k%31&c=d", 429),
        // Another value has its own counter.
        ("/x?api_key=k2", 200),
        ("/x?api_key=k+2", 200),
        ("/x?api_key=k%202", 200),
        ("/x?api_key=k%202", 429),
        // Without a value (absent, empty) or with an ambiguous one, the client's own counter,
        // which a varying second copy cannot refresh.
        ("/x", 200),
        ("/x?api_key=", 200),
        ("/x?api_key=k1&api_key=fresh1", 429),
        ("/x?api_key=fresh2&api_key=k1", 429),
        ("/x?api_key=fresh3;api_key=k1", 429),
        ("/x?API_KEY=fresh4&api_key=k1", 429),
        ("/x?api_key=%FF", 429),
        // The decoded value is the key: a fresh one is a fresh counter.
        ("/x?api_key=k3", 200),
    ] {
        let resp = raw_get(gw.addr, path, "");
        assert_eq!(raw_status(&resp), status, "{path}: {resp}");
    }
}

fn run_check(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rategate.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rategate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn check_reports_routes_that_an_earlier_one_shadows() {
    let route = |name: &str, lines: &str| {
        format!("[[route]]\nname = \"{name}\"\n{lines}\nrespond = {{ status = 200 }}\n")
    };
    let text = [
        route(
            "api",
            "path_prefix = \"/api\"\nmethods = [\"GET\", \"POST\"]",
        ),
        route("user", "path = \"/api/users/{id}\"\nmethods = [\"GET\"]"),
        route("any_method", "path = \"/api/users/{id}\""),
        route(
            "gold",
            "path = \"/static/*\"\nheaders = { \"x-tenant\" = \"gold\" }",
        ),
        route("gold_css", "path_prefix = \"/static/css\""),
        route(
            "gold_js",
            "path = \"/static/{f}\"\nheaders = { \"x-tenant\" = \"gold\", \"x-beta\" = true }",
        ),
        route("tenant", "path_prefix = \"/t\"\nhost = \"a.example.com\""),
        route("tenant_any", "path_prefix = \"/t/x\""),
        // `/login` takes `/login/`, and a GET route HEAD requests.
        route("login", "path = \"/login\"\nmethods = [\"GET\"]"),
        route("login_slash", "path = \"/login/\"\nmethods = [\"HEAD\"]"),
        route("all", "path_prefix = \"/\""),
        route("late", "path = \"/late\""),
    ]
    .concat();
    let (code, out) = run_check(&text);
    assert_eq!(code, Some(0), "{out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning")).collect();
    assert_eq!(warnings.len(), 4, "{out}");
    for (later, earlier) in [
        ("user", "api"),
        ("gold_js", "gold"),
        ("login_slash", "login"),
        ("late", "all"),
    ] {
        let want = format!(
            "warning: route `{later}` can never match: the earlier route `{earlier}` takes"
        );
        assert!(
            warnings.iter().any(|w| w.starts_with(&want)),
            "{want}\n{out}"
        );
    }
    assert!(
        out.contains("  user: path /api/users/{id} (pattern), methods GET, any host"),
        "{out}"
    );
    assert!(
        out.contains("header x-tenant = \"gold\", header x-beta present"),
        "{out}"
    );
}

macro_rules! need_redis {
    () => {
        if !have_redis() {
            eprintln!("SKIP: redis-server not installed");
            return;
        }
    };
}

#[test]
fn a_param_keyed_limit_is_exact_on_the_redis_store_across_gateways() {
    need_redis!();
    let redis = RedisServer::start();
    let echo = Echo::start();
    let cfg = config_with(
        &echo.url(),
        &format!(
            "{}\n[[route]]\nname = \"orders\"\npath = \"/api/users/{{id}}/orders\"\n\
             upstream = \"api\"\npolicies = [\"per_user\"]\n",
            policy("per_user", 3, "[\"param:id\", \"route\"]"),
        ),
    )
    .redis_store(&redis.url())
    .set("store.key_prefix", "rgtest:")
    .set("store.timeout", "5s")
    .set("store.on_error", "deny");
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    for id in ["7", "8"] {
        let path = format!("/api/users/{id}/orders");
        let statuses: Vec<u16> = [&a, &b, &a, &b, &a]
            .iter()
            .map(|gw| raw_status(&raw_get(gw.addr, &path, "")))
            .collect();
        assert_eq!(statuses, [200, 200, 200, 429, 429], "{id}");
    }
    // One counter per id, under the id's own key.
    let keys = redis.cli(&["KEYS", "rgtest:*per_user*"]);
    assert!(keys.contains("s:7"), "{keys}");
    assert!(keys.contains("s:8"), "{keys}");
}

/// Werkzeug upper-cases the method and runs the POST handler for `post`; Express, Flask and Go
/// serve HEAD with the GET handler. A `methods` route takes both, the case variants share one
/// counter (also for a `method` key), and the upstream still receives the method as sent.
#[test]
fn methods_match_without_case_and_a_get_route_takes_head() {
    let echo = Echo::start();
    let cfg = config_with(
        &echo.url(),
        &format!(
            "{}{}{}{}\n[[route]]\nname = \"login\"\npath = \"/login\"\nmethods = [\"POST\"]\n\
             upstream = \"api\"\npolicies = [\"login\"]\n\
             \n[[route]]\nname = \"report\"\npath = \"/report\"\nmethods = [\"GET\"]\n\
             upstream = \"api\"\npolicies = [\"report\"]\n\
             \n[[route]]\nname = \"m\"\npath_prefix = \"/m\"\nupstream = \"api\"\n\
             policies = [\"per_method\"]\n{CATCH_ALL}",
            policy("login", 3, "[\"ip\"]"),
            policy("report", 3, "[\"ip\"]"),
            policy("per_method", 2, "[\"method\"]"),
            policy("all", 1000, "[\"ip\"]"),
        ),
    );
    let gw = Gateway::start(&cfg);
    let steps = [
        ("POST", "/login", 200, "login"),
        ("post", "/login", 200, "login"),
        ("Post", "/login", 200, "login"),
        ("pOST", "/login", 429, "login"),
        ("GET", "/login", 200, "all"),
        ("GET", "/report", 200, "report"),
        ("HEAD", "/report", 200, "report"),
        ("head", "/report", 200, "report"),
        ("GET", "/report", 429, "report"),
        ("POST", "/report", 200, "all"),
        // A `method` key: one counter per upper-cased method.
        ("post", "/m", 200, "per_method"),
        ("POST", "/m", 200, "per_method"),
        ("Post", "/m", 429, "per_method"),
        ("GET", "/m", 200, "per_method"),
    ];
    expect_sent(&gw, &steps.map(|(m, p, st, pol)| (m, p, "", st, pol)));
    // Forwarded as sent.
    let (status, _, upstream_method) = send(&gw, "post", "/other", "");
    assert_eq!((status, &*upstream_method), (200, "post"));
}

/// A framework honouring `X-HTTP-Method-Override` (or `X-HTTP-Method`, `X-Method-Override`) runs
/// the DELETE handler for a POST naming DELETE: the DELETE route's limit applies to it, while the
/// POST route still takes a POST listed before it, and only a POST is overridden.
#[test]
fn a_post_with_a_method_override_header_meets_the_overridden_route() {
    let echo = Echo::start();
    let cfg = config_with(
        &echo.url(),
        &format!(
            "{}{}{}\n[[route]]\nname = \"create\"\npath = \"/orders\"\nmethods = [\"POST\"]\n\
             upstream = \"api\"\npolicies = [\"create\"]\n\
             \n[[route]]\nname = \"delete\"\npath_prefix = \"/items\"\nmethods = [\"DELETE\"]\n\
             upstream = \"api\"\npolicies = [\"delete\"]\n{CATCH_ALL}",
            policy("create", 1000, "[\"ip\"]"),
            policy("delete", 3, "[\"ip\"]"),
            policy("all", 1000, "[\"ip\"]"),
        ),
    );
    let gw = Gateway::start(&cfg);
    let steps = [
        ("DELETE", "/items/1", "", 200, "delete"),
        (
            "POST",
            "/items/1",
            "X-HTTP-Method-Override: DELETE\r\n",
            200,
            "delete",
        ),
        (
            "post",
            "/items/2",
            "X-HTTP-Method: delete\r\n",
            200,
            "delete",
        ),
        (
            "POST",
            "/items/3",
            "X-Method-Override: Delete\r\n",
            429,
            "delete",
        ),
        (
            "POST",
            "/items/4",
            "X-HTTP-Method-Override: PUT\r\nX-HTTP-Method-Override: DELETE\r\n",
            429,
            "delete",
        ),
        // Laravel's `_method` query parameter.
        ("POST", "/items/4?_method=DELETE", "", 429, "delete"),
        // Not overridden: no header, another value, or not a POST.
        ("POST", "/items/5", "", 200, "all"),
        (
            "POST",
            "/items/6",
            "X-HTTP-Method-Override: PATCH\r\n",
            200,
            "all",
        ),
        (
            "PUT",
            "/items/7",
            "X-HTTP-Method-Override: DELETE\r\n",
            200,
            "all",
        ),
        // The POST route listed first still takes its POSTs.
        (
            "POST",
            "/orders",
            "X-HTTP-Method-Override: DELETE\r\n",
            200,
            "create",
        ),
    ];
    expect_sent(&gw, &steps);
}

/// Express (non-strict routing) and Spring serve `/login/` with the `/login` handler: an exact
/// path and a pattern take one trailing slash, so it does not fall through to a looser route,
/// and the upstream still receives the path as sent.
#[test]
fn an_exact_path_or_a_pattern_takes_one_trailing_slash() {
    let echo = Echo::start();
    let cfg = config_with(
        &echo.url(),
        &format!(
            "{}{}{}\n[[route]]\nname = \"login\"\npath = \"/login\"\nmethods = [\"POST\"]\n\
             upstream = \"api\"\npolicies = [\"login\"]\n\
             \n[[route]]\nname = \"orders\"\npath = \"/api/users/{{id}}/orders\"\n\
             upstream = \"api\"\npolicies = [\"per_user\"]\n{CATCH_ALL}",
            policy("login", 2, "[\"ip\"]"),
            policy("per_user", 2, "[\"param:id\"]"),
            policy("all", 1000, "[\"ip\"]"),
        ),
    );
    let gw = Gateway::start(&cfg);
    let steps = [
        ("POST", "/login", 200, "login"),
        ("POST", "/login/", 200, "login"),
        ("POST", "/login/", 429, "login"),
        ("POST", "/login//", 429, "login"),
        ("POST", "/login/x", 200, "all"),
        ("POST", "/loginx/", 200, "all"),
        ("GET", "/api/users/7/orders", 200, "per_user"),
        ("GET", "/api/users/7/orders/", 200, "per_user"),
        ("GET", "/api/users/7/orders/", 429, "per_user"),
        ("GET", "/api/users/7/orders/x", 200, "all"),
    ];
    expect_sent(&gw, &steps.map(|(m, p, st, pol)| (m, p, "", st, pol)));
    let resp = raw_get(gw.addr, "/api/users/8/orders/?x=1", "");
    assert_eq!(echo_uri(&resp), "/api/users/8/orders/?x=1", "{resp}");
}

/// qs (Express) reads `tenant[]=acme` as the parameter `tenant` (an array), PHP reads `api.key`
/// as `api_key`: such spellings are copies of the name, so `?tenant=<fresh>&tenant[]=acme` is
/// ambiguous (the client's address, which it cannot vary) instead of a fresh counter per request,
/// and a copy alone counts for its value.
#[test]
fn array_and_php_spellings_of_a_query_name_are_copies_of_it() {
    let echo = Echo::start();
    let cfg = config_with(
        &echo.url(),
        &format!(
            "{}{}\n[[route]]\nname = \"search\"\npath_prefix = \"/search\"\nupstream = \"api\"\n\
             policies = [\"per_tenant\"]\n\
             \n[[route]]\nname = \"k\"\npath_prefix = \"/k\"\nupstream = \"api\"\n\
             policies = [\"per_key\"]\n",
            policy("per_tenant", 2, "[\"query:tenant\"]"),
            policy("per_key", 2, "[\"query:api_key\"]"),
        ),
    );
    let gw = Gateway::start(&cfg);
    for (path, status) in [
        ("/search?tenant=acme", 200),
        ("/search?tenant=acme", 200),
        ("/search?tenant=acme", 429),
        // Alone, an array form is the same tenant.
        ("/search?tenant[]=acme", 429),
        ("/search?tenant%5B0%5D=acme", 429),
        // Next to another copy: ambiguous, so the client's own counter, whatever the fresh value.
        ("/search?tenant=r1&tenant[]=acme", 200),
        ("/search?tenant=r2&tenant[0]=acme", 200),
        ("/search?tenant=r3&tenant[x]=acme", 429),
        ("/search?tenant[]=r4&tenant[]=acme", 429),
        // PHP drops leading spaces from names.
        ("/search?tenant=r5&%20tenant=acme", 429),
        // A longer name is another parameter.
        ("/search?tenantx=1&tenant=other", 200),
        // PHP's `api.key` and `api key` are `api_key`.
        ("/k?api_key=k1", 200),
        ("/k?api.key=k1", 200),
        ("/k?api+key=k1", 429),
        ("/k?api%20key=k1", 429),
        ("/k?api_key=k2", 200),
    ] {
        let resp = raw_get(gw.addr, path, "");
        assert_eq!(raw_status(&resp), status, "{path}: {resp}");
    }
}

/// The upstream decodes `/api/users/a%40b/orders` and `/api/users/a@b/orders` to the same id
/// `a@b`: a `param:` key counts the decoded segment, so the spellings share one counter, while
/// the path is forwarded as sent.
#[test]
fn a_param_key_counts_every_percent_spelling_of_an_id_once() {
    let echo = Echo::start();
    let cfg = orders_config(&echo, 2);
    let gw = Gateway::start(&cfg);
    expect(
        &gw,
        &[
            ("/api/users/a@b/orders", 200, "per_user"),
            ("/api/users/a%40b/orders", 200, "per_user"),
            ("/api/users/a@b/orders", 429, "per_user"),
            ("/api/users/a%40b/orders", 429, "per_user"),
            // Another id, however spelled, has its own counter (case counts on this route).
            ("/api/users/a%40B/orders", 200, "per_user"),
            ("/api/users/a%2Bb/orders", 200, "per_user"),
            ("/api/users/a+b/orders", 200, "per_user"),
            ("/api/users/a%2bb/orders", 429, "per_user"),
        ],
    );
    let resp = raw_get(gw.addr, "/api/users/x%40y/orders", "");
    assert_eq!(echo_uri(&resp), "/api/users/x%40y/orders", "{resp}");
}
