//! Thread-per-core serving: the proxy listener is served by one single-threaded tokio runtime per
//! CPU, each with its own upstream pool.
//!
//! Why not one work-stealing runtime: a proxied request crosses three tasks (the client
//! connection, the pooled upstream connection's task, and back). On a multi-threaded runtime
//! those tasks land on different workers, so every request pays cross-thread wake-ups, a parked
//! worker being unparked, and cache lines of the connection state moving between cores. Measured
//! with `benches/load/run.sh`, a single current-thread runtime already used less CPU per request
//! than the two-worker multi-threaded one. With one runtime per core and an upstream pool per
//! runtime, a request and its pooled upstream connection stay on one thread, the way nginx
//! workers run. The limiter, metrics and config snapshot stay shared (they are `Sync`, and their
//! critical sections never await).
//!
//! All workers accept from the same listening socket (one `dup` per worker, each registered in its
//! own runtime's epoll): the kernel hands each connection to one of them, and an idle worker tends
//! to win the accept, which balances better than `SO_REUSEPORT` hashing does for a few long-lived
//! keep-alive connections.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use super::listener::{self, ListenerSettings};
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::proxy::handler::Gateway;

/// How long a worker, once drained, waits for the charges and lease releases its requests owe
/// to reach the store (they run on the worker's runtime, which ends with it).
pub(crate) const SETTLE_FLUSH: Duration = Duration::from_secs(2);

/// Wait (bounded by [`SETTLE_FLUSH`]) for the settlements in flight; `app` reports what is left.
async fn flush_settlements(limiter: &Limiter) {
    limiter.settlements().flush(SETTLE_FLUSH).await;
}

/// How many proxy workers to run: `TOKIO_WORKER_THREADS` when set to a positive number (the knob
/// tokio's own multi-threaded runtime reads, kept working), else the CPUs this process may run on
/// (which honours `taskset` and cgroup CPU limits), at least 1.
pub(crate) fn worker_count() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Serve `listener` on one worker per entry of `gateways`: the first on the calling task (the
/// runtime this future runs on), every other on a thread of its own with a single-threaded
/// runtime. Returns once every worker has stopped accepting, drained (see `listener::serve`) and
/// flushed what its requests owe the store.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gateways: Vec<Arc<Gateway>>,
    metrics: Arc<Metrics>,
    settings: ListenerSettings,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut gateways = gateways.into_iter();
    let Some(first) = gateways.next() else {
        return Ok(());
    };
    let std_listener = listener.into_std()?;
    let mut done = Vec::new();
    for (i, gateway) in gateways.enumerate() {
        let listener = std_listener.try_clone()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tls, metrics, settings, shutdown) = (
            tls.clone(),
            metrics.clone(),
            settings.clone(),
            shutdown.clone(),
        );
        let (tx, rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("rategate-worker-{}", i + 1))
            .spawn(move || {
                runtime.block_on(async move {
                    // `from_std` registers the socket with this runtime's reactor, so it must run
                    // inside it.
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let limiter = gateway.limiter.clone();
                            listener::serve(listener, tls, gateway, metrics, settings, shutdown)
                                .await;
                            flush_settlements(&limiter).await;
                        }
                        Err(err) => tracing::error!(error = %err, "worker cannot listen"),
                    }
                });
                // Dropping the runtime here cancels what is left after the bounded drain.
                drop(tx);
            })?;
        done.push(rx);
    }
    let listener = TcpListener::from_std(std_listener)?;
    let limiter = first.limiter.clone();
    listener::serve(listener, tls, first, metrics, settings, shutdown).await;
    flush_settlements(&limiter).await;
    for rx in done {
        // An error only means the worker is gone, which is what we wait for.
        let _ = rx.await;
    }
    Ok(())
}
