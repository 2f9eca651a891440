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
pub enum Permit {
    /// Call the store.
    Call,
    /// Don't: the store is considered down.
    Reject,
}

/// A change worth telling operators about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    /// A probe that takes longer than this is presumed lost and another may start.
    probe_timeout: Duration,
}

impl Breaker {
    pub fn new(call_timeout: Duration) -> Self {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            probe_timeout: call_timeout
                .saturating_mul(2)
                .max(Duration::from_millis(100)),
        }
    }

    pub fn is_open(&self) -> bool {
        !matches!(*self.state.lock(), State::Closed { .. })
    }

    pub fn permit(&self) -> Permit {
        let now = Instant::now();
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

    pub fn on_success(&self) -> Option<Transition> {
        let mut state = self.state.lock();
        let was_open = !matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        was_open.then_some(Transition::Closed)
    }

    /// Record a failure; `down` means the store is known to be unreachable (no connection), which
    /// opens at once instead of after several timeouts.
    pub fn on_failure(&self, down: bool) -> Option<Transition> {
        let now = Instant::now();
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

    #[test]
    fn opens_after_consecutive_failures_and_probes_later() {
        let b = Breaker::new(Duration::from_millis(50));
        assert_eq!(b.on_failure(false), None);
        assert_eq!(b.on_failure(false), None);
        assert_eq!(b.on_success(), None);
        assert_eq!(b.on_failure(false), None);
        assert_eq!(b.on_failure(false), None);
        assert_eq!(b.on_failure(false), Some(Transition::Opened));
        assert_eq!(b.permit(), Permit::Reject);
        std::thread::sleep(MIN_OPEN + Duration::from_millis(20));
        // Exactly one probe.
        assert_eq!(b.permit(), Permit::Call);
        assert_eq!(b.permit(), Permit::Reject);
        assert_eq!(b.on_success(), Some(Transition::Closed));
        assert_eq!(b.permit(), Permit::Call);
    }

    #[test]
    fn known_down_opens_at_once_and_failed_probe_backs_off() {
        let b = Breaker::new(Duration::from_millis(50));
        assert_eq!(b.on_failure(true), Some(Transition::Opened));
        std::thread::sleep(MIN_OPEN + Duration::from_millis(20));
        assert_eq!(b.permit(), Permit::Call);
        assert_eq!(b.on_failure(false), None);
        // Paused longer now.
        std::thread::sleep(MIN_OPEN + Duration::from_millis(20));
        assert_eq!(b.permit(), Permit::Reject);
        assert!(b.is_open());
    }
}
