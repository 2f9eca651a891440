//! Forwarding to one target of an upstream: which `UpstreamClient` (proxy/upstream_client:
//! connections, protocols, TLS) carries a request, the upstream's timeout, and what a failure
//! means for the client, the metrics, the logs and the caller choosing whether to try again.
//! Which target a request goes to is `proxy::pool`'s choice; this module talks to the one it is
//! given.
//!
//! Each proxy worker owns one `UpstreamPool` (see `server::workers`), so a pool is only touched
//! by its own thread and its connections' tasks run on that thread too. It keeps one client per
//! distinct `Endpoint` (one per target), across reloads (a reload that changes nothing about how
//! a target is reached keeps its connections).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HOST, UPGRADE};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::Either;
use hyper::body::Incoming;
use parking_lot::Mutex;

use super::response::GatewayError;
use super::stats::UpstreamStats;
use super::upstream_ceiling::{CeilingReached, Reclaim, UpstreamCeiling};
use super::upstream_client::{Endpoint, Failure, RequestBody, UpstreamClient};
use crate::config::compiled::{Upstream, UpstreamTarget};
use crate::metrics::Metrics;

/// How the client's own request body failed while it was being forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFault {
    /// Broken framing: a chunk size that is not hexadecimal or overflows, bad chunk ends.
    Malformed,
    /// The client closed or reset before the body ended.
    Gone,
}

/// A send that failed because reading the client's body failed, not because of the upstream.
/// hyper reports a failing request body as a user error whose source is the body's own error
/// (the client connection's `hyper::Error`); no other send error has that shape.
fn client_body_fault(err: &hyper::Error) -> Option<BodyFault> {
    use std::error::Error as _;
    if !err.is_user() {
        return None;
    }
    let body_err = err.source()?.downcast_ref::<hyper::Error>()?;
    let mut cause = body_err.source();
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(match io.kind() {
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
                    BodyFault::Malformed
                }
                _ => BodyFault::Gone,
            });
        }
        cause = e.source();
    }
    // An HTTP/2 stream reset by the client, or a connection that ended: nothing malformed.
    Some(BodyFault::Gone)
}

/// How a send failed, for the caller choosing whether to try again.
pub(crate) enum SendError {
    /// The connection could not be made, so nothing was sent: the request is given back (boxed:
    /// a failure is rare, a result is returned by every request).
    Unsent(Box<Request<RequestBody>>, GatewayError),
    /// No upstream connection may be opened (`proxy::upstream_ceiling`): nothing was sent, no
    /// target is to blame or counted, and no other target would fare better.
    Refused,
    /// The request was (or may have been) sent, or the client's own body failed.
    Sent {
        error: GatewayError,
        failure: SentFailure,
    },
}

/// What went wrong once the request was on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SentFailure {
    /// The connection failed before a response head arrived (`kind="reset"`).
    Reset,
    /// No response head within the upstream's timeout: a failure the target's health counts.
    Timeout,
    /// The client's body failed, or the answer cannot be relayed: sending again cannot help.
    Final,
}

impl SendError {
    fn sent(error: GatewayError, failure: SentFailure) -> Self {
        SendError::Sent { error, failure }
    }
}

/// Endpoints a worker keeps clients (and their idle connections) for.
const MAX_CLIENTS: usize = 1024;

pub(crate) struct UpstreamPool {
    /// One per endpoint met so far; a handful, so a scan beats hashing.
    clients: Mutex<Vec<Arc<UpstreamClient>>>,
    metrics: Arc<Metrics>,
    stats: UpstreamStats,
    /// Shared by every worker's pool.
    ceiling: Arc<UpstreamCeiling>,
}

impl UpstreamPool {
    pub(crate) fn new(metrics: Arc<Metrics>, ceiling: Arc<UpstreamCeiling>) -> Self {
        UpstreamPool {
            clients: Mutex::new(Vec::new()),
            metrics,
            stats: UpstreamStats::default(),
            ceiling,
        }
    }

    fn client(&self, upstream: &Upstream, target: &UpstreamTarget) -> Arc<UpstreamClient> {
        let mut clients = self.clients.lock();
        if let Some(c) = clients
            .iter()
            .find(|c| c.endpoint().serves(upstream, target))
        {
            return Arc::clone(c);
        }
        let client = Arc::new(UpstreamClient::new(
            Endpoint::of(upstream, target),
            Some(self.ceiling.clone()),
        ));
        let reclaim: Arc<dyn Reclaim> = client.clone();
        self.ceiling.register(Arc::downgrade(&reclaim));
        // Endpoints come and go with reloads and with the addresses a name resolves to: the
        // oldest is let go past the bound (a request still using it keeps its own handle; a
        // target still in use just connects afresh).
        if clients.len() >= MAX_CLIENTS {
            clients.remove(0);
        }
        clients.push(Arc::clone(&client));
        client
    }

    /// Send `req` (already rewritten for the upstream, its URI in origin form:
    /// `Upstream::uri_for`) to `target` and wait for the response head, bounded by the
    /// upstream's timeout (connecting included). The body streams afterwards.
    /// `te_trailers`: the client accepts trailers (see `UpstreamClient::round_trip`).
    pub(crate) async fn send(
        &self,
        upstream: &Upstream,
        target: &UpstreamTarget,
        mut req: Request<RequestBody>,
        te_trailers: bool,
    ) -> Result<Response<Incoming>, SendError> {
        // Like nginx and Kong by default, the upstream sees its own host name; the client's is
        // in X-Forwarded-Host. The value is built once per config, not per request.
        req.headers_mut().insert(HOST, target.host_header.clone());
        // Only a route that allows it relays `Upgrade` (`proxy::tunnel`); it is hop-by-hop and
        // removed from every other request.
        let upgrading = req.headers().contains_key(UPGRADE);
        // Whether the client has sent its whole body, asked only of a request that has one.
        let body_ended = match req.body_mut() {
            Either::Left(body) if !body.is_end_stream() => Some(body.watch()),
            _ => None,
        };
        let started = Instant::now();
        let client = self.client(upstream, target);
        // Half the timeout at most goes to waiting for a connection place, so such a wait ends
        // as a refusal (503 `overloaded`), never as this request's timeout (a target failure).
        let place_by = tokio::time::Instant::from_std(started) + upstream.timeout / 2;
        let result = tokio::time::timeout(
            upstream.timeout,
            client.round_trip(req, te_trailers, upgrading, place_by),
        )
        .await;
        let name = &*upstream.name;
        match result {
            // Without `Upgrade` any switch is unsolicited; relaying it would hand the client a
            // connection in a protocol nobody agreed on.
            Ok(Ok(resp)) if resp.status() == StatusCode::SWITCHING_PROTOCOLS && !upgrading => {
                self.protocol_error(
                    upstream,
                    "101 Switching Protocols without an upgrade request",
                );
                Err(SendError::sent(
                    GatewayError::UpstreamProtocol("unsolicited 101"),
                    SentFailure::Final,
                ))
            }
            Ok(Ok(resp)) => {
                self.stats.observe(
                    &self.metrics,
                    &upstream.name,
                    started.elapsed().as_secs_f64(),
                );
                Ok(resp)
            }
            Ok(Err(Failure::Connect(err, _))) if err.is::<CeilingReached>() => {
                // The gateway's own state: nothing was sent, the target is not to blame, and
                // another target would need a connection just the same.
                tracing::debug!(upstream = name, error = %err, "upstream connection refused");
                Err(SendError::Refused)
            }
            Ok(Err(failure)) => {
                if let Failure::Request(err) = &failure {
                    if let Some(fault) = client_body_fault(err) {
                        // The client's doing: no upstream error is counted, so no client can
                        // fire the upstream alert by sending a broken body.
                        tracing::debug!(upstream = name, error = %err, "client request body failed");
                        let error = match fault {
                            BodyFault::Malformed => GatewayError::BadBody,
                            BodyFault::Gone => GatewayError::ClientGone,
                        };
                        return Err(SendError::sent(error, SentFailure::Final));
                    }
                }
                let (kind, text) = match &failure {
                    Failure::Connect(err, _) => (classify_connect(err.as_ref()), err.to_string()),
                    Failure::Request(err) => ("reset", err.to_string()),
                };
                self.metrics
                    .upstream_errors
                    .with_label_values(&[name, kind])
                    .inc();
                tracing::warn!(
                    upstream = name,
                    target = &*target.label,
                    kind,
                    error = %text,
                    "upstream request failed"
                );
                let error = if kind == "connect_timeout" {
                    GatewayError::UpstreamTimeout
                } else {
                    GatewayError::UpstreamConnect(text)
                };
                Err(match failure {
                    Failure::Connect(_, unsent) => SendError::Unsent(unsent, error),
                    Failure::Request(_) => SendError::sent(error, SentFailure::Reset),
                })
            }
            Err(_) if body_ended.is_some_and(|ended| !ended.load(Ordering::Acquire)) => {
                // The upstream was still waiting for the client's body: the client's stall,
                // not counted against the upstream or the target, never retried.
                tracing::debug!(upstream = name, "client request body too slow");
                Err(SendError::sent(
                    GatewayError::ClientBodyTimeout,
                    SentFailure::Final,
                ))
            }
            Err(_) => {
                self.metrics
                    .upstream_errors
                    .with_label_values(&[name, "timeout"])
                    .inc();
                tracing::warn!(
                    upstream = name,
                    target = &*target.label,
                    timeout = ?upstream.timeout,
                    "upstream timed out"
                );
                Err(SendError::sent(
                    GatewayError::UpstreamTimeout,
                    SentFailure::Timeout,
                ))
            }
        }
    }

    /// Count and log a response the gateway refuses to relay (`kind="protocol"`).
    pub(crate) fn protocol_error(&self, upstream: &Upstream, what: &str) {
        self.metrics
            .upstream_errors
            .with_label_values(&[&*upstream.name, "protocol"])
            .inc();
        tracing::warn!(
            upstream = &*upstream.name,
            kind = "protocol",
            error = what,
            "upstream response not relayed"
        );
    }
}

/// A bounded vocabulary for `rategate_upstream_errors_total{kind}`.
fn classify_connect(err: &(dyn std::error::Error + 'static)) -> &'static str {
    let text = format!("{err:?}");
    if text.contains("timed out") || text.contains("TimedOut") {
        return "connect_timeout";
    }
    "connect"
}
