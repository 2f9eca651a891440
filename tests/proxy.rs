//! Black-box tests of forwarding: paths, headers, direct answers and upstream failures, through
//! the real binary over real sockets.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;

fn echo_json(resp: &str) -> Value {
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn routes() -> &'static str {
    r#"
[[route]]
name = "auth"
path_prefix = "/api/auth"
upstream = "api"

[[route]]
name = "strip"
path_prefix = "/svc"
upstream = "api"
strip_prefix = true

[[route]]
name = "exact"
path = "/exact"
methods = ["GET"]
upstream = "api"

[[route]]
name = "hosted"
path_prefix = "/h"
host = "api.example.com"
respond = { status = 200, body = "host matched" }

[[route]]
name = "direct"
path = "/direct"
respond = { status = 418, body = "short and stout" }

[[route]]
name = "echo"
path_prefix = "/echo"
upstream = "api"
"#
}

#[test]
fn path_variants_match_and_reach_upstream_normalized() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(&echo.url(), routes()));
    for variant in [
        "/api/auth",
        "/api//auth",
        "/api/./auth",
        "/api/x/../auth",
        "/api/%61uth",
        "/api/%61%75th",
    ] {
        let resp = raw_get(gw.addr, variant, "");
        assert_eq!(raw_status(&resp), 200, "{variant}: {resp}");
        assert_eq!(echo_json(&resp)["uri"], "/api/auth", "{variant}");
    }
    // Segment-aware prefix: /api/authx is not under /api/auth.
    assert_eq!(raw_status(&raw_get(gw.addr, "/api/authx", "")), 404);
    // Query strings pass through.
    let resp = raw_get(gw.addr, "/api/auth/x?a=1&b=%2F", "");
    assert_eq!(echo_json(&resp)["uri"], "/api/auth/x?a=1&b=%2F");
}

#[test]
fn encoded_slash_stays_encoded_and_climbing_is_400() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(&echo.url(), routes()));
    let resp = raw_get(gw.addr, "/echo/a%2Fb", "");
    assert_eq!(raw_status(&resp), 200);
    assert_eq!(echo_json(&resp)["uri"], "/echo/a%2Fb");
    // %2e%2e is decoded first, so this climbs above the root.
    for bad in ["/../etc/passwd", "/echo/../../x", "/%2e%2e/x", "/echo/%zz"] {
        let resp = raw_get(gw.addr, bad, "");
        assert_eq!(raw_status(&resp), 400, "{bad}: {resp}");
        assert!(resp.contains("\"error\":\"bad_request\""), "{resp}");
    }
    // A dot-dot that stays inside still routes by where it lands.
    let resp = raw_get(gw.addr, "/echo/../api/auth", "");
    assert_eq!(echo_json(&resp)["uri"], "/api/auth");
    assert_eq!(
        echo.seen().iter().filter(|s| s.uri.contains("..")).count(),
        0
    );
}

#[test]
fn strip_prefix_exact_methods_and_host() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(&echo.url(), routes()));
    assert_eq!(
        echo_json(&raw_get(gw.addr, "/svc/users/1", ""))["uri"],
        "/users/1"
    );
    assert_eq!(echo_json(&raw_get(gw.addr, "/svc", ""))["uri"], "/");
    assert_eq!(raw_status(&raw_get(gw.addr, "/exact", "")), 200);
    assert_eq!(raw_status(&raw_get(gw.addr, "/exact/more", "")), 404);
    let post = raw(
        gw.addr,
        b"POST /exact HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(raw_status(&post), 404);
    // Host: case-insensitive, port ignored; raw_get sends Host: test.local.
    assert_eq!(raw_status(&raw_get(gw.addr, "/h", "")), 404);
    let resp = raw(
        gw.addr,
        b"GET /h HTTP/1.1\r\nHost: API.Example.com:8443\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(raw_status(&resp), 200);
    assert!(resp.ends_with("host matched"));
}

#[test]
fn direct_respond_route_and_no_route_json() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(&echo.url(), routes()));
    let resp = raw_get(gw.addr, "/direct", "");
    assert_eq!(raw_status(&resp), 418);
    assert!(resp.ends_with("short and stout"));
    let resp = raw_get(gw.addr, "/nowhere", "");
    assert_eq!(raw_status(&resp), 404);
    assert!(resp
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    assert!(resp.contains("\"error\":\"no_route\""));
    assert_eq!(echo.count(), 0);
}

#[test]
fn forwarded_headers_and_hop_by_hop_removal() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(&echo.url(), routes()));
    let resp = raw_get(
        gw.addr,
        "/echo/h",
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nKeep-Alive: timeout=5\r\nX-Drop-Me: 1\r\nConnection: X-Drop-Me, X-Forwarded-For, x-forwarded-proto\r\nTE: trailers\r\nProxy-Authorization: secret\r\n",
    );
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let seen = echo.seen().pop().unwrap();
    // The peer is not a trusted proxy: its X-Forwarded-For is replaced, not extended.
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("test.local"));
    for gone in ["x-drop-me", "keep-alive", "te", "proxy-authorization"] {
        assert_eq!(seen.header(gone), None, "{gone} reached the upstream");
    }
    // The upstream sees its own authority as Host.
    assert_eq!(seen.header("host"), Some(echo.addr.to_string().as_str()));

    // Hop-by-hop headers from the upstream do not reach the client.
    let resp = raw_get(gw.addr, "/echo/../hop", "");
    assert_eq!(raw_status(&resp), 404);
    let resp = raw_get(gw.addr, "/echo/hop", "");
    assert_eq!(raw_status(&resp), 200);
}

#[test]
fn upstream_refused_is_502_and_slow_is_504() {
    // A port that was just free: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let echo = Echo::start();
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[[upstream]]
name = "dead"
url = "http://{dead}"
connect_timeout = "1s"
[[upstream]]
name = "slow"
url = "{}"
timeout = "1s"
[[route]]
name = "dead"
path_prefix = "/dead"
upstream = "dead"
[[route]]
name = "slow"
path_prefix = "/slow"
upstream = "slow"
"#,
        echo.url()
    );
    let gw = Gateway::start(&cfg);
    let resp = raw_get(gw.addr, "/dead", "");
    assert_eq!(raw_status(&resp), 502, "{resp}");
    assert!(resp.contains("\"error\":\"bad_gateway\""));
    assert!(
        !resp.contains(&dead.port().to_string()),
        "leaks the upstream address"
    );
    let resp = raw_get(gw.addr, "/slow/3000", "");
    assert_eq!(raw_status(&resp), 504, "{resp}");
    assert!(resp.contains("\"error\":\"gateway_timeout\""));
    // A second of slack: a quick answer is not cut on a loaded machine.
    let resp = raw_get(gw.addr, "/slow/10", "");
    assert_eq!(raw_status(&resp), 200, "{resp}");
}

#[test]
fn oversized_head_is_431() {
    let echo = Echo::start();
    let gw =
        Gateway::start(&config_with(&echo.url(), routes()).set("server.max_header_bytes", 4096));
    let big = format!("X-Big: {}\r\n", "a".repeat(6000));
    let resp = raw_get(gw.addr, "/echo/x", &big);
    assert_eq!(raw_status(&resp), 431, "{resp}");
    // Far beyond hyper's buffer as well.
    let huge = format!("X-Big: {}\r\n", "a".repeat(100_000));
    let resp = raw_get(gw.addr, "/echo/x", &huge);
    assert_eq!(raw_status(&resp), 431, "{resp}");
    assert_eq!(echo.count(), 0);
    assert_eq!(
        raw_status(&raw_get(gw.addr, "/echo/x", "X-Small: 1\r\n")),
        200
    );
}

#[test]
fn request_and_response_bodies_stream_through() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(&echo.url(), routes()));
    let body = vec![b'z'; 3 * 1024 * 1024];
    let resp = client()
        .post(gw.url("/echo/upload"))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["body_len"], 3 * 1024 * 1024);
    // Chunked request body.
    let resp = raw(
        gw.addr,
        b"POST /echo/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(echo_json(&resp)["body_len"], 11, "{resp}");
}

#[test]
fn smuggling_attempts_never_reach_the_upstream() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(&echo.url(), routes()));
    let attempts: [&[u8]; 5] = [
        // CL.TE: a second request hidden in the body.
        b"POST /echo/a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // Conflicting Content-Length values.
        b"POST /echo/a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // Obfuscated Transfer-Encoding.
        b"POST /echo/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // Whitespace before the colon.
        b"POST /echo/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // Bare LF line endings with a body claim.
        b"POST /echo/a HTTP/1.1\nHost: x\nContent-Length: 0\nContent-Length: 5\n\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for attempt in attempts {
        let _ = raw(gw.addr, attempt);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let smuggled = echo
        .seen()
        .iter()
        .filter(|s| s.uri.contains("smuggled"))
        .count();
    assert_eq!(smuggled, 0, "seen: {:?}", echo.seen());
}

/// An upstream that answers one request per connection with a keep-alive response (no
/// `Connection: close`) and then closes the socket, as upstreams do when their keep-alive timeout
/// ends. The gateway's pool must notice and never send a request on such a connection.
#[test]
fn connection_closed_by_upstream_is_not_reused() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(3) {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            std::thread::sleep(Duration::from_millis(50));
            // Dropping the stream closes the connection the gateway has pooled.
        }
    });
    let gw = Gateway::start(&config_with(
        &format!("http://{addr}"),
        "[[route]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"api\"\n",
    ));
    for _ in 0..3 {
        let resp = raw_get(gw.addr, "/x", "");
        assert_eq!(raw_status(&resp), 200, "{resp}");
        assert!(resp.ends_with("ok"), "{resp}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn several_cookie_lines_reach_the_upstream_as_one() {
    let echo = Echo::start();
    let gw = Gateway::start(&config_with(&echo.url(), routes()));
    let resp = raw_get(gw.addr, "/api/auth", "Cookie: a=1\r\nCookie: b=2; c=3\r\n");
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let seen = echo.seen().pop().unwrap();
    assert_eq!(seen.header_all("cookie"), vec!["a=1; b=2; c=3"]);
    // One line passes as it is.
    raw_get(gw.addr, "/api/auth", "Cookie: a=1\r\n");
    assert_eq!(echo.seen().pop().unwrap().header_all("cookie"), vec!["a=1"]);
}

/// IIS URL Rewrite, Symfony < 5 and Laminas route by `X-Original-URL` / `X-Rewrite-URL`: a client
/// sending them would pick the upstream's route while the gateway limits another. They never
/// reach the upstream, from a trusted proxy either; other headers do.
#[test]
fn routing_override_headers_never_reach_the_upstream() {
    let echo = Echo::start();
    for trusted in [false, true] {
        let mut cfg = config_with(&echo.url(), routes());
        if trusted {
            cfg = cfg.set("server.trusted_proxies", vec!["127.0.0.1/32"]);
        }
        let gw = Gateway::start(&cfg);
        let resp = raw_get(
            gw.addr,
            "/echo/public",
            "X-Original-URL: /admin/delete\r\nX-Rewrite-URL: /admin/delete\r\n\
             x-original-url: /admin/other\r\nX-Custom: kept\r\n",
        );
        assert_eq!(raw_status(&resp), 200, "{resp}");
        let seen = echo.seen().pop().unwrap();
        for gone in ["x-original-url", "x-rewrite-url"] {
            assert_eq!(
                seen.header(gone),
                None,
                "{gone} reached the upstream (trusted {trusted})"
            );
        }
        assert_eq!(seen.header("x-custom"), Some("kept"));
        assert_eq!(seen.uri, "/echo/public");
    }
}
