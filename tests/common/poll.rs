//! Waiting for a state the gateway (or Redis, or a test server) reaches on its own time: a probe
//! is called until its condition holds or a deadline passes, and a timeout names what was
//! awaited, so a failing test says what never happened rather than `assertion failed: false`.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// What a probe reports: `true` once the state is reached, or `Some(value)` to hand a value
/// (what was seen, an exit status) back to the caller.
pub trait Condition {
    type Value;
    fn holds(self) -> Option<Self::Value>;
}

impl Condition for bool {
    type Value = ();
    fn holds(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Condition for Option<T> {
    type Value = T;
    fn holds(self) -> Option<T> {
        self
    }
}

/// A wait for `what`, giving up after `within`; see [`poll`].
pub struct Poll<'a> {
    what: String,
    within: Duration,
    every: Duration,
    showing: Option<Box<dyn Fn() -> String + 'a>>,
}

/// Wait for `what` (named in the panic on timeout) for at most `within`:
/// `poll("the fallback gauge", secs(10)).until(|| gw.metric(..) == Some(1.0))`.
pub fn poll<'a>(what: impl Display, within: Duration) -> Poll<'a> {
    Poll {
        what: what.to_string(),
        within,
        every: Duration::from_millis(20),
        showing: None,
    }
}

impl<'a> Poll<'a> {
    /// Pause between probes (20 ms unless set). Probes that send traffic set their own pace:
    /// how many requests they send is part of what the test does.
    pub fn every(mut self, every: Duration) -> Poll<'a> {
        self.every = every;
        self
    }

    /// Text added to the timeout panic, e.g. the gateway's logs at that moment.
    pub fn showing(mut self, context: impl Fn() -> String + 'a) -> Poll<'a> {
        self.showing = Some(Box::new(context));
        self
    }

    /// Calls `probe` until its condition holds and returns the value it gave; panics naming
    /// `what` once `within` has passed. The probe runs at least once, and once after the
    /// deadline, so a slow probe is never cut short of its last look.
    pub fn until<C: Condition>(self, mut probe: impl FnMut() -> C) -> C::Value {
        let deadline = Instant::now() + self.within;
        loop {
            if let Some(value) = probe().holds() {
                return value;
            }
            if Instant::now() >= deadline {
                let context = self.showing.as_ref().map(|f| f()).unwrap_or_default();
                panic!(
                    "timed out after {:?} waiting for {}\n{context}",
                    self.within, self.what
                );
            }
            std::thread::sleep(self.every);
        }
    }
}
