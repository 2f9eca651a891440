//! Forwarding to upstreams over pooled HTTP/1.1 connections.
//!
//! Each proxy worker owns one `UpstreamPool` (see `server::workers`), so a pool is only touched
//! by its own thread and its connections' tasks run on that thread too. The pool is a queue of
//! hyper `SendRequest` handles per target (scheme, authority, connect timeout), kept across
//! reloads. Which target of an upstream a request goes to is `proxy::pool`'s choice; this module
//! talks to the one it is given.
//!
//! Why not hyper-util's legacy `Client`: under callgrind it cost about 9,400 instructions per
//! proxied request (a SipHash-keyed shared pool, a checkout racing a lazy connect, a spawned task
//! per request to return the connection, large futures moved around) out of about 57,000 for the
//! whole request. This pool does what the gateway needs of it and no more:
//! - HTTP/1.1 to the upstream (http or https via hyper-rustls), origin-form request targets;
//! - connections are reused first in first out, so every pooled connection stays warm and those
//!   idle longer than `POOL_IDLE_TIMEOUT` are dropped instead of used: the upstream's keep-alive
//!   (often 5 s) cannot close one under a request we are sending;
//! - a request that a reused connection turned down before writing it (the upstream had just
//!   closed it) is retried on another connection, as hyper-util did; a request already written
//!   is never retried;
//! - at most `POOL_MAX_IDLE_PER_HOST` idle connections per upstream and worker.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use parking_lot::Mutex;
use tower_service::Service;

use super::response::GatewayError;
use super::stats::UpstreamStats;
use crate::config::compiled::{Endpoint, Upstream};
use crate::metrics::Metrics;

type Connector = HttpsConnector<HttpConnector>;

/// What is sent upstream as a request body: the client's, streamed, or none (a request sent
/// again, which is only done for requests without a body).
pub(crate) type RequestBody = http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle pooled connections are dropped before a typical upstream keep-alive (often 5 s) would
/// close them under us.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
const POOL_MAX_IDLE_PER_HOST: usize = 512;

struct Pooled {
    sender: SendRequest<RequestBody>,
    /// When it was put back: a bound on how long the connection may have been idle.
    since: Instant,
}

/// The connections of one upstream address.
struct Host {
    scheme: Scheme,
    authority: Authority,
    connect_timeout: Duration,
    idle: VecDeque<Pooled>,
}

impl Host {
    fn serves(&self, u: &Upstream, t: &Endpoint) -> bool {
        self.connect_timeout == u.connect_timeout
            && self.authority == t.authority
            && self.scheme == t.scheme
    }

    /// The first connection ready for a request, dropping closed and long-idle ones met on the
    /// way. Connections still streaming an earlier response body are skipped, not dropped.
    fn checkout(&mut self, now: Instant) -> Option<SendRequest<RequestBody>> {
        let mut i = 0;
        while let Some(p) = self.idle.get(i) {
            if p.sender.is_closed() || now.saturating_duration_since(p.since) > POOL_IDLE_TIMEOUT {
                self.idle.remove(i);
            } else if p.sender.is_ready() {
                return self.idle.remove(i).map(|p| p.sender);
            } else {
                i += 1;
            }
        }
        None
    }
}

/// How a send failed, for the caller choosing whether to try again.
pub(crate) enum SendError {
    /// The connection could not be made, so nothing was sent: the request is given back (boxed:
    /// a failure is rare, a result is returned by every request).
    Unsent(Box<Request<RequestBody>>, GatewayError),
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

/// Why a round trip failed, for `rategate_upstream_errors_total{kind}` and the status code.
enum Failure {
    Connect(BoxError),
    Request(hyper::Error),
}

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

pub(crate) struct UpstreamPool {
    tls: Arc<rustls::ClientConfig>,
    /// One connector per distinct connect timeout (the connector owns that setting).
    connectors: Mutex<Vec<(Duration, Connector)>>,
    hosts: Mutex<Vec<Host>>,
    metrics: Arc<Metrics>,
    stats: UpstreamStats,
}

impl UpstreamPool {
    pub(crate) fn new(tls: rustls::ClientConfig, metrics: Arc<Metrics>) -> Self {
        UpstreamPool {
            tls: Arc::new(tls),
            connectors: Mutex::new(Vec::new()),
            hosts: Mutex::new(Vec::new()),
            metrics,
            stats: UpstreamStats::default(),
        }
    }

    /// A client trusting the bundled web PKI roots.
    pub(crate) fn with_webpki_roots(metrics: Arc<Metrics>) -> Self {
        Self::new(webpki_tls(), metrics)
    }

    fn connector(&self, connect_timeout: Duration) -> Connector {
        let mut connectors = self.connectors.lock();
        if let Some((_, c)) = connectors.iter().find(|(t, _)| *t == connect_timeout) {
            return c.clone();
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        connectors.push((connect_timeout, https.clone()));
        https
    }

    fn checkout(&self, upstream: &Upstream, target: &Endpoint) -> Option<SendRequest<RequestBody>> {
        let now = Instant::now();
        let mut hosts = self.hosts.lock();
        hosts
            .iter_mut()
            .find(|h| h.serves(upstream, target))
            .and_then(|h| h.checkout(now))
    }

    /// Put a connection back (it becomes ready once its response body has been read).
    fn checkin(&self, upstream: &Upstream, target: &Endpoint, sender: SendRequest<RequestBody>) {
        let pooled = Pooled {
            sender,
            since: Instant::now(),
        };
        let mut hosts = self.hosts.lock();
        let host = match hosts.iter().position(|h| h.serves(upstream, target)) {
            Some(i) => &mut hosts[i],
            None => {
                hosts.push(Host {
                    scheme: target.scheme.clone(),
                    authority: target.authority.clone(),
                    connect_timeout: upstream.connect_timeout,
                    idle: VecDeque::new(),
                });
                let last = hosts.len() - 1;
                &mut hosts[last]
            }
        };
        // Past the bound the handle is dropped, which closes its connection once idle.
        if host.idle.len() < POOL_MAX_IDLE_PER_HOST {
            host.idle.push_back(pooled);
        }
    }

    async fn connect(
        &self,
        upstream: &Upstream,
        target: &Endpoint,
    ) -> Result<SendRequest<RequestBody>, Failure> {
        let mut connector = self.connector(upstream.connect_timeout);
        let dst = Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| Failure::Connect(e.into()))?;
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(Failure::Connect)?;
        let io = connector.call(dst).await.map_err(Failure::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| Failure::Connect(e.into()))?;
        // The connection task runs on this worker's runtime, next to the requests using it.
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// On a failed connect the request comes back with the failure: nothing of it was sent.
    async fn round_trip(
        &self,
        upstream: &Upstream,
        target: &Endpoint,
        mut req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, (Failure, Option<Request<RequestBody>>)> {
        loop {
            let (mut sender, reused) = match self.checkout(upstream, target) {
                Some(sender) => (sender, true),
                None => match self.connect(upstream, target).await {
                    Ok(sender) => (sender, false),
                    Err(failure) => return Err((failure, Some(req))),
                },
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.checkin(upstream, target, sender);
                    return Ok(resp);
                }
                Err(mut err) => match err.take_message() {
                    // Never written: the pooled connection was closed under us. Another one
                    // (or a new one) gets it; each retry drops one pooled connection, so this
                    // ends.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err((Failure::Request(err.into_error()), None)),
                },
            }
        }
    }

    /// Send `req` (already rewritten for the upstream, its URI in origin form:
    /// `Upstream::uri_for`) to `target` and wait for the response head, bounded by the
    /// upstream's timeout. The body streams afterwards.
    pub(crate) async fn send(
        &self,
        upstream: &Upstream,
        target: &Endpoint,
        mut req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        // The upstream side always speaks HTTP/1.1, whatever the client used.
        *req.version_mut() = Version::HTTP_11;
        // Like nginx and Kong by default, the upstream sees its own host name; the client's is
        // in X-Forwarded-Host. The value is built once per config, not per request.
        req.headers_mut().insert(HOST, target.host_header.clone());
        let started = Instant::now();
        let result =
            tokio::time::timeout(upstream.timeout, self.round_trip(upstream, target, req)).await;
        let name = &*upstream.name;
        match result {
            // The gateway forwards no `Upgrade` (it is hop-by-hop), so any switch is unsolicited;
            // relaying it would hand the client a connection in a protocol nobody agreed on.
            Ok(Ok(resp)) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
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
            Ok(Err((failure, unsent))) => {
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
                    Failure::Connect(err) => (classify_connect(err.as_ref()), err.to_string()),
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
                Err(match unsent {
                    Some(req) => SendError::Unsent(Box::new(req), error),
                    None => SendError::sent(error, SentFailure::Reset),
                })
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

/// The TLS settings of upstream connections: the bundled web PKI roots, no client certificate.
pub(crate) fn webpki_tls() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A bounded vocabulary for `rategate_upstream_errors_total{kind}`.
fn classify_connect(err: &(dyn std::error::Error + 'static)) -> &'static str {
    let text = format!("{err:?}");
    if text.contains("timed out") || text.contains("TimedOut") {
        return "connect_timeout";
    }
    "connect"
}
