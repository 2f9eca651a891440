//! Accepting connections: the proxy listener, TLS, and the per-core workers that serve it.

pub mod listener;
pub mod tls;
pub mod workers;

use tokio::sync::watch;

/// Resolves once the shutdown flag is set (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    // Map the guard away inside: it is not Send and must not live in the caller's future.
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}
