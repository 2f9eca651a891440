//! /metrics, black-box: exact values after a known sequence of requests, and no new series from a
//! flood of random paths, addresses and headers.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
shutdown_grace = "5s"

[admin]
listen = "127.0.0.1:0"

[access]
deny = ["198.18.0.0/15"]

[[policy]]
name = "two"
algorithm = "fixed_window"
limit = 2
# An hour, not a minute: the windows are aligned to the clock, and a minute boundary falling
# between the requests of the sequence below made this test flaky.
window = "1h"

[[policy]]
name = "watch"
algorithm = "fixed_window"
limit = 1
window = "1h"
mode = "shadow"

[[policy]]
name = "keyed"
algorithm = "token_bucket"
limit = 1000
window = "60s"
key = ["header:x-api-key", "path"]

[[route]]
name = "api"
path_prefix = "/api"
policies = ["two"]
respond = { status = 200 }

[[route]]
name = "shadowed"
path_prefix = "/shadow"
policies = ["watch"]
respond = { status = 200 }

[[route]]
name = "flood"
path_prefix = "/flood"
policies = ["keyed"]
respond = { status = 200 }
"#;

fn metrics_text(gw: &Gateway) -> String {
    client()
        .get(gw.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

fn hit(gw: &Gateway, path: &str, client_ip: &str) -> u16 {
    client()
        .get(gw.url(path))
        .header("x-forwarded-for", client_ip)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// Every series (name and labels), without values.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        .collect()
}

#[test]
fn exact_values_after_a_known_sequence() {
    let gw = Gateway::start(CONFIG);
    let statuses: Vec<u16> = [
        ("/api/a", "192.0.2.1"),
        ("/api/b", "192.0.2.1"),
        ("/api/c", "192.0.2.1"),
        ("/api/a", "192.0.2.2"),
        ("/shadow", "192.0.2.1"),
        ("/shadow", "192.0.2.1"),
        ("/nowhere", "192.0.2.1"),
        ("/api/a", "198.18.0.1"),
    ]
    .iter()
    .map(|(p, c)| hit(&gw, p, c))
    .collect();
    assert_eq!(statuses, [200, 200, 429, 200, 200, 200, 404, 403]);

    let text = metrics_text(&gw);
    let value = |s: &str| metric_value(&text, s);
    let req = |route: &str, decision: &str| {
        value(&format!(
            "rategate_requests_total{{decision=\"{decision}\",route=\"{route}\"}}"
        ))
    };
    assert_eq!(req("api", "allowed"), Some(3.0), "{text}");
    assert_eq!(req("api", "limited"), Some(1.0));
    assert_eq!(req("api", "denied"), Some(1.0));
    assert_eq!(req("shadowed", "allowed"), Some(1.0));
    assert_eq!(req("shadowed", "shadow_limited"), Some(1.0));
    assert_eq!(req("", "no_route"), Some(1.0));
    assert_eq!(req("api", "blocked"), None);
    assert_eq!(
        value("rategate_policy_rejections_total{policy=\"two\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("rategate_policy_rejections_total{policy=\"watch\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("rategate_request_duration_seconds_count{route=\"api\"}"),
        Some(5.0)
    );
    assert_eq!(
        value("rategate_store_duration_seconds_count{store=\"memory\"}"),
        Some(6.0)
    );
    assert_eq!(value("rategate_store_fallback_active"), Some(0.0));
    assert_eq!(value("rategate_blocked_clients"), Some(0.0));
    assert_eq!(
        value("rategate_config_reloads_total{result=\"ok\"}"),
        Some(0.0)
    );
    assert_eq!(
        value("rategate_config_reloads_total{result=\"error\"}"),
        Some(0.0)
    );
    assert_eq!(value("rategate_alerts_total{result=\"sent\"}"), Some(0.0));
    // Process metrics.
    assert!(
        value("process_resident_memory_bytes").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(value("process_open_fds").unwrap_or(0.0) > 0.0);
    assert!(value("process_start_time_seconds").unwrap_or(0.0) > 1e9);
}

#[test]
fn a_flood_of_random_requests_adds_no_series() {
    let gw = Gateway::start(CONFIG);
    // One request of every kind first, so every series the flood could touch exists.
    hit(&gw, "/flood/x", "192.0.2.1");
    hit(&gw, "/nowhere", "192.0.2.1");
    let before = series(&metrics_text(&gw));
    let http = client();
    for i in 0..150u32 {
        let path = match i % 3 {
            0 => format!("/flood/{i}/%41{i}"),
            1 => format!("/random-{i}?q={i}"),
            _ => format!("/flood//../flood/{}", "z".repeat(i as usize)),
        };
        let ip = format!("10.{}.{}.{}", i % 7, i % 251, (i * 7) % 251);
        let status = http
            .get(gw.url(&path))
            .header("x-forwarded-for", &ip)
            .header("x-api-key", format!("key-{i}"))
            .header("user-agent", format!("bot/{i}"))
            .send()
            .unwrap()
            .status();
        assert!(status == 200 || status == 404, "{path}: {status}");
    }
    let after = series(&metrics_text(&gw));
    // The process collector's values move, its series do not; rategate's must not change at all.
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(added.is_empty(), "new series: {added:?}");
}
