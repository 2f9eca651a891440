//! The decision for one request: build the keys of the route's policies (with their tier
//! overrides), ask the store once, apply shadow mode and `on_error`, and report what the headers
//! need, plus what an admitted request still owes the store afterwards (`admission`).

pub(crate) mod admission;
pub(crate) mod breaker;
pub(crate) mod cache;
pub mod policy;
mod random;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use prometheus::Histogram;

use crate::alerts::{Alert, Alerter};
use crate::clock::{Clock, SystemClock};
use crate::config::compiled::StoreKind;
use crate::config::compiled::{Algorithm, KeyPart, Mode, OnError, Policy, Route, StoreSettings};
use crate::metrics::Metrics;
use crate::millis;
use crate::store::memory::Evictions;
use crate::store::redis::{Invalidation, RedisStore};
use crate::store::{
    AnyStore, BlockEntry, CheckOutcome, CheckRequest, CheckResult, Event, LimitStatus, MemoryStore,
    PolicyCheck, PolicyState, Store, StoreError, Suspect,
};

use admission::{Held, Settler, StoreRef};
use breaker::{Breaker, Permit, Transition};
use cache::{CachedRejection, DenyCache};

pub(crate) use admission::{Admission, Owed, Settlements, Settling};
pub(crate) use policy::UnaddressableKey;

/// How often a remote store is probed in the background (see [`Limiter::probe_store`]).
pub(crate) const STORE_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Who is asking: the resolved client address and its key string (see `proxy::client_ip`).
#[derive(Debug, Clone)]
pub struct ClientId {
    pub ip: IpAddr,
    pub key: String,
}

/// What the request carries that keys may be built from.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Normalized path (what routing matched).
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// Units this request charges to each policy (see `proxy::cost`).
    pub cost: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct ReportEntry {
    pub(crate) policy: Arc<Policy>,
    pub(crate) state: PolicyState,
}

/// Everything the rate-limit headers need.
#[derive(Debug, Clone)]
pub struct RateReport {
    /// One entry per policy of the route, in route order.
    pub(crate) entries: Vec<ReportEntry>,
    /// Index into `entries` of the policy reported in X-RateLimit-* (least remaining; on a
    /// rejection, the rejecting policy).
    pub(crate) reported: usize,
    /// Store clock at decision time, ms since the Unix epoch (for X-RateLimit-Reset).
    pub(crate) now_ms: u64,
}

impl RateReport {
    /// Every enforce policy that rejected, in route order (the problem's `violated-policies`).
    pub(crate) fn violated(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.policy.mode == Mode::Enforce && !e.state.allowed)
            .map(|e| &*e.policy.name)
            .collect()
    }
}

/// The limiter's answer for one request: whether it may go on, with the numbers for the
/// rate-limit headers and what it owes the store afterwards, or why it is refused (429, 503).
#[derive(Debug)]
pub enum Verdict {
    /// The route has no policies, or the client is on the allow list.
    Unlimited,
    Allowed {
        report: RateReport,
        /// What the request owes after the response (count-by-response, concurrency lease).
        admission: Option<Admission>,
    },
    /// Allowed, but these shadow policies would have rejected (indexes into `entries`).
    ShadowLimited {
        report: RateReport,
        shadow: Vec<usize>,
        admission: Option<Admission>,
    },
    /// Over a limit: 429.
    Limited {
        report: RateReport,
        policy: Arc<Policy>,
        /// Seconds for Retry-After: the rejecting policy's retry time (the block's length when
        /// this rejection started one, if longer), plus its `retry_after_jitter`.
        retry_after_s: u64,
        /// Set when this rejection started a `block_for` block (seconds).
        blocked_for_s: Option<u64>,
        /// The policy whose block was applied (with `blocked_for_s`).
        blocked_by: Option<Arc<Policy>>,
    },
    /// Temporarily blocked: 429 with the block time left.
    Blocked { retry_after_s: u64 },
    /// Store unavailable with `on_error = "deny"`: 503.
    Unavailable { retry_after_s: u64 },
}

/// Errors of the admin pass-throughs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LimiterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] UnaddressableKey),
}

/// Decides requests against the configured store, falling back per `store.on_error`.
pub struct Limiter {
    /// Shared with the admissions of requests in flight (their charges and releases).
    store: Arc<AnyStore>,
    /// Only for a remote store: stops waiting on it when it is down.
    breaker: Option<Breaker>,
    /// Only for a remote store: known blocks and rejections answered without a round trip.
    cache: Option<Arc<DenyCache>>,
    /// In-process limits used while the store fails and `on_error = "fallback"`.
    fallback: Arc<MemoryStore>,
    /// Lease ids of requests on routes with concurrency policies.
    lease_ids: random::LeaseIds,
    on_error: OnError,
    metrics: Arc<Metrics>,
    store_duration: Histogram,
    fallback_duration: Histogram,
    /// Whether the last store call failed; its transitions raise the fallback/recovered alerts.
    store_failing: AtomicBool,
    /// Charges and releases owed by answered requests, still on their way to the store.
    settlements: Arc<Settlements>,
    alerts: Alerter,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("store", &self.store)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

/// A store call that failed, and whether it may have reached the store (and run there) anyway.
#[derive(Debug)]
struct Failed {
    error: StoreError,
    sent: bool,
}

/// Which store made a decision.
#[derive(Debug, Clone, Copy)]
enum DecidedBy {
    Store,
    Fallback,
}

/// Whole seconds for Retry-After: rounded up, and at least 1 so a client never retries at once.
fn retry_secs(ms: u64) -> u64 {
    millis::secs_ceil(ms).max(1)
}

/// `secs` plus a random 0..=jitter whole seconds (the policy's `retry_after_jitter`), so clients
/// rejected in the same second do not all come back in the same second.
fn with_jitter(secs: u64, policy: &Policy) -> u64 {
    match policy.retry_after_jitter {
        Some(j) if j.as_secs() > 0 => secs.saturating_add(random::up_to(j.as_secs())),
        _ => secs,
    }
}

impl Limiter {
    pub(crate) fn new(store: AnyStore, settings: &StoreSettings, metrics: Arc<Metrics>) -> Self {
        Self::with_fallback_clock(store, settings, metrics, Arc::new(SystemClock))
    }

    /// Like `new`, with the clock of the in-process fallback store given (tests).
    pub fn with_fallback_clock(
        store: AnyStore,
        settings: &StoreSettings,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // Label handles resolved once; store names are a fixed vocabulary.
        let store_duration = metrics.store_duration.with_label_values(&[store.name()]);
        let fallback = MemoryStore::new(settings.max_memory_keys, clock)
            .with_evictions(Evictions::new(&metrics.store_evictions, "fallback"));
        let fallback_duration = metrics.store_duration.with_label_values(&[fallback.name()]);
        let remote = matches!(store, AnyStore::Redis(_));
        Limiter {
            breaker: remote.then(|| Breaker::new(settings.timeout)),
            cache: None,
            store: Arc::new(store),
            fallback: Arc::new(fallback),
            lease_ids: random::LeaseIds::default(),
            on_error: settings.on_error,
            metrics,
            store_duration,
            fallback_duration,
            store_failing: AtomicBool::new(false),
            settlements: Arc::default(),
            alerts: Alerter::disabled(),
        }
    }

    /// The limiter for `settings`: the in-process store, or Redis with its circuit breaker and
    /// local deny cache (kept current by the store's pub/sub invalidations). Never waits for
    /// Redis: an unreachable server is handled per `on_error` until it answers.
    pub fn build(settings: &StoreSettings, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        match settings.kind {
            StoreKind::Memory => {
                let store = MemoryStore::new(settings.max_memory_keys, Arc::new(SystemClock))
                    .with_evictions(Evictions::new(&metrics.store_evictions, "memory"));
                Ok(Limiter::new(AnyStore::Memory(store), settings, metrics))
            }
            StoreKind::Redis => {
                let cache = Arc::new(
                    DenyCache::new(settings.max_memory_keys.min(100_000))
                        .with_evictions(metrics.store_evictions.clone()),
                );
                let sink = cache.clone();
                let store = RedisStore::connect(
                    settings,
                    Arc::new(move |inv: Invalidation| sink.invalidate(&inv)),
                )?
                .with_metrics(&metrics);
                let mut limiter = Limiter::new(AnyStore::Redis(store), settings, metrics);
                limiter.cache = Some(cache);
                Ok(limiter)
            }
        }
    }

    /// Forget cached decisions (after a reload, policies may have changed).
    pub(crate) fn clear_cache(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    /// Whether the last call to the configured store failed.
    pub(crate) fn store_failing(&self) -> bool {
        self.store_failing.load(Ordering::Relaxed)
    }

    /// Whether the configured store can decide requests now: for a remote store, its breaker is
    /// closed (it follows the background probe, see [`Limiter::probe_store`], so this changes
    /// without traffic); for the in-process store, its last call succeeded.
    pub(crate) fn store_ready(&self) -> bool {
        match &self.breaker {
            Some(breaker) => !breaker.is_open(),
            None => !self.store_failing(),
        }
    }

    /// What this limiter does while the store fails.
    pub(crate) fn on_error(&self) -> OnError {
        self.on_error
    }

    /// Raise alerts through `alerts` when the store starts or stops failing.
    pub(crate) fn with_alerts(mut self, alerts: Alerter) -> Self {
        self.alerts = alerts;
        self
    }

    /// Record whether the store answered. Only a change of state alerts, so a dead store raises
    /// one alert, not one per request. With a breaker, only its transitions (opened, closed) are
    /// reported here.
    pub(crate) fn store_health(&self, result: Result<(), &StoreError>) {
        let failing = result.is_err();
        // A load first: the common case (no change) stays a shared read of the cache line.
        if self.store_failing.load(Ordering::Relaxed) == failing
            || self.store_failing.swap(failing, Ordering::AcqRel) == failing
        {
            return;
        }
        let store = self.store.name();
        // The breaker logs its own transitions.
        let log = self.breaker.is_none();
        let alert = match result {
            Err(e) => {
                if log {
                    tracing::warn!(store, error = %e, on_error = self.on_error.as_str(), "store failing");
                }
                Alert::StoreFallback {
                    store,
                    on_error: self.on_error.as_str(),
                    error: e.to_string(),
                }
            }
            Ok(()) => {
                if log {
                    tracing::info!(store, "store answers again");
                }
                Alert::StoreRecovered { store }
            }
        };
        self.alerts.notify(alert);
    }

    /// The configured store.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    pub async fn check(&self, route: &Route, client: &ClientId, req: RequestView<'_>) -> Verdict {
        if route.policies.is_empty() {
            return self.check_block_only(client).await;
        }
        // All keys in one buffer; `ends[i]` is where key i stops.
        let mut keys = String::with_capacity(route.policies.len() * 48);
        let mut ends = Vec::with_capacity(route.policies.len());
        for p in &route.policies {
            policy::build_key(&mut keys, p, route, client, req);
            ends.push(keys.len());
        }
        let checks: Vec<PolicyCheck<'_>> = route
            .policies
            .iter()
            .zip(&ends)
            .scan(0, |start, (p, &end)| {
                let key = &keys[*start..end];
                *start = end;
                let tier = policy::override_limit(p, route, client, req);
                Some(PolicyCheck::new(p, key).with_limit(tier))
            })
            .collect();
        if let Some(cache) = &self.cache {
            if let Some(left) = cache.blocked(&client.key) {
                return Verdict::Blocked {
                    retry_after_s: retry_secs(millis::floor(left)),
                };
            }
            for (i, check) in checks.iter().enumerate() {
                // Concurrency rejections are never cached (a slot may free at any moment).
                if check.policy.mode != Mode::Enforce
                    || check.policy.algorithm == Algorithm::Concurrency
                {
                    continue;
                }
                if let Some(hit) = cache.limited(check.key, req.cost) {
                    return self.cached_rejection(route, i, hit);
                }
            }
        }
        let lease = if route
            .policies
            .iter()
            .any(|p| p.algorithm == Algorithm::Concurrency)
        {
            self.lease_ids.next()
        } else {
            String::new()
        };
        let request = CheckRequest {
            lease: &lease,
            ..CheckRequest::new(&client.key, &checks, req.cost)
        };

        let err = match self.call_store(&request).await {
            Ok(decision) => {
                self.remember(&request, &decision);
                match self.verdict(route, decision, &request, DecidedBy::Store) {
                    Ok(v) => return v,
                    // The script ran: whatever it took is the store's now.
                    Err(e) => Failed {
                        error: e,
                        sent: true,
                    },
                }
            }
            Err(failed) => failed,
        };
        if err.sent {
            self.release_unanswered(route, &request);
        }
        let err = err.error;
        match self.on_error {
            OnError::Allow => Verdict::Unlimited,
            OnError::Deny => Verdict::Unavailable { retry_after_s: 1 },
            OnError::Fallback => {
                if self.breaker.is_none() {
                    // The memory store itself failed (full); its fallback is another of the same.
                    self.metrics.store_fallback_active.set(1);
                }
                let fallback = timed(&self.fallback_duration, self.fallback.check(&request))
                    .await
                    .and_then(|d| self.verdict(route, d, &request, DecidedBy::Fallback));
                fallback.unwrap_or_else(|e| {
                    // The fallback evicts rather than fill up, so this is a caller bug or a
                    // degenerate store; either way nothing vouches for the request, and only
                    // `on_error = "allow"` lets a request through unchecked.
                    tracing::warn!(error = %err, fallback_error = %e, "fallback store failed");
                    self.record_error(self.fallback.name(), &e);
                    Verdict::Unavailable { retry_after_s: 1 }
                })
            }
        }
    }

    /// The lease a check sent to the store may still be taken there when it runs late (a
    /// stalled Redis runs the queued script when it wakes), and nobody would ever release it:
    /// release it now, off the request path. Sent after the check on the same connection, the
    /// release runs after it; where the check never ran it is a no-op.
    fn release_unanswered(&self, route: &Route, request: &CheckRequest<'_>) {
        if request.lease.is_empty() {
            return;
        }
        let held: Vec<Held> = route
            .policies
            .iter()
            .zip(request.checks)
            .filter(|(p, _)| p.algorithm == Algorithm::Concurrency)
            .map(|(p, check)| Held {
                policy: p.clone(),
                key: check.key.into(),
                limit: (check.limit != p.limit).then_some(check.limit),
            })
            .collect();
        admission::release_now(
            self.settler(DecidedBy::Store),
            request.lease.to_owned(),
            held,
        );
    }

    /// Where an admission settles: the store that decided.
    fn settler(&self, by: DecidedBy) -> Settler {
        Settler {
            store: match by {
                DecidedBy::Store => StoreRef::Primary(self.store.clone()),
                DecidedBy::Fallback => StoreRef::Fallback(self.fallback.clone()),
            },
            metrics: self.metrics.clone(),
            settlements: self.settlements.clone(),
        }
    }

    /// Charges and releases owed by answered requests (shutdown waits for them).
    pub(crate) fn settlements(&self) -> &Settlements {
        &self.settlements
    }

    /// A route without policies still refuses a blocked client ("blocked from every route").
    /// Nothing else can be enforced there, so a failing store lets the request through whatever
    /// `on_error` says (availability wins on routes the operator chose not to limit), except that
    /// with `fallback` a client the fallback store blocked during the outage stays blocked here.
    async fn check_block_only(&self, client: &ClientId) -> Verdict {
        if let Some(cache) = &self.cache {
            if let Some(left) = cache.blocked(&client.key) {
                return Verdict::Blocked {
                    retry_after_s: retry_secs(millis::floor(left)),
                };
            }
        }
        let request = CheckRequest::new(&client.key, &[], 1);
        match self.call_store(&request).await {
            Ok(decision) => {
                self.remember(&request, &decision);
                match decision.outcome {
                    CheckOutcome::Blocked { ttl_ms } => Verdict::Blocked {
                        retry_after_s: retry_secs(ttl_ms),
                    },
                    _ => Verdict::Unlimited,
                }
            }
            Err(_) if self.on_error == OnError::Fallback => {
                match self.fallback.check(&request).await {
                    Ok(CheckResult {
                        outcome: CheckOutcome::Blocked { ttl_ms },
                        ..
                    }) => Verdict::Blocked {
                        retry_after_s: retry_secs(ttl_ms),
                    },
                    _ => Verdict::Unlimited,
                }
            }
            Err(_) => Verdict::Unlimited,
        }
    }

    /// One store call, through the breaker when the store is remote. Errors are recorded here.
    async fn call_store(&self, request: &CheckRequest<'_>) -> Result<CheckResult, Failed> {
        let Some(breaker) = &self.breaker else {
            let result = timed(&self.store_duration, self.store.check(request)).await;
            match &result {
                Ok(_) if self.on_error == OnError::Fallback => {
                    self.metrics.store_fallback_active.set(0)
                }
                Ok(_) => {}
                Err(e) => self.record_error(self.store.name(), e),
            }
            // Without a breaker every call is a state of its own; store_health alerts on changes.
            self.store_health(result.as_ref().map(|_| ()));
            // The in-process store fails before changing anything.
            return result.map_err(|error| Failed { error, sent: false });
        };
        if breaker.permit() == Permit::Reject {
            return Err(Failed {
                error: StoreError::Unavailable("circuit open".into()),
                sent: false,
            });
        }
        // A known-dead connection fails at once instead of queueing behind a reconnect.
        let down = match &*self.store {
            AnyStore::Redis(r) => !r.is_connected(),
            AnyStore::Memory(_) => false,
        };
        let result = if down {
            Err(StoreError::Unavailable("not connected".into()))
        } else {
            timed(&self.store_duration, self.store.check(request)).await
        };
        let transition = match &result {
            Ok(_) => breaker.on_success(),
            Err(e) => {
                self.record_error(self.store.name(), e);
                breaker.on_failure(down)
            }
        };
        self.breaker_moved(transition, result.as_ref().map(|_| ()));
        // A timeout or a broken connection says nothing of whether Redis ran the script.
        result.map_err(|error| Failed { error, sent: !down })
    }

    /// Log, gauge and alert a change of the breaker's state.
    fn breaker_moved(&self, transition: Option<Transition>, result: Result<(), &StoreError>) {
        match (transition, result) {
            (Some(Transition::Opened), Err(e)) => {
                tracing::warn!(
                    store = self.store.name(),
                    error = %e,
                    on_error = ?self.on_error,
                    "store unavailable; applying on_error until it answers again"
                );
                if self.on_error == OnError::Fallback {
                    self.metrics.store_fallback_active.set(1);
                }
                self.store_health(Err(e));
            }
            (Some(Transition::Closed), _) => {
                tracing::info!(store = self.store.name(), "store answering again");
                self.metrics.store_fallback_active.set(0);
                self.store_health(Ok(()));
            }
            _ => {}
        }
    }

    /// Probe a remote store once, outside any request: a PING (never counted in the store
    /// request metrics) whose outcome drives the breaker like a request's would. This is what
    /// takes the breaker back to a store that answers again, and what readiness follows, without
    /// waiting for traffic. Without a remote store there is nothing to probe.
    pub(crate) async fn probe_store(&self) {
        let (Some(breaker), AnyStore::Redis(redis)) = (&self.breaker, &*self.store) else {
            return;
        };
        let result = redis.ping().await;
        let transition = match &result {
            Ok(()) => breaker.on_success(),
            Err(e) => {
                tracing::debug!(error = %e, "store probe failed");
                breaker.on_failure(!redis.is_connected())
            }
        };
        self.breaker_moved(transition, result.as_ref().map(|_| ()));
    }

    /// [`Limiter::probe_store`] every [`STORE_PROBE_INTERVAL`], for ever.
    pub(crate) async fn probe_store_forever(self: Arc<Self>) {
        if self.breaker.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(STORE_PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.probe_store().await;
        }
    }

    /// Cache what the store said about known blocks and rejections.
    fn remember(&self, request: &CheckRequest<'_>, d: &CheckResult) {
        let Some(cache) = &self.cache else { return };
        match d.outcome {
            CheckOutcome::Blocked { ttl_ms } => {
                cache.insert_block(request.client, Duration::from_millis(ttl_ms));
            }
            CheckOutcome::Limited { policy } => {
                if let (Some(check), Some(state)) =
                    (request.checks.get(policy), d.states.get(policy))
                {
                    // A concurrency slot may free at any moment: never answered from the cache.
                    // A policy with `block_for` blocked the client, and the block is cached
                    // below; once it ends, the store must see the next rejection so that it
                    // blocks (and escalates) again, which a cached rejection would skip.
                    if check.policy.algorithm != Algorithm::Concurrency
                        && check.policy.block_for.is_none()
                    {
                        cache.insert_limited(check.key, *state, d.now_ms, request.cost);
                    }
                }
                if let Some((_, ms)) = d.blocked_now {
                    cache.insert_block(request.client, Duration::from_millis(ms));
                }
            }
            CheckOutcome::Allowed => {}
        }
    }

    /// A rejection answered from the cache: only the rejecting policy is known, so it is the
    /// one reported.
    fn cached_rejection(&self, route: &Route, index: usize, hit: CachedRejection) -> Verdict {
        let policy = route.policies[index].clone();
        self.metrics
            .policy_rejections
            .with_label_values(&[&policy.name])
            .inc();
        Verdict::Limited {
            retry_after_s: with_jitter(retry_secs(hit.state.retry_after_ms), &policy),
            blocked_for_s: None,
            blocked_by: None,
            report: RateReport {
                entries: vec![ReportEntry {
                    policy: policy.clone(),
                    state: hit.state,
                }],
                reported: 0,
                now_ms: hit.now_ms,
            },
            policy,
        }
    }

    fn record_error(&self, store: &'static str, e: &StoreError) {
        tracing::debug!(store, error = %e, "store call failed");
        self.metrics
            .store_errors
            .with_label_values(&[store, e.kind()])
            .inc();
    }

    /// Map a store decision to the verdict; a decision that does not fit the route is a protocol
    /// error (handled like any store failure). `by` is the store that decided, where the
    /// admission of an admitted request settles.
    fn verdict(
        &self,
        route: &Route,
        d: CheckResult,
        request: &CheckRequest<'_>,
        by: DecidedBy,
    ) -> Result<Verdict, StoreError> {
        if let CheckOutcome::Blocked { ttl_ms } = d.outcome {
            return Ok(Verdict::Blocked {
                retry_after_s: retry_secs(ttl_ms),
            });
        }
        if d.states.len() != route.policies.len() {
            return Err(StoreError::Protocol(format!(
                "{} policy states for {} policies",
                d.states.len(),
                route.policies.len()
            )));
        }
        for (p, s) in route.policies.iter().zip(&d.states) {
            if !s.allowed {
                self.metrics
                    .policy_rejections
                    .with_label_values(&[&p.name])
                    .inc();
            }
        }
        let entries: Vec<ReportEntry> = route
            .policies
            .iter()
            .zip(&d.states)
            .map(|(p, &state)| ReportEntry {
                policy: p.clone(),
                state,
            })
            .collect();
        match d.outcome {
            CheckOutcome::Limited { policy } => {
                let Some(rejecting) = entries.get(policy) else {
                    return Err(StoreError::Protocol(format!(
                        "rejecting policy {policy} out of range"
                    )));
                };
                let blocked = d
                    .blocked_now
                    .and_then(|(i, ms)| Some((route.policies.get(i)?.clone(), retry_secs(ms))));
                let mut retry = retry_secs(rejecting.state.retry_after_ms);
                // Coming back before the block ends would only meet the block.
                if let Some((_, secs)) = &blocked {
                    retry = retry.max(*secs);
                }
                Ok(Verdict::Limited {
                    policy: rejecting.policy.clone(),
                    retry_after_s: with_jitter(retry, &rejecting.policy),
                    blocked_for_s: blocked.as_ref().map(|(_, s)| *s),
                    blocked_by: blocked.map(|(p, _)| p),
                    report: RateReport {
                        entries,
                        reported: policy,
                        now_ms: d.now_ms,
                    },
                })
            }
            CheckOutcome::Allowed | CheckOutcome::Blocked { .. } => {
                let admission = admission_of(request, &entries, || self.settler(by));
                let reported = least_remaining(&entries);
                let shadow: Vec<usize> = entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| !e.state.allowed)
                    .map(|(i, _)| i)
                    .collect();
                let report = RateReport {
                    entries,
                    reported,
                    now_ms: d.now_ms,
                };
                Ok(if shadow.is_empty() {
                    Verdict::Allowed { report, admission }
                } else {
                    Verdict::ShadowLimited {
                        report,
                        shadow,
                        admission,
                    }
                })
            }
        }
    }

    /// Block `client` (admin).
    pub(crate) async fn block(
        &self,
        client: &str,
        ttl: Duration,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.store.block(client, ttl, reason).await
    }

    /// Remove a block from the store and from the fallback (which may have started one while the
    /// store was failing). Returns whether either had one.
    pub async fn unblock(&self, client: &str) -> Result<bool, StoreError> {
        let local = self.fallback.unblock(client).await.unwrap_or(false);
        // Redis publishes the unblock to every instance; this one forgets at once regardless.
        if let Some(cache) = &self.cache {
            cache.invalidate(&Invalidation::Unblock(client.to_string()));
        }
        Ok(self.store.unblock(client).await? || local)
    }

    /// Active blocks in the store, longest remaining first.
    pub(crate) async fn blocks(&self) -> Result<Vec<BlockEntry>, StoreError> {
        self.store.blocks().await
    }

    /// The counter of `policy` for client key `client` (see `policy::build_client_key`). The caller
    /// resolves the policy by name in its config snapshot.
    pub(crate) async fn limit_status(
        &self,
        policy: &Policy,
        client: &str,
    ) -> Result<LimitStatus, LimiterError> {
        let mut key = String::new();
        policy::build_client_key(&mut key, policy, client)?;
        let check = PolicyCheck::new(policy, &key).with_limit(client_tier(policy, client));
        Ok(self.store.limit_status(&check).await?)
    }

    /// Recent events recorded by the store, newest first.
    pub(crate) async fn events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.store.events(limit).await
    }

    /// The clients the store rejected most often recently.
    pub(crate) async fn suspicious(&self, limit: usize) -> Result<Vec<Suspect>, StoreError> {
        self.store.suspicious(limit).await
    }

    /// Reset the counter of `policy` for client key `client`; returns whether it existed.
    pub(crate) async fn reset_limit(
        &self,
        policy: &Policy,
        client: &str,
    ) -> Result<bool, LimiterError> {
        let mut key = String::new();
        policy::build_client_key(&mut key, policy, client)?;
        let check = PolicyCheck::new(policy, &key).with_limit(client_tier(policy, client));
        let local = self.fallback.reset_limit(&check).await.unwrap_or(false);
        if let Some(cache) = &self.cache {
            cache.invalidate(&Invalidation::Reset(key.clone()));
        }
        Ok(self.store.reset_limit(&check).await? || local)
    }
}

/// The tier of client key `client` on an IP-keyed policy (the admin API addresses counters by
/// client).
fn client_tier(policy: &Policy, client: &str) -> Option<u64> {
    match policy.key.as_slice() {
        [KeyPart::Ip] => policy.overrides.get(client),
        _ => None,
    }
}

/// What an admitted request owes: the count-by-response policies that admitted it, and the
/// concurrency slots it took (a shadow concurrency policy that would reject took none).
fn admission_of(
    request: &CheckRequest<'_>,
    entries: &[ReportEntry],
    settler: impl FnOnce() -> Settler,
) -> Option<Admission> {
    let owes = |c: &PolicyCheck<'_>| c.deferred || c.policy.algorithm == Algorithm::Concurrency;
    if !request.checks.iter().any(owes) {
        return None;
    }
    let mut deferred = Vec::new();
    let mut leased = Vec::new();
    for (check, entry) in request.checks.iter().zip(entries) {
        if !owes(check) || !entry.state.allowed {
            continue;
        }
        let held = Held {
            policy: entry.policy.clone(),
            key: check.key.into(),
            limit: (check.limit != check.policy.limit).then_some(check.limit),
        };
        if check.policy.algorithm == Algorithm::Concurrency {
            leased.push(held);
        } else {
            deferred.push(held);
        }
    }
    let lease = (!leased.is_empty()).then(|| (request.lease.to_owned(), leased));
    Admission::new(settler(), request.cost, deferred, lease)
}

/// The entry reported in X-RateLimit-*: least remaining among enforce policies (among all when
/// the route has only shadow policies), first in route order on a tie.
fn least_remaining(entries: &[ReportEntry]) -> usize {
    let enforce = entries.iter().any(|e| e.policy.mode == Mode::Enforce);
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !enforce || e.policy.mode == Mode::Enforce)
        .min_by_key(|(i, e)| (e.state.remaining, *i))
        .map_or(0, |(i, _)| i)
}

async fn timed<T>(histogram: &Histogram, fut: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let out = fut.await;
    histogram.observe(start.elapsed().as_secs_f64());
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::StatusCode;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::compiled::{
        Algorithm, CountOn, KeyPart, Overrides, PathMatch, StoreKind, Target,
    };

    const T0: u64 = 1_700_006_400_000;

    fn settings(on_error: OnError) -> StoreSettings {
        StoreSettings {
            kind: StoreKind::Memory,
            url: String::new(),
            key_prefix: "rategate:".into(),
            timeout: Duration::from_millis(50),
            on_error,
            max_memory_keys: 1000,
        }
    }

    fn policy(name: &str, limit: u64, mode: Mode, block_for: Option<u64>) -> Arc<Policy> {
        Arc::new(Policy {
            block_for: block_for.map(Duration::from_millis),
            mode,
            ..Policy::new(name, Algorithm::FixedWindow, limit, Duration::from_secs(10))
        })
    }

    fn route(policies: Vec<Arc<Policy>>) -> Route {
        Route {
            name: Arc::from("api"),
            path: PathMatch::Prefix("/".into()),
            methods: vec![],
            host: None,
            target: Target::Respond {
                status: StatusCode::OK,
                body: Bytes::new(),
            },
            policies,
            strip_prefix: false,
            case_insensitive: false,
            cost: Default::default(),
            index: 0,
        }
    }

    fn client(ip: &str) -> ClientId {
        ClientId {
            ip: ip.parse().unwrap(),
            key: ip.into(),
        }
    }

    struct Fixture {
        limiter: Limiter,
        metrics: Arc<Metrics>,
        clock: ManualClock,
    }

    fn fixture(max_keys: usize, on_error: OnError) -> Fixture {
        let clock = ManualClock::new(T0);
        let metrics = Arc::new(Metrics::new().unwrap());
        let store = AnyStore::Memory(MemoryStore::new(max_keys, Arc::new(clock.clone())));
        let limiter = Limiter::with_fallback_clock(
            store,
            &settings(on_error),
            metrics.clone(),
            Arc::new(clock.clone()),
        );
        Fixture {
            limiter,
            metrics,
            clock,
        }
    }

    async fn check(f: &Fixture, route: &Route, ip: &str) -> Verdict {
        let headers = HeaderMap::new();
        let req = RequestView {
            method: &Method::GET,
            path: "/x",
            headers: &headers,
            cost: 1,
        };
        f.limiter.check(route, &client(ip), req).await
    }

    #[tokio::test]
    async fn no_policies_is_unlimited() {
        let f = fixture(100, OnError::Deny);
        assert!(matches!(
            check(&f, &route(vec![]), "1.1.1.1").await,
            Verdict::Unlimited
        ));
    }

    #[tokio::test]
    async fn reports_least_remaining_enforce_policy() {
        let f = fixture(100, OnError::Deny);
        let r = route(vec![
            policy("wide", 10, Mode::Enforce, None),
            policy("shadow", 1, Mode::Shadow, None),
            policy("narrow", 3, Mode::Enforce, None),
        ]);
        let Verdict::Allowed { report, .. } = check(&f, &r, "1.1.1.1").await else {
            panic!("allowed expected")
        };
        assert_eq!(report.reported, 2);
        assert_eq!(report.entries[2].state.remaining, 2);
        assert_eq!(report.now_ms, T0);
        let Verdict::ShadowLimited { report, shadow, .. } = check(&f, &r, "1.1.1.1").await else {
            panic!("shadow limited expected")
        };
        assert_eq!(shadow, vec![1]);
        assert_eq!(report.reported, 2);
        let rejections = f
            .metrics
            .policy_rejections
            .with_label_values(&["shadow"])
            .get();
        assert_eq!(rejections, 1);
    }

    #[tokio::test]
    async fn limited_then_blocked() {
        let f = fixture(100, OnError::Deny);
        let r = route(vec![
            policy("wide", 10, Mode::Enforce, None),
            policy("login", 1, Mode::Enforce, Some(90_500)),
        ]);
        assert!(matches!(
            check(&f, &r, "1.1.1.1").await,
            Verdict::Allowed { .. }
        ));
        f.clock.advance_ms(1);
        match check(&f, &r, "1.1.1.1").await {
            Verdict::Limited {
                report,
                policy,
                retry_after_s,
                blocked_for_s,
                blocked_by,
            } => {
                assert_eq!(&*policy.name, "login");
                assert_eq!(report.reported, 1);
                // 9999 ms left in the window, but the block (91 s) outlasts it.
                assert_eq!(retry_after_s, 91);
                assert_eq!(blocked_for_s, Some(91));
                assert_eq!(blocked_by.map(|p| p.name.to_string()), Some("login".into()));
            }
            v => panic!("limited expected, got {v:?}"),
        }
        f.clock.advance_ms(90_000);
        assert!(matches!(
            check(&f, &r, "1.1.1.1").await,
            Verdict::Blocked { retry_after_s: 1 }
        ));
        assert!(f.limiter.unblock("1.1.1.1").await.unwrap());
        assert!(matches!(
            check(&f, &r, "1.1.1.1").await,
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            check(&f, &r, "2.2.2.2").await,
            Verdict::Allowed { .. }
        ));
    }

    /// A store of one entry cannot hold the two counters of a two-policy route (it evicts
    /// anything else, but never the request's own entries): every check of that route gets
    /// `StoreError::Capacity`, which exercises `on_error`.
    fn two_policies() -> Route {
        route(vec![
            policy("one", 1, Mode::Enforce, None),
            policy("two", 5, Mode::Enforce, None),
        ])
    }

    #[tokio::test]
    async fn on_error_allow_deny_fallback() {
        let r = two_policies();

        let f = fixture(1, OnError::Allow);
        assert!(matches!(check(&f, &r, "2.2.2.2").await, Verdict::Unlimited));
        let errors = f
            .metrics
            .store_errors
            .with_label_values(&["memory", "capacity"])
            .get();
        assert_eq!(errors, 1);

        let f = fixture(1, OnError::Deny);
        assert!(matches!(
            check(&f, &r, "2.2.2.2").await,
            Verdict::Unavailable { retry_after_s: 1 }
        ));

        let f = fixture(1, OnError::Fallback);
        assert!(matches!(
            check(&f, &r, "2.2.2.2").await,
            Verdict::Allowed { .. }
        ));
        assert_eq!(f.metrics.store_fallback_active.get(), 1);
        // The fallback enforces limits of its own.
        assert!(matches!(
            check(&f, &r, "2.2.2.2").await,
            Verdict::Limited { .. }
        ));
        // A route the store can hold is decided by the store again.
        let small = route(vec![policy("small", 1, Mode::Enforce, None)]);
        assert!(matches!(
            check(&f, &small, "1.1.1.1").await,
            Verdict::Allowed { .. }
        ));
        assert_eq!(f.metrics.store_fallback_active.get(), 0);
    }

    /// When the fallback fails too, nothing vouches for the request: 503, never unlimited.
    #[tokio::test]
    async fn a_failing_fallback_denies() {
        let clock = ManualClock::new(T0);
        let metrics = Arc::new(Metrics::new().unwrap());
        let store = AnyStore::Memory(MemoryStore::new(1, Arc::new(clock.clone())));
        let settings = StoreSettings {
            max_memory_keys: 1,
            ..settings(OnError::Fallback)
        };
        let limiter =
            Limiter::with_fallback_clock(store, &settings, metrics, Arc::new(clock.clone()));
        let f = Fixture {
            limiter,
            metrics: Arc::new(Metrics::new().unwrap()),
            clock,
        };
        assert!(matches!(
            check(&f, &two_policies(), "2.2.2.2").await,
            Verdict::Unavailable { .. }
        ));
    }

    /// An in-process store full of counters at their limit takes no new key: with `deny` a new
    /// client is refused, with `fallback` the fallback store limits it, and every client already
    /// limited stays limited. Nothing is admitted unlimited.
    #[tokio::test]
    async fn a_full_store_keeps_limiting() {
        for on_error in [OnError::Deny, OnError::Fallback] {
            let f = fixture(1000, on_error);
            let r = route(vec![policy("one", 1, Mode::Enforce, None)]);
            let ip = |i: u32| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            for i in 0..1000u32 {
                assert!(matches!(
                    check(&f, &r, &ip(i)).await,
                    Verdict::Allowed { .. }
                ));
                assert!(matches!(
                    check(&f, &r, &ip(i)).await,
                    Verdict::Limited { .. }
                ));
            }
            for i in 1000..1100u32 {
                let first = check(&f, &r, &ip(i)).await;
                match on_error {
                    OnError::Deny => assert!(
                        matches!(first, Verdict::Unavailable { .. }),
                        "{on_error:?}: {first:?}"
                    ),
                    _ => {
                        assert!(matches!(first, Verdict::Allowed { .. }), "{first:?}");
                        let again = check(&f, &r, &ip(i)).await;
                        assert!(matches!(again, Verdict::Limited { .. }), "{again:?}");
                    }
                }
            }
            for i in 0..1000u32 {
                assert!(matches!(
                    check(&f, &r, &ip(i)).await,
                    Verdict::Limited { .. }
                ));
            }
            let errors = f
                .metrics
                .store_errors
                .with_label_values(&["memory", "capacity"])
                .get();
            assert!(errors >= 100, "{on_error:?}: {errors}");
        }
    }

    #[tokio::test]
    async fn tiers_and_count_by_response() {
        let f = fixture(100, OnError::Deny);
        let login = Arc::new(Policy {
            count: CountOn::Statuses(vec![401].into()),
            overrides: Overrides::new([("1.1.1.1".to_string(), 3)]),
            ..Policy::new("login", Algorithm::FixedWindow, 1, Duration::from_secs(10))
        });
        let r = route(vec![login.clone()]);
        let settle = |v: Verdict| match v {
            Verdict::Allowed { report, admission } => (report, admission),
            other => panic!("allowed expected, got {other:?}"),
        };
        // 1.1.1.1 has a tier of 3; nothing is charged at admission.
        let (report, admission) = settle(check(&f, &r, "1.1.1.1").await);
        assert_eq!(report.entries[0].state.limit, 3);
        // A 200 is not counted.
        assert!(admission.expect("owes a charge").respond(200).is_none());
        for _ in 0..3 {
            let (_, admission) = settle(check(&f, &r, "1.1.1.1").await);
            let owed = admission.expect("owes a charge").respond(401);
            // Settled once this resolves.
            owed.expect("a 401 is owed").settle().await;
        }
        assert_eq!(f.limiter.settlements().pending(), 0);
        assert_eq!(
            f.limiter
                .limit_status(&login, "1.1.1.1")
                .await
                .unwrap()
                .count,
            3
        );
        assert!(matches!(
            check(&f, &r, "1.1.1.1").await,
            Verdict::Limited { .. }
        ));
        // Another client has the default limit of 1.
        let (report, _) = settle(check(&f, &r, "2.2.2.2").await);
        assert_eq!(report.entries[0].state.limit, 1);
        // Plain policies owe nothing: no admission at all.
        let plain = route(vec![policy("plain", 5, Mode::Enforce, None)]);
        assert!(settle(check(&f, &plain, "1.1.1.1").await).1.is_none());
    }

    #[tokio::test]
    async fn what_is_owed_settles_even_when_dropped_and_flush_waits_for_it() {
        let f = fixture(100, OnError::Deny);
        let slot = Arc::new(Policy {
            index: 0,
            ..Policy::new("slot", Algorithm::Concurrency, 1, Duration::from_secs(60))
        });
        let r = route(vec![slot.clone()]);
        let admitted = |v: Verdict| match v {
            Verdict::Allowed { admission, .. } => admission.expect("a lease is owed"),
            other => panic!("allowed expected, got {other:?}"),
        };
        // Answered, then the body is dropped before its end (client gone, cut at shutdown).
        let owed = admitted(check(&f, &r, "1.1.1.1").await).respond(200);
        assert!(matches!(
            check(&f, &r, "1.1.1.1").await,
            Verdict::Limited { .. }
        ));
        drop(owed.expect("the lease is owed"));
        assert!(f.limiter.settlements().flush(Duration::from_secs(5)).await);
        // Never answered at all (the upstream failed, the request was dropped).
        drop(admitted(check(&f, &r, "1.1.1.1").await));
        assert!(f.limiter.settlements().flush(Duration::from_secs(5)).await);
        let status = f.limiter.limit_status(&slot, "1.1.1.1").await.unwrap();
        assert_eq!(status.count, 0);
        assert_eq!(f.limiter.settlements().pending(), 0);
        f.limiter.settlements().begin_drain();
        assert_eq!(f.limiter.settlements().failed_since_drain(), 0);
    }

    #[tokio::test]
    async fn a_check_refused_before_it_was_sent_releases_nothing() {
        // Nothing listens there: the connection is known down, so the check is never sent.
        let settings = StoreSettings {
            kind: StoreKind::Redis,
            url: "redis://127.0.0.1:1/0".into(),
            ..settings(OnError::Deny)
        };
        let store = RedisStore::connect(&settings, Arc::new(|_| {})).unwrap();
        let limiter = Limiter::new(
            AnyStore::Redis(store),
            &settings,
            Arc::new(Metrics::new().unwrap()),
        );
        let slot = Arc::new(Policy {
            index: 0,
            ..Policy::new("slot", Algorithm::Concurrency, 1, Duration::from_secs(60))
        });
        let headers = HeaderMap::new();
        let req = RequestView {
            method: &Method::GET,
            path: "/x",
            headers: &headers,
            cost: 1,
        };
        limiter.settlements().begin_drain();
        for _ in 0..3 {
            assert!(matches!(
                limiter
                    .check(&route(vec![slot.clone()]), &client("1.1.1.1"), req)
                    .await,
                Verdict::Unavailable { .. }
            ));
        }
        assert!(limiter.settlements().flush(Duration::from_secs(5)).await);
        // A release would have been spawned, found Redis unreachable and been counted lost.
        assert_eq!(limiter.settlements().failed_since_drain(), 0);
    }

    #[tokio::test]
    async fn admin_pass_throughs() {
        let f = fixture(100, OnError::Deny);
        let p = policy("one", 2, Mode::Enforce, None);
        let r = route(vec![p.clone()]);
        check(&f, &r, "1.1.1.1").await;
        let s = f.limiter.limit_status(&p, "1.1.1.1").await.unwrap();
        assert_eq!((s.count, s.remaining, s.limit), (1, 1, 2));
        assert!(f.limiter.reset_limit(&p, "1.1.1.1").await.unwrap());
        assert_eq!(
            f.limiter.limit_status(&p, "1.1.1.1").await.unwrap().count,
            0
        );

        f.limiter
            .block("3.3.3.3", Duration::from_millis(1500), "manual")
            .await
            .unwrap();
        let blocks = f.limiter.blocks().await.unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].reason, "manual");
        assert!(matches!(
            check(&f, &r, "3.3.3.3").await,
            Verdict::Blocked { retry_after_s: 2 }
        ));
        let by_path = Policy {
            key: vec![KeyPart::Path],
            index: 1,
            ..Policy::new("by_path", Algorithm::FixedWindow, 1, Duration::from_secs(1))
        };
        assert!(matches!(
            f.limiter.limit_status(&by_path, "1.1.1.1").await,
            Err(LimiterError::Key(_))
        ));
    }
}
