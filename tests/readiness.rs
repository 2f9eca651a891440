//! `/readyz` tells the truth about the store, black-box, with a real redis-server and no proxied
//! traffic at all: with `on_error = "deny"` it is 503 while Redis cannot be reached (from the
//! start, before any request) and 200 again soon after Redis answers; with `fallback` and
//! `allow` it stays 200 by design. The background probe behind it costs no EVALSHA.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::redis::{free_port, have_redis, RedisServer};
use common::*;

const POLICY: &str = r#"
[[policy]]
name = "p"
algorithm = "fixed_window"
limit = 1000
window = "1h"

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["p"]
"#;

fn config(echo: &Echo, url: &str, on_error: &str) -> TestConfig {
    config_with(&echo.url(), POLICY)
        .redis_store(url)
        .set("store.key_prefix", "rgready:")
        .set("store.timeout", "200ms")
        .set("store.on_error", on_error)
}

fn readyz(gw: &Gateway) -> u16 {
    client()
        .get(gw.admin_url("/readyz"))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Wait until /readyz answers `status`; panics after `timeout`.
fn wait_ready(gw: &Gateway, status: u16, timeout: Duration, what: &str) {
    poll(format!("{what}: /readyz to become {status}"), timeout)
        .every(Duration::from_millis(50))
        .until(|| readyz(gw) == status);
}

/// /readyz answers `status` at every look for `period`.
fn stays(gw: &Gateway, status: u16, period: Duration, what: &str) {
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        assert_eq!(readyz(gw), status, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
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
fn deny_is_not_ready_from_the_start_while_redis_is_unreachable_and_ready_once_it_answers() {
    need_redis!();
    let echo = Echo::start();
    let port = free_port();
    let gw = Gateway::start(&config(
        &echo,
        &format!("redis://127.0.0.1:{port}/0"),
        "deny",
    ));
    // The very first look, before any request.
    assert_eq!(readyz(&gw), 503, "{}", gw.logs());
    stays(&gw, 503, Duration::from_secs(1), "Redis still unreachable");
    let _redis = RedisServer::start_on(port);
    wait_ready(&gw, 200, Duration::from_secs(8), "Redis answering");
    assert_eq!(echo.count(), 0, "no request was proxied");
}

#[test]
fn deny_readiness_follows_redis_going_away_and_coming_back_without_traffic() {
    need_redis!();
    let echo = Echo::start();
    let mut redis = RedisServer::start();
    let gw = Gateway::start(&config(&echo, &redis.url(), "deny"));
    assert_eq!(readyz(&gw), 200);
    // The probe is no EVALSHA: idle, the gateway runs no script.
    let scripts = redis.script_calls();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(redis.script_calls(), scripts);

    redis.kill();
    wait_ready(&gw, 503, Duration::from_secs(5), "Redis killed");
    redis.restart();
    wait_ready(&gw, 200, Duration::from_secs(8), "Redis restarted");

    // Frozen (SIGSTOP): connections stay open, nothing answers.
    redis.pause();
    wait_ready(&gw, 503, Duration::from_secs(8), "Redis frozen");
    redis.resume();
    wait_ready(&gw, 200, Duration::from_secs(8), "Redis thawed");
    assert_eq!(echo.count(), 0, "no request was proxied");
    // And requests are decided by Redis again at once.
    let resp = raw_get(gw.addr, "/", "");
    assert_eq!(raw_status(&resp), 200, "{resp}");
}

#[test]
fn fallback_and_allow_stay_ready_while_redis_is_down() {
    need_redis!();
    let echo = Echo::start();
    for on_error in ["fallback", "allow"] {
        let mut redis = RedisServer::start();
        let gw = Gateway::start(&config(&echo, &redis.url(), on_error));
        assert_eq!(readyz(&gw), 200, "{on_error}");
        redis.kill();
        stays(&gw, 200, Duration::from_secs(2), on_error);
        if on_error == "fallback" {
            // The probe, not a request, noticed: the fallback is armed.
            poll("the fallback to be armed", Duration::from_secs(5))
                .every(Duration::from_millis(50))
                .until(|| gw.metric("rategate_store_fallback_active") == Some(1.0));
            redis.restart();
            poll("back on Redis without a request", Duration::from_secs(8))
                .every(Duration::from_millis(50))
                .until(|| gw.metric("rategate_store_fallback_active") == Some(0.0));
        }
        assert_eq!(echo.count(), 0, "{on_error}: no request was proxied");
    }
}
