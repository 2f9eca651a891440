//! The store contract: one call per request does the client's block check and every policy of
//! the route, check-all-then-charge-all. The in-process (`memory`) and Redis stores obey the same
//! contract and pass the same conformance vectors (`conformance`).
//!
//! Semantics of [`Store::check`]:
//! 1. If `client` is blocked, answer `Outcome::Blocked` with the time left; nothing is charged.
//! 2. Evaluate every policy at the store's clock. A request is admitted when every `Enforce`
//!    policy allows `cost`.
//! 3. If admitted, charge `cost` to every policy that allowed it (shadow policies that would reject
//!    are not charged). If not admitted, charge nothing; the first rejecting enforce policy (in
//!    route order) is reported as `Outcome::Limited`. If any rejecting enforce policy has
//!    `block_for`, the client is blocked for the longest such `block_for` (first in route order on
//!    a tie) and `Decision::blocked_now` names that policy; the block's reason is
//!    `policy:<name>`. Shadow policies never block.
//! 4. Every entry written expires (TTL) once it can no longer influence a decision.
//!
//! Further rules every store follows (the conformance vectors check them):
//! - The algorithms and their exact integer formulas are in `algorithm`; reported durations are
//!   relative to the store clock at decision time (`Decision::now_ms`).
//! - A counter written under other parameters (algorithm, limit, window, burst changed by a
//!   reload) is treated as missing, so it restarts from empty.
//! - Expiry is judged against the store clock (`now`), not only by key TTLs: a block is active
//!   while `now < until`, and `blocks()` lists only active blocks with `ttl = until - now`. Key TTLs
//!   are a memory bound. (A Redis store driven by a test clock must still pass the vectors.)
//! - The keys of one request are distinct (a route should list a policy once; config validation
//!   is expected to reject duplicates). Duplicate keys would be evaluated against the same
//!   pre-request state and charged twice.
//! - `cost` larger than a policy's capacity (limit, or burst for the token bucket) is rejected by
//!   that policy with `retry_after_ms = window`.
//!
//! # Activity: events and suspicious clients
//!
//! Every store also keeps what the admin API shows as "recent events" and "suspicious clients",
//! *in the store*, so that with Redis every instance sees the same. Recording never costs a round
//! trip of its own: [`Store::check`] records as part of the same call (inside the same Lua script
//! for Redis), and `block`/`unblock` record in their own call. All times are the store clock's
//! (`now`, ms since the Unix epoch), the same clock decisions use.
//!
//! Recording, per call:
//! - `check` answering `Outcome::Limited { policy }`: an [`Event`] `{at: now, client,
//!   kind: Limited, policy: Some(<name of checks[policy]>), reason: None, ttl_ms: None}`, unless a
//!   `Limited` event for the same client and policy name was recorded less than
//!   [`EVENT_REPEAT_MS`] before (`now - last < EVENT_REPEAT_MS`): an over-limit client hammering
//!   the gateway yields one event per second, not one per request. Then, if the same call started
//!   a block (`blocked_now = Some((i, ms))`), a second event `{at: now, client, kind: Blocked,
//!   policy: Some(<name of checks[i]>), reason: Some("policy:<name>"), ttl_ms: Some(ms)}` is
//!   recorded after the first (so it reads as newer), never deduplicated.
//! - `check` answering `Outcome::Blocked`: no event (a blocked client's flood would drown every
//!   other event; the block itself was recorded when it started).
//! - Every `check` answering `Limited` or `Blocked` adds 1 to the client's rejection count in the
//!   suspect bucket of `now` (see below), whether or not an event was recorded: the count is
//!   exactly the number of rejected requests the store answered. Shadow rejections admit the
//!   request and are not counted. `Allowed` records nothing.
//! - `block(client, ttl, reason)` with `ttl > 0`: an event `{at: now, client, kind: Blocked,
//!   policy: None, reason: Some(reason), ttl_ms: Some(<ttl in ms, rounded up>)}`. A zero `ttl`
//!   (which removes the block) records nothing.
//! - `unblock(client)` that removed an active block (returns true): `{at: now, client,
//!   kind: Unblocked, policy: None, reason: None, ttl_ms: None}`; nothing when it returns false.
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
//! Suggested Redis layout (all under `key_prefix` with the same `{rg}` hash tag as every other
//! key, so the check script can write them in the same call, cluster included; every key with a
//! TTL):
//! - `{rg}:events`: a list of JSON objects `{"at":<ms>,"client":"..","kind":"limited|blocked|
//!   unblocked","policy":".."|absent,"reason":".."|absent,"ttl_ms":<ms>|absent}`; record with
//!   `LPUSH` + `LTRIM 0 EVENTS_MAX-1` + `PEXPIRE EVENT_TTL_MS`; read with `LRANGE 0 limit-1` and
//!   filter by age against the script's clock.
//! - `{rg}:evrep:<client>|<policy>`: `SET .. 1 PX EVENT_REPEAT_MS NX`; record the `Limited` event
//!   only when the SET succeeded.
//! - `{rg}:suspects:<bucket>`: a sorted set of client -> count; `ZINCRBY`, then
//!   `ZREMRANGEBYRANK 0 -(SUSPECTS_MAX+1)` and `PEXPIRE 2*SUSPECT_BUCKET_MS`; read buckets `b`
//!   and `b-1` with `ZRANGE .. WITHSCORES`, sum and sort in the script.
//!
//! Rejections the limiter answers from its local deny cache never reach the store, so with Redis
//! `suspicious` counts the rejections Redis answered (the first of each cached run), not every
//! rejected request.

pub mod activity;
pub mod algorithm;
pub mod conformance;
pub mod keys;
pub mod memory;
pub mod redis;

pub use memory::MemoryStore;
pub use redis::RedisStore;

use std::future::Future;
use std::time::Duration;

use crate::config::compiled::Policy;

/// One policy of the route with the counter key built for this request.
#[derive(Debug, Clone, Copy)]
pub struct PolicyCheck<'a> {
    pub policy: &'a Policy,
    /// Escaped, bounded counter key (see `keys`); unique per policy name and identity.
    pub key: &'a str,
}

#[derive(Debug, Clone, Copy)]
pub struct CheckRequest<'a> {
    /// Client key (IP or IPv6 prefix) used for blocks.
    pub client: &'a str,
    pub checks: &'a [PolicyCheck<'a>],
    /// Units charged to each policy (1 for a plain request).
    pub cost: u64,
}

/// State of one policy after the decision (after charging when admitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyState {
    /// Whether this policy alone would admit the request.
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Milliseconds until the quota is fully back (for X-RateLimit-Reset and `t=`).
    pub reset_ms: u64,
    /// Milliseconds until a request of the same cost would be allowed (0 when allowed).
    pub retry_after_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// Index into the request's `checks` of the first enforce policy that rejected.
    Limited {
        policy: usize,
    },
    /// The client is blocked (before or because of this request) for `ttl_ms` more.
    Blocked {
        ttl_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// One entry per `checks` entry, same order. Empty when the client was already blocked.
    pub states: Vec<PolicyState>,
    /// Set when this request's rejection started a `block_for` block: (policy index, duration).
    pub blocked_now: Option<(usize, u64)>,
    /// The store's clock at decision time, ms since the Unix epoch.
    pub now_ms: u64,
}

/// One active block, as listed by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEntry {
    pub client: String,
    pub ttl_ms: u64,
    pub reason: String,
}

/// Most events kept; recording drops the oldest beyond this.
pub const EVENTS_MAX: usize = 1000;
/// Events older than this (store clock) are no longer listed.
pub const EVENT_TTL_MS: u64 = 60 * 60 * 1000;
/// At most one `Limited` event per client and policy within this long.
pub const EVENT_REPEAT_MS: u64 = 1000;
/// Width of one aligned suspect bucket; the current and the previous bucket are summed.
pub const SUSPECT_BUCKET_MS: u64 = 10 * 60 * 1000;
/// Most clients one suspect bucket holds.
pub const SUSPECTS_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A request was rejected by a policy.
    Limited,
    /// A block started (by a policy's `block_for`, or the admin API).
    Blocked,
    /// The admin API removed an active block.
    Unblocked,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Limited => "limited",
            EventKind::Blocked => "blocked",
            EventKind::Unblocked => "unblocked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "limited" => Some(EventKind::Limited),
            "blocked" => Some(EventKind::Blocked),
            "unblocked" => Some(EventKind::Unblocked),
            _ => None,
        }
    }
}

/// One recorded event (see the module docs for exactly when each is recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Store clock when recorded, ms since the Unix epoch.
    pub at_ms: u64,
    pub client: String,
    pub kind: EventKind,
    /// The rejecting policy (`Limited`) or the policy whose `block_for` started the block.
    pub policy: Option<String>,
    /// The block's reason (`Blocked` only).
    pub reason: Option<String>,
    /// The block's duration (`Blocked` only).
    pub ttl_ms: Option<u64>,
}

/// A client most often rejected recently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    pub client: String,
    /// Rejections counted in the current and the previous suspect bucket.
    pub rejections: u64,
}

/// Current state of one counter, as inspected by the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStatus {
    /// Units currently counted (token bucket: tokens used, i.e. burst - available).
    pub count: u64,
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store timed out after {0:?}")]
    Timeout(Duration),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store returned a malformed reply: {0}")]
    Protocol(String),
    #[error("store is full: every tracked entry is actively limiting a client")]
    Capacity,
    /// Redis no longer has a script (restart, failover, SCRIPT FLUSH); recovered inside the
    /// Redis store and never seen by callers.
    #[error("script not loaded on the server")]
    NoScript,
}

impl StoreError {
    /// Short, bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout(_) => "timeout",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Protocol(_) => "protocol",
            StoreError::Capacity => "capacity",
            StoreError::NoScript => "noscript",
        }
    }
}

/// The store contract. Implementations never hold a lock across an await and make at most one
/// round trip per call.
pub trait Store: Send + Sync {
    /// Label for metrics (`memory`, `redis`).
    fn name(&self) -> &'static str;

    fn check(
        &self,
        req: &CheckRequest<'_>,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send;

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

    /// Inspect one counter without charging it.
    fn limit_status(
        &self,
        policy: &Policy,
        key: &str,
    ) -> impl Future<Output = Result<LimitStatus, StoreError>> + Send;

    /// Reset one counter; returns whether it existed.
    fn reset_limit(
        &self,
        policy: &Policy,
        key: &str,
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

impl Store for AnyStore {
    fn name(&self) -> &'static str {
        match self {
            AnyStore::Memory(s) => s.name(),
            AnyStore::Redis(s) => s.name(),
        }
    }

    async fn check(&self, req: &CheckRequest<'_>) -> Result<Decision, StoreError> {
        match self {
            AnyStore::Memory(s) => s.check(req).await,
            AnyStore::Redis(s) => s.check(req).await,
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

    async fn limit_status(&self, policy: &Policy, key: &str) -> Result<LimitStatus, StoreError> {
        match self {
            AnyStore::Memory(s) => s.limit_status(policy, key).await,
            AnyStore::Redis(s) => s.limit_status(policy, key).await,
        }
    }

    async fn reset_limit(&self, policy: &Policy, key: &str) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.reset_limit(policy, key).await,
            AnyStore::Redis(s) => s.reset_limit(policy, key).await,
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
