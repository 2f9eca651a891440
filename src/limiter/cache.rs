//! The local deny cache: clients known to be blocked, and counters known to be over their limit,
//! are answered here until the block or the retry time ends, with no store call. Answers stay
//! exact: while a counter rejects, nothing charges it, and other instances can only make it
//! later, never earlier, that it admits again; an unblock or a reset is published by the store
//! and drops the entry on every instance at once.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::store::redis::Invalidation;
use crate::store::PolicyState;

const SHARDS: usize = 16;

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

#[derive(Default)]
struct Shard {
    blocked: HashMap<String, Instant, ahash::RandomState>,
    limited: HashMap<String, Limited, ahash::RandomState>,
}

impl Shard {
    fn len(&self) -> usize {
        self.blocked.len() + self.limited.len()
    }

    fn purge(&mut self, now: Instant) {
        self.blocked.retain(|_, until| *until > now);
        self.limited.retain(|_, l| l.until > now);
    }
}

pub struct DenyCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: ahash::RandomState,
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
pub struct CachedRejection {
    pub state: PolicyState,
    pub now_ms: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl DenyCache {
    /// At most `max_entries` entries in all (a full shard first drops expired entries, then
    /// stops caching: the store still answers correctly, only slower).
    pub fn new(max_entries: usize) -> Self {
        DenyCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: (max_entries / SHARDS).max(1),
            hasher: ahash::RandomState::new(),
        }
    }

    fn shard<K: Hash + ?Sized>(&self, key: &K) -> &Mutex<Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[i]
    }

    /// Time left on a known block of `client`.
    pub fn blocked(&self, client: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut shard = self.shard(client).lock();
        match shard.blocked.get(client) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                shard.blocked.remove(client);
                None
            }
            None => None,
        }
    }

    /// A known rejection of counter `key` for a request of `cost`, with retry and reset counted
    /// down since it was seen.
    pub fn limited(&self, key: &str, cost: u64) -> Option<CachedRejection> {
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        let hit = *shard.limited.get(key)?;
        if hit.until <= now {
            shard.limited.remove(key);
            return None;
        }
        if cost < hit.cost {
            return None;
        }
        let elapsed = ms(now - hit.at);
        let mut state = hit.state;
        state.retry_after_ms = state.retry_after_ms.saturating_sub(elapsed).max(1);
        state.reset_ms = state.reset_ms.saturating_sub(elapsed);
        Some(CachedRejection {
            state,
            now_ms: hit.now_ms + elapsed,
        })
    }

    pub fn insert_block(&self, client: &str, ttl: Duration) {
        let now = Instant::now();
        let mut shard = self.shard(client).lock();
        if shard.len() >= self.per_shard {
            shard.purge(now);
            if shard.len() >= self.per_shard {
                return;
            }
        }
        shard.blocked.insert(client.to_string(), now + ttl);
    }

    /// Remember that counter `key` rejects requests of `cost` (or more) until
    /// `state.retry_after_ms` from now.
    pub fn insert_limited(&self, key: &str, state: PolicyState, now_ms: u64, cost: u64) {
        if state.retry_after_ms == 0 {
            return;
        }
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        if shard.len() >= self.per_shard {
            shard.purge(now);
            if shard.len() >= self.per_shard {
                return;
            }
        }
        shard.limited.insert(
            key.to_string(),
            Limited {
                at: now,
                until: now + Duration::from_millis(state.retry_after_ms),
                state,
                now_ms,
                cost,
            },
        );
    }

    pub fn invalidate(&self, what: &Invalidation) {
        match what {
            Invalidation::Unblock(client) => {
                self.shard(client.as_str()).lock().blocked.remove(client);
            }
            Invalidation::Reset(key) => {
                self.shard(key.as_str()).lock().limited.remove(key);
            }
            Invalidation::All => self.clear(),
        }
    }

    pub fn clear(&self) {
        for shard in &self.shards {
            let mut s = shard.lock();
            s.blocked.clear();
            s.limited.clear();
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
    }
}
