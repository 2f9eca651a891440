//! Per-worker caches of metric handles for the request path.
//!
//! `MetricVec::with_label_values` hashes the label values and takes the vector's read lock on
//! every call; with one call per request and per family, every proxy worker wrote the same lock
//! word on every request. Each worker's `Gateway` owns these caches instead, so a request resolves
//! its handles with an uncontended lock and an index. Series are still created lazily, on first
//! use, so `/metrics` shows exactly the series it showed before.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::{Histogram, IntCounter};

use crate::config::Config;
use crate::metrics::{DecisionLabel, Metrics};

const DECISIONS: usize = 8;

fn decision_index(d: DecisionLabel) -> usize {
    match d {
        DecisionLabel::Allowed => 0,
        DecisionLabel::Limited => 1,
        DecisionLabel::Blocked => 2,
        DecisionLabel::Denied => 3,
        DecisionLabel::ShadowLimited => 4,
        DecisionLabel::NoRoute => 5,
        DecisionLabel::BadRequest => 6,
        DecisionLabel::Unauthorized => 7,
    }
}

#[derive(Default)]
struct RouteHandles {
    requests: [Option<IntCounter>; DECISIONS],
    duration: Option<Histogram>,
}

/// Handles of one config's routes. Holding the config's `Arc` keeps its address from being
/// reused, so comparing pointers is a sound "same config" test.
struct ForConfig {
    config: Arc<Config>,
    /// Index `i` is route `i`; the last entry is for requests that matched no route (label "").
    routes: Vec<RouteHandles>,
}

/// `rategate_requests_total` and `rategate_request_duration_seconds` handles by route.
#[derive(Default)]
pub(crate) struct RequestStats {
    cache: Mutex<Option<ForConfig>>,
}

impl RequestStats {
    /// Count one request of `route` (an index into `config.routes`; `None` for no route).
    pub(crate) fn record(
        &self,
        metrics: &Metrics,
        config: &Arc<Config>,
        route: Option<usize>,
        decision: DecisionLabel,
        seconds: f64,
    ) {
        let mut cache = self.cache.lock();
        let current = match &mut *cache {
            Some(c) if Arc::ptr_eq(&c.config, config) => c,
            // First request, or the config was reloaded: start over for the new routes.
            slot => slot.insert(ForConfig {
                config: config.clone(),
                routes: (0..=config.routes.len())
                    .map(|_| RouteHandles::default())
                    .collect(),
            }),
        };
        let (index, name) = match route.and_then(|i| config.routes.get(i).map(|r| (i, r))) {
            Some((i, r)) => (i, &*r.name),
            None => (config.routes.len(), ""),
        };
        let Some(handles) = current.routes.get_mut(index) else {
            return;
        };
        handles.requests[decision_index(decision)]
            .get_or_insert_with(|| metrics.request(name, decision))
            .inc();
        handles
            .duration
            .get_or_insert_with(|| metrics.request_duration(name))
            .observe(seconds);
    }
}

/// `rategate_upstream_duration_seconds` handles by upstream name.
#[derive(Default)]
pub(crate) struct UpstreamStats {
    durations: Mutex<HashMap<Arc<str>, Histogram, ahash::RandomState>>,
}

impl UpstreamStats {
    pub(crate) fn observe(&self, metrics: &Metrics, upstream: &Arc<str>, seconds: f64) {
        let mut durations = self.durations.lock();
        if let Some(h) = durations.get(&**upstream) {
            h.observe(seconds);
            return;
        }
        // Label values are config names, so this map is as bounded as the registry itself.
        let h = metrics.upstream_duration.with_label_values(&[&**upstream]);
        h.observe(seconds);
        durations.insert(upstream.clone(), h);
    }
}
