//! A full in-process store never turns the limits off: one client rotating API keys past
//! `max_memory_keys` makes the store (or, with Redis down, its fallback) evict what limits nobody,
//! and once only state that limits someone is left, new keys are refused (503 here, `on_error`
//! decides) while every existing limit, the flooder's own included, keeps holding. Through the
//! real binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::redis::{have_redis, RedisServer};
use common::*;

/// Routes: `/api` limited per client (2000 a day) and per API key (`per_key` a day each),
/// `/login` limited per client (3 a day). Fixed windows start on the clock's boundaries: a day
/// keeps a flood of a few seconds inside one window (with a minute, a boundary crossed mid-flood
/// reset the counters and failed the exact counts now and then).
fn policies(per_key: u64) -> String {
    format!(
        r#"
[[policy]]
name = "per_ip"
algorithm = "fixed_window"
limit = 2000
window = "24h"

[[policy]]
name = "per_key"
algorithm = "fixed_window"
limit = {per_key}
window = "24h"
key = ["header:x-api-key"]

[[policy]]
name = "login"
algorithm = "fixed_window"
limit = 3
window = "24h"

[[route]]
name = "api"
path_prefix = "/api"
upstream = "api"
policies = ["per_ip", "per_key"]

[[route]]
name = "login"
path_prefix = "/login"
upstream = "api"
policies = ["login"]
"#
    )
}

/// A gateway trusting X-Forwarded-For from the test client, its store (the memory store, or
/// Redis at `redis` with the fallback on errors) bounded to 1000 keys.
fn gateway(echo: &Echo, redis: Option<&str>, per_key: u64) -> Gateway {
    let config = config_with(&echo.url(), &policies(per_key))
        .set("server.trusted_proxies", vec!["127.0.0.1/32"])
        .set("store.max_memory_keys", 1000);
    let config = match redis {
        None => config,
        Some(url) => config
            .redis_store(url)
            .set("store.timeout", "100ms")
            .set("store.on_error", "fallback"),
    };
    Gateway::start(&config)
}

/// `n` requests from `ip` to `/api`, each with a new API key; returns (200s, 429s, 503s).
fn key_flood(gw: &Gateway, ip: &str, n: usize) -> (usize, usize, usize) {
    let client = client();
    let (mut ok, mut limited, mut unavailable) = (0, 0, 0);
    for i in 0..n {
        let resp = client
            .get(gw.url("/api/items"))
            .header("x-forwarded-for", ip)
            .header("x-api-key", format!("rotated-{i}"))
            .send()
            .unwrap();
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => limited += 1,
            503 => unavailable += 1,
            other => panic!("request {i}: unexpected status {other}"),
        }
    }
    (ok, limited, unavailable)
}

/// Statuses of `n` logins from `ip`.
fn logins(gw: &Gateway, ip: &str, n: usize) -> Vec<u16> {
    let client = client();
    (0..n)
        .map(|_| {
            client
                .get(gw.url("/login"))
                .header("x-forwarded-for", ip)
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect()
}

/// A key flood: 2,400 keys on a limit-1 policy fill a 1000-key store (and then its
/// in-process fallback) with counters at their limit. Before the fix every request after that was
/// admitted unlimited, and (with eviction of the oldest) the flooder's own login limit was reset.
/// Now the flood's new keys are refused once nothing idle is left, and every limit that was
/// reached before the flood still holds.
#[test]
fn a_key_flood_leaves_every_limit_on() {
    let echo = Echo::start();
    let gw = gateway(&echo, None, 1);
    assert_eq!(logins(&gw, "198.51.100.7", 4), [200, 200, 200, 429]);
    assert_eq!(logins(&gw, "203.0.113.9", 3), [200, 200, 200]);
    // The store holds the two login counters; the flooder's per-client counter and 997 key
    // counters fill it, then the fallback takes the per-client counter and 999 key counters.
    let (ok, limited, unavailable) = key_flood(&gw, "198.51.100.7", 2400);
    assert_eq!((ok, limited), (997 + 999, 0), "{unavailable} refused");
    assert_eq!(unavailable, 2400 - ok);
    // Nothing that limits anyone was forgotten.
    assert_eq!(logins(&gw, "198.51.100.7", 1), [429]);
    assert_eq!(logins(&gw, "203.0.113.9", 1), [429]);
    for kind in ["limiting", "lease", "block", "offence"] {
        for store in ["memory", "fallback"] {
            let series =
                format!(r#"rategate_store_evictions_total{{kind="{kind}",store="{store}"}}"#);
            assert_eq!(gw.metric(&series).unwrap_or(0.0), 0.0, "{series}");
        }
    }
    // A client new to both full stores is refused, never let through unlimited.
    assert_eq!(logins(&gw, "192.0.2.44", 1), [503]);
    let capacity = gw
        .metric(r#"rategate_store_errors_total{kind="capacity",store="memory"}"#)
        .unwrap_or(0.0);
    assert!(capacity >= 400.0, "capacity errors: {capacity}");
}

/// With keys that stay under their limit (the flood's counters limit nothing), eviction takes
/// them first: the flooder's per-client counter is never reset by its own flood (evicting the
/// oldest first would take it first), and a client already at its login limit stays there.
#[test]
fn a_flood_of_idle_keys_resets_no_limit_in_use() {
    let echo = Echo::start();
    let gw = gateway(&echo, None, 5);
    assert_eq!(logins(&gw, "203.0.113.9", 4), [200, 200, 200, 429]);
    assert_eq!(key_flood(&gw, "198.51.100.7", 2400), (2000, 400, 0));
    assert_eq!(logins(&gw, "203.0.113.9", 1), [429]);
    let evicted = gw
        .metric(r#"rategate_store_evictions_total{kind="counter",store="memory"}"#)
        .unwrap_or(0.0);
    assert!(evicted >= 1000.0, "evictions: {evicted}");
    assert_eq!(
        gw.metric(r#"rategate_store_evictions_total{kind="limiting",store="memory"}"#),
        Some(0.0)
    );
}

/// The same flood while Redis is down and `on_error = "fallback"`: the in-process fallback is
/// bounded by the same `max_memory_keys` and follows the same rule.
#[test]
fn a_key_flood_on_the_redis_fallback_keeps_limiting() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let echo = Echo::start();
    let mut redis = RedisServer::start();
    let gw = gateway(&echo, Some(&redis.url()), 1);
    assert_eq!(logins(&gw, "192.0.2.1", 1), [200]);
    redis.kill();
    poll("the fallback to take over", Duration::from_secs(10))
        .every(Duration::from_millis(50))
        .until(|| gw.metric("rategate_store_fallback_active") == Some(1.0));
    assert_eq!(logins(&gw, "198.51.100.7", 4), [200, 200, 200, 429]);
    // The fallback holds that login counter, the flooder's per-client counter and 998 keys.
    let (ok, limited, unavailable) = key_flood(&gw, "198.51.100.7", 2400);
    assert_eq!((ok, limited, unavailable), (998, 0, 2400 - 998));
    assert_eq!(logins(&gw, "198.51.100.7", 1), [429]);
    assert_eq!(
        gw.metric(r#"rategate_store_evictions_total{kind="limiting",store="fallback"}"#)
            .unwrap_or(0.0),
        0.0
    );
    assert_eq!(logins(&gw, "203.0.113.9", 1), [503]);
}
