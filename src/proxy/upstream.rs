//! Forwarding to upstreams over pooled connections. One hyper-util client per distinct connect
//! timeout (the connector owns that setting), shared by every upstream and kept across reloads so
//! pools survive them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::RwLock;

use super::response::GatewayError;
use super::stats::UpstreamStats;
use crate::config::compiled::Upstream;
use crate::metrics::Metrics;

type HttpClient = Client<HttpsConnector<HttpConnector>, Incoming>;

/// Idle pooled connections are dropped before a typical upstream keep-alive (often 5 s) would
/// close them under us.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
const POOL_MAX_IDLE_PER_HOST: usize = 512;

pub struct UpstreamPool {
    tls: Arc<rustls::ClientConfig>,
    /// By connect timeout. A handful of entries at most (one per distinct `connect_timeout`), so
    /// a scan beats hashing, and requests are started under the read lock instead of cloning
    /// the client (several `Arc`s) per request.
    clients: RwLock<Vec<(Duration, HttpClient)>>,
    metrics: Arc<Metrics>,
    stats: UpstreamStats,
}

impl UpstreamPool {
    pub fn new(tls: rustls::ClientConfig, metrics: Arc<Metrics>) -> Self {
        UpstreamPool {
            tls: Arc::new(tls),
            clients: RwLock::new(Vec::new()),
            metrics,
            stats: UpstreamStats::default(),
        }
    }

    /// A client trusting the bundled web PKI roots.
    pub fn with_webpki_roots(metrics: Arc<Metrics>) -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self::new(tls, metrics)
    }

    /// Start `req` on the client for `connect_timeout`, creating that client on first use.
    fn start(
        &self,
        connect_timeout: Duration,
        req: Request<Incoming>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        {
            let clients = self.clients.read();
            if let Some((_, c)) = clients.iter().find(|(t, _)| *t == connect_timeout) {
                return c.request(req);
            }
        }
        let mut clients = self.clients.write();
        if let Some((_, c)) = clients.iter().find(|(t, _)| *t == connect_timeout) {
            return c.request(req);
        }
        let client = self.build(connect_timeout);
        let fut = client.request(req);
        clients.push((connect_timeout, client));
        fut
    }

    fn build(&self, connect_timeout: Duration) -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*self.tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(https)
    }

    /// Send `req` (already rewritten for the upstream) and wait for the response head, bounded
    /// by the upstream's timeout. The body streams afterwards.
    pub async fn send(
        &self,
        upstream: &Upstream,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, GatewayError> {
        // The upstream side always speaks HTTP/1.1, whatever the client used.
        *req.version_mut() = Version::HTTP_11;
        let started = Instant::now();
        let result =
            tokio::time::timeout(upstream.timeout, self.start(upstream.connect_timeout, req)).await;
        let name = &*upstream.name;
        match result {
            Ok(Ok(resp)) => {
                self.stats.observe(
                    &self.metrics,
                    &upstream.name,
                    started.elapsed().as_secs_f64(),
                );
                Ok(resp)
            }
            Ok(Err(err)) => {
                let kind = classify(&err);
                self.metrics
                    .upstream_errors
                    .with_label_values(&[name, kind])
                    .inc();
                tracing::warn!(upstream = name, kind, error = %err, "upstream request failed");
                if kind == "connect_timeout" {
                    Err(GatewayError::UpstreamTimeout)
                } else {
                    Err(GatewayError::UpstreamConnect(err.to_string()))
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
}

/// A bounded vocabulary for `rategate_upstream_errors_total{kind}`.
fn classify(err: &hyper_util::client::legacy::Error) -> &'static str {
    if err.is_connect() {
        let text = format!("{err:?}");
        if text.contains("timed out") || text.contains("TimedOut") {
            return "connect_timeout";
        }
        return "connect";
    }
    "reset"
}
