//! HTTP as the RFCs require of an intermediary, through the real binary over
//! raw sockets: Host rules, upstream framing, malformed client bodies, unsolicited upgrades,
//! the `bad_request` decision and client-IP headers from untrusted peers.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const ROUTES: &str = r#"
[[route]]
name = "echo"
path_prefix = "/"
upstream = "api"
"#;

fn gateway(upstream: &str) -> Gateway {
    Gateway::start(&config_with(upstream, ROUTES))
}

fn requests(gw: &Gateway, route: &str, decision: &str) -> f64 {
    gw.metric(&format!(
        "rategate_requests_total{{decision=\"{decision}\",route=\"{route}\"}}"
    ))
    .unwrap_or(0.0)
}

fn upstream_errors(gw: &Gateway, kind: &str) -> f64 {
    gw.metric(&format!(
        "rategate_upstream_errors_total{{kind=\"{kind}\",upstream=\"api\"}}"
    ))
    .unwrap_or(0.0)
}

/// How long a request may take to show in the metrics (recorded after it was answered).
const RECORDED_WITHIN: Duration = Duration::from_secs(5);

/// A response split into status, lower-cased header lines and the body with chunked framing
/// removed (the raw body when it is not chunked).
struct Parsed {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Parsed {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn parse(raw: &[u8]) -> Parsed {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = raw_status(lines.next().unwrap_or_default());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().ends_with("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Parsed {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            panic!("truncated chunked body");
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        assert!(data.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Write `request` and read until the server closes (or 5 s pass).
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// An upstream that answers every connection with the same bytes, whatever was asked, then
/// closes: it misbehaves in ways a real HTTP library would refuse to.
struct RawUpstream {
    addr: SocketAddr,
    heads: Arc<AtomicUsize>,
}

impl RawUpstream {
    fn start(response: &'static [u8]) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(AtomicUsize::new(0));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.write_all(response);
                    let _ = stream.flush();
                    let _ = stream.shutdown(Shutdown::Write);
                    // Let the gateway read everything before the socket goes away.
                    std::thread::sleep(Duration::from_millis(200));
                });
            }
        });
        RawUpstream { addr, heads }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

// ---- Host (RFC 9112 section 3.2) ----

#[test]
fn http11_request_without_host_is_400_and_not_forwarded() {
    let echo = Echo::start();
    let gw = gateway(&echo.url());
    let resp = raw(gw.addr, b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(&resp), 400, "{resp}");
    assert!(resp.contains("\"error\":\"bad_request\""), "{resp}");
    assert_eq!(
        echo.count(),
        0,
        "a request without Host reached the upstream"
    );
}

#[test]
fn two_host_lines_are_400_and_not_forwarded() {
    let echo = Echo::start();
    let gw = gateway(&echo.url());
    for request in [
        "GET /a HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        // Two identical lines are still two Host lines.
        "GET /a HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        // HTTP/1.0 may omit Host, but never send two.
        "GET /a HTTP/1.0\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    ] {
        let resp = raw(gw.addr, request.as_bytes());
        assert_eq!(raw_status(&resp), 400, "{request:?}: {resp}");
    }
    assert_eq!(echo.count(), 0);
}

#[test]
fn invalid_or_conflicting_host_is_400() {
    let echo = Echo::start();
    let gw = gateway(&echo.url());
    for request in [
        // Not a host[:port].
        "GET /a HTTP/1.1\r\nHost: a b.example\r\nConnection: close\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: user@a.example\r\nConnection: close\r\n\r\n",
        // Absolute form naming another host than Host (RFC 9112 section 3.2.2).
        "GET http://a.example/a HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    ] {
        let resp = raw(gw.addr, request.as_bytes());
        assert_eq!(raw_status(&resp), 400, "{request:?}: {resp}");
    }
    assert_eq!(echo.count(), 0);
}

#[test]
fn valid_host_forms_and_http10_without_host_are_forwarded() {
    let echo = Echo::start();
    let gw = gateway(&echo.url());
    for request in [
        "GET /a HTTP/1.0\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a.example:8080\r\nConnection: close\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
        "GET http://A.example/a HTTP/1.1\r\nHost: a.EXAMPLE\r\nConnection: close\r\n\r\n",
    ] {
        let resp = raw(gw.addr, request.as_bytes());
        assert_eq!(raw_status(&resp), 200, "{request:?}: {resp}");
    }
    assert_eq!(echo.count(), 4);
}

// ---- decisions ----

#[test]
fn requests_refused_before_routing_count_as_bad_request() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(
        &echo.url(),
        "[[route]]\nname = \"get\"\npath_prefix = \"/\"\nmethods = [\"GET\"]\nupstream = \"api\"\n",
    ));
    // No Host, a path climbing above the root, a head over max_header_bytes (16 KiB default:
    // hyper answers 431 itself), and one that matches no route.
    assert_eq!(
        raw_status(&raw(
            gw.addr,
            b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"
        )),
        400
    );
    assert_eq!(raw_status(&raw_get(gw.addr, "/../etc", "")), 400);
    let big = format!("X-Big: {}\r\n", "a".repeat(20_000));
    assert_eq!(raw_status(&raw_get(gw.addr, "/a", &big)), 431);
    assert_eq!(
        raw_status(&raw(
            gw.addr,
            b"DELETE /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )),
        404
    );
    poll("3 bad_request requests to be recorded", RECORDED_WITHIN)
        .showing(|| format!("bad_request = {}", requests(&gw, "", "bad_request")))
        .until(|| requests(&gw, "", "bad_request") >= 3.0);
    assert_eq!(requests(&gw, "", "bad_request"), 3.0);
    assert_eq!(requests(&gw, "", "no_route"), 1.0);
    assert_eq!(echo.count(), 0);
}

#[test]
fn head_over_max_header_bytes_below_the_buffer_counts_as_bad_request() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(&echo.url(), ROUTES).set("server.max_header_bytes", 1024));
    let big = format!("X-Big: {}\r\n", "a".repeat(2_000));
    assert_eq!(raw_status(&raw_get(gw.addr, "/a", &big)), 431);
    poll("1 bad_request request to be recorded", RECORDED_WITHIN)
        .until(|| requests(&gw, "", "bad_request") == 1.0);
    assert_eq!(requests(&gw, "", "no_route"), 0.0);
}

// ---- upstream framing (RFC 9112 section 6.3) ----

const TE_AND_CL: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\
Content-Type: text/plain\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";

const GZIP_CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\
Content-Length: 3\r\nConnection: close\r\n\r\n4\r\n\x1f\x8b\x08\x00\r\n3\r\nabc\r\n0\r\n\r\n";

#[test]
fn upstream_transfer_encoding_wins_over_content_length() {
    let up = RawUpstream::start(TE_AND_CL);
    let gw = gateway(&up.url());
    let resp = parse(&exchange(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.all("content-length"),
        Vec::<&str>::new(),
        "stale Content-Length relayed"
    );
    assert_eq!(resp.body, b"hello world");
    assert_eq!(up.heads.load(Ordering::SeqCst), 1);
}

#[test]
fn upstream_transfer_coding_is_kept_and_reframed() {
    let up = RawUpstream::start(GZIP_CHUNKED);
    let gw = gateway(&up.url());
    let resp = parse(&exchange(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.all("transfer-encoding"), ["gzip, chunked"]);
    assert_eq!(resp.all("content-length"), Vec::<&str>::new());
    assert_eq!(resp.body, b"\x1f\x8b\x08\x00abc");
}

#[test]
fn upstream_transfer_coding_to_a_client_that_cannot_take_it_is_502() {
    // HTTP/1.0 has no Transfer-Encoding: relaying the gzip bytes unmarked would corrupt them.
    let up = RawUpstream::start(GZIP_CHUNKED);
    let gw = gateway(&up.url());
    let resp = parse(&exchange(gw.addr, b"GET /a HTTP/1.0\r\nHost: t\r\n\r\n"));
    assert_eq!(resp.status, 502);
}

/// One request over HTTP/2 (prior knowledge, cleartext): status, headers and the whole body.
fn h2_get(addr: SocketAddr) -> (u16, http::HeaderMap, Result<Vec<u8>, String>) {
    use http_body_util::{BodyExt, Empty};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://{addr}/a"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
            .await
            .unwrap()
            .map(|b| b.to_bytes().to_vec())
            .map_err(|e| e.to_string());
        (status, headers, body)
    })
}

#[test]
fn http2_client_gets_the_whole_body_and_no_stale_length() {
    let up = RawUpstream::start(TE_AND_CL);
    let gw = gateway(&up.url());
    let (status, headers, body) = h2_get(gw.addr);
    assert_eq!(status, 200);
    assert!(headers.get("content-length").is_none(), "{headers:?}");
    assert_eq!(body.as_deref(), Ok(&b"hello world"[..]));

    // HTTP/2 has no transfer codings: the gzip-coded bytes cannot be relayed faithfully.
    let up = RawUpstream::start(GZIP_CHUNKED);
    let gw = gateway(&up.url());
    let (status, _, _) = h2_get(gw.addr);
    assert_eq!(status, 502);
}

// ---- unsolicited upgrade ----

#[test]
fn upstream_101_without_an_upgrade_request_is_502() {
    let up = RawUpstream::start(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\
raw bytes of another protocol",
    );
    let gw = gateway(&up.url());
    let resp = exchange(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(raw_status(&text), 502, "{text}");
    assert!(!text.contains("another protocol"), "{text}");
    assert_eq!(up.heads.load(Ordering::SeqCst), 1);
    poll("1 protocol error to be recorded", RECORDED_WITHIN)
        .until(|| upstream_errors(&gw, "protocol") == 1.0);
}

// ---- malformed client bodies are the client's fault ----

#[test]
fn malformed_chunked_request_body_is_400_and_not_an_upstream_error() {
    let echo = Echo::start();
    let gw = gateway(&echo.url());
    for body in [
        // Not a hexadecimal size.
        "zz\r\nhello\r\n0\r\n\r\n",
        // A size that overflows 64 bits.
        "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    ] {
        let request = format!(
            "POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n{body}"
        );
        let resp = raw(gw.addr, request.as_bytes());
        assert_eq!(raw_status(&resp), 400, "{body:?}: {resp}");
        assert!(resp.contains("\"error\":\"bad_request_body\""), "{resp}");
    }
    poll("2 allowed requests to be recorded", RECORDED_WITHIN)
        .until(|| requests(&gw, "echo", "allowed") == 2.0);
    for kind in ["reset", "connect", "timeout", "protocol"] {
        assert_eq!(upstream_errors(&gw, kind), 0.0, "kind {kind}");
    }
}

#[test]
fn client_leaving_mid_body_is_not_an_upstream_error() {
    let echo = Echo::start();
    let gw = gateway(&echo.url());
    let mut stream = TcpStream::connect(gw.addr).unwrap();
    stream
        .write_all(b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nonly a part")
        .unwrap();
    // Give the gateway time to start forwarding; then the client goes away mid-body.
    std::thread::sleep(Duration::from_millis(300));
    stream.shutdown(Shutdown::Both).unwrap();
    drop(stream);
    poll("the request to be recorded", RECORDED_WITHIN)
        .showing(|| gw.logs())
        .until(|| requests(&gw, "echo", "allowed") == 1.0);
    assert_eq!(upstream_errors(&gw, "reset"), 0.0, "{}", gw.logs());
}

// ---- client-IP headers (server.forward_client_ip_headers) ----

const CLIENT_IP_HEADERS: &str = "X-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6;proto=https\r\n\
True-Client-IP: 6.6.6.6\r\nCF-Connecting-IP: 6.6.6.6\r\nX-Client-IP: 6.6.6.6\r\n\
X-Cluster-Client-IP: 6.6.6.6\r\nFastly-Client-IP: 6.6.6.6\r\n";
const CLIENT_IP_NAMES: [&str; 7] = [
    "x-real-ip",
    "forwarded",
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
];

#[test]
fn client_ip_headers_from_an_untrusted_peer_are_removed() {
    let echo = Echo::start();
    let gw = gateway(&echo.url());
    assert_eq!(raw_status(&raw_get(gw.addr, "/a", CLIENT_IP_HEADERS)), 200);
    let seen = echo.seen();
    for name in CLIENT_IP_NAMES {
        assert_eq!(seen[0].header(name), None, "{name} reached the upstream");
    }
    // Other headers are untouched.
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn client_ip_headers_from_a_trusted_proxy_pass_unchanged() {
    let echo = Echo::start();
    let gw = Gateway::start(
        &config_with(&echo.url(), ROUTES).set("server.trusted_proxies", vec!["127.0.0.1"]),
    );
    assert_eq!(raw_status(&raw_get(gw.addr, "/a", CLIENT_IP_HEADERS)), 200);
    let seen = echo.seen();
    assert_eq!(seen[0].header("x-real-ip"), Some("6.6.6.6"));
    assert_eq!(seen[0].header("forwarded"), Some("for=6.6.6.6;proto=https"));
    assert_eq!(seen[0].header("true-client-ip"), Some("6.6.6.6"));
    assert_eq!(seen[0].header("cf-connecting-ip"), Some("6.6.6.6"));
    assert_eq!(seen[0].header("x-client-ip"), Some("6.6.6.6"));
    assert_eq!(seen[0].header("x-cluster-client-ip"), Some("6.6.6.6"));
    assert_eq!(seen[0].header("fastly-client-ip"), Some("6.6.6.6"));
}

#[test]
fn forward_client_ip_headers_false_passes_them_from_anyone() {
    let echo = Echo::start();
    let gw = Gateway::start(
        &config_with(&echo.url(), ROUTES).set("server.forward_client_ip_headers", false),
    );
    assert_eq!(raw_status(&raw_get(gw.addr, "/a", CLIENT_IP_HEADERS)), 200);
    let seen = echo.seen();
    for name in CLIENT_IP_NAMES {
        assert!(seen[0].header(name).is_some(), "{name} was removed");
    }
}
