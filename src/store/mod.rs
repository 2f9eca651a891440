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
}
