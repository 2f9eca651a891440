//! Store state alerts (fallback / recovered) are damped: a store flapping between failing and
//! answering would otherwise post an alert per transition. At most [`BURST`] store alerts go out
//! per [`HOLD`]; past that only the latest state is kept and posted once the hold ends, and only if
//! it differs from the last state posted. So the first outage and its recovery are reported at once,
//! a flapping store yields a few alerts a minute, and the final state is never lost.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Alert;

pub(crate) const HOLD: Duration = Duration::from_secs(60);
pub(crate) const BURST: usize = 2;

#[derive(Debug, Default)]
pub(crate) struct Damper {
    /// When recent store alerts were let through (at most BURST, within HOLD).
    sent: VecDeque<Instant>,
    /// The latest state held back.
    pending: Option<Alert>,
    /// Whether the last store alert let through said "failing".
    last_failing: Option<bool>,
}

fn failing(alert: &Alert) -> Option<bool> {
    match alert {
        Alert::StoreFallback { .. } => Some(true),
        Alert::StoreRecovered { .. } => Some(false),
        _ => None,
    }
}

impl Damper {
    /// Whether `alert` is a store state alert, which goes through [`Damper::offer`].
    pub(crate) fn applies(alert: &Alert) -> bool {
        failing(alert).is_some()
    }

    /// The alert to post now, if any; otherwise it is held (replacing an older held state).
    pub(crate) fn offer(&mut self, alert: Alert, now: Instant) -> Option<Alert> {
        self.expire(now);
        if self.sent.len() < BURST {
            self.pending = None;
            return self.send(alert, now);
        }
        self.pending = Some(alert);
        None
    }

    /// When the held state may go out.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        self.pending.as_ref()?;
        self.sent.front().map(|&t| t + HOLD)
    }

    /// The held state, once the hold allows it and when it differs from the last state posted.
    pub(crate) fn release(&mut self, now: Instant) -> Option<Alert> {
        self.expire(now);
        if self.sent.len() >= BURST {
            return None;
        }
        let alert = self.pending.take()?;
        if failing(&alert) == self.last_failing {
            return None;
        }
        self.send(alert, now)
    }

    fn send(&mut self, alert: Alert, now: Instant) -> Option<Alert> {
        self.sent.push_back(now);
        self.last_failing = failing(&alert);
        Some(alert)
    }

    fn expire(&mut self, now: Instant) {
        while self
            .sent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= HOLD)
        {
            self.sent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Alert {
        Alert::StoreFallback {
            store: "redis",
            on_error: "fallback",
            error: "timeout".into(),
        }
    }

    fn up() -> Alert {
        Alert::StoreRecovered { store: "redis" }
    }

    #[test]
    fn a_flapping_store_is_damped_and_the_last_state_kept() {
        let mut d = Damper::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(d.offer(down(), at(0)), Some(down()));
        assert_eq!(d.offer(up(), at(1)), Some(up()));
        // Flapping: held, only the latest kept.
        assert_eq!(d.offer(down(), at(2)), None);
        assert_eq!(d.offer(up(), at(3)), None);
        assert_eq!(d.offer(down(), at(4)), None);
        assert_eq!(d.wake_at(), Some(at(60)));
        assert_eq!(d.release(at(59)), None);
        assert_eq!(d.release(at(60)), Some(down()));
        assert_eq!(d.wake_at(), None);
        // Held state equal to the last one posted: nothing to say.
        assert_eq!(d.offer(up(), at(61)), Some(up()));
        assert_eq!(d.offer(down(), at(62)), None);
        assert_eq!(d.offer(up(), at(63)), None);
        assert_eq!(d.release(at(121)), None);
        assert!(!Damper::applies(&Alert::RejectionThreshold {
            client: "c".into(),
            rejections: 1,
            window: Duration::from_secs(1)
        }));
    }
}
