//! Cheap randomness for Retry-After jitter and lease ids: a per-thread xorshift64* seeded from
//! ahash's random keys. Spreads clients out; never used where an attacker's guess would matter.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // A fresh RandomState has random keys; `| 1` keeps the xorshift state away from zero.
    ahash::RandomState::new().hash_one(std::thread::current().id()) | 1
}

fn next() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A number in `0..=max`.
pub(crate) fn up_to(max: u64) -> u64 {
    match max.checked_add(1) {
        Some(n) => next() % n,
        None => next(),
    }
}

/// Lease ids unique across instances: a random instance prefix and a counter.
#[derive(Debug)]
pub(crate) struct LeaseIds {
    prefix: String,
    next: AtomicU64,
}

impl Default for LeaseIds {
    fn default() -> Self {
        LeaseIds {
            prefix: format!("{:016x}", next() ^ u64::from(std::process::id())),
            next: AtomicU64::new(0),
        }
    }
}

impl LeaseIds {
    pub(crate) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_to_stays_in_range_and_varies() {
        let seen: std::collections::HashSet<u64> = (0..1000).map(|_| up_to(5)).collect();
        assert!(seen.iter().all(|&n| n <= 5));
        assert_eq!(seen.len(), 6);
        assert_eq!(up_to(0), 0);
    }

    #[test]
    fn lease_ids_are_unique() {
        let a = LeaseIds::default();
        let b = LeaseIds::default();
        assert_ne!(a.next(), a.next());
        assert_ne!(a.next(), b.next());
    }
}
