//! How the gateway talks to ONE upstream server: the connection per scheme (`http://` HTTP/1.1,
//! `h2c://` HTTP/2 with prior knowledge, `https://` TLS then HTTP/2 or HTTP/1.1 as ALPN settles,
//! with the upstream's trust, SNI name and client certificate), the request shape each protocol
//! needs, and the connections kept for reuse. `UpstreamClient::new(Endpoint, ceiling)` is all it takes;
//! `proxy/upstream` holds one per target and worker and owns timeouts, errors and metrics, and
//! `proxy/pool` builds one per active health check, so checks connect as requests do.
//!
//! Why not hyper-util's legacy `Client`: under callgrind it cost about 9,400 instructions per
//! proxied request (a SipHash-keyed shared pool, a checkout racing a lazy connect, a spawned task
//! per request to return the connection, large futures moved around) out of about 57,000 for the
//! whole request. This client does what the gateway needs of it and no more:
//! - HTTP/1.1 connections are reused first in first out, so every pooled connection stays warm,
//!   and those idle longer than `POOL_IDLE_TIMEOUT` are dropped instead of used: the upstream's
//!   keep-alive (often 5 s) cannot close one under a request we are sending; at most
//!   `POOL_MAX_IDLE` idle ones are kept;
//! - one HTTP/2 connection carries every request (streams are multiplexed), replaced once closed;
//! - a request that a reused connection turned down before writing it (the upstream had just
//!   closed it) is retried on another connection; a request already written is never retried.
//!
//! Bodies stream both ways, trailers included: hyper relays HTTP/2 trailers (gRPC's status) as
//! body frames, so nothing here buffers or rewrites them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HOST, TE};
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tower_service::Service;

use super::upstream_ceiling::{CeilingReached, Counted, Place, Reclaim, UpstreamCeiling};
use crate::config::compiled::{Upstream, UpstreamProtocol, UpstreamTarget};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What is sent upstream as a request body: the client's, streamed, or none (a request sent
/// again, which is only done for requests without a body; a health check).
pub(crate) type RequestBody =
    http_body_util::Either<super::client_body::ClientBody, http_body_util::Empty<bytes::Bytes>>;

/// Idle pooled HTTP/1.1 connections are dropped before a typical upstream keep-alive (often 5 s)
/// would close them under us.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
const POOL_MAX_IDLE: usize = 512;
/// An HTTP/2 connection with requests in flight is pinged this often, and closed when a ping is
/// not answered within `H2_PING_TIMEOUT`: a peer that vanished without a word fails its
/// requests at once instead of each waiting for the upstream timeout.
const H2_PING_INTERVAL: Duration = Duration::from_secs(10);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a connection to one upstream server (a target of an upstream) depends on. Two
/// targets with equal endpoints share connections, and a reload that leaves an endpoint
/// unchanged keeps them.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// Connected to instead of resolving `authority` (`UpstreamTarget::address`).
    pub(crate) address: Option<SocketAddr>,
    pub(crate) connect_timeout: Duration,
    pub(crate) tls: Option<EndpointTls>,
}

/// The TLS side of an `https://` endpoint: its upstream's settings, its own server name.
#[derive(Debug, Clone)]
pub(crate) struct EndpointTls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    /// `UpstreamTls::fingerprint`: what `config` was built from.
    fingerprint: [u8; 32],
}

impl Endpoint {
    /// How `target` of `upstream` is reached: its scheme and address, the upstream's connect
    /// timeout and (for `https://`) TLS settings with the target's server name.
    pub(crate) fn of(upstream: &Upstream, target: &UpstreamTarget) -> Endpoint {
        let tls = upstream
            .tls
            .as_ref()
            .zip(target.server_name.as_ref())
            .map(|(tls, name)| EndpointTls {
                config: tls.config.clone(),
                server_name: name.clone(),
                fingerprint: tls.fingerprint,
            });
        Endpoint {
            protocol: target.protocol,
            scheme: target.scheme.clone(),
            authority: target.authority.clone(),
            address: target.address,
            connect_timeout: upstream.connect_timeout,
            tls,
        }
    }

    /// Whether `target` of `upstream` is reached through this endpoint (`Endpoint::of` would
    /// be equal), without building one: this runs per request.
    pub(crate) fn serves(&self, upstream: &Upstream, target: &UpstreamTarget) -> bool {
        self.connect_timeout == upstream.connect_timeout
            && self.authority == target.authority
            && self.address == target.address
            && self.protocol == target.protocol
            && match (&self.tls, &upstream.tls, &target.server_name) {
                (None, _, None) => true,
                (Some(mine), Some(tls), Some(name)) => {
                    mine.fingerprint == tls.fingerprint && mine.server_name == *name
                }
                _ => false,
            }
    }
}

/// Why a round trip failed.
pub(crate) enum Failure {
    /// No connection: refused, unreachable, timed out, TLS or HTTP/2 handshake failed. Nothing
    /// was sent, so the request is given back (boxed: a failure is rare, a result is returned
    /// by every request).
    Connect(BoxError, Box<Request<RequestBody>>),
    /// The request was sent (or its body failed while being sent) and no response head came.
    Request(hyper::Error),
}

/// A connection ready for one request.
enum Sender {
    Http1(http1::SendRequest<RequestBody>),
    Http2(http2::SendRequest<RequestBody>),
}

struct Pooled {
    sender: http1::SendRequest<RequestBody>,
    /// When it was put back: a bound on how long the connection may have been idle.
    since: Instant,
}

#[derive(Default)]
struct Connections {
    http1: VecDeque<Pooled>,
    http2: Option<http2::SendRequest<RequestBody>>,
    /// When a request last took the HTTP/2 connection: one unused for `POOL_IDLE_TIMEOUT` (a
    /// superseded endpoint's after a reload, say) gives its place up when the ceiling needs it.
    http2_used: Option<Instant>,
}

pub(crate) struct UpstreamClient {
    endpoint: Endpoint,
    tcp: HttpConnector,
    /// Where each new connection takes its place (`None`: a health check's client, whose few
    /// connections the descriptor reserve covers, and which must not fail for want of one).
    ceiling: Option<Arc<UpstreamCeiling>>,
    /// Never held across an await.
    connections: Mutex<Connections>,
}

impl UpstreamClient {
    pub(crate) fn new(endpoint: Endpoint, ceiling: Option<Arc<UpstreamCeiling>>) -> UpstreamClient {
        let mut tcp = HttpConnector::new();
        // The scheme is ours to interpret (`https` is TLS on top of this TCP connection).
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(endpoint.connect_timeout));
        UpstreamClient {
            endpoint,
            tcp,
            ceiling,
            connections: Mutex::new(Connections::default()),
        }
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Send `req` (its URI in origin form, `Host` set) and wait for the response head; the
    /// body streams afterwards. `te_trailers`: the client said it accepts trailers, which an
    /// HTTP/2 upstream is told (gRPC servers require it). `upgrading`: the request asks to
    /// switch protocols (`proxy::tunnel`).
    pub(crate) async fn round_trip(
        &self,
        mut req: Request<RequestBody>,
        te_trailers: bool,
        upgrading: bool,
        place_by: tokio::time::Instant,
    ) -> Result<Response<Incoming>, Failure> {
        if upgrading {
            // A switch takes its connection for good (and any other answer ends it): a fresh
            // HTTP/1.1 one that can hand its IO over, never pooled.
            let mut sender = match Box::pin(self.connect_upgradable(place_by)).await {
                Ok(sender) => sender,
                Err(err) => return Err(Failure::Connect(err, Box::new(req))),
            };
            for_http1(&mut req, &self.endpoint);
            return sender
                .try_send_request(req)
                .await
                .map_err(|err| Failure::Request(err.into_error()));
        }
        loop {
            let (sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                // Boxed: the TCP, TLS and HTTP/2 handshake futures are large, and inline they
                // would make every request's future (moved by hyper per request) that large.
                None => match Box::pin(self.connect(place_by)).await {
                    Ok(sender) => (sender, false),
                    Err(err) => return Err(Failure::Connect(err, Box::new(req))),
                },
            };
            let sent = match sender {
                Sender::Http1(mut sender) => {
                    for_http1(&mut req, &self.endpoint);
                    let sent = sender.try_send_request(req).await;
                    if sent.is_ok() {
                        self.checkin(sender);
                    }
                    sent
                }
                Sender::Http2(mut sender) => {
                    for_http2(&mut req, &self.endpoint, te_trailers);
                    sender.try_send_request(req).await
                }
            };
            match sent {
                Ok(resp) => return Ok(resp),
                Err(mut err) => match err.take_message() {
                    // Never written: the reused connection was closed under us. Another one (or
                    // a new one) gets it; each retry drops one pooled connection, so this ends.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(Failure::Request(err.into_error())),
                },
            }
        }
    }

    /// The HTTP/2 connection if there is a live one, else the first HTTP/1.1 connection ready
    /// for a request, dropping closed and long-idle ones met on the way. Connections still
    /// streaming an earlier response body are skipped, not dropped.
    fn checkout(&self) -> Option<Sender> {
        let now = Instant::now();
        let mut conns = self.connections.lock();
        if let Some(h2) = &conns.http2 {
            if h2.is_ready() {
                let h2 = h2.clone();
                conns.http2_used = Some(now);
                return Some(Sender::Http2(h2));
            }
            conns.http2 = None;
        }
        let idle = &mut conns.http1;
        let mut i = 0;
        while let Some(p) = idle.get(i) {
            if p.sender.is_closed() || now.saturating_duration_since(p.since) > POOL_IDLE_TIMEOUT {
                idle.remove(i);
            } else if p.sender.is_ready() {
                return idle.remove(i).map(|p| Sender::Http1(p.sender));
            } else {
                i += 1;
            }
        }
        None
    }

    /// Put an HTTP/1.1 connection back (it becomes ready once its response body has been read).
    fn checkin(&self, sender: http1::SendRequest<RequestBody>) {
        let mut conns = self.connections.lock();
        // Past the bound the handle is dropped, which closes its connection once idle.
        if conns.http1.len() < POOL_MAX_IDLE {
            conns.http1.push_back(Pooled {
                sender,
                since: Instant::now(),
            });
        }
    }
}

impl Reclaim for UpstreamClient {
    fn drop_idle(&self) -> bool {
        // The longest idle goes first (still streaming a response body is not idle); its task
        // ends and frees the place once it sees the handle gone.
        let mut conns = self.connections.lock();
        let idle = conns.http1.iter().position(|p| p.sender.is_ready());
        if idle.and_then(|i| conns.http1.remove(i)).is_some() {
            return true;
        }
        // An HTTP/2 connection no request has taken for a while: its streams (if any are still
        // running) finish, then hyper closes it, since no handle to it is left.
        let unused = conns
            .http2_used
            .is_some_and(|used| used.elapsed() > POOL_IDLE_TIMEOUT);
        if unused && conns.http2.take().is_some() {
            conns.http2_used = None;
            return true;
        }
        false
    }
}

impl UpstreamClient {
    /// A new connection, bounded by the connect timeout from the first SYN to the end of the
    /// TLS and HTTP/2 handshakes. An HTTP/2 one is kept for the requests that follow.
    async fn connect(&self, place_by: tokio::time::Instant) -> Result<Sender, BoxError> {
        let place = self.place(place_by).await?;
        let timeout = self.endpoint.connect_timeout;
        let sender = match tokio::time::timeout(timeout, self.handshake(place)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )))
            }
        };
        if let Sender::Http2(h2) = &sender {
            let mut conns = self.connections.lock();
            // Requests racing to connect each made one; the first stays, the others serve
            // their own request and close when it is done.
            if !conns.http2.as_ref().is_some_and(|c| c.is_ready()) {
                conns.http2 = Some(h2.clone());
                conns.http2_used = Some(Instant::now());
            }
        }
        Ok(sender)
    }

    /// A new HTTP/1.1 connection able to switch protocols after a 101, bounded like
    /// [`UpstreamClient::connect`]. An `https://` upstream is offered only `http/1.1` by ALPN
    /// (WebSocket over HTTP/2, RFC 8441, is not relayed); an `h2c://` one cannot switch.
    async fn connect_upgradable(
        &self,
        place_by: tokio::time::Instant,
    ) -> Result<http1::SendRequest<RequestBody>, BoxError> {
        let place = self.place(place_by).await?;
        let timeout = self.endpoint.connect_timeout;
        match tokio::time::timeout(timeout, self.handshake_upgradable(place)).await {
            Ok(result) => result,
            Err(_) => Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))),
        }
    }

    async fn handshake_upgradable(
        &self,
        place: Option<Place>,
    ) -> Result<http1::SendRequest<RequestBody>, BoxError> {
        if self.endpoint.tls.is_none() && self.endpoint.protocol == UpstreamProtocol::H2c {
            return Err("an h2c:// upstream cannot switch protocols with HTTP/1.1 Upgrade".into());
        }
        // The place goes into the IO: after a 101 the tunnel holds it, not the connection task.
        let io = TokioIo::new(Counted::new(self.tcp_connect().await?.into_inner(), place));
        match &self.endpoint.tls {
            Some(tls) => {
                let mut config = (*tls.config).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let stream = connector
                    .connect(tls.server_name.clone(), io.into_inner())
                    .await?;
                http1_upgradable(TokioIo::new(stream)).await
            }
            None => http1_upgradable(io).await,
        }
    }

    /// A place under the ceiling for a new connection, taken before the SYN (so connects in
    /// progress count too) and before the connect timeout starts: waited for up to the
    /// connect timeout, and never past `place_by` (the caller's share of its own deadline, so
    /// that a wait ends as a refusal, not as the request's timeout).
    async fn place(&self, place_by: tokio::time::Instant) -> Result<Option<Place>, CeilingReached> {
        match &self.ceiling {
            Some(ceiling) => {
                let by = place_by.min(tokio::time::Instant::now() + self.endpoint.connect_timeout);
                ceiling.place(by).await.map(Some)
            }
            None => Ok(None),
        }
    }

    async fn tcp_connect(&self) -> Result<TokioIo<tokio::net::TcpStream>, BoxError> {
        let mut tcp = self.tcp.clone();
        // An address literal is connected to as is; only a name goes to the resolver.
        let authority = match self.endpoint.address {
            Some(address) => Authority::try_from(address.to_string().as_str())?,
            None => self.endpoint.authority.clone(),
        };
        let dst = Uri::builder()
            .scheme(self.endpoint.scheme.clone())
            .authority(authority)
            .path_and_query("/")
            .build()?;
        std::future::poll_fn(|cx| tcp.poll_ready(cx)).await?;
        Ok(tcp.call(dst).await?)
    }

    /// An HTTP/1.1 connection's `place` is held by its task, which owns the IO and so lives as
    /// long as the connection (kept out of the IO type: wrapping the IO made hyper's
    /// per-request code for it inline differently, +700 instructions per proxied request under
    /// callgrind). An HTTP/2 connection's is held by its IO: hyper runs that in a task of its
    /// own, which outlives the task we await while the last streams finish.
    async fn handshake(&self, place: Option<Place>) -> Result<Sender, BoxError> {
        let io = self.tcp_connect().await?;
        match (&self.endpoint.tls, self.endpoint.protocol) {
            (Some(tls), _) => {
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let stream = connector
                    .connect(tls.server_name.clone(), io.into_inner())
                    .await?;
                let h2 = stream.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
                let io = TokioIo::new(stream);
                if h2 {
                    http2_handshake(TokioIo::new(Counted::new(io.into_inner(), place))).await
                } else {
                    http1_handshake(io, place).await
                }
            }
            (None, UpstreamProtocol::H2c) => {
                http2_handshake(TokioIo::new(Counted::new(io.into_inner(), place))).await
            }
            (None, _) => http1_handshake(io, place).await,
        }
    }
}

async fn http1_handshake<T>(io: T, place: Option<Place>) -> Result<Sender, BoxError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io).await?;
    // The connection task runs on this worker's runtime, next to the requests using it.
    tokio::spawn(async move {
        let _place = place;
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "upstream connection ended with an error");
        }
    });
    Ok(Sender::Http1(sender))
}

/// An HTTP/1.1 connection whose IO is handed over after a 101 (`hyper::upgrade::on`).
async fn http1_upgradable<T>(io: T) -> Result<http1::SendRequest<RequestBody>, BoxError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            tracing::debug!(error = %err, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

async fn http2_handshake<T>(io: T) -> Result<Sender, BoxError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(Sender::Http2(sender))
}

/// HTTP/1.1, whatever the client used; the target in origin form with `Host` (undoing
/// `for_http2` when a retry moved the request from an HTTP/2 connection to a new HTTP/1.1 one,
/// possibly another target's: the `Host` is this endpoint's).
fn for_http1<B>(req: &mut Request<B>, endpoint: &Endpoint) {
    *req.version_mut() = Version::HTTP_11;
    if req.uri().authority().is_none() {
        return;
    }
    if let Ok(host) = HeaderValue::from_str(endpoint.authority.as_str()) {
        req.headers_mut().insert(HOST, host);
    }
    let origin = req.uri().path_and_query().cloned().map(Uri::from);
    if let Some(origin) = origin {
        *req.uri_mut() = origin;
    }
}

/// HTTP/2 needs `:scheme` and `:authority` (RFC 9113 section 8.3.1): the target in absolute
/// form, the authority there instead of `Host`; `te: trailers` is the one TE it allows. A
/// request given back by another target's connection carries that one's authority: replaced.
fn for_http2<B>(req: &mut Request<B>, endpoint: &Endpoint, te_trailers: bool) {
    *req.version_mut() = Version::HTTP_2;
    if req.uri().authority() != Some(&endpoint.authority) {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(endpoint.scheme.clone());
        parts.authority = Some(endpoint.authority.clone());
        parts.path_and_query = req.uri().path_and_query().cloned();
        // Scheme, authority and a path: always a valid URI; were it not, hyper refuses the
        // request and the client gets a 502.
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    let headers = req.headers_mut();
    headers.remove(HOST);
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}
