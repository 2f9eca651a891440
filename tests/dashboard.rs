//! The dashboard in a real headless Chromium: a client blocked through the API shows up on the
//! page once the token is entered, and clicking "Unblock" removes the block (checked through the
//! API). The browser side is `tests/dashboard/dashboard.mjs` (playwright-core driving the Debian
//! `chromium`); `tests/dashboard/setup.sh` installs both.
//!
//! Without chromium, node or the npm packages the test prints why and passes, except under CI
//! (`CI` set), where a skipped browser test would hide a missing install step: there it fails.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "dashboard-t0ken";
const CLIENT: &str = "192.0.2.77";

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard")
}

/// Why the browser test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !chromium().exists() {
        return Some(format!("{} not found", chromium().display()));
    }
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("node not found".into());
    }
    if !script_dir().join("node_modules/playwright-core").exists() {
        return Some("tests/dashboard/node_modules/playwright-core not installed".into());
    }
    None
}

#[test]
fn unblock_from_the_dashboard_in_chromium() {
    if let Some(why) = missing() {
        let hint = "run `bash tests/dashboard/setup.sh` to install chromium and the npm packages";
        if std::env::var_os("CI").is_some() {
            panic!("dashboard test cannot run under CI: {why}; {hint}");
        }
        eprintln!("SKIP unblock_from_the_dashboard_in_chromium: {why}; {hint}");
        return;
    }

    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[policy]]
name = "login"
algorithm = "fixed_window"
limit = 1
window = "60s"

[[route]]
name = "login"
path_prefix = "/"
policies = ["login"]
respond = {{ status = 200 }}
"#
    );
    let gw = Gateway::start(&cfg);
    let http = client();
    // Rejections for the suspicious list and the event list, then an admin block.
    for _ in 0..3 {
        http.get(gw.url("/"))
            .header("x-forwarded-for", CLIENT)
            .send()
            .unwrap();
    }
    let resp = http
        .post(gw.admin_url("/admin/blocks"))
        .bearer_auth(TOKEN)
        .json(&json!({"client": CLIENT, "duration": "1h", "reason": "manual dashboard test"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);

    let started = Instant::now();
    let out = Command::new("node")
        .arg(script_dir().join("dashboard.mjs"))
        .arg(gw.admin_url("/"))
        .arg(TOKEN)
        .arg(CLIENT)
        .env("CHROMIUM", chromium())
        .current_dir(script_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dashboard script failed after {:?}:\n{stdout}\n{stderr}\n{}",
        started.elapsed(),
        gw.logs()
    );
    assert!(stdout.contains("\"ok\":true"), "{stdout}");

    let blocks: Value = http
        .get(gw.admin_url("/admin/blocks"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(blocks, json!([]), "the block is still there");
    let events: Value = http
        .get(gw.admin_url("/admin/events?limit=1"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(events[0]["kind"], "unblocked");
    assert_eq!(events[0]["client"], CLIENT);
}
