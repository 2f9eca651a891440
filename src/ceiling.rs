//! A connection ceiling shared across every worker runtime: the proxy listener's client
//! connections (`server`) and the upstream connections they open (`proxy::upstream_client`)
//! each count against one, so neither side can take the descriptors the other needs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A shared connection counter with a ceiling.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    used: AtomicUsize,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            used: AtomicUsize::new(0),
        })
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// How many slots are taken now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// A slot for one connection, or `None` when all are taken.
    pub(crate) fn acquire(self: &Arc<Self>) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.max).then_some(used + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }
}

/// Frees its slot when dropped (the connection ended).
#[derive(Debug)]
pub(crate) struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_and_freed() {
        let slots = Slots::new(2);
        let a = slots.acquire().unwrap();
        let b = slots.clone().acquire().unwrap();
        assert!(slots.acquire().is_none());
        drop(a);
        let c = slots.acquire();
        assert!(c.is_some());
        drop((b, c));
        assert_eq!(slots.used.load(Ordering::Relaxed), 0);
    }
}
