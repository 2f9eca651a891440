//! The gateway's rate-limit headers on responses (X-RateLimit-*, RateLimit-Policy / RateLimit),
//! replacing any the upstream sent (docs/reference.md section 3, "What a client sees").

use std::ops::Range;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

use crate::config::header_text::{push_sf_integer, push_u64};
use crate::limiter::RateReport;
use crate::millis;

pub(crate) static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub(crate) static X_RATELIMIT_REMAINING: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining");
pub(crate) static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
pub(crate) static X_RATELIMIT_POLICY: HeaderName = HeaderName::from_static("x-ratelimit-policy");
pub(crate) static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub(crate) static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Replace any rate-limit headers (X-RateLimit-*, RateLimit, RateLimit-Policy, and the other
/// spellings `strip_rate_headers` removes) with the gateway's report. `Retry-After` is set
/// separately (`retry_after_value`).
///
/// The text that is the same for every request of a policy was written when the config was
/// compiled (`config::header_text`): `X-RateLimit-Policy` and, for a single policy at its own
/// limit, `RateLimit-Policy` are shared values; the numbers are written into one buffer and handed
/// out as slices of it (one allocation for the rest).
pub fn apply_rate_headers(headers: &mut HeaderMap, report: &RateReport) {
    strip_rate_headers(headers);
    // `reported` comes from the limiter; an out-of-range index falls back to the first entry
    // rather than panicking, and an empty report adds nothing.
    let Some(main) = report
        .entries
        .get(report.reported)
        .or_else(|| report.entries.first())
    else {
        return;
    };

    let mut buf = Vec::with_capacity(64 + 48 * report.entries.len());
    let limit = span(&mut buf, |b| push_u64(b, main.state.limit));
    let remaining = span(&mut buf, |b| push_u64(b, main.state.remaining));
    let reset_at = millis::secs_ceil(report.now_ms.saturating_add(main.state.reset_ms));
    let reset = span(&mut buf, |b| push_u64(b, reset_at));
    let rl = span(&mut buf, |b| {
        for (i, e) in report.entries.iter().enumerate() {
            if i > 0 {
                b.extend_from_slice(b", ");
            }
            let text = &e.policy.headers;
            b.extend_from_slice(&text.sf_name);
            b.extend_from_slice(b";r=");
            push_sf_integer(b, e.state.remaining);
            // Free slots come back on release, not after a time.
            if !text.concurrency {
                b.extend_from_slice(b";t=");
                push_sf_integer(b, millis::secs_ceil(e.state.reset_ms));
            }
        }
    });
    // One policy at its own limit (no tier override): the compiled value as it is.
    let single = match &report.entries[..] {
        [e] if e.state.limit == e.policy.headers.limit => Some(e.policy.headers.quota.clone()),
        _ => None,
    };
    let rl_policy = match single {
        Some(_) => 0..0,
        None => span(&mut buf, |b| {
            for (i, e) in report.entries.iter().enumerate() {
                if i > 0 {
                    b.extend_from_slice(b", ");
                }
                e.policy.headers.push_quota(b, e.state.limit);
            }
        }),
    };

    let bytes = Bytes::from(buf);
    let value = |range: Range<usize>| HeaderValue::from_maybe_shared(bytes.slice(range));
    // Only digits, printable ASCII and ", " are written: this cannot fail, and if it ever did,
    // a missing header beats a panic.
    for (name, v) in [
        (&X_RATELIMIT_LIMIT, value(limit)),
        (&X_RATELIMIT_REMAINING, value(remaining)),
        (&X_RATELIMIT_RESET, value(reset)),
        (&X_RATELIMIT_POLICY, Ok(main.policy.headers.name.clone())),
        (
            &RATELIMIT_POLICY,
            single.ok_or(()).or_else(|()| value(rl_policy)),
        ),
        (&RATELIMIT, value(rl)),
    ] {
        if let Ok(v) = v {
            headers.insert(name, v);
        }
    }
}

/// Remove upstream-sent rate-limit headers (X-RateLimit-*, RateLimit, RateLimit-Policy), and
/// the older spellings (`RateLimit-Limit`/`-Remaining`/`-Reset` of earlier IETF drafts,
/// `X-Rate-Limit-*`), so a client never sees the upstream's numbers mixed with the gateway's.
pub(crate) fn strip_rate_headers(headers: &mut HeaderMap) {
    // The common case (no such header) is one pass over the names, no allocation.
    if !headers.keys().any(is_rate_header) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_rate_header(n))
        .cloned()
        .collect();
    for n in &names {
        headers.remove(n);
    }
}

fn is_rate_header(name: &HeaderName) -> bool {
    // `HeaderName::as_str` is always lower-case.
    let s = name.as_str();
    s == "ratelimit"
        || s.starts_with("ratelimit-")
        || s.starts_with("x-ratelimit-")
        || s.starts_with("x-rate-limit-")
}

/// Run `write` and return the range of `buf` it appended.
fn span(buf: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
    let start = buf.len();
    write(buf);
    start..buf.len()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::compiled::{Algorithm, Policy};
    use crate::limiter::ReportEntry;
    use crate::proxy::test_headers::{get, hv, one};
    use crate::store::PolicyState;

    fn policy(name: &str, limit: u64, window: Duration) -> Arc<Policy> {
        Arc::new(Policy::new(name, Algorithm::SlidingWindow, limit, window))
    }

    fn entry(p: &Arc<Policy>, remaining: u64, reset_ms: u64) -> ReportEntry {
        ReportEntry {
            policy: Arc::clone(p),
            state: PolicyState {
                allowed: true,
                limit: p.limit,
                remaining,
                reset_ms,
                retry_after_ms: 0,
            },
        }
    }

    #[test]
    fn spec_example() {
        let auth = policy("auth", 30, Duration::from_secs(60));
        let report = RateReport {
            entries: vec![entry(&auth, 12, 16_001)],
            reported: 0,
            now_ms: 1_763_999_983_500,
        };
        let mut h = HeaderMap::new();
        apply_rate_headers(&mut h, &report);
        assert_eq!(one(&h, "x-ratelimit-limit"), Some("30"));
        assert_eq!(one(&h, "x-ratelimit-remaining"), Some("12"));
        // ceil((1_763_999_983_500 + 16_001) / 1000)
        assert_eq!(one(&h, "x-ratelimit-reset"), Some("1764000000"));
        assert_eq!(one(&h, "x-ratelimit-policy"), Some("auth"));
        assert_eq!(one(&h, "ratelimit-policy"), Some("\"auth\";q=30;w=60"));
        assert_eq!(one(&h, "ratelimit"), Some("\"auth\";r=12;t=17"));
    }

    #[test]
    fn concurrency_uses_the_concurrent_requests_form() {
        let conc = Arc::new(Policy::new(
            "conc",
            Algorithm::Concurrency,
            3,
            Duration::from_secs(60),
        ));
        let auth = policy("auth", 30, Duration::from_secs(60));
        let report = RateReport {
            entries: vec![entry(&conc, 2, 0), entry(&auth, 12, 16_001)],
            reported: 0,
            now_ms: 1_763_999_983_500,
        };
        let mut h = HeaderMap::new();
        apply_rate_headers(&mut h, &report);
        assert_eq!(
            one(&h, "ratelimit-policy"),
            Some("\"conc\";q=3;qu=\"concurrent-requests\", \"auth\";q=30;w=60")
        );
        assert_eq!(
            one(&h, "ratelimit"),
            Some("\"conc\";r=2, \"auth\";r=12;t=17")
        );
        assert_eq!(one(&h, "x-ratelimit-remaining"), Some("2"));
        // Nothing to wait for: Reset is now.
        assert_eq!(one(&h, "x-ratelimit-reset"), Some("1763999984"));
    }

    #[test]
    fn several_policies_in_route_order() {
        let burst = policy("burst", 5, Duration::from_millis(1500));
        let hourly = policy("hourly", 1000, Duration::from_secs(3600));
        let report = RateReport {
            entries: vec![entry(&burst, 4, 1200), entry(&hourly, 3, 3_599_000)],
            reported: 1,
            now_ms: 1_000,
        };
        let mut h = HeaderMap::new();
        apply_rate_headers(&mut h, &report);
        assert_eq!(one(&h, "x-ratelimit-limit"), Some("1000"));
        assert_eq!(one(&h, "x-ratelimit-remaining"), Some("3"));
        assert_eq!(one(&h, "x-ratelimit-reset"), Some("3600"));
        assert_eq!(one(&h, "x-ratelimit-policy"), Some("hourly"));
        assert_eq!(
            one(&h, "ratelimit-policy"),
            Some("\"burst\";q=5;w=2, \"hourly\";q=1000;w=3600")
        );
        assert_eq!(
            one(&h, "ratelimit"),
            Some("\"burst\";r=4;t=2, \"hourly\";r=3;t=3599")
        );
    }

    #[test]
    fn a_tier_override_reports_its_own_quota() {
        // The compiled `RateLimit-Policy` holds the policy's own limit; a client on a tier gets
        // its quota written per request, alone or among other policies.
        let auth = policy("auth", 30, Duration::from_secs(60));
        let mut tier = entry(&auth, 250, 16_001);
        tier.state.limit = 300;
        let report = RateReport {
            entries: vec![tier.clone()],
            reported: 0,
            now_ms: 0,
        };
        let mut h = HeaderMap::new();
        apply_rate_headers(&mut h, &report);
        assert_eq!(one(&h, "ratelimit-policy"), Some("\"auth\";q=300;w=60"));
        assert_eq!(one(&h, "x-ratelimit-limit"), Some("300"));
        let hourly = policy("hourly", 1000, Duration::from_secs(3600));
        let report = RateReport {
            entries: vec![entry(&hourly, 3, 3_599_000), tier],
            reported: 0,
            now_ms: 0,
        };
        apply_rate_headers(&mut h, &report);
        assert_eq!(
            one(&h, "ratelimit-policy"),
            Some("\"hourly\";q=1000;w=3600, \"auth\";q=300;w=60")
        );
    }

    #[test]
    fn rounding_edges() {
        let tiny = policy("tiny", 1, Duration::from_millis(250));
        let report = RateReport {
            entries: vec![entry(&tiny, 0, 0)],
            reported: 0,
            now_ms: 5_000,
        };
        let mut h = HeaderMap::new();
        apply_rate_headers(&mut h, &report);
        // Window under a second is reported as 1 s; a zero reset is 0, exactly on a second.
        assert_eq!(one(&h, "ratelimit-policy"), Some("\"tiny\";q=1;w=1"));
        assert_eq!(one(&h, "ratelimit"), Some("\"tiny\";r=0;t=0"));
        assert_eq!(one(&h, "x-ratelimit-reset"), Some("5"));
        let report = RateReport {
            entries: vec![entry(&tiny, 0, 1)],
            reported: 0,
            now_ms: 5_000,
        };
        apply_rate_headers(&mut h, &report);
        assert_eq!(one(&h, "ratelimit"), Some("\"tiny\";r=0;t=1"));
        assert_eq!(one(&h, "x-ratelimit-reset"), Some("6"));
    }

    #[test]
    fn huge_numbers_saturate() {
        let big = policy("big", u64::MAX, Duration::MAX);
        let report = RateReport {
            entries: vec![entry(&big, u64::MAX, u64::MAX)],
            reported: 0,
            now_ms: u64::MAX,
        };
        let mut h = HeaderMap::new();
        apply_rate_headers(&mut h, &report);
        assert_eq!(one(&h, "x-ratelimit-limit"), Some("18446744073709551615"));
        assert_eq!(one(&h, "x-ratelimit-reset"), Some("18446744073709552"));
        assert_eq!(
            one(&h, "ratelimit"),
            Some("\"big\";r=999999999999999;t=999999999999999")
        );
    }

    #[test]
    fn replaces_upstream_rate_headers() {
        let auth = policy("auth", 30, Duration::from_secs(60));
        let report = RateReport {
            entries: vec![entry(&auth, 12, 17_000)],
            reported: 0,
            now_ms: 0,
        };
        let mut h = HeaderMap::new();
        h.append("X-RateLimit-Limit", hv("5000"));
        h.append("x-ratelimit-limit", hv("6000"));
        h.insert("X-RateLimit-Used", hv("1"));
        h.insert("RateLimit", hv("\"up\";r=1;t=1"));
        h.insert("content-type", hv("application/json"));
        apply_rate_headers(&mut h, &report);
        assert_eq!(get(&h, "x-ratelimit-limit"), ["30"]);
        assert_eq!(get(&h, "ratelimit"), ["\"auth\";r=12;t=17"]);
        assert!(!h.contains_key("x-ratelimit-used"));
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn bad_reported_index_and_empty_report() {
        let auth = policy("auth", 30, Duration::from_secs(60));
        let report = RateReport {
            entries: vec![entry(&auth, 12, 17_000)],
            reported: 7,
            now_ms: 0,
        };
        let mut h = HeaderMap::new();
        apply_rate_headers(&mut h, &report);
        assert_eq!(one(&h, "x-ratelimit-policy"), Some("auth"));
        let report = RateReport {
            entries: Vec::new(),
            reported: 0,
            now_ms: 0,
        };
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", hv("1"));
        apply_rate_headers(&mut h, &report);
        assert!(h.is_empty());
    }

    #[test]
    fn hostile_policy_names_cannot_break_headers() {
        let odd = policy("a\"b\\c\u{e9}\n", 1, Duration::from_secs(1));
        let report = RateReport {
            entries: vec![entry(&odd, 1, 0)],
            reported: 0,
            now_ms: 0,
        };
        let mut h = HeaderMap::new();
        apply_rate_headers(&mut h, &report);
        assert_eq!(one(&h, "ratelimit"), Some(r#""a\"b\\c___";r=1;t=0"#));
        assert_eq!(one(&h, "x-ratelimit-policy"), Some("a\"b\\c___"));
    }

    #[test]
    fn strip_removes_all_spellings_only() {
        let mut h = HeaderMap::new();
        for n in [
            "X-RateLimit-Limit",
            "x-ratelimit-remaining",
            "X-RATELIMIT-RESET",
            "x-ratelimit-policy",
            "x-ratelimit-used",
            "RateLimit",
            "RateLimit-Policy",
            "RateLimit-Limit",
            "ratelimit-reset",
            "x-rate-limit-remaining",
        ] {
            h.append(n, hv("1"));
        }
        for n in [
            "retry-after",
            "x-ratelimiter",
            "ratelimits",
            "content-length",
        ] {
            h.append(n, hv("1"));
        }
        strip_rate_headers(&mut h);
        assert_eq!(h.len(), 4, "{h:?}");
        let mut empty = HeaderMap::new();
        strip_rate_headers(&mut empty);
        assert!(empty.is_empty());
    }
}
