//! The in-process store: exact counters (no sketches), sharded maps behind `parking_lot` mutexes.
//!
//! Atomicity: a request locks every shard it touches (its client's block entry and each counter
//! key) in ascending shard order, evaluates every policy, charges, and only then unlocks. Since all
//! callers lock in the same global order, two requests sharing keys serialize and cannot deadlock.
//! Nothing awaits while a lock is held: the futures this store returns are already complete.
//!
//! Memory bound: `max_keys` entries (counters, blocks and offences) in total, split evenly over
//! the shards so that room is always made inside a shard already locked. A full store never
//! refuses a request: it evicts. Each shard keeps its entries in one recency list (`lru`): a
//! request touches its client's block and every counter it reads, a renew or release touches the
//! counter holding the lease. To make room for a new entry, a shard examines at most
//! [`EVICT_SCAN`] entries from its least recently used end, skipping the request's own entries,
//! and evicts the first that is expired or *idle* (a counter that would admit a request of cost 1
//! and holds no live lease). Entries that are *holding* (an active block, a live offence record,
//! a counter at its limit, a counter with live leases) are passed over and moved to the recently
//! used end, a second chance: forgetting them could let a client through early. When every
//! examined entry is holding, a request that needs a new entry (a counter, including one a
//! deferred policy will charge after the response, or a `block_for` block) is not given one: it
//! fails with [`StoreError::Capacity`] and `on_error` decides its fate, so a flood of new keys
//! costs the flooder, never the state that limits anyone else. Only an operator's block
//! (`block`) may displace the least recently used holding entry. Every eviction is O(1), and
//! counted by kind in `rategate_store_evictions_total`. Expired entries are also dropped lazily on
//! access and by a sweep of a shard every `max(SWEEP_MIN_OPS, entries)` operations on it
//! (amortized O(1)).
//!
//! Revocations are kept apart (`revocations`, at most `REVOCATIONS_MAX`, never evicted), under
//! their own lock, read only by the check of a request that carries a token. A fallback store
//! shares its configured store's table ([`MemoryStore::with_revocations`]).

use std::future::{ready, Future};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use prometheus::{IntCounter, IntCounterVec};

use crate::clock::Clock;
use crate::config::compiled::Mode;
use crate::lru::{Lru, Slot, MAX_ENTRIES};
use crate::millis;

use super::activity::Activity;
use super::algorithm::{self, escalated_block, evaluate, Counter, Evaluation, Params, Write};
use super::revocations::SharedRevocations;
use super::{
    BlockEntry, CheckOutcome, CheckRequest, CheckResult, Event, LimitStatus, PolicyCheck,
    RevocationEntry, Revoked, Store, StoreError, Suspect,
};

/// Upper bound on shards; a request's shard set fits in a `u64` mask.
const MAX_SHARDS: usize = 64;
/// Shards are only split off when each can hold at least this many entries, so that a small store
/// keeps an exact global bound instead of many tiny per-shard bounds.
const MIN_SHARD_CAPACITY: usize = 4096;
/// A shard is swept for expired entries at least this rarely.
const SWEEP_MIN_OPS: usize = 256;
/// Entries examined at most to evict one: the bound that keeps an insert into a full shard O(1).
pub(crate) const EVICT_SCAN: usize = 8;

/// Entry kinds, as tags of the shard's one recency list.
const COUNTER: u8 = 0;
const BLOCK: u8 = 1;
const OFFENCE: u8 = 2;

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

    fn has_live_leases(&self, now: u64) -> bool {
        matches!(&self.state, Some(Counter::Leases(l)) if l.any_live(now))
    }

    /// Whether a request of cost 1 would be rejected now (the counter is limiting its client).
    fn rejects(&self, now: u64) -> bool {
        !evaluate(&self.params, self.state.as_ref(), now, 1).allowed()
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

#[derive(Debug)]
enum Entry {
    Counter(CounterEntry),
    Block(BlockRecord),
    Offence(Offence),
}

/// What an evicted entry was, the `kind` label of `rategate_store_evictions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EvictionKind {
    /// A counter that would still admit a request.
    Counter,
    /// A counter at its limit.
    Limiting,
    /// A concurrency counter with requests in flight.
    Lease,
    Block,
    Offence,
}

impl EvictionKind {
    pub(crate) const ALL: [EvictionKind; 5] = [
        EvictionKind::Counter,
        EvictionKind::Limiting,
        EvictionKind::Lease,
        EvictionKind::Block,
        EvictionKind::Offence,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EvictionKind::Counter => "counter",
            EvictionKind::Limiting => "limiting",
            EvictionKind::Lease => "lease",
            EvictionKind::Block => "block",
            EvictionKind::Offence => "offence",
        }
    }
}

/// How much forgetting an entry costs now.
enum Class {
    /// It no longer influences any decision.
    Expired,
    /// Forgetting it only restarts a counter that admits anyway.
    Idle(EvictionKind),
    /// Forgetting it could let a client through early.
    Holding(EvictionKind),
}

impl Entry {
    fn expired(&self, now: u64) -> bool {
        match self {
            Entry::Counter(c) => c.expires_at <= now,
            Entry::Block(b) => b.until <= now,
            Entry::Offence(o) => o.forget_at <= now,
        }
    }

    fn class(&self, now: u64) -> Class {
        if self.expired(now) {
            return Class::Expired;
        }
        match self {
            Entry::Counter(c) if c.has_live_leases(now) => Class::Holding(EvictionKind::Lease),
            Entry::Counter(c) if c.rejects(now) => Class::Holding(EvictionKind::Limiting),
            Entry::Counter(_) => Class::Idle(EvictionKind::Counter),
            Entry::Block(_) => Class::Holding(EvictionKind::Block),
            Entry::Offence(_) => Class::Holding(EvictionKind::Offence),
        }
    }
}

/// Eviction counters of one store, resolved once (`rategate_store_evictions_total{store,kind}`).
#[derive(Debug, Clone)]
pub(crate) struct Evictions([IntCounter; 5]);

impl Evictions {
    /// The counters of `store` (`memory` or `fallback`) in `family`.
    pub(crate) fn new(family: &IntCounterVec, store: &str) -> Self {
        Evictions(EvictionKind::ALL.map(|k| family.with_label_values(&[store, k.as_str()])))
    }

    fn inc(&self, kind: EvictionKind) {
        self.0[kind as usize].inc();
    }
}

/// What making room may evict besides expired and idle entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MayEvict {
    /// Nothing else: a request that needs a new entry fails rather than take state that limits
    /// someone (the key-flood rule).
    IdleOnly,
    /// The least recently used holding entry, as a last resort (an operator's block).
    Holding,
}

/// Entries of the request being served, which making room must not evict.
#[derive(Clone, Copy)]
struct Protect<'a, 'b> {
    checks: &'a [PolicyCheck<'b>],
    client: Option<&'a str>,
}

impl Protect<'_, '_> {
    fn covers(&self, tag: u8, key: &str) -> bool {
        match tag {
            COUNTER => self.checks.iter().any(|c| c.key == key),
            BLOCK => self.client == Some(key),
            _ => self.client.is_some_and(|client| {
                key.split_once('|')
                    .is_some_and(|(_, owner)| owner == client)
            }),
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    entries: Lru<Entry>,
    ops: usize,
    /// Entries examined to evict, in all (what keeps eviction O(1) is checked against this).
    scanned: u64,
}

impl Shard {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn sweep(&mut self, now: u64) -> usize {
        self.ops = 0;
        self.entries.retain(|_, _, e| !e.expired(now))
    }

    /// Count an operation; sweep once the shard has seen about as many operations as it holds
    /// entries, which keeps the sweep's cost amortized constant per operation.
    fn tick(&mut self, now: u64) {
        self.ops += 1;
        if self.ops >= SWEEP_MIN_OPS.max(self.len()) {
            self.sweep(now);
        }
    }

    /// The entry of `(tag, key)`; `touch` marks it as just used.
    fn entry_mut(&mut self, tag: u8, key: &str, touch: bool) -> Option<&mut Entry> {
        let slot = self.entries.find(tag, key)?;
        if touch {
            self.entries.touch(slot);
        }
        self.entries.get_mut(slot)
    }

    fn counter(&self, key: &str) -> Option<&CounterEntry> {
        match self.entries.get(self.entries.find(COUNTER, key)?)? {
            Entry::Counter(c) => Some(c),
            _ => None,
        }
    }

    fn counter_mut(&mut self, key: &str, touch: bool) -> Option<&mut CounterEntry> {
        match self.entry_mut(COUNTER, key, touch)? {
            Entry::Counter(c) => Some(c),
            _ => None,
        }
    }

    fn block_mut(&mut self, client: &str, touch: bool) -> Option<&mut BlockRecord> {
        match self.entry_mut(BLOCK, client, touch)? {
            Entry::Block(b) => Some(b),
            _ => None,
        }
    }

    fn offence(&mut self, key: &str) -> Option<&Offence> {
        match self.entry_mut(OFFENCE, key, true)? {
            Entry::Offence(o) => Some(o),
            _ => None,
        }
    }

    /// Make room for `needed` more entries within `cap` by evicting (see the module docs), never
    /// one of `protect`, and a holding entry only when `may` says so. Returns false when that is
    /// not possible; the request then fails instead of taking someone else's state.
    fn make_room(
        &mut self,
        needed: usize,
        cap: usize,
        protect: Protect<'_, '_>,
        may: MayEvict,
        now: u64,
        evictions: Option<&Evictions>,
    ) -> bool {
        while self.len() + needed > cap {
            if !self.evict_one(protect, may, now, evictions) {
                return false;
            }
        }
        true
    }

    /// Evict one entry, examining at most [`EVICT_SCAN`] from the least recently used end.
    fn evict_one(
        &mut self,
        protect: Protect<'_, '_>,
        may: MayEvict,
        now: u64,
        evictions: Option<&Evictions>,
    ) -> bool {
        let mut passed: smallvec::SmallVec<[(Slot, EvictionKind); EVICT_SCAN]> =
            smallvec::SmallVec::new();
        let mut victim = None;
        let mut cursor = self.entries.oldest();
        for _ in 0..EVICT_SCAN {
            let Some(slot) = cursor else { break };
            cursor = self.entries.newer(slot);
            self.scanned += 1;
            let Some((tag, key, entry)) = self.entries.entry(slot) else {
                break;
            };
            if protect.covers(tag, key) {
                continue;
            }
            match entry.class(now) {
                Class::Expired => victim = Some((slot, None)),
                Class::Idle(kind) => victim = Some((slot, Some(kind))),
                Class::Holding(kind) => {
                    passed.push((slot, kind));
                    continue;
                }
            }
            break;
        }
        let (slot, kind, spared) = match (victim, may) {
            (Some((slot, kind)), _) => (slot, kind, &passed[..]),
            (None, MayEvict::Holding) => match passed.split_first() {
                Some((&(slot, kind), rest)) => (slot, Some(kind), rest),
                None => return false,
            },
            (None, MayEvict::IdleOnly) => {
                // Second chance for the holding entries passed over, so the next attempt looks
                // at others: the scan stays O(1) and moves through the shard.
                for &(s, _) in &passed {
                    self.entries.touch(s);
                }
                return false;
            }
        };
        for &(s, _) in spared {
            self.entries.touch(s);
        }
        self.entries.remove(slot);
        if let (Some(e), Some(kind)) = (evictions, kind) {
            e.inc(kind);
        }
        true
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
    /// Where evictions are counted; `None` when nobody reads them.
    evictions: Option<Evictions>,
    /// Revoked tokens, bounded on their own (outside `max_keys`, never evicted). Read under its
    /// own lock, before the shards are locked, by the check of a request that carries a token.
    revocations: Arc<SharedRevocations>,
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
    /// A store holding at most `max_keys` entries (counters, blocks, offences), reading time from
    /// `clock`.
    pub fn new(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        let max_keys = max_keys.clamp(1, MAX_ENTRIES);
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
            evictions: None,
            revocations: Arc::new(SharedRevocations::authoritative()),
        }
    }

    /// Enforce `revocations` (shared with their owner) instead of a table of its own: a fallback
    /// store refuses what its configured store revoked.
    pub(crate) fn with_revocations(mut self, revocations: Arc<SharedRevocations>) -> Self {
        self.revocations = revocations;
        self
    }

    /// This store's revocations, for a fallback store to share.
    pub(crate) fn revocations_table(&self) -> &Arc<SharedRevocations> {
        &self.revocations
    }

    /// Count evictions in `evictions`.
    pub(crate) fn with_evictions(mut self, evictions: Evictions) -> Self {
        self.evictions = Some(evictions);
        self
    }

    /// Entries examined to evict since the start, over every shard: at most [`EVICT_SCAN`] per
    /// eviction (how the O(1) bound of an insert into a full store is checked).
    #[cfg(test)]
    pub(crate) fn eviction_scans(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().scanned).sum()
    }

    /// Entries currently held, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the store will hold (at most `max_keys`).
    pub(crate) fn capacity(&self) -> usize {
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

    fn check_now(&self, req: &CheckRequest<'_>) -> Result<CheckResult, StoreError> {
        if needs_lease(req) {
            return Err(StoreError::Protocol(
                "a concurrency policy needs the request's lease id".into(),
            ));
        }
        let now = self.clock.now_ms();
        // 0. A revoked token is refused before anything else: nothing charged, no event.
        if let Some(token) = &req.token {
            if self.revocations.refuses(token, now) {
                return Ok(CheckResult {
                    outcome: CheckOutcome::Revoked,
                    states: Vec::new(),
                    blocked_now: None,
                    now_ms: now,
                });
            }
        }
        let block_shard = self.shard_of(req.client);
        let key_shards: Inline<usize> = req.checks.iter().map(|c| self.shard_of(c.key)).collect();
        let mask = key_shards
            .iter()
            .fold(1u64 << block_shard, |m, &i| m | (1u64 << i));
        let mut locked = self.lock(mask);
        for g in &mut locked.guards {
            g.tick(now);
        }

        // 1. Block check. A blocked client that keeps asking keeps its block recently used.
        let shard = locked.shard(block_shard);
        if let Some(until) = shard.block_mut(req.client, true).map(|b| b.until) {
            if until > now {
                return Ok(CheckResult {
                    outcome: CheckOutcome::Blocked {
                        ttl_ms: until - now,
                    },
                    states: Vec::new(),
                    blocked_now: None,
                    now_ms: now,
                });
            }
            shard.entries.remove_key(BLOCK, req.client);
        }

        // 2. Evaluate every policy against its current state; reading a counter touches it, so
        // a client that keeps asking (admitted or not) keeps its own counters.
        let mut params: Inline<Params> = Inline::with_capacity(req.checks.len());
        let mut evals: Inline<Evaluation> = Inline::with_capacity(req.checks.len());
        for (check, &shard) in req.checks.iter().zip(&key_shards) {
            let p = Params::of_check(check);
            let state = locked
                .shard(shard)
                .counter_mut(check.key, true)
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
            return Ok(CheckResult {
                outcome: CheckOutcome::Limited { policy },
                states: evals.iter().map(|e| e.state).collect(),
                blocked_now,
                now_ms: now,
            });
        }

        let charges = |j: usize| evals[j].charged.is_some() && !req.checks[j].deferred;

        // 3. Admitted: make room for new entries first, so that charging cannot fail half-way.
        // When the shard cannot take them without evicting a holding entry, the request fails
        // (`on_error` decides), and nobody else's state is lost to it.
        // An existing entry (even expired) is rewritten in place and is protected from eviction.
        let protect = Protect {
            checks: req.checks,
            client: Some(req.client),
        };
        // Deferred policies (charged after the response) need their room now too: a charge that
        // found the store full later would be lost, and a client whose failures are never
        // counted is never limited.
        let needs_slot = |locked: &mut Locked<'_>, j: usize| {
            evals[j].charged.is_some()
                && locked
                    .shard(key_shards[j])
                    .counter(req.checks[j].key)
                    .is_none()
        };
        for i in 0..req.checks.len() {
            if !needs_slot(&mut locked, i) {
                continue;
            }
            let shard = key_shards[i];
            let needed = (0..=i)
                .filter(|&j| key_shards[j] == shard && needs_slot(&mut locked, j))
                .count();
            if !locked.shard(shard).make_room(
                needed,
                self.shard_capacity,
                protect,
                MayEvict::IdleOnly,
                now,
                self.evictions.as_ref(),
            ) {
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
            write_counter(
                locked.shard(shard),
                check.key,
                p,
                charged.write,
                charged.ttl_ms,
                req.lease,
                now,
            );
        }
        Ok(CheckResult {
            outcome: CheckOutcome::Allowed,
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
                .counter_mut(check.key, true)
                .and_then(|e| e.live_state(&p, now));
            writes.push(algorithm::charge(&p, state, now, cost).map(|w| (p, w)));
        }
        // Room first, so that charging cannot fail half-way.
        let protect = Protect {
            checks,
            client: None,
        };
        for i in 0..checks.len() {
            let fresh = |locked: &mut Locked<'_>, j: usize| {
                writes[j].is_some() && locked.shard(key_shards[j]).counter(checks[j].key).is_none()
            };
            if !fresh(&mut locked, i) {
                continue;
            }
            let needed = (0..=i)
                .filter(|&j| key_shards[j] == key_shards[i] && fresh(&mut locked, j))
                .count();
            if !locked.shard(key_shards[i]).make_room(
                needed,
                self.shard_capacity,
                protect,
                MayEvict::IdleOnly,
                now,
                self.evictions.as_ref(),
            ) {
                return Err(StoreError::Capacity);
            }
        }
        for ((check, write), &shard) in checks.iter().zip(&writes).zip(&key_shards) {
            let Some((p, (write, ttl))) = write else {
                continue;
            };
            write_counter(locked.shard(shard), check.key, p, *write, *ttl, "", now);
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
            let shard = locked.shard(shard);
            let Some(entry) = shard.counter_mut(check.key, true) else {
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
                    shard.entries.remove_key(COUNTER, check.key);
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
                .map(|x| (x.multiplier, millis::ceil(x.max)));
            let prev = match escalation {
                None => 0,
                Some(_) => shard
                    .offence(&offence_key(&c.policy.name, req.client))
                    .filter(|o| now < o.forget_at)
                    .map_or(0, |o| o.count),
            };
            let ms = escalated_block(millis::ceil(d), escalation, prev);
            if ms > 0 && !matches!(best, Some((_, b, _)) if b >= ms) {
                best = Some((i, ms, prev));
            }
        }
        let (index, ms, prev) = best?;
        let policy = req.checks[index].policy;
        let offence = policy
            .escalation
            .map(|x| (offence_key(&policy.name, req.client), x.memory));
        let needed = usize::from(shard.entries.find(BLOCK, req.client).is_none())
            + usize::from(
                offence
                    .as_ref()
                    .is_some_and(|(k, _)| shard.entries.find(OFFENCE, k).is_none()),
            );
        let protect = Protect {
            checks: req.checks,
            client: Some(req.client),
        };
        if !shard.make_room(
            needed,
            self.shard_capacity,
            protect,
            MayEvict::IdleOnly,
            now,
            self.evictions.as_ref(),
        ) {
            // The request is still rejected; only the block is lost.
            tracing::warn!(
                policy = %policy.name,
                "memory store full: block_for not recorded"
            );
            return None;
        }
        let reason = format!("policy:{}", policy.name);
        shard.entries.insert(
            BLOCK,
            req.client,
            Entry::Block(BlockRecord {
                until: now.saturating_add(ms),
                reason: reason.into(),
            }),
        );
        if let Some((key, memory)) = offence {
            shard.entries.insert(
                OFFENCE,
                &key,
                Entry::Offence(Offence {
                    count: prev + 1,
                    forget_at: now.saturating_add(ms).saturating_add(millis::ceil(memory)),
                }),
            );
        }
        Some((index, ms))
    }

    fn block_now(&self, client: &str, ttl: Duration, reason: &str) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let ms = millis::ceil(ttl);
        let mut shard = self.shards[self.shard_of(client)].lock();
        shard.tick(now);
        if ms == 0 {
            shard.entries.remove_key(BLOCK, client);
            return Ok(());
        }
        let record = BlockRecord {
            until: now.saturating_add(ms),
            reason: reason.into(),
        };
        if let Some(b) = shard.block_mut(client, true) {
            *b = record;
        } else {
            let protect = Protect {
                checks: &[],
                client: Some(client),
            };
            let evictions = self.evictions.as_ref();
            // An operator's block must land: it may displace the least recently used holding
            // entry when nothing idle is left.
            if !shard.make_room(
                1,
                self.shard_capacity,
                protect,
                MayEvict::Holding,
                now,
                evictions,
            ) {
                return Err(StoreError::Capacity);
            }
            shard.entries.insert(BLOCK, client, Entry::Block(record));
        }
        drop(shard);
        self.activity.record_block(client, ms, reason, now);
        Ok(())
    }

    fn unblock_now(&self, client: &str) -> bool {
        let now = self.clock.now_ms();
        let mut shard = self.shards[self.shard_of(client)].lock();
        let existed = matches!(
            shard.entries.remove_key(BLOCK, client),
            Some(Entry::Block(b)) if b.until > now
        );
        drop(shard);
        if existed {
            self.activity.record_unblock(client, now);
        }
        existed
    }

    fn revoke_now(&self, revoked: &Revoked, ttl: Duration) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let ms = millis::ceil(ttl);
        self.revocations
            .insert(revoked, now.saturating_add(ms), now)?;
        self.activity.record_revoke(revoked, ms, now);
        Ok(())
    }

    fn unrevoke_now(&self, kind: &str, id: &str) -> bool {
        let now = self.clock.now_ms();
        let existed = self.revocations.remove(kind, id, now);
        if existed {
            self.activity.record_unrevoke(kind, id, now);
        }
        existed
    }

    fn blocks_now(&self) -> Vec<BlockEntry> {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            out.extend(shard.entries.iter().filter_map(|(_, client, e)| match e {
                Entry::Block(b) if b.until > now => Some(BlockEntry {
                    client: client.to_string(),
                    ttl_ms: b.until - now,
                    reason: b.reason.to_string(),
                }),
                _ => None,
            }));
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
        let state = shard.counter(key).and_then(|e| e.live_state(&p, now));
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
        matches!(
            shard.entries.remove_key(COUNTER, key),
            Some(Entry::Counter(e)) if e.live_state(&p, now).is_some()
        )
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

/// Write a charge to the counter of `key` (a stale or missing entry starts afresh). Room for a
/// missing entry was made beforehand.
fn write_counter(
    shard: &mut Shard,
    key: &str,
    p: &Params,
    write: Write,
    ttl_ms: u64,
    lease: &str,
    now: u64,
) {
    let expires_at = now.saturating_add(ttl_ms);
    if let Some(entry) = shard.counter_mut(key, true) {
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
        shard.entries.insert(
            COUNTER,
            key,
            Entry::Counter(CounterEntry {
                params: *p,
                state,
                expires_at,
            }),
        );
    }
}

impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn check(
        &self,
        req: &CheckRequest<'_>,
    ) -> impl Future<Output = Result<CheckResult, StoreError>> + Send {
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

    fn revoke(
        &self,
        revoked: &Revoked,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(self.revoke_now(revoked, ttl))
    }

    fn unrevoke(
        &self,
        kind: &str,
        id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        ready(Ok(self.unrevoke_now(kind, id)))
    }

    fn revocations(&self) -> impl Future<Output = Result<Vec<RevocationEntry>, StoreError>> + Send {
        let now = self.clock.now_ms();
        ready(Ok(self.revocations.list(now)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::compiled::{Algorithm, Policy};
    use crate::metrics::Metrics;

    const T0: u64 = 1_700_006_400_000;

    fn fixed(name: &str, limit: u64) -> Policy {
        Policy::new(name, Algorithm::FixedWindow, limit, Duration::from_secs(60))
    }

    struct Fixture {
        store: MemoryStore,
        metrics: Metrics,
        clock: ManualClock,
    }

    fn store(max_keys: usize) -> Fixture {
        let clock = ManualClock::new(T0);
        let metrics = Metrics::new().unwrap();
        let store = MemoryStore::new(max_keys, Arc::new(clock.clone()))
            .with_evictions(Evictions::new(&metrics.store_evictions, "memory"));
        Fixture {
            store,
            metrics,
            clock,
        }
    }

    impl Fixture {
        fn check(&self, client: &str, checks: &[PolicyCheck<'_>]) -> CheckOutcome {
            let req = CheckRequest::new(client, checks, 1);
            self.store.check_now(&req).unwrap().outcome
        }

        fn evicted(&self, kind: EvictionKind) -> u64 {
            self.metrics
                .store_evictions
                .with_label_values(&["memory", kind.as_str()])
                .get()
        }
    }

    /// The flood of the issue: one client rotating keys on a limit-1 policy (every new counter is
    /// at its limit at once), with a per-client policy on the same route. Once the store is full
    /// of counters that limit someone, a new key is refused (the request fails, `on_error`
    /// decides), and nothing that limits anyone is evicted: another client's limit and the
    /// flooder's own still hold.
    #[test]
    fn a_key_flood_fails_its_own_requests_and_evicts_no_limit() {
        let f = store(1000);
        let (per_ip, per_key) = (fixed("per_ip", 2000), fixed("per_key", 1));
        let login = fixed("login", 2);
        let other = [PolicyCheck::new(&login, "login:2.2.2.2")];
        assert_eq!(f.check("2.2.2.2", &other), CheckOutcome::Allowed);
        assert_eq!(f.check("2.2.2.2", &other), CheckOutcome::Allowed);
        let (mut admitted, mut refused) = (0, 0);
        for i in 0..2400 {
            let key = format!("key:{i}");
            let checks = [
                PolicyCheck::new(&per_ip, "ip:1.1.1.1"),
                PolicyCheck::new(&per_key, &key),
            ];
            let req = CheckRequest::new("1.1.1.1", &checks, 1);
            match f.store.check_now(&req) {
                Ok(d) if d.outcome == CheckOutcome::Allowed => admitted += 1,
                Err(StoreError::Capacity) => refused += 1,
                other => panic!("request {i}: {other:?}"),
            }
            assert!(f.store.len() <= 1000);
        }
        // The per-IP counter, the other client's login counter and 998 per-key counters.
        assert_eq!(admitted, 998);
        assert_eq!(refused, 2400 - 998);
        for kind in EvictionKind::ALL {
            assert_eq!(f.evicted(kind), 0, "{kind:?}");
        }
        // The other client is still at its limit, and the flooder's count is intact.
        assert_eq!(
            f.check("2.2.2.2", &other),
            CheckOutcome::Limited { policy: 0 }
        );
        let status = f
            .store
            .limit_status_now(&PolicyCheck::new(&per_ip, "ip:1.1.1.1"));
        assert_eq!(status.remaining, 2000 - 998);
        // Once the flood's window is over its counters are expired, and room is made again.
        f.clock.advance_ms(60_000);
        let fresh = [PolicyCheck::new(&login, "login:3.3.3.3")];
        assert_eq!(f.check("3.3.3.3", &fresh), CheckOutcome::Allowed);
    }

    /// Counters that limit nothing go first: a client at its limit, a block and a request in
    /// flight all survive a flood of idle counters many times the store's size.
    #[test]
    fn idle_counters_are_evicted_before_limiting_state() {
        let f = store(1000);
        let login = Policy {
            block_for: Some(Duration::from_secs(600)),
            ..fixed("login", 1)
        };
        let slots = Policy::new("slots", Algorithm::Concurrency, 1, Duration::from_secs(600));
        let busy = [PolicyCheck::new(&login, "login:1.1.1.1")];
        assert_eq!(f.check("1.1.1.1", &busy), CheckOutcome::Allowed);
        let at_limit = [PolicyCheck::new(&login, "login:2.2.2.2")];
        assert_eq!(f.check("2.2.2.2", &at_limit), CheckOutcome::Allowed);
        // 1.1.1.1 is blocked (and its block outlives the window).
        assert!(matches!(
            f.check("1.1.1.1", &busy),
            CheckOutcome::Limited { .. }
        ));
        let leases = [PolicyCheck::new(&slots, "slots:x")];
        let req = CheckRequest {
            lease: "lease-1",
            ..CheckRequest::new("3.3.3.3", &leases, 1)
        };
        assert_eq!(
            f.store.check_now(&req).unwrap().outcome,
            CheckOutcome::Allowed
        );

        let wide = fixed("wide", 5);
        for i in 0..5000 {
            let key = format!("wide:{i}");
            let checks = [PolicyCheck::new(&wide, &key)];
            assert_eq!(f.check("9.9.9.9", &checks), CheckOutcome::Allowed);
            f.clock.advance_ms(1);
        }
        assert_eq!(f.evicted(EvictionKind::Counter), 5000 + 4 - 1000);
        assert_eq!(f.evicted(EvictionKind::Limiting), 0);
        assert_eq!(f.evicted(EvictionKind::Block), 0);
        assert_eq!(f.evicted(EvictionKind::Lease), 0);
        assert!(matches!(
            f.check("1.1.1.1", &busy),
            CheckOutcome::Blocked { .. }
        ));
        assert!(matches!(
            f.check("2.2.2.2", &at_limit),
            CheckOutcome::Limited { .. }
        ));
        let req = CheckRequest {
            lease: "lease-2",
            ..CheckRequest::new("4.4.4.4", &leases, 1)
        };
        assert!(matches!(
            f.store.check_now(&req).unwrap().outcome,
            CheckOutcome::Limited { .. }
        ));
    }

    /// A flood of limit-1 counters never displaces a block, and the blocked client stays blocked;
    /// only an operator's block may displace a holding entry when nothing idle is left.
    #[test]
    fn a_flood_never_displaces_a_block_but_an_operators_block_lands() {
        let f = store(1000);
        f.store
            .block_now("1.1.1.1", Duration::from_secs(600), "manual")
            .unwrap();
        let one = fixed("one", 1);
        let nothing: [PolicyCheck<'_>; 0] = [];
        let mut refused = 0;
        for i in 0..3000 {
            let key = format!("one:{i}");
            let checks = [PolicyCheck::new(&one, &key)];
            match f.store.check_now(&CheckRequest::new("9.9.9.9", &checks, 1)) {
                Ok(d) => assert_eq!(d.outcome, CheckOutcome::Allowed),
                Err(StoreError::Capacity) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(refused, 3000 - 999);
        assert_eq!(f.evicted(EvictionKind::Limiting), 0);
        assert_eq!(f.evicted(EvictionKind::Block), 0);
        assert!(matches!(
            f.check("1.1.1.1", &nothing),
            CheckOutcome::Blocked { .. }
        ));
        f.store
            .block_now("2.2.2.2", Duration::from_secs(600), "manual")
            .unwrap();
        assert!(matches!(
            f.check("2.2.2.2", &nothing),
            CheckOutcome::Blocked { .. }
        ));
        assert_eq!(f.evicted(EvictionKind::Limiting), 1);
        assert!(f.store.len() <= 1000);
    }

    /// A deferred policy (charged after the response) claims its room when the request is
    /// admitted: in a store full of limiting counters the request fails then, instead of being
    /// admitted with a charge that could never land.
    #[test]
    fn a_deferred_policy_needs_its_room_at_check_time() {
        let f = store(1000);
        let one = fixed("one", 1);
        for i in 0..1000 {
            let key = format!("one:{i}");
            f.check("9.9.9.9", &[PolicyCheck::new(&one, &key)]);
        }
        let failures = fixed("failures", 5);
        let checks = [PolicyCheck {
            deferred: true,
            ..PolicyCheck::new(&failures, "failures:1.1.1.1")
        }];
        let req = CheckRequest::new("1.1.1.1", &checks, 1);
        assert!(matches!(f.store.check_now(&req), Err(StoreError::Capacity)));
    }

    /// An insert into a full store examines a bounded number of entries: 200k distinct keys
    /// that limit nothing are each let in by one O(1) eviction, and 200k that would need a
    /// limiting counter evicted are each refused after at most `EVICT_SCAN` entries examined.
    #[test]
    fn inserting_into_a_full_store_is_constant_work() {
        let f = store(10_000);
        let keys = 200_000u64;
        let mut key = String::new();
        let mut run = |policy: &Policy, prefix: &str| {
            let mut refused = 0u64;
            for i in 0..keys {
                key.clear();
                key.push_str(prefix);
                key.push_str(itoa::Buffer::new().format(i));
                let checks = [PolicyCheck::new(policy, &key)];
                match f.store.check_now(&CheckRequest::new("9.9.9.9", &checks, 1)) {
                    Ok(d) => assert_eq!(d.outcome, CheckOutcome::Allowed),
                    Err(StoreError::Capacity) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            refused
        };
        assert_eq!(run(&fixed("five", 5), "idle:"), 0);
        assert!(f.store.len() <= 10_000);
        let evictions = f.evicted(EvictionKind::Counter);
        assert_eq!(evictions, keys - f.store.len() as u64);
        let scans = f.store.eviction_scans();
        assert!(
            scans <= EVICT_SCAN as u64 * evictions,
            "{scans} entries examined for {evictions} evictions"
        );
        // Fill with limiting counters (the idle ones make way), then every new key is refused.
        let refused = run(&fixed("one", 1), "holding:");
        assert_eq!(refused, keys - f.store.len() as u64);
        let scans = f.store.eviction_scans();
        assert!(
            scans <= EVICT_SCAN as u64 * (evictions + keys),
            "{scans} entries examined"
        );
        assert_eq!(f.evicted(EvictionKind::Limiting), 0);
    }

    /// Only a shard smaller than one request's own entries cannot make room; nothing is charged.
    #[test]
    fn a_request_larger_than_the_store_is_refused_not_half_charged() {
        let f = store(1);
        let (a, b) = (fixed("a", 5), fixed("b", 5));
        let checks = [PolicyCheck::new(&a, "a:x"), PolicyCheck::new(&b, "b:x")];
        let req = CheckRequest::new("1.1.1.1", &checks, 1);
        assert!(matches!(f.store.check_now(&req), Err(StoreError::Capacity)));
        assert!(f.store.is_empty());
    }
}
