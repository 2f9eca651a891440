//! The Redis store on a 3-master Redis Cluster through the real binary: keys sharded by the
//! identity they count, exact limits across instances, cross-slot requests (a client's counter
//! next to a global one) admitted and refunded exactly, and the load spread over every master.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::redis::{command_calls, failed_calls, have_redis, RedisCluster};
use common::*;

macro_rules! need_redis {
    () => {
        if !have_redis() {
            eprintln!("SKIP: redis-server not installed");
            return;
        }
    };
}

/// A gateway on the cluster that takes the client from X-Forwarded-For (sent by the test from
/// 127.0.0.1), with a store timeout generous enough for a loaded debug build.
fn cluster_config(echo: &Echo, cluster: &RedisCluster, policies: &str) -> TestConfig {
    config_with(&echo.url(), policies)
        .with("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n")
        .redis_store(&cluster.url())
        .set("store.key_prefix", "rgc:")
        .set("store.timeout", "5s")
        .set("store.on_error", "deny")
        // A thousand requests at once on a loaded 2-core machine: the upstream's connections
        // take their time, and an upstream timeout is not what these tests are about.
        .set("upstream.connect_timeout", "10s")
        .set("upstream.timeout", "20s")
}

/// Send every `(gateway, client)` request at once; returns the status of each, in order.
fn burst(requests: &[(&Gateway, String)]) -> Vec<u16> {
    install_crypto();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let tasks: Vec<_> = requests
            .iter()
            .map(|(gw, ip)| {
                let req = client
                    .get(gw.url("/x"))
                    .header("x-forwarded-for", ip.as_str());
                tokio::spawn(async move { req.send().await.map_or(0, |r| r.status().as_u16()) })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

/// Wait until `gw` answers through the cluster (the first calls load the scripts).
fn warm(gw: &Gateway, ip: &str) {
    let header = format!("X-Forwarded-For: {ip}\r\n");
    poll("cluster connection", Duration::from_secs(15))
        .every(Duration::from_millis(50))
        .until(|| raw_status(&raw_get(gw.addr, "/warm", &header)) == 200);
}

/// Every key on every master has the prefix, a hash tag and a TTL.
fn assert_every_key_has_a_ttl(cluster: &RedisCluster) {
    for node in &cluster.nodes {
        for key in node.cli(&["--scan"]).lines() {
            assert!(key.starts_with("rgc:{"), "{key}");
            // -2: gone since the scan (expired, so it had a TTL); -1: no TTL.
            let ttl: i64 = node.cli(&["PTTL", key]).parse().unwrap();
            assert!(ttl > 0 || ttl == -2, "{key} has no TTL ({ttl})");
        }
    }
}

#[test]
fn three_instances_admit_exactly_the_limit_for_every_algorithm() {
    need_redis!();
    let cluster = RedisCluster::start();
    let echo = Echo::start();
    for algorithm in [
        "fixed_window",
        "sliding_window",
        "sliding_log",
        "token_bucket",
    ] {
        let policies = format!(
            r#"
[[policy]]
name = "p_{algorithm}"
algorithm = "{algorithm}"
limit = 100
window = "1h"

[[route]]
name = "r"
path_prefix = "/x"
upstream = "api"
policies = ["p_{algorithm}"]

[[route]]
name = "warm"
path_prefix = "/warm"
upstream = "api"
"#
        );
        let cfg = cluster_config(&echo, &cluster, &policies);
        let gws = [
            Gateway::start(&cfg),
            Gateway::start(&cfg),
            Gateway::start(&cfg),
        ];
        for gw in &gws {
            warm(gw, "10.0.0.1");
        }
        let before = echo.count();
        let requests: Vec<(&Gateway, String)> = (0..450)
            .map(|i| (&gws[i % 3], "10.0.0.1".to_string()))
            .collect();
        let statuses = burst(&requests);
        let ok = statuses.iter().filter(|&&s| s == 200).count();
        let limited = statuses.iter().filter(|&&s| s == 429).count();
        assert_eq!((ok, limited), (100, 350), "{algorithm}");
        assert_eq!(echo.count() - before, 100, "{algorithm}");
    }
    assert_every_key_has_a_ttl(&cluster);
}

const MIXED: &str = r#"
[[policy]]
name = "per_ip"
algorithm = "fixed_window"
limit = 5
window = "1h"

[[policy]]
name = "all"
algorithm = "fixed_window"
limit = 40
window = "1h"
key = ["global"]

[[route]]
name = "r"
path_prefix = "/x"
upstream = "api"
policies = ["per_ip", "all"]

[[route]]
name = "warm"
path_prefix = "/warm"
upstream = "api"
"#;

/// The per-IP counter of `ip` as Redis holds it (0 when absent).
fn per_ip_count(cluster: &RedisCluster, ip: &str) -> u64 {
    // A fixed window is the string "<window start>:<count>".
    let key = format!("rgc:{{i:{ip}}}:v:f5.3600000.5:per_ip|i:{ip}");
    let value = cluster.cli(&["GET", &key]);
    value
        .trim()
        .split_once(':')
        .and_then(|(_, count)| count.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_route_mixing_ip_and_global_admits_exactly_both_limits_and_refunds_rejections() {
    need_redis!();
    let cluster = RedisCluster::start();
    let echo = Echo::start();
    let cfg = cluster_config(&echo, &cluster, MIXED);
    let gws = [
        Gateway::start(&cfg),
        Gateway::start(&cfg),
        Gateway::start(&cfg),
    ];
    for gw in &gws {
        warm(gw, "10.0.0.1");
    }
    let statuses_by_ip = |statuses: &[u16], ips: &[String], per_ip: usize| -> Vec<usize> {
        (0..ips.len())
            .map(|k| {
                statuses[k * per_ip..(k + 1) * per_ip]
                    .iter()
                    .filter(|&&s| s == 200)
                    .count()
            })
            .collect()
    };

    // Three clients, 10 requests each over three instances: the global limit (40) cannot be
    // reached even while refunds are pending (30 requests), so each client gets exactly its 5.
    let ips: Vec<String> = (1..=3).map(|k| format!("10.1.0.{k}")).collect();
    let requests: Vec<(&Gateway, String)> = ips
        .iter()
        .flat_map(|ip| (0..10).map(move |i| (i, ip.clone())))
        .map(|(i, ip)| (&gws[i % 3], ip))
        .collect();
    let statuses = burst(&requests);
    assert_eq!(statuses_by_ip(&statuses, &ips, 10), vec![5, 5, 5]);
    for ip in &ips {
        assert_eq!(per_ip_count(&cluster, ip), 5, "{ip}");
    }

    // Twelve more clients, 5 requests each (their own limit never rejects): exactly the 25 left
    // of the global limit are admitted, and every request the global limit rejected was
    // refunded to its client's counter, which holds exactly its client's admitted requests.
    let more: Vec<String> = (1..=12).map(|k| format!("10.2.0.{k}")).collect();
    let requests: Vec<(&Gateway, String)> = more
        .iter()
        .flat_map(|ip| (0..5).map(move |i| (i, ip.clone())))
        .map(|(i, ip)| (&gws[i % 3], ip))
        .collect();
    let statuses = burst(&requests);
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    let admitted = statuses_by_ip(&statuses, &more, 5);
    assert_eq!(admitted.iter().sum::<usize>(), 25, "{admitted:?}");
    assert!(admitted.iter().any(|&n| n < 5), "{admitted:?}");
    for (ip, &n) in more.iter().zip(&admitted) {
        assert_eq!(
            per_ip_count(&cluster, ip),
            n as u64,
            "{ip} kept a refused charge"
        );
    }

    // The global limit is spent: a new client is rejected by it and its own counter is
    // unchanged afterwards (the charge of its group was refunded).
    let fresh = "10.3.0.1";
    let header = format!("X-Forwarded-For: {fresh}\r\n");
    assert_eq!(raw_status(&raw_get(gws[0].addr, "/x", &header)), 429);
    assert_eq!(per_ip_count(&cluster, fresh), 0);
    assert_every_key_has_a_ttl(&cluster);
}

#[test]
fn a_thousand_clients_spread_the_checks_over_every_master() {
    need_redis!();
    let cluster = RedisCluster::start();
    let echo = Echo::start();
    let policies = r#"
[[policy]]
name = "per_ip"
algorithm = "sliding_window"
limit = 100
window = "1m"

[[route]]
name = "r"
path_prefix = "/x"
upstream = "api"
policies = ["per_ip"]

[[route]]
name = "warm"
path_prefix = "/warm"
upstream = "api"
"#;
    let gw = Gateway::start(&cluster_config(&echo, &cluster, policies));
    warm(&gw, "10.0.0.1");
    // Every master has the script loaded once a request reached it: warm each up.
    for node in &cluster.nodes {
        node.cli(&["CONFIG", "RESETSTAT"]);
    }
    let calls_before = gw.metric("rategate_store_calls_total{call=\"check\"}");
    let carried_before = gw.metric("rategate_store_check_batch_size_sum");
    let requests: Vec<(&Gateway, String)> = (0..1000)
        .map(|i| {
            (
                &gw,
                format!("10.{}.{}.{}", 4 + i / 65536, (i / 256) % 256, i % 256),
            )
        })
        .collect();
    let statuses = burst(&requests);
    let refused: Vec<u16> = statuses.iter().copied().filter(|&s| s != 200).collect();
    assert!(refused.is_empty(), "some were not admitted: {refused:?}");
    // Each check ran on the master owning its client's slot and wrote its client's counter
    // there: the counters per master are the checks per master.
    let checks: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["--scan", "--pattern", "*{i:10.4.*"])
                .lines()
                .filter(|l| !l.is_empty())
                .count() as u64
        })
        .collect();
    let total: u64 = checks.iter().sum();
    assert_eq!(total, 1000, "{checks:?}");
    for (i, &c) in checks.iter().enumerate() {
        let share = c as f64 / total as f64;
        assert!(
            (0.26..=0.40).contains(&share),
            "master {i} served {c} of {total} checks ({checks:?})"
        );
    }
    // Script runs: an FCALL (a failed one: the master lacked the function, loaded and called
    // again), or an EVALSHA / EVAL where a script is sent instead. Each carries the checks of one slot, so 1,000 clients make at
    // most 1,000 (fewer when two clients of one slot were checked at once), exactly the calls
    // the gateway counted, carrying exactly the 1,000 checks (every policy keyed by the client:
    // one check per request).
    let runs: u64 = cluster
        .nodes
        .iter()
        .map(|n| {
            let info = n.cli(&["INFO", "commandstats"]);
            command_calls(&info, "fcall") - failed_calls(&info, "fcall")
                + command_calls(&info, "evalsha")
                - failed_calls(&info, "evalsha")
                + command_calls(&info, "eval")
        })
        .sum();
    assert!((1..=1000).contains(&runs), "{runs}");
    let delta = |after: Option<f64>, before: Option<f64>| after.unwrap() - before.unwrap();
    assert_eq!(
        delta(
            gw.metric("rategate_store_calls_total{call=\"check\"}"),
            calls_before
        ),
        runs as f64
    );
    assert_eq!(
        delta(
            gw.metric("rategate_store_check_batch_size_sum"),
            carried_before
        ),
        1000.0
    );
    assert_every_key_has_a_ttl(&cluster);
}
