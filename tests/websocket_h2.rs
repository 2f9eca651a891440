//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT) through the real binary: an HTTP/2 client
//! (the `h2` crate, over h2c prior knowledge, and once over TLS with h2 chosen by ALPN) opens
//! tunnels to a real WebSocket upstream (Python `websockets`, tests/python/ws.py; `bash
//! tests/python/setup.sh` installs it) and writes its WebSocket frames by hand. Echo, the (limit+1)th CONNECT refused 429 with its headers, a
//! concurrency slot held for the tunnel's life and freed when it closes (memory store and Redis),
//! the idle timeout ending the stream but not its connection, an open tunnel keeping its
//! connection past `idle_timeout`, shutdown, the CONNECTs that are refused (a route without
//! `upgrade`, no `:protocol`, another protocol) and the upstream answers that are not relayed (a
//! wrong `Sec-WebSocket-Accept`, a 2xx without the switch).
//!
//! Nothing here asserts how long something took.

#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Method, Request, StatusCode};
use tokio::runtime::Runtime;

use common::redis::{have_redis, RedisServer};
use common::ws_server::{ws_config, WsServer, ONE_AT_A_TIME};
use common::{config_with, poll, raw, raw_status, Gateway, TestConfig};

/// Every wait of the client is bounded by this (a generous deadline, not a timing).
const WAIT: Duration = Duration::from_secs(10);

/// One HTTP/2 connection to the gateway. Its tasks run on a runtime of its own, so the test
/// thread may block (metrics, other clients) while the connection goes on.
struct H2 {
    rt: Runtime,
    send: SendRequest<Bytes>,
    addr: SocketAddr,
    scheme: &'static str,
}

/// The answer to a CONNECT, and its stream when the tunnel opened.
struct Opened {
    status: StatusCode,
    headers: HeaderMap,
    tunnel: Option<Tunnel>,
}

struct Tunnel {
    send: SendStream<Bytes>,
    recv: RecvStream,
    read: Vec<u8>,
}

/// The client's side of the HTTP/2 handshake on `io`; the connection runs on its own task.
async fn handshake<T>(io: T) -> SendRequest<Bytes>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

impl H2 {
    /// h2c with prior knowledge.
    fn connect(gw: &Gateway) -> H2 {
        H2::connect_over(gw, None)
    }

    /// HTTP/2 over TLS chosen by ALPN (`tls` offers only `h2`), or h2c without `tls`.
    fn connect_over(gw: &Gateway, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> H2 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let addr = gw.addr;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let send = rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let send = match tls {
                None => handshake(tcp).await,
                Some(config) => {
                    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                    let stream = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await
                        .unwrap();
                    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                    handshake(stream).await
                }
            };
            let mut send = send.ready().await.unwrap();
            // The server's SETTINGS arrive after the handshake.
            bounded(async {
                while !send.is_extended_connect_protocol_enabled() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            send = send.ready().await.unwrap();
            send
        });
        H2 {
            rt,
            send,
            addr,
            scheme,
        }
    }

    /// An extended CONNECT to `path` with `:protocol` (none: a plain CONNECT to the authority).
    fn connect_to(&mut self, path: &str, protocol: Option<&str>) -> Opened {
        let mut req = match protocol {
            Some(p) => {
                let mut req = Request::builder()
                    .method(Method::CONNECT)
                    .uri(format!("{}://{}{path}", self.scheme, self.addr))
                    .header("sec-websocket-version", "13")
                    .header("sec-websocket-protocol", "chat")
                    .body(())
                    .unwrap();
                req.extensions_mut().insert(h2::ext::Protocol::from(p));
                req
            }
            None => Request::builder()
                .method(Method::CONNECT)
                .uri(self.addr.to_string())
                .body(())
                .unwrap(),
        };
        *req.version_mut() = http::Version::HTTP_2;
        let send = self.send.clone();
        self.rt.block_on(bounded(async move {
            let mut send = send.ready().await.unwrap();
            let (response, stream) = send.send_request(req, false).unwrap();
            let resp = response.await.unwrap();
            let (head, recv) = resp.into_parts();
            let tunnel = (head.status == StatusCode::OK).then(|| Tunnel {
                send: stream,
                recv,
                read: Vec::new(),
            });
            Opened {
                status: head.status,
                headers: head.headers,
                tunnel,
            }
        }))
    }

    fn open(&mut self, path: &str) -> Tunnel {
        let opened = self.connect_to(path, Some("websocket"));
        assert_eq!(opened.status, StatusCode::OK, "{:?}", opened.headers);
        opened.tunnel.unwrap()
    }

    /// Send `text` as one masked WebSocket text frame and read the frame echoed back.
    fn echo(&self, tunnel: &mut Tunnel, text: &str) -> String {
        self.rt.block_on(bounded(tunnel.echo(text)))
    }

    /// End the client's side of the stream and wait until the gateway has ended its side.
    fn close(&self, tunnel: &mut Tunnel) {
        tunnel.send.send_data(Bytes::new(), true).unwrap();
        self.rt.block_on(bounded(tunnel.ended()));
    }

    /// Wait (up to 30 s) for the gateway to end the stream without the client doing anything.
    fn wait_closed(&self, tunnel: &mut Tunnel) {
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), tunnel.ended())
                .await
                .expect("the gateway ended the stream")
        });
    }
}

impl Tunnel {
    async fn echo(&mut self, text: &str) -> String {
        assert!(text.len() < 126, "one-byte payload lengths only");
        // RFC 6455 section 5.2: FIN + text, masked (a client's frames must be).
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x81, 0x80 | text.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.send.reserve_capacity(frame.len());
        self.send.send_data(Bytes::from(frame), false).unwrap();
        // The server's frame: FIN + text, unmasked, the same payload.
        let want = 2 + text.len();
        while self.read.len() < want {
            let chunk = self.recv.data().await.unwrap().unwrap();
            self.recv
                .flow_control()
                .release_capacity(chunk.len())
                .unwrap();
            self.read.extend_from_slice(&chunk);
        }
        let frame: Vec<u8> = self.read.drain(..want).collect();
        assert_eq!(frame[..2], [0x81, text.len() as u8], "{frame:?}");
        String::from_utf8(frame[2..].to_vec()).unwrap()
    }

    /// Resolves once the gateway has ended (or reset) the stream.
    async fn ended(&mut self) {
        while let Some(Ok(chunk)) = self.recv.data().await {
            let _ = self.recv.flow_control().release_capacity(chunk.len());
        }
    }
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("within 10 s")
}

fn metric(gw: &Gateway, series: &str) -> f64 {
    gw.metric(series).unwrap_or(-1.0)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

const TWO_PER_HOUR: &str = r#"
[[policy]]
name = "two"
algorithm = "fixed_window"
limit = 2
window = "1h"
"#;

fn frames_echo(config: TestConfig, server: &WsServer) {
    let gw = Gateway::start(&config);
    let mut h2 = H2::connect(&gw);
    let opened = h2.connect_to("/chat", Some("websocket"));
    assert_eq!(opened.status, StatusCode::OK);
    // The subprotocol the upstream chose is relayed; the accept meant for the gateway is not.
    assert_eq!(
        header(&opened.headers, "sec-websocket-protocol"),
        Some("chat")
    );
    assert!(header(&opened.headers, "sec-websocket-accept").is_none());
    let mut tunnel = opened.tunnel.unwrap();
    assert_eq!(h2.echo(&mut tunnel, "hello"), "hello");
    // A second tunnel on the same connection, beside the first.
    let mut other = h2.open("/other");
    assert_eq!(h2.echo(&mut other, "two"), "two");
    assert_eq!(h2.echo(&mut tunnel, "second"), "second");
    assert_eq!(metric(&gw, "rategate_tunnels_total"), 2.0);
    assert_eq!(metric(&gw, "rategate_tunnels_open"), 2.0);
    // The upstream saw an HTTP/1.1 WebSocket handshake on the CONNECT's path.
    let seen = server.handshakes(2);
    assert!(
        seen.contains(&"HANDSHAKE /chat upgrade=websocket".to_owned()),
        "{seen:?}"
    );
    h2.close(&mut tunnel);
    h2.close(&mut other);
    poll("the tunnel gauge back to 0", WAIT).until(|| metric(&gw, "rategate_tunnels_open") == 0.0);
    assert_eq!(
        metric(
            &gw,
            r#"rategate_requests_total{decision="allowed",route="ws"}"#
        ),
        2.0
    );
}

#[test]
fn frames_echo_over_an_extended_connect_tunnel() {
    let server = WsServer::start();
    frames_echo(ws_config(&server, &[], ""), &server);
}

/// `test` with a fresh Redis (its URL) and WebSocket upstream; skipped without redis-server.
fn on_redis(test: impl FnOnce(&str, &WsServer)) {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let redis = RedisServer::start();
    let server = WsServer::start();
    test(&redis.url(), &server);
}

#[test]
fn frames_echo_over_tls_with_h2_chosen_by_alpn() {
    common::install_crypto();
    let server = WsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let config = ws_config(&server, &[], "")
        .set("server.tls.cert", cert_path.display().to_string())
        .set("server.tls.key", key_path.display().to_string());
    let gw = Gateway::start(&config);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let mut h2 = H2::connect_over(&gw, Some(std::sync::Arc::new(tls)));
    let mut tunnel = h2.open("/secure");
    assert_eq!(h2.echo(&mut tunnel, "over tls"), "over tls");
    assert_eq!(
        server.handshakes(1),
        ["HANDSHAKE /secure upgrade=websocket"]
    );
    h2.close(&mut tunnel);
    poll("the tunnel gauge back to 0", WAIT).until(|| metric(&gw, "rategate_tunnels_open") == 0.0);
}

#[test]
fn frames_echo_over_an_extended_connect_tunnel_on_redis() {
    on_redis(|redis, server| {
        frames_echo(
            ws_config(server, &["two"], TWO_PER_HOUR).redis_store(redis),
            server,
        )
    });
}

fn the_connect_past_the_limit_is_refused(config: TestConfig, server: &WsServer) {
    let gw = Gateway::start(&config);
    let mut h2 = H2::connect(&gw);
    let mut first = h2.open("/");
    let mut second = h2.open("/");
    let third = h2.connect_to("/", Some("websocket"));
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(third.tunnel.is_none());
    assert_eq!(header(&third.headers, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&third.headers, "x-ratelimit-remaining"), Some("0"));
    assert!(header(&third.headers, "retry-after").is_some());
    assert_eq!(
        server.handshakes(2).len(),
        2,
        "the refused one never reached the upstream"
    );
    assert_eq!(metric(&gw, "rategate_tunnels_total"), 2.0);
    assert_eq!(
        metric(
            &gw,
            r#"rategate_requests_total{decision="limited",route="ws"}"#
        ),
        1.0
    );
    // The tunnels admitted before still carry frames, and the connection goes on.
    assert_eq!(h2.echo(&mut first, "a"), "a");
    assert_eq!(h2.echo(&mut second, "b"), "b");
}

#[test]
fn the_connect_past_the_limit_is_refused_429_with_rate_headers() {
    let server = WsServer::start();
    the_connect_past_the_limit_is_refused(ws_config(&server, &["two"], TWO_PER_HOUR), &server);
}

#[test]
fn the_connect_past_the_limit_is_refused_429_on_redis() {
    on_redis(|redis, server| {
        the_connect_past_the_limit_is_refused(
            ws_config(server, &["two"], TWO_PER_HOUR).redis_store(redis),
            server,
        )
    });
}

/// A concurrency limit of 1: the slot is held while the tunnel is open (past the lease, so it is
/// renewed) and freed when it closes.
fn concurrency_slot_follows_the_tunnel(config: TestConfig) {
    let gw = Gateway::start(&config);
    let mut h2 = H2::connect(&gw);
    let mut holder = h2.open("/");
    assert_eq!(
        h2.connect_to("/", Some("websocket")).status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Longer than the 2 s lease: only renewal keeps the slot.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(h2.echo(&mut holder, "still here"), "still here");
    assert_eq!(
        h2.connect_to("/", Some("websocket")).status,
        StatusCode::TOO_MANY_REQUESTS
    );
    h2.close(&mut holder);
    // Released before the gateway ended the stream: the next CONNECT is admitted at once.
    let mut next = h2.open("/");
    assert_eq!(h2.echo(&mut next, "next"), "next");
}

#[test]
fn a_concurrency_slot_is_held_for_the_tunnel_and_freed_when_it_closes() {
    let server = WsServer::start();
    concurrency_slot_follows_the_tunnel(ws_config(&server, &["one"], ONE_AT_A_TIME));
}

#[test]
fn a_concurrency_slot_is_held_for_the_tunnel_and_freed_when_it_closes_on_redis() {
    // A renewal is a store call: see the same test in tests/websocket.rs.
    on_redis(|redis, server| {
        concurrency_slot_follows_the_tunnel(
            ws_config(server, &["one"], ONE_AT_A_TIME)
                .redis_store(redis)
                .set("store.timeout", "1s"),
        )
    });
}

#[test]
fn an_idle_tunnel_stream_is_closed_and_its_connection_goes_on() {
    let server = WsServer::start();
    let config = ws_config(&server, &["one"], ONE_AT_A_TIME)
        .set("server.tunnel_idle_timeout", "1s")
        .set("policy.lease", "10s");
    let gw = Gateway::start(&config);
    let mut h2 = H2::connect(&gw);
    let mut tunnel = h2.open("/");
    assert_eq!(h2.echo(&mut tunnel, "ping"), "ping");
    h2.wait_closed(&mut tunnel);
    let timed_out =
        r#"rategate_connections_timed_out_total{listener="proxy",reason="tunnel_idle"}"#;
    poll("the idle tunnel counted", WAIT).until(|| metric(&gw, timed_out) == 1.0);
    // Its concurrency slot went with it (well before the 10 s lease would have expired), and
    // the connection that carried it serves the next tunnel.
    poll("the slot freed", WAIT)
        .until(|| h2.connect_to("/", Some("websocket")).status == StatusCode::OK);
}

#[test]
fn shutdown_drains_then_closes_tunnel_streams() {
    let server = WsServer::start();
    let config = ws_config(&server, &[], "").set("server.shutdown_grace", "3s");
    let mut gw = Gateway::start(&config);
    let mut h2 = H2::connect(&gw);
    let mut tunnel = h2.open("/");
    gw.signal("TERM");
    gw.wait_log("draining connections", 1, WAIT);
    // Within the grace the tunnel still carries frames...
    assert_eq!(h2.echo(&mut tunnel, "during drain"), "during drain");
    // ...and at its end it is closed and the gateway exits.
    h2.wait_closed(&mut tunnel);
    assert_eq!(gw.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(gw.logs().contains("cutting them"), "{}", gw.logs());
}

#[test]
fn connects_the_gateway_does_not_tunnel_are_refused_before_the_upstream() {
    let server = WsServer::start();
    let config = config_with(
        &server.url(),
        r#"
[[route]]
name = "ws"
path_prefix = "/ws"
upstream = "api"
upgrade = ["websocket"]

[[route]]
name = "plain"
path_prefix = "/"
upstream = "api"
"#,
    );
    let gw = Gateway::start(&config);
    let mut h2 = H2::connect(&gw);
    // A route without `upgrade`.
    let plain = h2.connect_to("/", Some("websocket"));
    assert_eq!(plain.status, StatusCode::METHOD_NOT_ALLOWED);
    // Another protocol, on a route that relays WebSocket.
    let other = h2.connect_to("/ws", Some("connect-udp"));
    assert_eq!(other.status, StatusCode::NOT_IMPLEMENTED);
    // A plain CONNECT: the gateway is no forward proxy.
    let tunnel = h2.connect_to("", None);
    assert_eq!(tunnel.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(plain.tunnel.is_none() && other.tunnel.is_none() && tunnel.tunnel.is_none());
    assert_eq!(
        metric(
            &gw,
            r#"rategate_requests_total{decision="bad_request",route="plain"}"#
        ),
        1.0
    );
    assert_eq!(metric(&gw, "rategate_tunnels_total"), 0.0);
    // HTTP/1.1 CONNECTs, in authority form or naming a path: refused, never passed on.
    for request in [
        &b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n"
            [..],
        &b"CONNECT /ws HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..],
    ] {
        let answer = raw(gw.addr, request);
        assert_eq!(raw_status(&answer), 405, "{answer}");
    }
    // The route that relays WebSocket still tunnels, and nothing else reached the upstream.
    let mut ws = h2.open("/ws");
    assert_eq!(h2.echo(&mut ws, "ok"), "ok");
    assert_eq!(server.handshakes(1), ["HANDSHAKE /ws upgrade=websocket"]);
}

#[test]
fn an_open_tunnel_stream_keeps_its_connection_past_idle_timeout() {
    let server = WsServer::start();
    let config = ws_config(&server, &[], "").set("server.idle_timeout", "1s");
    let gw = Gateway::start(&config);
    let mut h2 = H2::connect(&gw);
    let mut tunnel = h2.open("/");
    // Frames every half second for three seconds: the tunnel is busy, its connection has no
    // other stream, and a connection with a request in flight is never idle.
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        let text = format!("tick {i}");
        assert_eq!(h2.echo(&mut tunnel, &text), text);
    }
    let idle = r#"rategate_connections_timed_out_total{listener="proxy",reason="idle"}"#;
    assert_eq!(metric(&gw, idle), 0.0);
}

/// An upstream that answers every handshake with `answer(path)`, then keeps the connection.
fn scripted_upstream(answer: fn(&str) -> &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                let _ = stream.write_all(answer(&path).as_bytes());
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn an_upstream_that_did_not_answer_the_key_or_did_not_switch_is_a_502() {
    let upstream = scripted_upstream(|path| match path {
        "/wrong-accept" => {
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        }
        "/no-switch" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        _ => "HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope",
    });
    let config = config_with(
        &upstream,
        "[[route]]\nname = \"ws\"\npath_prefix = \"/\"\nupstream = \"api\"\nupgrade = [\"websocket\"]\n",
    );
    let gw = Gateway::start(&config);
    let mut h2 = H2::connect(&gw);
    // The accept of RFC 6455's example key, not of the key the gateway sent.
    let wrong = h2.connect_to("/wrong-accept", Some("websocket"));
    assert_eq!(wrong.status, StatusCode::BAD_GATEWAY);
    // A 200 would tell the client its tunnel is open.
    let no_switch = h2.connect_to("/no-switch", Some("websocket"));
    assert_eq!(no_switch.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        metric(
            &gw,
            r#"rategate_upstream_errors_total{kind="protocol",upstream="api"}"#
        ),
        2.0
    );
    // Any other refusal is relayed as it is.
    let refused = h2.connect_to("/other", Some("websocket"));
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(metric(&gw, "rategate_tunnels_total"), 0.0);
}

/// Each tunnel holds an upstream connection for its life, so tunnels count against the upstream
/// connection ceiling (`max_connections` of them) whatever connection carries them: one HTTP/2
/// connection cannot open more. The place frees when the tunnel closes.
#[test]
fn tunnels_past_the_upstream_connection_ceiling_are_refused_503() {
    let server = WsServer::start();
    let gw = Gateway::start(&ws_config(&server, &[], "").set("server.max_connections", 2));
    let mut h2 = H2::connect(&gw);
    let mut first = h2.open("/a");
    let mut second = h2.open("/b");
    let refused = h2.connect_to("/c", Some("websocket"));
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&refused.headers, "retry-after"), Some("1"));
    assert_eq!(
        metric(&gw, "rategate_upstream_connections_refused_total"),
        1.0
    );
    assert_eq!(metric(&gw, "rategate_upstream_connections_open"), 2.0);
    assert_eq!(h2.echo(&mut first, "still"), "still");
    h2.close(&mut first);
    poll("the closed tunnel's upstream place to free", WAIT)
        .until(|| metric(&gw, "rategate_upstream_connections_open") == 1.0);
    let mut third = h2.open("/c");
    assert_eq!(h2.echo(&mut third, "three"), "three");
    assert_eq!(h2.echo(&mut second, "two"), "two");
}
