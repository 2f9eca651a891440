//! The side port: `/metrics`, `/healthz`, `/readyz`, the admin API under `/admin/*` and the
//! dashboard at `/`.
//!
//! `server` accepts and routes, `auth` decides who may call `/admin/*`, `api` has the handlers
//! (`revocations` those of `/admin/revocations`),
//! `input` validates what they read, `reply` shapes every answer, `dashboard` serves the page.

pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod dashboard;
pub(crate) mod input;
pub(crate) mod reply;
pub(crate) mod revocations;
pub(crate) mod server;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::alerts::Alerter;
use crate::config::reload::Reloader;
use crate::config::Live;
use crate::limiter::Limiter;
use crate::metrics::Metrics;

/// How often `rategate_blocked_clients` is refreshed from the store (admin changes refresh it at
/// once).
pub(crate) const BLOCKED_GAUGE_INTERVAL: Duration = Duration::from_secs(5);

pub(crate) struct AdminState {
    pub(crate) live: Arc<Live>,
    pub(crate) metrics: Arc<Metrics>,
    /// False while draining, so load balancers stop sending traffic first.
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) reloader: Arc<Reloader>,
    pub(crate) alerts: Alerter,
}

/// Set `rategate_blocked_clients` from the store's list of active blocks (kept as it was when the
/// store does not answer).
pub(crate) async fn refresh_blocked_gauge(limiter: &Limiter, metrics: &Metrics) {
    match limiter.blocks().await {
        Ok(blocks) => metrics.blocked_clients.set(api::gauge_value(blocks.len())),
        Err(e) => tracing::debug!(error = %e, "cannot count blocked clients"),
    }
}

/// Refresh `rategate_blocked_clients` every [`BLOCKED_GAUGE_INTERVAL`]: blocks also start inside
/// the store (`block_for`) and end by expiry, which no code path sees.
pub(crate) async fn refresh_blocked_gauge_forever(limiter: Arc<Limiter>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(BLOCKED_GAUGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        refresh_blocked_gauge(&limiter, &metrics).await;
    }
}
