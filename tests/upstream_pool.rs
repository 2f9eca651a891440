//! Upstreams with several targets, black-box: balancing, passive and active health, retries,
//! reloads and per-target metrics, through the real binary in front of real HTTP servers.

#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// How a backend treats requests (other than `/healthz`).
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answers 200 with its name as the body, after `delay`.
    Answer,
    /// Reads the request, then closes the connection without answering.
    HangUp,
    /// Answers 503.
    Unavailable,
}

/// One target: an HTTP/1.1 server on its own runtime; dropping it (or `kill`) closes its
/// listener and every connection, like a process that died.
struct Backend {
    name: &'static str,
    addr: SocketAddr,
    /// Requests seen, `/healthz` excepted.
    hits: Arc<AtomicUsize>,
    /// What `/healthz` answers: 200 while true, 503 otherwise.
    healthy: Arc<AtomicBool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Backend {
    fn start(name: &'static str) -> Backend {
        Backend::with(name, Duration::ZERO, Mode::Answer)
    }

    fn with(name: &'static str, delay: Duration, mode: Mode) -> Backend {
        Backend::serve(name, delay, mode, "127.0.0.1:0".parse().unwrap())
    }

    /// A backend on the address a killed one had.
    fn at(name: &'static str, addr: SocketAddr) -> Backend {
        Backend::serve(name, Duration::ZERO, Mode::Answer, addr)
    }

    fn serve(name: &'static str, delay: Duration, mode: Mode, addr: SocketAddr) -> Backend {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<AtomicUsize> = Arc::default();
        let healthy = Arc::new(AtomicBool::new(true));
        let (hits2, healthy2) = (hits.clone(), healthy.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (hits, healthy) = (hits2.clone(), healthy2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (hits, healthy) = (hits.clone(), healthy.clone());
                        async move {
                            if req.uri().path() == "/healthz" {
                                let status = if healthy.load(Ordering::SeqCst) {
                                    200
                                } else {
                                    503
                                };
                                return Ok::<_, Infallible>(
                                    Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                );
                            }
                            let _ = req.into_body().collect().await;
                            hits.fetch_add(1, Ordering::SeqCst);
                            if mode == Mode::HangUp {
                                // Never answers: the connection task ends below.
                                std::future::pending::<()>().await;
                            }
                            tokio::time::sleep(delay).await;
                            let status = if mode == Mode::Unavailable { 503 } else { 200 };
                            Ok(Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(name)))
                                .unwrap())
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    if mode == Mode::HangUp {
                        // Hang up shortly after the request arrived, without an answer.
                        let _ = tokio::time::timeout(Duration::from_millis(200), conn).await;
                    } else {
                        let _ = conn.await;
                    }
                });
            }
        });
        Backend {
            name,
            addr,
            hits,
            healthy,
            runtime: Some(runtime),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn three_backends() -> [Backend; 3] {
    [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ]
}

/// A config whose upstream `api` has `backends` as its targets (with `upstream_extra` TOML keys)
/// and a route `all` to it.
fn pool_config(backends: &[&Backend], upstream_extra: &str) -> TestConfig {
    pool_config_with_route(backends, upstream_extra, "")
}

/// `pool_config` with `route_extra` TOML keys on the route.
fn pool_config_with_route(
    backends: &[&Backend],
    upstream_extra: &str,
    route_extra: &str,
) -> TestConfig {
    let targets: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.url()))
        .collect();
    TestConfig::parse(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"
trusted_proxies = ["127.0.0.1/32"]

[admin]
listen = "127.0.0.1:0"

[[upstream]]
name = "api"
targets = [{}]
connect_timeout = "1s"
timeout = "5s"
{upstream_extra}

[[route]]
name = "all"
path_prefix = "/"
upstream = "api"
{route_extra}
"#,
        targets.join(", ")
    ))
}

/// GET `path` as client `ip` (X-Forwarded-For from a trusted peer): (status, body).
fn get_as(gw: &Gateway, path: &str, ip: &str) -> (u16, String) {
    let resp = client()
        .get(gw.url(path))
        .header("x-forwarded-for", ip)
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

fn get(gw: &Gateway, path: &str) -> (u16, String) {
    get_as(gw, path, "10.0.0.1")
}

fn target_metric(gw: &Gateway, family: &str, b: &Backend) -> Option<f64> {
    gw.metric(&format!(
        "{family}{{target=\"{}\",upstream=\"api\"}}",
        b.url()
    ))
}

#[test]
fn round_robin_spreads_requests_evenly() {
    let backends = three_backends();
    let refs: Vec<&Backend> = backends.iter().collect();
    let gw = Gateway::start(&pool_config(&refs, ""));
    for _ in 0..300 {
        assert_eq!(get(&gw, "/x").0, 200);
    }
    for b in &backends {
        assert!(
            (90..=110).contains(&b.hits()),
            "{} got {} of 300 requests",
            b.name,
            b.hits()
        );
        // Per-target series on /metrics, labelled by the target's URL.
        assert_eq!(
            target_metric(&gw, "rategate_upstream_target_requests_total", b),
            Some(b.hits() as f64)
        );
        assert_eq!(
            target_metric(&gw, "rategate_upstream_target_ejected", b),
            Some(0.0)
        );
    }
}

#[test]
fn least_requests_prefers_the_idle_targets_over_a_slow_one() {
    let slow = Backend::with("slow", Duration::from_millis(1500), Mode::Answer);
    let (b, c) = (Backend::start("b"), Backend::start("c"));
    let gw = Gateway::start(&pool_config(
        &[&slow, &b, &c],
        "balance = \"least_requests\"",
    ));
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                for _ in 0..10 {
                    assert_eq!(get(&gw, "/x").0, 200);
                }
            });
        }
    });
    assert_eq!(slow.hits() + b.hits() + c.hits(), 60);
    // Round robin sends it 20 of the 60; least_requests sends it one only while the others
    // are at least as busy, which with 6 clients is at most 3 at a time for 1.5 s each.
    assert!(
        slow.hits() <= 12,
        "the slow target got {} of 60 requests (b {}, c {})",
        slow.hits(),
        b.hits(),
        c.hits()
    );
}

#[test]
fn hash_client_keeps_a_client_on_one_target_and_moves_only_a_lost_targets_clients() {
    let mut backends = three_backends();
    let refs: Vec<&Backend> = backends.iter().collect();
    let gw = Gateway::start(&pool_config(
        &refs,
        "balance = \"hash_client\"\nconsecutive_failures = 1",
    ));
    let clients: Vec<String> = (1..=30).map(|i| format!("10.1.0.{i}")).collect();
    let mut home = Vec::new();
    for ip in &clients {
        let (status, first) = get_as(&gw, "/x", ip);
        assert_eq!(status, 200);
        for _ in 0..4 {
            assert_eq!(
                get_as(&gw, "/x", ip),
                (200, first.clone()),
                "client {ip} moved"
            );
        }
        home.push(first);
    }
    for b in &backends {
        assert!(home.iter().any(|h| h == b.name), "no client on {}", b.name);
    }
    backends[2].kill();
    for (ip, before) in clients.iter().zip(&home) {
        let (status, now) = get_as(&gw, "/x", ip);
        assert_eq!(status, 200, "client {ip}: connect refused must be retried");
        if before != "c" {
            assert_eq!(&now, before, "client {ip} moved though its target is up");
        } else {
            assert_ne!(now, "c");
        }
    }
}

#[test]
fn a_killed_target_is_ejected_and_its_share_moves_without_errors() {
    let mut backends = three_backends();
    let refs: Vec<&Backend> = backends.iter().collect();
    let gw = Gateway::start(&pool_config(
        &refs,
        "consecutive_failures = 2\nbase_ejection_time = \"60s\"",
    ));
    for _ in 0..30 {
        assert_eq!(get(&gw, "/x").0, 200);
    }
    let killed_url = backends[2].url();
    backends[2].kill();
    let before: Vec<usize> = backends[..2].iter().map(Backend::hits).collect();
    // Nothing was sent to the dead target, so every request is retried on a live one.
    for i in 0..60 {
        let (status, body) = get(&gw, "/x");
        assert_eq!(status, 200, "request {i} after the kill: {body}");
    }
    let moved: usize = backends[..2]
        .iter()
        .zip(&before)
        .map(|(b, n)| b.hits() - n)
        .sum();
    assert_eq!(moved, 60);
    let series = |family: &str| {
        gw.metric(&format!(
            "{family}{{target=\"{killed_url}\",upstream=\"api\"}}"
        ))
    };
    assert_eq!(series("rategate_upstream_target_ejected"), Some(1.0));
    // Ejected after 2 failures in a row: later requests do not try it (a few may race the
    // ejection across the workers).
    let errors = series("rategate_upstream_target_errors_total").unwrap();
    assert!((2.0..=6.0).contains(&errors), "{errors} connect errors");
    assert!(gw.logs().contains("upstream target ejected"));
}

#[test]
fn with_every_target_ejected_the_targets_are_still_tried() {
    let mut a = Backend::start("a");
    let mut b = Backend::start("b");
    let gw = Gateway::start(&pool_config(
        &[&a, &b],
        "consecutive_failures = 1\nbase_ejection_time = \"300s\"",
    ));
    let b_addr = b.addr;
    a.kill();
    b.kill();
    let ejected = |url: &str| {
        gw.metric(&format!(
            "rategate_upstream_target_ejected{{target=\"{url}\",upstream=\"api\"}}"
        ))
    };
    poll("both targets ejected", Duration::from_secs(10)).until(|| {
        assert_eq!(get(&gw, "/x").0, 502);
        ejected(&a.url()) == Some(1.0) && ejected(&b.url()) == Some(1.0)
    });
    // b comes back long before its ejection ends: with nothing in the balance, every target is
    // a candidate again (panic mode), so requests reach it at once.
    let back = Backend::at("b", b_addr);
    for _ in 0..4 {
        assert_eq!(get(&gw, "/x"), (200, "b".to_string()));
    }
    assert_eq!(back.hits(), 4);
}

#[test]
fn a_sent_request_is_not_retried() {
    let hang = Backend::with("hang", Duration::ZERO, Mode::HangUp);
    let other = Backend::start("other");
    let gw = Gateway::start(&pool_config(&[&hang, &other], ""));
    // Round robin: the first of two requests goes to `hang`, which read it and hung up.
    let statuses: Vec<u16> = (0..2)
        .map(|_| {
            client()
                .post(gw.url("/x"))
                .body("payload")
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert!(statuses.contains(&502), "{statuses:?}");
    assert_eq!(hang.hits(), 1);
    assert_eq!(other.hits(), 1, "the request `hang` read was sent again");
}

/// `count` requests with `method` (POST with a body): their statuses.
fn send_many(gw: &Gateway, method: &str, count: usize) -> Vec<u16> {
    (0..count)
        .map(|_| {
            let req = match method {
                "POST" => client().post(gw.url("/x")).body("payload"),
                _ => client().get(gw.url("/x")),
            };
            req.send().unwrap().status().as_u16()
        })
        .collect()
}

#[test]
fn an_idempotent_request_is_sent_again_on_a_route_with_retry_but_a_post_is_not() {
    let hang = Backend::with("hang", Duration::ZERO, Mode::HangUp);
    let other = Backend::start("other");
    let gw = Gateway::start(&pool_config_with_route(
        &[&hang, &other],
        "",
        r#"retry = { attempts = 1, on = ["reset"] }"#,
    ));
    // Every GET that went to `hang` (read, then the connection dropped) is sent to `other`.
    assert_eq!(send_many(&gw, "GET", 4), [200; 4]);
    let (hung, answered) = (hang.hits(), other.hits());
    assert!(hung >= 1, "no GET reached the target that hangs up");
    assert_eq!(answered, 4, "{hung} hung up");
    // A POST may have had its effect: never sent twice, whatever the route says.
    let posts = send_many(&gw, "POST", 4);
    let failed = posts.iter().filter(|&&s| s == 502).count();
    assert!(failed >= 1, "{posts:?}");
    assert_eq!(hang.hits() - hung, failed, "{posts:?}");
    assert_eq!(other.hits() - answered, 4 - failed, "a POST was sent twice");
}

#[test]
fn a_gateway_error_answer_is_tried_on_another_target_when_the_route_says_so() {
    let down = Backend::with("down", Duration::ZERO, Mode::Unavailable);
    let up = Backend::start("up");
    let retrying = Gateway::start(&pool_config_with_route(
        &[&down, &up],
        "",
        r#"retry = { attempts = 2, on = ["gateway_error"] }"#,
    ));
    assert_eq!(send_many(&retrying, "GET", 4), [200; 4]);
    assert!(down.hits() >= 1);
    // Without `retry` the 503 is the upstream's answer, relayed.
    let plain = Gateway::start(&pool_config(&[&down, &up], ""));
    assert!(send_many(&plain, "GET", 4).contains(&503));
}

#[test]
fn active_health_checks_take_a_target_out_and_bring_it_back() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let gw = Gateway::start(&pool_config(
        &[&a, &b],
        r#"health_check = { path = "/healthz", interval = "100ms", timeout = "1s", healthy = 2, unhealthy = 2 }"#,
    ));
    let ejected = || target_metric(&gw, "rategate_upstream_target_ejected", &a);
    a.healthy.store(false, Ordering::SeqCst);
    poll("a taken out by its checks", Duration::from_secs(10)).until(|| ejected() == Some(1.0));
    let before = a.hits();
    for _ in 0..10 {
        assert_eq!(get(&gw, "/x"), (200, "b".to_string()));
    }
    assert_eq!(a.hits(), before);
    a.healthy.store(true, Ordering::SeqCst);
    poll("a readmitted by its checks", Duration::from_secs(10)).until(|| ejected() == Some(0.0));
    for _ in 0..10 {
        assert_eq!(get(&gw, "/x").0, 200);
    }
    assert!(a.hits() > before, "a got no request after its readmission");
}

#[test]
fn a_reload_changing_targets_keeps_an_in_flight_request() {
    let slow = Backend::with("slow", Duration::from_millis(1500), Mode::Answer);
    let fresh = Backend::start("fresh");
    let gw = Gateway::start(&pool_config(&[&slow], ""));
    std::thread::scope(|s| {
        let in_flight = s.spawn(|| get(&gw, "/x"));
        poll("the slow request to arrive", Duration::from_secs(10)).until(|| slow.hits() == 1);
        let text = pool_config(&[&fresh], "").to_string();
        std::fs::write(&gw.config_path, text).unwrap();
        gw.signal("HUP");
        gw.wait_log("config reloaded", 1, Duration::from_secs(10));
        assert_eq!(get(&gw, "/x"), (200, "fresh".to_string()));
        assert_eq!(in_flight.join().unwrap(), (200, "slow".to_string()));
    });
    assert_eq!(slow.hits(), 1);
    // The removed target's series goes once nothing holds it.
    poll("the old target's series removed", Duration::from_secs(10))
        .until(|| target_metric(&gw, "rategate_upstream_target_requests_total", &slow).is_none());
}

#[test]
fn a_target_name_is_balanced_over_its_addresses_each_a_target_of_its_own() {
    let a = Backend::start("a");
    let port = a.addr.port();
    let name = format!("http://localhost:{port}");
    // What this machine resolves `localhost` to (127.0.0.1, often ::1 as well): a series each.
    let mut resolved: Vec<std::net::IpAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&("localhost", port))
            .unwrap()
            .map(|addr| addr.ip())
            .collect();
    resolved.sort_unstable();
    resolved.dedup();
    assert!(resolved.contains(&std::net::IpAddr::from([127, 0, 0, 1])));
    let config = pool_config(&[&a], "").to_string().replace(&a.url(), &name);
    let gw = Gateway::start(&TestConfig::parse(&config));
    let series = |target: &str| {
        gw.metric(&format!(
            "rategate_upstream_target_requests_total{{target=\"{target}\",upstream=\"api\"}}"
        ))
    };
    // Only 127.0.0.1 listens: a request sent to another address (::1) is refused there and
    // tried on 127.0.0.1, so every request is answered.
    for _ in 0..10 {
        assert_eq!(get(&gw, "/x"), (200, "a".to_string()));
    }
    for ip in &resolved {
        assert!(
            series(&format!("{name} ({ip})")).is_some(),
            "no series for {ip}"
        );
    }
    assert!(series(&format!("{name} (127.0.0.1)")).unwrap() >= 1.0);
    assert_eq!(
        series(&name),
        None,
        "the name itself is not a target once resolved"
    );
    assert_eq!(a.hits(), 10);

    // A reload to the address itself: the name's per-address series go.
    std::fs::write(&gw.config_path, pool_config(&[&a], "").to_string()).unwrap();
    gw.signal("HUP");
    gw.wait_log("config reloaded", 1, Duration::from_secs(10));
    assert_eq!(get(&gw, "/x"), (200, "a".to_string()));
    poll("the name's series removed", Duration::from_secs(10))
        .until(|| series(&format!("{name} (127.0.0.1)")).is_none());
    assert!(series(&a.url()).is_some());
}

#[test]
fn a_client_sending_its_body_too_slowly_ejects_no_target() {
    use std::io::{Read, Write};
    let backends = [Backend::start("a"), Backend::start("b")];
    let refs: Vec<&Backend> = backends.iter().collect();
    let gw = Gateway::start(&pool_config(
        &refs,
        "consecutive_failures = 2\nbase_ejection_time = \"60s\"",
    ));
    // Each promises 10 bytes and sends one: the targets wait for the rest until the upstream
    // timeout (5s). Enough of them for every target to reach `consecutive_failures`.
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let addr = gw.addr;
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                s.write_all(
                    b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nConnection: close\r\n\r\nA",
                )
                .unwrap();
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                raw_status(&String::from_utf8_lossy(&out))
            })
        })
        .collect();
    for t in slow {
        assert_eq!(t.join().unwrap(), 408);
    }
    for b in &backends {
        assert_eq!(
            target_metric(&gw, "rategate_upstream_target_ejected", b),
            Some(0.0)
        );
    }
    assert_eq!(
        gw.metric(r#"rategate_upstream_errors_total{kind="timeout",upstream="api"}"#),
        None
    );
    assert_eq!(get(&gw, "/x").0, 200);
}
