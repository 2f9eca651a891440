//! The access log through the binary: lines leave through an in-memory buffer (flushed every
//! 50 ms, at 64 KiB and on every way out), so each must still arrive whole, once, and none logged
//! before exit may be lost.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const ROUTE: &str = "[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"api\"\n";

/// `n` requests from `threads` client threads at once; each must be answered 200.
fn concurrent_requests(gw: &Gateway, threads: usize, n: usize) {
    let addr = gw.addr;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..n / threads {
                    let resp = raw_get(addr, &format!("/t{t}/r{i}"), "");
                    assert_eq!(raw_status(&resp), 200, "{resp}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

/// Every line of stdout parsed as JSON (panics on a line that is not, i.e. split or merged).
fn log_lines(gw: &Gateway) -> Vec<Value> {
    let logs = gw.logs();
    logs.lines()
        // The harness interleaves stderr's lines (plain text) with stdout's; none are expected.
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON line ({e}): {l:?}\n{logs}"))
        })
        .collect()
}

fn access_lines(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|v| v["target"] == "rategate::access")
        .collect()
}

/// The process has exited; the harness's reader may still be behind: wait for the last line.
fn wait_for_last_line(gw: &Gateway, message: &str) {
    gw.wait_log(
        &format!("\"message\":\"{message}\""),
        1,
        Duration::from_secs(10),
    );
}

#[test]
fn concurrent_requests_each_log_one_whole_line_and_none_is_lost_at_sigterm() {
    let echo = Echo::start();
    let mut gw = Gateway::start(&config_with(&echo.url(), ROUTE));
    let n = 96;
    concurrent_requests(&gw, 8, n);
    // Straight after the last answer: its line may still be in the buffer.
    gw.signal("TERM");
    assert_eq!(
        gw.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        gw.logs()
    );
    wait_for_last_line(&gw, "rategate stopped");
    let lines = log_lines(&gw);
    let access = access_lines(&lines);
    assert_eq!(access.len(), n, "{}", gw.logs());
    for line in access {
        assert_eq!(line["route"], "r");
        assert_eq!(line["decision"], "allowed");
        assert_eq!(line["status"], 200);
        assert_eq!(line["method"], "GET");
        assert_eq!(line["client"], "127.0.0.1");
        assert!(line["duration_us"].is_u64(), "{line}");
    }
    // The last line of all, logged just before main returns, is written too.
    assert_eq!(lines.last().unwrap()["message"], "rategate stopped");
}

#[test]
fn lines_logged_before_a_second_signal_are_written_before_the_exit() {
    let echo = Echo::start();
    let cfg = config_with(&echo.url(), ROUTE)
        .set("server.shutdown_grace", "30s")
        .set("upstream.timeout", "30s");
    let mut gw = Gateway::start(&cfg);
    let addr = gw.addr;
    concurrent_requests(&gw, 4, 20);
    // Keeps the drain waiting, so the second signal finds it in progress.
    let _stuck = std::thread::spawn(move || raw_get(addr, "/slow/20000", ""));
    std::thread::sleep(Duration::from_millis(300));
    gw.signal("TERM");
    gw.wait_log("shutdown requested; draining", 1, Duration::from_secs(10));
    gw.signal("INT");
    assert_eq!(
        gw.wait_exit(Duration::from_secs(10)),
        Some(130),
        "{}",
        gw.logs()
    );
    // `std::process::exit` runs no destructors: the warning right before it must be flushed.
    wait_for_last_line(&gw, "second signal: exiting without waiting for the drain");
    let lines = log_lines(&gw);
    assert_eq!(access_lines(&lines).len(), 20, "{}", gw.logs());
}
