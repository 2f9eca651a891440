//! The store contract: one `check` per request does the client's block check and every policy
//! of the route, check-all-then-charge-all. The in-process (`memory`) and Redis stores obey the
//! same contract and pass the same conformance vectors (`conformance`).
//!
//! Semantics of [`Store::check`]:
//! 0. If the request carries a token (`CheckRequest::token`) that an active revocation refuses
//!    (its `jti` revoked; or its `sub` revoked with `before` and its `iat` earlier than `before`,
//!    or absent), answer `CheckOutcome::Revoked`; nothing is charged or recorded. A revocation is
//!    active while `now < until` (store clock); [`Store::revoke`] replaces one of the same `jti`
//!    or `sub`, and at most [`REVOCATIONS_MAX`] are active (never evicted). (The Redis store on
//!    a cluster answers the `jti` part from its instance's copy of the revocations, kept by
//!    pub/sub, so a change made on another instance applies there once announced: within
//!    milliseconds; see `redis::RedisStore::jti_in_mirror`.)
//! 1. If `client` is blocked, answer `CheckOutcome::Blocked` with the time left; nothing is
//!    charged.
//! 2. Evaluate every policy at the store's clock, under its check's `limit` and `burst` (a tier
//!    override may differ from the policy's). A request is admitted when every `Enforce` policy
//!    allows `cost` (a concurrency policy: one more request in flight).
//! 3. If admitted, charge `cost` to every policy that allowed it (shadow policies that would reject
//!    are not charged), except `deferred` checks: those are evaluated like the others (so they
//!    reject when already at their limit, and their `block_for` applies then) but never charged
//!    here; the caller charges them with [`Store::charge`] once the response is known. A
//!    concurrency policy is "charged" by recording the request's `lease`. If not admitted, charge
//!    nothing; the first rejecting enforce policy (in route order) is reported as
//!    `CheckOutcome::Limited`. If any rejecting enforce policy has `block_for`, the client is
//!    blocked for the longest *effective* block among them (first in route order on a tie) and
//!    `CheckResult::blocked_now` names that policy; the block's reason is `policy:<name>`.
//!    Shadow policies never block.
//! 4. Every entry written expires (TTL) once it can no longer influence a decision.
//!
//! Effective block (escalation). A policy without `escalation` blocks for `block_for`. With
//! `escalation = {multiplier, max, memory}`, the store keeps an offence record per (policy name,
//! client): `{n, forget_at}`. At a rejection at `now`, `prev = n` when a record exists with
//! `now < forget_at`, else 0, and the policy's effective block is `min(block_for *
//! multiplier^prev, max)` (computed step by step, capped at every step). Only the policy whose
//! block is applied records: `{n: prev + 1, forget_at: now + block + memory}` (so the offence is
//! remembered for `memory` after the block ends), with that TTL. An admin unblock ends the block
//! but keeps the record: the next block is still longer.
//!
//! Concurrency (`Algorithm::Concurrency`; the policy's `window` is its lease duration `L`). The
//! state is a set of leases `id -> expiry`; a lease is live while `now < expiry`, so leases of a
//! crashed instance are reclaimed by expiry alone. Evaluating: `live` = live leases; allowed when
//! `live + 1 <= limit` (whatever `cost`); reported `remaining = limit - live` (after acquiring,
//! `limit - live - 1`), `reset_ms = 0`, and when rejected `retry_after_ms = min(`
//! [`CONCURRENCY_RETRY_MS`]`, earliest live expiry - now)`. Acquiring drops expired leases and
//! records `lease -> now + L` (entry TTL `L`). [`Store::renew`] moves the expiry of a lease still
//! live to `now + L`; [`Store::release`] removes it. A request that was rejected holds nothing. A
//! request with `cost > 0`, a concurrency check and an empty `lease` is refused with
//! `StoreError::Protocol` before anything else (a caller bug: nothing could ever release it).
//!
//! [`Store::charge`] (count by response): for every check given (the caller passes the deferred
//! ones whose response matched), atomically add `cost` units: unconditionally for fixed window,
//! sliding window and sliding log (a counter may go past its limit; it then rejects until enough
//! has aged out), and for the token bucket take `cost` tokens after the refill, clamped at an empty
//! bucket. Concurrency checks are ignored. Charging records no activity and never blocks: a
//! client over its limit is rejected (and blocked) by its next `check`.
//!
//! Groups (how a sharded store keeps these semantics). The memory store, a standalone Redis and
//! Redis behind Sentinel evaluate a request in one atomic step: exactly the rules above. Redis
//! Cluster shards keys by the identity they count (see `redis`), so one request's keys may be in
//! several slots; the checks are then grouped by slot, and the group holding the client's slot
//! also checks the block (when no policy is keyed by the client, the block check is a group of
//! its own). Every group is one atomic script call, all in flight at once, and:
//! - each group checks and charges its own policies atomically, by rules 2 and 3 restricted to
//!   the group (it charges only when all its enforce policies allow);
//! - admitted when every group admitted and the client is not blocked; the states are the
//!   groups' (after charging);
//! - otherwise every group that charged is refunded by one compensating call each, sent (and
//!   awaited) before the answer is returned: fixed and sliding window subtract `cost` from the
//!   window the charge went to (a fixed window that has since ended is left alone; for a sliding
//!   window that has moved on, from its previous window), the sliding log removes exactly the
//!   members this request added (they are named by the request), the token bucket gives `cost`
//!   tokens back (capped at the burst), and a concurrency policy releases the request's lease.
//!   Each refunded policy is reported as it was before the request (its state before the charge);
//! - the outcome is `Blocked` when the client's group found a block, else `Limited` with the first
//!   rejecting enforce policy in route order across all groups;
//! - a block (rule 3's `block_for`) is chosen among all rejecting enforce policies of all groups
//!   by one follow-up call in the client's slot, where the offence records live, with the same
//!   Lua as the single-step path (longest effective block, first in route order on a tie);
//! - a group that failed (timeout, connection) fails the request (`on_error` applies) and the
//!   others are refunded.
//!
//! So a request is never over-admitted, and a rejected request consumes nothing once its refunds
//! have landed. Between a group's charge and its refund, the charged units are visible to other
//! requests: that window is the only source of under-admission (a concurrent request may be
//! rejected by a counter that is about to be refunded). `charge`, `renew` and `release` are one
//! call per group as well; each group is atomic, the whole is not (a failure may leave some
//! groups charged: count by response never affects the decision already made).
//!
//! Batches (how a remote store shares calls and keeps these semantics). The Redis store may carry
//! the groups of several concurrent requests in one script call (`redis::batch`). The call
//! evaluates them one after the other, in the order they were queued, each exactly as if it were
//! a call of its own (atomic, on the server clock read once for the call, seeing every earlier
//! group's charges), and answers each on its own; a request's error is its own. A call that
//! fails or times out fails every group in it, and each of those requests gets `on_error`, like
//! a group that failed above (what it may have charged before failing stays charged, as with any
//! timed-out call).
//!
//! Further rules every store follows (the conformance vectors check them):
//! - The algorithms and their exact integer formulas are in `algorithm`; reported durations are
//!   relative to the store clock at decision time (`CheckResult::now_ms`).
//! - A counter written under other parameters (algorithm, limit, window, burst changed by a
//!   reload or a tier override) is treated as missing, so it restarts from empty.
//! - Expiry is judged against the store clock (`now`), not only by key TTLs: a block is active
//!   while `now < until`, and `blocks()` lists only active blocks with `ttl = until - now`. Key TTLs
//!   are a memory bound. (A Redis store driven by a test clock must still pass the vectors.)
//! - The keys of one request are distinct (a route should list a policy once; config validation
//!   is expected to reject duplicates). Duplicate keys would be evaluated against the same
//!   pre-request state and charged twice.
//! - `cost` larger than a policy's capacity (limit, or burst for the token bucket) is rejected by
//!   that policy with `retry_after_ms = window` (concurrency policies ignore `cost`).
//!
//! # Activity: events and suspicious clients
//!
//! Every store also keeps what the admin API shows as "recent events" and "suspicious clients",
//! *in the store*, so that with Redis every instance sees the same. Recording never costs a round
//! trip on the request path: the memory store records in the same step as the decision; the
//! Redis store queues the records in-process (bounded, drop-oldest, counted in
//! `rategate_store_activity_dropped_total`) and a background task writes them in batches (every
//! 100 ms or 256 records, one script call each), so no request writes the shared keys. `events`,
//! `suspicious` and `blocks` flush this instance's queue first; another instance's records appear
//! within its flush interval. All times are the store clock's
//! (`now`, ms since the Unix epoch), the same clock decisions use.
//!
//! Recording, per call:
//! - `check` answering `CheckOutcome::Limited { policy }`: an [`Event`] `{at: now, client,
//!   kind: Limited, policy: Some(<name of checks[policy]>), reason: None, ttl_ms: None}`, unless a
//!   `Limited` event for the same client and policy name was recorded less than
//!   [`EVENT_REPEAT_MS`] before (`now - last < EVENT_REPEAT_MS`): an over-limit client hammering
//!   the gateway yields one event per second, not one per request. Then, if the same call started
//!   a block (`blocked_now = Some((i, ms))`), a second event `{at: now, client, kind: Blocked,
//!   policy: Some(<name of checks[i]>), reason: Some("policy:<name>"), ttl_ms: Some(ms)}` is
//!   recorded after the first (so it reads as newer), never deduplicated.
//! - `check` answering `CheckOutcome::Blocked`: no event (a blocked client's flood would drown
//!   every other event; the block itself was recorded when it started).
//! - Every `check` answering `Limited` or `Blocked` adds 1 to the client's rejection count in the
//!   suspect bucket of `now` (see below), whether or not an event was recorded: the count is
//!   exactly the number of rejected requests the store answered. Shadow rejections admit the
//!   request and are not counted. `Allowed` records nothing.
//! - `block(client, ttl, reason)` with `ttl > 0`: an event `{at: now, client, kind: Blocked,
//!   policy: None, reason: Some(reason), ttl_ms: Some(<ttl in ms, rounded up>)}`. A zero `ttl`
//!   (which removes the block) records nothing.
//! - `unblock(client)` that removed an active block (returns true): `{at: now, client,
//!   kind: Unblocked, policy: None, reason: None, ttl_ms: None}`; nothing when it returns false.
//! - `revoke(revoked, ttl)`: `{at: now, client: "<jti|sub>:<id>", kind: Revoked, policy: None,
//!   reason: None for a jti, Some("iat before <before>") for a sub, ttl_ms: Some(ttl)}`;
//!   `unrevoke` that removed an active one: `{.., kind: Unrevoked, reason: None, ttl_ms: None}`.
//!
//! Events are a list, newest first, of at most [`EVENTS_MAX`] entries (recording drops the
//! oldest beyond that). [`Store::events`]`(limit)` returns the newest `min(limit, EVENTS_MAX)`
//! events with `now - at < EVENT_TTL_MS`, newest first; events recorded in one call keep their
//! recording order (the later one first).
//!
//! Suspicious clients are counted in aligned buckets of [`SUSPECT_BUCKET_MS`]: a rejection at
//! `now` counts in bucket `floor(now / SUSPECT_BUCKET_MS)`. [`Store::suspicious`]`(limit)` sums,
//! per client, the buckets `b` and `b - 1` where `b = floor(now / SUSPECT_BUCKET_MS)` (so a
//! rejection is counted for 10 to 20 minutes), drops clients whose sum is 0, sorts by sum
//! descending then client ascending (byte order), and returns the first `limit`. A bucket holds
//! at most [`SUSPECTS_MAX`] clients: when a rejection would add one more, the client with the
//! lowest count (the smallest client on a tie) is dropped after the increment, which may be the
//! new one itself.
//!
//! The Redis store keeps these under `<prefix>{rg}:` (the key map is in `redis`): `events` (a
//! list of JSON objects, `LPUSH` + `LTRIM` + TTL), `evrep:<client>|<policy>` (when the last
//! `Limited` event was recorded, store time) and `suspects:<bucket>` (sorted sets of client ->
//! count), with the block index `blocks` (client -> block end) that the admin listing reads and
//! verifies against each client's own block entry (stale entries are dropped lazily).

pub(crate) mod activity;
pub(crate) mod algorithm;
#[cfg(feature = "test-util")]
pub mod conformance;
pub(crate) mod keys;
pub(crate) mod memory;
pub(crate) mod redis;
pub(crate) mod revocations;

pub use memory::MemoryStore;
pub use redis::RedisStore;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::compiled::Policy;

/// One policy of the route with the counter key built for this request.
#[derive(Debug, Clone, Copy)]
pub struct PolicyCheck<'a> {
    pub(crate) policy: &'a Policy,
    /// Escaped, bounded counter key (see `keys`); unique per policy name and identity.
    pub(crate) key: &'a str,
    /// The limit for this key: the policy's, or its tier override.
    pub(crate) limit: u64,
    /// The token bucket capacity for this key (equals `limit` for the other algorithms).
    pub(crate) burst: u64,
    /// Checked with the others but not charged by `check`: a count-by-response policy, charged
    /// later by [`Store::charge`] when the response matches.
    pub(crate) deferred: bool,
}

impl<'a> PolicyCheck<'a> {
    /// The check of `policy` at its own limit; deferred when the policy counts by response.
    pub fn new(policy: &'a Policy, key: &'a str) -> Self {
        PolicyCheck {
            policy,
            key,
            limit: policy.limit,
            burst: policy.burst,
            deferred: policy.deferred(),
        }
    }

    /// The same check at a tier override's limit (`None`: the policy's own).
    pub(crate) fn with_limit(mut self, limit: Option<u64>) -> Self {
        (self.limit, self.burst) = self.policy.limits_for(limit);
        self
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CheckRequest<'a> {
    /// Client key (IP or IPv6 prefix) used for blocks.
    pub(crate) client: &'a str,
    pub(crate) checks: &'a [PolicyCheck<'a>],
    /// Units charged to each policy (1 for a plain request; concurrency policies always take
    /// one slot).
    pub(crate) cost: u64,
    /// The request's lease id: the member a concurrency policy records while the request is in
    /// flight. Unique per request across every instance; empty when the route has no
    /// concurrency policy.
    pub(crate) lease: &'a str,
    /// The verified token the request carries, checked against the revocations in the same
    /// call (`None`: the route has no `auth`, or the request is anonymous).
    pub(crate) token: Option<TokenRef<'a>>,
}

impl<'a> CheckRequest<'a> {
    pub fn new(client: &'a str, checks: &'a [PolicyCheck<'a>], cost: u64) -> Self {
        CheckRequest {
            client,
            checks,
            cost,
            lease: "",
            token: None,
        }
    }
}

/// What a revocation may match in a verified token: its `jti`, and its `sub` with its `iat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenRef<'a> {
    pub(crate) jti: Option<&'a str>,
    pub(crate) sub: Option<&'a str>,
    /// Issued at, seconds since the Unix epoch. A token without `iat` is revoked by any
    /// revocation of its subject (nothing proves it is newer).
    pub(crate) iat: Option<u64>,
}

/// What a revocation names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revoked {
    /// The one token with this `jti`.
    Jti(String),
    /// Every token of this `sub` issued before `before` (seconds since the Unix epoch; a token
    /// with `iat < before`, or without `iat`).
    Sub { sub: String, before: u64 },
}

impl Revoked {
    /// `jti` or `sub`: the admin API's field and the events' client prefix.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Revoked::Jti(_) => "jti",
            Revoked::Sub { .. } => "sub",
        }
    }

    /// The revoked `jti` or `sub`.
    pub(crate) fn id(&self) -> &str {
        match self {
            Revoked::Jti(id) | Revoked::Sub { sub: id, .. } => id,
        }
    }
}

/// One active revocation, as listed by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationEntry {
    pub(crate) revoked: Revoked,
    pub(crate) ttl_ms: u64,
}

/// Most revocations a store holds. Revocations are never evicted (forgetting one would let a
/// revoked token through): past this, a new one is refused until some expire or are removed.
pub(crate) const REVOCATIONS_MAX: usize = 10_000;

/// State of one policy after the decision (after charging when admitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PolicyState {
    /// Whether this policy alone would admit the request.
    pub(crate) allowed: bool,
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Milliseconds until the quota is fully back (for X-RateLimit-Reset and `t=`).
    pub(crate) reset_ms: u64,
    /// Milliseconds until a request of the same cost would be allowed (0 when allowed).
    pub(crate) retry_after_ms: u64,
}

/// The store's answer for the request as a whole (the client's block, then every enforce
/// policy): admitted, over a limit, or blocked. Per-policy detail is in [`CheckResult::states`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    Allowed,
    /// Index into the request's `checks` of the first enforce policy that rejected.
    Limited {
        policy: usize,
    },
    /// The client is blocked (before or because of this request) for `ttl_ms` more.
    Blocked {
        ttl_ms: u64,
    },
    /// The request's token is revoked: 401, nothing charged.
    Revoked,
}

/// Everything one [`Store::check`] call answers: the outcome, each policy's state, a block it
/// started, and the store clock it was judged at. The limiter turns it into its `Verdict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub outcome: CheckOutcome,
    /// One entry per `checks` entry, same order. Empty when the client was already blocked.
    pub(crate) states: Vec<PolicyState>,
    /// Set when this request's rejection started a `block_for` block: (policy index, duration).
    pub(crate) blocked_now: Option<(usize, u64)>,
    /// The store's clock at decision time, ms since the Unix epoch.
    pub(crate) now_ms: u64,
}

/// One active block, as listed by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEntry {
    pub client: String,
    pub(crate) ttl_ms: u64,
    pub(crate) reason: String,
}

/// Longest Retry-After a concurrency rejection suggests: a slot usually frees up much sooner
/// than a lease expires.
pub(crate) const CONCURRENCY_RETRY_MS: u64 = 1000;

/// Most events kept; recording drops the oldest beyond this.
pub(crate) const EVENTS_MAX: usize = 1000;
/// Events older than this (store clock) are no longer listed.
pub(crate) const EVENT_TTL_MS: u64 = 60 * 60 * 1000;
/// At most one `Limited` event per client and policy within this long.
pub(crate) const EVENT_REPEAT_MS: u64 = 1000;
/// Width of one aligned suspect bucket; the current and the previous bucket are summed.
pub(crate) const SUSPECT_BUCKET_MS: u64 = 10 * 60 * 1000;
/// Most clients one suspect bucket holds.
pub(crate) const SUSPECTS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EventKind {
    /// A request was rejected by a policy.
    Limited,
    /// A block started (by a policy's `block_for`, or the admin API).
    Blocked,
    /// The admin API removed an active block.
    Unblocked,
    /// The admin API revoked a token (`client` is `jti:<id>` or `sub:<id>`).
    Revoked,
    /// The admin API removed an active revocation.
    Unrevoked,
}

impl EventKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::Limited => "limited",
            EventKind::Blocked => "blocked",
            EventKind::Unblocked => "unblocked",
            EventKind::Revoked => "revoked",
            EventKind::Unrevoked => "unrevoked",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "limited" => Some(EventKind::Limited),
            "blocked" => Some(EventKind::Blocked),
            "unblocked" => Some(EventKind::Unblocked),
            "revoked" => Some(EventKind::Revoked),
            "unrevoked" => Some(EventKind::Unrevoked),
            _ => None,
        }
    }
}

/// One recorded event (see the module docs for exactly when each is recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Store clock when recorded, ms since the Unix epoch.
    pub(crate) at_ms: u64,
    pub(crate) client: String,
    pub(crate) kind: EventKind,
    /// The rejecting policy (`Limited`) or the policy whose `block_for` started the block.
    pub(crate) policy: Option<String>,
    /// The block's reason (`Blocked` only).
    pub(crate) reason: Option<String>,
    /// The block's duration (`Blocked` only).
    pub(crate) ttl_ms: Option<u64>,
}

/// A client most often rejected recently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    pub(crate) client: String,
    /// Rejections counted in the current and the previous suspect bucket.
    pub(crate) rejections: u64,
}

/// Current state of one counter, as inspected by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStatus {
    /// Units currently counted (token bucket: tokens used, i.e. burst - available).
    pub count: u64,
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    pub(crate) reset_ms: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store timed out after {0:?}")]
    Timeout(Duration),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store returned a malformed reply: {0}")]
    Protocol(String),
    /// Only the in-process store, and only when one request needs more new entries than a
    /// shard holds: a full store evicts instead (see `memory`).
    #[error("store shard too small for the request's own entries")]
    Capacity,
    /// Redis no longer has a script (restart, failover, SCRIPT FLUSH); recovered inside the
    /// Redis store and never seen by callers.
    #[error("script not loaded on the server")]
    NoScript,
    /// Only the Redis store: this many checks already wait for the same script call's turn
    /// (`store.batch_queue`).
    #[error("store overloaded: {0} checks already queued for the same call")]
    Overloaded(usize),
}

impl StoreError {
    /// Short, bounded label for metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout(_) => "timeout",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Protocol(_) => "protocol",
            StoreError::Capacity => "capacity",
            StoreError::NoScript => "noscript",
            StoreError::Overloaded(_) => "overloaded",
        }
    }
}

/// The store contract. Implementations never hold a lock across an await; a call is one round
/// trip, or one per group of keys, in flight at once, on a sharded store (see "Groups").
pub trait Store: Send + Sync {
    /// Label for metrics (`memory`, `redis`).
    fn name(&self) -> &'static str;

    fn check(
        &self,
        req: &CheckRequest<'_>,
    ) -> impl Future<Output = Result<CheckResult, StoreError>> + Send;

    /// Block `client` for `ttl` (replacing a shorter or longer existing block).
    fn block(
        &self,
        client: &str,
        ttl: Duration,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Remove a block; returns whether one existed.
    fn unblock(&self, client: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Active blocks, longest remaining first.
    fn blocks(&self) -> impl Future<Output = Result<Vec<BlockEntry>, StoreError>> + Send;

    /// Revoke tokens for `ttl` (replacing an existing revocation of the same `jti` or `sub`).
    /// Refused with [`StoreError::Capacity`] when [`REVOCATIONS_MAX`] are active.
    fn revoke(
        &self,
        revoked: &Revoked,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Remove the revocation of `kind` (`jti` or `sub`) and `id`; returns whether one was active.
    fn unrevoke(
        &self,
        kind: &str,
        id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Active revocations, longest remaining first.
    fn revocations(&self) -> impl Future<Output = Result<Vec<RevocationEntry>, StoreError>> + Send;

    /// Charge `cost` to each of `checks` after the response (count by response; see the module
    /// docs). Atomic: all or nothing.
    fn charge(
        &self,
        checks: &[PolicyCheck<'_>],
        cost: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Move the expiry of `lease` on each concurrency check still holding it to `now + lease`;
    /// returns how many still held it.
    fn renew(
        &self,
        lease: &str,
        checks: &[PolicyCheck<'_>],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Remove `lease` from each concurrency check (the request finished or went away).
    fn release(
        &self,
        lease: &str,
        checks: &[PolicyCheck<'_>],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Inspect one counter without charging it (concurrency: `count` = leases live).
    fn limit_status(
        &self,
        check: &PolicyCheck<'_>,
    ) -> impl Future<Output = Result<LimitStatus, StoreError>> + Send;

    /// Reset one counter; returns whether it existed.
    fn reset_limit(
        &self,
        check: &PolicyCheck<'_>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Recent events, newest first, at most `limit` (see the module docs).
    fn events(&self, limit: usize) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// The clients most often rejected recently, most first, at most `limit` (see the module
    /// docs).
    fn suspicious(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Suspect>, StoreError>> + Send;
}

/// The configured store, as an enum so the limiter dispatches statically.
// One per process, built once and never moved on the request path: boxing would only add an
// indirection to every call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl From<MemoryStore> for AnyStore {
    fn from(s: MemoryStore) -> Self {
        AnyStore::Memory(s)
    }
}

/// What callers ask of the configured store beyond the contract; the only place outside the
/// stores themselves that knows which one is configured.
impl AnyStore {
    /// Whether the store is reached over the network, so that a call may time out or fail while
    /// it is down (a circuit breaker guards it), and costs a round trip (a local deny cache
    /// saves some).
    pub(crate) fn is_remote(&self) -> bool {
        match self {
            AnyStore::Memory(_) => false,
            AnyStore::Redis(_) => true,
        }
    }

    /// Whether a call can reach the store now: false only for a remote store with no
    /// connection up, so callers can fail fast instead of queueing behind a reconnect.
    pub(crate) fn is_connected(&self) -> bool {
        match self {
            AnyStore::Memory(_) => true,
            AnyStore::Redis(r) => r.is_connected(),
        }
    }

    /// The revocations a fallback store enforces in this store's place: the in-process store's
    /// own table; Redis's mirror (with `on_error = "fallback"`; see `revocations`).
    pub(crate) fn fallback_revocations(&self) -> Option<Arc<revocations::SharedRevocations>> {
        match self {
            AnyStore::Memory(m) => Some(m.revocations_table().clone()),
            AnyStore::Redis(r) => r.revocation_mirror().cloned(),
        }
    }

    /// Is the store answering? One PING for a remote store (bounded by its timeout, never
    /// counted in the store request metrics); the in-process store always answers.
    pub(crate) async fn probe(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(_) => Ok(()),
            AnyStore::Redis(r) => r.ping().await,
        }
    }

    /// Wait up to `timeout` for a remote store to be connected (and subscribed to its
    /// invalidations); returns whether it is. The in-process store is ready at once.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        match self {
            AnyStore::Memory(_) => true,
            AnyStore::Redis(r) => r.wait_connected(timeout).await,
        }
    }

    /// Write what this instance recorded but has not flushed yet (the Redis store's events and
    /// suspect counts leave the request path in batches), bounded by the store timeout: called
    /// at shutdown, so the last rejections before a restart still show in the admin API.
    pub(crate) async fn flush_activity(&self) {
        if let AnyStore::Redis(r) = self {
            r.flush_activity().await;
        }
    }
}

impl Store for AnyStore {
    fn name(&self) -> &'static str {
        match self {
            AnyStore::Memory(s) => s.name(),
            AnyStore::Redis(s) => s.name(),
        }
    }

    async fn check(&self, req: &CheckRequest<'_>) -> Result<CheckResult, StoreError> {
        match self {
            AnyStore::Memory(s) => s.check(req).await,
            // fred's command future is about 14 KB; held inline it would make every request
            // future that large (the memory store's is under 100 bytes), and hyper and tokio
            // move the request future several times per request. Boxed, a Redis check pays
            // one allocation instead of those copies.
            AnyStore::Redis(s) => Box::pin(s.check(req)).await,
        }
    }

    async fn block(&self, client: &str, ttl: Duration, reason: &str) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.block(client, ttl, reason).await,
            AnyStore::Redis(s) => s.block(client, ttl, reason).await,
        }
    }

    async fn unblock(&self, client: &str) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.unblock(client).await,
            AnyStore::Redis(s) => s.unblock(client).await,
        }
    }

    async fn blocks(&self) -> Result<Vec<BlockEntry>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.blocks().await,
            AnyStore::Redis(s) => s.blocks().await,
        }
    }

    async fn revoke(&self, revoked: &Revoked, ttl: Duration) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.revoke(revoked, ttl).await,
            AnyStore::Redis(s) => s.revoke(revoked, ttl).await,
        }
    }

    async fn unrevoke(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.unrevoke(kind, id).await,
            AnyStore::Redis(s) => s.unrevoke(kind, id).await,
        }
    }

    async fn revocations(&self) -> Result<Vec<RevocationEntry>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.revocations().await,
            AnyStore::Redis(s) => s.revocations().await,
        }
    }

    async fn charge(&self, checks: &[PolicyCheck<'_>], cost: u64) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.charge(checks, cost).await,
            AnyStore::Redis(s) => s.charge(checks, cost).await,
        }
    }

    async fn renew(&self, lease: &str, checks: &[PolicyCheck<'_>]) -> Result<u64, StoreError> {
        match self {
            AnyStore::Memory(s) => s.renew(lease, checks).await,
            AnyStore::Redis(s) => s.renew(lease, checks).await,
        }
    }

    async fn release(&self, lease: &str, checks: &[PolicyCheck<'_>]) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.release(lease, checks).await,
            AnyStore::Redis(s) => s.release(lease, checks).await,
        }
    }

    async fn limit_status(&self, check: &PolicyCheck<'_>) -> Result<LimitStatus, StoreError> {
        match self {
            AnyStore::Memory(s) => s.limit_status(check).await,
            AnyStore::Redis(s) => s.limit_status(check).await,
        }
    }

    async fn reset_limit(&self, check: &PolicyCheck<'_>) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.reset_limit(check).await,
            AnyStore::Redis(s) => s.reset_limit(check).await,
        }
    }

    async fn events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.events(limit).await,
            AnyStore::Redis(s) => s.events(limit).await,
        }
    }

    async fn suspicious(&self, limit: usize) -> Result<Vec<Suspect>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.suspicious(limit).await,
            AnyStore::Redis(s) => s.suspicious(limit).await,
        }
    }
}
