//! The store conformance vectors against a real redis-server (single node and a 3-master
//! cluster), with the script's clock driven by the vectors' manual clock.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::redis::{have_redis, RedisCluster, RedisServer};
use rategate::config::compiled::{OnError, StoreKind, StoreSettings};
use rategate::store::{conformance, RedisStore};

fn settings(url: String) -> StoreSettings {
    StoreSettings {
        kind: StoreKind::Redis,
        url,
        key_prefix: "conf:".into(),
        timeout: Duration::from_secs(2),
        on_error: OnError::Deny,
        max_memory_keys: 10_000,
        batch_max: 64,
        batch_in_flight: 2,
        batch_queue: 1024,
    }
}

async fn connected(url: String) -> RedisStore {
    let store = RedisStore::connect(&settings(url), Arc::new(|_| {})).unwrap();
    assert!(store.wait_connected(Duration::from_secs(10)).await);
    store
}

async fn run_against(store: RedisStore) {
    let n = AtomicUsize::new(0);
    conformance::run_all(|clock| {
        let prefix = format!("v{}:", n.fetch_add(1, Ordering::SeqCst));
        store.scoped(&prefix, Some(Arc::new(clock)))
    })
    .await;
    let store = Arc::new(store);
    let m = AtomicUsize::new(0);
    conformance::run_concurrency(move |clock| {
        let prefix = format!("c{}:", m.fetch_add(1, Ordering::SeqCst));
        store.scoped(&prefix, Some(Arc::new(clock)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_single_redis() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let redis = RedisServer::start();
    run_against(connected(redis.url()).await).await;
    assert_keys_tagged_with_ttl(&[&redis]);
}

/// Every key the scripts wrote carries the vector's prefix, then a hash tag (the identity it
/// counts, or `{rg}` for what is shared), and a TTL.
fn assert_keys_tagged_with_ttl(nodes: &[&RedisServer]) {
    let mut seen = 0;
    for node in nodes {
        for key in node.cli(&["--scan"]).lines() {
            let (prefix, rest) = key.split_once(':').unwrap();
            assert!(
                (prefix.starts_with('v') || prefix.starts_with('c')) && rest.starts_with('{'),
                "{key}"
            );
            let ttl: i64 = node.cli(&["PTTL", key]).parse().unwrap();
            assert!(ttl > 0, "{key} has no TTL ({ttl})");
            seen += 1;
        }
    }
    assert!(seen > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_redis_cluster() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let cluster = RedisCluster::start();
    run_against(connected(cluster.url()).await).await;
    let nodes: Vec<&RedisServer> = cluster.nodes.iter().collect();
    assert_keys_tagged_with_ttl(&nodes);
    // Keys are sharded by identity: every master holds some.
    for node in &nodes {
        assert_ne!(node.cli(&["DBSIZE"]), "0", "a master holds no key");
    }
}

/// A block cached by one instance is dropped at once when another unblocks the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unblock_reaches_every_instance_cache() {
    use bytes::Bytes;
    use http::{HeaderMap, Method, StatusCode};
    use rategate::app::build_limiter;
    use rategate::config::compiled::{Algorithm, PathMatch, Policy, Route, Target};
    use rategate::limiter::{ClientId, RequestView, Verdict};
    use rategate::metrics::Metrics;

    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let redis = RedisServer::start();
    let mut s = settings(redis.url());
    s.timeout = Duration::from_secs(2);
    let a = build_limiter(&s, Arc::new(Metrics::new().unwrap()))
        .await
        .unwrap();
    let b_metrics = Arc::new(Metrics::new().unwrap());
    let b = build_limiter(&s, b_metrics.clone()).await.unwrap();
    // B's check calls (EVALSHA also carries the background activity flushes).
    let check_calls = || {
        let text = String::from_utf8(b_metrics.render().unwrap()).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("rategate_store_calls_total{call=\"check\"} "))
            .map_or(0, |v| v.parse::<u64>().unwrap())
    };
    for l in [&a, &b] {
        assert!(l.store().wait_ready(Duration::from_secs(10)).await);
    }
    let policy = Arc::new(Policy {
        block_for: Some(Duration::from_secs(3600)),
        ..Policy::new(
            "login",
            Algorithm::FixedWindow,
            1,
            Duration::from_secs(3600),
        )
    });
    let route = Route {
        name: Arc::from("r"),
        path: PathMatch::Prefix("/".into()),
        methods: vec![],
        host: None,
        headers: Vec::new(),
        target: Target::Respond {
            status: StatusCode::OK,
            body: Bytes::new(),
        },
        policies: vec![policy],
        strip_prefix: false,
        case_insensitive: false,
        upgrade: Vec::new(),
        cost: Default::default(),
        auth: None,
        retry: None,
        index: 0,
    };
    let client = ClientId {
        ip: "9.9.9.9".parse().unwrap(),
        key: "9.9.9.9".into(),
    };
    let headers = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        path: "/",
        query: None,
        headers: &headers,
        cost: 1,
        identity: Default::default(),
    };
    assert!(matches!(
        a.check(&route, &client, view).await,
        Verdict::Allowed { .. }
    ));
    assert!(matches!(
        a.check(&route, &client, view).await,
        Verdict::Limited { .. }
    ));
    // B learns of the block from Redis and caches it.
    assert!(matches!(
        b.check(&route, &client, view).await,
        Verdict::Blocked { .. }
    ));
    let calls = check_calls();
    assert_eq!(calls, 1);
    assert!(matches!(
        b.check(&route, &client, view).await,
        Verdict::Blocked { .. }
    ));
    assert_eq!(check_calls(), calls, "a cached block still asked Redis");

    assert!(a.unblock("9.9.9.9").await.unwrap());
    // B's cache is dropped by the published unblock: it asks Redis again, which no longer
    // blocks (the counter is still over its limit, so the answer is a plain rejection).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match b.check(&route, &client, view).await {
            Verdict::Limited { .. } => break,
            Verdict::Blocked { .. } if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => panic!("still blocked or unexpected after unblock: {other:?}"),
        }
    }
}
