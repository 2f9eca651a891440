//! Black-box tests of limiting through the real binary: the header contract, exact admission
//! under concurrency, check-all-then-charge-all, shadow mode, block_for, access lists and client
//! identity under spoofing.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn headers_named<'a>(resp: &'a str, name: &str) -> Vec<&'a str> {
    let head = resp.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .skip(1)
        .filter_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

fn body_json(resp: &str) -> Value {
    serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap_or_default()).unwrap_or(Value::Null)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn header_contract_and_429_body() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(
        &echo.url(),
        r#"
[[policy]]
name = "auth"
algorithm = "fixed_window"
limit = 3
window = "60s"

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["auth"]
"#,
    ));
    for i in 0..3u64 {
        let resp = raw_get(gw.addr, "/with-ratelimit", "");
        assert_eq!(raw_status(&resp), 200, "{resp}");
        assert_eq!(header(&resp, "x-ratelimit-limit"), Some("3"));
        assert_eq!(
            header(&resp, "x-ratelimit-remaining"),
            Some(&*(2 - i).to_string())
        );
        assert_eq!(header(&resp, "x-ratelimit-policy"), Some("auth"));
        let reset: u64 = header(&resp, "x-ratelimit-reset").unwrap().parse().unwrap();
        assert!(reset > now_s() && reset <= now_s() + 61, "reset {reset}");
        assert_eq!(header(&resp, "ratelimit-policy"), Some("\"auth\";q=3;w=60"));
        let rl = header(&resp, "ratelimit").unwrap();
        assert!(rl.starts_with(&format!("\"auth\";r={};t=", 2 - i)), "{rl}");
        // The upstream's own rate-limit headers are replaced, never duplicated.
        assert_eq!(headers_named(&resp, "x-ratelimit-limit").len(), 1);
        assert_eq!(headers_named(&resp, "ratelimit").len(), 1);
    }
    let resp = raw_get(gw.addr, "/with-ratelimit", "");
    assert_eq!(raw_status(&resp), 429, "{resp}");
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(header(&resp, "x-ratelimit-remaining"), Some("0"));
    let v = body_json(&resp);
    assert_eq!(v["error"], "rate_limited");
    assert_eq!(v["policy"], "auth");
    assert_eq!(v["retry_after"], retry);
    assert!(v["message"].is_string());
    assert_eq!(echo.count(), 3, "a rejected request reached the upstream");
}

#[test]
fn exact_admission_under_200_concurrent_requests() {
    for algorithm in [
        "fixed_window",
        "sliding_window",
        "sliding_log",
        "token_bucket",
    ] {
        let echo = Echo::start();
        let gw = Gateway::start(
            &config_with(
                &echo.url(),
                &format!(
                    r#"
[[policy]]
name = "p"
algorithm = "{algorithm}"
limit = 50
window = "1h"

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["p"]
"#
                ),
            )
            // 200 requests at once on a loaded machine: the first 50 all open upstream connections
            // together, and a debug build can take past the default 1 s to get to them.
            .set("upstream.connect_timeout", "5s")
            .set("upstream.timeout", "10s"),
        );
        install_crypto();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let statuses: Vec<u16> = rt.block_on(async {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let mut tasks = Vec::new();
            for _ in 0..200 {
                let client = client.clone();
                let url = gw.url("/x");
                tasks.push(tokio::spawn(async move {
                    client
                        .get(url)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        let ok = statuses.iter().filter(|s| **s == 200).count();
        let limited = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((ok, limited), (50, 150), "{algorithm}: {statuses:?}");
        assert_eq!(echo.count(), 50, "{algorithm}");
    }
}

#[test]
fn rejected_request_consumes_no_quota_of_other_policies() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(
        &echo.url(),
        r#"
[[policy]]
name = "wide"
algorithm = "fixed_window"
limit = 10
window = "1h"

[[policy]]
name = "narrow"
algorithm = "fixed_window"
limit = 2
window = "1h"

[[route]]
name = "both"
path_prefix = "/both"
upstream = "api"
policies = ["wide", "narrow"]

[[route]]
name = "wide-only"
path_prefix = "/wide"
upstream = "api"
policies = ["wide"]
"#,
    ));
    for _ in 0..2 {
        assert_eq!(raw_status(&raw_get(gw.addr, "/both", "")), 200);
    }
    for _ in 0..5 {
        let resp = raw_get(gw.addr, "/both", "");
        assert_eq!(raw_status(&resp), 429);
        assert_eq!(body_json(&resp)["policy"], "narrow");
    }
    // "wide" was charged only for the 2 admitted requests.
    let resp = raw_get(gw.addr, "/wide", "");
    assert_eq!(raw_status(&resp), 200);
    assert_eq!(header(&resp, "x-ratelimit-remaining"), Some("7"));
}

#[test]
fn least_remaining_policy_is_reported() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(
        &echo.url(),
        r#"
[[policy]]
name = "big"
algorithm = "sliding_window"
limit = 100
window = "1m"

[[policy]]
name = "small"
algorithm = "token_bucket"
limit = 5
window = "1m"
burst = 4

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["big", "small"]
"#,
    ));
    let resp = raw_get(gw.addr, "/", "");
    assert_eq!(header(&resp, "x-ratelimit-policy"), Some("small"));
    // A token bucket reports its capacity (burst) as the limit, so remaining <= limit holds.
    assert_eq!(header(&resp, "x-ratelimit-limit"), Some("4"));
    assert_eq!(header(&resp, "x-ratelimit-remaining"), Some("3"));
    assert_eq!(
        header(&resp, "ratelimit-policy"),
        Some("\"big\";q=100;w=60, \"small\";q=4;w=60")
    );
}

#[test]
fn shadow_mode_reports_but_never_rejects() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(
        &echo.url(),
        r#"
[[policy]]
name = "trial"
algorithm = "fixed_window"
limit = 2
window = "1h"
mode = "shadow"

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["trial"]
"#,
    ));
    for _ in 0..6 {
        let resp = raw_get(gw.addr, "/", "");
        assert_eq!(raw_status(&resp), 200, "{resp}");
        assert_eq!(header(&resp, "x-ratelimit-policy"), Some("trial"));
    }
    assert_eq!(echo.count(), 6);
    let metrics = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("rategate_requests_total{decision=\"shadow_limited\",route=\"r\"} 4"),
        "{metrics}"
    );
}

#[test]
fn block_for_blocks_the_client_from_every_route() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(
        &echo.url(),
        r#"
[[policy]]
name = "login"
algorithm = "fixed_window"
limit = 2
window = "1h"
block_for = "2s"

[[policy]]
name = "general"
algorithm = "fixed_window"
limit = 1000
window = "1h"

[[route]]
name = "login"
path = "/login"
upstream = "api"
policies = ["login"]

[[route]]
name = "free"
path = "/free"
upstream = "api"

[[route]]
name = "other"
path_prefix = "/"
upstream = "api"
policies = ["general"]

"#,
    ));
    assert_eq!(raw_status(&raw_get(gw.addr, "/login", "")), 200);
    assert_eq!(raw_status(&raw_get(gw.addr, "/login", "")), 200);
    let resp = raw_get(gw.addr, "/login", "");
    assert_eq!(raw_status(&resp), 429);
    // Now blocked everywhere, including routes whose own limits are far away.
    let resp = raw_get(gw.addr, "/elsewhere", "");
    assert_eq!(raw_status(&resp), 429, "{resp}");
    assert_eq!(body_json(&resp)["error"], "blocked");
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Routes without policies refuse a blocked client too.
    let resp = raw_get(gw.addr, "/free", "");
    assert_eq!(body_json(&resp)["error"], "blocked", "{resp}");
    let before = echo.count();
    std::thread::sleep(std::time::Duration::from_millis(2300));
    assert_eq!(raw_status(&raw_get(gw.addr, "/elsewhere", "")), 200);
    assert_eq!(raw_status(&raw_get(gw.addr, "/free", "")), 200);
    assert_eq!(echo.count(), before + 2);
}

#[test]
fn access_lists_deny_wins_and_allow_bypasses_limits() {
    let echo = Echo::start();
    let rest = r#"
[[policy]]
name = "tiny"
algorithm = "fixed_window"
limit = 1
window = "1h"
block_for = "1h"

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["tiny"]
"#;
    let allow = config_with(&echo.url(), rest).set("access.allow", vec!["127.0.0.0/8"]);
    let gw = Gateway::start(&allow);
    for _ in 0..5 {
        let resp = raw_get(gw.addr, "/", "");
        assert_eq!(raw_status(&resp), 200);
        assert_eq!(header(&resp, "x-ratelimit-limit"), None);
    }
    drop(gw);
    let both = config_with(&echo.url(), rest)
        .set("access.allow", vec!["127.0.0.1"])
        .set("access.deny", vec!["127.0.0.0/8"]);
    let gw = Gateway::start(&both);
    let before = echo.count();
    let resp = raw_get(gw.addr, "/", "");
    assert_eq!(raw_status(&resp), 403, "{resp}");
    assert_eq!(body_json(&resp)["error"], "forbidden");
    assert_eq!(echo.count(), before);
}

fn trusted_gateway(echo: &Echo) -> Gateway {
    let cfg = config_with(
        &echo.url(),
        r#"
[[policy]]
name = "p"
algorithm = "fixed_window"
limit = 100
window = "1h"

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["p"]
"#,
    )
    .set("server.trusted_proxies", vec!["127.0.0.1/32", "10.0.0.0/8"]);
    Gateway::start(&cfg)
}

/// Remaining quota seen by a request with these extra headers (100 - requests of that client).
fn remaining(gw: &Gateway, extra: &str) -> u64 {
    let resp = raw_get(gw.addr, "/", extra);
    header(&resp, "x-ratelimit-remaining")
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn identity_from_untrusted_peer_ignores_forwarded_for() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(
        &echo.url(),
        r#"
[[policy]]
name = "p"
algorithm = "fixed_window"
limit = 100
window = "1h"

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["p"]
"#,
    ));
    assert_eq!(remaining(&gw, "X-Forwarded-For: 1.1.1.1\r\n"), 99);
    assert_eq!(remaining(&gw, "X-Forwarded-For: 2.2.2.2\r\n"), 98);
    assert_eq!(remaining(&gw, "X-Real-IP: 3.3.3.3\r\n"), 97);
}

#[test]
fn identity_walks_forwarded_for_right_to_left_over_trusted_hops() {
    let echo = Echo::start();
    let gw = trusted_gateway(&echo);
    // Rightmost untrusted entry is the client; leftmost spoofed entries never count.
    assert_eq!(remaining(&gw, "X-Forwarded-For: 9.9.9.9, 5.5.5.5\r\n"), 99);
    assert_eq!(remaining(&gw, "X-Forwarded-For: 1.1.1.1, 5.5.5.5\r\n"), 98);
    assert_eq!(remaining(&gw, "X-Forwarded-For: 5.5.5.5, 10.1.2.3\r\n"), 97);
    // Several header lines are one list, in order.
    assert_eq!(
        remaining(
            &gw,
            "X-Forwarded-For: 7.7.7.7\r\nX-Forwarded-For: 5.5.5.5, 10.0.0.9\r\n"
        ),
        96
    );
    // A different real client has its own quota.
    assert_eq!(remaining(&gw, "X-Forwarded-For: 6.6.6.6\r\n"), 99);
    // IPv4-mapped IPv6 is the same client as its IPv4 form.
    assert_eq!(remaining(&gw, "X-Forwarded-For: ::ffff:6.6.6.6\r\n"), 98);
}

#[test]
fn identity_never_keys_on_garbage_forwarded_for() {
    let echo = Echo::start();
    let gw = trusted_gateway(&echo);
    // With no usable entry the client is the trusted peer itself (127.0.0.1); every garbage
    // form lands on that one key instead of minting a fresh identity per request.
    let mut expected = 99;
    for garbage in [
        "unknown",
        "1.2.3.4:8080",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "127.1",
        "",
        "not an ip",
        "1.2.3.4, unknown",
    ] {
        assert_eq!(
            remaining(&gw, &format!("X-Forwarded-For: {garbage}\r\n")),
            expected,
            "{garbage}"
        );
        expected -= 1;
    }
}

#[test]
fn ipv6_clients_are_keyed_by_prefix() {
    let echo = Echo::start();
    let gw = trusted_gateway(&echo);
    assert_eq!(remaining(&gw, "X-Forwarded-For: 2001:db8:1:2::1\r\n"), 99);
    // Same /64, different interface id: same client.
    assert_eq!(
        remaining(&gw, "X-Forwarded-For: 2001:db8:1:2:ffff::9\r\n"),
        98
    );
    // Another /64: another client.
    assert_eq!(remaining(&gw, "X-Forwarded-For: 2001:db8:1:3::1\r\n"), 99);
}

#[test]
fn header_keys_fall_back_to_ip_and_do_not_collide() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(
        &echo.url(),
        r#"
[[policy]]
name = "per-key"
algorithm = "fixed_window"
limit = 10
window = "1h"
key = ["header:x-api-key"]

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["per-key"]
"#,
    ));
    assert_eq!(remaining(&gw, "X-Api-Key: alpha\r\n"), 9);
    assert_eq!(remaining(&gw, "X-Api-Key: alpha\r\n"), 8);
    assert_eq!(remaining(&gw, "X-Api-Key: beta\r\n"), 9);
    // Absent and empty fall back to the client address: one shared identity for both...
    assert_eq!(remaining(&gw, ""), 9);
    assert_eq!(remaining(&gw, "X-Api-Key: \r\n"), 8);
    // ...which a key whose value spells that address does not share.
    assert_eq!(remaining(&gw, "X-Api-Key: 127.0.0.1\r\n"), 9);
    // Long values are bounded but still distinct.
    let a = format!("X-Api-Key: {}a\r\n", "k".repeat(500));
    let b = format!("X-Api-Key: {}b\r\n", "k".repeat(500));
    assert_eq!(remaining(&gw, &a), 9);
    assert_eq!(remaining(&gw, &b), 9);
    assert_eq!(remaining(&gw, &a), 8);
}
