//! Header rules: hop-by-hop removal, X-Forwarded-* for the upstream, and the rate-limit headers
//! on responses (docs/operations.md section 3 and its "HTTP conformance"; README.md,
//! "Configuration", for the rate-limit headers).

use std::net::IpAddr;
use std::ops::Range;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

use crate::config::compiled::Algorithm;
use crate::limiter::RateReport;
use crate::millis;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
pub static X_RATELIMIT_POLICY: HeaderName = HeaderName::from_static("x-ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Always hop-by-hop (RFC 9110 section 7.6.1, plus the non-standard ones proxies still see),
/// then the client-IP headers an upstream may believe (`X-Real-IP`, RFC 7239 `Forwarded`, and
/// the CDN and load-balancer spellings), which only a trusted proxy may set
/// (`server.forward_client_ip_headers`).
static STRIPPED: [HeaderName; HOP_BY_HOP + 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("x-real-ip"),
    header::FORWARDED,
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("fastly-client-ip"),
];
/// The hop-by-hop names lead `STRIPPED`.
const HOP_BY_HOP: usize = 9;
const TRANSFER_ENCODING_AT: usize = 7;

/// Names a `Connection` header may list but that are never removed because of it: the
/// X-Forwarded-* the gateway sets itself (a client naming them must not make the gateway drop
/// its own, whichever of `remove_hop_by_hop`/`set_forwarded` runs first), and the end-to-end
/// `Host` and `Content-Length` that a peer has no business turning into hop-by-hop fields.
const PROTECTED: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "host",
    "content-length",
];

/// What a message's `Transfer-Encoding` said, once it is removed with the other hop-by-hop
/// headers. hyper has already undone a final `chunked` on receipt and frames the body again for
/// the next hop; any other coding is still on the body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCodings {
    /// No `Transfer-Encoding`: `Content-Length` (or the end of the connection) frames the body.
    None,
    /// Only `chunked`.
    Chunked,
    /// The codings the body still carries, in order (e.g. `gzip`): the next hop must be told,
    /// in a `Transfer-Encoding` hyper completes with `chunked`, or the body cannot be relayed.
    Other(HeaderValue),
}

/// Remove hop-by-hop headers, including those named in `Connection` (but never the
/// X-Forwarded-* headers the gateway sets itself), and with `client_ip` also the client-IP
/// headers of `STRIPPED`. A `Transfer-Encoding` takes `Content-Length` with it (RFC 9112
/// section 6.3: the length is stale once the framing changes) and is reported.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, client_ip: bool) -> TransferCodings {
    let names = if client_ip {
        &STRIPPED[..]
    } else {
        &STRIPPED[..HOP_BY_HOP]
    };
    // Runs twice per proxied request. One pass over the names present (no hashing) finds the
    // ones to remove, usually none or only `Connection`; removing all of them by name cost a
    // hash lookup each time (about 5% of the gateway's instructions per request for nine).
    let mut present = [false; STRIPPED.len()];
    for name in headers.keys() {
        if let Some(i) = names.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return TransferCodings::None;
    }
    let codings = if present[TRANSFER_ENCODING_AT] {
        headers.remove(header::CONTENT_LENGTH);
        transfer_codings(headers)
    } else {
        TransferCodings::None
    };
    // Headers listed in `Connection` go first, while we still have its values. The common
    // single-line case takes the value out (no allocation); several lines are cloned (cheap
    // `Bytes` clones) because removing while borrowing the map is not possible.
    match headers.get_all(header::CONNECTION).iter().count() {
        0 => {}
        1 => {
            if let Some(v) = headers.remove(header::CONNECTION) {
                remove_listed(headers, &v);
            }
        }
        _ => {
            let values: Vec<HeaderValue> = headers
                .get_all(header::CONNECTION)
                .iter()
                .cloned()
                .collect();
            for v in &values {
                remove_listed(headers, v);
            }
        }
    }
    for (name, _) in STRIPPED.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    codings
}

/// The codings of every `Transfer-Encoding` line, in order, without a final `chunked` (the only
/// one hyper decodes). `chunked` alone, the usual case, allocates nothing.
fn transfer_codings(headers: &HeaderMap) -> TransferCodings {
    let lines = headers.get_all(header::TRANSFER_ENCODING);
    let mut iter = lines.iter();
    if let (Some(only), None) = (iter.next(), iter.next()) {
        if trim_ows(only.as_bytes()).eq_ignore_ascii_case(b"chunked") {
            return TransferCodings::Chunked;
        }
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut before_last = 0;
    let mut last_chunked = false;
    for line in &lines {
        for token in line.as_bytes().split(|&b| b == b',') {
            let token = trim_ows(token);
            if token.is_empty() {
                continue;
            }
            last_chunked = token.eq_ignore_ascii_case(b"chunked");
            before_last = buf.len();
            if !buf.is_empty() {
                buf.extend_from_slice(b", ");
            }
            buf.extend_from_slice(token);
        }
    }
    if last_chunked {
        buf.truncate(before_last);
    }
    if buf.is_empty() {
        return TransferCodings::Chunked;
    }
    // Slices of valid values joined by ", " are a valid value; were it ever not, the first
    // line as received still names the codings.
    match HeaderValue::from_maybe_shared(Bytes::from(buf)) {
        Ok(v) => TransferCodings::Other(v),
        Err(_) => match headers.get(header::TRANSFER_ENCODING) {
            Some(v) => TransferCodings::Other(v.clone()),
            None => TransferCodings::Chunked,
        },
    }
}

/// Remove every header named in one `Connection` value (a comma list of tokens).
fn remove_listed(headers: &mut HeaderMap, connection: &HeaderValue) {
    for token in connection.as_bytes().split(|&b| b == b',') {
        // Not UTF-8 means not a header name: nothing to remove.
        let Ok(token) = std::str::from_utf8(trim_ows(token)) else {
            continue;
        };
        if token.is_empty() || PROTECTED.iter().any(|p| p.eq_ignore_ascii_case(token)) {
            continue;
        }
        // `remove(&str)` lower-cases on the stack and ignores invalid names; `close` and
        // `keep-alive` simply find nothing.
        headers.remove(token);
    }
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Set X-Forwarded-For/-Proto/-Host for the upstream. The existing X-Forwarded-For chain is kept
/// only when the peer is a trusted proxy; otherwise it is replaced by the peer address.
///
/// X-Forwarded-Proto and X-Forwarded-Host are likewise kept only when a trusted peer supplied
/// them; otherwise they are `proto` and the request's `host` (removed when there is no host),
/// so a client can never choose what the upstream reads there. `proto` must be a valid header
/// value (`"http"` / `"https"`).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    peer_trusted: bool,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    // Dual-stack listeners report `::ffff:a.b.c.d`; the upstream should see `a.b.c.d`.
    let peer = peer.to_canonical();
    let chain = if peer_trusted {
        forwarded_chain(headers, peer)
    } else {
        ip_text(Vec::with_capacity(40), peer)
    };
    match HeaderValue::from_maybe_shared(Bytes::from(chain)) {
        Ok(v) => {
            headers.insert(&X_FORWARDED_FOR, v);
        }
        // Cannot happen (the parts were valid values); never forward the client's chain.
        Err(_) => {
            headers.remove(&X_FORWARDED_FOR);
        }
    }

    if !(peer_trusted && has_nonempty(headers, &X_FORWARDED_PROTO)) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(peer_trusted && has_nonempty(headers, &X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                headers.insert(&X_FORWARDED_HOST, h.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

/// The existing X-Forwarded-For lines joined with ", " (empty lines skipped), then the peer.
fn forwarded_chain(headers: &HeaderMap, peer: IpAddr) -> Vec<u8> {
    let existing: usize = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(|v| v.len() + 2)
        .sum();
    let mut buf = Vec::with_capacity(existing + 40);
    for v in &headers.get_all(&X_FORWARDED_FOR) {
        let line = trim_ows(v.as_bytes());
        if line.is_empty() {
            continue;
        }
        if !buf.is_empty() {
            buf.extend_from_slice(b", ");
        }
        buf.extend_from_slice(line);
    }
    if !buf.is_empty() {
        buf.extend_from_slice(b", ");
    }
    ip_text(buf, peer)
}

fn ip_text(mut buf: Vec<u8>, ip: IpAddr) -> Vec<u8> {
    crate::net::push_ip(&mut buf, ip);
    buf
}

fn has_nonempty(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| !trim_ows(v.as_bytes()).is_empty())
}

/// Replace any rate-limit headers (X-RateLimit-*, RateLimit, RateLimit-Policy, and the other
/// spellings `strip_rate_headers` removes) with the gateway's report. `Retry-After` is set
/// separately (`retry_after_value`).
///
/// All values are written into one buffer and handed out as slices of it: one allocation for
/// the six headers.
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

    let names: usize = report.entries.iter().map(|e| e.policy.name.len()).sum();
    let mut buf = Vec::with_capacity(96 + 2 * names + 64 * report.entries.len());

    let limit = span(&mut buf, |b| push_u64(b, main.state.limit));
    let remaining = span(&mut buf, |b| push_u64(b, main.state.remaining));
    let reset_at = millis::secs_ceil(report.now_ms.saturating_add(main.state.reset_ms));
    let reset = span(&mut buf, |b| push_u64(b, reset_at));
    let policy = span(&mut buf, |b| push_name(b, &main.policy.name));
    let rl_policy = span(&mut buf, |b| {
        for (i, e) in report.entries.iter().enumerate() {
            if i > 0 {
                b.extend_from_slice(b", ");
            }
            push_sf_string(b, &e.policy.name);
            b.extend_from_slice(b";q=");
            push_sf_integer(b, e.state.limit);
            if e.policy.algorithm == Algorithm::Concurrency {
                // A quota of requests in flight has no window.
                b.extend_from_slice(b";qu=\"concurrent-requests\"");
            } else {
                b.extend_from_slice(b";w=");
                push_sf_integer(b, millis::secs_ceil(e.policy.window_ms()).max(1));
            }
        }
    });
    let rl = span(&mut buf, |b| {
        for (i, e) in report.entries.iter().enumerate() {
            if i > 0 {
                b.extend_from_slice(b", ");
            }
            push_sf_string(b, &e.policy.name);
            b.extend_from_slice(b";r=");
            push_sf_integer(b, e.state.remaining);
            // Free slots come back on release, not after a time.
            if e.policy.algorithm != Algorithm::Concurrency {
                b.extend_from_slice(b";t=");
                push_sf_integer(b, millis::secs_ceil(e.state.reset_ms));
            }
        }
    });

    let bytes = Bytes::from(buf);
    for (name, range) in [
        (&X_RATELIMIT_LIMIT, limit),
        (&X_RATELIMIT_REMAINING, remaining),
        (&X_RATELIMIT_RESET, reset),
        (&X_RATELIMIT_POLICY, policy),
        (&RATELIMIT_POLICY, rl_policy),
        (&RATELIMIT, rl),
    ] {
        // Only digits, printable ASCII and ", " are written: this cannot fail, and if it ever
        // did, a missing header beats a panic.
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes.slice(range)) {
            headers.insert(name, v);
        }
    }
}

/// `Retry-After` in whole seconds.
pub fn retry_after_value(secs: u64) -> HeaderValue {
    HeaderValue::from(secs)
}

/// Remove upstream-sent rate-limit headers (X-RateLimit-*, RateLimit, RateLimit-Policy), and
/// the older spellings (`RateLimit-Limit`/`-Remaining`/`-Reset` of earlier IETF drafts,
/// `X-Rate-Limit-*`), so a client never sees the upstream's numbers mixed with the gateway's.
pub fn strip_rate_headers(headers: &mut HeaderMap) {
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

fn push_u64(buf: &mut Vec<u8>, n: u64) {
    // Seven numbers per response: itoa's two-digits-at-a-time writer takes about half the
    // instructions of a digit-by-digit loop.
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// RFC 8941 integers have at most 15 digits.
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

fn push_sf_integer(buf: &mut Vec<u8>, n: u64) {
    push_u64(buf, n.min(SF_INTEGER_MAX));
}

/// A policy name as a header value. Config validation restricts names to `[A-Za-z0-9_.:-]`;
/// anything else is replaced so that a bad name can never break the header.
fn push_name(buf: &mut Vec<u8>, name: &str) {
    buf.extend(name.bytes().map(|b| {
        if b.is_ascii_graphic() || b == b' ' {
            b
        } else {
            b'_'
        }
    }));
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
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::compiled::{Algorithm, Policy};
    use crate::limiter::ReportEntry;
    use crate::store::PolicyState;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    fn get<'h>(h: &'h HeaderMap, name: &str) -> Vec<&'h str> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii test value"))
            .collect()
    }

    fn one<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
        let all = get(h, name);
        assert!(all.len() <= 1, "{name}: {all:?}");
        all.first().copied()
    }

    // ---- hop-by-hop ----

    #[test]
    fn removes_standard_hop_by_hop() {
        let mut h = HeaderMap::new();
        for n in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            h.append(n, hv("x"));
        }
        h.insert("content-type", hv("text/plain"));
        h.insert("authorization", hv("Bearer t"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("content-type"));
        assert!(h.contains_key("authorization"));
    }

    #[test]
    fn removes_headers_named_in_connection() {
        let mut h = HeaderMap::new();
        h.append("connection", hv("close, X-Foo ,\tx-bar"));
        h.append("connection", hv("X-BAZ"));
        h.insert("x-foo", hv("1"));
        h.insert("x-bar", hv("2"));
        h.insert("x-baz", hv("3"));
        h.insert("x-keep", hv("4"));
        remove_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("x-foo"));
        assert!(!h.contains_key("x-bar"));
        assert!(!h.contains_key("x-baz"));
        assert!(!h.contains_key("connection"));
        assert_eq!(one(&h, "x-keep"), Some("4"));
    }

    #[test]
    fn connection_single_line_and_junk_tokens() {
        let mut h = HeaderMap::new();
        h.insert("connection", hv("keep-alive, , ,bad token, \"q\", x-foo,"));
        h.insert("x-foo", hv("1"));
        h.insert("x-other", hv("2"));
        remove_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("x-foo"));
        assert_eq!(one(&h, "x-other"), Some("2"));
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_bytes(b"x-\xff, x-foo").expect("obs-text is a valid value"),
        );
        h.insert("x-foo", hv("1"));
        remove_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("x-foo"));
    }

    #[test]
    fn connection_cannot_remove_protected_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            hv("X-Forwarded-For, x-forwarded-proto, X-FORWARDED-HOST, Host, Content-Length"),
        );
        h.insert("x-forwarded-for", hv("1.1.1.1"));
        h.insert("x-forwarded-proto", hv("https"));
        h.insert("x-forwarded-host", hv("a.example"));
        h.insert("host", hv("a.example"));
        h.insert("content-length", hv("3"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 5, "{h:?}");
    }

    #[test]
    fn forwarded_headers_survive_either_order() {
        let make = || {
            let mut h = HeaderMap::new();
            h.insert(
                "connection",
                hv("x-forwarded-for, x-forwarded-proto, x-forwarded-host"),
            );
            h.insert("x-forwarded-for", hv("6.6.6.6"));
            h.insert("x-forwarded-host", hv("evil.example"));
            h
        };
        let host = hv("api.example.com");
        let peer: IpAddr = "198.51.100.7".parse().expect("test address");

        let mut a = make();
        remove_hop_by_hop(&mut a, false);
        set_forwarded(&mut a, peer, false, "https", Some(&host));
        let mut b = make();
        set_forwarded(&mut b, peer, false, "https", Some(&host));
        remove_hop_by_hop(&mut b, false);

        assert_eq!(a, b);
        assert_eq!(one(&a, "x-forwarded-for"), Some("198.51.100.7"));
        assert_eq!(one(&a, "x-forwarded-proto"), Some("https"));
        assert_eq!(one(&a, "x-forwarded-host"), Some("api.example.com"));
        assert!(!a.contains_key("connection"));
    }

    #[test]
    fn client_ip_headers_go_only_when_asked() {
        let make = || {
            let mut h = HeaderMap::new();
            for n in [
                "x-real-ip",
                "forwarded",
                "true-client-ip",
                "cf-connecting-ip",
                "x-client-ip",
                "x-cluster-client-ip",
                "fastly-client-ip",
            ] {
                h.append(n, hv("6.6.6.6"));
            }
            h.insert("x-keep", hv("1"));
            h
        };
        let mut h = make();
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
        let mut h = make();
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 8, "{h:?}");
    }

    fn codings(lines: &[&'static str], with_length: bool) -> (TransferCodings, HeaderMap) {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("transfer-encoding", hv(l));
        }
        if with_length {
            h.insert("content-length", hv("2"));
        }
        h.insert("content-type", hv("text/plain"));
        (remove_hop_by_hop(&mut h, false), h)
    }

    #[test]
    fn transfer_encoding_takes_content_length_with_it() {
        let (c, h) = codings(&["chunked"], true);
        assert_eq!(c, TransferCodings::Chunked);
        assert!(!h.contains_key("content-length"));
        assert!(!h.contains_key("transfer-encoding"));
        assert!(h.contains_key("content-type"));
        let (c, h) = codings(&[], true);
        assert_eq!(c, TransferCodings::None);
        assert!(h.contains_key("content-length"));
    }

    #[test]
    fn transfer_codings_other_than_the_final_chunked_are_kept() {
        let other = |s: &'static str| TransferCodings::Other(hv(s));
        assert_eq!(codings(&["gzip, chunked"], true).0, other("gzip"));
        assert_eq!(codings(&["gzip", "Chunked"], false).0, other("gzip"));
        assert_eq!(
            codings(&[" chunked ", ""], false).0,
            TransferCodings::Chunked
        );
        // Not final: hyper decoded nothing, the body carries all of them.
        assert_eq!(codings(&["chunked, gzip"], false).0, other("chunked, gzip"));
        assert_eq!(codings(&["gzip"], false).0, other("gzip"));
        assert_eq!(
            codings(&["x-a,,x-b ,\tchunked"], false).0,
            other("x-a, x-b")
        );
    }

    // ---- X-Forwarded-* ----

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn untrusted_peer_replaces_chain() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", hv("6.6.6.6"));
        h.append("x-forwarded-for", hv("7.7.7.7"));
        set_forwarded(&mut h, ip("198.51.100.7"), false, "http", None);
        assert_eq!(get(&h, "x-forwarded-for"), ["198.51.100.7"]);
    }

    #[test]
    fn trusted_peer_appends_to_joined_chain() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", hv("198.51.100.7"));
        h.append("x-forwarded-for", hv(""));
        h.append("x-forwarded-for", hv("10.1.1.1, 10.2.2.2"));
        set_forwarded(&mut h, ip("10.0.0.1"), true, "http", None);
        assert_eq!(
            get(&h, "x-forwarded-for"),
            ["198.51.100.7, 10.1.1.1, 10.2.2.2, 10.0.0.1"]
        );
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, ip("10.0.0.1"), true, "http", None);
        assert_eq!(get(&h, "x-forwarded-for"), ["10.0.0.1"]);
    }

    #[test]
    fn forwarded_peer_is_unmapped() {
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, ip("::ffff:198.51.100.7"), false, "http", None);
        assert_eq!(get(&h, "x-forwarded-for"), ["198.51.100.7"]);
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, ip("2001:db8::1"), false, "http", None);
        assert_eq!(get(&h, "x-forwarded-for"), ["2001:db8::1"]);
    }

    #[test]
    fn proto_and_host_from_untrusted_client_are_replaced() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-proto", hv("https"));
        h.append("x-forwarded-proto", hv("https"));
        h.insert("x-forwarded-host", hv("evil.example"));
        let host = hv("api.example.com:8443");
        set_forwarded(&mut h, ip("198.51.100.7"), false, "http", Some(&host));
        assert_eq!(get(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(get(&h, "x-forwarded-host"), ["api.example.com:8443"]);
        // No host: a client-sent X-Forwarded-Host must not survive.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", hv("evil.example"));
        set_forwarded(&mut h, ip("198.51.100.7"), false, "https", None);
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(get(&h, "x-forwarded-proto"), ["https"]);
    }

    #[test]
    fn trusted_peer_keeps_proto_and_host() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", hv("https"));
        h.insert("x-forwarded-host", hv("public.example"));
        let host = hv("internal:8080");
        set_forwarded(&mut h, ip("10.0.0.1"), true, "http", Some(&host));
        assert_eq!(get(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&h, "x-forwarded-host"), ["public.example"]);
        // Empty values from a trusted peer count as absent.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", hv(""));
        h.insert("x-forwarded-host", hv(" "));
        set_forwarded(&mut h, ip("10.0.0.1"), true, "http", Some(&host));
        assert_eq!(get(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(get(&h, "x-forwarded-host"), ["internal:8080"]);
    }

    // ---- rate-limit headers ----

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

    #[test]
    fn retry_after() {
        assert_eq!(retry_after_value(17), "17");
        assert_eq!(retry_after_value(0), "0");
        assert_eq!(retry_after_value(u64::MAX), "18446744073709551615");
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
