//! The real binary against real redis-server processes: shared exact limits across instances,
//! one round trip per request, key hygiene, and calm behaviour when Redis dies, stalls, forgets
//! its scripts or refuses the password.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::redis::{have_redis, RedisCluster, RedisSentinel, RedisServer};
use common::*;

/// A gateway on the Redis store with a short store timeout (for failure tests).
fn gateway_config(echo: &Echo, url: &str, on_error: &str, policies: &str) -> TestConfig {
    gateway_config_timeout(echo, url, on_error, policies, "100ms")
}

/// Exactness tests run hundreds of concurrent requests on a small debug build; a generous store
/// timeout keeps slow answers from turning into on_error answers there.
fn gateway_config_timeout(
    echo: &Echo,
    url: &str,
    on_error: &str,
    policies: &str,
    timeout: &str,
) -> TestConfig {
    config_with(&echo.url(), policies)
        .redis_store(url)
        .set("store.key_prefix", "rgtest:")
        .set("store.timeout", timeout)
        .set("store.on_error", on_error)
}

fn one_policy(algorithm: &str, limit: u64, window: &str) -> String {
    format!(
        r#"
[[policy]]
name = "p"
algorithm = "{algorithm}"
limit = {limit}
window = "{window}"

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["p"]
"#
    )
}

fn header_value(resp: &str, name: &str) -> Option<String> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Fire `per_instance` concurrent requests at each gateway; returns (200s, 429s, others).
fn burst(gateways: &[&Gateway], per_instance: usize) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for status in burst_statuses(gateways, per_instance) {
        match status {
            200 => counts.0 += 1,
            429 => counts.1 += 1,
            other => {
                eprintln!("unexpected status {other}");
                counts.2 += 1
            }
        }
    }
    counts
}

/// Fire `per_instance` concurrent requests at each gateway; returns their statuses (0: failed).
fn burst_statuses(gateways: &[&Gateway], per_instance: usize) -> Vec<u16> {
    install_crypto();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        for gw in gateways {
            for _ in 0..per_instance {
                let client = client.clone();
                let url = gw.url("/x");
                tasks.push(tokio::spawn(async move {
                    match client.get(url).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(e) => {
                            eprintln!("request failed: {e:?}");
                            0
                        }
                    }
                }));
            }
        }
        let mut statuses = Vec::with_capacity(tasks.len());
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        statuses
    })
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
fn three_instances_share_exact_limits_for_every_algorithm() {
    need_redis!();
    let redis = RedisServer::start();
    let echo = Echo::start();
    for algorithm in [
        "fixed_window",
        "sliding_window",
        "sliding_log",
        "token_bucket",
    ] {
        redis.cli(&["FLUSHALL"]);
        let cfg = gateway_config_timeout(
            &echo,
            &redis.url(),
            "deny",
            &one_policy(algorithm, 100, "1h"),
            "5s",
        );
        let a = Gateway::start(&cfg);
        let b = Gateway::start(&cfg);
        let c = Gateway::start(&cfg);
        let before = echo.count();
        let (ok, limited, other) = burst(&[&a, &b, &c], 150);
        assert_eq!((ok, limited, other), (100, 350, 0), "{algorithm}");
        assert_eq!(echo.count() - before, 100, "{algorithm}");
    }
}

/// A gateway for hundreds of concurrent requests: generous store and upstream timeouts (a burst
/// of new connections on a loaded machine can hold the echo upstream past 2 s), on_error deny.
fn burst_config(echo: &Echo, redis: &RedisServer, policies: &str) -> TestConfig {
    gateway_config_timeout(echo, &redis.url(), "deny", policies, "5s")
        .set("upstream.connect_timeout", "5s")
        .set("upstream.timeout", "10s")
}

/// `(check script calls, checks they carried)` as `gw` counts them.
fn check_calls(gw: &Gateway) -> (f64, f64) {
    let calls = gw.metric(r#"rategate_store_calls_total{call="check"}"#);
    let carried = gw.metric("rategate_store_check_batch_size_sum");
    (calls.unwrap(), carried.unwrap())
}

/// Checks of one gateway arriving together share script calls (group commit): the server runs
/// fewer EVALSHA than there are requests, each call carries several checks, and every check is
/// still counted exactly once.
#[test]
fn concurrent_checks_share_script_calls_and_still_count_exactly() {
    need_redis!();
    let redis = RedisServer::start();
    let echo = Echo::start();
    let cfg = burst_config(&echo, &redis, &one_policy("fixed_window", 450, "1h"));
    let gw = Gateway::start(&cfg);
    let before = check_calls(&gw);
    let (evalsha_before, echo_before) = (redis.script_calls(), echo.count());
    // Exactly the limit: all admitted, no rejection (so no activity flush shares the count).
    assert_eq!(burst(&[&gw], 450), (450, 0, 0));
    assert_eq!(echo.count() - echo_before, 450);
    let evalsha = redis.script_calls() - evalsha_before;
    let after = check_calls(&gw);
    let calls = after.0 - before.0;
    assert_eq!(after.1 - before.1, 450.0);
    assert_eq!(
        evalsha as f64, calls,
        "the gateway counts the calls the server ran"
    );
    assert!(
        evalsha < 450,
        "{evalsha} script calls for 450 concurrent checks"
    );
    // Every check was charged once: the 451st request is over the limit.
    assert_eq!(raw_status(&raw_get(gw.addr, "/x", "")), 429);
}

/// A call that times out fails every check it carries: each of its requests gets `on_error`
/// (deny: 503), none is let through.
#[test]
fn a_timed_out_batch_sends_every_request_in_it_to_on_error() {
    need_redis!();
    let redis = RedisServer::start_with(None, &["--enable-debug-command", "yes"]);
    let echo = Echo::start();
    let cfg = gateway_config_timeout(
        &echo,
        &redis.url(),
        "deny",
        &one_policy("fixed_window", 100_000, "1h"),
        "1s",
    );
    let gw = Gateway::start(&cfg);
    assert_eq!(raw_status(&raw_get(gw.addr, "/x", "")), 200);
    let timeouts = || {
        gw.metric(r#"rategate_store_errors_total{kind="timeout",store="redis"}"#)
            .unwrap_or(0.0)
    };
    let (timeouts_before, before) = (timeouts(), check_calls(&gw));
    let port = redis.port;
    let sleeper = std::thread::spawn(move || {
        common::redis::cli(port, None, &["DEBUG", "SLEEP", "4"]);
    });
    std::thread::sleep(Duration::from_millis(100));
    let echo_before = echo.count();
    // The first check's call stalls; the others queue behind it and go as one call, which
    // stalls too.
    let statuses = burst_statuses(&[&gw], 40);
    assert!(statuses.iter().all(|&s| s == 503), "{statuses:?}");
    assert_eq!(echo.count(), echo_before, "a request went through");
    let after = check_calls(&gw);
    let (calls, carried) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(carried, 40.0, "every request's check was sent");
    assert!(calls < carried, "{calls} calls carried {carried} checks");
    assert_eq!(
        timeouts() - timeouts_before,
        40.0,
        "one timeout per request"
    );
    sleeper.join().unwrap();
}

/// A request's own error stays its own: a client whose counter Redis refuses (WRONGTYPE) gets
/// `on_error` while the other client's requests, sharing its script calls, are admitted. (Two
/// failing requests only: three failures in a row would open the breaker for everyone.)
#[test]
fn a_failing_request_fails_alone_in_a_shared_call() {
    need_redis!();
    let redis = RedisServer::start();
    let echo = Echo::start();
    let cfg = burst_config(&echo, &redis, &one_policy("sliding_log", 1000, "1h"))
        .with("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n");
    let gw = Gateway::start(&cfg);
    let (bad, good) = ("10.9.0.1", "10.9.0.2");
    let from = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    assert_eq!(raw_status(&raw_get(gw.addr, "/x", &from(bad))), 200);
    // The bad client's sliding log becomes a string: every command on it answers WRONGTYPE.
    let keys = redis.cli(&["--scan", "--pattern", "rgtest:*10.9.0.1*:c:*"]);
    let key = keys
        .lines()
        .next()
        .expect("the bad client's log")
        .trim()
        .to_string();
    assert_eq!(redis.cli(&["SET", &key, "x"]), "OK");
    let before = check_calls(&gw);
    install_crypto();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let statuses: Vec<(bool, u16)> = rt.block_on(async {
        let client = reqwest::Client::new();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let is_bad = i % 100 == 50;
                let req = client
                    .get(gw.url("/x"))
                    .header("x-forwarded-for", if is_bad { bad } else { good });
                tokio::spawn(async move {
                    (is_bad, req.send().await.map_or(0, |r| r.status().as_u16()))
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for (is_bad, status) in &statuses {
        assert_eq!(*status, if *is_bad { 503 } else { 200 }, "{statuses:?}");
    }
    let after = check_calls(&gw);
    let (calls, carried) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(carried, 200.0);
    assert!(
        calls < carried,
        "{calls} calls carried {carried} checks: none was shared"
    );
}

#[test]
fn one_round_trip_per_request_and_none_for_known_rejections() {
    need_redis!();
    let redis = RedisServer::start();
    let echo = Echo::start();
    let policies = r#"
[[policy]]
name = "a"
algorithm = "sliding_window"
limit = 20
window = "1h"

[[policy]]
name = "b"
algorithm = "token_bucket"
limit = 1000
window = "1h"

[[policy]]
name = "c"
algorithm = "fixed_window"
limit = 1000
window = "1h"

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["a", "b", "c"]
"#;
    let gw = Gateway::start(&gateway_config(&echo, &redis.url(), "deny", policies));
    // Warm up the connection and the script.
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    let before = redis.script_calls();
    for _ in 0..19 {
        assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    }
    assert_eq!(
        redis.script_calls() - before,
        19,
        "one EVALSHA per allowed request"
    );

    // Over the limit now: the first rejection asks Redis, the next ones come from the cache.
    let before = redis.script_calls();
    for _ in 0..100 {
        let resp = raw_get(gw.addr, "/", "");
        assert_eq!(raw_status(&resp), 429);
        assert!(header_value(&resp, "retry-after").is_some());
    }
    let calls = redis.script_calls() - before;
    assert!(calls <= 5, "{calls} round trips for 100 known rejections");
}

/// Redis commands of the data path in an `INFO commandstats` reply (the probe's PINGs, the
/// test's own INFO/CONFIG and connection set-up left out), by command.
fn data_commands(redis: &RedisServer) -> std::collections::BTreeMap<String, u64> {
    const NOT_DATA: [&str; 8] = [
        "function",
        "ping",
        "info",
        "config",
        "client",
        "hello",
        "subscribe",
        "script",
    ];
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| l.split_once(':'))
        .filter(|(cmd, _)| !NOT_DATA.iter().any(|n| cmd.starts_with(n)))
        .filter_map(|(cmd, rest)| {
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((cmd.to_string(), calls.parse().ok()?))
        })
        .collect()
}

#[test]
fn an_allowed_check_is_one_read_and_one_write_per_counter() {
    need_redis!();
    let redis = RedisServer::start();
    let echo = Echo::start();
    let policies = r#"
[[policy]]
name = "a"
algorithm = "sliding_window"
limit = 1000
window = "1h"

[[policy]]
name = "b"
algorithm = "token_bucket"
limit = 1000
window = "1h"

[[policy]]
name = "c"
algorithm = "fixed_window"
limit = 1000
window = "1h"

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["a", "b", "c"]
"#;
    let gw = Gateway::start(&gateway_config(&echo, &redis.url(), "deny", policies));
    // Warm up the connection and the script.
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]), "OK");
    for _ in 0..10 {
        assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    }
    // Per request: the call, the server clock, one read of the block entry and all three
    // counters, and one write (value and TTL) per counter.
    let expected: std::collections::BTreeMap<String, u64> =
        [("fcall", 10), ("time", 10), ("mget", 10), ("set", 30)]
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
    assert_eq!(data_commands(&redis), expected);
}

#[test]
fn a_check_sends_what_varies_and_no_policy_parameters() {
    need_redis!();
    let redis = RedisServer::start();
    let echo = Echo::start();
    let policies = r#"
[[policy]]
name = "a"
algorithm = "sliding_window"
limit = 1000
window = "1h"

[[policy]]
name = "b"
algorithm = "fixed_window"
limit = 1000
window = "1h"
block_for = "1m"

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["a", "b"]
"#;
    let gw = Gateway::start(&gateway_config(&echo, &redis.url(), "deny", policies));
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    // The slow log with a threshold of 0 records every command with its arguments.
    assert_eq!(
        redis.cli(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        "OK"
    );
    assert_eq!(redis.cli(&["SLOWLOG", "RESET"]), "OK");
    for _ in 0..3 {
        assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    }
    let log: serde_json::Value =
        serde_json::from_str(&redis.cli(&["--json", "SLOWLOG", "GET", "100"])).unwrap();
    let calls: Vec<Vec<String>> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            entry[3]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|args| args[0].eq_ignore_ascii_case("fcall"))
        .collect();
    assert_eq!(calls.len(), 3, "{log}");
    for args in &calls {
        // FCALL name numkeys, the block entry and two counters, then the call's clock override
        // and number of requests (one here: the requests came one after the other), and the
        // request's 2 arguments: its cost and its shape (2 policies * 64, + 2: its only group,
        // + 1: it reads the block entry; no lease, request id or revocation entries, so nothing
        // follows).
        assert_eq!(args[2], "3", "{args:?}");
        assert_eq!(args[7], "1", "{args:?}");
        assert_eq!(args.len(), 3 + 3 + 2 + 2, "{args:?}");
        assert_eq!(args[8..], ["1", "131"], "{args:?}");
    }
}

#[test]
fn every_key_has_the_prefix_the_tag_and_a_ttl() {
    need_redis!();
    let redis = RedisServer::start();
    let echo = Echo::start();
    let policies = r#"
[[policy]]
name = "log"
algorithm = "sliding_log"
limit = 3
window = "1h"
block_for = "1h"

[[policy]]
name = "bucket"
algorithm = "token_bucket"
limit = 10
window = "1m"
key = ["header:x-api-key", "path"]

[[policy]]
name = "win"
algorithm = "sliding_window"
limit = 100
window = "10m"
key = ["global"]

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["log", "bucket", "win"]
"#;
    let gw = Gateway::start(&gateway_config(&echo, &redis.url(), "deny", policies));
    for i in 0..5 {
        // Hostile key material: braces and separators must not form a hash tag or a new key.
        let extra = format!("X-Api-Key: {{evil}}|{i}\r\n");
        let _ = raw_get(gw.addr, &format!("/p{{x}}{i}"), &extra);
    }
    let keys = redis.cli(&["--scan"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert!(keys.len() >= 4, "{keys:?}");
    for key in &keys {
        assert!(key.starts_with("rgtest:{"), "{key}");
        assert_eq!(
            (key.matches('{').count(), key.matches('}').count()),
            (1, 1),
            "client bytes formed a tag: {key}"
        );
        // -2: gone since the scan (expired, so it had a TTL); -1: no TTL.
        let ttl: i64 = redis.cli(&["PTTL", key]).parse().unwrap();
        assert!(ttl > 0 || ttl == -2, "{key} has no TTL ({ttl})");
    }
    // Each key's tag is the identity it counts: the client for `log` (and its block), the
    // counter key itself for the others.
    let tag = |key: &str| key[key.find('{').unwrap()..=key.find('}').unwrap()].to_string();
    let tags: std::collections::HashSet<String> = keys.iter().map(|k| tag(k)).collect();
    assert!(tags.contains("{i:127.0.0.1}"), "{keys:?}");
    assert!(tags.contains("{win|g}"), "{keys:?}");
    assert!(
        tags.iter()
            .any(|t| t.starts_with("{bucket|h:%7Bevil%7D%7C")),
        "{keys:?}"
    );
}

/// Keep sending requests from a thread until told to stop; collect statuses.
struct Load {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<u16>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                statuses.push(raw_status(&raw_get(addr, "/", "")));
                std::thread::sleep(Duration::from_millis(5));
            }
            statuses
        });
        Load { stop, handle }
    }

    fn finish(self) -> Vec<u16> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Pause between the requests of a wait that drives the gateway with traffic.
const REQUEST_PACE: Duration = Duration::from_millis(50);

#[test]
fn redis_killed_and_restarted_under_load_for_each_on_error() {
    need_redis!();
    let echo = Echo::start();
    for (on_error, expected) in [("fallback", 200u16), ("allow", 200), ("deny", 503)] {
        let mut redis = RedisServer::start();
        let gw = Gateway::start(&gateway_config(
            &echo,
            &redis.url(),
            on_error,
            &one_policy("fixed_window", 100_000, "1h"),
        ));
        assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
        let load = Load::start(gw.addr);
        std::thread::sleep(Duration::from_millis(200));
        redis.kill();
        std::thread::sleep(Duration::from_millis(800));
        // While Redis is down every request still gets an answer, as on_error says.
        let resp = raw_get(gw.addr, "/", "");
        assert_eq!(raw_status(&resp), expected, "{on_error}: {resp}");
        match on_error {
            "fallback" => {
                assert!(header_value(&resp, "x-ratelimit-limit").is_some());
                assert_eq!(metric(&gw, "rategate_store_fallback_active"), Some(1.0));
            }
            "allow" => assert_eq!(header_value(&resp, "x-ratelimit-limit"), None),
            _ => {
                assert!(header_value(&resp, "retry-after").is_some());
                assert!(resp.contains("\"error\":\"unavailable\""));
            }
        }
        redis.restart();
        // Back on Redis by itself within seconds.
        poll("the gateway to use Redis again", Duration::from_secs(10))
            .every(REQUEST_PACE)
            .until(|| {
                let _ = raw_get(gw.addr, "/", "");
                redis.script_calls()
                    + common::redis::command_calls(&redis.cli(&["INFO", "commandstats"]), "eval")
                    > 0
            });
        let statuses = load.finish();
        assert!(
            statuses.iter().all(|s| *s != 0),
            "{on_error}: a request got no answer"
        );
        let unexpected: Vec<_> = statuses
            .iter()
            .filter(|s| **s != 200 && **s != expected)
            .collect();
        assert!(unexpected.is_empty(), "{on_error}: {unexpected:?}");
        if on_error == "fallback" {
            // The breaker closes on the first request Redis answers.
            poll("fallback gauge to drop", Duration::from_secs(10))
                .every(REQUEST_PACE)
                .until(|| {
                    let _ = raw_get(gw.addr, "/", "");
                    metric(&gw, "rategate_store_fallback_active") == Some(0.0)
                });
        }
    }
}

#[test]
fn gateway_starts_while_redis_is_down_and_picks_it_up() {
    need_redis!();
    let echo = Echo::start();
    let port = common::redis::free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let gw = Gateway::start(&gateway_config(
        &echo,
        &url,
        "fallback",
        &one_policy("fixed_window", 1000, "1h"),
    ));
    let resp = raw_get(gw.addr, "/", "");
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(header_value(&resp, "x-ratelimit-remaining").is_some());
    let redis = RedisServer::start_on(port);
    poll("the gateway to reach Redis", Duration::from_secs(15))
        .every(REQUEST_PACE)
        .until(|| {
            let _ = raw_get(gw.addr, "/", "");
            redis.cli(&["--scan"]).contains("rgtest:")
        });
}

#[test]
fn script_flush_under_load_is_invisible_to_clients() {
    flush_under_load_is_invisible_to_clients(&["SCRIPT", "FLUSH"]);
}

/// The checks run as a Redis function: one flushed under load is loaded again at once.
#[test]
fn function_flush_under_load_is_invisible_to_clients() {
    flush_under_load_is_invisible_to_clients(&["FUNCTION", "FLUSH"]);
}

fn flush_under_load_is_invisible_to_clients(flush: &[&str]) {
    need_redis!();
    let redis = RedisServer::start();
    let echo = Echo::start();
    // A generous store timeout: what is tested is the NOSCRIPT recovery, and on a loaded machine
    // a 100 ms timeout under this load turns slow answers into deny (503) on its own.
    let gw = Gateway::start(&gateway_config_timeout(
        &echo,
        &redis.url(),
        "deny",
        &one_policy("sliding_log", 100_000, "1h"),
        "2s",
    ));
    let load = Load::start(gw.addr);
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(redis.cli(flush), "OK");
    }
    std::thread::sleep(Duration::from_millis(100));
    let statuses = load.finish();
    assert!(statuses.len() > 20);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // The function is back after the last flush, and runs the checks.
    poll(
        "the check function to be loaded again",
        Duration::from_secs(10),
    )
    .every(REQUEST_PACE)
    .until(|| {
        let _ = raw_get(gw.addr, "/", "");
        redis.cli(&["FUNCTION", "LIST"]).contains("rategate_")
    });
    let ran = redis.fcall_calls();
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    assert!(redis.fcall_calls() > ran);
    // Every admitted request was counted in Redis despite the flushes.
    let log_len: usize = redis
        .cli(&["--scan"])
        .lines()
        .filter(|k| k.contains(":c:"))
        .map(|k| redis.cli(&["ZCARD", k]).parse::<usize>().unwrap_or(0))
        .sum();
    assert_eq!(log_len, echo.count());
}

#[test]
fn stalled_redis_never_holds_requests_past_the_store_timeout() {
    need_redis!();
    let redis = RedisServer::start_with(None, &["--enable-debug-command", "yes"]);
    let echo = Echo::start();
    let gw = Gateway::start(&gateway_config(
        &echo,
        &redis.url(),
        "fallback",
        &one_policy("fixed_window", 100_000, "1h"),
    ));
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    let port = redis.port;
    let sleeper = std::thread::spawn(move || {
        common::redis::cli(port, None, &["DEBUG", "SLEEP", "3"]);
    });
    std::thread::sleep(Duration::from_millis(100));
    // During the stall every request is answered by the fallback: all 20 complete while the
    // 3 s DEBUG SLEEP is still running, so none of them waited on Redis.
    for _ in 0..20 {
        let resp = raw_get(gw.addr, "/", "");
        assert_eq!(raw_status(&resp), 200, "{resp}");
    }
    assert!(
        !sleeper.is_finished(),
        "requests only completed after Redis woke up"
    );
    sleeper.join().unwrap();
    let before = redis.script_calls();
    poll("Redis to be used again", Duration::from_secs(10))
        .every(REQUEST_PACE)
        .until(|| {
            let _ = raw_get(gw.addr, "/", "");
            redis.script_calls() > before
        });
}

#[test]
fn wrong_password_is_a_clear_error_and_on_error_applies() {
    need_redis!();
    let redis = RedisServer::start_with(Some("right-password"), &[]);
    let echo = Echo::start();
    let url = format!("redis://:wrong-password@127.0.0.1:{}/0", redis.port);
    let gw = Gateway::start(&gateway_config(
        &echo,
        &url,
        "deny",
        &one_policy("fixed_window", 10, "1h"),
    ));
    let resp = raw_get(gw.addr, "/", "");
    assert_eq!(raw_status(&resp), 503, "{resp}");
    std::thread::sleep(Duration::from_millis(500));
    let logs = gw.logs().to_lowercase();
    assert!(
        logs.contains("wrongpass") || logs.contains("auth"),
        "no clear auth error in logs:\n{logs}"
    );
    assert!(
        !logs.contains("wrong-password"),
        "the password leaked into logs"
    );

    // With the right password it works.
    let good = Gateway::start(&gateway_config(
        &echo,
        &redis.url(),
        "deny",
        &one_policy("fixed_window", 10, "1h"),
    ));
    poll("auth'd gateway to answer 200", Duration::from_secs(5))
        .every(REQUEST_PACE)
        .until(|| raw_status(&raw_get(good.addr, "/", "")) == 200);
}

#[test]
fn cluster_shares_exact_limits_with_one_round_trip() {
    need_redis!();
    let cluster = RedisCluster::start();
    let echo = Echo::start();
    let cfg = gateway_config_timeout(
        &echo,
        &cluster.url(),
        "deny",
        &one_policy("sliding_window", 60, "1h"),
        "5s",
    );
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    poll("cluster connection", Duration::from_secs(10))
        .every(REQUEST_PACE)
        .until(|| {
            raw_status(&raw_get(a.addr, "/warm", "X-Forwarded-For: 1.1.1.1\r\n")) == 200
                && raw_status(&raw_get(b.addr, "/warm", "")) == 200
        });
    // Check calls as the gateways count them: the cluster's EVALSHA count also holds the
    // background activity flushes (one per 100 ms at most while rejections are recorded).
    let sum = |series: &str| {
        [&a, &b]
            .iter()
            .map(|g| g.metric(series).unwrap_or(0.0))
            .sum::<f64>()
    };
    let check_calls = || sum(r#"rategate_store_calls_total{call="check"}"#);
    // The checks those calls carried (concurrent checks of one slot share a call).
    let carried = || sum("rategate_store_check_batch_size_sum");
    let (calls_before, carried_before) = (check_calls(), carried());
    let (ok, limited, other) = burst(&[&a, &b], 100);
    // Two requests were spent warming up.
    assert_eq!((ok, limited, other), (58, 142, 0));
    let calls = check_calls() - calls_before;
    let carried = carried() - carried_before;
    assert!(carried <= 200.0, "{carried} checks sent for 200 requests");
    assert!(carried >= 58.0, "{carried} checks sent for 58 admissions");
    assert!(
        calls <= carried,
        "{calls} check calls carried {carried} checks"
    );
}

#[test]
fn sentinel_url_finds_the_master() {
    need_redis!();
    let sentinel = RedisSentinel::start();
    let echo = Echo::start();
    let gw = Gateway::start(&gateway_config(
        &echo,
        &sentinel.url(),
        "deny",
        &one_policy("fixed_window", 3, "1h"),
    ));
    poll("sentinel connection", Duration::from_secs(10))
        .every(REQUEST_PACE)
        .until(|| raw_status(&raw_get(gw.addr, "/", "")) == 200);
    let counted = AtomicUsize::new(1);
    while raw_status(&raw_get(gw.addr, "/", "")) == 200 {
        counted.fetch_add(1, Ordering::SeqCst);
        assert!(counted.load(Ordering::SeqCst) <= 3);
    }
    assert_eq!(counted.load(Ordering::SeqCst), 3);
    assert!(sentinel.master.script_calls() >= 3);
}

#[test]
fn rediss_url_speaks_tls_to_redis() {
    need_redis!();
    // A private CA, trusted through SSL_CERT_FILE like any system trust store addition.
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = rcgen::KeyPair::generate().unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path, ca_path) = (
        dir.path().join("redis.crt"),
        dir.path().join("redis.key"),
        dir.path().join("ca.crt"),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let redis = RedisServer::start_tls(&cert_path, &key_path, &ca_path);

    let echo = Echo::start();
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let cfg = gateway_config(&echo, &url, "deny", &one_policy("fixed_window", 2, "1h"));
    let gw = Gateway::builder(&cfg)
        .env("SSL_CERT_FILE", ca_path.to_str().unwrap())
        .start();
    poll("TLS connection to Redis", Duration::from_secs(10))
        .every(REQUEST_PACE)
        .until(|| raw_status(&raw_get(gw.addr, "/", "")) == 200);
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 429);
}

/// A Redis that cannot run functions (before 7.0: FCALL is an unknown command; or an ACL from
/// before they were used, without FCALL and FUNCTION LOAD) gets the checks as scripts: limits
/// exact, one warning, and no check call lost but the first.
#[test]
fn checks_fall_back_to_scripts_where_redis_cannot_run_functions() {
    need_redis!();
    let dir = tempfile::tempdir().unwrap();
    let acl = std::fs::read_to_string("deploy/redis/users.acl")
        .unwrap()
        .replace(
            &"0".repeat(64),
            "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
        )
        .replace(" +fcall +function|load", "");
    assert!(!acl.contains("fcall"));
    let acl_path = dir.path().join("users.acl");
    std::fs::write(&acl_path, acl).unwrap();
    let no_fcall = RedisServer::start_with(None, &["--rename-command", "FCALL", ""]);
    let old_acl = RedisServer::start_with(
        Some("rategate:password"),
        &["--aclfile", acl_path.to_str().unwrap()],
    );
    let echo = Echo::start();
    for (redis, url) in [
        (&no_fcall, no_fcall.url()),
        (
            &old_acl,
            format!("redis://rategate:password@127.0.0.1:{}/0", old_acl.port),
        ),
    ] {
        let cfg = gateway_config(&echo, &url, "deny", &one_policy("fixed_window", 5, "1h"))
            .set("store.key_prefix", "rategate:");
        let gw = Gateway::start(&cfg);
        let statuses: Vec<u16> = (0..7)
            .map(|_| raw_status(&raw_get(gw.addr, "/", "")))
            .collect();
        assert_eq!(
            statuses,
            [200, 200, 200, 200, 200, 429, 429],
            "{}",
            gw.logs()
        );
        let warned = || {
            gw.logs()
                .matches("cannot run the check as a function")
                .count()
        };
        poll("the fallback's warning", Duration::from_secs(5)).until(|| warned() > 0);
        assert_eq!(warned(), 1, "{}", gw.logs());
        // The 7th may be answered from the instance's cache of rejections.
        assert!(redis.script_calls() >= 6);
    }
}

/// Redis out of memory refuses a function that may write before it runs, where a script is
/// refused only at its first write: a request over its limit, which writes nothing, is still
/// answered 429 by Redis (the call goes as the script), not `on_error`.
#[test]
fn a_redis_out_of_memory_still_rejects_requests_over_their_limit() {
    need_redis!();
    let redis = RedisServer::start();
    let echo = Echo::start();
    let cfg = gateway_config(
        &echo,
        &redis.url(),
        "deny",
        &one_policy("fixed_window", 2, "1h"),
    );
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    assert_eq!(raw_status(&raw_get(a.addr, "/", "")), 200);
    assert_eq!(raw_status(&raw_get(a.addr, "/", "")), 200);
    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory", "1"]), "OK");
    // `b` never saw the client: its answer comes from Redis.
    let resp = raw_get(b.addr, "/", "");
    assert_eq!(raw_status(&resp), 429, "{resp}\n{}", b.logs());
    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
}

/// Redis keeps function libraries for good, and every configuration version's policy sets add
/// theirs: an instance that loads one on a node holding more than 1,024 check libraries deletes
/// those it does not use down to 512, keeping its own; requests are served throughout.
#[test]
fn check_libraries_beyond_the_bound_are_pruned() {
    need_redis!();
    let redis = RedisServer::start();
    // 1,100 libraries of earlier configurations, loaded through one redis-cli.
    let loads: String = (0..1100)
        .map(|i| {
            format!(
                "FUNCTION LOAD \"#!lua name=rategate_old{i}\\nredis.register_function('rategate_old{i}', function() return {i} end)\"\n"
            )
        })
        .collect();
    use std::io::Write as _;
    let mut cli = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    cli.stdin
        .take()
        .unwrap()
        .write_all(loads.as_bytes())
        .unwrap();
    assert!(cli.wait().unwrap().success());
    let libraries = || {
        redis
            .cli(&["FUNCTION", "LIST", "LIBRARYNAME", "rategate_*"])
            .lines()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "library_name" && w[1].starts_with("rategate_"))
            .count()
    };
    assert_eq!(libraries(), 1100);
    let echo = Echo::start();
    let gw = Gateway::start(&gateway_config(
        &echo,
        &redis.url(),
        "deny",
        &one_policy("fixed_window", 1000, "1h"),
    ));
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    poll("the libraries to be pruned", Duration::from_secs(20))
        .showing(|| gw.logs())
        .until(|| libraries() <= 512);
    assert!(libraries() >= 400, "pruned far past the bound");
    // The instance's own library stayed: its checks still run as the function.
    let ran = redis.fcall_calls();
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    assert_eq!(redis.fcall_calls(), ran + 1);
}

/// The shipped ACL (deploy/redis/users.acl) allows everything the gateway does.
#[test]
fn gateway_works_under_the_shipped_redis_acl() {
    need_redis!();
    let dir = tempfile::tempdir().unwrap();
    let acl = std::fs::read_to_string("deploy/redis/users.acl").unwrap();
    // The shipped file has placeholder password hashes; give the rategate user a real one.
    let hash = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"; // "password"
    let acl = acl.replace(&"0".repeat(64), hash);
    let acl_path = dir.path().join("users.acl");
    std::fs::write(&acl_path, acl).unwrap();
    let redis = RedisServer::start_with(
        Some("rategate:password"),
        &["--aclfile", acl_path.to_str().unwrap()],
    );
    let echo = Echo::start();
    let url = format!("redis://rategate:password@127.0.0.1:{}/0", redis.port);
    let policies = r#"
[[policy]]
name = "log"
algorithm = "sliding_log"
limit = 2
window = "1h"
block_for = "1h"

[[policy]]
name = "win"
algorithm = "sliding_window"
limit = 100
window = "1h"

[[policy]]
name = "bucket"
algorithm = "token_bucket"
limit = 100
window = "1h"

[[policy]]
name = "fixed"
algorithm = "fixed_window"
limit = 100
window = "1h"

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["log", "win", "bucket", "fixed"]
"#;
    let cfg = gateway_config(&echo, &url, "deny", policies).set("store.key_prefix", "rategate:");
    let gw = Gateway::start(&cfg);
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200, "{}", gw.logs());
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    let resp = raw_get(gw.addr, "/", "X-Forwarded-For: 1.2.3.4\r\n");
    assert_eq!(raw_status(&resp), 429, "{resp}");
    // The rejection started a block, recorded in Redis under the ACL.
    let resp = raw_get(gw.addr, "/other", "");
    assert!(resp.contains("\"error\":\"blocked\""), "{resp}");
    let logs = gw.logs().to_lowercase();
    assert!(!logs.contains("noperm"), "{logs}");
}

#[test]
fn a_client_the_fallback_blocked_stays_blocked_on_routes_without_policies() {
    need_redis!();
    let echo = Echo::start();
    // Redis never answers: every decision is the fallback's.
    let url = format!("redis://127.0.0.1:{}/0", common::redis::free_port());
    let gw = Gateway::start(&gateway_config(
        &echo,
        &url,
        "fallback",
        r#"
[[policy]]
name = "login"
algorithm = "fixed_window"
limit = 1
window = "1h"
block_for = "1h"

[[route]]
name = "login"
path_prefix = "/login"
upstream = "api"
policies = ["login"]

[[route]]
name = "open"
path_prefix = "/open"
upstream = "api"
"#,
    ));
    assert_eq!(raw_status(&raw_get(gw.addr, "/open", "")), 200);
    assert_eq!(raw_status(&raw_get(gw.addr, "/login", "")), 200);
    assert_eq!(raw_status(&raw_get(gw.addr, "/login", "")), 429);
    // Blocked from every route, the unlimited one included, while Redis is away.
    let resp = raw_get(gw.addr, "/open", "");
    assert_eq!(raw_status(&resp), 429, "{resp}");
    assert!(resp.contains("blocked"), "{resp}");
}

/// Every concurrency counter under the test prefix and how many leases it holds.
fn leases_held(redis: &RedisServer) -> Vec<(String, usize)> {
    redis
        .cli(&["--scan", "--pattern", "rgtest:*:c:*"])
        .lines()
        .map(|k| {
            let n = redis
                .cli(&["ZCARD", k])
                .trim()
                .parse()
                .unwrap_or(usize::MAX);
            (k.to_string(), n)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn a_check_that_timed_out_leaves_no_lease_behind_when_redis_wakes() {
    need_redis!();
    let echo = Echo::start();
    for on_error in ["deny", "fallback"] {
        let redis = RedisServer::start();
        let gw = Gateway::start(&gateway_config_timeout(
            &echo,
            &redis.url(),
            on_error,
            r#"
[[policy]]
name = "one"
algorithm = "concurrency"
limit = 1
lease = "60s"
key = ["header:x-api-key"]

[[route]]
name = "r"
path_prefix = "/"
upstream = "api"
policies = ["one"]
"#,
            "250ms",
        ));
        let key = |k: &str| format!("X-Api-Key: {k}\r\n");
        // Connected, script loaded, and the slot of a finished request is free again.
        poll("the gateway to use Redis", Duration::from_secs(10))
            .every(REQUEST_PACE)
            .until(|| {
                raw_status(&raw_get(gw.addr, "/", &key("warm"))) == 200 && redis.script_calls() > 0
            });
        assert_eq!(raw_status(&raw_get(gw.addr, "/", &key("a"))), 200);
        assert_eq!(leases_held(&redis), vec![], "{on_error}");

        // Redis stalls with the check already sent: the gateway answers per on_error at the
        // store timeout, and Redis runs the check (taking the slot) when it wakes.
        redis.pause();
        let resp = raw_get(gw.addr, "/", &key("a"));
        redis.resume();
        let expected = if on_error == "deny" { 503 } else { 200 };
        assert_eq!(raw_status(&resp), expected, "{on_error}: {resp}");

        // The slot the timed-out check may have taken is given back: the key is served again
        // (without the fix it stays refused for the whole 60 s lease), and no lease is left.
        poll(
            format!("{on_error}: key a to be admitted again"),
            Duration::from_secs(15),
        )
        .every(REQUEST_PACE)
        .until(|| raw_status(&raw_get(gw.addr, "/", &key("a"))) == 200);
        poll(
            format!("{on_error}: no lease left in Redis"),
            Duration::from_secs(10),
        )
        .every(REQUEST_PACE)
        .until(|| leases_held(&redis).is_empty());
    }
}

/// Rejections are recorded off the request path and flushed to Redis in batches; a rejection
/// answered just before SIGTERM still reaches the shared events list before the process exits.
#[test]
fn a_rejection_just_before_shutdown_is_recorded_in_redis() {
    need_redis!();
    let redis = RedisServer::start();
    let echo = Echo::start();
    let mut gw = Gateway::start(&gateway_config_timeout(
        &echo,
        &redis.url(),
        "deny",
        &one_policy("fixed_window", 1, "1h"),
        "2s",
    ));
    poll("gateway on Redis to answer", Duration::from_secs(10))
        .every(REQUEST_PACE)
        .until(|| raw_status(&raw_get(gw.addr, "/", "")) != 503);
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 429);
    gw.signal("TERM");
    assert_eq!(
        gw.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        gw.logs()
    );
    let events = redis.cli(&["LRANGE", "rgtest:{rg}:events", "0", "-1"]);
    assert!(
        events.contains("limited"),
        "events in Redis: {events:?}\n{}",
        gw.logs()
    );
}
