//! The policy features beyond counting requests, black-box through the real binary, with the
//! memory store and with Redis: counting by response, escalating blocks, concurrency limits
//! (exact across instances, released on body end, on client disconnect, renewed while long
//! requests run, reclaimed after an instance dies), tier overrides picked up by a reload,
//! weighted cost, and problem+json rejections with jitter.
//!
//! Nothing here asserts how long something took; waits poll for a state with a generous deadline.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::redis::{have_redis, RedisServer};
use common::*;
use serde_json::Value;

/// Which store a gateway uses.
#[derive(Clone)]
enum Backend {
    Memory,
    Redis(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis(_) => "redis",
        }
    }
}

/// Run `test` with the memory store, then with a fresh redis-server (skipped when not installed).
fn both(test: impl Fn(&Backend)) {
    test(&Backend::Memory);
    if !have_redis() {
        eprintln!("SKIP redis half: redis-server not installed");
        return;
    }
    let redis = RedisServer::start();
    test(&Backend::Redis(redis.url()));
}

/// A config on `backend` with the echo upstream `api` and `rest` (policies and routes).
fn config(echo: &Echo, backend: &Backend, rest: &str) -> TestConfig {
    // Slow upstream answers are part of these tests.
    let config = config_with(&echo.url(), rest).set("upstream.timeout", "60s");
    match backend {
        Backend::Memory => config,
        // A generous timeout: a slow debug build must not turn answers into on_error answers.
        Backend::Redis(url) => config
            .redis_store(url)
            .set("store.key_prefix", "rgpol:")
            .set("store.timeout", "5s")
            .set("store.on_error", "deny"),
    }
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn retry_after(&self) -> u64 {
        self.header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After: {} {}", self.status, self.body))
    }
}

fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut rb = client().get(gw.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().unwrap_or_default(),
    }
}

fn admin_json(gw: &Gateway, method: reqwest::Method, path: &str) -> (u16, Value) {
    let r = client().request(method, gw.admin_url(path)).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// The admin API's count for `policy` and the local client.
fn count(gw: &Gateway, policy: &str) -> u64 {
    let (status, v) = admin_json(
        gw,
        reqwest::Method::GET,
        &format!("/admin/limits?policy={policy}&client=127.0.0.1"),
    );
    assert_eq!(status, 200, "{v}");
    v["count"].as_u64().unwrap_or_else(|| panic!("{v}"))
}

fn unblock(gw: &Gateway) {
    let (status, v) = admin_json(gw, reqwest::Method::DELETE, "/admin/blocks/127.0.0.1");
    assert_eq!(status, 200, "{v}");
}

// ------------------------------------------------------------------------------------------------
// Count by response

#[test]
fn failed_logins_are_counted_after_the_response_and_lead_to_a_block() {
    both(|backend| {
        let echo = Echo::start();
        let gw = Gateway::start(&config(
            &echo,
            backend,
            r#"
[[policy]]
name = "login-failures"
algorithm = "fixed_window"
limit = 3
window = "1h"
count_status = [401]
block_for = "1h"

[[route]]
name = "login"
path_prefix = "/status"
upstream = "api"
policies = ["login-failures"]

[[route]]
name = "other"
path_prefix = "/"
upstream = "api"
"#,
        ));
        let b = backend.name();
        // Successes never count.
        for _ in 0..6 {
            let r = get(&gw, "/status/200", &[]);
            assert_eq!(r.status, 200, "{b}: {}", r.body);
            assert_eq!(r.header("x-ratelimit-remaining"), Some("3"), "{b}");
        }
        assert_eq!(count(&gw, "login-failures"), 0, "{b}");
        // Other errors than 401 do not count either.
        assert_eq!(get(&gw, "/status/500", &[]).status, 500);
        assert_eq!(count(&gw, "login-failures"), 0, "{b}");
        for n in 1..=3 {
            let r = get(&gw, "/status/401", &[]);
            assert_eq!(r.status, 401, "{b}: the failed login itself is answered");
            // Charged off the request's path: wait for it to land.
            poll(
                format!("{b}: failure {n} to be counted"),
                Duration::from_secs(5),
            )
            .until(|| count(&gw, "login-failures") == n);
        }
        // At the limit: the next attempt is refused before it reaches the upstream, and blocks.
        let upstream_seen = echo.count();
        let r = get(&gw, "/status/200", &[]);
        assert_eq!(r.status, 429, "{b}: {}", r.body);
        let v = r.json();
        assert_eq!(v["error"], "rate_limited", "{b}");
        assert_eq!(
            v["violated-policies"],
            serde_json::json!(["login-failures"])
        );
        // The block (1h) outlasts the window's remainder, so Retry-After is the block's.
        assert!(r.retry_after() > 3500, "{b}: {}", r.retry_after());
        let r = get(&gw, "/elsewhere", &[]);
        assert_eq!(r.status, 429, "{b}");
        assert_eq!(r.json()["error"], "blocked", "{b}");
        assert_eq!(
            echo.count(),
            upstream_seen,
            "{b}: a refused request reached the upstream"
        );
    });
}

#[test]
fn a_deferred_policy_costs_one_round_trip_and_a_charge_only_when_matched() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let redis = RedisServer::start();
    let echo = Echo::start();
    let gw = Gateway::start(&config(
        &echo,
        &Backend::Redis(redis.url()),
        r#"
[[policy]]
name = "errors"
algorithm = "sliding_window"
limit = 100
window = "1h"
count = "errors"

[[route]]
name = "all"
path_prefix = "/"
upstream = "api"
policies = ["errors"]
"#,
    ));
    assert_eq!(get(&gw, "/status/200", &[]).status, 200);
    let before = redis.script_calls();
    for _ in 0..10 {
        assert_eq!(get(&gw, "/status/204", &[]).status, 204);
    }
    assert_eq!(
        redis.script_calls() - before,
        10,
        "one call per unmatched request"
    );
    let before = redis.script_calls();
    for _ in 0..5 {
        assert_eq!(get(&gw, "/status/404", &[]).status, 404);
    }
    // The check on the request path, plus the charge after the response.
    poll("10 EVALSHA calls", Duration::from_secs(5)).until(|| redis.script_calls() - before >= 10);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(redis.script_calls() - before, 10);
    assert_eq!(count(&gw, "errors"), 5);
}

// ------------------------------------------------------------------------------------------------
// Escalating blocks

#[test]
fn repeated_blocks_escalate_up_to_the_max() {
    both(|backend| {
        let echo = Echo::start();
        let gw = Gateway::start(&config(
            &echo,
            backend,
            r#"
[[policy]]
name = "login"
algorithm = "fixed_window"
limit = 1
window = "1h"
block_for = "1s"
block_multiplier = 10
block_max = "5m"

[[route]]
name = "all"
path_prefix = "/"
upstream = "api"
policies = ["login"]
"#,
        ));
        let b = backend.name();
        assert_eq!(get(&gw, "/", &[]).status, 200);
        // Each rejection starts a block; the blocked answers' Retry-After shows its length.
        let mut blocks = Vec::new();
        let r = get(&gw, "/", &[]);
        assert_eq!(r.json()["error"], "rate_limited", "{b}: {}", r.body);
        let r = get(&gw, "/", &[]);
        assert_eq!(r.json()["error"], "blocked", "{b}: {}", r.body);
        blocks.push(r.retry_after());
        // The first block (1s) runs out by itself; the first request after it is rejected
        // again (the window is still full) and starts the second block.
        poll(
            format!("{b}: the first block to end"),
            Duration::from_secs(10),
        )
        .until(|| get(&gw, "/", &[]).json()["error"] == "rate_limited");
        for _ in 0..3 {
            let r = get(&gw, "/", &[]);
            assert_eq!(r.json()["error"], "blocked", "{b}: {}", r.body);
            blocks.push(r.retry_after());
            // An admin unblock ends the block but the offence is remembered.
            unblock(&gw);
            let r = get(&gw, "/", &[]);
            assert_eq!(r.json()["error"], "rate_limited", "{b}: {}", r.body);
        }
        // 1s, 10s, 100s, then capped at 300s (Retry-After counts down, never up).
        assert_eq!(blocks.len(), 4, "{b}: {blocks:?}");
        assert!(blocks[0] <= 1, "{b}: {blocks:?}");
        assert!(blocks[1] > 1 && blocks[1] <= 10, "{b}: {blocks:?}");
        assert!(blocks[2] > 10 && blocks[2] <= 100, "{b}: {blocks:?}");
        assert!(blocks[3] > 100 && blocks[3] <= 300, "{b}: {blocks:?}");
        // Still capped the next time.
        let r = get(&gw, "/", &[]);
        assert_eq!(r.json()["error"], "blocked", "{b}");
        assert!(r.retry_after() > 100 && r.retry_after() <= 300, "{b}");
    });
}

// ------------------------------------------------------------------------------------------------
// Concurrency

/// Policy `inflight` (concurrency) on every route.
fn concurrency(lease: &str, limit: u64) -> String {
    format!(
        r#"
[[policy]]
name = "inflight"
algorithm = "concurrency"
limit = {limit}
lease = "{lease}"

[[route]]
name = "all"
path_prefix = "/"
upstream = "api"
policies = ["inflight"]
"#
    )
}

/// `n` concurrent GETs of `path`, spread over `gateways`; the statuses and one 429's headers.
fn at_once(gateways: &[&Gateway], n: usize, path: &str) -> (Vec<u16>, Option<Resp>) {
    install_crypto();
    let urls: Vec<String> = (0..n)
        .map(|i| gateways[i % gateways.len()].url(path))
        .collect();
    let handles: Vec<_> = urls
        .into_iter()
        .map(|url| {
            std::thread::spawn(move || {
                let r = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap()
                    .get(url)
                    .send()
                    .unwrap();
                Resp {
                    status: r.status().as_u16(),
                    headers: r.headers().clone(),
                    body: r.text().unwrap_or_default(),
                }
            })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut rejected = None;
    for h in handles {
        let r = h.join().unwrap();
        statuses.push(r.status);
        if r.status == 429 {
            rejected = Some(r);
        }
    }
    (statuses, rejected)
}

fn tally(statuses: &[u16]) -> (usize, usize, usize) {
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    (ok, limited, statuses.len() - ok - limited)
}

#[test]
fn concurrency_limit_is_exact_across_three_instances() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let redis = RedisServer::start();
    let echo = Echo::start();
    let cfg = config(&echo, &Backend::Redis(redis.url()), &concurrency("60s", 3));
    let gws = [
        Gateway::start(&cfg),
        Gateway::start(&cfg),
        Gateway::start(&cfg),
    ];
    let all: Vec<&Gateway> = gws.iter().collect();
    for round in 0..2 {
        // Slow answers keep the first three in flight while the others arrive.
        let (statuses, rejected) = at_once(&all, 12, "/slow/4000");
        assert_eq!(tally(&statuses), (3, 9, 0), "round {round}: {statuses:?}");
        let r = rejected.unwrap();
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"inflight\";q=3;qu=\"concurrent-requests\"")
        );
        assert_eq!(r.header("ratelimit"), Some("\"inflight\";r=0"));
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(r.retry_after(), 1);
        // Every slot comes back once the responses are done (released off the request path).
        poll(
            format!("round {round}: the slots to be released"),
            Duration::from_secs(5),
        )
        .until(|| count(&gws[0], "inflight") == 0);
    }
    let r = get(&gws[1], "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit"), Some("\"inflight\";r=2"));
}

#[test]
fn concurrency_limit_on_the_memory_store() {
    let echo = Echo::start();
    let gw = Gateway::start(&config(&echo, &Backend::Memory, &concurrency("60s", 2)));
    let (statuses, _) = at_once(&[&gw], 6, "/slow/4000");
    assert_eq!(tally(&statuses), (2, 4, 0), "{statuses:?}");
    poll("the slots to be released", Duration::from_secs(5)).until(|| count(&gw, "inflight") == 0);
    let (statuses, _) = at_once(&[&gw], 2, "/slow/100");
    assert_eq!(tally(&statuses), (2, 0, 0));
}

/// Start a request in the background and wait until it holds the only slot (the admin API's
/// count, which takes no slot itself, shows it).
fn hold_slot(gw: &Gateway, probe: &Gateway, path: &str) -> std::thread::JoinHandle<()> {
    install_crypto();
    let url = gw.url(path);
    let handle = std::thread::spawn(move || {
        let _ = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .get(url)
            .send();
    });
    poll(
        "the background request to take the slot",
        Duration::from_secs(10),
    )
    .until(|| count(probe, "inflight") == 1);
    assert_eq!(get(probe, "/", &[]).status, 429);
    handle
}

#[test]
fn long_requests_renew_their_lease_and_release_it_when_done() {
    both(|backend| {
        let echo = Echo::start();
        let gw = Gateway::start(&config(&echo, backend, &concurrency("2s", 1)));
        let b = backend.name();
        let slow = hold_slot(&gw, &gw, "/slow/7000");
        // Well past the lease: still held, because the gateway renews it.
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(get(&gw, "/", &[]).status, 429, "{b}: lease not renewed");
        slow.join().unwrap();
        poll(
            format!("{b}: the slot to be released after the response"),
            Duration::from_secs(5),
        )
        .until(|| get(&gw, "/", &[]).status == 200);
    });
}

#[test]
fn a_client_that_goes_away_releases_its_slot() {
    both(|backend| {
        let echo = Echo::start();
        // A long lease and a very slow upstream: only the disconnect can free the slot in time.
        let gw = Gateway::start(&config(&echo, backend, &concurrency("60s", 1)));
        let b = backend.name();
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        stream
            .write_all(b"GET /slow/30000 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        poll(
            format!("{b}: the slow request to take the slot"),
            Duration::from_secs(10),
        )
        .until(|| count(&gw, "inflight") == 1);
        assert_eq!(get(&gw, "/", &[]).status, 429, "{b}");
        drop(stream);
        poll(
            format!("{b}: the slot to be released when the client went away"),
            Duration::from_secs(10),
        )
        .until(|| get(&gw, "/", &[]).status == 200);
    });
}

#[test]
fn a_dead_instances_leases_expire() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let redis = RedisServer::start();
    let echo = Echo::start();
    let cfg = config(&echo, &Backend::Redis(redis.url()), &concurrency("2s", 1));
    let mut a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    let _slow = hold_slot(&a, &b, "/slow/30000");
    // SIGKILL: no release can happen; only the lease's expiry frees the slot.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    poll(
        "the dead instance's lease to expire",
        Duration::from_secs(15),
    )
    .until(|| get(&b, "/", &[]).status == 200);
    poll("the slot to be free", Duration::from_secs(5)).until(|| count(&b, "inflight") == 0);
}

#[test]
fn a_shadow_concurrency_policy_never_rejects() {
    let echo = Echo::start();
    let gw = Gateway::start(
        &config(&echo, &Backend::Memory, &concurrency("60s", 1)).set("policy.mode", "shadow"),
    );
    let (statuses, _) = at_once(&[&gw], 3, "/slow/1000");
    assert_eq!(tally(&statuses), (3, 0, 0));
}

// ------------------------------------------------------------------------------------------------
// Tiers

#[test]
fn tier_overrides_follow_a_reload_of_the_overrides_file() {
    both(|backend| {
        let echo = Echo::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tiers.toml"), "\"gold\" = 5\n").unwrap();
        let path = dir.path().join("rategate.toml");
        std::fs::write(
            &path,
            config(
                &echo,
                backend,
                r#"
[[policy]]
name = "per-key"
algorithm = "fixed_window"
limit = 2
window = "1h"
key = ["header:x-api-key"]
overrides_file = "tiers.toml"

[[route]]
name = "all"
path_prefix = "/"
upstream = "api"
policies = ["per-key"]
"#,
            )
            .to_string(),
        )
        .unwrap();
        let gw = Gateway::builder_at(dir, path).start();
        let b = backend.name();
        let allowed = |key: &str| -> (usize, Option<String>) {
            let mut n = 0;
            let mut limit = None;
            loop {
                let r = get(&gw, "/", &[("x-api-key", key)]);
                limit = limit.or(r.header("x-ratelimit-limit").map(str::to_owned));
                match r.status {
                    200 => n += 1,
                    429 => return (n, limit),
                    s => panic!("{b}: status {s}"),
                }
                assert!(n < 50, "{b}: never limited");
            }
        };
        assert_eq!(allowed("gold"), (5, Some("5".into())), "{b}");
        assert_eq!(allowed("bronze"), (2, Some("2".into())), "{b}");

        let tiers = gw.config_path.parent().unwrap().join("tiers.toml");
        std::fs::write(&tiers, "\"gold\" = 8\n\"bronze\" = 3\n").unwrap();
        // Memory: SIGHUP; Redis: the admin API. Both read the overrides file again.
        match backend {
            Backend::Memory => gw.signal("HUP"),
            Backend::Redis(_) => {
                let (status, v) = admin_json(&gw, reqwest::Method::POST, "/admin/reload");
                assert_eq!(status, 200, "{v}");
            }
        }
        gw.wait_log("config reloaded", 1, Duration::from_secs(10));
        // A new tier is a new counter: the full new limit is available.
        assert_eq!(allowed("gold"), (8, Some("8".into())), "{b}");
        assert_eq!(allowed("bronze"), (3, Some("3".into())), "{b}");
        assert_eq!(allowed("unknown"), (2, Some("2".into())), "{b}");

        // A broken overrides file is refused whole; the running tiers stay.
        std::fs::write(&tiers, "\"gold\" = 0\n").unwrap();
        let (status, v) = admin_json(&gw, reqwest::Method::POST, "/admin/reload");
        assert_eq!(status, 400, "{v}");
        assert!(v.to_string().contains("tiers.toml"), "{v}");
        assert_eq!(get(&gw, "/", &[("x-api-key", "gold")]).status, 429, "{b}");
    });
}

// ------------------------------------------------------------------------------------------------
// Cost

#[test]
fn requests_are_charged_their_cost() {
    both(|backend| {
        let echo = Echo::start();
        let gw = Gateway::start(&config(
            &echo,
            backend,
            r#"
[[policy]]
name = "units"
algorithm = "fixed_window"
limit = 10
window = "1h"

[[route]]
name = "fixed"
path_prefix = "/fixed"
upstream = "api"
policies = ["units"]
cost = 4

[[route]]
name = "header"
path_prefix = "/"
upstream = "api"
policies = ["units"]
cost_header = "X-Request-Cost"
max_cost = 10
"#,
        ));
        let b = backend.name();
        let remaining = |r: &Resp| r.header("x-ratelimit-remaining").map(str::to_owned);
        let r = get(&gw, "/a", &[("x-request-cost", "3")]);
        assert_eq!((r.status, remaining(&r)), (200, Some("7".into())), "{b}");
        // Anything but 1..=max_cost is refused, names the header and the range, charges nothing.
        for bad in ["0", "11", "-1", "2.5", "lots", "", "99999999999999999999"] {
            let seen = echo.count();
            let r = get(&gw, "/a", &[("x-request-cost", bad)]);
            assert_eq!(r.status, 400, "{b}: cost {bad:?}");
            let v = r.json();
            assert_eq!(v["error"], "invalid_cost", "{b}");
            assert_eq!(
                v["message"], "x-request-cost must be a whole number from 1 to 10.",
                "{b}"
            );
            assert_eq!(echo.count(), seen, "{b}: refused request forwarded");
        }
        // Without the header, the route's cost (default 1).
        let r = get(&gw, "/a", &[]);
        assert_eq!(remaining(&r), Some("6".into()), "{b}");
        let r = get(&gw, "/fixed", &[("x-request-cost", "9")]);
        assert_eq!(
            remaining(&r),
            Some("2".into()),
            "{b}: the fixed route ignores the header"
        );
        // Does not fit: rejected, nothing charged; a smaller one still fits.
        let r = get(&gw, "/a", &[("x-request-cost", "3")]);
        assert_eq!((r.status, remaining(&r)), (429, Some("2".into())), "{b}");
        let r = get(&gw, "/a", &[("x-request-cost", "2")]);
        assert_eq!((r.status, remaining(&r)), (200, Some("0".into())), "{b}");
    });
}

// ------------------------------------------------------------------------------------------------
// Rejection details

#[test]
fn rejections_are_problem_details_with_jittered_retry_after() {
    both(|backend| {
        let echo = Echo::start();
        let gw = Gateway::start(&config(
            &echo,
            backend,
            r#"
[[policy]]
name = "a"
algorithm = "fixed_window"
limit = 1
window = "1h"
retry_after_jitter = "30s"

[[policy]]
name = "b"
algorithm = "sliding_window"
limit = 1
window = "1h"

[[policy]]
name = "roomy"
algorithm = "fixed_window"
limit = 100
window = "1h"

[[route]]
name = "all"
path_prefix = "/"
upstream = "api"
policies = ["roomy", "a", "b"]
"#,
        ));
        let b = backend.name();
        assert_eq!(get(&gw, "/", &[]).status, 200);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..30 {
            let r = get(&gw, "/", &[]);
            assert_eq!(r.status, 429, "{b}");
            assert_eq!(
                r.header("content-type"),
                Some("application/problem+json"),
                "{b}"
            );
            let v = r.json();
            assert_eq!(
                v["type"],
                "https://iana.org/assignments/http-problem-types#quota-exceeded"
            );
            assert_eq!(v["status"], 429);
            assert!(v["title"].is_string() && v["detail"].is_string(), "{v}");
            assert_eq!(v["error"], "rate_limited");
            assert_eq!(v["policy"], "a");
            assert!(v["message"].is_string());
            // Later requests may be answered from the deny cache, which knows the first
            // rejecting policy only.
            if i == 0 || matches!(backend, Backend::Memory) {
                assert_eq!(v["violated-policies"], serde_json::json!(["a", "b"]), "{b}");
            } else {
                assert_eq!(v["violated-policies"][0], "a", "{b}: {v}");
            }
            // Header and body agree; the window has at most an hour left, plus up to 30s.
            let retry = r.retry_after();
            assert_eq!(v["retry_after"], retry, "{b}");
            assert!((1..=3600 + 30).contains(&retry), "{b}: {retry}");
            seen.insert(retry);
        }
        assert!(seen.len() > 1, "{b}: no jitter in {seen:?}");
    });
}

#[test]
fn a_counted_response_is_delivered_whole() {
    // The charge runs beside the response, never in front of it: a response that a
    // count-by-response policy matches is delivered like any other.
    let echo = Echo::start();
    let gw = Gateway::start(&config(
        &echo,
        &Backend::Memory,
        r#"
[[policy]]
name = "errors"
algorithm = "fixed_window"
limit = 100
window = "1h"
count = "errors"

[[route]]
name = "all"
path_prefix = "/"
upstream = "api"
policies = ["errors"]
"#,
    ));
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .write_all(b"GET /status/418 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 418"), "{text}");
    poll("the error to be counted", Duration::from_secs(5)).until(|| count(&gw, "errors") == 1);
}

// ------------------------------------------------------------------------------------------------
// Redis ACL

/// The shipped ACL (deploy/redis/users.acl) allows what the new scripts do: the check with
/// offences and leases, the after-response charge, lease renewal and release.
#[test]
fn the_features_work_under_the_shipped_redis_acl() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let acl = std::fs::read_to_string("deploy/redis/users.acl").unwrap();
    let hash = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"; // "password"
    let acl_path = dir.path().join("users.acl");
    std::fs::write(&acl_path, acl.replace(&"0".repeat(64), hash)).unwrap();
    let redis = RedisServer::start_with(
        Some("rategate:password"),
        &["--aclfile", acl_path.to_str().unwrap()],
    );
    let echo = Echo::start();
    let url = format!("redis://rategate:password@127.0.0.1:{}/0", redis.port);
    let cfg = config(
        &echo,
        &Backend::Redis(url),
        r#"
[[policy]]
name = "failures"
algorithm = "sliding_log"
limit = 1
window = "1h"
count = "errors"
block_for = "1s"
block_multiplier = 2

[[policy]]
name = "bucket"
algorithm = "token_bucket"
limit = 100
window = "1h"
count_status = [404]

[[policy]]
name = "inflight"
algorithm = "concurrency"
limit = 5
lease = "1s"

[[route]]
name = "all"
path_prefix = "/"
upstream = "api"
policies = ["failures", "bucket", "inflight"]
"#,
    )
    .set("store.key_prefix", "rategate:");
    let gw = Gateway::start(&cfg);
    // Long enough to be renewed at least once.
    assert_eq!(get(&gw, "/slow/1500", &[]).status, 200, "{}", gw.logs());
    poll("the slot to be released", Duration::from_secs(5)).until(|| count(&gw, "inflight") == 0);
    assert_eq!(get(&gw, "/status/404", &[]).status, 404);
    poll("the failure to be counted", Duration::from_secs(5)).until(|| count(&gw, "failures") == 1);
    assert_eq!(count(&gw, "bucket"), 1);
    let r = get(&gw, "/", &[]);
    assert_eq!(r.json()["error"], "rate_limited", "{}", r.body);
    assert_eq!(get(&gw, "/", &[]).json()["error"], "blocked");
    let logs = gw.logs().to_lowercase();
    assert!(!logs.contains("noperm"), "{logs}");
    let errors = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !errors
            .lines()
            .any(|l| l.starts_with("rategate_store_errors_total{")),
        "{errors}"
    );
}
