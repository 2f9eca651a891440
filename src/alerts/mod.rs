//! Webhook alerts: a client was blocked, a client crossed the rejection threshold, the store fell
//! back or recovered.
//!
//! [`Alerter::notify`] never waits: it puts the alert on a bounded queue with `try_send` and, when
//! the queue is full, drops it and counts `rategate_alerts_total{result="dropped"}`. One background
//! task ([`deliver::run`]) posts the alerts in order, with retries and exponential backoff; store
//! state alerts are damped so a flapping store cannot flood the webhook (`flap`). The
//! `[alerts]` settings are read from the live config for every alert, so a reload turns alerts on,
//! off or elsewhere; only the queue's size is fixed at start.

pub(crate) mod deliver;
mod flap;
mod threshold;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::compiled::AlertThreshold;
use crate::config::Live;
use crate::metrics::Metrics;

pub(crate) use deliver::run;
use threshold::Tracker;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Alert {
    /// A client was blocked by a policy's `block_for` or through the admin API.
    ClientBlocked {
        client: String,
        /// `policy:<name>` or the admin's reason.
        reason: String,
        /// The policy whose `block_for` started the block (`None` for an admin block).
        policy: Option<String>,
        duration: Duration,
    },
    /// One client was rejected `rejections` times within `window` (reported once per window).
    RejectionThreshold {
        client: String,
        rejections: u64,
        window: Duration,
    },
    /// The store failed; requests are now answered per `store.on_error`.
    StoreFallback {
        store: &'static str,
        on_error: &'static str,
        error: String,
    },
    /// The store answers again.
    StoreRecovered { store: &'static str },
}

impl Alert {
    /// Stable machine name (`kind` in the JSON payload).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Alert::ClientBlocked { .. } => "client_blocked",
            Alert::RejectionThreshold { .. } => "rejections_threshold",
            Alert::StoreFallback { .. } => "store_fallback",
            Alert::StoreRecovered { .. } => "store_recovered",
        }
    }

    /// One human sentence.
    pub(crate) fn message(&self) -> String {
        let secs = |d: &Duration| crate::config::duration::format(*d);
        match self {
            Alert::ClientBlocked {
                client,
                reason,
                duration,
                ..
            } => format!("client {client} blocked for {} ({reason})", secs(duration)),
            Alert::RejectionThreshold {
                client,
                rejections,
                window,
            } => format!(
                "client {client} was rejected {rejections} times within {}",
                secs(window)
            ),
            Alert::StoreFallback {
                store,
                on_error,
                error,
            } => format!(
                "{store} store failing ({error}); requests handled per on_error = {on_error}"
            ),
            Alert::StoreRecovered { store } => format!("{store} store answers again"),
        }
    }
}

/// A cheap, cloneable handle for raising alerts. [`Alerter::disabled`] drops everything.
#[derive(Clone, Default)]
pub(crate) struct Alerter {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<Alert>,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    tracker: Tracker,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl Alerter {
    /// An alerter whose queue holds `queue_size` alerts, and the receiving end for
    /// [`deliver::run`].
    pub(crate) fn new(
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        queue_size: usize,
    ) -> (Alerter, mpsc::Receiver<Alert>) {
        let (tx, rx) = mpsc::channel(queue_size.max(1));
        let inner = Inner {
            tx,
            live,
            metrics,
            tracker: Tracker::default(),
        };
        (
            Alerter {
                inner: Some(Arc::new(inner)),
            },
            rx,
        )
    }

    /// An alerter that drops every alert (no `[alerts]`, tests, benches).
    pub(crate) fn disabled() -> Self {
        Alerter { inner: None }
    }

    /// Queue `alert` for delivery without waiting; dropped (and counted) when the queue is full,
    /// ignored when the running config has no `[alerts]`.
    pub(crate) fn notify(&self, alert: Alert) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.live.snapshot().alerts.is_none() {
            return;
        }
        match inner.tx.try_send(alert) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(alert)) => {
                inner.metrics.alerts.with_label_values(&["dropped"]).inc();
                tracing::warn!(kind = alert.kind(), "alert queue full; alert dropped");
            }
            // The delivery task is gone (shutting down).
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Count one rejection of `client` against `threshold`; raises one
    /// [`Alert::RejectionThreshold`] when the count reaches it within the window.
    pub(crate) fn rejected(&self, threshold: AlertThreshold, client: &str) {
        let Some(inner) = &self.inner else {
            return;
        };
        if let Some(rejections) = inner.tracker.count(client, threshold) {
            self.notify(Alert::RejectionThreshold {
                client: client.to_owned(),
                rejections,
                window: threshold.window,
            });
        }
    }
}
