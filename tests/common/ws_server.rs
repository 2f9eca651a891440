//! The WebSocket upstream of tests/websocket.rs and tests/websocket_h2.rs: the Python
//! `websockets` echo server of tests/python/ws.py (installed by tests/python/setup.sh), which
//! logs each handshake it receives.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{config_with, poll, TestConfig};

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/ws.py")
}

/// Fails loudly when the Python package is missing: these tests are never skipped.
pub fn require_websockets() {
    let ok = Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with the `websockets` package is required: run `bash tests/python/setup.sh`"
    );
}

/// Lines a child prints, as they come.
pub fn lines_of(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The upstream: an echo server that logs each handshake it receives.
pub struct WsServer {
    child: Child,
    pub port: u16,
    handshakes: Arc<Mutex<Vec<String>>>,
}

impl WsServer {
    pub fn start() -> WsServer {
        require_websockets();
        let mut child = Command::new("python3")
            .arg(script())
            .arg("server")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut child);
        let first = lines.recv_timeout(Duration::from_secs(20)).unwrap();
        let port = first.strip_prefix("PORT ").unwrap().parse().unwrap();
        let handshakes: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = handshakes.clone();
        std::thread::spawn(move || {
            for line in lines {
                seen.lock().unwrap().push(line);
            }
        });
        WsServer {
            child,
            port,
            handshakes,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The handshakes seen, once at least `n` have been (the server prints each before it
    /// answers; its output is read on another thread).
    pub fn handshakes(&self, n: usize) -> Vec<String> {
        poll(
            format!("{n} handshake(s) at the upstream"),
            Duration::from_secs(10),
        )
        .until(|| self.handshakes.lock().unwrap().len() >= n);
        self.handshakes.lock().unwrap().clone()
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One route `ws` on `/` to the WebSocket upstream, relaying WebSocket (an HTTP/1.1
/// `Upgrade: websocket`, an HTTP/2 extended CONNECT), with `rest`.
pub fn ws_config(server: &WsServer, policies: &[&str], rest: &str) -> TestConfig {
    let list: Vec<String> = policies.iter().map(|p| format!("\"{p}\"")).collect();
    config_with(
        &server.url(),
        &format!(
            r#"
[[route]]
name = "ws"
path_prefix = "/"
upstream = "api"
upgrade = ["websocket"]
policies = [{}]
"#,
            list.join(", ")
        ),
    )
    .with(rest)
}

/// A concurrency limit of one tunnel, with a lease short enough for tests to outlive.
pub const ONE_AT_A_TIME: &str = r#"
[[policy]]
name = "one"
algorithm = "concurrency"
limit = 1
lease = "2s"
"#;
