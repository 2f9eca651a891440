//! One target's state, shared by every worker and kept across reloads while the target stays in
//! the config: requests in flight (for `least_requests`), passive health (ejection after
//! consecutive failures, for a time that grows with each ejection in a row) and the verdict of
//! active health checks. Atomics only: the request path never takes a lock here.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};

use crate::config::compiled::Outlier;
use crate::metrics::Metrics;

pub(crate) struct TargetState {
    pub(super) upstream: Arc<str>,
    pub(super) label: Arc<str>,
    /// Fixed per label, for `hash_client`'s rendezvous hashing.
    pub(super) hash: u64,
    in_flight: AtomicU32,
    /// Connect failures and timeouts in a row; a success resets it.
    failures: AtomicU32,
    /// Ejections in a row (the backoff multiplier); a success resets it.
    ejections: AtomicU32,
    /// Milliseconds since `Clock::epoch` until which the target is ejected (0: never was).
    ejected_until: AtomicU64,
    /// Active health checks took the target out.
    check_down: AtomicBool,
    /// Passes (positive) or failures (negative) of active checks in a row; the checker only.
    pub(super) check_streak: AtomicI64,
    /// When the next active check is due (ms since the epoch); the checker only.
    pub(super) check_due: AtomicU64,
    /// A check of this target is running (at most one at a time).
    pub(super) checking: AtomicBool,
    requests: IntCounter,
    errors: IntCounter,
    ejected: IntGauge,
}

/// Milliseconds on one monotonic clock shared by every target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            // 1 ms in the past, so "now" is never 0 (0 means "never ejected").
            epoch: Instant::now()
                .checked_sub(Duration::from_millis(1))
                .unwrap_or_else(Instant::now),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        crate::millis::floor(self.epoch.elapsed())
    }
}

impl TargetState {
    pub(super) fn new(metrics: &Metrics, upstream: &Arc<str>, label: &Arc<str>) -> Self {
        let labels = [&**upstream, &**label];
        let ejected = metrics.target_ejected.with_label_values(&labels);
        ejected.set(0);
        TargetState {
            upstream: upstream.clone(),
            label: label.clone(),
            hash: stable_hash(label.as_bytes()),
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            check_down: AtomicBool::new(false),
            check_streak: AtomicI64::new(0),
            check_due: AtomicU64::new(0),
            checking: AtomicBool::new(false),
            requests: metrics.target_requests.with_label_values(&labels),
            errors: metrics.target_errors.with_label_values(&labels),
            ejected,
        }
    }

    /// In the balance: not ejected and not failing its active checks.
    pub(super) fn available(&self, now_ms: u64) -> bool {
        !self.check_down.load(Ordering::Relaxed)
            && self.ejected_until.load(Ordering::Relaxed) <= now_ms
    }

    pub(super) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Count a request on its way to this target; the guard counts it out again when dropped,
    /// and counts it as sent unless the ceiling refused it ([`InFlight::refused`]): a request
    /// whose client left mid-send was sent all the same.
    pub(super) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            target: self.clone(),
            refused: false,
        }
    }

    /// The target answered: its failure streak ends.
    pub(super) fn succeeded(&self) {
        // Read first: most requests succeed, and a load does not dirty the cache line.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A connect failure or timeout. The `consecutive_failures`-th in a row ejects the target
    /// for `base_ejection_time` times the ejections in a row, at most `max_ejection_time`. The
    /// streak is not reset when an ejection ends, so a target that fails again at once (nginx's
    /// one probe after `fail_timeout`) goes straight back out, for longer.
    pub(super) fn failed(&self, outlier: &Outlier, now_ms: u64) {
        self.errors.inc();
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures < outlier.consecutive_failures
            || self.ejected_until.load(Ordering::Relaxed) > now_ms
        {
            return;
        }
        let n = self
            .ejections
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let length = outlier
            .base_ejection_time
            .saturating_mul(n)
            .min(outlier.max_ejection_time);
        self.ejected_until.store(
            now_ms.saturating_add(crate::millis::ceil(length)),
            Ordering::Relaxed,
        );
        self.ejected.set(1);
        tracing::warn!(
            upstream = &*self.upstream,
            target = &*self.label,
            failures,
            ejection = n,
            seconds = length.as_secs_f64(),
            "upstream target ejected"
        );
    }

    /// The active checks' verdict changed.
    pub(super) fn set_check_down(&self, down: bool) {
        self.check_down.store(down, Ordering::Relaxed);
        if !down {
            // A readmitted target starts afresh, like a passive ejection that ended with success.
            self.failures.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
        tracing::warn!(
            upstream = &*self.upstream,
            target = &*self.label,
            healthy = !down,
            "upstream target health check verdict changed"
        );
    }

    pub(super) fn check_down(&self) -> bool {
        self.check_down.load(Ordering::Relaxed)
    }

    /// Bring the ejected gauge up to date (an ejection ends by time, with nobody to tell).
    pub(super) fn refresh_gauge(&self, now_ms: u64) {
        self.ejected.set(i64::from(!self.available(now_ms)));
    }

    /// Remove this target's series (it left the config).
    pub(super) fn forget_metrics(&self, metrics: &Metrics) {
        let labels = [&*self.upstream, &*self.label];
        // Absent series are not an error worth reporting.
        let _ = metrics.target_requests.remove_label_values(&labels);
        let _ = metrics.target_errors.remove_label_values(&labels);
        let _ = metrics.target_ejected.remove_label_values(&labels);
    }
}

/// A request in flight to a target.
pub(crate) struct InFlight {
    target: Arc<TargetState>,
    refused: bool,
}

impl InFlight {
    /// The upstream connection ceiling refused the attempt: nothing went to the target.
    pub(super) fn refused(&mut self) {
        self.refused = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.target.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.refused {
            self.target.requests.inc();
        }
    }
}

/// FNV-1a: fixed, so a client maps to the same target in every worker and after a restart.
pub(super) fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A strong 64-bit mix (splitmix64's finalizer) of a client's hash with a target's.
pub(super) fn mix(client: u64, target: u64) -> u64 {
    let mut z = client ^ target.rotate_left(29);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
