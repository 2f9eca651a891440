//! Reloading the config, the one place every trigger goes through (SIGHUP, `POST /admin/reload`,
//! a change of the file seen by `watch`).
//!
//! A reload reads the file the running config came from, validates it whole and swaps it in only
//! on success; a failure leaves the running config untouched. Both outcomes are logged and counted
//! in `rategate_config_reloads_total{result}`. Requests in flight keep the snapshot they started
//! with. Counters and blocks live in the store, not in the config: blocks (kept per client)
//! survive any reload, and a policy's counters, keyed by its name and stored with its algorithm,
//! limit, window and burst, survive a reload that changes none of those.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Config, ConfigError, Live};
use crate::metrics::Metrics;

/// What asked for the reload (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    Signal,
    Admin,
    FileWatch,
}

impl Trigger {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "sighup",
            Trigger::Admin => "admin",
            Trigger::FileWatch => "file_watch",
        }
    }
}

/// Turns config text into a config: parse, validate, compile, and any check that needs more than
/// the text (the TLS files exist and parse). `path` names the file.
pub(crate) type Loader = dyn Fn(&Path, &str) -> Result<Config, ConfigError> + Send + Sync;

/// Called with the new config right after a successful swap.
pub(crate) type AfterSwap = dyn Fn(&Config) + Send + Sync;

pub(crate) struct Reloader {
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    loader: Box<Loader>,
    after_swap: Option<Box<AfterSwap>>,
    /// The text of the last reload attempt (or of the start), so the file watcher can skip
    /// events that changed nothing. Held while reloading, which also serializes reloads: two
    /// triggers at once cannot swap out of order.
    last_text: Mutex<Option<String>>,
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    pub(crate) fn new(live: Arc<Live>, metrics: Arc<Metrics>, loader: Box<Loader>) -> Self {
        let text = std::fs::read_to_string(&live.snapshot().source).ok();
        Reloader {
            live,
            metrics,
            loader,
            after_swap: None,
            last_text: Mutex::new(text),
        }
    }

    /// Run `hook` after every successful reload (e.g. to drop caches built on the old config).
    pub(crate) fn after_swap(mut self, hook: Box<AfterSwap>) -> Self {
        self.after_swap = Some(hook);
        self
    }

    pub(crate) fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Reload from the running config's file. Blocking (reads the file): call it from a blocking
    /// context, or through [`Reloader::reload_async`].
    pub(crate) fn reload(&self, trigger: Trigger) -> Result<Arc<Config>, ConfigError> {
        let mut last_text = self.last_text.lock();
        let current = self.live.snapshot();
        let path = current.source.clone();
        let loaded = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::io(&path, &e))
            .and_then(|text| {
                let config = (self.loader)(&path, &text);
                *last_text = Some(text);
                config
            });
        match loaded {
            Ok(new) => {
                let restart = needs_restart(&current, &new);
                if !restart.is_empty() {
                    tracing::warn!(
                        settings = restart.join(", "),
                        "these settings changed but only take effect after a restart"
                    );
                }
                self.live.swap(new);
                let current = self.live.snapshot();
                if let Some(hook) = &self.after_swap {
                    hook(&current);
                }
                self.metrics.config_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(
                    file = %path.display(),
                    trigger = trigger.as_str(),
                    "config reloaded"
                );
                Ok(current)
            }
            Err(err) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(
                    error = %err,
                    trigger = trigger.as_str(),
                    "config reload rejected; keeping the running config"
                );
                Err(err)
            }
        }
    }

    /// [`Reloader::reload`] on the blocking pool.
    pub(crate) async fn reload_async(
        self: &Arc<Self>,
        trigger: Trigger,
    ) -> Result<Arc<Config>, ConfigError> {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.reload(trigger)).await {
            Ok(result) => result,
            // Only a panic inside the loader gets here; the running config is untouched.
            Err(join) => Err(ConfigError {
                file: self.live.snapshot().source.clone(),
                line: None,
                column: None,
                key: String::new(),
                message: format!("reload failed: {join}"),
            }),
        }
    }

    /// Whether `text` differs from what the last reload (or the start) read.
    pub(crate) fn is_new_text(&self, text: &str) -> bool {
        self.last_text.lock().as_deref() != Some(text)
    }
}

/// Settings read once at start (listeners, store connection, alert queue): a reload validates
/// them but they only apply after a restart, which the operator is told.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let (o, n) = (&old.server, &new.server);
    if o.listen != n.listen {
        out.push("server.listen");
    }
    let tls_files = |c: &Config| {
        c.server.tls.as_ref().map(|t| {
            (
                t.cert.clone(),
                t.key.clone(),
                t.client_ca.clone(),
                t.client_auth,
            )
        })
    };
    if tls_files(old) != tls_files(new) {
        out.push("server.tls");
    }
    if o.header_read_timeout != n.header_read_timeout {
        out.push("server.header_read_timeout");
    }
    if o.max_header_bytes != n.max_header_bytes {
        out.push("server.max_header_bytes");
    }
    if o.shutdown_grace != n.shutdown_grace {
        out.push("server.shutdown_grace");
    }
    if o.idle_timeout != n.idle_timeout {
        out.push("server.idle_timeout");
    }
    if o.send_timeout != n.send_timeout {
        out.push("server.send_timeout");
    }
    if o.tunnel_idle_timeout != n.tunnel_idle_timeout {
        out.push("server.tunnel_idle_timeout");
    }
    if o.max_connections != n.max_connections {
        out.push("server.max_connections");
    }
    if old.admin.listen != new.admin.listen {
        out.push("admin.listen");
    }
    let (o, n) = (&old.store, &new.store);
    if o.kind != n.kind
        || o.url != n.url
        || o.key_prefix != n.key_prefix
        || o.timeout != n.timeout
        || o.on_error != n.on_error
        || o.max_memory_keys != n.max_memory_keys
    {
        out.push("store");
    }
    let queue = |c: &Config| {
        c.alerts
            .as_ref()
            .map_or(super::file::DEFAULT_ALERT_QUEUE_SIZE, |a| a.queue_size)
    };
    if queue(old) != queue(new) {
        out.push("alerts.queue_size");
    }
    out
}
