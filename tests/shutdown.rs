//! Graceful shutdown, black-box: readiness drops first and stays observable during the drain,
//! in-flight requests and request bodies still streaming finish, idle keep-alive connections are
//! closed at once, the process exits 0 within shutdown_grace, and a second signal exits at once.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const ROUTE: &str = "[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"api\"\n";

fn readyz(gw: &Gateway) -> (u16, Value) {
    let resp = client().get(gw.admin_url("/readyz")).send().unwrap();
    (resp.status().as_u16(), resp.json().unwrap())
}

#[test]
fn readiness_drops_first_and_in_flight_requests_finish() {
    let echo = Echo::start();
    let mut gw = Gateway::start(&config_with(&echo.url(), ROUTE).set("upstream.timeout", "10s"));
    assert_eq!(readyz(&gw).0, 200);
    let addr = gw.addr;
    // Long enough that the drain is still waiting for it while the admin port is asked twice,
    // even on a loaded machine (the admin port stops once the drain ends).
    let in_flight = std::thread::spawn(move || raw_get(addr, "/slow/4000", ""));
    std::thread::sleep(Duration::from_millis(300));
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(150));
    // The admin port keeps answering during the drain, with 503.
    let (status, body) = readyz(&gw);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "draining");
    assert_eq!(
        client()
            .get(gw.admin_url("/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
    let resp = in_flight.join().unwrap();
    assert_eq!(raw_status(&resp), 200, "in-flight request was cut: {resp}");
    assert_eq!(
        gw.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        gw.logs()
    );
    assert!(gw.logs().contains("all connections drained"));
}

#[test]
fn a_request_body_still_streaming_finishes() {
    let echo = Echo::start();
    let mut gw = Gateway::start(&config_with(&echo.url(), ROUTE));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n5\r\nhello\r\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"6\r\n world\r\n0\r\n\r\n").unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(resp.contains("\"body_len\":11"), "{resp}");
    assert_eq!(gw.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn idle_keep_alive_connections_are_closed_at_once() {
    let echo = Echo::start();
    // A long grace: only open connections could make the exit wait.
    let cfg = config_with(&echo.url(), ROUTE).set("server.shutdown_grace", "20s");
    let mut gw = Gateway::start(&cfg);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_one_response(&mut s);
    // The connection is now idle and kept alive.
    let started = Instant::now();
    gw.signal("TERM");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected the server to close the idle connection");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        gw.wait_exit(Duration::from_secs(3)),
        Some(0),
        "{}",
        gw.logs()
    );
}

/// Read one response with a Content-Length body.
fn read_one_response(s: &mut TcpStream) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..end]
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if data.len() >= end + 4 + length {
            return;
        }
    }
}

#[test]
fn a_second_signal_exits_at_once() {
    let echo = Echo::start();
    let cfg = config_with(&echo.url(), ROUTE)
        .set("server.shutdown_grace", "30s")
        .set("upstream.timeout", "30s");
    let mut gw = Gateway::start(&cfg);
    let addr = gw.addr;
    let _stuck = std::thread::spawn(move || raw_get(addr, "/slow/20000", ""));
    std::thread::sleep(Duration::from_millis(300));
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(readyz(&gw).0, 503);
    let started = Instant::now();
    gw.signal("INT");
    let code = gw.wait_exit(Duration::from_secs(3));
    assert_eq!(code, Some(130), "{}", gw.logs());
    assert!(started.elapsed() < Duration::from_secs(2));
}
