//! A circuit breaker in front of a remote store: after a few consecutive failures (or at once when
//! the connection is known to be down) requests stop waiting on it and `on_error` applies; one
//! probe at a time is let through after a short pause, and the first success closes it again.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Consecutive failures that open the breaker.
const FAILURES_TO_OPEN: u32 = 3;
/// First pause before probing; doubles while probes fail, up to `MAX_OPEN`.
const MIN_OPEN: Duration = Duration::from_millis(250);
const MAX_OPEN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        pause: Duration,
    },
    /// One probe is in flight since `since`.
    HalfOpen {
        since: Instant,
        pause: Duration,
    },
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Call the store.
    Call,
    /// Don't: the store is considered down.
    Reject,
}

/// A change worth telling operators about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Opened,
    Closed,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
    /// A probe that takes longer than this is presumed lost and another may start.
    probe_timeout: Duration,
}

impl Breaker {
    pub(crate) fn new(call_timeout: Duration) -> Self {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            probe_timeout: call_timeout
                .saturating_mul(2)
                .max(Duration::from_millis(100)),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        !matches!(*self.state.lock(), State::Closed { .. })
    }

    pub(crate) fn permit(&self) -> Permit {
        self.permit_at(Instant::now())
    }

    // Time is a parameter so the tests step it instead of sleeping (sleeps made them flaky on a
    // loaded machine).
    fn permit_at(&self, now: Instant) -> Permit {
        let mut state = self.state.lock();
        match *state {
            State::Closed { .. } => Permit::Call,
            State::Open { until, pause } if now >= until => {
                *state = State::HalfOpen { since: now, pause };
                Permit::Call
            }
            State::HalfOpen { since, pause } if now.duration_since(since) > self.probe_timeout => {
                *state = State::HalfOpen { since: now, pause };
                Permit::Call
            }
            _ => Permit::Reject,
        }
    }

    pub(crate) fn on_success(&self) -> Option<Transition> {
        let mut state = self.state.lock();
        let was_open = !matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        was_open.then_some(Transition::Closed)
    }

    /// Record a failure; `down` means the store is known to be unreachable (no connection), which
    /// opens at once instead of after several timeouts.
    pub(crate) fn on_failure(&self, down: bool) -> Option<Transition> {
        self.on_failure_at(down, Instant::now())
    }

    fn on_failure_at(&self, down: bool, now: Instant) -> Option<Transition> {
        let mut state = self.state.lock();
        match *state {
            State::Closed { failures } => {
                let failures = failures + 1;
                if down || failures >= FAILURES_TO_OPEN {
                    *state = State::Open {
                        until: now + MIN_OPEN,
                        pause: MIN_OPEN,
                    };
                    Some(Transition::Opened)
                } else {
                    *state = State::Closed { failures };
                    None
                }
            }
            State::HalfOpen { pause, .. } | State::Open { pause, .. } => {
                let pause = (pause * 2).min(MAX_OPEN);
                *state = State::Open {
                    until: now + pause,
                    pause,
                };
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(20);

    #[test]
    fn opens_after_consecutive_failures_and_probes_later() {
        let b = Breaker::new(Duration::from_millis(50));
        let t0 = Instant::now();
        assert_eq!(b.on_failure_at(false, t0), None);
        assert_eq!(b.on_failure_at(false, t0), None);
        assert_eq!(b.on_success(), None);
        assert_eq!(b.on_failure_at(false, t0), None);
        assert_eq!(b.on_failure_at(false, t0), None);
        assert_eq!(b.on_failure_at(false, t0), Some(Transition::Opened));
        assert_eq!(b.permit_at(t0 + MIN_OPEN - STEP), Permit::Reject);
        // Exactly one probe.
        let t1 = t0 + MIN_OPEN + STEP;
        assert_eq!(b.permit_at(t1), Permit::Call);
        assert_eq!(b.permit_at(t1), Permit::Reject);
        assert_eq!(b.on_success(), Some(Transition::Closed));
        assert_eq!(b.permit_at(t1), Permit::Call);
    }

    #[test]
    fn known_down_opens_at_once_and_failed_probe_backs_off() {
        let b = Breaker::new(Duration::from_millis(50));
        let t0 = Instant::now();
        assert_eq!(b.on_failure_at(true, t0), Some(Transition::Opened));
        let t1 = t0 + MIN_OPEN + STEP;
        assert_eq!(b.permit_at(t1), Permit::Call);
        assert_eq!(b.on_failure_at(false, t1), None);
        // Paused longer now: twice the first pause.
        assert_eq!(b.permit_at(t1 + MIN_OPEN + STEP), Permit::Reject);
        assert!(b.is_open());
        assert_eq!(b.permit_at(t1 + 2 * MIN_OPEN + STEP), Permit::Call);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_probe_timeout() {
        let b = Breaker::new(Duration::from_millis(50));
        let t0 = Instant::now();
        b.on_failure_at(true, t0);
        let t1 = t0 + MIN_OPEN + STEP;
        assert_eq!(b.permit_at(t1), Permit::Call);
        assert_eq!(b.permit_at(t1 + b.probe_timeout), Permit::Reject);
        assert_eq!(b.permit_at(t1 + b.probe_timeout + STEP), Permit::Call);
    }
}
