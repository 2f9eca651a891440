//! Forwarding to upstreams over pooled HTTP/1.1 connections.
//!
//! Each proxy worker owns one `UpstreamPool` (see `server::workers`), so a pool is only touched
//! by its own thread and its connections' tasks run on that thread too. The pool is a queue of
//! hyper `SendRequest` handles per (scheme, authority, connect timeout), kept across reloads.
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

use http::header::UPGRADE;
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
use crate::config::compiled::Upstream;
use crate::metrics::Metrics;

type Connector = HttpsConnector<HttpConnector>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle pooled connections are dropped before a typical upstream keep-alive (often 5 s) would
/// close them under us.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
const POOL_MAX_IDLE_PER_HOST: usize = 512;

struct Pooled {
    sender: SendRequest<Incoming>,
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
    fn serves(&self, u: &Upstream) -> bool {
        self.connect_timeout == u.connect_timeout
            && self.authority == u.authority
            && self.scheme == u.scheme
    }

    /// The first connection ready for a request, dropping closed and long-idle ones met on the
    /// way. Connections still streaming an earlier response body are skipped, not dropped.
    fn checkout(&mut self, now: Instant) -> Option<SendRequest<Incoming>> {
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
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self::new(tls, metrics)
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

    fn checkout(&self, upstream: &Upstream) -> Option<SendRequest<Incoming>> {
        let now = Instant::now();
        let mut hosts = self.hosts.lock();
        hosts
            .iter_mut()
            .find(|h| h.serves(upstream))
            .and_then(|h| h.checkout(now))
    }

    /// Put a connection back (it becomes ready once its response body has been read).
    fn checkin(&self, upstream: &Upstream, sender: SendRequest<Incoming>) {
        let pooled = Pooled {
            sender,
            since: Instant::now(),
        };
        let mut hosts = self.hosts.lock();
        let host = match hosts.iter().position(|h| h.serves(upstream)) {
            Some(i) => &mut hosts[i],
            None => {
                hosts.push(Host {
                    scheme: upstream.scheme.clone(),
                    authority: upstream.authority.clone(),
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

    /// A new connection; `upgrades`: able to hand its IO over after a 101 (`proxy::tunnel`).
    async fn connect(
        &self,
        upstream: &Upstream,
        upgrades: bool,
    ) -> Result<SendRequest<Incoming>, Failure> {
        let mut connector = self.connector(upstream.connect_timeout);
        let dst = Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.clone())
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
        // Only upgrade requests get a connection with upgrades: a 101 consumes its connection
        // anyway, and pooled connections stay exactly as they were.
        if upgrades {
            tokio::spawn(async move {
                if let Err(err) = conn.with_upgrades().await {
                    tracing::debug!(error = %err, "upstream connection ended with an error");
                }
            });
        } else {
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    tracing::debug!(error = %err, "upstream connection ended with an error");
                }
            });
        }
        Ok(sender)
    }

    async fn round_trip(
        &self,
        upstream: &Upstream,
        mut req: Request<Incoming>,
        upgrading: bool,
    ) -> Result<Response<Incoming>, Failure> {
        if upgrading {
            // A switch takes its connection for good (and any other answer ends it): a fresh
            // one, never pooled.
            let mut sender = self.connect(upstream, true).await?;
            return sender
                .try_send_request(req)
                .await
                .map_err(|err| Failure::Request(err.into_error()));
        }
        loop {
            let (mut sender, reused) = match self.checkout(upstream) {
                Some(sender) => (sender, true),
                None => (self.connect(upstream, false).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.checkin(upstream, sender);
                    return Ok(resp);
                }
                Err(mut err) => match err.take_message() {
                    // Never written: the pooled connection was closed under us. Another one
                    // (or a new one) gets it; each retry drops one pooled connection, so this
                    // ends.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(Failure::Request(err.into_error())),
                },
            }
        }
    }

    /// Send `req` (already rewritten for the upstream, its URI in origin form:
    /// `Upstream::uri_for`) and wait for the response head, bounded
    /// by the upstream's timeout. The body streams afterwards.
    pub(crate) async fn send(
        &self,
        upstream: &Upstream,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, GatewayError> {
        // The upstream side always speaks HTTP/1.1, whatever the client used.
        *req.version_mut() = Version::HTTP_11;
        // Only a route that allows it relays `Upgrade` (`proxy::tunnel`); it is hop-by-hop and
        // removed from every other request.
        let upgrading = req.headers().contains_key(UPGRADE);
        let started = Instant::now();
        let result =
            tokio::time::timeout(upstream.timeout, self.round_trip(upstream, req, upgrading)).await;
        let name = &*upstream.name;
        match result {
            // Without `Upgrade` any switch is unsolicited; relaying it would hand the client a
            // connection in a protocol nobody agreed on.
            Ok(Ok(resp)) if resp.status() == StatusCode::SWITCHING_PROTOCOLS && !upgrading => {
                self.protocol_error(
                    upstream,
                    "101 Switching Protocols without an upgrade request",
                );
                Err(GatewayError::UpstreamProtocol("unsolicited 101"))
            }
            Ok(Ok(resp)) => {
                self.stats.observe(
                    &self.metrics,
                    &upstream.name,
                    started.elapsed().as_secs_f64(),
                );
                Ok(resp)
            }
            Ok(Err(failure)) => {
                if let Failure::Request(err) = &failure {
                    if let Some(fault) = client_body_fault(err) {
                        // The client's doing: no upstream error is counted, so no client can
                        // fire the upstream alert by sending a broken body.
                        tracing::debug!(upstream = name, error = %err, "client request body failed");
                        return Err(match fault {
                            BodyFault::Malformed => GatewayError::BadBody,
                            BodyFault::Gone => GatewayError::ClientGone,
                        });
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
                tracing::warn!(upstream = name, kind, error = %text, "upstream request failed");
                if kind == "connect_timeout" {
                    Err(GatewayError::UpstreamTimeout)
                } else {
                    Err(GatewayError::UpstreamConnect(text))
                }
            }
            Err(_) => {
                self.metrics
                    .upstream_errors
                    .with_label_values(&[name, "timeout"])
                    .inc();
                tracing::warn!(upstream = name, timeout = ?upstream.timeout, "upstream timed out");
                Err(GatewayError::UpstreamTimeout)
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
