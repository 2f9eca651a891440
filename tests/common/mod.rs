//! Shared black-box test fixtures: an in-process echo upstream on port 0, the real `rategate`
//! binary started on a temporary config with its listeners on port 0, and a raw HTTP/1.1 client
//! for requests that ordinary clients would "fix" before sending.
#![allow(dead_code)]

pub mod redis;

use std::convert::Infallible;
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
    /// Start the binary with `config` (TOML); `listen` and `admin.listen` should be on port 0.
    pub fn start(config: &str) -> Gateway {
        Self::try_start(config).unwrap_or_else(|logs| panic!("gateway did not start:\n{logs}"))
    }

    pub fn try_start(config: &str) -> Result<Gateway, String> {
        Self::try_start_with_env(config, &[])
    }

    /// Start with extra environment variables (e.g. secrets referenced as `${NAME}`).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gateway {
        Self::try_start_with_env(config, env)
            .unwrap_or_else(|logs| panic!("gateway did not start:\n{logs}"))
    }

    pub fn try_start_with_env(config: &str, env: &[(&str, &str)]) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("rategate.toml");
        std::fs::write(&config_path, config).unwrap();
        Self::try_start_at(dir, config_path, env)
    }

    /// Start on a config file the caller laid out inside `dir` (kept alive by the gateway).
    pub fn start_at(dir: tempfile::TempDir, config_path: PathBuf) -> Gateway {
        Self::try_start_at(dir, config_path, &[])
            .unwrap_or_else(|logs| panic!("gateway did not start:\n{logs}"))
    }

    /// Start with the process's open-file limit (soft and hard) set to `limit`.
    pub fn start_with_fd_limit(config: &str, limit: u64) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("rategate.toml");
        std::fs::write(&config_path, config).unwrap();
        Self::try_start_with(dir, config_path, &[], Some(limit))
            .unwrap_or_else(|logs| panic!("gateway did not start:\n{logs}"))
    }

    fn try_start_at(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        env: &[(&str, &str)],
    ) -> Result<Gateway, String> {
        Self::try_start_with(dir, config_path, env, None)
    }

    fn try_start_with(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        env: &[(&str, &str)],
        fd_limit: Option<u64>,
    ) -> Result<Gateway, String> {
        let bin = env!("CARGO_BIN_EXE_rategate");
        let mut command = match fd_limit {
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
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
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
                    return Err(logs.lock().unwrap().join("\n"));
                }
            }
        }
        Ok(Gateway {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            logs,
            config_path,
            _dir: dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Wait until a log line contains `needle` (`count` times in all); false on timeout.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let seen = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .count();
            if seen >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
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

    /// Wait for exit, returning the exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with listeners on port 0 and one upstream named `api` at `upstream`, followed by
/// `rest` (policies and routes).
pub fn config_with(upstream: &str, rest: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"

[admin]
listen = "127.0.0.1:0"

[[upstream]]
name = "api"
url = "{upstream}"
connect_timeout = "1s"
timeout = "2s"

{rest}
"#
    )
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
