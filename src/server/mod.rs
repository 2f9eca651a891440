//! Accepting connections: the proxy listener, TLS, the per-core workers that serve it, the
//! connection ceiling and the per-connection watchdog (also used by the admin port).

pub mod accept;
pub mod conn;
pub mod listener;
pub mod slots;
pub mod tls;
pub mod watchdog;
pub mod workers;

use tokio::sync::watch;

/// Resolves once the shutdown flag is set (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    // Map the guard away inside: it is not Send and must not live in the caller's future.
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}
