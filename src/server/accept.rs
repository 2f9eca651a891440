//! The accept loop both ports share: backoff when the process is out of descriptors, and the
//! connection ceiling. The proxy port adds TLS and a graceful drain around it (`listener`); a
//! plain port (the admin port) is [`serve_plain`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::conn::{ConnServer, Listener};
use super::slots;
use super::watchdog::Timeouts;
use crate::body::BoxError;
use crate::ceiling::{Slot, Slots};
use crate::metrics::Metrics;

/// How long the accept loop waits when the process is out of descriptors: long enough not to
/// spin, short enough to serve again soon after connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accept on `listener` until `shutdown` turns true, handing each connection that gets one of
/// `slots` to `accepted`. A connection over the ceiling is closed at once and counted.
pub(crate) async fn accept_loop(
    listener: &TcpListener,
    kind: Listener,
    slots: &Arc<Slots>,
    metrics: &Metrics,
    shutdown: &mut watch::Receiver<bool>,
    mut accepted: impl FnMut(TcpStream, SocketAddr, Slot),
) {
    let mut accept_failing = false;
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let (stream, peer) = match conn {
                    Ok(conn) => conn,
                    Err(err) => {
                        backoff(&err, &mut accept_failing, kind.as_str()).await;
                        continue;
                    }
                };
                accept_failing = false;
                let Some(slot) = slots.acquire() else {
                    // Closing at once frees the descriptor; holding it would let a flood of
                    // silent connections starve the upstream and Redis sockets.
                    metrics.connections_rejected.with_label_values(&[kind.as_str()]).inc();
                    drop(stream);
                    continue;
                };
                accepted(stream, peer, slot);
            }
            _ = super::stopped(shutdown) => break,
        }
    }
}

/// Serve plain TCP with `service` until `shutdown` turns true: at most `max_connections` at once,
/// each under `timeouts`. Connections still open then are not drained; they end with the runtime.
pub(crate) async fn serve_plain<H, Fut, B>(
    listener: TcpListener,
    kind: Listener,
    max_connections: usize,
    timeouts: Timeouts,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    service: H,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let server = Arc::new(ConnServer::new(
        auto::Builder::new(TokioExecutor::new()),
        timeouts,
        metrics.clone(),
        kind,
    ));
    let slots = Slots::new(max_connections);
    let serve = |stream: TcpStream, peer, slot: Slot| {
        let accepted = Instant::now();
        let server = server.clone();
        let service = service.clone();
        tokio::spawn(async move {
            server
                .serve(stream, accepted, None, peer, false, service)
                .await;
            drop(slot);
        });
    };
    accept_loop(&listener, kind, &slots, &metrics, &mut shutdown, serve).await;
}

/// After a failed accept: out of descriptors (or memory), wait before the next try instead of
/// spinning on a socket that stays readable; anything else concerns one connection only.
async fn backoff(err: &std::io::Error, failing: &mut bool, listener: &'static str) {
    if !slots::is_resource_exhaustion(err) {
        tracing::debug!(listener, error = %err, "accept failed");
        return;
    }
    // One warning per streak, not twenty a second.
    if !*failing {
        tracing::warn!(listener, error = %err, "accept failed; retrying every 50ms");
        *failing = true;
    }
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}
