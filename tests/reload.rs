//! Config reload, black-box: SIGHUP, POST /admin/reload and the file watch (in-place write,
//! rename-replace, Kubernetes `..data` swap); invalid configs rejected whole; counters and blocks
//! surviving; in-flight requests finishing under their config; the access log switch.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Replaces the config file in one rename, so the file watch never reads a half-written text.
fn replace_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Routes answer directly; `{limit}` and `{body}` vary between versions of the file (day-long
/// windows: a window boundary between two requests of a test would reset a counter).
fn config(body: &str, limit: u64, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
shutdown_grace = "5s"

[admin]
listen = "127.0.0.1:0"

[[policy]]
name = "kept"
algorithm = "fixed_window"
limit = 3
window = "24h"

[[policy]]
name = "changed"
algorithm = "fixed_window"
limit = {limit}
window = "24h"

[[route]]
name = "kept"
path_prefix = "/kept"
policies = ["kept"]
respond = {{ status = 200, body = "{body}" }}

[[route]]
name = "changed"
path_prefix = "/changed"
policies = ["changed"]
respond = {{ status = 200, body = "{body}" }}

[[route]]
name = "plain"
path_prefix = "/plain"
respond = {{ status = 200, body = "{body}" }}
{extra}
"#
    )
}

fn get(gw: &Gateway, path: &str, client: &str) -> (u16, String, Option<String>) {
    let resp = common::client()
        .get(gw.url(path))
        .header("x-forwarded-for", client)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let remaining = resp
        .headers()
        .get("x-ratelimit-remaining")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, resp.text().unwrap(), remaining)
}

fn reloads(gw: &Gateway, result: &str) -> f64 {
    gw.metric(&format!(
        "rategate_config_reloads_total{{result=\"{result}\"}}"
    ))
    .unwrap_or(-1.0)
}

fn admin_post(gw: &Gateway, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut rb = common::client().post(gw.admin_url(path));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().unwrap();
    (resp.status().as_u16(), resp.json().unwrap())
}

#[test]
fn sighup_reloads_and_counters_and_blocks_survive() {
    let gw = Gateway::start(&config("v1", 2, ""));
    assert_eq!(reloads(&gw, "ok"), 0.0);
    let c = "192.0.2.10";
    assert_eq!(get(&gw, "/kept", c), (200, "v1".into(), Some("2".into())));
    assert_eq!(get(&gw, "/kept", c), (200, "v1".into(), Some("1".into())));
    assert_eq!(get(&gw, "/changed", c).2.as_deref(), Some("1"));
    let (status, _) = admin_post(
        &gw,
        "/admin/blocks",
        Some(json!({"client": "192.0.2.99", "duration": "1h"})),
    );
    assert_eq!(status, 201);

    replace_config(&gw.config_path, &config("v2", 5, ""));
    gw.signal("HUP");
    poll("the SIGHUP reload", Duration::from_secs(5))
        .showing(|| gw.logs())
        .until(|| reloads(&gw, "ok") >= 1.0);
    // Same name, algorithm, limit and window: the counter carries on.
    assert_eq!(get(&gw, "/kept", c), (200, "v2".into(), Some("0".into())));
    assert_eq!(get(&gw, "/kept", c).0, 429);
    // A changed limit starts from empty.
    assert_eq!(get(&gw, "/changed", c).2.as_deref(), Some("4"));
    // Blocks live in the store and survive.
    assert_eq!(get(&gw, "/kept", "192.0.2.99").0, 429);
    assert!(
        gw.logs().contains("\"trigger\":\"sighup\""),
        "{}",
        gw.logs()
    );
}

#[test]
fn invalid_config_is_rejected_whole_and_the_old_one_keeps_serving() {
    let gw = Gateway::start(&config("v1", 2, ""));
    // A dangling policy reference on line 3 of the new text.
    let bad = config(
        "v2",
        2,
        "[[route]]\nname = \"x\"\npolicies = [\"nope\"]\nrespond = { status = 200 }\n",
    );
    replace_config(&gw.config_path, &bad);
    // The file watch sees the change too; let it be counted first so the admin reload's count is
    // exact (the two would otherwise race).
    poll("the file watch's rejected reload", Duration::from_secs(5))
        .showing(|| gw.logs())
        .until(|| reloads(&gw, "error") >= 1.0);
    let (status, body) = admin_post(&gw, "/admin/reload", None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_config");
    assert_eq!(body["key"], "route[3].policies");
    assert!(body["line"].as_u64().is_some(), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no [[policy]] named `nope`"),
        "{body}"
    );
    assert_eq!(reloads(&gw, "error"), 2.0);
    assert_eq!(reloads(&gw, "ok"), 0.0);
    assert_eq!(get(&gw, "/kept", "192.0.2.1").1, "v1");
    assert!(gw.logs().contains("config reload rejected"));

    // SIGHUP with the same bad file: counted again, still serving v1.
    gw.signal("HUP");
    poll("the rejected SIGHUP reload", Duration::from_secs(5))
        .showing(|| gw.logs())
        .until(|| reloads(&gw, "error") >= 3.0);
    assert_eq!(get(&gw, "/kept", "192.0.2.1").1, "v1");

    // TOML syntax errors too.
    replace_config(&gw.config_path, "[server\n");
    let (status, body) = admin_post(&gw, "/admin/reload", None);
    assert_eq!((status, body["line"].as_u64()), (400, Some(1)));

    // Fixed: 200 with the summary.
    replace_config(&gw.config_path, &config("v3", 2, ""));
    let (status, body) = admin_post(&gw, "/admin/reload", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "ok");
    let summary = body["summary"].as_str().unwrap();
    assert!(
        summary.contains("routes (3, first match wins)"),
        "{summary}"
    );
    assert_eq!(get(&gw, "/kept", "192.0.2.1").1, "v3");
}

#[test]
fn file_changes_are_watched() {
    let gw = Gateway::start(&config("v1", 2, ""));
    let path = gw.config_path.clone();
    let body_is = |want: &str| get(&gw, "/plain", "192.0.2.1").1 == want;

    // Written in place.
    std::fs::write(&path, config("v2", 2, "")).unwrap();
    poll("the in-place write to be loaded", Duration::from_secs(5))
        .showing(|| gw.logs())
        .until(|| body_is("v2"));

    // An editor's save: a new file renamed over the old one.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, config("v3", 2, "")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    poll("the rename-replace to be loaded", Duration::from_secs(5))
        .showing(|| gw.logs())
        .until(|| body_is("v3"));
    let ok = reloads(&gw, "ok");
    assert_eq!(ok, 2.0, "one reload per change (debounced)");

    // Touching without a change reloads nothing.
    std::fs::write(&path, config("v3", 2, "")).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(reloads(&gw, "ok"), ok);

    // An invalid edit is rejected and counted; v3 keeps serving.
    std::fs::write(&path, config("v4", 0, "")).unwrap();
    poll("the rejected edit to be counted", Duration::from_secs(5))
        .showing(|| gw.logs())
        .until(|| reloads(&gw, "error") >= 1.0);
    assert!(body_is("v3"));
}

/// A Kubernetes ConfigMap volume: `rategate.toml -> ..data/rategate.toml`, `..data -> ..<ts>`;
/// an update writes a new `..<ts2>` directory and renames a `..data_tmp` link over `..data`.
#[test]
fn kubernetes_configmap_swaps_are_watched() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write_version = |name: &str, text: &str| {
        std::fs::create_dir(root.join(name)).unwrap();
        std::fs::write(root.join(name).join("rategate.toml"), text).unwrap();
    };
    write_version("..2026_11_22_00_00_00.1", &config("v1", 2, ""));
    std::os::unix::fs::symlink("..2026_11_22_00_00_00.1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/rategate.toml", root.join("rategate.toml")).unwrap();
    let path = root.join("rategate.toml");
    let gw = Gateway::builder_at(dir, path).start();
    assert_eq!(get(&gw, "/kept", "192.0.2.1").1, "v1");

    let root = gw.config_path.parent().unwrap().to_path_buf();
    write_version_at(&root, "..2026_11_22_00_05_00.2", &config("v2", 2, ""));
    std::os::unix::fs::symlink("..2026_11_22_00_05_00.2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_11_22_00_00_00.1")).unwrap();
    poll("the ..data swap to be loaded", Duration::from_secs(5))
        .showing(|| gw.logs())
        .until(|| get(&gw, "/plain", "192.0.2.1").1 == "v2");
}

fn write_version_at(root: &Path, name: &str, text: &str) {
    std::fs::create_dir(root.join(name)).unwrap();
    std::fs::write(root.join(name).join("rategate.toml"), text).unwrap();
}

#[test]
fn in_flight_requests_finish_under_their_config() {
    let echo = Echo::start();
    let route = |policy: &str| {
        format!(
            "[[policy]]\nname = \"{policy}\"\nalgorithm = \"fixed_window\"\nlimit = 10\nwindow = \"60s\"\n\
             [[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"api\"\npolicies = [\"{policy}\"]\n"
        )
    };
    let gw = Gateway::start(&config_with(&echo.url(), &route("before")));
    let addr = gw.addr;
    let in_flight = std::thread::spawn(move || raw_get(addr, "/slow/1500", ""));
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(
        &gw.config_path,
        config_with(&echo.url(), &route("after")).to_string(),
    )
    .unwrap();
    let (status, body) = admin_post(&gw, "/admin/reload", None);
    assert_eq!(status, 200, "{body}");
    let resp = raw_get(gw.addr, "/", "");
    assert!(
        resp.contains("X-RateLimit-Policy: after") || resp.contains("x-ratelimit-policy: after"),
        "{resp}"
    );
    let slow = in_flight.join().unwrap();
    assert_eq!(raw_status(&slow), 200, "{slow}");
    assert!(
        slow.to_ascii_lowercase()
            .contains("x-ratelimit-policy: before"),
        "{slow}"
    );
}

#[test]
fn access_log_can_be_switched_off_by_reload() {
    let gw = Gateway::start(&config("v1", 2, ""));
    let access_lines = || {
        gw.logs()
            .lines()
            .filter(|l| l.contains("\"target\":\"rategate::access\""))
            .count()
    };
    get(&gw, "/kept", "192.0.2.1");
    gw.wait_log("rategate::access", 1, Duration::from_secs(2));
    let without_log = TestConfig::parse(&config("v1", 2, "")).set("server.access_log", false);
    std::fs::write(&gw.config_path, without_log.to_string()).unwrap();
    assert_eq!(admin_post(&gw, "/admin/reload", None).0, 200);
    let before = access_lines();
    for _ in 0..3 {
        get(&gw, "/kept", "192.0.2.2");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(access_lines(), before);
}
