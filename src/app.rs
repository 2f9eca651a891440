//! Wires the pieces together: store and limiter, proxy listener, admin side port, signals
//! (SIGTERM/SIGINT drain, SIGHUP reload), the config file watch, alerts and shutdown.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::server as admin;
use crate::admin::AdminState;
use crate::alerts::{self, Alerter};
use crate::clock::SystemClock;
use crate::config::compiled::{StoreKind, StoreSettings};
use crate::config::file::DEFAULT_ALERT_QUEUE_SIZE;
use crate::config::reload::{Reloader, Trigger};
use crate::config::{self, Config, ConfigError, Live};
use crate::limiter::cache::DenyCache;
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::proxy::handler::Gateway;
use crate::proxy::pool::Targets;
use crate::proxy::upstream::UpstreamPool;
use crate::proxy::upstream_ceiling::UpstreamCeiling;
use crate::server::listener::ListenerSettings;
use crate::server::tls::{self, TlsError};
use crate::server::workers;
use crate::store::memory::Evictions;
use crate::store::redis::Invalidation;
use crate::store::{AnyStore, MemoryStore, RedisStore, StoreError};

/// How often JWKS files are re-read.
const JWKS_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Re-read the running config's JWKS files every second and swap in changed keys (a reload
/// reads them afresh anyway). Polling the file's contents sees every way of replacing it (an
/// editor's rename, a ConfigMap's symlink swap) without a watch per directory.
async fn refresh_jwks_forever(live: Arc<config::Live>) {
    let mut tick = tokio::time::interval(JWKS_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let config = live.snapshot();
        for auth in &config.auths {
            auth.verifier.refresh(&auth.name).await;
        }
    }
}

/// How long start-up waits for the store's first connection before serving anyway.
const STORE_CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot create metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot set up the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Checks that need more than the TOML itself (the TLS files exist and parse), reported like
/// any other config error so `check` catches them too.
pub fn preflight(config: &Config) -> Result<(), ConfigError> {
    if let Some(files) = &config.server.tls {
        tls::server_config(files).map_err(|e| ConfigError {
            file: config.source.clone(),
            line: None,
            column: None,
            key: "server.tls".into(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

pub fn run(config: Config) -> Result<(), AppError> {
    // The main thread runs the admin port, signals and the first proxy worker; the other proxy
    // workers get threads of their own (see `server::workers` for why not a multi-threaded
    // runtime).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?;
    runtime.block_on(serve(config))
}

pub(crate) async fn serve(config: Config) -> Result<(), AppError> {
    // Only ring is in the build; installing it explicitly keeps rustls from guessing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new()?);
    let tls = match &config.server.tls {
        Some(files) => Some(TlsAcceptor::from(tls::server_config(files)?)),
        None => None,
    };
    let listener = bind(config.server.listen).await?;
    let admin_listener = bind(config.admin.listen).await?;
    let worker_count = workers::worker_count();
    let settings = ListenerSettings::new(&config.server, worker_count);
    let admin_timeouts = crate::server::listener::timeouts(&config.server);
    let alert_queue = config
        .alerts
        .as_ref()
        .map_or(DEFAULT_ALERT_QUEUE_SIZE, |a| a.queue_size);
    let store_settings = config.store.clone();
    let live = Arc::new(Live::new(config));

    let (alerts, alert_rx) = Alerter::new(live.clone(), metrics.clone(), alert_queue);
    let limiter = Arc::new(
        build_limiter(&store_settings, metrics.clone())
            .await?
            .with_alerts(alerts.clone()),
    );
    // Readiness is right from the first answer of the admin port: probed once before serving,
    // then in the background.
    limiter.probe_store().await;
    let cached = limiter.clone();
    let reloader = Arc::new(
        Reloader::new(live.clone(), metrics.clone(), Box::new(load_checked))
            // Policies may have changed: decisions cached under the old ones are forgotten.
            .after_swap(Box::new(move |_| cached.clear_cache())),
    );
    // One gateway per proxy worker: shared config, limiter and metrics, but an upstream pool of
    // its own, so a request and its pooled upstream connection stay on one thread.
    // Which target of an upstream gets a request is one decision for the whole process; the
    // connections to a target are still each worker's own.
    let targets = Arc::new(Targets::new(live.clone(), metrics.clone()));
    // Before the first request: names balance over their addresses from the start.
    targets.resolve_names().await;
    // Upstream connections get as many places as client connections: the derived ceiling
    // halves the descriptors between the two sides.
    let upstream_ceiling = UpstreamCeiling::new(settings.slots.max(), &metrics);
    let gateways: Vec<Arc<Gateway>> = (0..worker_count)
        .map(|_| {
            Arc::new(Gateway {
                alerts: alerts.clone(),
                ..Gateway::new(
                    live.clone(),
                    limiter.clone(),
                    UpstreamPool::new(metrics.clone(), upstream_ceiling.clone()),
                    targets.clone(),
                    metrics.clone(),
                )
            })
        })
        .collect();
    let ready = Arc::new(AtomicBool::new(true));
    let (stop_tx, stop_rx) = watch::channel(false);
    // The admin port outlives the proxy's drain, so /readyz answers 503 (not a refused
    // connection) while in-flight requests finish.
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);

    let admin_state = Arc::new(AdminState {
        live: live.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
        limiter: limiter.clone(),
        reloader: reloader.clone(),
        alerts,
    });
    let signals = Signals::install()?;
    let admin_addr = admin_listener.local_addr().ok();
    let mut tasks = vec![
        tokio::spawn(admin::serve(
            admin_listener,
            admin_state,
            admin_timeouts,
            admin_stop_rx,
        )),
        tokio::spawn(alerts::run(alert_rx, live.clone(), metrics.clone())),
        tokio::spawn(crate::admin::refresh_blocked_gauge_forever(
            limiter.clone(),
            metrics.clone(),
        )),
        tokio::spawn(limiter.clone().probe_store_forever()),
        tokio::spawn(targets.run()),
        tokio::spawn(signals.run(reloader.clone(), ready, limiter.clone(), stop_tx)),
        tokio::spawn(refresh_jwks_forever(live.clone())),
    ];
    match config::watch::spawn(reloader) {
        Ok(task) => tasks.push(task),
        // Reloading still works by SIGHUP and the admin API.
        Err(err) => tracing::warn!(error = %err, "config file changes will not be picked up"),
    }
    // Logged once everything is in place (the file watch included): tests and scripts take
    // these lines to mean "ready".
    log_listening(&listener, admin_addr, tls.is_some());

    let served = workers::serve(listener, tls, gateways, metrics, settings, stop_rx).await;
    report_settlements(&limiter);
    limiter.store().flush_activity().await;
    let _ = admin_stop_tx.send(true);
    for task in tasks {
        task.abort();
    }
    served.map_err(AppError::Runtime)?;
    tracing::info!("rategate stopped");
    Ok(())
}

/// The limiter over the store `settings` choose, built as the gateway builds it (integration
/// tests build theirs here too). Never fails for an unreachable Redis: see [`open_store`].
pub async fn build_limiter(
    settings: &StoreSettings,
    metrics: Arc<Metrics>,
) -> Result<Limiter, StoreError> {
    let (store, cache) = open_store(settings, &metrics).await?;
    let limiter = Limiter::new(store, settings, metrics);
    Ok(match cache {
        Some(cache) => limiter.with_deny_cache(cache),
        None => limiter,
    })
}

/// The store `settings` choose: the in-process store, or Redis with the local deny cache its
/// pub/sub invalidations keep current. Redis gets a moment to connect so the first requests need
/// not take the on_error path; an unreachable Redis never stops the gateway from starting (it is
/// handled per `on_error` until it answers). Only an unusable URL is an error.
async fn open_store(
    settings: &StoreSettings,
    metrics: &Metrics,
) -> Result<(AnyStore, Option<Arc<DenyCache>>), StoreError> {
    match settings.kind {
        StoreKind::Memory => {
            let store = MemoryStore::new(settings.max_memory_keys, Arc::new(SystemClock))
                .with_evictions(Evictions::new(&metrics.store_evictions, "memory"));
            Ok((AnyStore::Memory(store), None))
        }
        StoreKind::Redis => {
            let cache = Arc::new(
                DenyCache::new(settings.max_memory_keys.min(100_000))
                    .with_evictions(metrics.store_evictions.clone()),
            );
            let sink = cache.clone();
            let store = RedisStore::connect(
                settings,
                Arc::new(move |inv: Invalidation| sink.invalidate(&inv)),
            )?
            .with_metrics(metrics);
            if !store.wait_connected(STORE_CONNECT_WAIT).await {
                tracing::warn!(
                    on_error = ?settings.on_error,
                    "Redis not reachable yet; serving per store.on_error until it is"
                );
            }
            Ok((AnyStore::Redis(store), Some(cache)))
        }
    }
}

/// Load config text as a reload does: validate and compile, then the checks that need files.
fn load_checked(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let config = config::load_str(path, text)?;
    preflight(&config)?;
    Ok(config)
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

fn log_listening(proxy: &TcpListener, admin: Option<std::net::SocketAddr>, tls: bool) {
    if let Ok(addr) = proxy.local_addr() {
        tracing::info!(addr = %addr, tls, "proxy listening");
    }
    if let Some(addr) = admin {
        tracing::info!(addr = %addr, "admin listening");
    }
}

/// Say what the drain could not settle: charges and lease releases that never reached the store
/// (the leases expire by themselves; the charges are lost).
fn report_settlements(limiter: &Limiter) {
    let settlements = limiter.settlements();
    let pending = settlements.pending();
    if pending > 0 {
        tracing::warn!(
            pending,
            deadline = ?workers::SETTLE_FLUSH,
            "charges and lease releases could not reach the store before exit"
        );
    }
    let failed = settlements.failed_since_drain();
    if failed > 0 {
        tracing::warn!(
            failed,
            "charges and lease releases during the drain could not reach the store"
        );
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, AppError> {
        let make = |kind| signal(kind).map_err(AppError::Signals);
        Ok(Signals {
            term: make(SignalKind::terminate())?,
            int: make(SignalKind::interrupt())?,
            hup: make(SignalKind::hangup())?,
        })
    }

    async fn run(
        mut self,
        reloader: Arc<Reloader>,
        ready: Arc<AtomicBool>,
        limiter: Arc<Limiter>,
        stop: watch::Sender<bool>,
    ) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                // The outcome is logged and counted by the reloader.
                _ = self.hup.recv() => { let _ = reloader.reload_async(Trigger::Signal).await; }
            }
        }
        // Readiness drops first so load balancers stop sending before connections close.
        ready.store(false, Ordering::SeqCst);
        limiter.settlements().begin_drain();
        tracing::info!("shutdown requested; draining");
        let _ = stop.send(true);
        // A second signal means "now".
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        tracing::warn!("second signal: exiting without waiting for the drain");
        // `exit` runs no destructors: the lines logged so far are written first.
        crate::telemetry::flush();
        std::process::exit(130);
    }
}
