//! What an admitted request still owes the store after the decision:
//!
//! - count-by-response policies are charged the request's cost when the response status matches
//!   ([`Admission::respond`] says what is owed);
//! - concurrency leases are renewed in the background while the request runs, and released when
//!   it ends.
//!
//! Both are settled in one spawned task ([`Owed::settle`]) that the response body waits for
//! before its last frame (see `proxy::body`): a client that has the whole response has had it
//! counted and its slot freed, so its next request can never meet its own previous one. A
//! request that ends otherwise (client gone, upstream failed, cut at shutdown) settles from a
//! `Drop`, so no path can forget it. Every settlement is counted in [`Settlements`] while it
//! runs, and shutdown waits for them (bounded) before the process exits; a crashed instance's
//! leases expire instead.
//!
//! A check that failed after it was sent may still take its lease when the store runs it late;
//! that lease is released the same way ([`release_now`]).
//!
//! Everything goes to the store that made the decision (the configured one, or the in-process
//! fallback while it failed). A failed charge or release is logged and counted, never retried:
//! a lost charge errs towards the client, a lost release is reclaimed when the lease expires.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};

use crate::config::compiled::{Algorithm, Policy};
use crate::inflight::InFlight;
use crate::metrics::Metrics;
use crate::store::{AnyStore, MemoryStore, PolicyCheck, Store, StoreError};

/// The store that decided a request.
#[derive(Clone)]
pub(super) enum StoreRef {
    Primary(Arc<AnyStore>),
    Fallback(Arc<MemoryStore>),
}

impl StoreRef {
    fn name(&self) -> &'static str {
        match self {
            StoreRef::Primary(s) => s.name(),
            StoreRef::Fallback(s) => s.name(),
        }
    }

    /// A remote store known to be disconnected is not waited on: the call would only time out.
    fn reachable(&self) -> bool {
        match self {
            StoreRef::Primary(s) => s.is_connected(),
            StoreRef::Fallback(_) => true,
        }
    }

    async fn charge(&self, checks: &[PolicyCheck<'_>], cost: u64) -> Result<(), StoreError> {
        match self {
            StoreRef::Primary(s) => s.charge(checks, cost).await,
            StoreRef::Fallback(s) => s.charge(checks, cost).await,
        }
    }

    async fn renew(&self, lease: &str, checks: &[PolicyCheck<'_>]) -> Result<u64, StoreError> {
        match self {
            StoreRef::Primary(s) => s.renew(lease, checks).await,
            StoreRef::Fallback(s) => s.renew(lease, checks).await,
        }
    }

    async fn release(&self, lease: &str, checks: &[PolicyCheck<'_>]) -> Result<(), StoreError> {
        match self {
            StoreRef::Primary(s) => s.release(lease, checks).await,
            StoreRef::Fallback(s) => s.release(lease, checks).await,
        }
    }
}

/// One policy's counter, owned (the request's key buffer is gone by the time it is used).
pub(super) struct Held {
    pub(crate) policy: Arc<Policy>,
    pub(crate) key: Box<str>,
    /// The tier override the decision used.
    pub(crate) limit: Option<u64>,
}

impl Held {
    fn check(&self) -> PolicyCheck<'_> {
        PolicyCheck::new(&self.policy, &self.key).with_limit(self.limit)
    }
}

fn checks(held: &[Held]) -> Vec<PolicyCheck<'_>> {
    held.iter().map(Held::check).collect()
}

/// The settlements in flight (charges and releases spawned but not yet answered), and how many
/// could not reach the store: what shutdown waits for and reports.
#[derive(Debug, Default)]
pub(crate) struct Settlements {
    in_flight: Arc<InFlight>,
    failed: AtomicU64,
    /// `failed` when the drain started.
    failed_before_drain: AtomicU64,
}

impl Settlements {
    /// Settlements spawned and not finished.
    pub(crate) fn pending(&self) -> usize {
        self.in_flight.count()
    }

    /// Remember where the failure count stands, so `failed_since_drain` counts the drain only.
    pub(crate) fn begin_drain(&self) {
        self.failed_before_drain
            .store(self.failed.load(Ordering::Acquire), Ordering::Release);
    }

    /// Settlements that could not reach the store since `begin_drain`.
    pub(crate) fn failed_since_drain(&self) -> u64 {
        self.failed
            .load(Ordering::Acquire)
            .saturating_sub(self.failed_before_drain.load(Ordering::Acquire))
    }

    /// Wait until every settlement spawned so far has finished, for at most `deadline`; false if
    /// some are still pending then.
    pub(crate) async fn flush(&self, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, self.in_flight.idle())
            .await
            .is_ok()
    }

    fn lost(&self) {
        self.failed.fetch_add(1, Ordering::AcqRel);
    }
}

/// Where off-path calls go and where their failures are counted.
#[derive(Clone)]
pub(super) struct Settler {
    pub(crate) store: StoreRef,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) settlements: Arc<Settlements>,
}

impl Settler {
    fn failed(&self, what: &'static str, e: &StoreError) {
        tracing::debug!(store = self.store.name(), error = %e, what, "off-path store call failed");
        self.metrics
            .store_errors
            .with_label_values(&[self.store.name(), e.kind()])
            .inc();
        if what != "renew" {
            self.settlements.lost();
        }
    }
}

/// The settlement an admitted request owes: deferred charges and its concurrency lease.
pub struct Admission {
    settler: Settler,
    cost: u64,
    /// Count-by-response policies that admitted the request.
    deferred: Vec<Held>,
    lease: Option<LeaseGuard>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("deferred", &self.deferred.len())
            .field("lease", &self.lease.is_some())
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// `None` when there is nothing to settle. Starts renewing the lease at once.
    pub(super) fn new(
        settler: Settler,
        cost: u64,
        deferred: Vec<Held>,
        lease: Option<(String, Vec<Held>)>,
    ) -> Option<Self> {
        let lease = lease
            .filter(|(_, held)| !held.is_empty())
            .map(|(id, held)| LeaseGuard::start(settler.clone(), id, held));
        if deferred.is_empty() && lease.is_none() {
            return None;
        }
        Some(Admission {
            settler,
            cost,
            deferred,
            lease,
        })
    }

    /// The upstream (or the route's `respond`) answered `status`: what the request now owes,
    /// the charges of the count-by-response policies it matches and its lease, to settle when
    /// the response ends. `None` when nothing is owed. Dropped unanswered, an admission only
    /// releases its lease.
    pub(crate) fn respond(mut self, status: u16) -> Option<Owed> {
        let charges: Vec<Held> = std::mem::take(&mut self.deferred)
            .into_iter()
            .filter(|h| h.policy.count.matches(status))
            .collect();
        let lease = self.lease.take().and_then(|mut l| l.take());
        if charges.is_empty() && lease.is_none() {
            return None;
        }
        Some(Owed {
            settlement: Some(Settlement {
                settler: self.settler.clone(),
                cost: self.cost,
                charges,
                lease,
            }),
        })
    }
}

/// What an answered request owes the store. [`Owed::settle`] settles it now; dropping it
/// settles it in the background.
pub(crate) struct Owed {
    settlement: Option<Settlement>,
}

impl std::fmt::Debug for Owed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owed").finish_non_exhaustive()
    }
}

impl Owed {
    /// Start settling; the future resolves once the store has answered (or failed: a store call
    /// is bounded by the store's timeout). The settlement runs in a task of its own, so dropping
    /// the future (the connection is cut) does not cancel it.
    pub(crate) fn settle(mut self) -> Settling {
        Settling {
            task: self.settlement.take().and_then(Settlement::spawn),
        }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        if let Some(settlement) = self.settlement.take() {
            settlement.spawn();
        }
    }
}

/// A settlement under way (see [`Owed::settle`]).
#[derive(Debug)]
pub(crate) struct Settling {
    task: Option<JoinHandle<()>>,
}

impl Future for Settling {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(());
        };
        // A task that panicked or was cancelled (runtime shutting down) is done as well.
        let _ = std::task::ready!(Pin::new(task).poll(cx));
        self.task = None;
        Poll::Ready(())
    }
}

struct Settlement {
    settler: Settler,
    cost: u64,
    charges: Vec<Held>,
    lease: Option<Arc<Lease>>,
}

impl Settlement {
    /// Run on the current runtime, counted in flight until done. Outside a runtime (a drop during
    /// runtime shutdown) there is nothing to run on: it is lost, and counted so.
    fn spawn(self) -> Option<JoinHandle<()>> {
        let settlements = self.settler.settlements.clone();
        let entered = settlements.in_flight.enter();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no runtime left to settle a request on");
            settlements.lost();
            return None;
        };
        Some(runtime.spawn(async move {
            let _entered = entered;
            self.run().await;
        }))
    }

    async fn run(self) {
        let settler = &self.settler;
        // A Redis store known to be disconnected is not waited on: the call would only time out.
        if !settler.store.reachable() {
            settler.settlements.lost();
            return;
        }
        let charge = async {
            if self.charges.is_empty() {
                return;
            }
            if let Err(e) = settler
                .store
                .charge(&checks(&self.charges), self.cost)
                .await
            {
                settler.failed("charge", &e);
            }
        };
        let release = async {
            if let Some(lease) = &self.lease {
                lease.release().await;
            }
        };
        tokio::join!(charge, release);
    }
}

/// Release lease `id` on the concurrency counters of `held` in the background, as a settlement
/// (counted, flushed at shutdown, bounded by the store timeout): for a check that failed after it
/// was sent, which may still take the lease when the store runs it late.
pub(super) fn release_now(settler: Settler, id: String, held: Vec<Held>) {
    if held.is_empty() {
        return;
    }
    Settlement {
        settler: settler.clone(),
        cost: 0,
        charges: Vec::new(),
        lease: Some(Arc::new(Lease { settler, id, held })),
    }
    .spawn();
}

/// A concurrency lease held by a request in flight: renewed in the background until taken
/// (to be released with the rest of what the request owes) or dropped (released then).
struct LeaseGuard {
    inner: Option<Arc<Lease>>,
    renewer: Option<AbortHandle>,
}

struct Lease {
    settler: Settler,
    id: String,
    held: Vec<Held>,
}

impl Lease {
    async fn release(&self) {
        let held: Vec<&Held> = self
            .held
            .iter()
            .filter(|h| h.policy.algorithm == Algorithm::Concurrency)
            .collect();
        let checks: Vec<PolicyCheck<'_>> = held.iter().map(|h| h.check()).collect();
        if let Err(e) = self.settler.store.release(&self.id, &checks).await {
            self.settler.failed("release", &e);
        }
    }
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("held", &self.inner.is_some())
            .finish_non_exhaustive()
    }
}

impl LeaseGuard {
    fn start(settler: Settler, id: String, held: Vec<Held>) -> Self {
        // Renew at a third of the shortest lease: two renewals can fail before it expires.
        let every = held
            .iter()
            .map(|h| h.policy.window)
            .min()
            .unwrap_or(Duration::from_secs(60))
            .div_f64(3.0)
            .max(Duration::from_millis(100));
        let lease = Arc::new(Lease { settler, id, held });
        let renewing = lease.clone();
        // Not counted in flight: it never ends by itself, and is aborted when the lease is taken.
        let renewer = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let l = &renewing;
                    if !l.settler.store.reachable() {
                        continue;
                    }
                    match l.settler.store.renew(&l.id, &checks(&l.held)).await {
                        // Reclaimed (e.g. the store was unreachable past the lease): nothing left
                        // to renew; the request finishes without its slot.
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => l.settler.failed("renew", &e),
                    }
                }
            })
            .abort_handle()
        });
        LeaseGuard {
            inner: Some(lease),
            renewer,
        }
    }

    /// Stop renewing and hand over the lease for release.
    fn take(&mut self) -> Option<Arc<Lease>> {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        self.inner.take()
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(lease) = self.take() else { return };
        Settlement {
            settler: lease.settler.clone(),
            cost: 0,
            charges: Vec::new(),
            lease: Some(lease),
        }
        .spawn();
    }
}
