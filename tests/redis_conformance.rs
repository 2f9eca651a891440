//! The store conformance vectors against a real redis-server (single node and a 3-master
//! cluster), with the script's clock driven by the vectors' manual clock.

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
    // Every key the script wrote carries the prefix, the hash tag and a TTL.
    let keys = redis.cli(&["--scan"]);
    assert!(!keys.is_empty());
    for key in keys.lines() {
        assert!(
            (key.starts_with('v') || key.starts_with('c')) && key.contains(":{rg}:"),
            "{key}"
        );
        let ttl: i64 = redis.cli(&["PTTL", key]).parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_redis_cluster() {
    if !have_redis() {
        eprintln!("SKIP: redis-server not installed");
        return;
    }
    let cluster = RedisCluster::start();
    run_against(connected(cluster.url()).await).await;
}
