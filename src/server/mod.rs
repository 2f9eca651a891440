//! Accepting connections: the proxy listener, TLS, the per-core workers that serve it, the
//! connection ceiling and the per-connection watchdog (also used by the admin port).

pub(crate) mod accept;
pub(crate) mod conn;
pub(crate) mod listener;
pub(crate) mod slots;
pub(crate) mod tls;
pub(crate) mod watchdog;
pub(crate) mod workers;

use tokio::sync::watch;

/// Resolves once the shutdown flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    // Map the guard away inside: it is not Send and must not live in the caller's future.
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}
