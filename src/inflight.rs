//! A count of work in flight that shutdown can wait on: connections being served, store calls a
//! request still owes. A counter and a wake-up, not a list: entering and leaving are O(1) and
//! nothing grows with the work done.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Held while one piece of work is in flight; dropping it (done, failed or cancelled) leaves.
#[derive(Debug)]
pub(crate) struct Entered(Arc<InFlight>);

impl InFlight {
    pub(crate) fn enter(self: &Arc<Self>) -> Entered {
        self.count.fetch_add(1, Ordering::AcqRel);
        Entered(self.clone())
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves once nothing is in flight (at once if nothing is).
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a leave between the check and the wait still wakes.
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_last_one() {
        let work = Arc::new(InFlight::default());
        work.idle().await;
        let a = work.enter();
        let b = work.enter();
        assert_eq!(work.count(), 2);
        let waiter = tokio::spawn({
            let work = work.clone();
            async move { work.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("idle once the last one left")
            .unwrap();
        assert_eq!(work.count(), 0);
    }
}
