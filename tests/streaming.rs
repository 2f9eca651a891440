//! Streaming through the real binary: server-sent events pass one by one with no buffering (also
//! on a route whose concurrency policy settles at the end of the body), a long poll outlives the
//! connection idle timeout, and a client that stops reading slows the upstream down through TCP
//! instead of growing the gateway's memory.
//!
//! The upstreams are raw sockets on threads, so each test decides exactly when bytes are sent.
//! Nothing here asserts how long something took.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use common::{config_with, poll, Gateway};

const WAIT: Duration = Duration::from_secs(30);

/// Reads a request head from `stream` (the tests send no bodies).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// An upstream serving one event stream per connection: the first event at once, the second only
/// when the test says so (after its client saw the first), then the end of the stream.
fn sse_upstream() -> (SocketAddr, Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (go, next) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            read_head(&mut stream);
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                        cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&chunk(b"data: one\n\n")).unwrap();
            if next.recv_timeout(WAIT).is_err() {
                return;
            }
            stream.write_all(&chunk(b"data: two\n\n")).unwrap();
            stream.write_all(b"0\r\n\r\n").unwrap();
        }
    });
    (addr, go)
}

/// Read from `stream` into `seen` until it holds `needle`; panics after `WAIT`.
fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(needle) {
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "closed before `{needle}`: {}",
                String::from_utf8_lossy(seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "no `{needle}` ({e}); so far: {}",
                String::from_utf8_lossy(seen)
            ),
        }
    }
}

#[test]
fn server_sent_events_arrive_one_by_one() {
    let (upstream, go) = sse_upstream();
    let config = config_with(
        &format!("http://{upstream}"),
        r#"
[[policy]]
name = "streams"
algorithm = "concurrency"
limit = 10
lease = "30s"

[[route]]
name = "limited"
path_prefix = "/limited"
upstream = "api"
policies = ["streams"]

[[route]]
name = "plain"
path_prefix = "/"
upstream = "api"
"#,
    )
    .set("upstream.timeout", "30s");
    let gw = Gateway::start(&config);
    // A plain route, and one whose body settles a concurrency lease at its end.
    for path in ["/events", "/limited/events"] {
        let mut client = TcpStream::connect(gw.addr).unwrap();
        write!(
            client,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut seen = Vec::new();
        // The upstream sends the second event only once the first reached the client: a gateway
        // that held the first back would never see this.
        read_until(&mut client, &mut seen, "data: one");
        assert!(
            !String::from_utf8_lossy(&seen).contains("data: two"),
            "{path}"
        );
        go.send(()).unwrap();
        read_until(&mut client, &mut seen, "data: two");
        read_until(&mut client, &mut seen, "0\r\n\r\n");
        let text = String::from_utf8_lossy(&seen);
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
        assert!(text.contains("content-type: text/event-stream"), "{text}");
    }
}

#[test]
fn a_long_poll_outlives_the_idle_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    let (arrived, request_seen) = mpsc::channel::<()>();
    let (answer, answer_now): (Sender<()>, Receiver<()>) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        read_head(&mut stream);
        arrived.send(()).unwrap();
        if answer_now.recv_timeout(WAIT).is_ok() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nupdated");
        }
    });
    let config = config_with(
        &format!("http://{upstream}"),
        "[[route]]\nname = \"poll\"\npath_prefix = \"/\"\nupstream = \"api\"\n",
    )
    .set("server.idle_timeout", "1s")
    .set("upstream.timeout", "30s");
    let gw = Gateway::start(&config);
    let mut client = TcpStream::connect(gw.addr).unwrap();
    client
        .write_all(b"GET /updates HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    request_seen.recv_timeout(WAIT).unwrap();
    // Past the idle timeout (and its sweep's slack) with the request waiting on the upstream.
    std::thread::sleep(Duration::from_millis(2500));
    answer.send(()).unwrap();
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, "updated");
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_client_that_does_not_read_backpressures_the_upstream() {
    const OFFERED: u64 = 1 << 30;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        read_head(&mut stream);
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        let piece = chunk(&[b'x'; 64 * 1024]);
        while counter.load(Ordering::Relaxed) < OFFERED {
            // Blocks once the gateway stops reading; fails once it closes.
            if stream.write_all(&piece).is_err() {
                return;
            }
            counter.fetch_add(64 * 1024, Ordering::Relaxed);
        }
    });
    let config = config_with(
        &format!("http://{upstream}"),
        "[[route]]\nname = \"download\"\npath_prefix = \"/\"\nupstream = \"api\"\n",
    )
    .set("server.send_timeout", "5m");
    let gw = Gateway::start(&config);
    let before = rss_kib(gw.child.id());
    let mut client = TcpStream::connect(gw.addr).unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, "\r\n\r\n");
    // The client reads no more. The upstream fills the buffers on the way and then blocks: wait
    // until what it has sent stops moving.
    let mut last = u64::MAX;
    let stalled_at = poll(
        "the upstream blocked by the client",
        Duration::from_secs(60),
    )
    .every(Duration::from_millis(1000))
    .until(|| {
        let now = sent.load(Ordering::Relaxed);
        let stalled = now == last;
        last = now;
        stalled.then_some(now)
    });
    let grown = rss_kib(gw.child.id()).saturating_sub(before);
    eprintln!("upstream blocked after {stalled_at} bytes; gateway RSS grew {grown} KiB");
    assert!(
        stalled_at < 64 << 20,
        "the upstream sent {stalled_at} bytes to a client that reads nothing"
    );
    assert!(
        grown < 32 * 1024,
        "the gateway grew by {grown} KiB holding a stalled stream ({stalled_at} bytes sent)"
    );
    drop(client);
}
