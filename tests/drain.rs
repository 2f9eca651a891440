//! What a request owes the store after its response (a concurrency lease's release, a
//! count-by-response charge) is never lost, black-box: not at shutdown (a request that finishes
//! during the drain, or is cut at `shutdown_grace`, settles in Redis before the process exits,
//! so another instance sees the slot free and the charge counted), and not between two requests
//! of a client that waits for each response (it is settled before the client can see the end of
//! the response, whatever its framing).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::redis::{have_redis, RedisServer};
use common::*;

/// An upstream written for these tests, speaking HTTP/1.1 by hand so every response framing is
/// under control:
/// - `.../slow/<ms>/<status>`: waits, then answers `status` with a small Content-Length body;
/// - `/chunked`: a chunked body of two chunks;
/// - `/empty`: 200 with `Content-Length: 0`;
/// - anything else: 200 with a small Content-Length body.
///
/// Every answer closes the connection, so no pooled connection outlives a test.
struct Upstream {
    addr: SocketAddr,
    /// Requests received so far.
    seen: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let counter = counter.clone();
                std::thread::spawn(move || answer(stream, &counter));
            }
        });
        Upstream { addr, seen }
    }

    /// Wait until the upstream has received `n` requests in all.
    fn wait_seen(&self, n: usize) {
        poll(
            format!("the upstream to get {n} request(s)"),
            Duration::from_secs(10),
        )
        .every(Duration::from_millis(10))
        .until(|| self.seen.load(Ordering::SeqCst) >= n);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn answer(mut stream: TcpStream, seen: &AtomicUsize) {
    let Ok(head) = read_head(&mut BufReader::new(&mut stream)) else {
        return;
    };
    seen.fetch_add(1, Ordering::SeqCst);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut status = 200;
    if let Some(rest) = path.find("/slow/").map(|at| &path[at + "/slow/".len()..]) {
        let mut parts = rest.split('/');
        let ms: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        status = parts.next().and_then(|v| v.parse().ok()).unwrap_or(200);
        std::thread::sleep(Duration::from_millis(ms));
    }
    let reply = match path.as_str() {
        "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                       5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            .to_string(),
        "/empty" => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
        _ => format!(
            "HTTP/1.1 {status} X\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world"
        ),
    };
    let _ = stream.write_all(reply.as_bytes());
}

/// The request or response head, up to the blank line.
fn read_head(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            return Ok(head);
        }
        head.push_str(&line);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A keep-alive HTTP/1.1 client connection that reads each response exactly to its end as the
/// framing says (Content-Length, chunked, or no body for HEAD/204/304), the way a client knows
/// a response is complete without waiting for the connection to close.
struct KeepAlive {
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    fn connect(addr: SocketAddr) -> KeepAlive {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        KeepAlive {
            reader: BufReader::new(stream),
        }
    }

    /// Send one request and read its whole response; returns the status and the body.
    fn send(&mut self, method: &str, path: &str) -> (u16, Vec<u8>) {
        self.send_with(method, path, "")
    }

    /// `send` with extra header lines (each ending in \r\n).
    fn send_with(&mut self, method: &str, path: &str, extra: &str) -> (u16, Vec<u8>) {
        self.reader
            .get_mut()
            .write_all(format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes())
            .unwrap();
        let head = read_head(&mut self.reader).unwrap();
        let status = raw_status(&head);
        let mut body = Vec::new();
        if method == "HEAD" || status == 204 || status == 304 {
            return (status, body);
        }
        if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                if size == 0 {
                    // No trailers: the blank line ends the response.
                    let mut end = String::new();
                    self.reader.read_line(&mut end).unwrap();
                    assert_eq!(end, "\r\n");
                    return (status, body);
                }
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                body.extend_from_slice(&chunk[..size]);
            }
        }
        let length: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no framing in {head}"));
        body.resize(length, 0);
        self.reader.read_exact(&mut body).unwrap();
        (status, body)
    }
}

const POLICIES: &str = r#"
[[policy]]
name = "one-at-a-time"
algorithm = "concurrency"
limit = 1
lease = "60s"

[[policy]]
name = "failed-logins"
algorithm = "fixed_window"
limit = 1
window = "1h"
count_status = [401]

[[policy]]
name = "user-failures"
algorithm = "fixed_window"
limit = 1
window = "1h"
count_status = [401]
key = ["header:x-user"]

[[route]]
name = "user-login"
path_prefix = "/user-login"
upstream = "api"
policies = ["user-failures"]

[[route]]
name = "login"
path_prefix = "/login"
upstream = "api"
policies = ["failed-logins"]

[[route]]
name = "answered"
path_prefix = "/respond"
respond = { status = 200, body = "answered by the gateway" }
policies = ["one-at-a-time"]

[[route]]
name = "empty"
path_prefix = "/nothing"
respond = { status = 204 }
policies = ["one-at-a-time"]

[[route]]
name = "all"
path_prefix = "/"
upstream = "api"
policies = ["one-at-a-time"]
"#;

/// A gateway on `upstream` with the policies above, on Redis at `redis` (or in memory), with
/// `grace` as `shutdown_grace`.
fn config(upstream: &Upstream, redis: Option<&str>, grace: &str) -> TestConfig {
    let config = config_with(&upstream.url(), POLICIES)
        .set("server.shutdown_grace", grace)
        .set("upstream.timeout", "30s");
    match redis {
        Some(url) => config
            .redis_store(url)
            .set("store.key_prefix", "rgdrain:")
            .set("store.timeout", "1s")
            .set("store.on_error", "deny"),
        None => config,
    }
}

/// Leases held in Redis right now, over every concurrency counter.
fn leases_in_redis(redis: &RedisServer) -> usize {
    redis
        .cli(&["--scan", "--pattern", "rgdrain:*:c:c*"])
        .lines()
        .map(|k| redis.cli(&["ZCARD", k]).parse::<usize>().unwrap_or(0))
        .sum()
}

macro_rules! need_redis {
    () => {
        if !have_redis() {
            eprintln!("SKIP: redis-server not installed");
            return;
        }
    };
}

/// Wait until the request started in the background holds its slot in Redis, and check that
/// the other instance `probe` is refused meanwhile.
fn wait_slot_taken(redis: &RedisServer, probe: &Gateway) {
    poll(
        "the background request to take the slot",
        Duration::from_secs(10),
    )
    .until(|| leases_in_redis(redis) == 1);
    let resp = raw_get(probe.addr, "/", "");
    assert_eq!(raw_status(&resp), 429, "{resp}");
}

#[test]
fn a_lease_of_a_request_finishing_during_the_drain_is_released_before_exit() {
    need_redis!();
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let cfg = config(&upstream, Some(&redis.url()), "10s");
    let mut a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    let addr = a.addr;
    let in_flight = std::thread::spawn(move || raw_get(addr, "/slow/1500/200", ""));
    wait_slot_taken(&redis, &b);
    a.signal("TERM");
    let resp = in_flight.join().unwrap();
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(
        a.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        a.logs()
    );
    // Once the instance is gone, nothing of its request may still hold the slot.
    assert_eq!(leases_in_redis(&redis), 0, "{}", a.logs());
    let resp = raw_get(b.addr, "/", "");
    assert_eq!(
        raw_status(&resp),
        200,
        "the other instance is refused: {resp}"
    );
}

#[test]
fn a_lease_of_a_request_cut_at_shutdown_grace_is_released_before_exit() {
    need_redis!();
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let cfg = config(&upstream, Some(&redis.url()), "1s");
    let mut a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    let addr = a.addr;
    // Far longer than the grace: the drain cuts it.
    let cut = std::thread::spawn(move || raw_get(addr, "/slow/20000/200", ""));
    wait_slot_taken(&redis, &b);
    a.signal("TERM");
    assert_eq!(
        a.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        a.logs()
    );
    let _ = cut.join();
    assert!(
        a.logs().contains("shutdown grace elapsed"),
        "the request was not cut: {}",
        a.logs()
    );
    assert_eq!(leases_in_redis(&redis), 0, "{}", a.logs());
    let resp = raw_get(b.addr, "/", "");
    assert_eq!(
        raw_status(&resp),
        200,
        "the other instance is refused: {resp}"
    );
}

#[test]
fn a_401_answered_during_the_drain_is_charged_before_exit() {
    need_redis!();
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let cfg = config(&upstream, Some(&redis.url()), "10s");
    let mut a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    let addr = a.addr;
    let in_flight = std::thread::spawn(move || raw_get(addr, "/login/slow/1500/401", ""));
    // The drain starts while the upstream is still answering it.
    upstream.wait_seen(1);
    a.signal("TERM");
    let resp = in_flight.join().unwrap();
    assert_eq!(raw_status(&resp), 401, "{resp}");
    assert_eq!(
        a.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        a.logs()
    );
    // The one failed login allowed is used up: the other instance refuses the next attempt.
    let resp = raw_get(b.addr, "/login/slow/0/401", "");
    assert_eq!(raw_status(&resp), 429, "the 401 was not charged: {resp}");
}

#[test]
fn a_settlement_that_cannot_reach_redis_at_shutdown_is_logged_and_bounded() {
    need_redis!();
    let mut redis = RedisServer::start();
    let upstream = Upstream::start();
    let cfg = config(&upstream, Some(&redis.url()), "10s");
    let mut a = Gateway::start(&cfg);
    let addr = a.addr;
    let in_flight = std::thread::spawn(move || raw_get(addr, "/slow/1500/200", ""));
    upstream.wait_seen(1);
    // Redis freezes: connections stay open, nothing answers.
    redis.pause();
    a.signal("TERM");
    let _ = in_flight.join();
    assert_eq!(
        a.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        a.logs()
    );
    redis.resume();
    assert!(
        a.logs().contains("could not reach the store"),
        "the lost release was not logged: {}",
        a.logs()
    );
    redis.kill();
}

/// A client that sends its next request only once it has the whole previous response: each
/// response shape, over two keep-alive connections taking turns (the kernel may hand them to
/// different workers), never meets its own previous request's slot.
fn sequential_client_is_never_refused(gw: &Gateway, what: &str) {
    let shapes = [
        ("GET", "/"),
        ("GET", "/chunked"),
        ("GET", "/empty"),
        ("HEAD", "/"),
        ("GET", "/respond"),
        ("GET", "/nothing"),
    ];
    let mut conns = [KeepAlive::connect(gw.addr), KeepAlive::connect(gw.addr)];
    let mut refused = Vec::new();
    for i in 0..360 {
        let (method, path) = shapes[i % shapes.len()];
        let (status, body) = conns[i % 2].send(method, path);
        match status {
            200 | 204 => {}
            429 => refused.push(format!("{method} {path}")),
            other => panic!("{what}: {method} {path}: {other} {body:?}"),
        }
        if (method, path, status) == ("GET", "/chunked", 200) {
            assert_eq!(body, b"hello world", "{what}");
        }
    }
    assert!(
        refused.is_empty(),
        "{what}: {} spurious 429s, e.g. after {:?}",
        refused.len(),
        refused.first()
    );
}

/// A client whose failed login is answered sends its next attempt at once: the failure is
/// already counted (one allowed per user, so every second attempt is refused).
fn sequential_failures_are_counted_before_the_next_attempt(gw: &Gateway, what: &str) {
    let mut conns = [KeepAlive::connect(gw.addr), KeepAlive::connect(gw.addr)];
    let mut uncounted = 0;
    for user in 0..100 {
        let extra = format!("X-User: u{user}\r\n");
        let (status, _) = conns[user % 2].send_with("GET", "/user-login/slow/0/401", &extra);
        assert_eq!(status, 401, "{what}");
        let (status, _) = conns[(user + 1) % 2].send_with("GET", "/user-login/slow/0/401", &extra);
        match status {
            429 => {}
            401 => uncounted += 1,
            other => panic!("{what}: {other}"),
        }
    }
    assert_eq!(
        uncounted, 0,
        "{what}: failures not yet counted at the next attempt"
    );
}

#[test]
fn a_sequential_client_never_meets_its_own_slot_on_the_memory_store() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&config(&upstream, None, "5s"));
    sequential_client_is_never_refused(&gw, "memory");
}

#[test]
fn a_sequential_clients_failures_are_counted_before_its_next_attempt() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&config(&upstream, None, "5s"));
    sequential_failures_are_counted_before_the_next_attempt(&gw, "memory");
    if !have_redis() {
        eprintln!("SKIP (redis part): redis-server not installed");
        return;
    }
    let redis = RedisServer::start();
    let gw = Gateway::start(&config(&upstream, Some(&redis.url()), "5s"));
    sequential_failures_are_counted_before_the_next_attempt(&gw, "redis");
}

#[test]
fn a_sequential_client_never_meets_its_own_slot_on_redis() {
    need_redis!();
    let redis = RedisServer::start();
    let upstream = Upstream::start();
    let gw = Gateway::start(&config(&upstream, Some(&redis.url()), "5s"));
    sequential_client_is_never_refused(&gw, "redis");
}
