//! The local deny cache: clients known to be blocked, and counters known to be over their limit,
//! are answered here until the block or the retry time ends, with no store call. Answers stay
//! exact: while a counter rejects, nothing charges it, and other instances can only make it
//! later, never earlier, that it admits again; an unblock or a reset is published by the store
//! and drops the entry on every instance at once.

use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec};

use crate::lru::Lru;
use crate::millis;
use crate::store::redis::Invalidation;
use crate::store::PolicyState;

const SHARDS: usize = 16;

/// Entry kinds (tags of a shard's recency list).
const BLOCKED: u8 = 0;
const LIMITED: u8 = 1;

/// A cached rejection of one counter.
#[derive(Debug, Clone, Copy)]
struct Limited {
    at: Instant,
    until: Instant,
    state: PolicyState,
    now_ms: u64,
    /// The cost that was rejected: a request of a smaller cost may still fit, so only requests
    /// of at least this cost are answered from the cache.
    cost: u64,
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    Blocked { until: Instant },
    Limited(Limited),
}

impl Entry {
    fn until(&self) -> Instant {
        match self {
            Entry::Blocked { until } => *until,
            Entry::Limited(l) => l.until,
        }
    }
}

/// One shard: blocks and rejections in one recency list. A full shard drops its least recently
/// used entry; a dropped entry only costs a store call.
#[derive(Default)]
struct Shard {
    entries: Lru<Entry>,
}

impl Shard {
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The live entry of `(tag, key)`, touched; an expired one is dropped.
    fn live(&mut self, tag: u8, key: &str, now: Instant) -> Option<Entry> {
        let slot = self.entries.find(tag, key)?;
        let entry = *self.entries.get(slot)?;
        if entry.until() <= now {
            self.entries.remove(slot);
            return None;
        }
        self.entries.touch(slot);
        Some(entry)
    }
}

/// Evictions of a full cache, by kind.
#[derive(Clone)]
struct Evicted {
    blocked: IntCounter,
    limited: IntCounter,
}

pub(crate) struct DenyCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: ahash::RandomState,
    evicted: Option<Evicted>,
}

impl std::fmt::Debug for DenyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenyCache")
            .field("per_shard", &self.per_shard)
            .finish_non_exhaustive()
    }
}

/// A cache hit for a counter: its state moved forward by the time since it was cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CachedRejection {
    pub(crate) state: PolicyState,
    pub(crate) now_ms: u64,
}

impl DenyCache {
    /// At most `max_entries` entries in all: a full shard evicts its least recently used entry
    /// (O(1)); the store still answers for what was evicted, only slower.
    pub(crate) fn new(max_entries: usize) -> Self {
        DenyCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: (max_entries / SHARDS).clamp(1, crate::lru::MAX_ENTRIES),
            hasher: ahash::RandomState::new(),
            evicted: None,
        }
    }

    /// Count evictions in `family` (`store="deny_cache"`, `kind="block|limited"`).
    pub(crate) fn with_evictions(mut self, family: IntCounterVec) -> Self {
        self.evicted = Some(Evicted {
            blocked: family.with_label_values(&["deny_cache", "block"]),
            limited: family.with_label_values(&["deny_cache", "limited"]),
        });
        self
    }

    /// Insert into `shard`, evicting its least recently used entry when full.
    fn insert(&self, shard: &mut Shard, tag: u8, key: &str, entry: Entry, now: Instant) {
        if shard.len() >= self.per_shard && shard.entries.find(tag, key).is_none() {
            if let Some(oldest) = shard.entries.oldest() {
                if let Some((_, old)) = shard.entries.remove(oldest) {
                    if let (Some(c), true) = (&self.evicted, old.until() > now) {
                        match old {
                            Entry::Blocked { .. } => c.blocked.inc(),
                            Entry::Limited(_) => c.limited.inc(),
                        }
                    }
                }
            }
        }
        shard.entries.insert(tag, key, entry);
    }

    fn shard<K: Hash + ?Sized>(&self, key: &K) -> &Mutex<Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[i]
    }

    /// Time left on a known block of `client`.
    pub(crate) fn blocked(&self, client: &str) -> Option<Duration> {
        let now = Instant::now();
        match self.shard(client).lock().live(BLOCKED, client, now)? {
            Entry::Blocked { until } => Some(until - now),
            Entry::Limited(_) => None,
        }
    }

    /// A known rejection of counter `key` for a request of `cost`, with retry and reset counted
    /// down since it was seen.
    pub(crate) fn limited(&self, key: &str, cost: u64) -> Option<CachedRejection> {
        let now = Instant::now();
        let Entry::Limited(hit) = self.shard(key).lock().live(LIMITED, key, now)? else {
            return None;
        };
        if cost < hit.cost {
            return None;
        }
        let elapsed = millis::floor(now - hit.at);
        let mut state = hit.state;
        state.retry_after_ms = state.retry_after_ms.saturating_sub(elapsed).max(1);
        state.reset_ms = state.reset_ms.saturating_sub(elapsed);
        Some(CachedRejection {
            state,
            now_ms: hit.now_ms + elapsed,
        })
    }

    pub(crate) fn insert_block(&self, client: &str, ttl: Duration) {
        let now = Instant::now();
        let mut shard = self.shard(client).lock();
        let entry = Entry::Blocked { until: now + ttl };
        self.insert(&mut shard, BLOCKED, client, entry, now);
    }

    /// Remember that counter `key` rejects requests of `cost` (or more) until
    /// `state.retry_after_ms` from now.
    pub(crate) fn insert_limited(&self, key: &str, state: PolicyState, now_ms: u64, cost: u64) {
        if state.retry_after_ms == 0 {
            return;
        }
        let now = Instant::now();
        let entry = Entry::Limited(Limited {
            at: now,
            until: now + Duration::from_millis(state.retry_after_ms),
            state,
            now_ms,
            cost,
        });
        let mut shard = self.shard(key).lock();
        self.insert(&mut shard, LIMITED, key, entry, now);
    }

    pub(crate) fn invalidate(&self, what: &Invalidation) {
        match what {
            Invalidation::Unblock(client) => {
                let mut shard = self.shard(client.as_str()).lock();
                shard.entries.remove_key(BLOCKED, client);
            }
            Invalidation::Reset(key) => {
                let mut shard = self.shard(key.as_str()).lock();
                shard.entries.remove_key(LIMITED, key);
            }
            Invalidation::All => self.clear(),
        }
    }

    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            shard.lock().entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(retry: u64) -> PolicyState {
        PolicyState {
            allowed: false,
            limit: 5,
            remaining: 0,
            reset_ms: retry * 2,
            retry_after_ms: retry,
        }
    }

    #[test]
    fn entries_expire_and_count_down() {
        let c = DenyCache::new(1000);
        c.insert_limited("k", rejected(60), 1_000, 1);
        let hit = c.limited("k", 1).unwrap();
        assert!(!hit.state.allowed);
        assert!(hit.state.retry_after_ms <= 60 && hit.state.retry_after_ms >= 1);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(c.limited("k", 1), None);

        c.insert_block("1.2.3.4", Duration::from_millis(50));
        assert!(c.blocked("1.2.3.4").is_some());
        assert_eq!(c.blocked("5.6.7.8"), None);
        std::thread::sleep(Duration::from_millis(70));
        assert_eq!(c.blocked("1.2.3.4"), None);
    }

    #[test]
    fn invalidation_drops_entries() {
        let c = DenyCache::new(1000);
        c.insert_block("1.2.3.4", Duration::from_secs(60));
        c.insert_limited("k", rejected(60_000), 0, 1);
        c.invalidate(&Invalidation::Unblock("1.2.3.4".into()));
        assert_eq!(c.blocked("1.2.3.4"), None);
        assert!(c.limited("k", 1).is_some());
        c.invalidate(&Invalidation::Reset("k".into()));
        assert_eq!(c.limited("k", 1), None);
        c.insert_block("a", Duration::from_secs(60));
        c.invalidate(&Invalidation::All);
        assert_eq!(c.blocked("a"), None);
    }

    #[test]
    fn a_smaller_cost_is_not_answered_from_the_cache() {
        let c = DenyCache::new(1000);
        c.insert_limited("k", rejected(60_000), 0, 3);
        assert!(c.limited("k", 3).is_some());
        assert!(c.limited("k", 10).is_some());
        assert_eq!(c.limited("k", 2), None);
    }

    #[test]
    fn bounded() {
        let c = DenyCache::new(SHARDS * 2);
        for i in 0..1000 {
            c.insert_block(
                &format!("10.0.{}.{}", i / 256, i % 256),
                Duration::from_secs(60),
            );
        }
        let total: usize = c.shards.iter().map(|s| s.lock().len()).sum();
        assert!(total <= SHARDS * 2, "{total}");
        // A full cache evicts rather than refuses: the newest entry is always cached.
        assert!(c.blocked("10.0.3.231").is_some());
    }

    #[test]
    fn a_full_shard_evicts_its_least_recently_used_entry() {
        let metrics = crate::metrics::Metrics::new().unwrap();
        let c = DenyCache::new(SHARDS).with_evictions(metrics.store_evictions.clone());
        // One entry per shard: find two keys of the same shard.
        let shard_of = |k: &str| (c.hasher.hash_one(k) as usize) % SHARDS;
        let first = "k0".to_string();
        let second = (1..)
            .map(|i| format!("k{i}"))
            .find(|k| shard_of(k) == shard_of(&first))
            .unwrap();
        c.insert_limited(&first, rejected(60_000), 0, 1);
        c.insert_limited(&second, rejected(60_000), 0, 1);
        assert_eq!(c.limited(&first, 1), None);
        assert!(c.limited(&second, 1).is_some());
        let evicted = metrics
            .store_evictions
            .with_label_values(&["deny_cache", "limited"])
            .get();
        assert_eq!(evicted, 1);
    }
}
