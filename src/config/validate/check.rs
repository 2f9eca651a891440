//! What every section's checks share: the `Issue` a failed check reports, and the bounds values
//! must stay within. The ranges are gathered here, named for the key they bound, so a limit is
//! found and changed in one place.

use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use toml::Spanned;

use crate::config::file::MAX_MAX_CONNECTIONS;
use crate::config::ConfigError;
use crate::millis;

/// The Redis script computes with doubles, which are exact for integers up to 2^53.
const MAX_EXACT_DOUBLE: u64 = 1 << 53;

/// Names (of upstreams, policies, routes) become metric label values and header tokens.
pub(super) const MAX_NAME_LEN: usize = 64;

/// `server.ipv6_prefix`, in bits.
pub(super) const IPV6_PREFIX_RANGE: RangeInclusive<u64> = 1..=128;
/// `server.max_header_bytes`.
pub(super) const MAX_HEADER_BYTES_RANGE: RangeInclusive<u64> = 1024..=1024 * 1024;
/// `server.max_connections`; the listener's ceiling is the same constant.
pub(super) const MAX_CONNECTIONS_RANGE: RangeInclusive<u64> = 1..=MAX_MAX_CONNECTIONS;
/// `store.max_memory_keys`.
pub(super) const MAX_MEMORY_KEYS_RANGE: RangeInclusive<u64> = 1000..=u64::MAX;
/// `store.batch_max`: a call of 1024 checks runs for about 10 ms on the Redis server.
pub(super) const BATCH_MAX_RANGE: RangeInclusive<u64> = 1..=1024;
/// `store.batch_in_flight`.
pub(super) const BATCH_IN_FLIGHT_RANGE: RangeInclusive<u64> = 1..=16;
/// `store.batch_queue`.
pub(super) const BATCH_QUEUE_RANGE: RangeInclusive<u64> = 1..=1_000_000;
/// `alerts.max_retries`.
pub(super) const ALERT_RETRIES_RANGE: RangeInclusive<u64> = 0..=20;
/// `alerts.queue_size`.
pub(super) const ALERT_QUEUE_SIZE_RANGE: RangeInclusive<u64> = 1..=1_000_000;

/// A policy's `block_for`.
pub(super) const MIN_BLOCK_FOR: Duration = Duration::from_secs(1);
/// Longest block an escalation may reach (`block_for`, `block_max` and `block_memory` when blocks
/// escalate); with a multiplier of at most `BLOCK_MULTIPLIER_RANGE`'s end every product the store
/// computes stays below 2^53 ms.
pub(super) const MAX_ESCALATED_BLOCK: Duration = Duration::from_secs(365 * 86_400);
/// A policy's `block_multiplier`.
pub(super) const BLOCK_MULTIPLIER_RANGE: RangeInclusive<u64> = 2..=1000;
/// A policy's `block_memory`.
pub(super) const BLOCK_MEMORY_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=MAX_ESCALATED_BLOCK;
/// A concurrency policy's `lease`.
pub(super) const LEASE_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);
/// A policy's `retry_after_jitter`: whole seconds are added, so less than 1s would add nothing.
pub(super) const RETRY_AFTER_JITTER_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);
/// A policy's `count_status` entries.
pub(super) const COUNT_STATUS_RANGE: RangeInclusive<u64> = 100..=599;

/// An upstream's `consecutive_failures`.
pub(super) const OUTLIER_FAILURES_RANGE: RangeInclusive<u64> = 1..=1000;
/// An upstream's `health_check.healthy` and `health_check.unhealthy`.
pub(super) const HEALTH_THRESHOLD_RANGE: RangeInclusive<u64> = 1..=100;

/// A route's `retry.attempts`.
pub(super) const RETRY_ATTEMPTS_RANGE: RangeInclusive<u64> = 1..=5;

/// A route's `respond.status`: a 1xx is never a final answer (a client would wait for the real
/// one).
pub(super) const RESPOND_STATUS_RANGE: RangeInclusive<u64> = 200..=599;
/// A route's `max_cost`, and its `cost` without a `cost_header`: far beyond any useful cost, small
/// enough that no product overflows.
pub(super) const COST_RANGE: RangeInclusive<u64> = 1..=1_000_000;

/// One problem found after deserialization. The key path is found from the span unless given.
#[derive(Debug)]
pub(super) struct Issue {
    pub(super) span: Option<Range<usize>>,
    pub(super) key: Option<String>,
    pub(super) message: String,
    /// An error inside another file (an `overrides_file`), reported as is; `span` is where the
    /// config names that file, for the file-order rule.
    pub(super) external: Option<Box<ConfigError>>,
}

impl Issue {
    pub(super) fn at<T>(value: &Spanned<T>, message: impl Into<String>) -> Self {
        Issue {
            span: Some(value.span()),
            key: None,
            message: message.into(),
            external: None,
        }
    }
}

pub(super) type Check<T> = Result<T, Issue>;

/// Whichever of two keys comes later in the file: the one that makes the pair conflict.
pub(super) fn later<A, B>(a: &Spanned<A>, b: &Spanned<B>) -> Spanned<()> {
    let span = if b.span().start > a.span().start {
        b.span()
    } else {
        a.span()
    };
    Spanned::new(span, ())
}

/// An integer in `range` converted to the type the runtime model uses.
pub(super) fn bounded<T: TryFrom<u64>>(
    value: &Spanned<u64>,
    range: RangeInclusive<u64>,
) -> Check<T> {
    let (min, max) = range.into_inner();
    let n = *value.get_ref();
    let message = if max == u64::MAX {
        format!("{n} is too small; must be at least {min}")
    } else {
        format!("{n} is out of range; must be between {min} and {max}")
    };
    if n < min || n > max {
        return Err(Issue::at(value, message));
    }
    T::try_from(n).map_err(|_| Issue::at(value, format!("{n} is too large for this platform")))
}

/// `count * window_ms` must stay exact in a double for the Redis script.
pub(super) fn within_double(value: &Spanned<u64>, count: u64, window: Duration) -> Check<u64> {
    let window_ms = millis::floor(window);
    match count.checked_mul(window_ms) {
        Some(product) if product <= MAX_EXACT_DOUBLE => Ok(count),
        _ => Err(Issue::at(
            value,
            format!(
                "{count} per {window_ms}ms is too large: the value times the window in \
                 milliseconds must not exceed 2^53 ({MAX_EXACT_DOUBLE})"
            ),
        )),
    }
}
