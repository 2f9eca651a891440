//! Webhook alerts, black-box, delivered to an in-test HTTP receiver: admin and policy blocks, the
//! rejection threshold, store fallback and recovery, retries after a 500, giving up, Slack format,
//! and the bearer token from an environment variable.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
    at: Instant,
}

/// An HTTP receiver answering with scripted statuses (200 once the script is used up).
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Delivery>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(script: &[u16]) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let (got2, script2) = (got.clone(), script.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (got, script) = (got2.clone(), script2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| receive(got.clone(), script.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            got,
            script,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/rategate", self.addr)
    }

    fn got(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Wait until `n` deliveries arrived.
    fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Delivery> {
        poll(format!("{n} deliveries"), timeout)
            .showing(|| format!("got {:#?}", self.got()))
            .until(|| {
                let got = self.got();
                (got.len() >= n).then_some(got)
            })
    }
}

async fn receive(
    got: Arc<Mutex<Vec<Delivery>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };
    let (authorization, content_type) = (header("authorization"), header("content-type"));
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    got.lock().unwrap().push(Delivery {
        authorization,
        content_type,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        at: Instant::now(),
    });
    let status = script.lock().unwrap().pop_front().unwrap_or(200);
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .unwrap())
}

fn config(alerts: &str, extra: &str) -> TestConfig {
    TestConfig::parse(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
shutdown_grace = "5s"

[admin]
listen = "127.0.0.1:0"

[alerts]
{alerts}

[[policy]]
name = "login"
algorithm = "fixed_window"
limit = 1
window = "60s"
block_for = "2m"

[[policy]]
name = "api"
algorithm = "fixed_window"
limit = 1
window = "60s"

[[route]]
name = "login"
path = "/login"
policies = ["login"]
respond = {{ status = 200 }}

[[route]]
name = "api"
path_prefix = "/api"
policies = ["api"]
respond = {{ status = 200 }}
{extra}
"#
    ))
}

fn hit(gw: &Gateway, path: &str, ip: &str) -> u16 {
    client()
        .get(gw.url(path))
        .header("x-forwarded-for", ip)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn admin_block(gw: &Gateway, ip: &str) {
    let resp = client()
        .post(gw.admin_url("/admin/blocks"))
        .json(&json!({"client": ip, "duration": "1h", "reason": "manual"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
}

fn alerts_metric(gw: &Gateway, result: &str) -> f64 {
    gw.metric(&format!("rategate_alerts_total{{result=\"{result}\"}}"))
        .unwrap_or(-1.0)
}

#[test]
fn an_admin_block_is_delivered_with_a_retry_after_a_500() {
    let rx = Receiver::start(&[500]);
    let cfg = config(
        &format!(
            "webhook_url = \"{}\"\ntoken_env = \"HOOK_TOKEN\"\nmax_retries = 2\ntimeout = \"2s\"",
            rx.url()
        ),
        "",
    );
    let gw = Gateway::builder(&cfg)
        .env("HOOK_TOKEN", "hook-s3cret")
        .start();
    admin_block(&gw, "192.0.2.7");
    let got = rx.wait_for(2, Duration::from_secs(5));
    assert_eq!(got[0].body, got[1].body, "the retry posts the same alert");
    // Exponential backoff: the first retry waits 200 ms.
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(150), "{gap:?}");
    let alert = &got[1].body;
    assert_eq!(alert["source"], "rategate");
    assert_eq!(alert["kind"], "client_blocked");
    assert_eq!(alert["client"], "192.0.2.7");
    assert_eq!(alert["reason"], "manual");
    assert_eq!(alert["policy"], Value::Null);
    assert_eq!(alert["duration_s"], 3600);
    assert!(alert["time"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(got[1].authorization.as_deref(), Some("Bearer hook-s3cret"));
    assert_eq!(got[1].content_type.as_deref(), Some("application/json"));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(alerts_metric(&gw, "sent"), 1.0);
    assert_eq!(alerts_metric(&gw, "failed"), 0.0);
    assert_eq!(rx.got().len(), 2);
}

#[test]
fn policy_blocks_and_the_rejection_threshold_alert_once() {
    let rx = Receiver::start(&[]);
    let cfg = config(
        &format!(
            "webhook_url = \"{}\"\ntoken = \"inline-token\"\nrejections_threshold = 3\nthreshold_window = \"1m\"",
            rx.url()
        ),
        "",
    );
    let gw = Gateway::start(&cfg);
    // login: 1 allowed, the 2nd is rejected and blocks for 2m; later ones are blocked.
    let statuses: Vec<u16> = (0..5).map(|_| hit(&gw, "/login", "192.0.2.20")).collect();
    assert_eq!(statuses, [200, 429, 429, 429, 429]);
    // api: 1 allowed, 2 rejected: below the threshold of 3.
    for _ in 0..3 {
        hit(&gw, "/api", "192.0.2.21");
    }
    let got = rx.wait_for(2, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let got_now = rx.got();
    assert_eq!(got_now.len(), 2, "{got_now:#?}");
    let blocked = &got[0].body;
    assert_eq!(blocked["kind"], "client_blocked");
    assert_eq!(blocked["client"], "192.0.2.20");
    assert_eq!(blocked["policy"], "login");
    assert_eq!(blocked["reason"], "policy:login");
    assert_eq!(blocked["duration_s"], 120);
    let threshold = &got[1].body;
    assert_eq!(threshold["kind"], "rejections_threshold");
    assert_eq!(threshold["client"], "192.0.2.20");
    assert_eq!(threshold["rejections"], 3);
    assert_eq!(threshold["window_s"], 60);
    assert_eq!(got[1].authorization.as_deref(), Some("Bearer inline-token"));
}

#[test]
fn slack_format_and_giving_up() {
    let rx = Receiver::start(&[500, 503]);
    let cfg = config(
        &format!(
            "webhook_url = \"{}\"\nformat = \"slack\"\nmax_retries = 1",
            rx.url()
        ),
        "",
    );
    let gw = Gateway::start(&cfg);
    admin_block(&gw, "192.0.2.30");
    let got = rx.wait_for(2, Duration::from_secs(5));
    assert_eq!(
        got[0].body,
        json!({"text": "rategate: client 192.0.2.30 blocked for 1h (manual)"})
    );
    assert_eq!(got[0].authorization, None);
    // 1 + max_retries attempts, then the alert is counted as failed.
    poll("the failed alert to be counted", Duration::from_secs(3))
        .every(Duration::from_millis(50))
        .until(|| alerts_metric(&gw, "failed") >= 1.0);
    assert_eq!(alerts_metric(&gw, "failed"), 1.0);
    assert_eq!(rx.got().len(), 2);
    // A refusal (4xx other than 408/429) is not retried.
    rx.script.lock().unwrap().extend([400]);
    admin_block(&gw, "192.0.2.31");
    rx.wait_for(3, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(rx.got().len(), 3);
}

/// Hit `/api` from a fresh address until `done` holds (each hit drives the store's breaker).
fn hit_until(gw: &Gateway, what: &str, mut done: impl FnMut() -> bool) {
    let mut n = 0u32;
    poll(what, Duration::from_secs(15))
        .every(Duration::from_millis(50))
        .until(|| {
            if done() {
                return true;
            }
            n += 1;
            hit(gw, "/api", &format!("10.8.{}.{}", n / 250, n % 250 + 1));
            false
        });
}

#[test]
fn store_fallback_and_recovery_are_alerted() {
    // A full in-process store evicts rather than fails, so the failing store here is Redis.
    if !common::redis::have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let mut redis = common::redis::RedisServer::start();
    let rx = Receiver::start(&[]);
    let cfg = config(&format!("webhook_url = \"{}\"", rx.url()), "")
        .redis_store(&redis.url())
        .set("store.timeout", "100ms")
        .set("store.on_error", "fallback");
    let gw = Gateway::start(&cfg);
    assert_eq!(hit(&gw, "/api", "10.0.0.1"), 200);
    assert!(rx.got().is_empty());
    redis.kill();
    hit_until(&gw, "the fallback alert", || !rx.got().is_empty());
    assert_eq!(gw.metric("rategate_store_fallback_active"), Some(1.0));
    redis.restart();
    hit_until(&gw, "the recovery alert", || rx.got().len() >= 2);
    let got = rx.got();
    assert_eq!(got[0].body["kind"], "store_fallback");
    assert_eq!(got[0].body["store"], "redis");
    assert_eq!(got[0].body["on_error"], "fallback");
    assert_eq!(got[1].body["kind"], "store_recovered");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rx.got().len(), 2, "one alert per transition");
    // Flapping: more transitions within a minute are held back (the last state goes out later).
    redis.kill();
    hit_until(&gw, "the fallback again", || {
        gw.metric("rategate_store_fallback_active") == Some(1.0)
    });
    redis.restart();
    hit_until(&gw, "Redis again", || {
        gw.metric("rategate_store_fallback_active") == Some(0.0)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.got().len(), 2, "{:#?}", rx.got());
}

#[test]
fn alerts_follow_a_reload() {
    let rx = Receiver::start(&[]);
    let without = config("", "").remove("alerts");
    let gw = Gateway::start(&without);
    admin_block(&gw, "192.0.2.40");
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.got().is_empty());
    std::fs::write(
        &gw.config_path,
        config(&format!("webhook_url = \"{}\"", rx.url()), "").to_string(),
    )
    .unwrap();
    let resp = client().post(gw.admin_url("/admin/reload")).send().unwrap();
    assert_eq!(resp.status(), 200);
    admin_block(&gw, "192.0.2.41");
    let got = rx.wait_for(1, Duration::from_secs(5));
    assert_eq!(got[0].body["client"], "192.0.2.41");
}

/// With Redis, the circuit breaker's transitions raise the alerts: Redis killed -> fallback,
/// Redis back -> recovered.
#[test]
fn redis_outage_and_recovery_are_alerted() {
    if !common::redis::have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let mut redis = common::redis::RedisServer::start();
    let rx = Receiver::start(&[]);
    let cfg = config(&format!("webhook_url = \"{}\"", rx.url()), "")
        .redis_store(&redis.url())
        .set("store.timeout", "100ms")
        .set("store.on_error", "fallback");
    let gw = Gateway::start(&cfg);
    assert_eq!(hit(&gw, "/api", "192.0.2.90"), 200);
    redis.kill();
    let mut n = 0u32;
    poll("the fallback alert", Duration::from_secs(10))
        .every(Duration::from_millis(50))
        .until(|| {
            if !rx.got().is_empty() {
                return true;
            }
            // Every request is still served (by the fallback).
            assert_eq!(hit(&gw, "/api", &format!("192.0.2.{}", 100 + n % 100)), 200);
            n += 1;
            false
        });
    let got = rx.wait_for(1, Duration::from_secs(1));
    assert_eq!(got[0].body["kind"], "store_fallback", "{:?}", got[0].body);
    assert_eq!(got[0].body["store"], "redis");
    redis.restart();
    poll("the recovery alert", Duration::from_secs(15))
        .every(Duration::from_millis(100))
        .until(|| {
            if rx.got().len() >= 2 {
                return true;
            }
            hit(&gw, "/api", "192.0.2.91");
            false
        });
    let got = rx.wait_for(2, Duration::from_secs(1));
    assert_eq!(got[1].body["kind"], "store_recovered", "{:?}", got[1].body);
}
