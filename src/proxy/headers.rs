//! Header rules. Stub: replaced by the real implementation.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};

use crate::limiter::RateReport;

/// Remove hop-by-hop headers, including those named in `Connection`, but never the
/// X-Forwarded-* headers the gateway sets itself.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    todo!("{headers:?}")
}

/// Set X-Forwarded-For/-Proto/-Host for the upstream. The existing X-Forwarded-For chain is kept
/// only when the peer is a trusted proxy; otherwise it is replaced by the peer address.
pub fn set_forwarded(headers: &mut HeaderMap, peer: IpAddr, peer_trusted: bool, proto: &'static str, host: Option<&HeaderValue>) {
    todo!("{headers:?}{peer}{peer_trusted}{proto}{host:?}")
}

/// Replace any rate-limit headers (X-RateLimit-*, RateLimit, RateLimit-Policy, Retry-After from
/// the limiter's point of view is set separately) with the gateway's report.
pub fn apply_rate_headers(headers: &mut HeaderMap, report: &RateReport) {
    todo!("{headers:?}{report:?}")
}

/// Remove upstream-sent rate-limit headers (X-RateLimit-*, RateLimit, RateLimit-Policy).
pub fn strip_rate_headers(headers: &mut HeaderMap) {
    todo!("{headers:?}")
}
