//! The accept loop: TCP or TLS, HTTP/1.1 and HTTP/2 on one port, the header read timeout that
//! guards against slowloris, and a graceful drain bounded by `shutdown_grace`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::compiled::Server;
use crate::inflight::{Entered, InFlight};
use crate::metrics::{Decision, Metrics};
use crate::proxy::handler::{ConnInfo, Gateway};

/// hyper refuses read buffers smaller than this.
const MIN_HYPER_BUF: usize = 8192;
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// How long connections cut at `shutdown_grace` get to drop their requests.
const CUT_WAIT: Duration = Duration::from_secs(1);

/// Listener settings fixed at start (changing them needs a restart, like nginx's `listen`).
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
}

impl From<&Server> for ListenerSettings {
    fn from(s: &Server) -> Self {
        ListenerSettings {
            header_read_timeout: s.header_read_timeout,
            max_header_bytes: s.max_header_bytes,
            shutdown_grace: s.shutdown_grace,
        }
    }
}

fn builder(settings: &ListenerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Without a timer hyper silently ignores header_read_timeout.
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        // A head larger than the buffer is answered 431 by hyper itself.
        .max_buf_size(settings.max_header_bytes.max(MIN_HYPER_BUF))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(20)));
    builder
}

/// Serve until `shutdown` turns true, then stop accepting and drain in-flight requests for at
/// most `shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    metrics: Arc<Metrics>,
    settings: ListenerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(builder(&settings));
    let graceful = GracefulShutdown::new();
    // Connections still open when the grace ends are cut here, on this runtime, rather than
    // dropped with it: what their requests owe the store is then still settled.
    let serving = Arc::new(InFlight::default());
    let (cut, cut_rx) = watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = Connection {
                    builder: builder.clone(),
                    gateway: gateway.clone(),
                    metrics: metrics.clone(),
                    watcher: graceful.watcher(),
                    header_read_timeout: settings.header_read_timeout,
                    cut: cut_rx.clone(),
                    _serving: serving.enter(),
                };
                let tls = tls.clone();
                tokio::spawn(conn.run(stream, peer, tls));
            }
            _ = crate::server::stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    tracing::info!(grace = ?settings.shutdown_grace, "draining connections");
    match tokio::time::timeout(settings.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => {
            tracing::warn!("shutdown grace elapsed with requests still in flight; cutting them");
            let _ = cut.send(true);
            let _ = tokio::time::timeout(CUT_WAIT, serving.idle()).await;
        }
    }
}

struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    gateway: Arc<Gateway>,
    metrics: Arc<Metrics>,
    watcher: hyper_util::server::graceful::Watcher,
    header_read_timeout: Duration,
    /// Set when the shutdown grace has elapsed.
    cut: watch::Receiver<bool>,
    _serving: Entered,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: std::net::SocketAddr, tls: Option<TlsAcceptor>) {
        self.metrics.connections_active.inc();
        match tls {
            None => self.serve(stream, ConnInfo { peer, tls: false }).await,
            Some(acceptor) => {
                // The handshake is bounded like a request head, or a silent client would hold
                // the connection forever.
                match tokio::time::timeout(self.header_read_timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(stream)) => self.serve(stream, ConnInfo { peer, tls: true }).await,
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

    async fn serve<S>(self, stream: S, info: ConnInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let gateway = self.gateway;
        let service = service_fn(move |req| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle(info, req).await) }
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let mut cut = self.cut;
        tokio::select! {
            served = self.watcher.watch(conn) => {
                if let Err(err) = served {
                    // hyper answers a head it cannot parse (400) or that overflows its buffer
                    // (431) itself, without calling the handler: count those here, as the
                    // handler counts the requests it refuses before routing.
                    if err
                        .downcast_ref::<hyper::Error>()
                        .is_some_and(hyper::Error::is_parse)
                    {
                        self.metrics.request("", Decision::BadRequest).inc();
                    }
                    tracing::debug!(peer = %info.peer, error = %err, "connection ended with an error");
                }
            }
            () = crate::server::stopped(&mut cut) => {
                tracing::debug!(peer = %info.peer, "connection cut at shutdown_grace");
            }
        }
        self.metrics.connections_active.dec();
    }
}
