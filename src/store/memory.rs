//! The in-process store: exact counters (no sketches), sharded maps behind `parking_lot` mutexes.
//!
//! Atomicity: a request locks every shard it touches (its client's block entry and each counter
//! key) in ascending shard order, evaluates every policy, charges, and only then unlocks. Since all
//! callers lock in the same global order, two requests sharing keys serialize and cannot deadlock.
//! Nothing awaits while a lock is held: the futures this store returns are already complete.
//!
//! Memory bound: `max_keys` entries (counters and blocks) in total, split evenly over the shards so
//! that room is always made inside a shard already locked. Expired entries are dropped lazily on
//! access, by a sweep of a shard every `max(SWEEP_MIN_OPS, entries)` operations on it (amortized
//! O(1)), and first thing when a shard is full. After that a full shard evicts counters that are
//! not at their limit, closest to expiry first. Blocks and counters at their limit are never
//! evicted: forgetting them would let a limited client through. When nothing can be evicted the
//! request fails with [`StoreError::Capacity`] and nothing is charged.

use std::collections::HashMap;
use std::future::{ready, Future};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use crate::clock::Clock;
use crate::config::compiled::{Mode, Policy};

use super::algorithm::{evaluate, Counter, Evaluation, Params};
use super::{
    BlockEntry, CheckRequest, Decision, LimitStatus, Outcome, PolicyCheck, Store, StoreError,
};

/// Upper bound on shards; a request's shard set fits in a `u64` mask.
const MAX_SHARDS: usize = 64;
/// Shards are only split off when each can hold at least this many entries, so that a small store
/// keeps an exact global bound instead of many tiny per-shard bounds.
const MIN_SHARD_CAPACITY: usize = 4096;
/// A shard is swept for expired entries at least this rarely.
const SWEEP_MIN_OPS: usize = 256;
/// When a full shard must evict live counters, it evicts at least this fraction of its capacity
/// at once, so that a flood of new keys costs one scan per batch rather than one per request.
const EVICT_BATCH_DIVISOR: usize = 64;

type Map<V> = HashMap<Box<str>, V, ahash::RandomState>;

/// Per-request scratch lists (shards, guards, parameters, evaluations): one entry per policy of
/// the route, and routes rarely have more than four, so they live on the stack instead of costing
/// four heap allocations per check.
type Inline<T> = smallvec::SmallVec<[T; 4]>;

#[derive(Debug)]
struct CounterEntry {
    /// The parameters the state was written under; other parameters mean "no entry".
    params: Params,
    /// Always `Some` once stored (an `Option` so `Counter::apply` can write it in place).
    state: Option<Counter>,
    /// Store-clock time after which the entry can no longer influence a decision.
    expires_at: u64,
}

impl CounterEntry {
    fn live_state(&self, params: &Params, now: u64) -> Option<&Counter> {
        if self.expires_at > now && self.params == *params {
            self.state.as_ref()
        } else {
            None
        }
    }

    /// Whether a request of cost 1 would be rejected now (the entry is limiting its client).
    fn at_limit(&self, now: u64) -> bool {
        self.expires_at > now && !evaluate(&self.params, self.state.as_ref(), now, 1).allowed()
    }
}

#[derive(Debug)]
struct BlockRecord {
    until: u64,
    reason: Box<str>,
}

#[derive(Debug, Default)]
struct Shard {
    counters: Map<CounterEntry>,
    blocks: Map<BlockRecord>,
    ops: usize,
}

impl Shard {
    fn len(&self) -> usize {
        self.counters.len() + self.blocks.len()
    }

    fn sweep(&mut self, now: u64) -> usize {
        let before = self.len();
        self.counters.retain(|_, e| e.expires_at > now);
        self.blocks.retain(|_, b| b.until > now);
        self.ops = 0;
        before - self.len()
    }

    /// Count an operation; sweep once the shard has seen about as many operations as it holds
    /// entries, which keeps the sweep's cost amortized constant per operation.
    fn tick(&mut self, now: u64) {
        self.ops += 1;
        if self.ops >= SWEEP_MIN_OPS.max(self.len()) {
            self.sweep(now);
        }
    }

    /// Make room for `needed` more entries within `cap`, never evicting a block, a counter at its
    /// limit or one of `protected` (the keys of the request being served). Returns false when that
    /// is impossible; nothing is evicted then.
    fn make_room(
        &mut self,
        needed: usize,
        cap: usize,
        protected: &[PolicyCheck<'_>],
        now: u64,
    ) -> bool {
        if self.len() + needed <= cap {
            return true;
        }
        self.sweep(now);
        let Some(excess) = (self.len() + needed).checked_sub(cap).filter(|&e| e > 0) else {
            return true;
        };
        let evictable = |key: &str, e: &CounterEntry| {
            !protected.iter().any(|c| c.key == key) && !e.at_limit(now)
        };
        let mut expiries: Vec<u64> = self
            .counters
            .iter()
            .filter(|(k, e)| evictable(k, e))
            .map(|(_, e)| e.expires_at)
            .collect();
        if expiries.len() < excess {
            return false;
        }
        let batch = excess.max(cap / EVICT_BATCH_DIVISOR).min(expiries.len());
        let (_, &mut threshold, _) = expiries.select_nth_unstable(batch - 1);
        let mut evicted = 0usize;
        self.counters.retain(|k, e| {
            if evicted < batch && e.expires_at <= threshold && evictable(k, e) {
                evicted += 1;
                false
            } else {
                true
            }
        });
        self.len() + needed <= cap
    }
}

/// The shards one request holds, locked in ascending index order.
struct Locked<'a> {
    mask: u64,
    guards: Inline<MutexGuard<'a, Shard>>,
}

impl Locked<'_> {
    fn shard(&mut self, index: usize) -> &mut Shard {
        // Guards are in ascending shard order, so a shard's position is the number of locked
        // shards below it.
        let below = (self.mask & ((1u64 << index) - 1)).count_ones() as usize;
        &mut self.guards[below]
    }
}

/// The in-process store.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    hasher: ahash::RandomState,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store holding at most `max_keys` entries (counters and blocks), reading time from `clock`.
    pub fn new(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        let max_keys = max_keys.max(1);
        let wanted = (max_keys / MIN_SHARD_CAPACITY).clamp(1, MAX_SHARDS);
        // Largest power of two not above `wanted`.
        let count = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        let shards = (0..count).map(|_| Mutex::new(Shard::default())).collect();
        MemoryStore {
            shards,
            shard_capacity: max_keys / count,
            hasher: ahash::RandomState::new(),
            clock,
        }
    }

    /// Entries currently held, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the store will hold (at most `max_keys`).
    pub fn capacity(&self) -> usize {
        self.shard_capacity * self.shards.len()
    }

    /// Drop every expired entry now; returns how many were dropped. The store also does this by
    /// itself; a periodic call only returns memory sooner.
    pub fn sweep_expired(&self) -> usize {
        let now = self.clock.now_ms();
        self.shards.iter().map(|s| s.lock().sweep(now)).sum()
    }

    fn shard_of(&self, key: &str) -> usize {
        // The shard count is a power of two; the high bits are independent of the map's hashing.
        (self.hasher.hash_one(key) >> 32) as usize & (self.shards.len() - 1)
    }

    fn lock(&self, mask: u64) -> Locked<'_> {
        let mut guards = Inline::with_capacity(mask.count_ones() as usize);
        let mut rest = mask;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            guards.push(self.shards[i].lock());
            rest &= rest - 1;
        }
        Locked { mask, guards }
    }

    fn check_now(&self, req: &CheckRequest<'_>) -> Result<Decision, StoreError> {
        let now = self.clock.now_ms();
        let block_shard = self.shard_of(req.client);
        let key_shards: Inline<usize> = req.checks.iter().map(|c| self.shard_of(c.key)).collect();
        let mask = key_shards
            .iter()
            .fold(1u64 << block_shard, |m, &i| m | (1u64 << i));
        let mut locked = self.lock(mask);
        for g in &mut locked.guards {
            g.tick(now);
        }

        // 1. Block check.
        let blocks = &mut locked.shard(block_shard).blocks;
        if let Some(b) = blocks.get(req.client) {
            if b.until > now {
                return Ok(Decision {
                    outcome: Outcome::Blocked {
                        ttl_ms: b.until - now,
                    },
                    states: Vec::new(),
                    blocked_now: None,
                    now_ms: now,
                });
            }
            blocks.remove(req.client);
        }

        // 2. Evaluate every policy against its current state.
        let mut params: Inline<Params> = Inline::with_capacity(req.checks.len());
        let mut evals: Inline<Evaluation> = Inline::with_capacity(req.checks.len());
        for (check, &shard) in req.checks.iter().zip(&key_shards) {
            let p = Params::of(check.policy);
            let state = locked
                .shard(shard)
                .counters
                .get(check.key)
                .and_then(|e| e.live_state(&p, now));
            evals.push(evaluate(&p, state, now, req.cost));
            params.push(p);
        }

        let rejected = req
            .checks
            .iter()
            .zip(&evals)
            .position(|(c, e)| c.policy.mode == Mode::Enforce && !e.allowed());

        if let Some(policy) = rejected {
            let blocked_now = self.start_block(&mut locked, block_shard, req, &evals, now);
            return Ok(Decision {
                outcome: Outcome::Limited { policy },
                states: evals.iter().map(|e| e.state).collect(),
                blocked_now,
                now_ms: now,
            });
        }

        // 3. Admitted: make room for new entries first, so a full store charges nothing at all.
        // An expired entry counts as needing room: making room may sweep it away.
        let needs_slot = |locked: &mut Locked<'_>, j: usize| {
            evals[j].charged.is_some()
                && !locked
                    .shard(key_shards[j])
                    .counters
                    .get(req.checks[j].key)
                    .is_some_and(|e| e.expires_at > now)
        };
        for i in 0..req.checks.len() {
            if !needs_slot(&mut locked, i) {
                continue;
            }
            let shard = key_shards[i];
            let needed = (0..=i)
                .filter(|&j| key_shards[j] == shard && needs_slot(&mut locked, j))
                .count();
            if !locked
                .shard(shard)
                .make_room(needed, self.shard_capacity, req.checks, now)
            {
                return Err(StoreError::Capacity);
            }
        }

        // 4. Charge every policy that allowed it (shadow policies that would reject are not).
        for ((check, eval), (&shard, p)) in req
            .checks
            .iter()
            .zip(&evals)
            .zip(key_shards.iter().zip(&params))
        {
            let Some(charged) = &eval.charged else {
                continue;
            };
            let counters = &mut locked.shard(shard).counters;
            let expires_at = now.saturating_add(charged.ttl_ms);
            if let Some(entry) = counters.get_mut(check.key) {
                if entry.live_state(p, now).is_none() {
                    entry.state = None;
                }
                entry.params = *p;
                Counter::apply(&mut entry.state, charged.write);
                entry.expires_at = expires_at;
            } else {
                let mut state = None;
                Counter::apply(&mut state, charged.write);
                counters.insert(
                    check.key.into(),
                    CounterEntry {
                        params: *p,
                        state,
                        expires_at,
                    },
                );
            }
        }
        Ok(Decision {
            outcome: Outcome::Allowed,
            states: evals.iter().map(|e| e.report(true)).collect(),
            blocked_now: None,
            now_ms: now,
        })
    }

    /// On a rejection, block the client for the longest `block_for` among the enforce policies
    /// that rejected (first in route order on a tie). Returns `(policy index, ms)`.
    fn start_block(
        &self,
        locked: &mut Locked<'_>,
        block_shard: usize,
        req: &CheckRequest<'_>,
        evals: &[Evaluation],
        now: u64,
    ) -> Option<(usize, u64)> {
        let (index, ms) = block_for(req.checks, evals)?;
        let shard = locked.shard(block_shard);
        if !shard.make_room(1, self.shard_capacity, req.checks, now) {
            // The request is still rejected; only the block is lost.
            tracing::warn!(
                policy = %req.checks[index].policy.name,
                "memory store full: block_for not recorded"
            );
            return None;
        }
        let reason = format!("policy:{}", req.checks[index].policy.name);
        shard.blocks.insert(
            req.client.into(),
            BlockRecord {
                until: now.saturating_add(ms),
                reason: reason.into(),
            },
        );
        Some((index, ms))
    }

    fn block_now(&self, client: &str, ttl: Duration, reason: &str) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let ms = duration_ms(ttl);
        let mut shard = self.shards[self.shard_of(client)].lock();
        shard.tick(now);
        if ms == 0 {
            shard.blocks.remove(client);
            return Ok(());
        }
        let record = BlockRecord {
            until: now.saturating_add(ms),
            reason: reason.into(),
        };
        if let Some(b) = shard.blocks.get_mut(client) {
            *b = record;
            return Ok(());
        }
        if !shard.make_room(1, self.shard_capacity, &[], now) {
            return Err(StoreError::Capacity);
        }
        shard.blocks.insert(client.into(), record);
        Ok(())
    }

    fn unblock_now(&self, client: &str) -> bool {
        let now = self.clock.now_ms();
        let mut shard = self.shards[self.shard_of(client)].lock();
        shard.blocks.remove(client).is_some_and(|b| b.until > now)
    }

    fn blocks_now(&self) -> Vec<BlockEntry> {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            out.extend(
                shard
                    .blocks
                    .iter()
                    .filter(|(_, b)| b.until > now)
                    .map(|(client, b)| BlockEntry {
                        client: client.to_string(),
                        ttl_ms: b.until - now,
                        reason: b.reason.to_string(),
                    }),
            );
        }
        out.sort_by(|a, b| {
            b.ttl_ms
                .cmp(&a.ttl_ms)
                .then_with(|| a.client.cmp(&b.client))
        });
        out
    }

    fn limit_status_now(&self, policy: &Policy, key: &str) -> LimitStatus {
        let now = self.clock.now_ms();
        let p = Params::of(policy);
        let shard = self.shards[self.shard_of(key)].lock();
        let state = shard.counters.get(key).and_then(|e| e.live_state(&p, now));
        let s = evaluate(&p, state, now, 0).state;
        LimitStatus {
            count: s.limit - s.remaining,
            limit: s.limit,
            remaining: s.remaining,
            reset_ms: s.reset_ms,
        }
    }

    fn reset_limit_now(&self, policy: &Policy, key: &str) -> bool {
        let now = self.clock.now_ms();
        let p = Params::of(policy);
        let mut shard = self.shards[self.shard_of(key)].lock();
        shard
            .counters
            .remove(key)
            .is_some_and(|e| e.live_state(&p, now).is_some())
    }
}

/// The block a rejection starts: the longest `block_for` among rejecting enforce policies.
fn block_for(checks: &[PolicyCheck<'_>], evals: &[Evaluation]) -> Option<(usize, u64)> {
    let mut best: Option<(usize, u64)> = None;
    for (i, (c, e)) in checks.iter().zip(evals).enumerate() {
        if c.policy.mode != Mode::Enforce || e.allowed() {
            continue;
        }
        let Some(d) = c.policy.block_for else {
            continue;
        };
        let ms = duration_ms(d);
        if ms > 0 && !matches!(best, Some((_, b)) if b >= ms) {
            best = Some((i, ms));
        }
    }
    best
}

/// Whole milliseconds, rounding a sub-millisecond remainder up so a short block is not lost.
fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn check(
        &self,
        req: &CheckRequest<'_>,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send {
        ready(self.check_now(req))
    }

    fn block(
        &self,
        client: &str,
        ttl: Duration,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(self.block_now(client, ttl, reason))
    }

    fn unblock(&self, client: &str) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.unblock_now(client)))
    }

    fn blocks(&self) -> impl Future<Output = Result<Vec<BlockEntry>, StoreError>> + Send {
        ready(Ok(self.blocks_now()))
    }

    fn limit_status(
        &self,
        policy: &Policy,
        key: &str,
    ) -> impl Future<Output = Result<LimitStatus, StoreError>> + Send {
        ready(Ok(self.limit_status_now(policy, key)))
    }

    fn reset_limit(
        &self,
        policy: &Policy,
        key: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.reset_limit_now(policy, key)))
    }
}
