//! What an admitted request still owes the store after the decision, all of it off the request's
//! critical path:
//!
//! - count-by-response policies are charged once the response status is known
//!   ([`Admission::respond`]), in a spawned store call that never delays the response;
//! - concurrency leases are renewed while the request runs and released when it ends: when the
//!   response body finishes, or whenever the request is dropped (client gone, error, shutdown).
//!   Release is a `Drop`, so no path can forget it; a crashed instance's leases expire instead.
//!
//! Everything goes to the store that made the decision (the configured one, or the in-process
//! fallback while it failed). A failed charge or release is logged and counted, never retried:
//! a lost charge errs towards the client, a lost release is reclaimed when the lease expires.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::config::compiled::{Algorithm, Policy};
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

    /// A Redis store known to be disconnected is not waited on: the call would only time out.
    fn reachable(&self) -> bool {
        match self {
            StoreRef::Primary(s) => match &**s {
                AnyStore::Redis(r) => r.is_connected(),
                AnyStore::Memory(_) => true,
            },
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
    pub policy: Arc<Policy>,
    pub key: Box<str>,
    /// The tier override the decision used.
    pub limit: Option<u64>,
}

impl Held {
    fn check(&self) -> PolicyCheck<'_> {
        PolicyCheck::new(&self.policy, &self.key).with_limit(self.limit)
    }
}

fn checks(held: &[Held]) -> Vec<PolicyCheck<'_>> {
    held.iter().map(Held::check).collect()
}

/// Where off-path calls go and where their failures are counted.
#[derive(Clone)]
pub(super) struct Settler {
    pub store: StoreRef,
    pub metrics: Arc<Metrics>,
}

impl Settler {
    fn failed(&self, what: &'static str, e: &StoreError) {
        tracing::debug!(store = self.store.name(), error = %e, what, "off-path store call failed");
        self.metrics
            .store_errors
            .with_label_values(&[self.store.name(), e.kind()])
            .inc();
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

    /// The upstream (or the route's `respond`) answered `status`: charge the count-by-response
    /// policies it matches, in the background. Returns the lease to release when the response
    /// body ends (dropping it releases).
    pub fn respond(mut self, status: u16) -> Option<LeaseGuard> {
        let owed: Vec<Held> = std::mem::take(&mut self.deferred)
            .into_iter()
            .filter(|h| h.policy.count.matches(status))
            .collect();
        if !owed.is_empty() && self.settler.store.reachable() {
            let settler = self.settler.clone();
            let cost = self.cost;
            spawn(async move {
                if let Err(e) = settler.store.charge(&checks(&owed), cost).await {
                    settler.failed("charge", &e);
                }
            });
        }
        self.lease.take()
    }
}

/// A concurrency lease held by a request in flight: renewed in the background until dropped,
/// released on drop (or earlier by [`LeaseGuard::release`]).
pub struct LeaseGuard {
    inner: Option<Arc<Lease>>,
    renewer: Option<AbortHandle>,
}

struct Lease {
    settler: Settler,
    id: String,
    held: Vec<Held>,
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
        let renewer = spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let l = &renewing;
                if !l.settler.store.reachable() {
                    continue;
                }
                match l.settler.store.renew(&l.id, &checks(&l.held)).await {
                    // Reclaimed (e.g. the store was unreachable past the lease): nothing left to
                    // renew; the request finishes without its slot.
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => l.settler.failed("renew", &e),
                }
            }
        });
        LeaseGuard {
            inner: Some(lease),
            renewer,
        }
    }

    /// Release now (the response body ended). Dropping does the same.
    pub fn release(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let Some(lease) = self.inner.take() else {
            return;
        };
        spawn(async move {
            if !lease.settler.store.reachable() {
                return;
            }
            let held: Vec<&Held> = lease
                .held
                .iter()
                .filter(|h| h.policy.algorithm == Algorithm::Concurrency)
                .collect();
            let checks: Vec<PolicyCheck<'_>> = held.iter().map(|h| h.check()).collect();
            if let Err(e) = lease.settler.store.release(&lease.id, &checks).await {
                lease.settler.failed("release", &e);
            }
        });
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// Spawn on the current runtime; outside one (a drop during runtime shutdown) there is nothing
/// to run on, and the store's expiry takes care of what is left.
fn spawn<F>(fut: F) -> Option<AbortHandle>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::runtime::Handle::try_current()
        .ok()
        .map(|h| h.spawn(fut).abort_handle())
}
