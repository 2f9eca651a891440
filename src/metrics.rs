//! One explicit Prometheus registry. Label values come from config names (route, policy,
//! upstream) and fixed vocabularies (decision, kind, result) only, never from request data, so a
//! flood of random paths, addresses or keys cannot add a series.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for gateway and upstream latency: sub-millisecond resolution where a proxy lives.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Store calls are expected well under a millisecond.
/// Checks per Redis check script call (`store.batch_max` is at most 1024).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];
const STORE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// What became of a request, as the value of the `decision` label of `rategate_requests_total`
/// and the `decision` field of the access log (one per request, whichever layer refused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecisionLabel {
    Allowed,
    Limited,
    Blocked,
    Denied,
    ShadowLimited,
    NoRoute,
    /// Refused before routing: a malformed request head (no or several `Host` lines, a bad path,
    /// a head over `max_header_bytes`), answered 400 or 431; or a CONNECT the gateway does not
    /// tunnel (405, 501), refused before any store call.
    BadRequest,
    /// Refused by the route's `auth`: no token where one is required, or an invalid one with
    /// `on_invalid = "reject"` (401).
    Unauthorized,
}

impl DecisionLabel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DecisionLabel::Allowed => "allowed",
            DecisionLabel::Limited => "limited",
            DecisionLabel::Blocked => "blocked",
            DecisionLabel::Denied => "denied",
            DecisionLabel::ShadowLimited => "shadow_limited",
            DecisionLabel::NoRoute => "no_route",
            DecisionLabel::BadRequest => "bad_request",
            DecisionLabel::Unauthorized => "unauthorized",
        }
    }
}

/// Why the watchdog ended a connection (the `reason` label of
/// `rategate_connections_timed_out_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    HeaderRead,
    Idle,
    Send,
    /// An upgraded connection (tunnel) moved no bytes for `tunnel_idle_timeout`.
    TunnelIdle,
}

impl Expiry {
    pub(crate) const ALL: [Expiry; 4] = [
        Expiry::HeaderRead,
        Expiry::Idle,
        Expiry::Send,
        Expiry::TunnelIdle,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Expiry::HeaderRead => "header_read",
            Expiry::Idle => "idle",
            Expiry::Send => "send",
            Expiry::TunnelIdle => "tunnel_idle",
        }
    }
}

pub struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) requests: IntCounterVec,
    pub(crate) request_duration: HistogramVec,
    pub(crate) upstream_duration: HistogramVec,
    pub(crate) upstream_errors: IntCounterVec,
    /// Per target of an upstream (`target` is `scheme://host:port` from the config).
    pub(crate) target_requests: IntCounterVec,
    pub(crate) target_errors: IntCounterVec,
    pub(crate) target_ejected: IntGaugeVec,
    pub(crate) policy_rejections: IntCounterVec,
    pub(crate) store_duration: HistogramVec,
    pub(crate) store_errors: IntCounterVec,
    pub(crate) store_fallback_active: IntGauge,
    pub(crate) store_fallback_revocations: IntGauge,
    /// Entries the in-process stores evicted to stay within `max_memory_keys`, by store
    /// (`memory`, `fallback`, `deny_cache`) and kind of entry.
    pub(crate) store_evictions: IntCounterVec,
    /// Redis script calls by what they do (`check`: one per check script call, which carries one
    /// group of a request's keys or a batch of several requests' groups, `refund`, `penalize`);
    /// divided by `store_checks`, the calls per request.
    pub(crate) store_calls: IntCounterVec,
    /// Checks (one group of one request each) carried per check script call.
    pub(crate) store_check_batch: Histogram,
    /// Requests the Redis store checked.
    pub(crate) store_checks: IntCounter,
    /// Activity records (events, suspect counts, block index) the Redis store dropped: its queue
    /// was full, or a flush failed.
    pub(crate) store_activity_dropped: IntCounter,
    pub(crate) blocked_clients: IntGauge,
    pub(crate) config_reloads: IntCounterVec,
    pub(crate) connections_active: IntGauge,
    /// Connections closed at accept because `max_connections` were open, by listener.
    pub(crate) connections_rejected: IntCounterVec,
    /// Connections ended by the watchdog, by listener and reason (header_read, idle, send,
    /// tunnel_idle).
    pub(crate) connections_timed_out: IntCounterVec,
    /// Upstream connections open that count against the upstream connection ceiling (every
    /// one a request opened; health checks' are not counted).
    pub(crate) upstream_connections_open: IntGauge,
    /// Requests answered 503 `overloaded` because opening an upstream connection would have
    /// passed the ceiling.
    pub(crate) upstream_connections_refused: IntCounter,
    /// Upgraded connections (WebSocket tunnels) spliced to their upstream and still open.
    pub(crate) tunnels_open: IntGauge,
    /// Upgraded connections spliced to their upstream since start.
    pub(crate) tunnels: IntCounter,
    /// Webhook alerts by result: sent | failed (gave up after retries) | dropped (queue full).
    pub(crate) alerts: IntCounterVec,
    /// Requests on authenticated routes by `[[auth]]` name, result (verified, anonymous,
    /// rejected) and reason (`none`, `missing`, or why the token was invalid).
    pub(crate) auth: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("rategate_requests_total", "Requests by route and decision."),
            &["route", "decision"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "rategate_request_duration_seconds",
                "Whole request at the gateway, until the response head is sent.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "rategate_upstream_duration_seconds",
                "Upstream response head latency.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "rategate_upstream_errors_total",
                "Upstream failures by kind.",
            ),
            &["upstream", "kind"],
        )?;
        let target_requests = IntCounterVec::new(
            Opts::new(
                "rategate_upstream_target_requests_total",
                "Requests sent to one target of an upstream (retries included).",
            ),
            &["upstream", "target"],
        )?;
        let target_errors = IntCounterVec::new(
            Opts::new(
                "rategate_upstream_target_errors_total",
                "Failed connects and timeouts of one target (what ejects it).",
            ),
            &["upstream", "target"],
        )?;
        let target_ejected = IntGaugeVec::new(
            Opts::new(
                "rategate_upstream_target_ejected",
                "1 while a target is out of the balance (passive ejection or failed health checks).",
            ),
            &["upstream", "target"],
        )?;
        let policy_rejections = IntCounterVec::new(
            Opts::new(
                "rategate_policy_rejections_total",
                "Rejections by policy (shadow policies included).",
            ),
            &["policy"],
        )?;
        let store_duration = HistogramVec::new(
            HistogramOpts::new("rategate_store_duration_seconds", "Store call latency.")
                .buckets(STORE_BUCKETS.to_vec()),
            &["store"],
        )?;
        let store_errors = IntCounterVec::new(
            Opts::new("rategate_store_errors_total", "Store failures by kind."),
            &["store", "kind"],
        )?;
        let store_fallback_active = IntGauge::new(
            "rategate_store_fallback_active",
            "1 while the in-process fallback replaces the configured store.",
        )?;
        let store_fallback_revocations = IntGauge::new(
            "rategate_store_fallback_revocations",
            "Revocations the in-process fallback store holds, to refuse while the configured store fails.",
        )?;
        let store_evictions = IntCounterVec::new(
            Opts::new(
                "rategate_store_evictions_total",
                "Entries evicted from an in-process store to stay within its bound, by kind.",
            ),
            &["store", "kind"],
        )?;
        let store_calls = IntCounterVec::new(
            Opts::new(
                "rategate_store_calls_total",
                "Redis script calls on the request path, by call (check: one per script call, carrying one or more requests' checks).",
            ),
            &["call"],
        )?;
        let store_checks = IntCounter::new(
            "rategate_store_checks_total",
            "Requests checked against Redis (calls per request = calls / checks).",
        )?;
        let store_activity_dropped = IntCounter::new(
            "rategate_store_activity_dropped_total",
            "Activity records (events, suspect counts, block index) dropped before reaching Redis.",
        )?;
        let blocked_clients = IntGauge::new(
            "rategate_blocked_clients",
            "Clients currently blocked, as last seen by this instance.",
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new("rategate_config_reloads_total", "Config reloads by result."),
            &["result"],
        )?;
        let connections_active = IntGauge::new(
            "rategate_connections_active",
            "Open client connections on the proxy listener.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(target_requests.clone()))?;
        registry.register(Box::new(target_errors.clone()))?;
        registry.register(Box::new(target_ejected.clone()))?;
        registry.register(Box::new(policy_rejections.clone()))?;
        registry.register(Box::new(store_duration.clone()))?;
        let store_check_batch = Histogram::with_opts(
            HistogramOpts::new(
                "rategate_store_check_batch_size",
                "Checks (one group of one request each) carried by one Redis check script call.",
            )
            .buckets(BATCH_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(store_calls.clone()))?;
        registry.register(Box::new(store_check_batch.clone()))?;
        registry.register(Box::new(store_checks.clone()))?;
        registry.register(Box::new(store_activity_dropped.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(store_fallback_active.clone()))?;
        registry.register(Box::new(store_fallback_revocations.clone()))?;
        registry.register(Box::new(store_evictions.clone()))?;
        registry.register(Box::new(blocked_clients.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(connections_active.clone()))?;
        let alerts = IntCounterVec::new(
            Opts::new(
                "rategate_alerts_total",
                "Webhook alerts by result (sent, failed after retries, dropped on a full queue).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(alerts.clone()))?;
        let auth = IntCounterVec::new(
            Opts::new(
                "rategate_auth_total",
                "Requests on authenticated routes by auth section, result and reason.",
            ),
            &["auth", "result", "reason"],
        )?;
        registry.register(Box::new(auth.clone()))?;
        let connections_rejected = IntCounterVec::new(
            Opts::new(
                "rategate_connections_rejected_total",
                "Connections closed at once because the listener's connection ceiling was reached.",
            ),
            &["listener"],
        )?;
        let connections_timed_out = IntCounterVec::new(
            Opts::new(
                "rategate_connections_timed_out_total",
                "Connections closed by a timeout: header_read, idle, send or tunnel_idle.",
            ),
            &["listener", "reason"],
        )?;
        registry.register(Box::new(connections_rejected.clone()))?;
        registry.register(Box::new(connections_timed_out.clone()))?;
        let tunnels_open = IntGauge::new(
            "rategate_tunnels_open",
            "Upgraded connections (WebSocket) spliced to their upstream and still open.",
        )?;
        let tunnels = IntCounter::new(
            "rategate_tunnels_total",
            "Upgraded connections (WebSocket) spliced to their upstream.",
        )?;
        registry.register(Box::new(tunnels_open.clone()))?;
        registry.register(Box::new(tunnels.clone()))?;
        let upstream_connections_open = IntGauge::new(
            "rategate_upstream_connections_open",
            "Upstream connections open under the upstream connection ceiling (max_connections).",
        )?;
        let upstream_connections_refused = IntCounter::new(
            "rategate_upstream_connections_refused_total",
            "Requests answered 503 overloaded: a new upstream connection would pass the ceiling.",
        )?;
        registry.register(Box::new(upstream_connections_open.clone()))?;
        registry.register(Box::new(upstream_connections_refused.clone()))?;
        for listener in ["proxy", "admin"] {
            connections_rejected.with_label_values(&[listener]);
            for reason in Expiry::ALL {
                connections_timed_out.with_label_values(&[listener, reason.as_str()]);
            }
        }
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ... read
        // from /proc at scrape time.
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        // Every fixed-vocabulary series exists from the start, so a dashboard shows 0 rather than
        // "no data" and a rate() sees the first increment.
        for result in ["ok", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        for result in ["sent", "failed", "dropped"] {
            alerts.with_label_values(&[result]);
        }
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            target_requests,
            target_errors,
            target_ejected,
            policy_rejections,
            store_duration,
            store_errors,
            store_fallback_active,
            store_fallback_revocations,
            store_evictions,
            store_calls,
            store_check_batch,
            store_checks,
            store_activity_dropped,
            blocked_clients,
            config_reloads,
            connections_active,
            connections_rejected,
            connections_timed_out,
            upstream_connections_open,
            upstream_connections_refused,
            tunnels_open,
            tunnels,
            alerts,
            auth,
        })
    }

    pub(crate) fn request(&self, route: &str, decision: DecisionLabel) -> IntCounter {
        self.requests.with_label_values(&[route, decision.as_str()])
    }

    pub(crate) fn request_duration(&self, route: &str) -> Histogram {
        self.request_duration.with_label_values(&[route])
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(8192);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}
