//! gRPC through the real binary: a real grpcio server behind an `h2c://` upstream and a real
//! grpcio client in front (tests/python/grpc_peer.py; grpcio is pinned in
//! tests/python/requirements.txt and a missing one fails these tests). Calls keep their status,
//! messages and trailing metadata; calls the gateway refuses arrive as the gRPC status a client
//! understands. Request trailers and `te: trailers` are checked with a hyper HTTP/2 client and
//! upstream, which see the frames themselves.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/grpc_peer.py")
}

/// The grpcio server, stopped when dropped.
struct GrpcServer {
    child: Child,
    port: u16,
}

impl GrpcServer {
    fn start() -> GrpcServer {
        let mut child = Command::new("python3")
            .arg(peer_script())
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 must be installed for the gRPC tests");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let Some(port) = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
        else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the grpcio server did not start (pip install -r tests/python/requirements.txt):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        GrpcServer { child, port }
    }

    fn url(&self) -> String {
        format!("h2c://127.0.0.1:{}", self.port)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call by the grpcio client through `addr`: `{code, details, responses, initial, trailing}`.
fn call(addr: SocketAddr, method: &str, request: &str) -> Value {
    let out = Command::new("python3")
        .arg(peer_script())
        .args(["call", &addr.to_string(), method, request])
        .output()
        .expect("python3 must be installed for the gRPC tests");
    assert!(
        out.status.success(),
        "the grpcio client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A metadata value the client saw, in the initial or the trailing metadata.
fn metadata<'a>(call: &'a Value, key: &str) -> Option<&'a str> {
    ["initial", "trailing"].iter().find_map(|part| {
        call[part]
            .as_array()?
            .iter()
            .find_map(|kv| (kv[0].as_str()? == key).then(|| kv[1].as_str()).flatten())
    })
}

const ROUTE: &str = r#"
[[policy]]
name = "calls"
algorithm = "fixed_window"
limit = LIMIT
window = "60s"

[[route]]
name = "grpc"
path_prefix = "/rg.Test/"
upstream = "api"
policies = ["calls"]
"#;

fn grpc_config(upstream: &str, limit: u64) -> TestConfig {
    config_with(upstream, &ROUTE.replace("LIMIT", &limit.to_string()))
}

#[test]
fn unary_streaming_and_bidirectional_calls_keep_status_messages_and_trailers() {
    let server = GrpcServer::start();
    let gw = Gateway::start(&grpc_config(&server.url(), 100));

    let unary = call(gw.addr, "Unary", "hi");
    assert_eq!(unary["code"], "OK", "{unary}");
    assert_eq!(unary["responses"], serde_json::json!(["echo:hi"]));
    assert_eq!(metadata(&unary, "x-trail"), Some("unary-done"), "{unary}");
    // The rate-limit headers come with the call's headers.
    assert_eq!(
        metadata(&unary, "x-ratelimit-limit"),
        Some("100"),
        "{unary}"
    );

    // A status other than OK, its message and trailing metadata, all in the upstream's trailers.
    let failed = call(gw.addr, "Fail", "x");
    assert_eq!(failed["code"], "NOT_FOUND", "{failed}");
    assert_eq!(failed["details"], "no such thing: x");
    assert_eq!(metadata(&failed, "x-why"), Some("because"), "{failed}");

    let streamed = call(gw.addr, "Stream", "3");
    assert_eq!(streamed["code"], "OK", "{streamed}");
    assert_eq!(
        streamed["responses"],
        serde_json::json!(["item-0", "item-1", "item-2"])
    );
    assert_eq!(metadata(&streamed, "x-count"), Some("3"), "{streamed}");

    // Both ways at once: each message goes out only after the echo of the one before came back,
    // so neither direction can be held until the other ends.
    let chat = call(gw.addr, "Chat", "3");
    assert_eq!(chat["code"], "OK", "{chat}");
    assert_eq!(
        chat["responses"],
        serde_json::json!(["echo:msg-0", "echo:msg-1", "echo:msg-2"])
    );
    assert_eq!(metadata(&chat, "x-chat"), Some("done"), "{chat}");
}

fn assert_rejected_as_resource_exhausted(gw: &Gateway) {
    assert_eq!(call(gw.addr, "Unary", "first")["code"], "OK");
    let rejected = call(gw.addr, "Unary", "second");
    assert_eq!(rejected["code"], "RESOURCE_EXHAUSTED", "{rejected}");
    let details = rejected["details"].as_str().unwrap();
    assert!(
        details.starts_with("Rate limit exceeded for policy 'calls'. Retry in "),
        "{rejected}"
    );
    assert_eq!(
        metadata(&rejected, "x-ratelimit-limit"),
        Some("1"),
        "{rejected}"
    );
    assert_eq!(
        metadata(&rejected, "x-ratelimit-remaining"),
        Some("0"),
        "{rejected}"
    );
    let retry_after: u64 = metadata(&rejected, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{rejected}");
    assert_eq!(
        metadata(&rejected, "grpc-retry-pushback-ms"),
        Some(&*(retry_after * 1000).to_string()),
        "{rejected}"
    );
}

#[test]
fn a_call_over_the_limit_is_resource_exhausted_with_the_rate_limit_headers() {
    let server = GrpcServer::start();
    let gw = Gateway::start(&grpc_config(&server.url(), 1));
    assert_rejected_as_resource_exhausted(&gw);
}

#[test]
fn a_call_over_the_limit_on_the_redis_store_is_resource_exhausted() {
    if !common::redis::have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let redis = common::redis::RedisServer::start();
    let server = GrpcServer::start();
    let cfg = grpc_config(&server.url(), 1)
        .redis_store(&redis.url())
        .set("store.key_prefix", "grpctest:");
    let gw = Gateway::start(&cfg);
    assert_rejected_as_resource_exhausted(&gw);
}

#[test]
fn a_denied_client_is_permission_denied() {
    let server = GrpcServer::start();
    let gw = Gateway::start(&grpc_config(&server.url(), 100).with(
        r#"
[access]
deny = ["127.0.0.1"]
"#,
    ));
    let denied = call(gw.addr, "Unary", "hi");
    assert_eq!(denied["code"], "PERMISSION_DENIED", "{denied}");
    assert_eq!(
        denied["details"],
        "Access from this address is not allowed."
    );
}

#[test]
fn upstream_failures_are_unavailable_and_deadline_exceeded() {
    let server = GrpcServer::start();
    let gw = Gateway::start(
        &grpc_config(&server.url(), 100)
            .set("upstream.timeout", "300ms")
            .with(&format!(
                r#"
[[upstream]]
name = "gone"
url = "h2c://127.0.0.1:{}"
connect_timeout = "1s"

[[route]]
name = "gone"
path_prefix = "/rg.Gone/"
upstream = "gone"
"#,
                common::redis::free_port()
            )),
    );
    let slow = call(gw.addr, "Slow", "zzz");
    assert_eq!(slow["code"], "DEADLINE_EXCEEDED", "{slow}");
    assert_eq!(
        slow["details"],
        "The upstream service did not answer in time."
    );
    // A route to an upstream nobody listens on: the client sees the service unavailable.
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import grpc, sys\n\
             ch = grpc.insecure_channel(sys.argv[1], options=[('grpc.enable_http_proxy', 0)])\n\
             try:\n    ch.unary_unary('/rg.Gone/X')(b'', timeout=10)\nexcept grpc.RpcError as e:\n    \
             print(e.code().name, e.details(), sep='|')\n",
        )
        .arg(gw.addr.to_string())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "UNAVAILABLE|The upstream service could not be reached.",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the HTTP/2 upstream saw of a request.
#[derive(Debug, Default, Clone)]
struct SeenH2 {
    version: String,
    authority: Option<String>,
    host: Option<String>,
    te: Option<String>,
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
}

type Frames = StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>,
>;

fn frames(data: &'static str, trailer: (&'static str, &str)) -> Frames {
    let mut trailers = HeaderMap::new();
    trailers.insert(trailer.0, trailer.1.parse().unwrap());
    StreamBody::new(futures_util::stream::iter(vec![
        Ok(Frame::data(Bytes::from_static(data.as_bytes()))),
        Ok(Frame::trailers(trailers)),
    ]))
}

async fn h2_upstream(
    seen: Arc<Mutex<Vec<SeenH2>>>,
    req: Request<Incoming>,
) -> Result<Response<Frames>, std::convert::Infallible> {
    let version = format!("{:?}", req.version());
    let authority = req.uri().authority().map(|a| a.to_string());
    let host = req
        .headers()
        .get("host")
        .map(|v| v.to_str().unwrap().to_owned());
    let te = req
        .headers()
        .get("te")
        .map(|v| v.to_str().unwrap().to_owned());
    let collected = req.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let echoed = trailers
        .as_ref()
        .and_then(|t| t.get("x-client-trailer"))
        .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned());
    seen.lock().unwrap().push(SeenH2 {
        version,
        authority,
        host,
        te,
        body: collected.to_bytes().to_vec(),
        trailers,
    });
    Ok(Response::new(frames(
        "pong",
        ("x-upstream-trailer", &echoed),
    )))
}

#[test]
fn request_and_response_trailers_cross_to_an_h2_upstream_with_te_trailers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen: Arc<Mutex<Vec<SeenH2>>> = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let upstream = listener.local_addr().unwrap();
    let seen2 = seen.clone();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| h2_upstream(seen.clone(), req));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let gw = Gateway::start(&config_with(
        &format!("h2c://{upstream}"),
        r#"
[[route]]
name = "all"
path_prefix = "/"
upstream = "api"
"#,
    ));

    let (status, trailers) = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::post(format!("http://{}/svc/Method", gw.addr))
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .body(frames("ping", ("x-client-trailer", "from-client")))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        let collected = resp.into_body().collect().await.unwrap();
        (status, collected.trailers().cloned())
    });
    assert_eq!(status, 200);
    let trailers = trailers.expect("the upstream's trailers reach the client");
    assert_eq!(trailers["x-upstream-trailer"], "from-client");

    let first = seen.lock().unwrap().clone();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].version, "HTTP/2.0");
    assert_eq!(first[0].authority.as_deref(), Some(&*upstream.to_string()));
    assert_eq!(first[0].host, None, "HTTP/2 carries the host in :authority");
    assert_eq!(first[0].te.as_deref(), Some("trailers"));
    assert_eq!(first[0].body, b"ping");
    assert!(first[0].trailers.is_some());

    // An HTTP/1.1 client of the same route: its request goes to the upstream as HTTP/2 too,
    // without a TE it never sent.
    let resp = raw(
        gw.addr,
        b"POST /plain HTTP/1.1\r\nHost: test.local\r\nContent-Length: 4\r\nConnection: close\r\n\r\nping",
    );
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(resp.contains("pong"), "{resp}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].version, "HTTP/2.0");
    assert_eq!(seen[1].authority.as_deref(), Some(&*upstream.to_string()));
    assert_eq!(seen[1].te, None);
    assert_eq!(seen[1].body, b"ping");
}
