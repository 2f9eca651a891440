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
use crate::config::compiled::Mode;

use super::activity::Activity;
use super::algorithm::{self, escalated_block, evaluate, Counter, Evaluation, Params, Write};
use super::{
    BlockEntry, CheckRequest, Decision, Event, LimitStatus, Outcome, PolicyCheck, Store,
    StoreError, Suspect,
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

    /// Whether forgetting the entry could let a client through: a request of cost 1 would be
    /// rejected now (it is limiting its client), or it holds leases of requests in flight.
    fn at_limit(&self, now: u64) -> bool {
        self.expires_at > now
            && (!evaluate(&self.params, self.state.as_ref(), now, 1).allowed()
                || matches!(&self.state, Some(Counter::Leases(l)) if l.any_live(now)))
    }
}

/// Offences of one client against one escalating policy (see "Effective block" in `store`).
#[derive(Debug)]
struct Offence {
    count: u64,
    forget_at: u64,
}

/// The offence map's key: policy names cannot contain `|`.
fn offence_key(policy: &str, client: &str) -> String {
    format!("{policy}|{client}")
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
    /// In the shard of the client, like its block; never evicted (forgetting one would shorten
    /// the next block), only expired.
    offences: Map<Offence>,
    ops: usize,
}

impl Shard {
    fn len(&self) -> usize {
        self.counters.len() + self.blocks.len() + self.offences.len()
    }

    fn sweep(&mut self, now: u64) -> usize {
        let before = self.len();
        self.counters.retain(|_, e| e.expires_at > now);
        self.blocks.retain(|_, b| b.until > now);
        self.offences.retain(|_, o| o.forget_at > now);
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
    /// Recent events and suspicious clients (bounded on their own, outside `max_keys`). Boxed:
    /// rarely touched, and it keeps `AnyStore` small.
    activity: Box<Activity>,
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
            activity: Box::default(),
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
        if needs_lease(req) {
            return Err(StoreError::Protocol(
                "a concurrency policy needs the request's lease id".into(),
            ));
        }
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
            let p = Params::of_check(check);
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

        let charges = |j: usize| evals[j].charged.is_some() && !req.checks[j].deferred;

        // 3. Admitted: make room for new entries first, so a full store charges nothing at all.
        // An expired entry counts as needing room: making room may sweep it away.
        let needs_slot = |locked: &mut Locked<'_>, j: usize| {
            charges(j)
                && locked
                    .shard(key_shards[j])
                    .counters
                    .get(req.checks[j].key)
                    .is_none_or(|e| e.expires_at <= now)
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

        // 4. Charge every policy that allowed it (shadow policies that would reject are not;
        // deferred ones are charged after the response).
        for (((check, eval), (&shard, p)), j) in req
            .checks
            .iter()
            .zip(&evals)
            .zip(key_shards.iter().zip(&params))
            .zip(0..)
        {
            let Some(charged) = eval.charged.as_ref().filter(|_| charges(j)) else {
                continue;
            };
            let counters = &mut locked.shard(shard).counters;
            write_counter(
                counters,
                check.key,
                p,
                charged.write,
                charged.ttl_ms,
                req.lease,
                now,
            );
        }
        Ok(Decision {
            outcome: Outcome::Allowed,
            states: evals
                .iter()
                .zip(req.checks)
                .map(|(e, c)| e.report(!c.deferred))
                .collect(),
            blocked_now: None,
            now_ms: now,
        })
    }

    /// Lock the shards of `checks` (ascending order) and tick them; returns the shard of each.
    fn lock_checks(&self, checks: &[PolicyCheck<'_>], now: u64) -> (Locked<'_>, Vec<usize>) {
        let key_shards: Vec<usize> = checks.iter().map(|c| self.shard_of(c.key)).collect();
        let mask = key_shards.iter().fold(0u64, |m, &i| m | (1u64 << i));
        let mut locked = self.lock(mask);
        for g in &mut locked.guards {
            g.tick(now);
        }
        (locked, key_shards)
    }

    fn charge_now(&self, checks: &[PolicyCheck<'_>], cost: u64) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let (mut locked, key_shards) = self.lock_checks(checks, now);
        let mut writes = Vec::with_capacity(checks.len());
        for (check, &shard) in checks.iter().zip(&key_shards) {
            let p = Params::of_check(check);
            let state = locked
                .shard(shard)
                .counters
                .get(check.key)
                .and_then(|e| e.live_state(&p, now));
            writes.push(algorithm::charge(&p, state, now, cost).map(|w| (p, w)));
        }
        // Room first, so that a full store charges nothing at all.
        for i in 0..checks.len() {
            let fresh = |locked: &mut Locked<'_>, j: usize| {
                writes[j].is_some()
                    && locked
                        .shard(key_shards[j])
                        .counters
                        .get(checks[j].key)
                        .is_none_or(|e| e.expires_at <= now)
            };
            if !fresh(&mut locked, i) {
                continue;
            }
            let needed = (0..=i)
                .filter(|&j| key_shards[j] == key_shards[i] && fresh(&mut locked, j))
                .count();
            if !locked
                .shard(key_shards[i])
                .make_room(needed, self.shard_capacity, checks, now)
            {
                return Err(StoreError::Capacity);
            }
        }
        for ((check, write), &shard) in checks.iter().zip(&writes).zip(&key_shards) {
            let Some((p, (write, ttl))) = write else {
                continue;
            };
            let counters = &mut locked.shard(shard).counters;
            write_counter(counters, check.key, p, *write, *ttl, "", now);
        }
        Ok(())
    }

    /// Renew (`renew = true`) or release `lease` on every concurrency check; returns how many
    /// checks held it.
    fn leases_now(&self, lease: &str, checks: &[PolicyCheck<'_>], renew: bool) -> u64 {
        let now = self.clock.now_ms();
        let (mut locked, key_shards) = self.lock_checks(checks, now);
        let mut held = 0;
        for (check, &shard) in checks.iter().zip(&key_shards) {
            let p = Params::of_check(check);
            let counters = &mut locked.shard(shard).counters;
            let Some(entry) = counters.get_mut(check.key) else {
                continue;
            };
            if entry.live_state(&p, now).is_none() {
                continue;
            }
            let Some(Counter::Leases(leases)) = &mut entry.state else {
                continue;
            };
            if renew {
                let expiry = now.saturating_add(p.window_ms);
                if leases.renew(now, lease, expiry) {
                    held += 1;
                    entry.expires_at = entry.expires_at.max(expiry);
                }
            } else if leases.release(lease) {
                held += 1;
                if leases.is_empty() {
                    counters.remove(check.key);
                }
            }
        }
        held
    }

    /// On a rejection, block the client for the longest effective block among the enforce
    /// policies that rejected (first in route order on a tie), recording the offence when that
    /// policy escalates. Returns `(policy index, ms)`.
    fn start_block(
        &self,
        locked: &mut Locked<'_>,
        block_shard: usize,
        req: &CheckRequest<'_>,
        evals: &[Evaluation],
        now: u64,
    ) -> Option<(usize, u64)> {
        let shard = locked.shard(block_shard);
        let mut best: Option<(usize, u64, u64)> = None;
        for (i, (c, e)) in req.checks.iter().zip(evals).enumerate() {
            if c.policy.mode != Mode::Enforce || e.allowed() {
                continue;
            }
            let Some(d) = c.policy.block_for else {
                continue;
            };
            let escalation = c
                .policy
                .escalation
                .map(|x| (x.multiplier, duration_ms(x.max)));
            let prev = match escalation {
                None => 0,
                Some(_) => shard
                    .offences
                    .get(offence_key(&c.policy.name, req.client).as_str())
                    .filter(|o| now < o.forget_at)
                    .map_or(0, |o| o.count),
            };
            let ms = escalated_block(duration_ms(d), escalation, prev);
            if ms > 0 && !matches!(best, Some((_, b, _)) if b >= ms) {
                best = Some((i, ms, prev));
            }
        }
        let (index, ms, prev) = best?;
        let policy = req.checks[index].policy;
        let needed = 1 + usize::from(policy.escalation.is_some());
        if !shard.make_room(needed, self.shard_capacity, req.checks, now) {
            // The request is still rejected; only the block is lost.
            tracing::warn!(
                policy = %policy.name,
                "memory store full: block_for not recorded"
            );
            return None;
        }
        let reason = format!("policy:{}", policy.name);
        shard.blocks.insert(
            req.client.into(),
            BlockRecord {
                until: now.saturating_add(ms),
                reason: reason.into(),
            },
        );
        if let Some(x) = policy.escalation {
            shard.offences.insert(
                offence_key(&policy.name, req.client).into(),
                Offence {
                    count: prev + 1,
                    forget_at: now.saturating_add(ms).saturating_add(duration_ms(x.memory)),
                },
            );
        }
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
        } else {
            if !shard.make_room(1, self.shard_capacity, &[], now) {
                return Err(StoreError::Capacity);
            }
            shard.blocks.insert(client.into(), record);
        }
        drop(shard);
        self.activity.record_block(client, ms, reason, now);
        Ok(())
    }

    fn unblock_now(&self, client: &str) -> bool {
        let now = self.clock.now_ms();
        let mut shard = self.shards[self.shard_of(client)].lock();
        let existed = shard.blocks.remove(client).is_some_and(|b| b.until > now);
        drop(shard);
        if existed {
            self.activity.record_unblock(client, now);
        }
        existed
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

    fn limit_status_now(&self, check: &PolicyCheck<'_>) -> LimitStatus {
        let now = self.clock.now_ms();
        let p = Params::of_check(check);
        let key = check.key;
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

    fn reset_limit_now(&self, check: &PolicyCheck<'_>) -> bool {
        let now = self.clock.now_ms();
        let p = Params::of_check(check);
        let key = check.key;
        let mut shard = self.shards[self.shard_of(key)].lock();
        shard
            .counters
            .remove(key)
            .is_some_and(|e| e.live_state(&p, now).is_some())
    }
}

/// A request that would acquire a concurrency slot without naming its lease (a caller bug; the
/// Redis store refuses it the same way).
pub(super) fn needs_lease(req: &CheckRequest<'_>) -> bool {
    req.cost > 0
        && req.lease.is_empty()
        && req
            .checks
            .iter()
            .any(|c| c.policy.algorithm == crate::config::compiled::Algorithm::Concurrency)
}

/// Write a charge to the counter of `key` (a stale or missing entry starts afresh).
fn write_counter(
    counters: &mut Map<CounterEntry>,
    key: &str,
    p: &Params,
    write: Write,
    ttl_ms: u64,
    lease: &str,
    now: u64,
) {
    let expires_at = now.saturating_add(ttl_ms);
    if let Some(entry) = counters.get_mut(key) {
        if entry.live_state(p, now).is_none() {
            entry.state = None;
        }
        entry.params = *p;
        Counter::apply(&mut entry.state, write, lease);
        // Leases of other requests may outlive this one's.
        entry.expires_at = match entry.state {
            Some(Counter::Leases(ref l)) => l.latest().unwrap_or(expires_at).max(expires_at),
            _ => expires_at,
        };
    } else {
        let mut state = None;
        Counter::apply(&mut state, write, lease);
        counters.insert(
            key.into(),
            CounterEntry {
                params: *p,
                state,
                expires_at,
            },
        );
    }
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
        // Recorded after the shard locks are released: activity has locks of its own.
        ready(
            self.check_now(req)
                .inspect(|d| self.activity.record_check(req, d)),
        )
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

    fn charge(
        &self,
        checks: &[PolicyCheck<'_>],
        cost: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(self.charge_now(checks, cost))
    }

    fn renew(
        &self,
        lease: &str,
        checks: &[PolicyCheck<'_>],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        ready(Ok(self.leases_now(lease, checks, true)))
    }

    fn release(
        &self,
        lease: &str,
        checks: &[PolicyCheck<'_>],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.leases_now(lease, checks, false);
        ready(Ok(()))
    }

    fn limit_status(
        &self,
        check: &PolicyCheck<'_>,
    ) -> impl Future<Output = Result<LimitStatus, StoreError>> + Send {
        ready(Ok(self.limit_status_now(check)))
    }

    fn reset_limit(
        &self,
        check: &PolicyCheck<'_>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.reset_limit_now(check)))
    }

    fn events(&self, limit: usize) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send {
        ready(Ok(self.activity.events(limit, self.clock.now_ms())))
    }

    fn suspicious(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Suspect>, StoreError>> + Send {
        ready(Ok(self.activity.suspicious(limit, self.clock.now_ms())))
    }
}
