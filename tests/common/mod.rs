//! Shared black-box test fixtures: an in-process echo upstream on port 0, the real `rategate`
//! binary started on a temporary config with its listeners on port 0 ([`Gateway::builder`]), and
//! a raw HTTP/1.1 client for requests that ordinary clients would "fix" before sending. Configs
//! are built in `config`, waits for asynchronous states in `poll`, Redis servers in `redis`.
#![allow(dead_code)]

pub mod config;
pub mod poll;
pub mod redis;
pub mod redis_ha;
pub mod ws_server;

// Not every test file uses both: each compiles this module on its own.
#[allow(unused_imports)]
pub use config::{config_with, TestConfig};
#[allow(unused_imports)]
pub use poll::poll;

use std::convert::Infallible;
use std::fmt::Display;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

/// What the echo upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An upstream that answers every request with a JSON description of it. Special paths:
/// `/slow/<ms>` waits before answering, `/status/<code>` answers that status, `/with-ratelimit`
/// adds its own X-RateLimit-* headers, `/hop` adds hop-by-hop headers.
pub struct Echo {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Echo {
    pub fn start() -> Echo {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let seen2 = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| echo(seen.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Echo {
            addr,
            seen,
            _runtime: runtime,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn echo(
    seen: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let uri = parts.uri.to_string();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: uri.clone(),
        headers: headers.clone(),
        body_len: body.len(),
    });
    let path = parts.uri.path();
    let mut status = 200u16;
    let mut resp = Response::builder();
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        status = code.parse().unwrap_or(200);
    }
    if path == "/with-ratelimit" {
        resp = resp
            .header("X-RateLimit-Limit", "999")
            .header("X-RateLimit-Remaining", "999")
            .header("RateLimit", "\"upstream\";r=999;t=1");
    }
    if path == "/hop" {
        resp = resp
            .header("Connection", "close, x-secret")
            .header("X-Secret", "hidden")
            .header("Keep-Alive", "timeout=5");
    }
    let text = json!({
        "method": parts.method.as_str(),
        "uri": uri,
        "headers": headers,
        "body_len": body.len(),
    })
    .to_string();
    Ok(resp
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap())
}

/// A running `rategate` process.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Start the binary on `config` (TOML, or a [`TestConfig`]) with nothing else to set up;
    /// short for `Gateway::builder(config).start()`.
    pub fn start(config: &(impl Display + ?Sized)) -> Gateway {
        Self::builder(config).start()
    }

    /// A gateway on `config`, written to `rategate.toml` in a fresh temporary directory; the
    /// listeners in it should be on port 0.
    pub fn builder(config: &(impl Display + ?Sized)) -> GatewayBuilder {
        GatewayBuilder {
            config: ConfigFile::Text(config.to_string()),
            env: Vec::new(),
            fd_limit: None,
        }
    }

    /// A gateway on a config file the test laid out itself inside `dir` (symlinks, files it
    /// refers to); the gateway keeps `dir` alive.
    pub fn builder_at(dir: tempfile::TempDir, config_path: PathBuf) -> GatewayBuilder {
        GatewayBuilder {
            config: ConfigFile::LaidOut(dir, config_path),
            env: Vec::new(),
            fd_limit: None,
        }
    }
}

enum ConfigFile {
    Text(String),
    LaidOut(tempfile::TempDir, PathBuf),
}

/// How to start one gateway process; see [`Gateway::builder`].
pub struct GatewayBuilder {
    config: ConfigFile,
    env: Vec<(String, String)>,
    fd_limit: Option<u64>,
}

impl GatewayBuilder {
    /// An environment variable for the process (e.g. a secret the config names as `${NAME}`).
    pub fn env(mut self, name: &str, value: &str) -> GatewayBuilder {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// The process's open-file limit (soft and hard).
    pub fn fd_limit(mut self, limit: u64) -> GatewayBuilder {
        self.fd_limit = Some(limit);
        self
    }

    /// Start and wait until both listeners are up; panics with the process's output if not.
    pub fn start(self) -> Gateway {
        let (dir, config_path) = match self.config {
            ConfigFile::Text(text) => {
                let dir = tempfile::tempdir().unwrap();
                let config_path = dir.path().join("rategate.toml");
                std::fs::write(&config_path, text).unwrap();
                (dir, config_path)
            }
            ConfigFile::LaidOut(dir, config_path) => (dir, config_path),
        };
        let bin = env!("CARGO_BIN_EXE_rategate");
        let mut command = match self.fd_limit {
            None => Command::new(bin),
            // `exec` keeps the gateway's pid the child's, so signals and kill reach it.
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(bin);
                sh
            }
        };
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--log-format")
            .arg("json")
            // `GW_LOG=info,rategate=debug cargo test ...` shows the gateways' debug lines on a failure.
            .env("RUST_LOG", std::env::var("GW_LOG").unwrap_or("info".into()))
            .envs(self.env);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel::<(String, SocketAddr)>();
        let logs2 = logs.clone();
        // Keep draining stdout for the whole life of the process: a full pipe would block it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let msg = v["message"].as_str().unwrap_or_default();
                    if msg == "proxy listening" || msg == "admin listening" {
                        if let Some(addr) = v["addr"].as_str().and_then(|a| a.parse().ok()) {
                            let _ = tx.send((msg.to_string(), addr));
                        }
                    }
                }
                logs2.lock().unwrap().push(line);
            }
        });
        let logs3 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                logs3.lock().unwrap().push(line);
            }
        });
        let mut addr = None;
        let mut admin = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while addr.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok((kind, a)) if kind == "proxy listening" => addr = Some(a),
                Ok((_, a)) => admin = Some(a),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "gateway did not start:\n{}",
                        logs.lock().unwrap().join("\n")
                    );
                }
            }
        }
        Gateway {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            logs,
            config_path,
            _dir: dir,
        }
    }
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Wait until log lines contain `needle` `count` times in all; panics after `within`.
    pub fn wait_log(&self, needle: &str, count: usize, within: Duration) {
        let seen = || {
            let logs = self.logs.lock().unwrap();
            logs.iter().filter(|l| l.contains(needle)).count()
        };
        poll(format!("{count} log line(s) with `{needle}`"), within)
            .showing(|| self.logs())
            .until(|| seen() >= count);
    }

    /// The value of one sample on /metrics, e.g. `rategate_config_reloads_total{result="ok"}`
    /// (labels in the order the exposition prints them, i.e. sorted by name).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = client()
            .get(self.admin_url("/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        metric_value(&text, series)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for the process to exit and return its exit code (`None`: ended by a signal);
    /// panics with the logs if it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let (child, logs) = (&mut self.child, &self.logs);
        let status = poll("the gateway to exit", within)
            .showing(|| logs.lock().unwrap().join("\n"))
            .until(|| child.try_wait().ok().flatten());
        status.code()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series` in Prometheus text `text`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// A raw HTTP/1.1 exchange: writes `request` bytes as given and reads until the server closes
/// (send `Connection: close`) or `timeout`. Returns the whole response text.
pub fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Status code of a raw response.
pub fn raw_status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A simple GET through a raw socket with `extra` header lines (each ending in \r\n).
pub fn raw_get(addr: SocketAddr, path: &str, extra: &str) -> String {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// A blocking reqwest client that never pools across tests.
pub fn client() -> reqwest::blocking::Client {
    install_crypto();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// reqwest is built without a bundled crypto provider (only ring may be in the build).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
