//! The binary's life: CLI, config errors, slowloris guard, TLS with HTTP/2, graceful drain.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn rategate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rategate"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn version_and_help() {
    let out = rategate(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = rategate(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run") && help.contains("check") && help.contains("--config"));
}

#[test]
fn check_prints_summary_of_bundled_config() {
    let out = rategate(&["check", "--config", "config/rategate.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["demo", "login", "api-key", "home"] {
        assert!(stdout.contains(name), "summary lacks {name}: {stdout}");
    }
}

#[test]
fn config_errors_exit_2_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"missing\"\n",
    )
    .unwrap();
    for cmd in ["check", "run"] {
        let out = rategate(&[cmd, "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.toml:7"), "{cmd}: {err}");
        assert!(err.contains("upstream"), "{cmd}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
    let out = rategate(&["check", "--config", "/nonexistent/rategate.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/rategate.toml"));
}

#[test]
fn slow_header_senders_are_cut_off() {
    let echo = Echo::start();
    let cfg = config_with(
        &echo.url(),
        "[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"api\"\n",
    )
    .set("server.header_read_timeout", "1s");
    let gw = Gateway::start(&cfg);
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The gateway must close (possibly after a 408) well before our 5 s read timeout.
    let _ = stream.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "connection held for {waited:?}"
    );
    assert_eq!(echo.count(), 0);
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    let echo = Echo::start();
    let mut gw = Gateway::start(&config_with(
        &echo.url(),
        "[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"api\"\n",
    ));
    let addr = gw.addr;
    let in_flight = std::thread::spawn(move || raw_get(addr, "/slow/1200", ""));
    std::thread::sleep(Duration::from_millis(300));
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    // No new connections once draining.
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
            || raw_status(&raw_get(addr, "/", "")) == 0
    );
    let resp = in_flight.join().unwrap();
    assert_eq!(raw_status(&resp), 200, "in-flight request was cut: {resp}");
    assert_eq!(
        gw.wait_exit(Duration::from_secs(5)),
        Some(0),
        "{}",
        gw.logs()
    );
}

#[test]
fn shutdown_grace_bounds_the_drain() {
    let echo = Echo::start();
    let cfg = config_with(
        &echo.url(),
        "[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"api\"\n",
    )
    .set("server.shutdown_grace", "1s")
    .set("upstream.timeout", "30s");
    let mut gw = Gateway::start(&cfg);
    let addr = gw.addr;
    let _stuck = std::thread::spawn(move || raw_get(addr, "/slow/20000", ""));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn tls_termination_with_http2_by_alpn() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let echo = Echo::start();
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let cfg = config_with(
        &echo.url(),
        "[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"api\"\n",
    )
    .set("server.tls.cert", cert_path.display().to_string())
    .set("server.tls.key", key_path.display().to_string());
    let gw = Gateway::start(&cfg);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve("localhost", gw.addr)
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://localhost:{}/over-tls", gw.addr.port()))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let seen = echo.seen().pop().unwrap();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.uri, "/over-tls");
}
