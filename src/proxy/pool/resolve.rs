//! Targets whose host is a name: the pool resolves the name itself (at start, on every reload
//! and every `resolve_interval`) and balances over the addresses it resolved to, each a target
//! of its own (its own health, in-flight count and metric series, labelled
//! `scheme://name:port (address)`). The connection goes to the address; `Host`, SNI and
//! certificate verification stay the name's (`UpstreamTarget::address`).
//!
//! A failed or empty resolution keeps the last good addresses; a name never resolved yet is a
//! single target the connector resolves per connection, as an address-less target always was.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::{Authority, Scheme};

use crate::config::compiled::UpstreamTarget;

/// The addresses kept per name: each is a target with its own metric series, so a name that
/// resolves to hundreds must not make hundreds of series.
pub(crate) const MAX_ADDRESSES: usize = 16;

/// A resolver that answers slower than this is treated as failed (the last addresses stay).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a name resolved to last, and when it is resolved again.
#[derive(Debug, Default)]
pub(super) struct Resolution {
    /// Sorted, at most `MAX_ADDRESSES`; empty until a resolution succeeds.
    pub(super) addresses: Vec<SocketAddr>,
    /// When the next resolution is due (ms on the pool's clock).
    pub(super) due_ms: u64,
    /// A lookup is running (at most one per name).
    pub(super) resolving: bool,
}

impl Resolution {
    /// Take a lookup's result; whether the addresses changed. A failure or an empty answer
    /// keeps the last good addresses.
    pub(super) fn update(
        &mut self,
        name: &Authority,
        found: Result<Vec<SocketAddr>, String>,
    ) -> bool {
        self.resolving = false;
        let found = match found {
            Ok(found) if !found.is_empty() => kept(found),
            Ok(_) | Err(_) => {
                let error = found.err().unwrap_or_else(|| "no addresses".to_owned());
                if self.addresses.is_empty() {
                    tracing::warn!(
                        name = name.as_str(),
                        error,
                        "upstream target name did not resolve; it is tried by name per connection"
                    );
                } else {
                    tracing::warn!(
                        name = name.as_str(),
                        error,
                        kept = self.addresses.len(),
                        "upstream target name did not resolve; the last addresses stay"
                    );
                }
                return false;
            }
        };
        if found == self.addresses {
            return false;
        }
        tracing::info!(
            name = name.as_str(),
            addresses = ?found,
            "upstream target name resolved to new addresses"
        );
        self.addresses = found;
        true
    }
}

/// The addresses kept from an answer: sorted (resolvers rotate their answers; the targets'
/// order, which `round_robin` follows, should not), without repeats, at most `MAX_ADDRESSES`.
fn kept(mut found: Vec<SocketAddr>) -> Vec<SocketAddr> {
    found.sort_unstable();
    found.dedup();
    found.truncate(MAX_ADDRESSES);
    found
}

/// Resolve `name` (a target's authority; the scheme's port when it has none).
pub(super) async fn lookup(name: &Authority, scheme: &Scheme) -> Result<Vec<SocketAddr>, String> {
    let port = name
        .port_u16()
        .unwrap_or(if *scheme == Scheme::HTTPS { 443 } else { 80 });
    let host = name.host();
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(found)) => Ok(found.collect()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {}s", LOOKUP_TIMEOUT.as_secs())),
    }
}

/// The targets `target` stands for: one per address its name resolved to (`addresses`), or
/// itself when there are none.
pub(super) fn expand(
    target: &UpstreamTarget,
    addresses: &[SocketAddr],
    out: &mut Vec<UpstreamTarget>,
) {
    if addresses.is_empty() {
        out.push(target.clone());
        return;
    }
    out.extend(addresses.iter().map(|address| UpstreamTarget {
        address: Some(*address),
        label: format!("{} ({})", target.label, address.ip()).into(),
        ..target.clone()
    }));
}
