//! The store conformance vectors, exact admission under contention, and the memory store's bound.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use rategate::clock::ManualClock;
use rategate::config::compiled::{Algorithm, Policy};
use rategate::store::conformance::{self, PolicySpec, T0};
use rategate::store::{CheckOutcome, CheckRequest, MemoryStore, PolicyCheck, Store, StoreError};

fn memory(max_keys: usize, clock: &ManualClock) -> MemoryStore {
    MemoryStore::new(max_keys, Arc::new(clock.clone()))
}

#[tokio::test]
async fn memory_store_passes_every_vector() {
    conformance::run_all(|clock| memory(10_000, &clock)).await;
}

#[tokio::test]
async fn memory_store_passes_every_vector_when_sharded() {
    // Large enough for many shards, so a request's keys land in different shards.
    conformance::run_all(|clock| memory(1_000_000, &clock)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_admission_under_contention() {
    conformance::run_concurrency(|clock| memory(1_000_000, &clock)).await;
    conformance::run_concurrency(|clock| memory(100, &clock)).await;
}

fn policy(algorithm: Algorithm, limit: u64, window_ms: u64) -> Policy {
    PolicySpec::new("p", algorithm, limit, window_ms).to_policy(0)
}

async fn hit(store: &MemoryStore, p: &Policy, key: &str) -> Result<CheckOutcome, StoreError> {
    hit_many(store, &[(p, key)]).await
}

async fn hit_many(
    store: &MemoryStore,
    keys: &[(&Policy, &str)],
) -> Result<CheckOutcome, StoreError> {
    let checks: Vec<PolicyCheck<'_>> = keys
        .iter()
        .map(|&(policy, key)| PolicyCheck::new(policy, key))
        .collect();
    let req = CheckRequest::new("client", &checks, 1);
    store.check(&req).await.map(|d| d.outcome)
}

#[tokio::test]
async fn memory_is_bounded_under_a_flood_of_new_keys() {
    let clock = ManualClock::new(T0);
    let store = memory(100, &clock);
    let p = policy(Algorithm::SlidingWindow, 10, 60_000);
    for i in 0..5000 {
        let key = format!("k{i}");
        assert_eq!(hit(&store, &p, &key).await.unwrap(), CheckOutcome::Allowed);
        assert!(store.len() <= 100, "len {} after {i}", store.len());
    }
}

async fn count(store: &MemoryStore, p: &Policy, key: &str) -> u64 {
    store
        .limit_status(&PolicyCheck::new(p, key))
        .await
        .unwrap()
        .count
}

#[tokio::test]
async fn a_store_full_of_limiting_entries_refuses_new_keys_and_forgets_nothing() {
    let clock = ManualClock::new(T0);
    let store = memory(10, &clock);
    let p = policy(Algorithm::FixedWindow, 1, 60_000);
    for i in 0..10 {
        assert_eq!(
            hit(&store, &p, &format!("k{i}")).await.unwrap(),
            CheckOutcome::Allowed
        );
    }
    // Every entry limits its key: a new one is refused, nothing is charged or forgotten.
    assert!(matches!(
        hit(&store, &p, "new").await,
        Err(StoreError::Capacity)
    ));
    assert_eq!(store.len(), 10);
    for i in 0..10 {
        assert_eq!(
            hit(&store, &p, &format!("k{i}")).await.unwrap(),
            CheckOutcome::Limited { policy: 0 },
            "k{i}"
        );
    }
    // Once a window is over its counter is expired and makes room.
    clock.advance_ms(60_000);
    assert_eq!(hit(&store, &p, "new").await.unwrap(), CheckOutcome::Allowed);
}

#[tokio::test]
async fn blocks_outlive_idle_counters() {
    let clock = ManualClock::new(T0);
    let store = memory(6, &clock);
    for i in 0..5 {
        store
            .block(&format!("c{i}"), Duration::from_secs(60), "manual")
            .await
            .unwrap();
    }
    let p = policy(Algorithm::FixedWindow, 10, 60_000);
    assert_eq!(hit(&store, &p, "k").await.unwrap(), CheckOutcome::Allowed);
    // Full: a new counter evicts the idle one, never a block.
    assert_eq!(hit(&store, &p, "k2").await.unwrap(), CheckOutcome::Allowed);
    assert_eq!(count(&store, &p, "k").await, 0);
    store
        .block("c5", Duration::from_secs(60), "manual")
        .await
        .unwrap();
    assert_eq!(store.blocks().await.unwrap().len(), 6);
    // Replacing an existing block needs no room.
    store
        .block("c0", Duration::from_secs(30), "again")
        .await
        .unwrap();
    assert_eq!(store.blocks().await.unwrap().len(), 6);
    // Only blocks left: the least recently used one (c1; c0 was just replaced) goes.
    store
        .block("c6", Duration::from_secs(60), "manual")
        .await
        .unwrap();
    let mut blocked: Vec<String> = store
        .blocks()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.client)
        .collect();
    blocked.sort();
    assert_eq!(blocked, ["c0", "c2", "c3", "c4", "c5", "c6"]);
}

#[tokio::test]
async fn eviction_takes_the_least_recently_used_idle_counter() {
    let clock = ManualClock::new(T0);
    let store = memory(3, &clock);
    let long = policy(Algorithm::FixedWindow, 5, 60_000);
    let short = PolicySpec::new("q", Algorithm::FixedWindow, 5, 1000).to_policy(1);
    hit(&store, &long, "a").await.unwrap();
    hit(&store, &short, "b").await.unwrap();
    hit(&store, &long, "c").await.unwrap();
    // "a" is used again, so "b" is the least recently used.
    hit(&store, &long, "a").await.unwrap();
    hit(&store, &long, "d").await.unwrap();
    assert_eq!(store.len(), 3);
    assert_eq!(count(&store, &short, "b").await, 0);
    assert_eq!(count(&store, &long, "a").await, 2);
    assert_eq!(count(&store, &long, "c").await, 1);
    assert_eq!(count(&store, &long, "d").await, 1);
}

#[tokio::test]
async fn a_full_store_charges_nothing() {
    let clock = ManualClock::new(T0);
    let store = memory(1, &clock);
    let p = policy(Algorithm::FixedWindow, 5, 60_000);
    let q = PolicySpec::new("q", Algorithm::FixedWindow, 5, 60_000).to_policy(1);
    hit(&store, &p, "x").await.unwrap();
    // "y" needs room, and "x" belongs to the request itself so it may not be evicted for it.
    assert!(matches!(
        hit_many(&store, &[(&p, "x"), (&q, "y")]).await,
        Err(StoreError::Capacity)
    ));
    assert_eq!(
        store
            .limit_status(&PolicyCheck::new(&p, "x"))
            .await
            .unwrap()
            .count,
        1
    );
}

#[tokio::test]
async fn expired_entries_are_swept() {
    let clock = ManualClock::new(T0);
    // One shard, so the traffic below passes through the shard holding the entries.
    let store = memory(1000, &clock);
    let p = policy(Algorithm::TokenBucket, 10, 1000);
    for i in 0..500 {
        hit(&store, &p, &format!("k{i}")).await.unwrap();
    }
    store
        .block("c", Duration::from_millis(50), "x")
        .await
        .unwrap();
    assert_eq!(store.len(), 501);
    // One token back after 100 ms: the bucket is full again and the entry is gone.
    clock.advance_ms(100);
    assert_eq!(store.sweep_expired(), 501);
    assert!(store.is_empty());

    // Without an explicit sweep, normal traffic sweeps too.
    for i in 0..500 {
        hit(&store, &p, &format!("k{i}")).await.unwrap();
    }
    clock.advance_ms(100);
    for _ in 0..600 {
        hit(&store, &p, "hot").await.unwrap();
        clock.advance_ms(100);
    }
    assert!(store.len() < 10, "len {}", store.len());
}

#[tokio::test]
async fn a_concurrency_check_without_a_lease_is_refused() {
    let clock = ManualClock::new(T0);
    let store = memory(100, &clock);
    let p = policy(Algorithm::Concurrency, 2, 60_000);
    assert!(matches!(
        hit(&store, &p, "k").await,
        Err(StoreError::Protocol(_))
    ));
    // Inspecting (cost 0) needs none.
    assert_eq!(
        store
            .limit_status(&PolicyCheck::new(&p, "k"))
            .await
            .unwrap()
            .count,
        0
    );
}
