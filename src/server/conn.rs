//! Serving one accepted connection under its watchdog, for the proxy listener and the admin port.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};

use super::watchdog::{self, Ending, Reaper, Timeouts, Tracked, Watched};
use crate::body::BoxError;
use crate::metrics::{DecisionLabel, Metrics};
use crate::proxy::tunnel;

/// hyper's HTTP/2 keep-alive: a client silent for this long (or for `idle_timeout` if shorter) is
/// pinged, and closed if the ping is not answered within the same time.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);

/// Where a connection was accepted, for metrics and logs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listener {
    Proxy,
    Admin,
}

impl Listener {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Listener::Proxy => "proxy",
            Listener::Admin => "admin",
        }
    }
}

/// One listener's connection settings, shared by all its connections on one runtime.
pub(crate) struct ConnServer {
    builder: auto::Builder<TokioExecutor>,
    reaper: Reaper,
    metrics: Arc<Metrics>,
    listener: Listener,
}

impl ConnServer {
    /// Takes a builder with the listener's own limits set and adds the timeouts; starts the
    /// watchdog's sweeping task on the current runtime. hyper's HTTP/1
    /// header timeout is turned off: it starts at the end of each response, so it would cut idle
    /// keep-alive connections at `header_read_timeout`; the watchdog times heads and idleness
    /// separately.
    pub(crate) fn new(
        mut builder: auto::Builder<TokioExecutor>,
        timeouts: Timeouts,
        metrics: Arc<Metrics>,
        listener: Listener,
    ) -> Self {
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None);
        let ping = H2_PING_INTERVAL.min(timeouts.idle);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(ping))
            .keep_alive_timeout(ping);
        ConnServer {
            builder,
            reaper: Reaper::start(timeouts),
            metrics,
            listener,
        }
    }

    /// Resolves once no tunnel (upgraded connection) of this server is open.
    pub(crate) async fn tunnels_closed(&self) {
        self.reaper.tunnels_closed().await;
    }

    /// End every connection of this server now (a drain's grace is over).
    pub(crate) fn cut(&self) {
        self.reaper.cut();
    }

    /// Serve `io`, accepted at `accepted` (its first head is due from then), until the client or
    /// hyper ends the connection, the watchdog ends it (a timeout, or [`ConnServer::cut`]), or
    /// (with a graceful `watcher`) a drain finishes it. A response that switches protocols
    /// carries its tunnel (`proxy::tunnel`): the connection runs it once hyper has sent the 101,
    /// on this task, under the same watchdog (timed by `tunnel_idle`, cut at the end of a
    /// drain) and still holding its place under the connection ceiling. Only a connection served
    /// with `upgrades` can switch (hyper serves it so for its whole life).
    pub(crate) async fn serve<S, H, Fut, B>(
        &self,
        io: S,
        accepted: Instant,
        watcher: Option<Watcher>,
        peer: SocketAddr,
        upgrades: bool,
        handler: H,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        let clock = self.reaper.watch(accepted);
        let requests = clock.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let guard = requests.request_started(req.version());
            let response = handler(req);
            async move {
                let mut response = response.await;
                match tunnel::take(&mut response) {
                    Some(tunnel::Switch::Connection(run)) => guard.set_after_upgrade(run),
                    Some(tunnel::Switch::Stream(tunnel)) => guard.spawn_stream_tunnel(tunnel),
                    None => {}
                }
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, guard)))
            }
        });
        let io = TokioIo::new(Watched::new(io, clock.clone()));
        let builder = &self.builder;
        let upgraded = clock.clone();
        let served = async move {
            let ended = if upgrades {
                let conn = builder
                    .serve_connection_with_upgrades(io, service)
                    .into_owned();
                match watcher {
                    Some(watcher) => watcher.watch(conn).await,
                    None => conn.await,
                }
            } else {
                let conn = builder.serve_connection(io, service).into_owned();
                match watcher {
                    Some(watcher) => watcher.watch(conn).await,
                    None => conn.await,
                }
            };
            // hyper has handed the IO to the tunnel's client end (or the connection failed
            // first, and the tunnel ends at once); a drain waits for it through the reaper.
            if let Some(tunnel) = upgraded.upgraded() {
                tunnel.run.await;
            }
            ended
        };
        let listener = self.listener.as_str();
        // `biased`: the connection is what wakes the task nearly every time; the watchdog's
        // branch is one atomic load.
        tokio::select! {
            biased;
            ended = served => if let Err(err) = ended {
                // hyper answers a head it cannot parse (400) or that overflows its buffer (431)
                // itself, without calling the handler: count those here, as the handler counts
                // the requests it refuses before routing.
                if matches!(self.listener, Listener::Proxy)
                    && err.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse)
                {
                    self.metrics.request("", DecisionLabel::BadRequest).inc();
                }
                tracing::debug!(listener, %peer, error = %err, "connection ended with an error");
            },
            ending = watchdog::ended(&clock) => match ending {
                Ending::Cut => {
                    tracing::debug!(listener, %peer, "connection cut at shutdown_grace");
                }
                Ending::Expired(why) => {
                    self.metrics
                        .connections_timed_out
                        .with_label_values(&[listener, why.as_str()])
                        .inc();
                    tracing::debug!(listener, %peer, reason = why.as_str(), "connection timed out");
                }
            },
        }
    }
}
