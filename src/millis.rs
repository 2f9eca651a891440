//! Milliseconds, the unit the stores count time in: each conversion between a `Duration`, whole
//! milliseconds and whole seconds is written once here, so every store and header rounds alike.
//! The other way, `Duration::from_millis` is exact and needs no helper.

use std::time::Duration;

/// Whole milliseconds, rounded down: for time that has passed (a clock reading, an elapsed
/// time), where counting a partial millisecond would move state forward early. Saturates.
pub(crate) fn floor(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whole milliseconds, rounded up: for a length that must never come out shorter than asked (a
/// block, escalation bounds), so a block under a millisecond still blocks. Saturates.
pub(crate) fn ceil(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Whole seconds of `ms`, rounded up: what a client is told to wait or see (Retry-After, reset,
/// a block's ttl), so it never comes back early.
pub(crate) fn secs_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_drops_a_partial_millisecond() {
        assert_eq!(floor(Duration::from_micros(1999)), 1);
        assert_eq!(floor(Duration::from_millis(7)), 7);
        assert_eq!(floor(Duration::from_micros(999)), 0);
        assert_eq!(floor(Duration::MAX), u64::MAX);
    }

    #[test]
    fn ceil_counts_a_partial_millisecond() {
        assert_eq!(ceil(Duration::from_micros(1001)), 2);
        assert_eq!(ceil(Duration::from_millis(7)), 7);
        assert_eq!(ceil(Duration::from_nanos(1)), 1);
        assert_eq!(ceil(Duration::ZERO), 0);
        assert_eq!(ceil(Duration::MAX), u64::MAX);
    }

    #[test]
    fn secs_ceil_counts_a_partial_second() {
        assert_eq!(secs_ceil(0), 0);
        assert_eq!(secs_ceil(1), 1);
        assert_eq!(secs_ceil(1000), 1);
        assert_eq!(secs_ceil(1001), 2);
        assert_eq!(secs_ceil(u64::MAX), u64::MAX / 1000 + 1);
    }
}
