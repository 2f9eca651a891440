//! The Redis store: one `EVALSHA` per request does the block check and every policy (the Lua in
//! `lua/` mirrors `algorithm.rs`), on the Redis server's clock, so any number of gateway
//! instances share exact limits and blocks.
//!
//! Key layout (every key written gets a TTL in the same script):
//! ```text
//! <prefix>{rg}:blocks                     sorted set: client -> block end (ms)
//! <prefix>{rg}:reasons                    hash: client -> reason
//! <prefix>{rg}:c:<params>:<counter key>   one counter: a hash (fixed and sliding window, token
//!                                         bucket) or a sorted set (sliding_log: one member per
//!                                         unit; concurrency: lease id -> expiry)
//! <prefix>{rg}:off:<policy>|<client>      escalation offences (hash: n, f = forget at)
//! <prefix>{rg}:events                     list: recent events (JSON), newest first
//! <prefix>{rg}:evrep:<client>|<policy>    string: when the last `limited` event was recorded
//! <prefix>{rg}:suspects:<bucket>          sorted set: client -> rejections in that bucket
//! ```
//! `<prefix>{rg}:events` also names the pub/sub channel of unblocks and resets (see
//! [`Invalidation`]); channels are not keys, so the two never meet.
//! Besides the check (`lua/check.lua`) and the admin operations (`lua/admin.lua`), the settle
//! script (`lua/settle.lua`) runs off the request's path: the count-by-response charge, lease
//! renewal and release.
//! Every key shares the `{rg}` hash tag, so one request's keys are always in one cluster slot. A
//! per-client tag would not do: a request touches its client's block entry and counters keyed by
//! anything (an API key, `global`), and one counter must live in exactly one slot whichever client
//! charges it. Counter keys are escaped by `keys` (no `{`, `}` from client bytes), and the tag
//! comes first, so client bytes can never form or break a hash tag. `<params>` names the
//! algorithm, limit, window and burst: a policy changed by a reload gets fresh counters.

use std::fmt::Write as _;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{ClientLike, EventInterface, Pool, PubsubInterface};
use fred::types::Value;

mod connect;

use self::connect::Conn;
use super::algorithm::Params;
use super::{
    BlockEntry, CheckOutcome, CheckRequest, CheckResult, Event, EventKind, LimitStatus,
    PolicyCheck, PolicyState, Store, StoreError, Suspect, CONCURRENCY_RETRY_MS, EVENTS_MAX,
    EVENT_REPEAT_MS, EVENT_TTL_MS, SUSPECTS_MAX, SUSPECT_BUCKET_MS,
};
use crate::clock::Clock;
use crate::config::compiled::{Algorithm, Mode, StoreSettings};
use crate::millis;

const COMMON: &str = include_str!("lua/common.lua");
const CHECK: &str = include_str!("lua/check.lua");
const ADMIN: &str = include_str!("lua/admin.lua");
const SETTLE: &str = include_str!("lua/settle.lua");

/// The hash tag every key carries.
const TAG: &str = "{rg}";

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
}

impl Script {
    fn new(body: &str) -> Self {
        // The activity limits come from the store contract, so both stores share one number.
        let text = format!(
            "local EVENTS_MAX = {EVENTS_MAX}\nlocal EVENT_TTL_MS = {EVENT_TTL_MS}\n\
             local EVENT_REPEAT_MS = {EVENT_REPEAT_MS}\nlocal SUSPECT_BUCKET_MS = \
             {SUSPECT_BUCKET_MS}\nlocal SUSPECTS_MAX = {SUSPECTS_MAX}\n\
             local CONCURRENCY_RETRY_MS = {CONCURRENCY_RETRY_MS}\n{COMMON}\n{body}"
        );
        let sha = fred::util::sha1_hash(&text);
        Script { text, sha }
    }
}

#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    subscriber: fred::clients::Client,
    /// Set once the subscriber has (tried to) subscribe and dropped what was cached before (see
    /// `spawn_subscriber`); `wait_connected` waits for it, so a start-up does not end with a
    /// cache clear still to come that would wipe blocks learned in the meantime.
    subscribed: Arc<AtomicBool>,
    /// `<prefix>{rg}:`
    base: String,
    blocks_key: String,
    reasons_key: String,
    channel: String,
    check: Script,
    admin: Script,
    settle: Script,
    timeout: Duration,
    /// Tests drive the script's clock; production always uses the Redis server's `TIME`.
    test_clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("base", &self.inner.base)
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
        let timeout = settings.timeout;

        let base = format!("{}{TAG}:", settings.key_prefix);
        let inner = Arc::new(Inner {
            blocks_key: format!("{base}blocks"),
            reasons_key: format!("{base}reasons"),
            channel: format!("{base}events"),
            base,
            pool: clients.pool.clone(),
            subscriber: clients.subscriber.clone(),
            subscribed: Arc::default(),
            check: Script::new(CHECK),
            admin: Script::new(ADMIN),
            settle: Script::new(SETTLE),
            timeout,
            // `scoped` gives conformance tests a clock of their own.
            test_clock: None,
        });
        connect::start(&clients);
        spawn_subscriber(&inner, on_invalidate);
        tracing::info!(url = %redact(&settings.url), "Redis store connecting");
        Ok(RedisStore { inner })
    }

    /// The same connections with other keys and clock: conformance tests give every vector a
    /// fresh key space.
    pub fn scoped(&self, key_prefix: &str, test_clock: Option<Arc<dyn Clock>>) -> RedisStore {
        let i = &self.inner;
        let base = format!("{key_prefix}{TAG}:");
        RedisStore {
            inner: Arc::new(Inner {
                pool: i.pool.clone(),
                subscriber: i.subscriber.clone(),
                subscribed: i.subscribed.clone(),
                blocks_key: format!("{base}blocks"),
                reasons_key: format!("{base}reasons"),
                channel: format!("{base}events"),
                base,
                check: Script::new(CHECK),
                admin: Script::new(ADMIN),
                settle: Script::new(SETTLE),
                timeout: i.timeout,
                test_clock,
            }),
        }
    }

    /// Wait until the pool is connected (tests and start-up diagnostics; serving never waits).
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let ready = async {
            self.inner.pool.wait_for_connect().await?;
            while !self.inner.subscribed.load(Ordering::Acquire) {
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

    /// The full Redis key of a counter.
    pub(crate) fn counter_key(&self, check: &PolicyCheck<'_>) -> String {
        let mut out = String::with_capacity(self.inner.base.len() + 24 + check.key.len());
        push_counter_key(&mut out, &self.inner.base, check);
        out
    }

    /// Tell every instance (this one included) to forget a cached decision.
    pub(crate) async fn publish(&self, msg: Invalidation) -> Result<(), StoreError> {
        let inner = &self.inner;
        let client = inner.pool.next_connected();
        let sent: Result<i64, _> = within(
            inner.timeout,
            client.publish(inner.channel.as_str(), msg.encode()),
        )
        .await;
        sent.map(|_| ())
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
        let inner = &self.inner;
        let client = self.client_for(lease);
        let (keys, args) = make();
        let first = within(
            inner.timeout,
            client.evalsha::<Value, _, _, _>(script.sha.as_str(), keys, args),
        )
        .await;
        let value = match first {
            Err(StoreError::NoScript) => {
                // Restart, failover or SCRIPT FLUSH: EVAL sends the text (caching it on the node
                // that owns the keys) and the next EVALSHA works again.
                tracing::info!("Redis lost the script (NOSCRIPT); re-sending it");
                let (keys, args) = make();
                within(
                    inner.timeout,
                    client.eval::<Value, _, _, _>(script.text.as_str(), keys, args),
                )
                .await?
            }
            other => other?,
        };
        R::from_value(value).map_err(|e| StoreError::Protocol(e.to_string()))
    }

    fn admin_keys(&self) -> Vec<String> {
        vec![
            self.inner.blocks_key.clone(),
            self.inner.reasons_key.clone(),
        ]
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

fn spawn_subscriber(inner: &Arc<Inner>, sink: InvalidationSink) {
    let channel = inner.channel.clone();
    let client = inner.subscriber.clone();
    let subscribed = inner.subscribed.clone();
    let on_message = sink.clone();
    // The listener tasks live as long as the client; their handles are not needed.
    drop(inner.subscriber.on_message(move |msg| {
        let sink = on_message.clone();
        async move {
            if let Some(inv) = msg.value.as_str().and_then(|s| Invalidation::decode(&s)) {
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
        async move {
            if let Err(e) = client.subscribe(channel.as_str()).await {
                tracing::warn!(error = %e, "cannot subscribe to Redis invalidations");
            }
            sink(Invalidation::All);
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

/// `<base>c:<algorithm><limit>.<window>.<burst>:<key>`, with the check's (possibly overridden)
/// limit and burst: tiers never share a counter.
fn push_counter_key(out: &mut String, base: &str, check: &PolicyCheck<'_>) {
    let p = Params::of_check(check);
    let _ = write!(
        out,
        "{base}c:{}{}.{}.{}:{}",
        algorithm_code(p.algorithm),
        p.limit,
        p.window_ms,
        p.burst,
        check.key
    );
}

fn int(v: u64) -> Value {
    Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// One event as the scripts record it (`cjson` of `{at, client, kind, policy?, reason?,
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

/// Decode the check script's reply (see `lua/check.lua`).
fn decode_decision(reply: &[i64], n: usize) -> Result<CheckResult, StoreError> {
    let bad = || StoreError::Protocol(format!("unexpected script reply of {} values", reply.len()));
    let head = reply.get(..5).ok_or_else(bad)?;
    let now_ms = to_u64(head[2]);
    if head[0] == 2 {
        return Ok(CheckResult {
            outcome: CheckOutcome::Blocked {
                ttl_ms: to_u64(head[1]),
            },
            states: Vec::new(),
            blocked_now: None,
            now_ms,
        });
    }
    if reply.len() != 5 + 5 * n {
        return Err(bad());
    }
    let states = reply[5..]
        .chunks_exact(5)
        .map(|s| PolicyState {
            allowed: s[0] == 1,
            limit: to_u64(s[1]),
            remaining: to_u64(s[2]),
            reset_ms: to_u64(s[3]),
            retry_after_ms: to_u64(s[4]),
        })
        .collect();
    let outcome = match head[0] {
        0 => CheckOutcome::Allowed,
        1 => CheckOutcome::Limited {
            policy: usize::try_from(head[1]).map_err(|_| bad())?,
        },
        _ => return Err(bad()),
    };
    let blocked_now = usize::try_from(head[3]).ok().map(|i| (i, to_u64(head[4])));
    Ok(CheckResult {
        outcome,
        states,
        blocked_now,
        now_ms,
    })
}

impl RedisStore {
    /// KEYS and ARGV of the check script (see `lua/check.lua`).
    fn check_args(&self, req: &CheckRequest<'_>) -> (Vec<String>, Vec<Value>) {
        let checks = req.checks;
        let n = checks.len();
        let mut keys = Vec::with_capacity(2 + n);
        keys.push(self.inner.blocks_key.clone());
        keys.push(self.inner.reasons_key.clone());
        let mut args = Vec::with_capacity(5 + 11 * n);
        args.push(self.now_arg());
        args.push(int(req.cost));
        args.push(Value::String(req.client.into()));
        args.push(int(n as u64));
        args.push(Value::String(req.lease.into()));
        for check in checks {
            let policy = check.policy;
            let p = Params::of_check(check);
            let mut k = String::with_capacity(self.inner.base.len() + 24 + check.key.len());
            push_counter_key(&mut k, &self.inner.base, check);
            keys.push(k);
            args.push(Value::String(algorithm_code(p.algorithm).into()));
            args.push(int(p.limit));
            args.push(int(p.window_ms));
            args.push(int(p.burst));
            args.push(int(u64::from(policy.mode == Mode::Enforce)));
            args.push(int(policy.block_for.map_or(0, millis::ceil)));
            args.push(int(u64::from(check.deferred)));
            let (multiplier, max, memory) = policy.escalation.map_or((0, 0, 0), |e| {
                (e.multiplier, millis::ceil(e.max), millis::ceil(e.memory))
            });
            args.push(int(multiplier));
            args.push(int(max));
            args.push(int(memory));
        }
        for check in checks {
            args.push(Value::String((&*check.policy.name).into()));
        }
        (keys, args)
    }

    async fn check_policies(&self, req: &CheckRequest<'_>) -> Result<CheckResult, StoreError> {
        let reply: Vec<i64> = self
            .run(&self.inner.check, req.lease, || self.check_args(req))
            .await?;
        decode_decision(&reply, req.checks.len())
    }

    /// KEYS and ARGV of a settle operation (see `lua/settle.lua`): `per_check` adds each
    /// counter's arguments.
    fn settle_args(
        &self,
        op: &str,
        arg: Value,
        checks: &[&PolicyCheck<'_>],
        per_check: impl Fn(&mut Vec<Value>, &Params),
    ) -> (Vec<String>, Vec<Value>) {
        let mut keys = Vec::with_capacity(2 + checks.len());
        keys.push(self.inner.blocks_key.clone());
        keys.push(self.inner.reasons_key.clone());
        let mut args = Vec::with_capacity(4 + 4 * checks.len());
        args.push(self.now_arg());
        args.push(Value::String(op.into()));
        args.push(arg);
        args.push(int(checks.len() as u64));
        for check in checks {
            keys.push(self.counter_key(check));
            per_check(&mut args, &Params::of_check(check));
        }
        (keys, args)
    }

    /// Run a settle operation on the concurrency checks among `checks`.
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
        let held: i64 = self
            .run(&self.inner.settle, lease, || {
                self.settle_args(op, Value::String(lease.into()), &conc, |args, p| {
                    args.push(int(p.window_ms))
                })
            })
            .await?;
        Ok(to_u64(held))
    }

    /// Run an operation of the admin script.
    async fn admin<R: fred::types::FromValue>(&self, args: Vec<Value>) -> Result<R, StoreError> {
        self.run(&self.inner.admin, "", || (self.admin_keys(), args.clone()))
            .await
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
        self.check_policies(req).await
    }

    async fn charge(&self, checks: &[PolicyCheck<'_>], cost: u64) -> Result<(), StoreError> {
        let counted: Vec<&PolicyCheck<'_>> = checks
            .iter()
            .filter(|c| c.policy.algorithm != Algorithm::Concurrency)
            .collect();
        if counted.is_empty() || cost == 0 {
            return Ok(());
        }
        let _: i64 = self
            .run(&self.inner.settle, "", || {
                self.settle_args("charge", int(cost), &counted, |args, p| {
                    args.push(Value::String(algorithm_code(p.algorithm).into()));
                    args.push(int(p.limit));
                    args.push(int(p.window_ms));
                    args.push(int(p.burst));
                })
            })
            .await?;
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
            Value::String(client.into()),
            int(ms),
            Value::String(reason.into()),
        ];
        let _: i64 = self.admin(args).await?;
        if ms == 0 {
            let _ = self
                .publish(Invalidation::Unblock(client.to_string()))
                .await;
        }
        Ok(())
    }

    async fn unblock(&self, client: &str) -> Result<bool, StoreError> {
        let args = vec![
            self.now_arg(),
            Value::String("unblock".into()),
            Value::String(client.into()),
        ];
        let removed: i64 = self.admin(args).await?;
        // Every instance drops its cached block at once, even if this one's was already gone.
        self.publish(Invalidation::Unblock(client.to_string()))
            .await?;
        Ok(removed == 1)
    }

    async fn blocks(&self) -> Result<Vec<BlockEntry>, StoreError> {
        let args = vec![self.now_arg(), Value::String("list".into())];
        let rows: Vec<Value> = self.admin(args).await?;
        let mut out: Vec<BlockEntry> = rows
            .chunks_exact(3)
            .filter_map(|row| {
                Some(BlockEntry {
                    client: row[0].as_str()?.to_string(),
                    ttl_ms: to_u64(row[1].as_i64()?),
                    reason: row[2].as_str().map(|s| s.to_string()).unwrap_or_default(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.ttl_ms
                .cmp(&a.ttl_ms)
                .then_with(|| a.client.cmp(&b.client))
        });
        Ok(out)
    }

    async fn limit_status(&self, check: &PolicyCheck<'_>) -> Result<LimitStatus, StoreError> {
        // A cost of 0 evaluates without charging; the empty client is never blocked.
        let checks = [*check];
        let d = self
            .check_policies(&CheckRequest::new("", &checks, 0))
            .await?;
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
        let args = vec![
            self.now_arg(),
            Value::String("events".into()),
            int(limit as u64),
        ];
        let rows: Vec<String> = self.admin(args).await?;
        Ok(rows.iter().filter_map(|raw| decode_event(raw)).collect())
    }

    async fn suspicious(&self, limit: usize) -> Result<Vec<Suspect>, StoreError> {
        let args = vec![
            self.now_arg(),
            Value::String("suspects".into()),
            int(limit as u64),
        ];
        let rows: Vec<Value> = self.admin(args).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn decodes_replies() {
        let d = decode_decision(&[2, 1500, 10, -1, 0], 2).unwrap();
        assert_eq!(d.outcome, CheckOutcome::Blocked { ttl_ms: 1500 });
        let d = decode_decision(&[1, 0, 10, 0, 60000, 0, 5, 0, 1000, 1000], 1).unwrap();
        assert_eq!(d.outcome, CheckOutcome::Limited { policy: 0 });
        assert_eq!(d.blocked_now, Some((0, 60000)));
        assert!(decode_decision(&[0, 0, 10, -1, 0, 1], 1).is_err());
    }
}
