//! Every connection is bounded in time and number, black-box through the real binary: the header
//! read timeout from accept (HTTP/1 and HTTP/2, proxy and admin port), the idle timeout, HTTP/2
//! keep-alive pings, the send timeout for clients that stop reading (and the upstream connection
//! they held), the connection ceiling, and recovery from descriptor exhaustion.

#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

const ROUTE: &str = "[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"api\"\n";
/// Generous against 1 s timeouts on a loaded machine; untimed, these would be held for ever.
const CLOSED_WITHIN: Duration = Duration::from_secs(6);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// `config_with` and a roomy upstream timeout; tests set the `[server]` bounds they exercise.
fn config(upstream: &str) -> TestConfig {
    config_with(upstream, ROUTE).set("upstream.timeout", "20s")
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Preface and an empty SETTINGS frame.
fn h2_start() -> Vec<u8> {
    let mut out = H2_PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out
}

/// An HPACK block for `GET http://x{path}` (static-table names, literal values).
fn get_block(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 0x01, b'x']);
    block
}

fn connect(addr: SocketAddr, send: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    if !send.is_empty() {
        s.write_all(send).unwrap();
    }
    s
}

/// Reads (and discards) until the peer closes; false if it is still open at `deadline`.
fn closed_by(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Read one HTTP/1.1 response with a Content-Length body from a kept-alive connection.
fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

fn metric(gw: &Gateway, series: &str) -> f64 {
    gw.metric(series).unwrap_or(-1.0)
}

fn wait_metric(gw: &Gateway, series: &str, want: f64) {
    poll(format!("{series} = {want}"), Duration::from_secs(10))
        .every(Duration::from_millis(50))
        .until(|| metric(gw, series) == want);
}

#[test]
fn heads_that_never_complete_are_closed_after_header_read_timeout() {
    let echo = Echo::start();
    let gw = Gateway::start(
        &config(&echo.url())
            .set("server.header_read_timeout", "1s")
            .set("server.idle_timeout", "30s"),
    );
    // A second head on a kept-alive HTTP/1 connection gets the same bound, counted from its
    // first byte rather than from the end of the previous response.
    let mut second = connect(gw.addr, b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(&mut second);
    let mut headers_only = h2_start();
    // HEADERS without END_HEADERS, and no CONTINUATION ever.
    headers_only.extend(frame(0x1, END_STREAM, 1, &get_block("/")[..3]));
    let mut cases = vec![
        ("silent", connect(gw.addr, b"")),
        (
            "partial HTTP/2 preface",
            connect(gw.addr, &H2_PREFACE[..10]),
        ),
        (
            "preface + SETTINGS, no HEADERS",
            connect(gw.addr, &h2_start()),
        ),
        (
            "HTTP/2 header block never ends",
            connect(gw.addr, &headers_only),
        ),
        (
            "partial HTTP/1 head",
            connect(gw.addr, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "),
        ),
    ];
    second
        .write_all(b"GET /second HTTP/1.1\r\nHost: x\r\nX-Sl")
        .unwrap();
    cases.push(("partial second HTTP/1 head", second));
    let deadline = Instant::now() + CLOSED_WITHIN;
    for (name, s) in &mut cases {
        assert!(
            closed_by(s, deadline),
            "{name}: still open after {CLOSED_WITHIN:?}"
        );
    }
    assert_eq!(echo.count(), 1, "only the complete request was forwarded");
    let timed_out = metric(
        &gw,
        "rategate_connections_timed_out_total{listener=\"proxy\",reason=\"header_read\"}",
    );
    assert_eq!(timed_out, 6.0);
    wait_metric(&gw, "rategate_connections_active", 0.0);
}

#[test]
fn admin_port_closes_heads_that_never_complete() {
    let echo = Echo::start();
    let gw = Gateway::start(&config(&echo.url()).set("server.header_read_timeout", "1s"));
    let mut cases = [
        ("silent", connect(gw.admin, b"")),
        (
            "partial HTTP/2 preface",
            connect(gw.admin, &H2_PREFACE[..10]),
        ),
        (
            "preface + SETTINGS, no HEADERS",
            connect(gw.admin, &h2_start()),
        ),
        (
            "partial HTTP/1 head",
            connect(gw.admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
        ),
    ];
    let deadline = Instant::now() + CLOSED_WITHIN;
    for (name, s) in &mut cases {
        assert!(
            closed_by(s, deadline),
            "admin, {name}: still open after {CLOSED_WITHIN:?}"
        );
    }
    let timed_out = metric(
        &gw,
        "rategate_connections_timed_out_total{listener=\"admin\",reason=\"header_read\"}",
    );
    assert_eq!(timed_out, 4.0);
}

#[test]
fn idle_http1_connection_closes_after_idle_timeout() {
    let echo = Echo::start();
    let gw = Gateway::start(
        &config(&echo.url())
            .set("server.header_read_timeout", "30s")
            .set("server.idle_timeout", "1s"),
    );
    let mut s = connect(gw.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(raw_status(&read_response(&mut s)), 200);
    assert!(closed_by(&mut s, Instant::now() + CLOSED_WITHIN));
    assert_eq!(
        metric(
            &gw,
            "rategate_connections_timed_out_total{listener=\"proxy\",reason=\"idle\"}"
        ),
        1.0
    );
}

#[test]
fn idle_http1_connection_outlives_header_read_timeout() {
    let echo = Echo::start();
    let gw = Gateway::start(
        &config(&echo.url())
            .set("server.header_read_timeout", "1s")
            .set("server.idle_timeout", "30s"),
    );
    let mut s = connect(gw.addr, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(raw_status(&read_response(&mut s)), 200);
    // Idle for well past header_read_timeout: the connection is kept (not cut at 1 s).
    assert!(!closed_by(
        &mut s,
        Instant::now() + Duration::from_millis(2500)
    ));
    s.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(raw_status(&read_response(&mut s)), 200);
}

#[test]
fn idle_http2_connection_closes_after_idle_timeout() {
    let echo = Echo::start();
    let gw = Gateway::start(
        &config(&echo.url())
            .set("server.header_read_timeout", "30s")
            .set("server.idle_timeout", "1s"),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        // hyper's client answers the gateway's pings, so only idleness can end this connection.
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let req = hyper::Request::get(format!("http://{}/", gw.addr))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        let ended = tokio::time::timeout(CLOSED_WITHIN, conn).await;
        assert!(ended.is_ok(), "idle HTTP/2 connection still open");
    });
    assert_eq!(
        metric(
            &gw,
            "rategate_connections_timed_out_total{listener=\"proxy\",reason=\"idle\"}"
        ),
        1.0
    );
}

#[test]
fn http2_peer_that_does_not_answer_pings_is_closed() {
    let echo = Echo::start();
    // Pings go out after min(20 s, idle_timeout) of silence and must be answered as fast.
    let gw = Gateway::start(
        &config(&echo.url())
            .set("server.header_read_timeout", "30s")
            .set("server.idle_timeout", "1s"),
    );
    let mut send = h2_start();
    // A request the upstream answers only after 10 s keeps the connection busy, not idle.
    send.extend(frame(
        0x1,
        END_STREAM | END_HEADERS,
        1,
        &get_block("/slow/10000"),
    ));
    let mut s = connect(gw.addr, &send);
    assert!(
        closed_by(&mut s, Instant::now() + CLOSED_WITHIN),
        "a peer ignoring pings was kept"
    );
    for reason in ["header_read", "idle", "send"] {
        let series = format!(
            "rategate_connections_timed_out_total{{listener=\"proxy\",reason=\"{reason}\"}}"
        );
        assert_eq!(metric(&gw, &series), 0.0, "{reason}");
    }
}

/// An upstream answering `/endless` with an endless body, noting when hyper drops it (the
/// gateway's upstream connection is gone), `/big` with two chunks of 192 KB, and any other path
/// with a short one (an endless body that ends after one chunk).
struct Endless {
    addr: SocketAddr,
    dropped: Arc<AtomicBool>,
    _runtime: tokio::runtime::Runtime,
}

struct EndlessBody {
    chunk: Bytes,
    dropped: Arc<AtomicBool>,
    /// Chunks left; `None`: no end.
    left: Option<u32>,
}

impl Body for EndlessBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.left {
            Some(0) => return Poll::Ready(None),
            Some(n) => *n -= 1,
            None => {}
        }
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

impl Drop for EndlessBody {
    fn drop(&mut self) {
        if self.left.is_none() {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }
}

impl Endless {
    fn start() -> Endless {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let flag = flag.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (size, left) = match req.uri().path() {
                            "/endless" => (16384, None),
                            "/big" => (BIG_CHUNK, Some(2)),
                            _ => (100, Some(1)),
                        };
                        let body = EndlessBody {
                            chunk: Bytes::from(vec![b'x'; size]),
                            dropped: flag.clone(),
                            left,
                        };
                        async move { Ok::<_, Infallible>(hyper::Response::new(body)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Endless {
            addr,
            dropped,
            _runtime: runtime,
        }
    }
}

/// A gateway with a 1 s `send_timeout` (the others roomy) in front of an [`Endless`].
fn behind_endless() -> (Endless, Gateway) {
    let upstream = Endless::start();
    let gw = Gateway::start(
        &config(&format!("http://{}", upstream.addr))
            .set("server.header_read_timeout", "30s")
            .set("server.idle_timeout", "30s")
            .set("server.send_timeout", "1s"),
    );
    (upstream, gw)
}

fn assert_cut_for_not_reading(request: &[u8]) {
    let (upstream, gw) = behind_endless();
    // Never reads: the socket buffers (HTTP/1) or the flow-control window (HTTP/2) fill up.
    let mut s = connect(gw.addr, request);
    poll(
        "the upstream's stream to a client that stopped reading to be dropped",
        Duration::from_secs(10),
    )
    .until(|| upstream.dropped.load(Ordering::SeqCst));
    assert!(closed_by(&mut s, Instant::now() + Duration::from_secs(10)));
    assert_eq!(
        metric(
            &gw,
            "rategate_connections_timed_out_total{listener=\"proxy\",reason=\"send\"}"
        ),
        1.0
    );
}

#[test]
fn http1_client_that_stops_reading_is_cut_and_the_upstream_freed() {
    assert_cut_for_not_reading(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n");
}

#[test]
fn http2_client_that_withholds_window_updates_is_cut_and_the_upstream_freed() {
    let mut send = h2_start();
    send.extend(frame(
        0x1,
        END_STREAM | END_HEADERS,
        1,
        &get_block("/endless"),
    ));
    assert_cut_for_not_reading(&send);
}

/// The same client keeps the connection busy with other streams while one stream's window stays
/// shut: the stalled stream (and the upstream connection it holds) still ends after
/// `send_timeout`, with its connection.
#[test]
fn http2_stream_stalled_beside_busy_streams_is_cut_and_the_upstream_freed() {
    let (upstream, gw) = behind_endless();
    let mut send = h2_start();
    // The connection's window is wide open; only stream 1's own (65,535 bytes) fills up.
    send.extend(frame(0x8, 0, 0, &(1u32 << 30).to_be_bytes()));
    send.extend(frame(
        0x1,
        END_STREAM | END_HEADERS,
        1,
        &get_block("/endless"),
    ));
    let mut s = connect(gw.addr, &send);
    let closed = Arc::new(AtomicBool::new(false));
    let mut reader = s.try_clone().unwrap();
    let seen_closed = closed.clone();
    let read = std::thread::spawn(move || {
        if closed_by(&mut reader, Instant::now() + Duration::from_secs(20)) {
            seen_closed.store(true, Ordering::SeqCst);
        }
    });
    // A short request on a new stream every 200 ms: progress on the connection throughout.
    let started = Instant::now();
    let mut stream = 3u32;
    while !closed.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(15) {
        let request = frame(0x1, END_STREAM | END_HEADERS, stream, &get_block("/small"));
        if s.write_all(&request).is_err() {
            break;
        }
        stream += 2;
        std::thread::sleep(Duration::from_millis(200));
    }
    // Closed while the other streams were still moving (the loop ran for at most 15 s), not
    // once they stopped (which the connection-wide rule would catch).
    let sending_until = started.elapsed();
    read.join().unwrap();
    assert!(closed.load(Ordering::SeqCst));
    assert!(sending_until < Duration::from_secs(15));
    assert!(stream > 9, "other streams were sent while stream 1 stalled");
    poll(
        "the stalled stream's upstream body to be dropped",
        Duration::from_secs(10),
    )
    .until(|| upstream.dropped.load(Ordering::SeqCst));
    assert_eq!(
        metric(
            &gw,
            "rategate_connections_timed_out_total{listener=\"proxy\",reason=\"send\"}"
        ),
        1.0
    );
}

const BIG_CHUNK: usize = 192 * 1024;

/// An honest HTTP/2 client reading one large response slowly but steadily through the default
/// 64 KB stream window (64 KB/s): a frame of the upstream's 192 KB chunks takes longer than
/// `send_timeout` to pass, but something moves all the time, so the stream is never cut.
#[test]
fn http2_slow_steady_reader_is_not_cut() {
    let upstream = Endless::start();
    let gw = Gateway::start(
        &config(&format!("http://{}", upstream.addr)).set("server.send_timeout", "1s"),
    );
    install_crypto();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let read = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(65_535)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await.unwrap();
        let req = http::Request::get(format!("http://{}/big", gw.addr))
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut read = 0;
        while let Some(chunk) = body.data().await {
            let Ok(chunk) = chunk else { break };
            read += chunk.len();
            // 16 KB per 250 ms, released only then: the window opens at the reader's pace.
            tokio::time::sleep(Duration::from_millis(
                u64::try_from(chunk.len()).unwrap() * 250 / 16384,
            ))
            .await;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        read
    });
    assert_eq!(read, 2 * BIG_CHUNK);
    assert_eq!(
        metric(
            &gw,
            "rategate_connections_timed_out_total{listener=\"proxy\",reason=\"send\"}"
        ),
        0.0
    );
}

#[test]
fn connections_past_max_connections_are_closed_at_once() {
    let echo = Echo::start();
    let gw = Gateway::start(
        &config(&echo.url())
            .set("server.header_read_timeout", "30s")
            .set("server.max_connections", 2),
    );
    let mut first = connect(gw.addr, b"");
    let _second = connect(gw.addr, b"");
    wait_metric(&gw, "rategate_connections_active", 2.0);
    let mut third = connect(gw.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // Closed without an answer, long before the 30 s header timeout could.
    assert!(closed_by(&mut third, Instant::now() + CLOSED_WITHIN));
    assert_eq!(
        metric(
            &gw,
            "rategate_connections_rejected_total{listener=\"proxy\"}"
        ),
        1.0
    );
    assert_eq!(metric(&gw, "rategate_connections_active"), 2.0);
    // A freed slot is usable again.
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let _ = read_response(&mut first);
    wait_metric(&gw, "rategate_connections_active", 1.0);
    assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200);
    assert_eq!(echo.count(), 2);
}

/// The statuses of `n` GETs of `path`, each on a connection of its own, sent at once.
fn at_once(addr: SocketAddr, path: &'static str, n: usize) -> Vec<u16> {
    let sent: Vec<_> = (0..n)
        .map(|_| std::thread::spawn(move || raw_status(&raw_get(addr, path, ""))))
        .collect();
    sent.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Open `n` connections that never send a byte.
fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| connect(addr, b"")).collect()
}

/// Retries a GET until it is answered 200; panics with the logs if none is by `within`.
fn served_again(gw: &Gateway, within: Duration) {
    poll(
        "the listener to serve again after the header timeout",
        within,
    )
    .every(Duration::from_millis(100))
    .showing(|| gw.logs())
    .until(|| raw_status(&raw_get(gw.addr, "/", "")) == 200);
}

#[test]
fn derived_ceiling_keeps_descriptors_for_the_listener_under_a_low_fd_limit() {
    let echo = Echo::start();
    let gw = Gateway::builder(&config(&echo.url()).set("server.header_read_timeout", "1s"))
        .fd_limit(160)
        .start();
    let silent = flood(gw.addr, 200);
    served_again(&gw, Duration::from_secs(20));
    drop(silent);
    // The ceiling, not EMFILE, turned the flood away.
    assert!(
        metric(
            &gw,
            "rategate_connections_rejected_total{listener=\"proxy\"}"
        ) > 0.0
    );
    assert!(!gw.logs().contains("accept failed"), "{}", gw.logs());
    wait_metric(&gw, "rategate_connections_active", 0.0);
}

#[test]
fn accept_backs_off_at_emfile_and_serves_again_when_descriptors_free_up() {
    let echo = Echo::start();
    // A ceiling above the fd limit, so accept itself fails with EMFILE; a header timeout long
    // enough that the flood is still held when the process runs out.
    let gw = Gateway::builder(
        &config(&echo.url())
            .set("server.header_read_timeout", "3s")
            .set("server.max_connections", 100000),
    )
    .fd_limit(160)
    .start();
    let silent = flood(gw.addr, 200);
    gw.wait_log("Too many open files", 1, Duration::from_secs(10));
    served_again(&gw, Duration::from_secs(30));
    drop(silent);
    wait_metric(&gw, "rategate_connections_active", 0.0);
}

#[test]
fn changing_a_connection_bound_on_reload_says_a_restart_is_needed() {
    let echo = Echo::start();
    let before = config(&echo.url()).set("server.idle_timeout", "30s");
    let gw = Gateway::start(&before);
    let after = before
        .set("server.idle_timeout", "5s")
        .set("server.send_timeout", "5s")
        .set("server.max_connections", 10);
    std::fs::write(&gw.config_path, after.to_string()).unwrap();
    gw.signal("HUP");
    gw.wait_log(
        "server.idle_timeout, server.send_timeout, server.max_connections",
        1,
        Duration::from_secs(10),
    );
}

#[test]
fn admin_port_holds_at_most_64_connections() {
    let echo = Echo::start();
    let gw = Gateway::start(&config(&echo.url()).set("server.header_read_timeout", "30s"));
    let held = flood(gw.admin, 64);
    let deadline = Instant::now() + Duration::from_secs(10);
    // Past the ceiling, connections are closed at once, long before the 30 s header timeout.
    let mut extra = connect(gw.admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        closed_by(&mut extra, deadline),
        "65th admin connection kept"
    );
    drop(held);
    // Slots free up as the held connections close; the rejection was counted (a scrape racing
    // the closes may be turned away and counted too, hence at least 1).
    poll(
        "a rejected admin connection to be counted",
        Duration::from_secs(10),
    )
    .every(Duration::from_millis(50))
    .until(|| {
        metric(
            &gw,
            "rategate_connections_rejected_total{listener=\"admin\"}",
        ) >= 1.0
    });
}

/// Each HTTP/2 stream may open an upstream connection of its own, so upstream connections count
/// against a ceiling of their own (`max_connections` of them): the hundreds of streams one client
/// connection may carry cannot take every descriptor. Past it a request gets `503 overloaded`
/// without reaching the upstream, and the target is not blamed.
#[test]
fn upstream_connections_stop_at_the_ceiling() {
    let echo = Echo::start();
    // A roomy connect timeout: it bounds the wait for an idle connection's place.
    let gw = Gateway::start(
        &config(&echo.url())
            .set("server.max_connections", 4)
            .set("upstream.connect_timeout", "10s"),
    );
    install_crypto();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let statuses: Vec<(u16, Option<String>, String)> = rt.block_on(async {
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        // All ten on one client connection (one place) while the first ones wait 3 s upstream.
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let req = client.get(gw.url("/slow/3000"));
                tokio::spawn(async move {
                    let resp = req.send().await.unwrap();
                    let status = resp.status().as_u16();
                    let retry = resp
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_owned());
                    (status, retry, resp.text().await.unwrap_or_default())
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let served = statuses.iter().filter(|(s, ..)| *s == 200).count();
    let refused: Vec<_> = statuses.iter().filter(|(s, ..)| *s == 503).collect();
    assert_eq!(served, 4, "{statuses:?}");
    assert_eq!(refused.len(), 6, "{statuses:?}");
    assert!(
        refused.iter().all(
            |(_, retry, body)| retry.as_deref() == Some("1") && body.contains("\"overloaded\"")
        ),
        "{refused:?}"
    );
    assert_eq!(echo.count(), 4);
    assert_eq!(
        metric(&gw, "rategate_upstream_connections_refused_total"),
        6.0
    );
    // Refused requests never went to the target: they are not counted as sent to it.
    let sent = format!(
        "rategate_upstream_target_requests_total{{target=\"{}\",upstream=\"api\"}}",
        echo.url()
    );
    assert_eq!(metric(&gw, &sent), 4.0);
    // Not an upstream failure: nothing counted against the upstream or its target.
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("rategate_upstream_errors_total{"))
        .collect();
    assert!(errors.iter().all(|l| l.ends_with(" 0")), "{errors:?}");
    // The four connections are idle in one worker's pool now: requests on new connections,
    // whichever worker takes them, are served (reusing one, or reclaiming an idle one's place).
    // A burst of three at once (the fourth client place may still be the HTTP/2 client's),
    // each needing a place an idle connection gives up: none is refused (a waiter whose
    // reclaimed place another took gets the next one freed).
    let burst = at_once(gw.addr, "/slow/300", 3);
    assert_eq!(burst, [200; 3], "{}", gw.logs());
    // The burst's client connections close before the next ones come (client places too).
    poll("the burst's connections closed", Duration::from_secs(10))
        .until(|| metric(&gw, "rategate_connections_active") <= 1.0);
    for _ in 0..6 {
        assert_eq!(raw_status(&raw_get(gw.addr, "/", "")), 200, "{}", gw.logs());
    }
    assert_eq!(
        metric(&gw, "rategate_upstream_connections_refused_total"),
        6.0
    );
    assert!(metric(&gw, "rategate_upstream_connections_open") <= 4.0);
}

/// An HTTP/2 upstream connection no request has taken for a while (one per worker and target,
/// kept for ever otherwise; after a reload, one to an endpoint nobody uses any more) gives its
/// place up when the ceiling needs it, as idle HTTP/1.1 connections do.
#[test]
fn an_unused_http2_upstream_connection_gives_its_place_up() {
    let echo = Echo::start();
    // Roomy timeouts: the wait for a place is bounded by `connect_timeout`.
    let gw = Gateway::start(
        &config_with(&echo.url(), "")
            .set("upstream.timeout", "20s")
            .set("upstream.connect_timeout", "10s")
            .with(&format!(
                "[[upstream]]\nname = \"h2\"\nurl = \"h2c://{}\"\n\n\
                 [[route]]\nname = \"h2\"\npath_prefix = \"/h2\"\nupstream = \"h2\"\n\n{ROUTE}",
                echo.addr
            ))
            .set("server.max_connections", 2),
    );
    assert_eq!(raw_status(&raw_get(gw.addr, "/h2/once", "")), 200);
    assert_eq!(metric(&gw, "rategate_upstream_connections_open"), 1.0);
    // Past the pool's idle time (4 s): the HTTP/2 connection is now unused.
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(at_once(gw.addr, "/slow/1500", 2), [200, 200]);
    assert_eq!(
        metric(&gw, "rategate_upstream_connections_refused_total"),
        0.0
    );
}
