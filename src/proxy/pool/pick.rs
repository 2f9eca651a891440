//! Choosing one target of an upstream for a request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::health::{mix, TargetState};
use crate::config::compiled::{Balance, Upstream, UpstreamTarget};

/// The targets of one upstream as one config has them, a name resolved to one target per
/// address (`resolve`): `targets[i]` is the state of `endpoints[i]`.
pub(crate) struct Group {
    pub(super) targets: Vec<Arc<TargetState>>,
    pub(super) endpoints: Vec<UpstreamTarget>,
    /// What the group was built from: reused only for this upstream (the same config).
    pub(super) upstream: Arc<Upstream>,
    /// Round-robin turns (also the tie-breaker of `least_requests`), shared by the workers.
    turn: AtomicUsize,
}

impl Group {
    /// `previous`: the upstream's group before (a reload, a name's new addresses), whose turn
    /// goes on.
    pub(super) fn new(
        upstream: Arc<Upstream>,
        targets: Vec<Arc<TargetState>>,
        endpoints: Vec<UpstreamTarget>,
        previous: Option<&Group>,
    ) -> Self {
        Group {
            targets,
            endpoints,
            upstream,
            turn: AtomicUsize::new(previous.map_or(0, |g| g.turn.load(Ordering::Relaxed))),
        }
    }

    /// Whether this group is `upstream`'s with exactly these targets, in this order.
    pub(super) fn is_for(&self, upstream: &Arc<Upstream>, endpoints: &[UpstreamTarget]) -> bool {
        Arc::ptr_eq(&self.upstream, upstream)
            && endpoints.len() == self.targets.len()
            && self
                .targets
                .iter()
                .zip(endpoints)
                .all(|(t, e)| t.label == e.label)
    }

    /// The target for a request (`client`: its client key's hash, for `hash_client`), never
    /// `exclude` (the target a retry leaves) unless it is the only one.
    ///
    /// Targets out of the balance (ejected, failing their health checks) are skipped; when every
    /// candidate is out, all are candidates again (Envoy's panic mode): a guess at a target that
    /// may have come back beats refusing every request until an ejection ends, and a refused
    /// connect is cheap and retried on another target anyway.
    pub(super) fn pick(
        &self,
        balance: Balance,
        client: u64,
        exclude: Option<usize>,
        now_ms: u64,
    ) -> usize {
        let n = self.targets.len();
        if n <= 1 {
            return 0;
        }
        let allowed = |i: usize| Some(i) != exclude;
        let panic = !(0..n).any(|i| allowed(i) && self.targets[i].available(now_ms));
        let candidate = |i: &usize| allowed(*i) && (panic || self.targets[*i].available(now_ms));
        let chosen = match balance {
            Balance::RoundRobin => {
                // The turn indexes the candidates, not all targets: an ejected target's share is
                // spread evenly over the others rather than all handed to its neighbour.
                let count = (0..n).filter(candidate).count().max(1);
                let turn = self.turn.fetch_add(1, Ordering::Relaxed) % count;
                (0..n).filter(candidate).nth(turn)
            }
            Balance::LeastRequests => {
                // Ties go to whoever's turn it is, so idle targets share the load in turn.
                let start = self.turn.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|j| (start.wrapping_add(j)) % n)
                    .filter(candidate)
                    .min_by_key(|&i| self.targets[i].in_flight())
            }
            // Rendezvous hashing: each client ranks the targets by a hash of the pair and takes
            // the best candidate, so a target leaving moves only the clients it had.
            Balance::HashClient => (0..n)
                .filter(candidate)
                .max_by_key(|&i| mix(client, self.targets[i].hash)),
        };
        chosen.unwrap_or(0)
    }
}
