//! WebSocket (HTTP/1.1 Upgrade) through the real binary, with a real client and server: Python
//! `websockets` (tests/python/ws.py; installed by tests/python/setup.sh). Echo over the tunnel, a
//! refused upgrade answered before any tunnel, a concurrency slot held for the tunnel's life and
//! freed when it closes (memory store and Redis), the idle timeout, shutdown, and a route without
//! `upgrade` relaying no `Upgrade`.
//!
//! Without the `websockets` package these tests fail (they never skip): run
//! `bash tests/python/setup.sh`. Nothing here asserts how long something took.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::redis::{have_redis, RedisServer};
use common::ws_server::{lines_of, require_websockets, script, ws_config, WsServer, ONE_AT_A_TIME};
use common::{config_with, poll, Gateway, TestConfig};

/// One client connection, driven line by line (see ws.py).
struct WsClient {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
}

impl WsClient {
    fn new() -> WsClient {
        require_websockets();
        let mut child = Command::new("python3")
            .arg(script())
            .arg("client")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let answers = lines_of(&mut child);
        let stdin = child.stdin.take().unwrap();
        WsClient {
            child,
            stdin,
            answers,
        }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.answers
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no answer to `{command}`: {e}"))
    }

    /// A client that opened a tunnel to `path` through `gw`.
    fn open(gw: &Gateway, path: &str) -> WsClient {
        let mut client = WsClient::new();
        assert_eq!(client.open_answer(gw, path), "OPEN");
        client
    }

    fn open_answer(&mut self, gw: &Gateway, path: &str) -> String {
        self.ask(&format!("open ws://{}{path}", gw.addr))
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a new connection is closed by the gateway without an answer (not left open).
fn closed_at_once(gw: &Gateway) -> bool {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(gw.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The gateway may close before this is written: either way, nothing comes back.
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

fn metric(gw: &Gateway, series: &str) -> f64 {
    gw.metric(series).unwrap_or(-1.0)
}

#[test]
fn messages_echo_over_the_tunnel_and_the_metrics_count_it() {
    let server = WsServer::start();
    let gw = Gateway::start(&ws_config(&server, &[], ""));
    let mut client = WsClient::open(&gw, "/chat");
    assert_eq!(client.ask("send hello"), "ECHO hello");
    assert_eq!(client.ask("send second"), "ECHO second");
    assert_eq!(metric(&gw, "rategate_tunnels_total"), 1.0);
    assert_eq!(metric(&gw, "rategate_tunnels_open"), 1.0);
    // The upstream was asked to switch, with the client's handshake intact.
    assert_eq!(server.handshakes(1), ["HANDSHAKE /chat upgrade=websocket"]);
    assert_eq!(client.ask("close"), "CLOSED");
    poll("the tunnel gauge back to 0", Duration::from_secs(10))
        .until(|| metric(&gw, "rategate_tunnels_open") == 0.0);
    // The handshake is a request like any other.
    assert_eq!(
        metric(
            &gw,
            r#"rategate_requests_total{decision="allowed",route="ws"}"#
        ),
        1.0
    );
}

#[test]
fn the_upgrade_past_the_limit_is_refused_429_before_any_tunnel() {
    let server = WsServer::start();
    let gw = Gateway::start(&ws_config(
        &server,
        &["two"],
        r#"
[[policy]]
name = "two"
algorithm = "fixed_window"
limit = 2
window = "1h"
"#,
    ));
    let mut first = WsClient::open(&gw, "/");
    let mut second = WsClient::open(&gw, "/");
    let mut third = WsClient::new();
    assert_eq!(third.open_answer(&gw, "/"), "REFUSED 429");
    assert_eq!(
        server.handshakes(2).len(),
        2,
        "the refused one never reached the upstream"
    );
    assert_eq!(metric(&gw, "rategate_tunnels_total"), 2.0);
    assert_eq!(first.ask("send a"), "ECHO a");
    assert_eq!(second.ask("send b"), "ECHO b");
}

/// A concurrency limit of 1: the slot is held while the tunnel is open (past the lease, so it is
/// renewed) and freed when it closes.
fn concurrency_slot_follows_the_tunnel(config: TestConfig, server: &WsServer) {
    let gw = Gateway::start(&config);
    let mut holder = WsClient::open(&gw, "/");
    let mut other = WsClient::new();
    assert_eq!(other.open_answer(&gw, "/"), "REFUSED 429");
    // Longer than the 2 s lease: only renewal keeps the slot.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(holder.ask("send still here"), "ECHO still here");
    let mut again = WsClient::new();
    assert_eq!(again.open_answer(&gw, "/"), "REFUSED 429");
    assert_eq!(holder.ask("close"), "CLOSED");
    // Released before the tunnel's sockets closed: the next upgrade is admitted at once.
    let mut next = WsClient::open(&gw, "/");
    assert_eq!(next.ask("send next"), "ECHO next");
    assert_eq!(server.handshakes(2).len(), 2);
}

#[test]
fn a_concurrency_slot_is_held_for_the_tunnel_and_freed_when_it_closes() {
    let server = WsServer::start();
    concurrency_slot_follows_the_tunnel(ws_config(&server, &["one"], ONE_AT_A_TIME), &server);
}

#[test]
fn a_concurrency_slot_is_held_for_the_tunnel_and_freed_when_it_closes_on_redis() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let redis = RedisServer::start();
    let server = WsServer::start();
    // A renewal is a store call: on a loaded machine the default 50 ms timeout could lose three
    // in a row and let the lease expire under a tunnel that is still open.
    let config = ws_config(&server, &["one"], ONE_AT_A_TIME)
        .redis_store(&redis.url())
        .set("store.timeout", "1s");
    concurrency_slot_follows_the_tunnel(config, &server);
}

#[test]
fn the_upgrade_past_the_limit_is_refused_429_on_redis() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let redis = RedisServer::start();
    let server = WsServer::start();
    let config = ws_config(
        &server,
        &["one"],
        r#"
[[policy]]
name = "one"
algorithm = "fixed_window"
limit = 1
window = "1h"
"#,
    )
    .redis_store(&redis.url());
    let gw = Gateway::start(&config);
    let mut first = WsClient::open(&gw, "/");
    let mut second = WsClient::new();
    assert_eq!(second.open_answer(&gw, "/"), "REFUSED 429");
    assert_eq!(first.ask("send x"), "ECHO x");
}

#[test]
fn an_idle_tunnel_is_closed_after_tunnel_idle_timeout() {
    let server = WsServer::start();
    let config = ws_config(&server, &["one"], ONE_AT_A_TIME)
        .set("server.tunnel_idle_timeout", "1s")
        .set("policy.lease", "10s");
    let gw = Gateway::start(&config);
    let mut client = WsClient::open(&gw, "/");
    assert_eq!(client.ask("send ping"), "ECHO ping");
    assert_eq!(client.ask("wait"), "CLOSED");
    let timed_out =
        r#"rategate_connections_timed_out_total{listener="proxy",reason="tunnel_idle"}"#;
    poll("the idle tunnel counted", Duration::from_secs(10))
        .until(|| metric(&gw, timed_out) == 1.0);
    // Its concurrency slot went with it (well before the 10 s lease would have expired).
    poll("the slot freed", Duration::from_secs(5)).until(|| {
        let mut next = WsClient::new();
        next.open_answer(&gw, "/") == "OPEN"
    });
}

#[test]
fn shutdown_drains_then_closes_tunnels() {
    let server = WsServer::start();
    let config = ws_config(&server, &[], "").set("server.shutdown_grace", "3s");
    let mut gw = Gateway::start(&config);
    let mut client = WsClient::open(&gw, "/");
    gw.signal("TERM");
    gw.wait_log("draining connections", 1, Duration::from_secs(10));
    // Within the grace the tunnel still carries messages...
    assert_eq!(client.ask("send during drain"), "ECHO during drain");
    // ...and at its end it is closed and the gateway exits.
    assert_eq!(client.ask("wait"), "CLOSED");
    assert_eq!(gw.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(gw.logs().contains("cutting them"), "{}", gw.logs());
}

#[test]
fn a_tunnel_keeps_its_place_under_max_connections() {
    let server = WsServer::start();
    let config = ws_config(&server, &[], "").set("server.max_connections", 1);
    let gw = Gateway::start(&config);
    let mut client = WsClient::open(&gw, "/");
    assert_eq!(metric(&gw, "rategate_connections_active"), 1.0);
    // The ceiling is reached while the tunnel is open: the next connection is closed at once.
    assert!(closed_at_once(&gw));
    assert_eq!(
        metric(
            &gw,
            r#"rategate_connections_rejected_total{listener="proxy"}"#
        ),
        1.0
    );
    assert_eq!(client.ask("send still open"), "ECHO still open");
    assert_eq!(client.ask("close"), "CLOSED");
    poll("the slot back", Duration::from_secs(10))
        .until(|| metric(&gw, "rategate_connections_active") == 0.0);
    let mut next = WsClient::open(&gw, "/");
    assert_eq!(next.ask("send next"), "ECHO next");
}

#[test]
fn a_route_without_upgrade_relays_no_upgrade() {
    let server = WsServer::start();
    let config = config_with(
        &server.url(),
        r#"
[[route]]
name = "plain"
path_prefix = "/"
upstream = "api"
"#,
    );
    let gw = Gateway::start(&config);
    let mut client = WsClient::new();
    // The upstream saw a plain GET and refused to switch (426 Upgrade Required): no tunnel.
    assert_eq!(client.open_answer(&gw, "/"), "REFUSED 426");
    assert_eq!(server.handshakes(1), ["HANDSHAKE / upgrade=-"]);
    assert_eq!(metric(&gw, "rategate_tunnels_total"), 0.0);
}

#[test]
fn an_upstream_refusing_the_switch_is_relayed_as_a_normal_response() {
    let server = WsServer::start();
    let gw = Gateway::start(&ws_config(&server, &[], ""));
    let mut client = WsClient::new();
    assert_eq!(client.open_answer(&gw, "/forbidden"), "REFUSED 403");
    assert_eq!(
        server.handshakes(1),
        ["HANDSHAKE /forbidden upgrade=websocket"]
    );
    assert_eq!(metric(&gw, "rategate_tunnels_total"), 0.0);
    // The connection goes on as HTTP: the next handshake on the route works.
    let mut next = WsClient::open(&gw, "/");
    assert_eq!(next.ask("send ok"), "ECHO ok");
}

#[test]
fn check_rejects_an_unknown_upgrade_protocol_at_its_line() {
    let config = config_with(
        "http://127.0.0.1:1",
        r#"
[[route]]
name = "ws"
path_prefix = "/"
upstream = "api"
upgrade = ["websocket", "h2c"]
"#,
    )
    .to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rategate.toml");
    std::fs::write(&path, &config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rategate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = config
        .lines()
        .position(|l| l.contains("h2c"))
        .map(|i| i + 1)
        .unwrap();
    assert!(
        err.contains(&format!("rategate.toml:{line}:"))
            && err.contains("unknown upgrade protocol `h2c`"),
        "{err}"
    );
}

#[test]
fn a_101_to_another_protocol_than_asked_is_a_502() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let _ = stream.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
        );
        std::thread::sleep(Duration::from_secs(5));
    });
    let config = config_with(
        &format!("http://{upstream}"),
        "[[route]]\nname = \"ws\"\npath_prefix = \"/\"\nupstream = \"api\"\nupgrade = [\"websocket\"]\n",
    );
    let gw = Gateway::start(&config);
    let mut client = std::net::TcpStream::connect(gw.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
        .write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = client.read(&mut buf).unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(common::raw_status(&resp), 502, "{resp}");
    assert_eq!(
        metric(
            &gw,
            r#"rategate_upstream_errors_total{kind="protocol",upstream="api"}"#
        ),
        1.0
    );
    assert_eq!(metric(&gw, "rategate_tunnels_total"), 0.0);
}

#[test]
fn a_reload_that_adds_upgrade_applies_to_new_connections() {
    let server = WsServer::start();
    let plain = config_with(
        &server.url(),
        "[[route]]\nname = \"ws\"\npath_prefix = \"/\"\nupstream = \"api\"\n",
    );
    let gw = Gateway::start(&plain);
    let mut before = WsClient::new();
    assert_eq!(before.open_answer(&gw, "/"), "REFUSED 426");
    let with_upgrade = plain.set("route.upgrade", vec!["websocket"]);
    std::fs::write(&gw.config_path, with_upgrade.to_string()).unwrap();
    gw.signal("HUP");
    poll("the reload", Duration::from_secs(10))
        .until(|| metric(&gw, r#"rategate_config_reloads_total{result="ok"}"#) >= 1.0);
    let mut after = WsClient::open(&gw, "/");
    assert_eq!(after.ask("send reloaded"), "ECHO reloaded");
}

/// A tunnel whose client sends but never reads: once the gateway's writes to it wait for
/// `send_timeout`, the tunnel ends (its place and upstream connection with it), although bytes
/// keep arriving from the client (which `tunnel_idle_timeout` counts as activity).
#[test]
fn a_tunnel_whose_client_never_reads_is_cut_after_send_timeout() {
    use std::io::Read;
    let server = WsServer::start();
    let config = ws_config(&server, &[], "")
        .set("server.send_timeout", "1s")
        .set("server.tunnel_idle_timeout", "60s");
    let gw = Gateway::start(&config);
    let mut stream = std::net::TcpStream::connect(gw.addr).unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    // Masked binary frames of 64 KB (a zero mask), sent until the gateway closes: the echoes
    // fill the way back, which this client never reads.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&65_536u64.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend(std::iter::repeat_n(b'x', 65_536));
    let mut writer = stream.try_clone().unwrap();
    let flood = std::thread::spawn(move || while writer.write_all(&frame).is_ok() {});
    let send = r#"rategate_connections_timed_out_total{listener="proxy",reason="send"}"#;
    poll("the tunnel cut for not reading", Duration::from_secs(20))
        .showing(|| gw.logs())
        .until(|| metric(&gw, send) == 1.0);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    flood.join().unwrap();
    poll("the tunnel gone", Duration::from_secs(10))
        .until(|| metric(&gw, "rategate_tunnels_open") == 0.0);
    assert_eq!(
        metric(
            &gw,
            r#"rategate_connections_timed_out_total{listener="proxy",reason="tunnel_idle"}"#
        ),
        0.0
    );
}
