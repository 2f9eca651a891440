//! The admin side port, black-box: authentication, every /admin/* endpoint with its status codes,
//! input validation (patterns, bodies, sizes), and health endpoints.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "t0ken-for-tests";

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
shutdown_grace = "5s"

[admin]
listen = "127.0.0.1:0"
token = "t0ken-for-tests"

[[policy]]
name = "login"
algorithm = "fixed_window"
limit = 2
window = "60s"
block_for = "1m"

[[policy]]
name = "api"
algorithm = "sliding_window"
limit = 3
window = "60s"

[[policy]]
name = "by_path"
algorithm = "fixed_window"
limit = 100
window = "60s"
key = ["path"]

[[policy]]
name = "by_header"
algorithm = "token_bucket"
limit = 10
window = "60s"
key = ["header:x-api-key"]

[[route]]
name = "login"
path = "/login"
methods = ["POST"]
policies = ["login"]
respond = { status = 200, body = "ok" }

[[route]]
name = "api"
path_prefix = "/api"
policies = ["api"]
respond = { status = 200, body = "api" }

[[route]]
name = "paths"
path_prefix = "/p"
policies = ["by_path"]
respond = { status = 200 }

[[route]]
name = "keys"
path_prefix = "/k"
policies = ["by_header"]
respond = { status = 200 }

[[route]]
name = "home"
path_prefix = "/"
respond = { status = 200, body = "home" }
"#;

struct Admin {
    gw: Gateway,
    http: Client,
}

impl Admin {
    fn start() -> Admin {
        Admin {
            gw: Gateway::start(CONFIG),
            http: client(),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.gw.admin_url(path))
            .bearer_auth(TOKEN)
    }

    fn send(&self, rb: RequestBuilder) -> (StatusCode, Value) {
        let resp = rb.send().unwrap();
        let status = resp.status();
        let text = resp.text().unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text}"));
        (status, body)
    }

    fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.req(reqwest::Method::GET, path))
    }

    fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.req(reqwest::Method::DELETE, path))
    }

    fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.req(reqwest::Method::POST, path).json(body))
    }

    fn block(&self, client: &str, duration: &str, reason: &str) -> (StatusCode, Value) {
        self.post(
            "/admin/blocks",
            &json!({ "client": client, "duration": duration, "reason": reason }),
        )
    }

    /// A proxied request from `client` (via the trusted X-Forwarded-For).
    fn hit(&self, method: reqwest::Method, path: &str, client: &str) -> StatusCode {
        self.http
            .request(method, self.gw.url(path))
            .header("x-forwarded-for", client)
            .send()
            .unwrap()
            .status()
    }
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[test]
fn admin_paths_need_the_token_and_health_paths_do_not() {
    let a = Admin::start();
    let paths: [(reqwest::Method, &str); 8] = [
        (reqwest::Method::GET, "/admin/blocks"),
        (reqwest::Method::POST, "/admin/blocks"),
        (reqwest::Method::DELETE, "/admin/blocks/192.0.2.1"),
        (
            reqwest::Method::GET,
            "/admin/limits?policy=api&client=192.0.2.1",
        ),
        (reqwest::Method::GET, "/admin/events"),
        (reqwest::Method::GET, "/admin/suspicious"),
        (reqwest::Method::POST, "/admin/reload"),
        (reqwest::Method::GET, "/admin/unknown"),
    ];
    for (method, path) in paths {
        for auth in [None, Some("wrong"), Some("t0ken-for-test"), Some("")] {
            let mut rb = a.http.request(method.clone(), a.gw.admin_url(path));
            if let Some(token) = auth {
                rb = rb.header("authorization", format!("Bearer {token}"));
            }
            let resp = rb.send().unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with {auth:?}");
            assert_eq!(
                resp.headers()["www-authenticate"],
                "Bearer realm=\"rategate-admin\""
            );
            let body: Value = resp.json().unwrap();
            assert_eq!(body["error"], "unauthorized", "{body}");
        }
    }
    // Basic auth carrying the token is not a bearer token.
    let resp = a
        .http
        .get(a.gw.admin_url("/admin/blocks"))
        .basic_auth(TOKEN, None::<&str>)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    // With the token: 200, and unknown admin paths are a JSON 404.
    assert_eq!(a.get("/admin/blocks").0, StatusCode::OK);
    let (status, body) = a.get("/admin/unknown");
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    for path in ["/metrics", "/healthz", "/readyz", "/"] {
        let resp = a.http.get(a.gw.admin_url(path)).send().unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let (status, body) = a.send(a.http.get(a.gw.admin_url("/readyz")));
    assert_eq!((status, body), (StatusCode::OK, json!({"ready": true})));
    let (status, body) = a.send(a.http.get(a.gw.admin_url("/nope")));
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[test]
fn wrong_methods_are_405_with_allow() {
    let a = Admin::start();
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/admin/blocks", "GET, HEAD, POST"),
        (reqwest::Method::GET, "/admin/reload", "POST"),
        (reqwest::Method::POST, "/admin/events", "GET, HEAD"),
        (reqwest::Method::GET, "/admin/blocks/192.0.2.1", "DELETE"),
        (
            reqwest::Method::POST,
            "/admin/limits?policy=api&client=192.0.2.1",
            "GET, HEAD, DELETE",
        ),
    ] {
        let resp = a.req(method.clone(), path).send().unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
        let body: Value = resp.json().unwrap();
        assert_eq!(body["error"], "method_not_allowed");
    }
    let resp = a.http.post(a.gw.admin_url("/metrics")).send().unwrap();
    assert_eq!(resp.status(), 405);
}

/// A block of a second and a half is answered as 2 seconds, as the listing shows it: the
/// creation reply never reads shorter than the block is.
#[test]
fn a_block_of_a_fraction_of_a_second_is_answered_rounded_up() {
    let a = Admin::start();
    let (status, body) = a.block("203.0.113.10", "1500ms", "abuse");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["ttl"], 2, "{body}");
}

#[test]
fn blocks_add_list_enforce_and_remove() {
    let a = Admin::start();
    let (status, body) = a.block("203.0.113.9", "1h", "abuse");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"client": "203.0.113.9", "ttl": 3600, "reason": "abuse"})
    );
    let (status, list) = a.get("/admin/blocks");
    assert_eq!(status, StatusCode::OK);
    let entry = &list.as_array().unwrap()[0];
    assert_eq!(entry["client"], "203.0.113.9");
    assert_eq!(entry["reason"], "abuse");
    let ttl = entry["ttl"].as_u64().unwrap();
    assert!((3590..=3600).contains(&ttl), "{ttl}");
    assert_eq!(
        a.gw.metric("rategate_blocked_clients"),
        Some(1.0),
        "gauge after an admin block"
    );

    // The block applies on every route, with the time left in Retry-After.
    let resp = a
        .http
        .get(a.gw.url("/api/x"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&retry), "{retry}");
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"], "blocked");
    // Every limited route (routes without policies never consult the store).
    assert_eq!(a.hit(reqwest::Method::GET, "/p/x", "203.0.113.9"), 429);
    assert_eq!(a.hit(reqwest::Method::GET, "/p/x", "203.0.113.10"), 200);

    // A block without a reason is "manual"; the same client again replaces the block.
    let (status, body) = a.post(
        "/admin/blocks",
        &json!({"client": "203.0.113.9", "duration": "10m"}),
    );
    assert_eq!(
        (status, &body["reason"]),
        (StatusCode::CREATED, &json!("manual"))
    );
    assert_eq!(a.get("/admin/blocks").1[0]["ttl"], 600);

    let (status, body) = a.delete("/admin/blocks/203.0.113.9");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"client": "203.0.113.9", "unblocked": true}));
    let (status, body) = a.delete("/admin/blocks/203.0.113.9");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(message(&body).contains("not blocked"), "{body}");
    assert_eq!(a.hit(reqwest::Method::GET, "/p/x", "203.0.113.9"), 200);
    assert_eq!(a.get("/admin/blocks").1, json!([]));
    assert_eq!(a.gw.metric("rategate_blocked_clients"), Some(0.0));

    // IPv6 clients are keyed by their /64, whichever address names them.
    let (status, body) = a.block("2001:db8:1:2::99", "1h", "v6");
    assert_eq!(
        (status, &body["client"]),
        (StatusCode::CREATED, &json!("2001:db8:1:2::/64"))
    );
    assert_eq!(a.hit(reqwest::Method::GET, "/p/x", "2001:db8:1:2::7"), 429);
    assert_eq!(a.hit(reqwest::Method::GET, "/p/x", "2001:db8:1:3::7"), 200);
    let (status, _) = a.delete("/admin/blocks/2001:db8:1:2:ffff::1");
    assert_eq!(status, StatusCode::OK);
    a.block("2001:db8:1:2::", "1h", "v6");
    let (status, _) = a.delete("/admin/blocks/2001%3Adb8%3A1%3A2%3A%3A%2F64");
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn bad_clients_and_bodies_are_refused_precisely() {
    let a = Admin::start();
    a.block("192.0.2.1", "1h", "keep me");

    for (client, needle) in [
        ("*", "pattern"),
        ("", "empty"),
        ("garbage", "not an IP address"),
        ("10.0.0.0/8", "IPv4 clients are keyed by their full address"),
        ("2001:db8::/32", "keyed by their /64 prefix"),
        ("192.0.2.1:80", "not an IP address"),
    ] {
        let (status, body) = a.block(client, "1h", "x");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{client:?}: {body}");
        assert_eq!(body["error"], "bad_request");
        assert!(message(&body).contains(needle), "{client:?}: {body}");
    }
    // `*` must never unblock everyone.
    for path in [
        "/admin/blocks/*",
        "/admin/blocks/%2A",
        "/admin/blocks/",
        "/admin/blocks/0.0.0.0%2F0",
    ] {
        let (status, body) = a.delete(path);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    }
    assert_eq!(a.get("/admin/blocks").1.as_array().unwrap().len(), 1);

    for (body, needle) in [
        (
            json!({"client": "192.0.2.2", "duration": "0s"}),
            "between 1s and 365d",
        ),
        (
            json!({"client": "192.0.2.2", "duration": "forever"}),
            "duration `forever`",
        ),
        (
            json!({"client": "192.0.2.2", "duration": "400d"}),
            "between 1s and 365d",
        ),
        (json!({"client": "192.0.2.2"}), "missing field `duration`"),
        (
            json!({"client": "192.0.2.2", "duration": "1h", "ttl": 5}),
            "unknown field `ttl`",
        ),
        (
            json!({"client": "192.0.2.2", "duration": "1h", "reason": "a\nb"}),
            "control",
        ),
        (
            json!({"client": "192.0.2.2", "duration": "1h", "reason": "x".repeat(201)}),
            "at most 200",
        ),
        (json!(["192.0.2.2"]), "invalid JSON body"),
    ] {
        let (status, resp) = a.post("/admin/blocks", &body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {resp}");
        assert!(message(&resp).contains(needle), "{body}: {resp}");
    }
    let (status, body) = a.send(
        a.req(reqwest::Method::POST, "/admin/blocks")
            .header("content-type", "application/json")
            .body("{not json"),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = a.send(
        a.req(reqwest::Method::POST, "/admin/blocks")
            .header("content-type", "text/plain")
            .body(r#"{"client":"192.0.2.2","duration":"1h"}"#),
    );
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");

    // Bodies past 16 KiB: 413, whether the length is declared or the body is chunked.
    let big = format!(
        r#"{{"client":"192.0.2.2","duration":"1h","reason":"{}"}}"#,
        "x".repeat(20_000)
    );
    let (status, body) = a.send(
        a.req(reqwest::Method::POST, "/admin/blocks")
            .header("content-type", "application/json")
            .body(big.clone()),
    );
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"], "payload_too_large");
    let chunked = chunked_post(&a.gw, "/admin/blocks", big.as_bytes());
    assert_eq!(raw_status(&chunked), 413, "{chunked}");
    let (status, _) = a.send(a.req(reqwest::Method::POST, "/admin/reload").body(big));
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.get("/admin/blocks").1.as_array().unwrap().len(), 1);
}

/// POST with `Transfer-Encoding: chunked` (no Content-Length) in two chunks.
fn chunked_post(gw: &Gateway, path: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(gw.admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        gw.admin
    );
    s.write_all(head.as_bytes()).unwrap();
    let (one, two) = body.split_at(body.len() / 2);
    for chunk in [one, two] {
        // The server may answer and close after the first chunk; later writes may then fail.
        let _ = s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
        let _ = s.write_all(chunk);
        let _ = s.write_all(b"\r\n");
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn limits_are_inspected_and_reset_by_policy_and_client() {
    let a = Admin::start();
    for _ in 0..2 {
        assert_eq!(a.hit(reqwest::Method::GET, "/api/a", "198.51.100.7"), 200);
    }
    let (status, body) = a.get("/admin/limits?policy=api&client=198.51.100.7");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["policy"], "api");
    assert_eq!(body["client"], "198.51.100.7");
    assert_eq!(body["algorithm"], "sliding_window");
    assert_eq!(body["window"], "1m");
    assert_eq!(
        (
            body["count"].as_u64(),
            body["limit"].as_u64(),
            body["remaining"].as_u64()
        ),
        (Some(2), Some(3), Some(1))
    );
    assert!(body["reset"].as_u64().unwrap() > 0);

    let (status, body) = a.delete("/admin/limits?policy=api&client=198.51.100.7");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"policy": "api", "client": "198.51.100.7", "existed": true})
    );
    assert_eq!(
        a.get("/admin/limits?policy=api&client=198.51.100.7").1["count"],
        0
    );
    assert_eq!(
        a.delete("/admin/limits?policy=api&client=198.51.100.7").1["existed"],
        false
    );
    // Reset means the client gets its full quota back.
    for _ in 0..3 {
        assert_eq!(a.hit(reqwest::Method::GET, "/api/a", "198.51.100.7"), 200);
    }
    assert_eq!(a.hit(reqwest::Method::GET, "/api/a", "198.51.100.7"), 429);

    let (status, body) = a.get("/admin/limits?policy=nope&client=198.51.100.7");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        message(&body).contains("login, api, by_path, by_header"),
        "{body}"
    );
    for (query, needle) in [
        ("policy=api&client=*", "pattern"),
        ("policy=api&client=nonsense", "not an IP address"),
        ("policy=api", "missing query parameter `client`"),
        ("client=198.51.100.7", "missing query parameter `policy`"),
        (
            "policy=api&client=198.51.100.7&x=1",
            "unknown query parameter `x`",
        ),
        ("policy=api&policy=login&client=198.51.100.7", "given twice"),
        ("policy=by_path&client=198.51.100.7", "keyed by path"),
        ("policy=by_header&client=198.51.100.7", "keyed by a header"),
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let (status, body) = a.send(a.req(method.clone(), &format!("/admin/limits?{query}")));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {query}: {body}");
            assert!(message(&body).contains(needle), "{query}: {body}");
        }
    }
}

#[test]
fn events_and_suspicious_clients() {
    let a = Admin::start();
    assert_eq!(a.get("/admin/events").1, json!([]));
    assert_eq!(a.get("/admin/suspicious").1, json!([]));

    // 192.0.2.50: 2 logins allowed, the 3rd is limited and starts a 1m block, then 2 blocked.
    let bad = "192.0.2.50";
    for expected in [200, 200, 429, 429, 429] {
        assert_eq!(a.hit(reqwest::Method::POST, "/login", bad), expected);
    }
    // 192.0.2.51: over the api limit once.
    for expected in [200, 200, 200, 429] {
        assert_eq!(
            a.hit(reqwest::Method::GET, "/api/x", "192.0.2.51"),
            expected
        );
    }
    a.block("192.0.2.52", "5m", "manual test");
    a.delete("/admin/blocks/192.0.2.52");

    let (status, events) = a.get("/admin/events");
    assert_eq!(status, StatusCode::OK);
    let events = events.as_array().unwrap().clone();
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["client"].as_str().unwrap().to_owned(),
                e["policy"]
                    .as_str()
                    .or(e["reason"].as_str())
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("unblocked", "192.0.2.52", ""),
        ("blocked", "192.0.2.52", "manual test"),
        ("limited", "192.0.2.51", "api"),
        ("blocked", bad, "login"),
        ("limited", bad, "login"),
    ]
    .iter()
    .map(|(k, c, p)| (k.to_string(), c.to_string(), p.to_string()))
    .collect();
    assert_eq!(summary, expected, "{events:?}");
    let policy_block = &events[3];
    assert_eq!(policy_block["reason"], "policy:login");
    assert_eq!(policy_block["ttl"], 60);
    assert_eq!(events[1]["ttl"], 300);
    // Newest first, with millisecond timestamps.
    let times: Vec<u64> = events
        .iter()
        .map(|e| e["at_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(
        a.get("/admin/events?limit=2").1.as_array().unwrap().len(),
        2
    );

    let (status, suspects) = a.get("/admin/suspicious");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        suspects,
        json!([
            {"client": bad, "rejections": 3, "blocked": true},
            {"client": "192.0.2.51", "rejections": 1, "blocked": false},
        ])
    );
    assert_eq!(
        a.get("/admin/suspicious?limit=1")
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for query in ["limit=0", "limit=abc", "limit=100000", "limit=-1", "lim=3"] {
        for path in ["/admin/events", "/admin/suspicious"] {
            let (status, body) = a.get(&format!("{path}?{query}"));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}?{query}: {body}");
        }
    }
}

#[test]
fn without_a_token_the_api_is_open_to_local_callers_only() {
    let gw = Gateway::start(&TestConfig::parse(CONFIG).remove("admin.token"));
    let http = client();
    let resp = http.get(gw.admin_url("/admin/blocks")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .post(gw.admin_url("/admin/blocks"))
        .header("origin", "https://evil.example")
        .json(&json!({"client": "192.0.2.1", "duration": "1h"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = http
        .get(gw.admin_url("/admin/blocks"))
        .header("host", "rebound.example")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = http
        .post(gw.admin_url("/admin/blocks"))
        .header("origin", format!("http://{}", gw.admin))
        .json(&json!({"client": "192.0.2.1", "duration": "1h"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[test]
fn dashboard_page_is_self_contained() {
    let gw = Gateway::start(CONFIG);
    let resp = client().get(gw.admin_url("/")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"),
        "{csp}"
    );
    let page = resp.text().unwrap();
    assert!(page.contains("rategate admin") && page.contains("/admin/blocks"));
    assert!(!page.contains("https://") && !page.contains("http://"));
}

/// With the Redis store, blocks, events and suspicious counts are shared: what one instance saw
/// or did, the other's admin API shows and enforces.
#[test]
fn with_redis_every_instance_shares_blocks_events_and_suspects() {
    if !common::redis::have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let redis = common::redis::RedisServer::start();
    let cfg = TestConfig::parse(CONFIG)
        .redis_store(&redis.url())
        .set("store.key_prefix", "admintest:")
        .set("store.timeout", "2s");
    let a = Admin {
        gw: Gateway::start(&cfg),
        http: client(),
    };
    let b = Admin {
        gw: Gateway::start(&cfg),
        http: client(),
    };
    // Rejections on A: over the api limit (3), and a login block_for.
    for expected in [200, 200, 200, 429, 429] {
        assert_eq!(
            a.hit(reqwest::Method::GET, "/api/x", "192.0.2.60"),
            expected
        );
    }
    for expected in [200, 200, 429] {
        assert_eq!(
            a.hit(reqwest::Method::POST, "/login", "192.0.2.61"),
            expected
        );
    }
    // A records activity off the request path and writes it to Redis within its flush interval
    // (100 ms); B sees it once written.
    poll("A's events in Redis", Duration::from_secs(10)).until(|| {
        b.get("/admin/events")
            .1
            .as_array()
            .is_some_and(|e| e.len() == 3)
    });
    let (status, events) = b.get("/admin/events");
    assert_eq!(status, StatusCode::OK, "{events}");
    let kinds: Vec<(&str, &str)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["client"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("blocked", "192.0.2.61"),
            ("limited", "192.0.2.61"),
            ("limited", "192.0.2.60"),
        ]
    );
    // The second rejection of .60 was answered from A's local deny cache, without a store call,
    // so the store counted one (see the store contract).
    assert_eq!(
        b.get("/admin/suspicious").1,
        json!([
            {"client": "192.0.2.60", "rejections": 1, "blocked": false},
            {"client": "192.0.2.61", "rejections": 1, "blocked": true},
        ])
    );
    // A block through B holds on A; an unblock through A releases it on B.
    assert_eq!(b.block("192.0.2.62", "1h", "shared").0, StatusCode::CREATED);
    assert_eq!(a.hit(reqwest::Method::GET, "/api/x", "192.0.2.62"), 429);
    assert_eq!(a.get("/admin/blocks").1.as_array().unwrap().len(), 2);
    assert_eq!(a.delete("/admin/blocks/192.0.2.62").0, StatusCode::OK);
    assert_eq!(b.hit(reqwest::Method::GET, "/api/x", "192.0.2.62"), 200);
    assert_eq!(b.get("/admin/events?limit=1").1[0]["kind"], "unblocked");
    // Limits are inspected in the shared store too.
    let (_, limit) = b.get("/admin/limits?policy=api&client=192.0.2.60");
    assert_eq!(
        (limit["count"].as_u64(), limit["remaining"].as_u64()),
        (Some(3), Some(0))
    );
}
