//! Criterion benches of the functions every request runs through, in request order: client
//! identity, path normalization, route matching, key building, the store check (each algorithm,
//! through the `Store` trait and through `Limiter::check`) and the rate-limit headers (from the
//! text compiled per policy; a tier override's quota written per request).
//!
//! Run with `cargo bench --bench hot_path` (add `-- <filter>` for one group). On a shared 2-core
//! machine compare numbers only within one run.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use rategate::clock::ManualClock;
use rategate::config::compiled::{Config, Route};
use rategate::config::load_str;
use rategate::limiter::{policy, ClientId, Limiter, RequestView};
use rategate::metrics::Metrics;
use rategate::net::{self, CidrSet};
use rategate::proxy::{client_ip, rate_headers, response, route};
use rategate::store::{AnyStore, CheckRequest, MemoryStore, PolicyCheck, Store};
use rategate::uri_path;

/// A fixed store clock, so window boundaries never move under a bench.
const T0: u64 = 1_700_006_400_000;

fn config(text: &str) -> Config {
    match load_str(Path::new("bench.toml"), text) {
        Ok(c) => c,
        Err(e) => panic!("bench config: {e}"),
    }
}

const HEAD: &str = r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]
[admin]
listen = "127.0.0.1:0"
[store]
max_memory_keys = 1000000
[[upstream]]
name = "api"
url = "http://127.0.0.1:1"
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("bench address")
}

fn bench_client_ip(c: &mut Criterion) {
    let mut g = c.benchmark_group("client_ip/resolve");
    let trusted = CidrSet::new(vec![
        "127.0.0.1/32".parse().expect("net"),
        "10.0.0.0/8".parse().expect("net"),
    ]);
    let peer = ip("127.0.0.1");
    // One client, then `hops` trusted proxies: the walk visits every entry.
    for hops in [0usize, 8, 32, 63] {
        let mut chain = String::from("203.0.113.7");
        for i in 0..hops {
            chain.push_str(&format!(", 10.0.{}.{}", i / 250, i % 250 + 1));
        }
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_str(&chain).expect("xff"),
        );
        g.bench_with_input(BenchmarkId::new("trusted_hops", hops), &h, |b, h| {
            b.iter(|| client_ip::resolve(black_box(peer), black_box(h), &trusted))
        });
    }
    // An attacker's chain of 1000 entries: bounded by MAX_XFF_ENTRIES.
    let long = vec!["10.1.1.1"; 1000].join(",");
    let mut h = HeaderMap::new();
    h.insert(
        "x-forwarded-for",
        HeaderValue::from_str(&long).expect("xff"),
    );
    g.bench_function("hostile_1000_entries", |b| {
        b.iter(|| client_ip::resolve(black_box(peer), black_box(&h), &trusted))
    });
    // Several header lines, garbage in the middle.
    let mut h = HeaderMap::new();
    for line in ["198.51.100.1, unknown", "0x7f.0.0.1, 10.0.0.2", "10.0.0.3"] {
        h.append("x-forwarded-for", HeaderValue::from_static(line));
    }
    g.bench_function("garbage_lines", |b| {
        b.iter(|| client_ip::resolve(black_box(peer), black_box(&h), &trusted))
    });
    g.finish();

    c.bench_function("client_ip/client_key_v4", |b| {
        b.iter(|| net::client_key(black_box(ip("198.51.100.23")), 64))
    });
    c.bench_function("client_ip/client_key_v6", |b| {
        let v6 = ip("2001:db8:1:2:3:4:5:6");
        b.iter(|| net::client_key(black_box(v6), 64))
    });
}

fn bench_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("path/normalize");
    let cases = [
        ("normal", "/api/v1/users/12345/orders".to_string()),
        ("trailing_slash", "/api/v1/users/".to_string()),
        ("dot_segments", "/api//v1/./users/x/../12345".to_string()),
        ("escapes", "/api/%61uth/%7Euser/a%2Fb/%e2%82%ac".to_string()),
        (
            "hostile_4k",
            "/a/./b/../%2e%2e/c//d/%41%42/".repeat(4096 / 29),
        ),
        ("hostile_climb", "/a/../../etc/passwd".to_string()),
    ];
    for (name, p) in &cases {
        g.bench_with_input(BenchmarkId::from_parameter(name), p, |b, p| {
            b.iter(|| uri_path::normalize(black_box(p), Default::default()).map(|c| c.len()))
        });
    }
    g.finish();
}

/// 50 prefix routes, a few with methods and hosts, the catch-all last.
fn fifty_routes() -> Config {
    let mut text = String::from(HEAD);
    for i in 0..49 {
        text.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\npath_prefix = \"/svc{i}/v1\"\nupstream = \"api\"\n"
        ));
        if i % 5 == 0 {
            text.push_str("methods = [\"GET\", \"POST\"]\n");
        }
        if i % 7 == 0 {
            text.push_str(&format!("host = \"svc{i}.example.com\"\n"));
        }
    }
    text.push_str("[[route]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"api\"\n");
    config(&text)
}

/// 500 routes: prefix routes and `/svcN/users/{id}/orders` patterns in turn, a few with methods,
/// hosts and header conditions, the catch-all last.
fn five_hundred_routes() -> Config {
    let mut text = String::from(HEAD);
    for i in 0..499 {
        if i % 2 == 0 {
            text.push_str(&format!(
                "[[route]]\nname = \"r{i}\"\npath_prefix = \"/svc{i}/v1\"\nupstream = \"api\"\n"
            ));
        } else {
            text.push_str(&format!(
                "[[route]]\nname = \"r{i}\"\npath = \"/svc{i}/users/{{id}}/orders\"\n\
                 upstream = \"api\"\n"
            ));
        }
        if i % 5 == 0 {
            text.push_str("methods = [\"GET\", \"POST\"]\n");
        }
        if i % 7 == 0 {
            text.push_str(&format!("host = \"svc{i}.example.com\"\n"));
        }
        if i % 11 == 0 {
            text.push_str("headers = { \"x-tenant\" = \"gold\" }\n");
        }
    }
    text.push_str("[[route]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"api\"\n");
    config(&text)
}

fn bench_route_500(c: &mut Criterion) {
    let cfg = five_hundred_routes();
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("route/find_500");
    let cases = [
        ("first", Method::GET, None, "/svc0/v1/x"),
        ("middle", Method::GET, None, "/svc249/users/17/orders"),
        ("last_named", Method::PUT, None, "/svc498/v1/x"),
        (
            "with_host",
            Method::GET,
            Some("SVC490.example.com:8080"),
            "/svc490/v1",
        ),
        (
            "catch_all",
            Method::GET,
            Some("api.example.com"),
            "/nothing/here",
        ),
    ];
    for (name, m, host, p) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| {
                route::find(
                    &cfg.routes,
                    black_box(m),
                    black_box(*host),
                    black_box(&headers),
                    black_box(p),
                    None,
                )
                .map(|r| r.index)
            })
        });
    }
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    let cfg = fifty_routes();
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("route/find_50");
    let cases = [
        ("first", Method::GET, None, "/svc0/v1/x"),
        ("middle", Method::GET, None, "/svc24/v1/users/1"),
        ("last_named", Method::PUT, None, "/svc48/v1/x"),
        (
            "with_host",
            Method::GET,
            Some("SVC42.example.com:8080"),
            "/svc42/v1",
        ),
        (
            "catch_all",
            Method::GET,
            Some("api.example.com"),
            "/nothing/here",
        ),
    ];
    for (name, m, host, p) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| {
                route::find(
                    &cfg.routes,
                    black_box(m),
                    black_box(*host),
                    black_box(&headers),
                    black_box(p),
                    None,
                )
                .map(|r| r.index)
            })
        });
    }
    g.finish();
}

const POLICIES: &str = r#"
[[policy]]
name = "per-ip"
algorithm = "fixed_window"
limit = 1000000000
window = "60s"
[[policy]]
name = "per-key"
algorithm = "sliding_window"
limit = 1000000000
window = "60s"
key = ["header:x-api-key", "path"]
[[policy]]
name = "global"
algorithm = "token_bucket"
limit = 1000000000
window = "1s"
key = ["global", "method"]
[[policy]]
name = "log"
algorithm = "sliding_log"
limit = 1000000
window = "60s"
[[route]]
name = "one"
path_prefix = "/one"
upstream = "api"
policies = ["per-ip"]
[[route]]
name = "three"
path_prefix = "/three"
upstream = "api"
policies = ["per-ip", "per-key", "global"]
"#;

fn limiter_config() -> Config {
    config(&format!("{HEAD}{POLICIES}"))
}

fn client(s: &str) -> ClientId {
    let ip = ip(s);
    ClientId {
        ip,
        key: net::client_key(ip, 64),
    }
}

fn bench_keys(c: &mut Criterion) {
    let cfg = limiter_config();
    let three = &cfg.routes[1];
    let id = client("198.51.100.23");
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_static("k-4f1c2a9e"));
    let mut long = HeaderMap::new();
    long.insert(
        "x-api-key",
        HeaderValue::from_str(&"k".repeat(200)).expect("value"),
    );
    let mut g = c.benchmark_group("limiter/build_key");
    for (name, policy, headers) in [
        ("ip", &three.policies[0], &h),
        ("header_path", &three.policies[1], &h),
        ("header_hashed", &three.policies[1], &long),
        ("global_method", &three.policies[2], &h),
    ] {
        g.bench_function(name, |b| {
            let mut out = String::with_capacity(128);
            b.iter(|| {
                out.clear();
                let view = RequestView {
                    method: &Method::GET,
                    path: "/three/orders/17",
                    query: None,
                    headers,
                    cost: 1,
                    identity: Default::default(),
                };
                policy::build_key(&mut out, policy, three, black_box(&id), view);
                out.len()
            })
        });
    }
    g.finish();
}

/// Distinct client keys, so the store sees a realistic spread over shards rather than one hot key.
fn client_keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect()
}

fn bench_store(c: &mut Criterion) {
    let cfg = limiter_config();
    let clients = client_keys(4096);
    let mut g = c.benchmark_group("store/memory_check");
    for p in &cfg.policies {
        let clock = Arc::new(ManualClock::new(T0));
        let store = MemoryStore::new(1_000_000, clock);
        let keys: Vec<String> = clients
            .iter()
            .map(|ip| format!("{}|i:{ip}", p.name))
            .collect();
        let mut i = 0usize;
        g.bench_function(p.algorithm.as_str(), |b| {
            b.iter(|| {
                i = (i + 1) & (clients.len() - 1);
                let checks = [PolicyCheck::new(p, &keys[i])];
                let req = CheckRequest::new(&clients[i], &checks, 1);
                // The memory store's futures are complete when returned.
                store.check(black_box(&req)).now_or_never()
            })
        });
    }
    // Over the limit: the rejection path (nothing charged, nothing written).
    let over = config(&format!(
        "{HEAD}[[policy]]\nname = \"tiny\"\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1h\"\n\
         [[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"api\"\npolicies = [\"tiny\"]\n"
    ));
    let p = &over.policies[0];
    let store = MemoryStore::new(1_000_000, Arc::new(ManualClock::new(T0)));
    let checks = [PolicyCheck::new(p, "tiny|i:10.0.0.1")];
    let req = CheckRequest::new("10.0.0.1", &checks, 1);
    let _ = store.check(&req).now_or_never();
    g.bench_function("rejected", |b| {
        b.iter(|| store.check(black_box(&req)).now_or_never())
    });
    // A new key per request into a store kept full of counters at their limit (every one is
    // "holding"): the worst case of eviction, O(1) per insert however large the store.
    for max_keys in [10_000usize, 1_000_000] {
        let store = MemoryStore::new(max_keys, Arc::new(ManualClock::new(T0)));
        let mut key = String::new();
        let mut n = 0u64;
        let mut fresh = |key: &mut String| {
            n += 1;
            key.clear();
            key.push_str("tiny|h:");
            key.push_str(itoa::Buffer::new().format(n));
        };
        for _ in 0..max_keys {
            fresh(&mut key);
            let checks = [PolicyCheck::new(p, &key)];
            let _ = store
                .check(&CheckRequest::new("10.0.0.2", &checks, 1))
                .now_or_never();
        }
        g.bench_function(BenchmarkId::new("new_key_into_full_store", max_keys), |b| {
            b.iter(|| {
                fresh(&mut key);
                let checks = [PolicyCheck::new(p, &key)];
                let req = CheckRequest::new("10.0.0.2", &checks, 1);
                store.check(black_box(&req)).now_or_never()
            })
        });
    }
    g.finish();
}

/// A limiter on a memory store of `max_keys` with the fixed bench clock.
fn memory_limiter(cfg: &Config, max_keys: usize) -> Limiter {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let clock = Arc::new(ManualClock::new(T0));
    let store = AnyStore::Memory(MemoryStore::new(max_keys, clock.clone()));
    Limiter::with_fallback_clock(store, &cfg.store, metrics, clock)
}

fn bench_limiter(c: &mut Criterion) {
    let cfg = limiter_config();
    let limiter = memory_limiter(&cfg, 1_000_000);
    let ids: Vec<ClientId> = client_keys(4096).iter().map(|s| client(s)).collect();
    let mut h = HeaderMap::new();
    h.insert(
        HeaderName::from_static("x-api-key"),
        HeaderValue::from_static("k-4f1c2a9e"),
    );
    let mut g = c.benchmark_group("limiter/check");
    for (name, route) in [("1_policy", &cfg.routes[0]), ("3_policies", &cfg.routes[1])] {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & (ids.len() - 1);
                let view = RequestView {
                    method: &Method::GET,
                    path: "/three/orders/17",
                    query: None,
                    headers: &h,
                    cost: 1,
                    identity: Default::default(),
                };
                limiter.check(route, &ids[i], view).now_or_never()
            })
        });
    }
    g.finish();
}

fn report(route: &Route, limiter: &Limiter) -> rategate::limiter::RateReport {
    let h = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        path: "/x",
        query: None,
        headers: &h,
        cost: 1,
        identity: Default::default(),
    };
    match limiter
        .check(route, &client("198.51.100.23"), view)
        .now_or_never()
    {
        Some(rategate::limiter::Verdict::Allowed { report, .. }) => report,
        other => panic!("allowed expected, got {other:?}"),
    }
}

fn bench_headers(c: &mut Criterion) {
    let cfg = limiter_config();
    let limiter = memory_limiter(&cfg, 1000);
    // What a typical upstream answers with.
    let mut upstream = HeaderMap::new();
    upstream.insert("content-type", HeaderValue::from_static("application/json"));
    upstream.insert("content-length", HeaderValue::from_static("1234"));
    upstream.insert(
        "date",
        HeaderValue::from_static("Sat, 22 Nov 2026 10:00:00 GMT"),
    );
    upstream.insert("server", HeaderValue::from_static("nginx"));
    let mut g = c.benchmark_group("headers/apply_rate_headers");
    for (name, route) in [("1_policy", &cfg.routes[0]), ("3_policies", &cfg.routes[1])] {
        let rep = report(route, &limiter);
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || upstream.clone(),
                |h| rate_headers::apply_rate_headers(h, black_box(&rep)),
                BatchSize::SmallInput,
            )
        });
    }
    // A client on a tier override: its `RateLimit-Policy` quota is not the compiled one, so the
    // value is written per request from the compiled pieces.
    let tier = config(&format!(
        "{HEAD}[[policy]]\nname = \"tiered\"\nalgorithm = \"fixed_window\"\nlimit = 1000\n\
         window = \"60s\"\noverrides = {{ \"198.51.100.23\" = 5000 }}\n\
         [[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"api\"\npolicies = [\"tiered\"]\n"
    ));
    let tier_limiter = memory_limiter(&tier, 1000);
    let rep = report(&tier.routes[0], &tier_limiter);
    g.bench_function("1_policy_tier_override", |b| {
        b.iter_batched_ref(
            || upstream.clone(),
            |h| rate_headers::apply_rate_headers(h, black_box(&rep)),
            BatchSize::SmallInput,
        )
    });
    // The upstream sent its own rate-limit headers: they are replaced.
    let mut theirs = upstream.clone();
    theirs.insert("x-ratelimit-limit", HeaderValue::from_static("99"));
    theirs.insert("ratelimit", HeaderValue::from_static("\"x\";r=1;t=1"));
    let rep = report(&cfg.routes[1], &limiter);
    g.bench_function("3_policies_replacing_upstream", |b| {
        b.iter_batched_ref(
            || theirs.clone(),
            |h| rate_headers::apply_rate_headers(h, black_box(&rep)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The whole 429 of a rejection: problem+json body, Retry-After and the rate-limit headers.
fn bench_rejection(c: &mut Criterion) {
    let cfg = limiter_config();
    let limiter = memory_limiter(&cfg, 1000);
    let mut g = c.benchmark_group("response/rate_limited_429");
    for (name, route) in [("1_policy", &cfg.routes[0]), ("3_policies", &cfg.routes[1])] {
        let rep = report(route, &limiter);
        g.bench_function(name, |b| {
            b.iter_batched(
                || rep.clone(),
                |rep| response::rate_limited_for_bench(rep, black_box(17)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the machine is shared and these are compared within one run.
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(50);
    targets = bench_client_ip, bench_path, bench_route, bench_route_500, bench_keys, bench_store, bench_limiter,
        bench_headers, bench_rejection
}
criterion_main!(benches);
