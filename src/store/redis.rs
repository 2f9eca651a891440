//! The Redis store: the Lua in `lua/` mirrors `algorithm.rs` and runs on the Redis server's
//! clock, so any number of gateway instances share exact limits and blocks. A request is one
//! check per group of its keys (`groups`): one on a standalone server or behind Sentinel, and
//! one per cluster slot its keys span in Redis Cluster, where keys are sharded by identity.
//! Concurrent checks of one slot and script share an `EVALSHA` (`batch`).
//!
//! Key map (`layout`; every key written gets a TTL in the same script). A key's hash tag is the
//! identity it counts:
//! ```text
//! <prefix>{i:<client>}:b                   the client's block: "<until ms>:<reason>", TTL = block
//! <prefix>{i:<client>}:o:<policy>          the client's escalation offences (hash: n, f = forget at)
//! <prefix>{i:<client>}:v:<params>:<key>    a counter whose key includes the client (an `ip` part,
//!                                          or a header part that fell back to the client)
//! <prefix>{u:<sub>}:v:<params>:<key>       a counter keyed by a verified subject (`jwt:sub`) and
//!                                          not by the client
//! <prefix>{u:<sub>}:r                      the subject's revocation: "<until ms>:<before s>"
//! <prefix>{j:<jti>}:r                      a revoked token id: "<until ms>:" (read by the check
//!                                          on a standalone server or Sentinel; on a cluster
//!                                          the instance's mirror answers: `jti_in_mirror`)
//! <prefix>{<key>}:v:<params>               any other counter (API key, path, route, `global`):
//!                                          in the slot of its own counter key
//!                                          (`:c:` instead of `:v:` for the sorted-set counters)
//! <prefix>{rg}:blocks                      block index for the admin listing: client -> until,
//!                                          written only when a block starts or is removed
//! <prefix>{rg}:revocations                 revocation index for the admin listing: `jti:<id>` /
//!                                          `sub:<id>` -> until, at most REVOCATIONS_MAX
//! <prefix>{rg}:events                      list: recent events (JSON), newest first
//! <prefix>{rg}:evrep:<client>|<policy>     string: when the last `limited` event was recorded
//! <prefix>{rg}:suspects:<bucket>           sorted set: client -> rejections in that bucket
//! ```
//! A counter is a string of integers (`v`: fixed window "<start>:<count>", sliding window
//! "<start>:<prev>:<count>", token bucket "<units>:<when>"), so a check reads the block entry and
//! its group's counters in one MGET and writes a counter and its TTL in one SET ... PX; or a
//! sorted set (`c`: sliding_log: one member per unit, named by the request when it may need a
//! refund; concurrency: lease id -> expiry). `<params>` names the algorithm, limit, window and burst: a policy changed by a
//! reload gets fresh counters. `<client>` and `<key>` are escaped and bounded by `keys` (no raw
//! `{`, `}`), and the tag comes first, so client bytes never form or break a hash tag.
//!
//! So the common request, every policy keyed by the client, touches one slot (its client's) and
//! is one call, and a fleet's requests spread over every master. The `{rg}` keys are written
//! only off the request path, in batches (`activity`), and by the admin API.
//! `<prefix>{rg}:events` also names the pub/sub channel of unblocks and resets (see
//! [`Invalidation`]) and of revocation changes (`revocations`); channels are not keys, so the
//! two never meet.
//! Besides the check (`lua/check.lua`), the admin operations and the follow-up block
//! (`lua/admin.lua`) and the activity flush (`lua/activity.lua`), the settle script
//! (`lua/settle.lua`) runs off the request's path: the count-by-response charge, lease renewal
//! and release, and refunds. The arguments of a policy are laid out once, in `args`.

mod activity;
mod args;
mod batch;
mod groups;
mod layout;
mod revocations;

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{ClientLike, EventInterface, Pool, PubsubInterface};
use fred::types::{Resp3Frame, Value};
use hashbrown::HashTable;

mod connect;

use self::connect::Conn;
use prometheus::{Histogram, IntCounter};

use super::revocations::SharedRevocations;
use super::{
    BlockEntry, CheckOutcome, CheckRequest, CheckResult, Event, EventKind, LimitStatus,
    PolicyCheck, RevocationEntry, Revoked, Store, StoreError, Suspect,
};
use crate::clock::{Clock, SystemClock};
use crate::config::compiled::{Algorithm, OnError, StoreSettings};
use crate::metrics::Metrics;
use crate::millis;
use activity::{Kind, Record};
use args::int;
use futures_util::future::join_all;
use groups::Plan;
use layout::{Layout, RevocationId};
use smallvec::SmallVec;

const COMMON: &str = include_str!("lua/common.lua");
const CHECK: &str = include_str!("lua/check.lua");
const ADMIN: &str = include_str!("lua/admin.lua");
const SETTLE: &str = include_str!("lua/settle.lua");
const ACTIVITY: &str = include_str!("lua/activity.lua");

/// Fred clients in the pool: each pipelines on its own; 2-4 gave the best EVALSHA throughput on
/// small machines, where Redis itself is the bottleneck.
const POOL_SIZE: usize = 3;

/// What another instance asks this one to forget (sent over pub/sub).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A client was unblocked.
    Unblock(String),
    /// A counter was reset (the counter key as built by `limiter::policy`).
    Reset(String),
    /// Anything may have changed (e.g. after a reconnect some messages may be lost).
    All,
}

impl Invalidation {
    fn encode(&self) -> String {
        match self {
            Invalidation::Unblock(c) => format!("u:{c}"),
            Invalidation::Reset(k) => format!("r:{k}"),
            Invalidation::All => "a:".to_string(),
        }
    }

    fn decode(msg: &str) -> Option<Self> {
        let (kind, rest) = msg.split_once(':')?;
        match kind {
            "u" => Some(Invalidation::Unblock(rest.to_string())),
            "r" => Some(Invalidation::Reset(rest.to_string())),
            "a" => Some(Invalidation::All),
            _ => None,
        }
    }
}

/// Called for every invalidation message, from a background task.
pub(crate) type InvalidationSink = Arc<dyn Fn(Invalidation) + Send + Sync>;

/// A Lua script with its SHA1, called by SHA and re-sent whole on NOSCRIPT.
struct Script {
    text: String,
    sha: String,
    /// The same code as a Redis function (check scripts only; Redis 7 and later).
    function: Option<Function>,
}

/// A check script as a Redis function library of one function, both named `rategate_<sha>`.
/// Its definitions (the helpers, the compiled policies, the scratch tables) run once, when the
/// library is loaded, where a script runs them again at every call: about 70,000 fewer
/// redis-server instructions per call (`docs/benchmarks.md`, "Check scripts as Redis
/// functions"). Loaded on first use on each node (`FUNCTION LOAD`, on "Function not found");
/// Redis keeps it across restarts and replicates it to replicas.
struct Function {
    name: String,
    library: String,
}

impl Script {
    fn new(body: &str) -> Self {
        Script::with_head("", body, "")
    }

    /// `head` goes first: the check script's `COMPILED` policies (see [`Compiled`]); `tail`
    /// last. `KEYS` and `ARGV` are locals, so that a check function can set them per call.
    fn with_head(head: &str, body: &str, tail: &str) -> Self {
        let text = format!(
            "local KEYS, ARGV = KEYS, ARGV\n{head}{}{COMMON}\n{body}{tail}",
            args::prelude()
        );
        let sha = fred::util::sha1_hash(&text);
        Script {
            text,
            sha,
            function: None,
        }
    }

    /// A check script (`lua/check.lua`, which defines `run`) with `head`, as a script and as a
    /// function.
    fn check_with_head(head: &str) -> Self {
        let mut script = Script::with_head(head, CHECK, "\nreturn run(KEYS, ARGV)\n");
        let name = format!("rategate_{}", script.sha);
        let library = format!(
            "#!lua name={name}\nlocal KEYS, ARGV\n{head}{}{COMMON}\n{CHECK}\n\
             redis.register_function('{name}', run)\n",
            args::prelude()
        );
        script.function = Some(Function { name, library });
        script
    }

    /// The check script for a group whose policies are in `literals` (`COMPILED`), or for any
    /// group, reading them from its arguments (`literals` empty). Its head also holds `I8`, the
    /// format its replies are packed with (`lua/check.lua`, `packed`): a constant of the
    /// script's text costs nothing per call, where building it in Lua costs every call.
    fn check(literals: &str) -> Self {
        let i8 = "i8".repeat(CHECK_PACK_SLICE);
        if literals.is_empty() {
            return Script::check_with_head(&format!("local COMPILED = nil\nlocal I8 = '>{i8}'\n"));
        }
        Script::check_with_head(&format!(
            "local COMPILED = {{{literals}}}\nlocal I8 = '>{i8}'\n"
        ))
    }
}

/// Integers the check script packs with one `struct.pack` call, at most: `unpack` gives one
/// call at most about 8,000 arguments (Lua's C stack), so a longer reply is packed in slices.
const CHECK_PACK_SLICE: usize = 1000;

/// Distinct sets of policies a check script is compiled for, at most; past it a group's check
/// sends its policies as arguments to the generic script (same decisions, more bytes).
const COMPILED_MAX: usize = 256;

/// Check libraries a Redis node may hold before an instance that loads one prunes them: well
/// above what a fleet uses at once (each instance at most `COMPILED_MAX` + 1, two configuration
/// versions during a rollout), so a library in use is rarely pruned (and then loaded again).
const LIBRARIES_MAX: usize = 1024;

/// Check scripts compiled for one group's policies (`args::push_literal` writes them into the
/// script): the policies' static parameters are in the script's text, so a check sends only what
/// varies per request (clock override, cost, lease, request id). A policy set is a route's
/// policies (or a tier's parameters, or a cluster group of them), so the distinct sets are few
/// and fixed by the configuration; a reload adds the new ones. Redis caches each script per node
/// (loaded by EVAL on NOSCRIPT, as every script) and keeps each as a function library
/// ([`Function`]); the bound keeps this map, and what one process adds to Redis, finite. Redis
/// keeps libraries across restarts, so over many reloads that change policy parameters (and
/// releases that change the scripts) they would add up: past `LIBRARIES_MAX` on a node, the
/// instance that loads one prunes them (`RedisStore::prune_libraries`). Found by the policies'
/// fields (`args::Fields`), compared exactly, so a request writes no literal.
#[derive(Default)]
struct Compiled {
    scripts: std::sync::RwLock<HashTable<CompiledScript>>,
    hasher: ahash::RandomState,
}

/// A compiled check script and the policies it was compiled for.
struct CompiledScript {
    hash: u64,
    policies: Vec<args::Fields<Arc<str>>>,
    script: Arc<Script>,
}

impl Compiled {
    /// The function names of the scripts compiled so far.
    fn function_names(&self) -> std::collections::HashSet<String> {
        let Ok(table) = self.scripts.read() else {
            return std::collections::HashSet::new();
        };
        table
            .iter()
            .filter_map(|e| e.script.function.as_ref().map(|f| f.name.clone()))
            .collect()
    }

    /// The script compiled for `checks` (a group's, in order), compiling it on first use; None
    /// when the bound is reached (or the map is poisoned: the generic script is always right).
    fn get(&self, checks: &[&PolicyCheck<'_>]) -> Option<Arc<Script>> {
        let fields: SmallVec<[args::Fields<&Arc<str>>; 4]> =
            checks.iter().map(|c| args::Fields::of(c)).collect();
        let hash = self.hasher.hash_one(&fields[..]);
        let same = |e: &CompiledScript| {
            e.policies.len() == fields.len()
                && fields.iter().zip(&e.policies).all(|(f, o)| f.matches(o))
        };
        {
            let table = self.scripts.read().ok()?;
            if let Some(found) = table.find(hash, same) {
                return Some(found.script.clone());
            }
            // Full: not even compiled.
            if table.len() >= COMPILED_MAX {
                return None;
            }
        }
        let mut literals = String::with_capacity(160 * checks.len());
        let mut scratch = Vec::with_capacity(args::WIDTH);
        for check in checks {
            if !literals.is_empty() {
                literals.push_str(", ");
            }
            args::push_literal(&mut literals, &mut scratch, check);
        }
        let script = Arc::new(Script::check(&literals));
        let mut table = self.scripts.write().ok()?;
        if let Some(found) = table.find(hash, same) {
            return Some(found.script.clone());
        }
        if table.len() >= COMPILED_MAX {
            return None;
        }
        let policies = fields.iter().map(|f| f.to_owned()).collect();
        table.insert_unique(
            hash,
            CompiledScript {
                hash,
                policies,
                script: script.clone(),
            },
            |e| e.hash,
        );
        Some(script)
    }
}

#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    /// With `on_error = "fallback"` or on a cluster: Redis's revocations as this instance last
    /// heard of them (`revocations`), enforced by the fallback store while Redis fails, and on a
    /// cluster where a token's `jti` is checked (see `jti_in_mirror`).
    mirror: Option<Arc<SharedRevocations>>,
}

struct Inner {
    pool: Pool,
    subscriber: fred::clients::Client,
    /// Set once the subscriber has (tried to) subscribe and dropped what was cached before (see
    /// `spawn_subscriber`); `wait_connected` waits for it, so a start-up does not end with a
    /// cache clear still to come that would wipe blocks learned in the meantime.
    subscribed: Arc<AtomicBool>,
    layout: Layout,
    /// Redis Cluster: a request's checks are grouped by slot (`groups`).
    clustered: bool,
    channel: String,
    /// The generic check script (policies as arguments).
    check: Arc<Script>,
    /// Check scripts are called as Redis functions (`Function`); false for the process's life
    /// once Redis has answered that it cannot run them.
    functions: AtomicBool,
    compiled: Compiled,
    /// Concurrent checks sharing script calls (`batch`).
    lanes: batch::Lanes,
    admin: Script,
    settle: Script,
    activity_script: Script,
    /// Activity records waiting for the flusher (`activity`).
    activity: Arc<activity::Queue>,
    /// Names this instance's requests (sliding-log members a refund removes).
    instance: u64,
    requests: AtomicU64,
    metrics: std::sync::OnceLock<StoreMetrics>,
    timeout: Duration,
    /// Tests drive the script's clock; production always uses the Redis server's `TIME`.
    test_clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("layout", &self.inner.layout)
            .finish_non_exhaustive()
    }
}

/// Redis URLs carry credentials; never log them.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => "<invalid url>".to_string(),
    }
}

impl RedisStore {
    /// Build the client and start connecting in the background. Returns at once: the gateway
    /// starts and serves (per `on_error`) while Redis is unreachable, and picks it up when it
    /// answers. An unusable URL is an error.
    pub fn connect(
        settings: &StoreSettings,
        on_invalidate: InvalidationSink,
    ) -> Result<Self, StoreError> {
        let clients = connect::build(settings, POOL_SIZE)?;
        let clustered = clients.subscriber.client_config().server.is_clustered();
        let timeout = settings.timeout;

        let inner = Inner::new(
            clients.pool.clone(),
            clients.subscriber.clone(),
            Arc::default(),
            &settings.key_prefix,
            clustered,
            timeout,
            Batching {
                max: settings.batch_max,
                in_flight: settings.batch_in_flight,
                queue: settings.batch_queue,
            },
            // `scoped` gives conformance tests a clock of their own.
            None,
        );
        let mirror = (settings.on_error == OnError::Fallback || clustered).then(Arc::default);
        connect::start(&clients);
        spawn_subscriber(&inner, on_invalidate, mirror.clone());
        activity::spawn_flusher(&inner);
        tracing::info!(url = %redact(&settings.url), "Redis store connecting");
        Ok(RedisStore { inner, mirror })
    }

    /// A handle on `inner` for a background task (no mirror: only the configured store feeds it).
    fn handle(inner: Arc<Inner>) -> RedisStore {
        RedisStore {
            inner,
            mirror: None,
        }
    }

    /// The same connections with other keys and clock: conformance tests give every vector a
    /// fresh key space.
    pub fn scoped(&self, key_prefix: &str, test_clock: Option<Arc<dyn Clock>>) -> RedisStore {
        let i = &self.inner;
        let inner = Inner::new(
            i.pool.clone(),
            i.subscriber.clone(),
            i.subscribed.clone(),
            key_prefix,
            i.clustered,
            i.timeout,
            i.lanes.settings(),
            test_clock,
        );
        activity::spawn_flusher(&inner);
        RedisStore::handle(inner)
    }

    /// Wait until the pool is connected, and the revocation mirror (if any) loaded (tests and
    /// start-up; serving never waits).
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let ready = async {
            self.inner.pool.wait_for_connect().await?;
            while !self.inner.subscribed.load(Ordering::Acquire)
                || self.mirror.as_ref().is_some_and(|m| !m.loaded())
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<(), fred::error::Error>(())
        };
        tokio::time::timeout(timeout, ready)
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether at least one pooled connection is up. A breaker can fail fast on `false` instead of
    /// queueing commands behind a reconnect.
    /// Flush this instance's queued activity (see `activity`), bounded by the store timeout.
    pub(crate) async fn flush_activity(&self) {
        self.flush_now().await;
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.inner.pool.clients().iter().any(|c| c.is_connected())
    }

    /// One PING on a pooled connection, bounded by the store timeout: is Redis answering? A known
    /// dead connection fails at once.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        if !self.is_connected() {
            return Err(StoreError::Unavailable("not connected".into()));
        }
        let inner = &self.inner;
        let _: Value = within(inner.timeout, inner.pool.next_connected().ping(None)).await?;
        Ok(())
    }

    /// Count calls and dropped activity records in `metrics` (`rategate_store_calls_total`,
    /// `rategate_store_checks_total`, `rategate_store_activity_dropped_total`).
    pub(crate) fn with_metrics(self, metrics: &Metrics) -> Self {
        let _ = self.inner.metrics.set(StoreMetrics::new(metrics));
        self
    }

    /// The full Redis key of a counter.
    pub(crate) fn counter_key(&self, check: &PolicyCheck<'_>) -> String {
        self.inner.layout.counter_key(check)
    }

    fn count_call(&self, call: Call) {
        if let Some(m) = self.inner.metrics.get() {
            m.calls[call as usize].inc();
        }
    }

    fn count_dropped(&self, n: u64) {
        if let Some(m) = self.inner.metrics.get() {
            m.dropped.inc_by(n);
        }
    }

    /// A name for this request's sliding-log members, unique across instances.
    fn request_id(&self) -> String {
        let n = self.inner.requests.fetch_add(1, Ordering::Relaxed);
        format!("{:x}.{n:x}", self.inner.instance)
    }

    /// Tell every instance (this one included) to forget a cached decision.
    pub(crate) async fn publish(&self, msg: Invalidation) -> Result<(), StoreError> {
        self.publish_text(msg.encode()).await
    }

    /// Send `text` on the invalidation channel, which every instance subscribes to.
    async fn publish_text(&self, text: String) -> Result<(), StoreError> {
        let inner = &self.inner;
        let client = inner.pool.next_connected();
        let sent: Result<i64, _> =
            within(inner.timeout, client.publish(inner.channel.as_str(), text)).await;
        sent.map(|_| ())
    }

    /// The revocations the fallback store enforces while Redis fails (`on_error = "fallback"`).
    pub(crate) fn revocation_mirror(&self) -> Option<&Arc<SharedRevocations>> {
        self.mirror.as_ref()
    }

    /// Where a token's `jti` revocation is checked when not in the check call. On a cluster a
    /// `jti`'s entry has a slot of its own (`{j:<jti>}`), never the one of the keys a route
    /// counts, so reading it there would add a call to nearly every request with a token; the
    /// mirror (loaded at connect, kept current by every instance's announcements, reloaded on
    /// reconnect) answers instead, and a request stays one call per slot its limits use. The
    /// subject's revocations stay in the call, in the subject's slot. Until the mirror is first
    /// loaded the call reads the `jti`'s entry as on a single server.
    fn jti_in_mirror(&self) -> Option<&SharedRevocations> {
        self.mirror
            .as_deref()
            .filter(|m| self.inner.clustered && m.loaded())
    }

    fn now_arg(&self) -> Value {
        match &self.inner.test_clock {
            Some(clock) => Value::Integer(i64::try_from(clock.now_ms()).unwrap_or(i64::MAX)),
            None => Value::String("".into()),
        }
    }

    /// The pooled connection for a call: any (round robin) when `lease` is empty, else always
    /// the same one for a lease while it is up. Redis runs one connection's commands in order,
    /// so a release sent after a check that timed out runs after that check, never before it.
    fn client_for(&self, lease: &str) -> Conn<'_> {
        let pool = &self.inner.pool;
        if lease.is_empty() {
            return Conn::new(pool.next_connected());
        }
        let clients = pool.clients();
        let mut hasher = std::hash::DefaultHasher::new();
        lease.hash(&mut hasher);
        let pinned = usize::try_from(hasher.finish() % clients.len().max(1) as u64)
            .ok()
            .and_then(|i| clients.get(i));
        match pinned {
            Some(c) if c.is_connected() => Conn::new(c),
            _ => Conn::new(pool.next_connected()),
        }
    }

    /// Run `script` on the keys and arguments `make` builds, on the connection of `lease` (see
    /// `client_for`). `make` runs a second time only after NOSCRIPT, so the common path builds
    /// (and allocates) them once.
    async fn run<R: fred::types::FromValue>(
        &self,
        script: &Script,
        lease: &str,
        make: impl Fn() -> (Vec<String>, Vec<Value>),
    ) -> Result<R, StoreError> {
        let frame = self.run_frame(script, lease, make).await?;
        // An error nested in the reply fails the conversion, as it failed fred's own.
        let value = Value::try_from(frame).map_err(|e| map_error(&e, self.inner.timeout))?;
        R::from_value(value).map_err(|e| StoreError::Protocol(e.to_string()))
    }

    /// [`run`](Self::run), the reply as its frame (error replies are errors already).
    async fn run_frame(
        &self,
        script: &Script,
        lease: &str,
        make: impl Fn() -> (Vec<String>, Vec<Value>),
    ) -> Result<Resp3Frame, StoreError> {
        let inner = &self.inner;
        let client = self.client_for(lease);
        if let Some(function) = &script.function {
            if inner.functions.load(Ordering::Relaxed) {
                if let Some(answer) = self.call_function(client, function, &make).await {
                    return answer;
                }
            }
        }
        let (keys, args) = make();
        let first = within(
            inner.timeout,
            client.evalsha(script.sha.as_str(), keys, args),
        )
        .await;
        match first {
            Err(StoreError::NoScript) => {
                // Restart, failover or SCRIPT FLUSH: EVAL sends the text (caching it on the node
                // that owns the keys) and the next EVALSHA works again.
                tracing::info!("Redis lost the script (NOSCRIPT); re-sending it");
                let (keys, args) = make();
                within(inner.timeout, client.eval(script.text.as_str(), keys, args)).await
            }
            other => other,
        }
    }
}

impl RedisStore {
    /// `FCALL` of a check script's function. `None`: the caller sends the script instead, for
    /// this call when the node lacked the function (loaded now for the next calls), and for
    /// good when this Redis cannot run functions (before 7.0, or an ACL without `FCALL` or
    /// `FUNCTION LOAD`).
    ///
    /// Why not call the function again after loading it: `FUNCTION LOAD` has no key, so it goes
    /// to the node that owns the first key's slot in fred's map, while the `FCALL` may have been
    /// answered by another (after a redirection fred's map does not show yet). The script
    /// carries its text wherever it is redirected, so this call is answered either way.
    async fn call_function(
        &self,
        client: Conn<'_>,
        function: &Function,
        make: &impl Fn() -> (Vec<String>, Vec<Value>),
    ) -> Option<Result<Resp3Frame, StoreError>> {
        let timeout = self.inner.timeout;
        let (keys, args) = make();
        match tokio::time::timeout(timeout, client.fcall(function.name.as_str(), keys, args)).await
        {
            Err(_) => return Some(Err(StoreError::Timeout(timeout))),
            Ok(Ok(frame)) => return Some(Ok(frame)),
            Ok(Err(e)) if cannot_use_functions(&e) => return self.functions_unusable(&e),
            // Redis refuses a function that may write before running it (out of memory, too few
            // replicas, a failed save), where the script is refused only at its first write: a
            // blocked client, a revoked token or a request over its limit, which write nothing,
            // are still answered by Redis.
            Ok(Err(e)) if refuses_writes(&e) => return None,
            Ok(Err(e)) if !e.details().contains("Function not found") => {
                return Some(Err(map_error(&e, timeout)))
            }
            Ok(Err(_)) => {}
        }
        tracing::info!(
            "Redis lacks the check function (first use, a new node or FUNCTION FLUSH); loading it"
        );
        // FUNCTION LOAD has no key: it goes to the node owning the call's first key (worked out
        // here, off the common path, from the keys built again).
        let at = make()
            .0
            .first()
            .map(|k| fred::util::redis_keyslot(k.as_bytes()));
        match tokio::time::timeout(timeout, client.function_load(&function.library, at)).await {
            Err(_) => return Some(Err(StoreError::Timeout(timeout))),
            Ok(Err(e)) if cannot_use_functions(&e) => return self.functions_unusable(&e),
            Ok(Ok(())) => self.prune_libraries(at),
            // Another instance (or a call of ours) loaded it first.
            Ok(Err(e)) if e.details().contains("already exists") => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "loading the check function failed"),
        }
        None
    }

    /// After this instance loaded a library on the node owning `at`: when the node holds more
    /// than `LIBRARIES_MAX` check libraries (each configuration version's policy sets add theirs,
    /// and Redis keeps them for good), delete the ones this instance does not use down to half
    /// the bound. Off the request path, and rare (a load is). Safe even for a library another
    /// instance uses: a missing one is loaded again on its next check.
    fn prune_libraries(&self, at: Option<u16>) {
        let client = self.inner.pool.next_connected().clone();
        let mut ours = self.inner.compiled.function_names();
        if let Some(function) = &self.inner.check.function {
            ours.insert(function.name.clone());
        }
        let timeout = self.inner.timeout.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let conn = Conn::new(&client);
            let pruned = async {
                let names = conn.function_list("rategate_", at).await?;
                if names.len() <= LIBRARIES_MAX {
                    return Ok::<usize, fred::error::Error>(0);
                }
                let extra = names.len() - LIBRARIES_MAX / 2;
                let mut deleted = 0;
                for name in names.iter().filter(|n| !ours.contains(*n)).take(extra) {
                    conn.function_delete(name, at).await?;
                    deleted += 1;
                }
                Ok(deleted)
            };
            match tokio::time::timeout(timeout * 8, pruned).await {
                Ok(Ok(0)) => {}
                Ok(Ok(deleted)) => tracing::info!(deleted, "pruned Redis check libraries"),
                Ok(Err(e)) => tracing::debug!(error = %e, "pruning Redis check libraries failed"),
                Err(_) => tracing::debug!("pruning Redis check libraries timed out"),
            }
        });
    }

    fn functions_unusable<T>(&self, e: &fred::error::Error) -> Option<T> {
        if self.inner.functions.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                error = %e,
                "Redis cannot run the check as a function; sending it as a script from now on \
                 (Redis 7 with FCALL and FUNCTION LOAD allowed costs Redis less per check)"
            );
        }
        None
    }
}

/// Redis answered that it has no functions (before 7.0) or that this user may not use them
/// (not a key outside the ACL's patterns: the script would be refused the same way).
fn cannot_use_functions(e: &fred::error::Error) -> bool {
    let text = e.details();
    text.contains("unknown command")
        || (text.starts_with("NOPERM") && (text.contains("'fcall'") || text.contains("'function")))
}

/// Redis refused a call that may write before running it.
fn refuses_writes(e: &fred::error::Error) -> bool {
    let text = e.details();
    ["OOM", "NOREPLICAS", "MISCONF"]
        .iter()
        .any(|refusal| text.starts_with(refusal))
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    fn new(
        pool: Pool,
        subscriber: fred::clients::Client,
        subscribed: Arc<AtomicBool>,
        key_prefix: &str,
        clustered: bool,
        timeout: Duration,
        batching: Batching,
        test_clock: Option<Arc<dyn Clock>>,
    ) -> Arc<Inner> {
        let layout = Layout::new(key_prefix);
        Arc::new(Inner {
            channel: layout.events_key(),
            layout,
            clustered,
            pool,
            subscriber,
            subscribed,
            check: Arc::new(Script::check("")),
            functions: AtomicBool::new(true),
            compiled: Compiled::default(),
            lanes: batch::Lanes::new(batching),
            admin: Script::new(ADMIN),
            settle: Script::new(SETTLE),
            activity_script: Script::new(ACTIVITY),
            activity: Arc::default(),
            instance: instance_id(),
            requests: AtomicU64::new(0),
            metrics: std::sync::OnceLock::new(),
            timeout,
            test_clock,
        })
    }
}

/// How checks share script calls (`store.batch_max`, `store.batch_in_flight`,
/// `store.batch_queue`; see `batch`).
#[derive(Debug, Clone, Copy)]
struct Batching {
    max: usize,
    in_flight: usize,
    queue: usize,
}

/// A random id for this store instance (no two gateway processes share one).
fn instance_id() -> u64 {
    use std::hash::BuildHasher;
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    h.finish()
}

/// What a store call is, as the `call` label of `rategate_store_calls_total`.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// One check script call: one group of each request it carries (`batch`).
    Check = 0,
    /// Taking back what a group charged for a rejected request.
    Refund = 1,
    /// Applying a block started by a rejection in another group.
    Penalize = 2,
}

impl Call {
    const ALL: [(Call, &'static str); 3] = [
        (Call::Check, "check"),
        (Call::Refund, "refund"),
        (Call::Penalize, "penalize"),
    ];
}

#[derive(Debug)]
struct StoreMetrics {
    calls: [IntCounter; 3],
    /// Checks per check script call.
    batch: Histogram,
    checks: IntCounter,
    dropped: IntCounter,
}

impl StoreMetrics {
    fn new(m: &Metrics) -> Self {
        StoreMetrics {
            calls: Call::ALL.map(|(_, name)| m.store_calls.with_label_values(&[name])),
            batch: m.store_check_batch.clone(),
            checks: m.store_checks.clone(),
            dropped: m.store_activity_dropped.clone(),
        }
    }
}

/// One command bounded by `timeout`, with fred's errors mapped to the store's.
async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, fred::error::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map_error(&e, timeout)),
        Err(_) => Err(StoreError::Timeout(timeout)),
    }
}

fn map_error(e: &fred::error::Error, timeout: Duration) -> StoreError {
    use fred::error::ErrorKind;
    if e.details().starts_with("NOSCRIPT") {
        return StoreError::NoScript;
    }
    match e.kind() {
        ErrorKind::Timeout => StoreError::Timeout(timeout),
        ErrorKind::Parse | ErrorKind::Protocol => StoreError::Protocol(e.to_string()),
        ErrorKind::Auth => StoreError::Unavailable(format!("authentication failed: {e}")),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn spawn_subscriber(
    inner: &Arc<Inner>,
    sink: InvalidationSink,
    mirror: Option<Arc<SharedRevocations>>,
) {
    let channel = inner.channel.clone();
    let client = inner.subscriber.clone();
    let subscribed = inner.subscribed.clone();
    let on_message = sink.clone();
    let to_mirror = mirror.clone();
    // Weak: the subscriber's callbacks must not keep the store alive.
    let weak = Arc::downgrade(inner);
    // The listener tasks live as long as the client; their handles are not needed.
    drop(inner.subscriber.on_message(move |msg| {
        let sink = on_message.clone();
        let mirror = to_mirror.clone();
        async move {
            let Some(text) = msg.value.as_str() else {
                return Ok(());
            };
            if let Some(change) = revocations::decode(&text) {
                if let Some(mirror) = mirror {
                    mirror.apply(change, SystemClock.now_ms());
                }
            } else if let Some(inv) = Invalidation::decode(&text) {
                sink(inv);
            }
            Ok(())
        }
    }));
    // Subscribe on every (re)connect; messages sent while disconnected are lost, so forget
    // everything cached then.
    drop(inner.subscriber.on_reconnect(move |_| {
        let client = client.clone();
        let channel = channel.clone();
        let sink = sink.clone();
        let subscribed = subscribed.clone();
        let mirror = mirror.clone();
        let weak = weak.clone();
        async move {
            if let Err(e) = client.subscribe(channel.as_str()).await {
                tracing::warn!(error = %e, "cannot subscribe to Redis invalidations");
            }
            sink(Invalidation::All);
            if let Some(mirror) = mirror {
                revocations::spawn_reload(weak, mirror);
            }
            subscribed.store(true, Ordering::Release);
            Ok(())
        }
    }));
}

fn algorithm_code(a: Algorithm) -> &'static str {
    match a {
        Algorithm::FixedWindow => "f",
        Algorithm::SlidingWindow => "s",
        Algorithm::SlidingLog => "l",
        Algorithm::TokenBucket => "t",
        Algorithm::Concurrency => "c",
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// One event as the flush script records it (`cjson` of `{at, client, kind, policy?, reason?,
/// ttl_ms?}`); anything else is skipped rather than failing the whole list.
fn decode_event(raw: &str) -> Option<Event> {
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    // cjson writes integers as JSON numbers, possibly in float form.
    let number = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_u64().or_else(|| x.as_f64().map(|f| f as u64)))
    };
    Some(Event {
        at_ms: number("at")?,
        client: text("client")?,
        kind: EventKind::parse(v.get("kind")?.as_str()?)?,
        policy: text("policy"),
        reason: text("reason"),
        ttl_ms: number("ttl_ms"),
    })
}

impl RedisStore {
    /// The plan of one request's calls: its keys, grouped (see `groups`); the token's `jti`
    /// entry is read only when `jti_in_call`.
    fn plan<'r, 'a>(
        &self,
        req: &'r CheckRequest<'a>,
        jti_in_call: bool,
    ) -> (Plan<'r, 'a>, groups::Groups) {
        let layout = &self.inner.layout;
        let keys: Vec<String> = req.checks.iter().map(|c| layout.counter_key(c)).collect();
        let block_key = (!req.client.is_empty()).then(|| layout.block_key(req.client));
        let mut revs = SmallVec::new();
        if let Some(token) = &req.token {
            revs.extend(
                token
                    .jti
                    .filter(|_| jti_in_call)
                    .map(|id| layout.revocation_key(RevocationId::Jti(id))),
            );
            revs.extend(
                token
                    .sub
                    .map(|id| layout.revocation_key(RevocationId::Sub(id))),
            );
        }
        let groups = groups::plan(self.inner.clustered, block_key.as_deref(), &keys, &revs);
        let nonce = if groups::needs_nonce(req) {
            self.request_id()
        } else {
            String::new()
        };
        let plan = Plan {
            req,
            keys,
            block_key,
            revs,
            nonce,
        };
        (plan, groups)
    }

    /// Run an operation of the admin script on `keys` (all in one slot).
    async fn admin<R: fred::types::FromValue>(
        &self,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, StoreError> {
        self.run(&self.inner.admin, "", || (keys.clone(), args.clone()))
            .await
    }

    /// `{ttl_ms, reason}` of each client's block entry (ttl `None`: no active block), one call
    /// per slot.
    async fn block_entries(
        &self,
        clients: &[String],
    ) -> Result<Vec<(Option<u64>, String)>, StoreError> {
        let keys: Vec<String> = clients
            .iter()
            .map(|c| self.inner.layout.block_key(c))
            .collect();
        self.entry_rows(&keys, "get").await
    }

    /// What admin operation `op` (`get` for block entries, `rget` for revocation entries)
    /// answers for each of `keys`: `(ms left, or None when not active; its text)`, one call per
    /// slot.
    async fn entry_rows(
        &self,
        keys: &[String],
        op: &'static str,
    ) -> Result<Vec<(Option<u64>, String)>, StoreError> {
        let groups = groups::plan_keys(self.inner.clustered, keys);
        let calls = groups.iter().map(|g| {
            let keys: Vec<String> = g.checks.iter().map(|&i| keys[i].clone()).collect();
            let args = vec![self.now_arg(), Value::String(op.into())];
            async move { self.admin::<Vec<Value>>(keys, args).await }
        });
        let mut out = vec![(None, String::new()); keys.len()];
        for (g, rows) in groups.iter().zip(join_all(calls).await) {
            for (&i, row) in g.checks.iter().zip(rows?.chunks_exact(2)) {
                let ttl = row[0].as_i64().and_then(|t| u64::try_from(t).ok());
                let text = row[1].as_str().map(|s| s.to_string()).unwrap_or_default();
                out[i] = (ttl, text);
            }
        }
        Ok(out)
    }
}

impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check(&self, req: &CheckRequest<'_>) -> Result<CheckResult, StoreError> {
        // The script refuses it too; refusing here gives the same error as the memory store.
        if super::memory::needs_lease(req) {
            return Err(StoreError::Protocol(
                "a concurrency policy needs the request's lease id".into(),
            ));
        }
        if let Some(m) = self.inner.metrics.get() {
            m.checks.inc();
        }
        let mirror = self.jti_in_mirror();
        if let (Some(mirror), Some(jti)) = (mirror, req.token.and_then(|t| t.jti)) {
            let now_ms = SystemClock.now_ms();
            if mirror.refuses_jti(jti, now_ms) {
                return Ok(CheckResult {
                    outcome: CheckOutcome::Revoked,
                    states: Vec::new(),
                    blocked_now: None,
                    now_ms,
                });
            }
        }
        let (plan, groups) = self.plan(req, mirror.is_none());
        let decision = self.check_groups(&plan, &groups).await?;
        self.record_check(req, &decision);
        Ok(decision)
    }

    async fn revoke(&self, revoked: &Revoked, ttl: Duration) -> Result<(), StoreError> {
        self.revoke_entry(revoked, ttl).await
    }

    async fn unrevoke(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        self.unrevoke_entry(kind, id).await
    }

    async fn revocations(&self) -> Result<Vec<RevocationEntry>, StoreError> {
        self.flush_now().await;
        self.revocation_entries().await
    }

    async fn charge(&self, checks: &[PolicyCheck<'_>], cost: u64) -> Result<(), StoreError> {
        let counted: Vec<&PolicyCheck<'_>> = checks
            .iter()
            .filter(|c| c.policy.algorithm != Algorithm::Concurrency)
            .collect();
        if counted.is_empty() || cost == 0 {
            return Ok(());
        }
        self.settle_groups("charge", cost, "", &counted).await?;
        Ok(())
    }

    async fn renew(&self, lease: &str, checks: &[PolicyCheck<'_>]) -> Result<u64, StoreError> {
        self.leases("renew", lease, checks).await
    }

    async fn release(&self, lease: &str, checks: &[PolicyCheck<'_>]) -> Result<(), StoreError> {
        self.leases("release", lease, checks).await.map(|_| ())
    }

    async fn block(&self, client: &str, ttl: Duration, reason: &str) -> Result<(), StoreError> {
        let ms = millis::ceil(ttl);
        let args = vec![
            self.now_arg(),
            Value::String("block".into()),
            int(ms),
            Value::String(reason.into()),
        ];
        let reply: Vec<i64> = self
            .admin(vec![self.inner.layout.block_key(client)], args)
            .await?;
        let (until, now) = match reply.as_slice() {
            [u, n] => (to_u64(*u), to_u64(*n)),
            _ => return Err(StoreError::Protocol("unexpected block reply".into())),
        };
        if ms == 0 {
            self.record([Record::new(Kind::Unindex, now, client)]);
            self.flush_now().await;
            let _ = self
                .publish(Invalidation::Unblock(client.to_string()))
                .await;
            return Ok(());
        }
        self.record([
            Record {
                reason: reason.to_owned(),
                value: ms,
                ..Record::new(Kind::Blocked, now, client)
            },
            Record {
                value: until,
                ..Record::new(Kind::Index, now, client)
            },
        ]);
        self.flush_now().await;
        Ok(())
    }

    async fn unblock(&self, client: &str) -> Result<bool, StoreError> {
        let args = vec![self.now_arg(), Value::String("unblock".into())];
        let reply: Vec<i64> = self
            .admin(vec![self.inner.layout.block_key(client)], args)
            .await?;
        let (removed, now) = match reply.as_slice() {
            [r, n] => (*r == 1, to_u64(*n)),
            _ => return Err(StoreError::Protocol("unexpected unblock reply".into())),
        };
        let mut records = vec![Record::new(Kind::Unindex, now, client)];
        if removed {
            records.push(Record::new(Kind::Unblocked, now, client));
        }
        self.record(records);
        self.flush_now().await;
        // Every instance drops its cached block at once, even if this one's was already gone.
        self.publish(Invalidation::Unblock(client.to_string()))
            .await?;
        Ok(removed)
    }

    async fn blocks(&self) -> Result<Vec<BlockEntry>, StoreError> {
        self.flush_now().await;
        let args = vec![self.now_arg(), Value::String("list".into())];
        let rows: Vec<Value> = self
            .admin(vec![self.inner.layout.events_key()], args)
            .await?;
        let clients: Vec<String> = rows
            .chunks_exact(2)
            .filter_map(|row| row[0].as_str().map(|s| s.to_string()))
            .collect();
        // The per-client entry is authoritative: an index entry without one is stale (an
        // unblock on another instance not flushed yet, or an entry that expired early).
        let entries = self.block_entries(&clients).await?;
        let mut stale = Vec::new();
        let mut out = Vec::with_capacity(clients.len());
        for (client, (ttl, reason)) in clients.into_iter().zip(entries) {
            match ttl {
                Some(ttl_ms) => out.push(BlockEntry {
                    client,
                    ttl_ms,
                    reason,
                }),
                None => stale.push(Record::new(Kind::Unindex, 0, &client)),
            }
        }
        self.record(stale);
        out.sort_by(|a, b| {
            b.ttl_ms
                .cmp(&a.ttl_ms)
                .then_with(|| a.client.cmp(&b.client))
        });
        Ok(out)
    }

    async fn limit_status(&self, check: &PolicyCheck<'_>) -> Result<LimitStatus, StoreError> {
        // A cost of 0 evaluates without charging; the empty client has no block entry.
        let checks = [*check];
        let req = CheckRequest::new("", &checks, 0);
        let (plan, groups) = self.plan(&req, true);
        let d = self.check_groups(&plan, &groups).await?;
        let s = d
            .states
            .first()
            .ok_or_else(|| StoreError::Protocol("no state for the policy".into()))?;
        Ok(LimitStatus {
            count: s.limit - s.remaining.min(s.limit),
            limit: s.limit,
            remaining: s.remaining,
            reset_ms: s.reset_ms,
        })
    }

    async fn events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.flush_now().await;
        let args = vec![
            self.now_arg(),
            Value::String("events".into()),
            int(limit as u64),
        ];
        let rows: Vec<String> = self
            .admin(vec![self.inner.layout.events_key()], args)
            .await?;
        Ok(rows.iter().filter_map(|raw| decode_event(raw)).collect())
    }

    async fn suspicious(&self, limit: usize) -> Result<Vec<Suspect>, StoreError> {
        self.flush_now().await;
        let args = vec![
            self.now_arg(),
            Value::String("suspects".into()),
            int(limit as u64),
        ];
        let rows: Vec<Value> = self
            .admin(vec![self.inner.layout.events_key()], args)
            .await?;
        Ok(rows
            .chunks_exact(2)
            .filter_map(|row| {
                Some(Suspect {
                    client: row[0].as_str()?.to_string(),
                    rejections: to_u64(row[1].as_i64()?),
                })
            })
            .collect())
    }

    async fn reset_limit(&self, check: &PolicyCheck<'_>) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let key = check.key;
        let full = self.counter_key(check);
        let client = inner.pool.next_connected();
        let removed: i64 = within(
            inner.timeout,
            fred::prelude::KeysInterface::del(client, full.as_str()),
        )
        .await?;
        let _ = self.publish(Invalidation::Reset(key.to_string())).await;
        Ok(removed > 0)
    }
}

impl RedisStore {
    /// Run a lease operation on the concurrency checks among `checks`.
    async fn leases(
        &self,
        op: &str,
        lease: &str,
        checks: &[PolicyCheck<'_>],
    ) -> Result<u64, StoreError> {
        let conc: Vec<&PolicyCheck<'_>> = checks
            .iter()
            .filter(|c| c.policy.algorithm == Algorithm::Concurrency)
            .collect();
        if conc.is_empty() || lease.is_empty() {
            return Ok(0);
        }
        self.settle_groups(op, 0, lease, &conc).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_scripts_are_shared_per_policy_set_and_bounded() {
        use crate::config::compiled::{Algorithm, Policy};
        let policy =
            |limit: u64| Policy::new("p", Algorithm::FixedWindow, limit, Duration::from_secs(1));
        let script = |compiled: &Compiled, p: &Policy| compiled.get(&[&PolicyCheck::new(p, "k")]);
        let compiled = Compiled::default();
        let (one, also_one) = (policy(1), policy(1));
        let first = script(&compiled, &one).unwrap();
        // The same fields (another config's policy, another key) share the script.
        assert!(Arc::ptr_eq(&first, &script(&compiled, &also_one).unwrap()));
        assert!(first.text.starts_with(
            "local KEYS, ARGV = KEYS, ARGV\nlocal COMPILED = {{alg = \"f\", limit = 1, "
        ));
        // The same code as a function library, its name the script's SHA1.
        let function = first.function.as_ref().unwrap();
        assert_eq!(function.name, format!("rategate_{}", first.sha));
        assert!(function.library.starts_with(&format!(
            "#!lua name={}\nlocal KEYS, ARGV\nlocal COMPILED = {{{{alg = \"f\", limit = 1, ",
            function.name
        )));
        let two = policy(2);
        let both = compiled
            .get(&[&PolicyCheck::new(&one, "k"), &PolicyCheck::new(&two, "k")])
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &both));
        for i in 2..COMPILED_MAX {
            let other = policy(i as u64 + 1);
            assert!(script(&compiled, &other).is_some());
        }
        // Full: a new set gets the generic script, the known ones keep theirs.
        assert!(script(&compiled, &policy(0)).is_none());
        assert!(Arc::ptr_eq(&first, &script(&compiled, &one).unwrap()));
    }

    /// Writes the compiled check scripts `benches/load/lua_cost.sh` measures (the load harness's
    /// `allowed` and `three` routes) to `$RATEGATE_DUMP_DIR`; does nothing without it.
    #[test]
    #[ignore = "a tool for benches/load/lua_cost.sh"]
    fn dump_compiled_check_scripts() {
        use crate::config::compiled::{Algorithm, KeyPart, Policy};
        let Some(dir) = std::env::var_os("RATEGATE_DUMP_DIR") else {
            return;
        };
        let minute = Duration::from_secs(60);
        let fixed = Policy::new("per-ip", Algorithm::FixedWindow, 1_000_000_000, minute);
        let sliding = Policy {
            key: vec![KeyPart::Ip, KeyPart::Path],
            ..Policy::new(
                "per-ip-path",
                Algorithm::SlidingWindow,
                1_000_000_000,
                minute,
            )
        };
        let bucket = Policy {
            key: vec![KeyPart::Global],
            ..Policy::new(
                "global",
                Algorithm::TokenBucket,
                1_000_000_000,
                Duration::from_secs(1),
            )
        };
        for (name, policies) in [
            ("one", vec![&fixed]),
            ("three", vec![&fixed, &sliding, &bucket]),
        ] {
            let mut literals = String::new();
            for p in policies {
                if !literals.is_empty() {
                    literals.push_str(", ");
                }
                args::push_literal(&mut literals, &mut Vec::new(), &PolicyCheck::new(p, "k"));
            }
            let script = Script::check(&literals);
            let path = std::path::Path::new(&dir).join(format!("check-{name}.lua"));
            std::fs::write(path, &script.text).unwrap();
            // The same as a function library (`FUNCTION LOAD`), its function's name beside it.
            let function = script.function.unwrap();
            let path = std::path::Path::new(&dir).join(format!("check-{name}.library.lua"));
            std::fs::write(path, function.library).unwrap();
            let path = std::path::Path::new(&dir).join(format!("check-{name}.function"));
            std::fs::write(path, function.name).unwrap();
        }
    }

    #[test]
    fn invalidations_round_trip() {
        for inv in [
            Invalidation::Unblock("1.2.3.4".into()),
            Invalidation::Reset("auth|i:1.2.3.4".into()),
            Invalidation::All,
        ] {
            assert_eq!(Invalidation::decode(&inv.encode()), Some(inv));
        }
        assert_eq!(Invalidation::decode("zz"), None);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
