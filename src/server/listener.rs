//! The proxy port: TCP or TLS, HTTP/1.1 and HTTP/2 on one port, on the shared accept loop
//! (`accept`) with a connection ceiling shared by every worker, the per-connection watchdog
//! (header read, idle and send timeouts; see `watchdog`), and a graceful drain bounded by
//! `shutdown_grace`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::accept::accept_loop;
use super::conn::{ConnServer, Listener};
use super::slots;
use super::watchdog::Timeouts;
use crate::auth::PeerCert;
use crate::ceiling::{Slot, Slots};
use crate::config::compiled::Server;
use crate::inflight::{Entered, InFlight};
use crate::metrics::Metrics;
use crate::proxy::handler::{ConnInfo, Gateway};

/// hyper refuses read buffers smaller than this.
const MIN_HYPER_BUF: usize = 8192;
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// How long connections cut at `shutdown_grace` get to drop their requests.
const CUT_WAIT: Duration = Duration::from_secs(1);

/// Listener settings fixed at start (changing them needs a restart, like nginx's `listen`).
#[derive(Debug, Clone)]
pub(crate) struct ListenerSettings {
    pub(crate) timeouts: Timeouts,
    pub(crate) max_header_bytes: usize,
    pub(crate) shutdown_grace: Duration,
    /// The connection ceiling, one for all workers.
    pub(crate) slots: Arc<Slots>,
}

impl ListenerSettings {
    /// `workers` sizes the descriptor reserve when `max_connections` is derived.
    pub(crate) fn new(s: &Server, workers: usize) -> Self {
        let derived = slots::default_max_connections(workers);
        let max = s.max_connections.unwrap_or(derived);
        if max > derived {
            tracing::warn!(
                max_connections = max,
                fd_limit = slots::fd_soft_limit(),
                "server.max_connections is above what the fd limit allows with upstream \
                 connections; accept may fail with EMFILE before the ceiling is reached"
            );
        }
        tracing::info!(max_connections = max, "proxy connection ceiling");
        ListenerSettings {
            timeouts: timeouts(s),
            max_header_bytes: s.max_header_bytes,
            shutdown_grace: s.shutdown_grace,
            slots: Slots::new(max),
        }
    }
}

/// The connection timeouts of `[server]`, which the admin port uses too.
pub(crate) fn timeouts(s: &Server) -> Timeouts {
    Timeouts {
        header_read: s.header_read_timeout,
        idle: s.idle_timeout,
        send: s.send_timeout,
        tunnel_idle: s.tunnel_idle_timeout,
    }
}

fn builder(settings: &ListenerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // A head larger than the buffer is answered 431 by hyper itself.
        .max_buf_size(settings.max_header_bytes.max(MIN_HYPER_BUF))
        .keep_alive(true);
    builder
        .http2()
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        // SETTINGS_ENABLE_CONNECT_PROTOCOL: WebSocket over HTTP/2 (RFC 8441), always advertised
        // so a reload that adds `upgrade` needs no new connections; a route without it refuses
        // the CONNECT (`proxy/extended_connect`).
        .enable_connect_protocol();
    builder
}

/// Serve until `shutdown` turns true, then stop accepting and drain in-flight requests for at
/// most `shutdown_grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    metrics: Arc<Metrics>,
    settings: ListenerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let server = Arc::new(ConnServer::new(
        builder(&settings),
        settings.timeouts,
        metrics.clone(),
        Listener::Proxy,
    ));
    let graceful = GracefulShutdown::new();
    // Connections still open when the grace ends are cut here, on this runtime, rather than
    // dropped with it: what their requests owe the store is then still settled.
    let serving = Arc::new(InFlight::default());
    let accepted = |stream: TcpStream, peer, slot| {
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            server: server.clone(),
            gateway: gateway.clone(),
            metrics: metrics.clone(),
            watcher: graceful.watcher(),
            header_read_timeout: settings.timeouts.header_read,
            _serving: serving.enter(),
            _slot: slot,
        };
        tokio::spawn(conn.run(stream, peer, tls.clone()));
    };
    accept_loop(
        &listener,
        Listener::Proxy,
        &settings.slots,
        &metrics,
        &mut shutdown,
        accepted,
    )
    .await;
    drop(listener);
    tracing::info!(grace = ?settings.shutdown_grace, "draining connections");
    // Tunnels (upgraded connections) have left hyper's graceful watch: they get the same grace.
    let drained = async {
        graceful.shutdown().await;
        server.tunnels_closed().await;
    };
    match tokio::time::timeout(settings.shutdown_grace, drained).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => {
            tracing::warn!("shutdown grace elapsed with requests still in flight; cutting them");
            server.cut();
            let _ = tokio::time::timeout(CUT_WAIT, serving.idle()).await;
        }
    }
}

struct Connection {
    server: Arc<ConnServer>,
    gateway: Arc<Gateway>,
    metrics: Arc<Metrics>,
    watcher: hyper_util::server::graceful::Watcher,
    header_read_timeout: Duration,
    _serving: Entered,
    _slot: Slot,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: std::net::SocketAddr, tls: Option<TlsAcceptor>) {
        let accepted = Instant::now();
        self.metrics.connections_active.inc();
        // Read once per connection: hyper serves a connection with upgrades or without for its
        // whole life, and with them costs about 800 instructions per request (callgrind).
        let upgrades = self.gateway.live.snapshot().upgrades;
        match tls {
            None => {
                let info = ConnInfo {
                    peer,
                    tls: false,
                    peer_cert: None,
                    upgrades,
                };
                self.serve(stream, info, accepted).await
            }
            Some(acceptor) => {
                // The handshake is bounded like a request head, or a silent client would hold
                // the connection forever.
                match tokio::time::timeout(self.header_read_timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(stream)) => {
                        // Parsed once per connection, not per request.
                        let peer_cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .and_then(|leaf| PeerCert::from_der(leaf))
                            .map(Arc::new);
                        let info = ConnInfo {
                            peer,
                            tls: true,
                            peer_cert,
                            upgrades,
                        };
                        self.serve(stream, info, accepted).await
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        self.metrics.connections_active.dec();
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        self.metrics.connections_active.dec();
                    }
                }
            }
        }
    }

    async fn serve<S>(self, stream: S, info: ConnInfo, accepted: Instant)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let gateway = self.gateway;
        let (peer, upgrades) = (info.peer, info.upgrades);
        let handler = move |req| {
            let gateway = gateway.clone();
            let info = info.clone();
            async move { gateway.handle(info, req).await }
        };
        self.server
            .serve(
                stream,
                accepted,
                Some(self.watcher),
                peer,
                upgrades,
                handler,
            )
            .await;
        self.metrics.connections_active.dec();
    }
}
