//! Wires the pieces together: store and limiter, proxy listener, admin side port, signals
//! (SIGTERM/SIGINT drain, SIGHUP reload) and shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::server::{self as admin, AdminState};
use crate::clock::SystemClock;
use crate::config::{self, Config, ConfigError, Live};
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::proxy::handler::Gateway;
use crate::proxy::upstream::UpstreamPool;
use crate::server::listener::ListenerSettings;
use crate::server::tls::{self, TlsError};
use crate::server::workers;
use crate::store::memory::MemoryStore;
use crate::store::AnyStore;

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

pub async fn serve(config: Config) -> Result<(), AppError> {
    // Only ring is in the build; installing it explicitly keeps rustls from guessing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::new()?);
    let store = AnyStore::Memory(MemoryStore::new(
        config.store.max_memory_keys,
        Arc::new(SystemClock),
    ));
    let limiter = Arc::new(Limiter::new(store, &config.store, metrics.clone()));
    let tls = match &config.server.tls {
        Some(files) => Some(TlsAcceptor::from(tls::server_config(files)?)),
        None => None,
    };
    let listener = bind(config.server.listen).await?;
    let admin_listener = bind(config.admin.listen).await?;
    let settings = ListenerSettings::from(&config.server);
    log_listening(&listener, &admin_listener, tls.is_some());

    let live = Arc::new(Live::new(config));
    // One gateway per proxy worker: shared config, limiter and metrics, but an upstream pool of
    // its own, so a request and its pooled upstream connection stay on one thread.
    let gateways: Vec<Arc<Gateway>> = (0..workers::worker_count())
        .map(|_| {
            Arc::new(Gateway {
                live: live.clone(),
                limiter: limiter.clone(),
                upstreams: UpstreamPool::with_webpki_roots(metrics.clone()),
                metrics: metrics.clone(),
                access_log: true,
                stats: Default::default(),
            })
        })
        .collect();
    let ready = Arc::new(AtomicBool::new(true));
    let (stop_tx, stop_rx) = watch::channel(false);

    let admin_state = Arc::new(AdminState {
        live: live.clone(),
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin_state, stop_rx.clone()));
    let signals = Signals::install()?;
    tokio::spawn(signals.run(live, metrics.clone(), ready, stop_tx));

    let served = workers::serve(listener, tls, gateways, metrics, settings, stop_rx).await;
    admin_task.abort();
    served.map_err(AppError::Runtime)?;
    tracing::info!("rategate stopped");
    Ok(())
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

fn log_listening(proxy: &TcpListener, admin: &TcpListener, tls: bool) {
    if let Ok(addr) = proxy.local_addr() {
        tracing::info!(addr = %addr, tls, "proxy listening");
    }
    if let Ok(addr) = admin.local_addr() {
        tracing::info!(addr = %addr, "admin listening");
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
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
        stop: watch::Sender<bool>,
    ) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                _ = self.hup.recv() => reload(&live, &metrics),
            }
        }
        // Readiness drops first so load balancers stop sending before connections close.
        ready.store(false, Ordering::SeqCst);
        tracing::info!("shutdown requested; draining");
        let _ = stop.send(true);
        // A second signal means "now".
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        tracing::warn!("second signal: exiting without waiting for the drain");
        std::process::exit(130);
    }
}

/// Reload the config from its file; a config that fails validation is rejected whole and the
/// old one keeps serving.
pub fn reload(live: &Live, metrics: &Metrics) {
    let source = live.snapshot().source.clone();
    match config::load(&source).and_then(|c| preflight(&c).map(|()| c)) {
        Ok(new) => {
            live.swap(new);
            metrics.config_reloads.with_label_values(&["ok"]).inc();
            tracing::info!(file = %source.display(), "config reloaded");
        }
        Err(err) => {
            metrics.config_reloads.with_label_values(&["error"]).inc();
            tracing::error!(error = %err, "config reload rejected; keeping the running config");
        }
    }
}
