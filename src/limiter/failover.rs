//! What happens when the store fails: the circuit breaker in front of a remote store and the
//! background probe that drives it, `store.on_error` (allow, deny, or decide in the in-process
//! fallback store), store error metrics, readiness, and the logs and alerts of the store's
//! transitions between failing and answering. Every store call on the request path goes through
//! [`Failover::call`]; the decision itself (keys, shadow, reporting) is the limiter's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::Histogram;

use crate::alerts::{Alert, Alerter};
use crate::clock::Clock;
use crate::config::compiled::{OnError, StoreSettings};
use crate::metrics::Metrics;
use crate::store::memory::Evictions;
use crate::store::{
    AnyStore, CheckOutcome, CheckRequest, CheckResult, MemoryStore, Store, StoreError,
};

use super::breaker::{Breaker, Permit, Transition};
use super::{retry_secs, Limiter, Verdict};

/// How often a remote store is probed in the background (see [`Failover::probe`]).
const STORE_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// A store call that failed, and whether it may have reached the store (and run there) anyway.
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) error: StoreError,
    pub(super) sent: bool,
}

/// The configured store behind its failure handling.
pub(super) struct Failover {
    /// Shared with the admissions of requests in flight (their charges and releases).
    store: Arc<AnyStore>,
    /// Only for a remote store: stops waiting on it when it is down.
    breaker: Option<Breaker>,
    /// In-process limits used while the store fails and `on_error = "fallback"`.
    fallback: Arc<MemoryStore>,
    on_error: OnError,
    metrics: Arc<Metrics>,
    store_duration: Histogram,
    fallback_duration: Histogram,
    /// Whether the last store call failed; its transitions raise the fallback/recovered alerts.
    failing: AtomicBool,
    alerts: Alerter,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("store", &self.store)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl Failover {
    /// `store` guarded per `settings` (`on_error`, the breaker's timeout, the fallback's size),
    /// with the fallback store on `clock`.
    pub(super) fn new(
        store: AnyStore,
        settings: &StoreSettings,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // Label handles resolved once; store names are a fixed vocabulary.
        let store_duration = metrics.store_duration.with_label_values(&[store.name()]);
        let mut fallback = MemoryStore::new(settings.max_memory_keys, clock)
            .with_evictions(Evictions::new(&metrics.store_evictions, "fallback"));
        // What the store revoked stays revoked while the fallback decides.
        if let Some(revocations) = store.fallback_revocations() {
            revocations.count_in(metrics.store_fallback_revocations.clone());
            fallback = fallback.with_revocations(revocations);
        }
        let fallback_duration = metrics.store_duration.with_label_values(&[fallback.name()]);
        Failover {
            breaker: store.is_remote().then(|| Breaker::new(settings.timeout)),
            store: Arc::new(store),
            fallback: Arc::new(fallback),
            on_error: settings.on_error,
            metrics,
            store_duration,
            fallback_duration,
            failing: AtomicBool::new(false),
            alerts: Alerter::disabled(),
        }
    }

    /// The configured store.
    pub(super) fn store(&self) -> &Arc<AnyStore> {
        &self.store
    }

    /// The in-process store that decides while the configured one fails (`on_error =
    /// "fallback"`); it may hold blocks and counters of its own.
    pub(super) fn fallback(&self) -> &Arc<MemoryStore> {
        &self.fallback
    }

    /// Whether the last call to the configured store failed.
    fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Whether the configured store can decide requests now: for a remote store, its breaker is
    /// closed (it follows the background probe, see [`Failover::probe`], so this changes
    /// without traffic); for the in-process store, its last call succeeded.
    fn ready(&self) -> bool {
        match &self.breaker {
            Some(breaker) => !breaker.is_open(),
            None => !self.failing(),
        }
    }

    /// Record whether the store answered. Only a change of state alerts, so a dead store raises
    /// one alert, not one per request. With a breaker, only its transitions (opened, closed) are
    /// reported here.
    fn health(&self, result: Result<(), &StoreError>) {
        let failing = result.is_err();
        // A load first: the common case (no change) stays a shared read of the cache line.
        if self.failing.load(Ordering::Relaxed) == failing
            || self.failing.swap(failing, Ordering::AcqRel) == failing
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

    /// One store call, through the breaker when the store is remote. Errors are recorded here.
    pub(super) async fn call(&self, request: &CheckRequest<'_>) -> Result<CheckResult, Failed> {
        let Some(breaker) = &self.breaker else {
            let result = timed(&self.store_duration, self.store.check(request)).await;
            match &result {
                Ok(_) if self.on_error == OnError::Fallback => {
                    self.metrics.store_fallback_active.set(0)
                }
                Ok(_) => {}
                Err(e) => self.record_error(self.store.name(), e),
            }
            // Without a breaker every call is a state of its own; `health` alerts on changes.
            self.health(result.as_ref().map(|_| ()));
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
        let down = !self.store.is_connected();
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

    /// The verdict for a request the store could not decide (it failed with `error`), per
    /// `on_error`; with `fallback`, the fallback store's answer goes through `decide`.
    pub(super) async fn answer_failed(
        &self,
        request: &CheckRequest<'_>,
        error: StoreError,
        decide: impl FnOnce(CheckResult) -> Result<Verdict, StoreError>,
    ) -> Verdict {
        match self.on_error {
            OnError::Allow => Verdict::Unlimited,
            OnError::Deny => Verdict::Unavailable { retry_after_s: 1 },
            OnError::Fallback if self.revocations_unknown(request) => {
                Verdict::Unavailable { retry_after_s: 1 }
            }
            OnError::Fallback => {
                if self.breaker.is_none() {
                    // The memory store itself failed (full); its fallback is another of the same.
                    self.metrics.store_fallback_active.set(1);
                }
                let fallback = timed(&self.fallback_duration, self.fallback.check(request))
                    .await
                    .and_then(decide);
                fallback.unwrap_or_else(|e| {
                    // The fallback evicts rather than fill up, so this is a caller bug or a
                    // degenerate store; either way nothing vouches for the request, and only
                    // `on_error = "allow"` lets a request through unchecked.
                    tracing::warn!(error = %error, fallback_error = %e, "fallback store failed");
                    self.record_error(self.fallback.name(), &e);
                    Verdict::Unavailable { retry_after_s: 1 }
                })
            }
        }
    }

    /// The verdict on a route without policies when the store failed: nothing can be enforced
    /// there, so the request goes through whatever `on_error` says (availability wins on routes
    /// the operator chose not to limit), except that with `fallback` a client the fallback
    /// store blocked during the outage stays blocked. A request with a verified token is the
    /// exception under `deny`: its revocation could not be checked, so it is refused (503) like
    /// a limited route's request; under `fallback` a token the fallback store knows to be
    /// revoked is refused (401).
    pub(super) async fn answer_failed_block_only(&self, request: &CheckRequest<'_>) -> Verdict {
        match self.on_error {
            OnError::Deny if request.token.is_some() => {
                return Verdict::Unavailable { retry_after_s: 1 }
            }
            OnError::Fallback if self.revocations_unknown(request) => {
                return Verdict::Unavailable { retry_after_s: 1 }
            }
            OnError::Fallback => {}
            OnError::Allow | OnError::Deny => return Verdict::Unlimited,
        }
        match self.fallback.check(request).await {
            Ok(CheckResult {
                outcome: CheckOutcome::Blocked { ttl_ms },
                ..
            }) => Verdict::Blocked {
                retry_after_s: retry_secs(ttl_ms),
            },
            Ok(CheckResult {
                outcome: CheckOutcome::Revoked,
                ..
            }) => Verdict::Revoked,
            _ => Verdict::Unlimited,
        }
    }

    /// Whether `request` carries a token whose revocation the fallback cannot judge: its copy of
    /// the store's revocations was never loaded (an instance started while Redis was away).
    /// Such a request is refused (503) as under `deny`, never admitted unchecked.
    fn revocations_unknown(&self, request: &CheckRequest<'_>) -> bool {
        request.token.is_some() && !self.fallback.revocations_table().loaded()
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
                self.health(Err(e));
            }
            (Some(Transition::Closed), _) => {
                tracing::info!(store = self.store.name(), "store answering again");
                self.metrics.store_fallback_active.set(0);
                self.health(Ok(()));
            }
            _ => {}
        }
    }

    /// Probe a remote store once, outside any request: a PING (never counted in the store
    /// request metrics) whose outcome drives the breaker like a request's would. This is what
    /// takes the breaker back to a store that answers again, and what readiness follows, without
    /// waiting for traffic. Without a remote store there is nothing to probe.
    async fn probe(&self) {
        let Some(breaker) = &self.breaker else {
            return;
        };
        let result = self.store.probe().await;
        let transition = match &result {
            Ok(()) => breaker.on_success(),
            Err(e) => {
                tracing::debug!(error = %e, "store probe failed");
                breaker.on_failure(!self.store.is_connected())
            }
        };
        self.breaker_moved(transition, result.as_ref().map(|_| ()));
    }

    fn record_error(&self, store: &'static str, e: &StoreError) {
        tracing::debug!(store, error = %e, "store call failed");
        self.metrics
            .store_errors
            .with_label_values(&[store, e.kind()])
            .inc();
    }
}

/// Store health as the rest of the gateway sees it: readiness, `on_error`, the probe, alerts.
impl Limiter {
    /// Whether the configured store can decide requests now (see [`Failover::ready`]).
    pub(crate) fn store_ready(&self) -> bool {
        self.failover.ready()
    }

    /// What this limiter does while the store fails.
    pub(crate) fn on_error(&self) -> OnError {
        self.failover.on_error
    }

    /// Raise alerts through `alerts` when the store starts or stops failing.
    pub(crate) fn with_alerts(mut self, alerts: Alerter) -> Self {
        self.failover.alerts = alerts;
        self
    }

    /// Probe a remote store once (see [`Failover::probe`]).
    pub(crate) async fn probe_store(&self) {
        self.failover.probe().await;
    }

    /// [`Limiter::probe_store`] every [`STORE_PROBE_INTERVAL`], for ever.
    pub(crate) async fn probe_store_forever(self: Arc<Self>) {
        if self.failover.breaker.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(STORE_PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.probe_store().await;
        }
    }
}

async fn timed<T>(histogram: &Histogram, fut: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let out = fut.await;
    histogram.observe(start.elapsed().as_secs_f64());
    out
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Method};

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::compiled::{Algorithm, Mode, Policy, Route, StoreKind};
    use crate::limiter::fixture::*;
    use crate::limiter::{RequestView, Verdict};
    use crate::store::RedisStore;

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
            query: None,
            headers: &headers,
            cost: 1,
            identity: Default::default(),
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
}
