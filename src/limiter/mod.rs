//! The decision for one request: build the keys of the route's policies, ask the store once,
//! apply shadow mode and `on_error`, and report what the headers need. Stub: replaced by the real
//! implementation.

pub mod policy;

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::config::compiled::{Policy, Route, StoreSettings};
use crate::metrics::Metrics;
use crate::store::PolicyState;

/// Who is asking: the resolved client address and its key string (see `proxy::client_ip`).
#[derive(Debug, Clone)]
pub struct ClientId {
    pub ip: IpAddr,
    pub key: String,
}

/// What the request carries that keys may be built from.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Normalized path (what routing matched).
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

#[derive(Debug, Clone)]
pub struct ReportEntry {
    pub policy: Arc<Policy>,
    pub state: PolicyState,
}

/// Everything the rate-limit headers need.
#[derive(Debug, Clone)]
pub struct RateReport {
    /// One entry per policy of the route, in route order.
    pub entries: Vec<ReportEntry>,
    /// Index into `entries` of the policy reported in X-RateLimit-* (least remaining; on a
    /// rejection, the rejecting policy).
    pub reported: usize,
    /// Store clock at decision time, ms since the Unix epoch (for X-RateLimit-Reset).
    pub now_ms: u64,
}

#[derive(Debug, Clone)]
pub enum Verdict {
    /// The route has no policies, or the client is on the allow list.
    Unlimited,
    Allowed(RateReport),
    /// Allowed, but these shadow policies would have rejected (indexes into `entries`).
    ShadowLimited { report: RateReport, shadow: Vec<usize> },
    /// Over a limit: 429.
    Limited {
        report: RateReport,
        policy: Arc<Policy>,
        retry_after_s: u64,
        /// Set when this rejection started a `block_for` block (seconds).
        blocked_for_s: Option<u64>,
    },
    /// Temporarily blocked: 429 with the block time left.
    Blocked { retry_after_s: u64 },
    /// Store unavailable with `on_error = "deny"`: 503.
    Unavailable { retry_after_s: u64 },
}

pub struct Limiter {
    _settings: StoreSettings,
    _metrics: Arc<Metrics>,
}

impl Limiter {
    pub fn new(settings: &StoreSettings, metrics: Arc<Metrics>) -> Self {
        Limiter {
            _settings: settings.clone(),
            _metrics: metrics,
        }
    }

    pub async fn check(&self, route: &Route, client: &ClientId, req: RequestView<'_>) -> Verdict {
        todo!("{route:?}{client:?}{req:?}")
    }
}
