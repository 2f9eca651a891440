//! The parts of a policy's rate-limit headers that are the same for every request, written once
//! when the config is compiled, so that a response only adds the numbers
//! (`proxy::rate_headers` puts them together); also the name as the 429 body writes it.
//!
//! A policy name becomes an RFC 8941 sf-string in `RateLimit-Policy` and `RateLimit`, and a plain
//! value in `X-RateLimit-Policy`. Validation restricts names to `[A-Za-z0-9_.:-]`; policies built
//! by tools and tests are not validated, so anything else is escaped or replaced here and a name
//! can never break a header.

use bytes::Bytes;
use http::HeaderValue;

use super::compiled::Algorithm;
use crate::millis;

/// The constant text of one policy's rate-limit headers (public only so that code outside the
/// crate can build a `Policy` from `Policy::new` with struct-update syntax).
#[derive(Debug, Clone)]
pub struct PolicyHeaderText {
    /// `X-RateLimit-Policy`: the name.
    pub(crate) name: HeaderValue,
    /// `"name"`: how each list entry of `RateLimit-Policy` and `RateLimit` starts.
    pub(crate) sf_name: Bytes,
    /// What follows the quota in `RateLimit-Policy`: `;w=<window s>`, or for a concurrency
    /// policy (no window: slots come back on release) `;qu="concurrent-requests"`.
    pub(crate) quota_tail: Bytes,
    /// The whole `RateLimit-Policy` entry at the policy's own limit (`"name";q=30;w=60`): what
    /// every client without a tier override gets.
    pub(crate) quota: HeaderValue,
    /// The limit `quota` was written with.
    pub(crate) limit: u64,
    /// `RateLimit` has no `t=` for a concurrency policy.
    pub(crate) concurrency: bool,
    /// The name as a JSON string (quotes included, escaped as serde_json escapes it): the 429's
    /// problem+json body copies it (`proxy::response`) rather than escaping it per rejection.
    pub(crate) json_name: Bytes,
}

impl PolicyHeaderText {
    pub(crate) fn new(name: &str, algorithm: Algorithm, limit: u64, window_ms: u64) -> Self {
        let mut sf_name = Vec::with_capacity(name.len() + 2);
        push_sf_string(&mut sf_name, name);
        let concurrency = algorithm == Algorithm::Concurrency;
        let quota_tail = if concurrency {
            b";qu=\"concurrent-requests\"".to_vec()
        } else {
            let mut t = b";w=".to_vec();
            push_sf_integer(&mut t, millis::secs_ceil(window_ms).max(1));
            t
        };
        let mut quota = Vec::with_capacity(sf_name.len() + 24 + quota_tail.len());
        push_quota(&mut quota, &sf_name, limit, &quota_tail);
        PolicyHeaderText {
            name: value(plain_name(name)),
            sf_name: Bytes::from(sf_name),
            quota_tail: Bytes::from(quota_tail),
            quota: value(quota),
            limit,
            concurrency,
            json_name: json_string(name),
        }
    }

    /// Append this policy's `RateLimit-Policy` entry for a quota of `limit`.
    pub(crate) fn push_quota(&self, buf: &mut Vec<u8>, limit: u64) {
        if limit == self.limit {
            buf.extend_from_slice(self.quota.as_bytes());
        } else {
            push_quota(buf, &self.sf_name, limit, &self.quota_tail);
        }
    }
}

fn push_quota(buf: &mut Vec<u8>, sf_name: &[u8], limit: u64, tail: &[u8]) {
    buf.extend_from_slice(sf_name);
    buf.extend_from_slice(b";q=");
    push_sf_integer(buf, limit);
    buf.extend_from_slice(tail);
}

/// Only printable ASCII is ever written (see the module comment): this cannot fail, and if it
/// ever did, an empty value beats a panic.
fn value(bytes: Vec<u8>) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(bytes))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `s` as a JSON string, in serde_json's escaping.
fn json_string(s: &str) -> Bytes {
    // Writing a string into a Vec cannot fail; an empty string keeps the JSON valid anyway.
    serde_json::to_vec(s).map_or_else(|_| Bytes::from_static(b"\"\""), Bytes::from)
}

/// Append `n` in decimal.
pub(crate) fn push_u64(buf: &mut Vec<u8>, n: u64) {
    // Several numbers per response: itoa's two-digits-at-a-time writer takes about half the
    // instructions of a digit-by-digit loop.
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// RFC 8941 integers have at most 15 digits.
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// Append `n` as an RFC 8941 integer (saturated at 15 digits).
pub(crate) fn push_sf_integer(buf: &mut Vec<u8>, n: u64) {
    push_u64(buf, n.min(SF_INTEGER_MAX));
}

/// A policy name as a plain header value: anything but printable ASCII and space becomes `_`.
fn plain_name(name: &str) -> Vec<u8> {
    name.bytes()
        .map(|b| {
            if b.is_ascii_graphic() || b == b' ' {
                b
            } else {
                b'_'
            }
        })
        .collect()
}

/// An RFC 8941 sf-string: `"`, with `"` and `\` escaped and non-printables replaced.
fn push_sf_string(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                buf.push(b'\\');
                buf.push(b);
            }
            0x20..=0x7E => buf.push(b),
            _ => buf.push(b'_'),
        }
    }
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_parts() {
        let t = PolicyHeaderText::new("auth", Algorithm::SlidingWindow, 30, 60_000);
        assert_eq!(t.name, "auth");
        assert_eq!(&t.sf_name[..], b"\"auth\"");
        assert_eq!(&t.quota_tail[..], b";w=60");
        assert_eq!(t.quota, "\"auth\";q=30;w=60");
        let mut b = Vec::new();
        t.push_quota(&mut b, 30);
        b.extend_from_slice(b", ");
        t.push_quota(&mut b, 300);
        assert_eq!(b, b"\"auth\";q=30;w=60, \"auth\";q=300;w=60");
    }

    #[test]
    fn concurrency_and_short_windows() {
        let c = PolicyHeaderText::new("conc", Algorithm::Concurrency, 3, 60_000);
        assert_eq!(c.quota, "\"conc\";q=3;qu=\"concurrent-requests\"");
        assert!(c.concurrency);
        // Under a second is reported as 1 s, a partial second rounds up.
        let t = PolicyHeaderText::new("t", Algorithm::FixedWindow, 1, 250);
        assert_eq!(t.quota, "\"t\";q=1;w=1");
        let t = PolicyHeaderText::new("t", Algorithm::TokenBucket, 5, 1500);
        assert_eq!(t.quota, "\"t\";q=5;w=2");
    }

    #[test]
    fn hostile_names_are_escaped() {
        let t = PolicyHeaderText::new("a\"b\\c\u{e9}\n", Algorithm::FixedWindow, 1, 1000);
        assert_eq!(t.name, "a\"b\\c___");
        assert_eq!(&t.sf_name[..], br#""a\"b\\c___""#);
        assert_eq!(&t.json_name[..], "\"a\\\"b\\\\c\u{e9}\\n\"".as_bytes());
    }

    #[test]
    fn huge_limits_saturate() {
        let t = PolicyHeaderText::new("big", Algorithm::FixedWindow, u64::MAX, u64::MAX);
        assert_eq!(t.quota, "\"big\";q=999999999999999;w=999999999999999");
    }

    #[test]
    fn push_u64_digits() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX] {
            let mut b = Vec::new();
            push_u64(&mut b, n);
            assert_eq!(b, n.to_string().as_bytes());
        }
    }
}
