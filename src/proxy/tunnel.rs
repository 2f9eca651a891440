//! HTTP/1.1 Upgrade (WebSocket) through the gateway: which requests may switch protocols, the
//! headers that carry the switch to the upstream and back, and the tunnel that splices the two
//! connections once the upstream has answered 101.
//!
//! A route relays `Upgrade` only for the protocols its `upgrade` lists; any other `Upgrade` is
//! removed with the hop-by-hop headers, so no client can switch a route to a protocol nobody
//! allowed. An upgrade request is matched, identified and limited like any other: a refusal is
//! answered before anything reaches the upstream. On the upstream's 101 the handler hands the
//! tunnel to the client's connection (`server::conn`), which runs it on its own task once hyper
//! has sent the 101: the tunnel keeps the connection's place under `max_connections`, its
//! watchdog (`tunnel_idle_timeout`, the cut at the end of a drain) and its place in the drain.
//!
//! A concurrency lease is renewed for the tunnel's whole life and released when it ends, before
//! the sockets close; what a count-by-response policy owes is charged then too (status 101). The
//! tunnel ends as soon as either side has closed and what it sent before has been passed on,
//! as nginx does.
//!
//! WebSocket over HTTP/2 (`extended_connect`) ends here too: its tunnel is one stream of the
//! client's connection, not the connection, so it runs beside the connection's other streams
//! ([`Switch::Stream`]), under a watchdog clock of its own that the connection gives it.

use std::sync::Arc;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::compiled::UpgradeProtocol;
use crate::limiter::Admission;
use crate::metrics::{Expiry, Metrics};

/// What the client's connection runs once hyper has sent the 101 (`server::watchdog` keeps it
/// until then).
pub(crate) type Run = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The tunnel a response opens, as its connection runs it.
pub(crate) enum Switch {
    /// An HTTP/1.1 101: the connection becomes the tunnel once hyper has sent it.
    Connection(Run),
    /// The 200 to an HTTP/2 extended CONNECT: one stream becomes the tunnel.
    Stream(StreamTunnel),
}

/// The tunnel, on its way from the handler to the connection in the response's extensions
/// (which only take `Clone + Sync` values, hence the shared slot; one allocation per tunnel).
#[derive(Clone)]
struct Handover(Arc<Mutex<Option<Switch>>>);

/// The tunnel a response carries, if it opens one (a 101, or a 200 to an extended CONNECT).
pub(crate) fn take<B>(resp: &mut Response<B>) -> Option<Switch> {
    if !matches!(
        resp.status(),
        http::StatusCode::SWITCHING_PROTOCOLS | http::StatusCode::OK
    ) {
        return None;
    }
    resp.extensions_mut()
        .remove::<Handover>()
        .and_then(|h| h.0.lock().take())
}

/// The `Upgrade` value to relay when `headers` of an HTTP/1.1 request ask to switch to protocols
/// that `allowed` all lists: `Connection` names `upgrade` and one `Upgrade` line names only
/// allowed protocols (a version, `websocket/13`, is allowed with its name). `None`: the request
/// is forwarded without `Upgrade`, like any hop-by-hop header.
pub(crate) fn requested<B>(req: &Request<B>, allowed: &[UpgradeProtocol]) -> Option<HeaderValue> {
    if allowed.is_empty() || req.version() != Version::HTTP_11 {
        return None;
    }
    let headers = req.headers();
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(b"upgrade")));
    let mut lines = headers.get_all(UPGRADE).iter();
    let (Some(value), None) = (lines.next(), lines.next()) else {
        return None;
    };
    let mut names = tokens(value).peekable();
    names.peek()?;
    let all_allowed = names.all(|t| {
        allowed
            .iter()
            .any(|p| name_of(t).eq_ignore_ascii_case(p.token().as_bytes()))
    });
    (asks && all_allowed).then(|| value.clone())
}

/// Ask the upstream to switch (the hop-by-hop headers are already removed).
pub(crate) fn ask_upstream(headers: &mut HeaderMap, protocols: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocols);
}

/// The `Upgrade` of an upstream's 101 when it names only protocols the client asked for
/// (RFC 9110 section 7.8: a 101 says which protocols it switches to).
pub(crate) fn switched_to(
    headers: &HeaderMap,
    asked: &HeaderValue,
) -> Result<HeaderValue, &'static str> {
    let mut lines = headers.get_all(UPGRADE).iter();
    let (Some(value), None) = (lines.next(), lines.next()) else {
        return Err("101 Switching Protocols without one Upgrade header");
    };
    let mut names = tokens(value).peekable();
    if names.peek().is_none()
        || !names.all(|t| tokens(asked).any(|a| name_of(a).eq_ignore_ascii_case(name_of(t))))
    {
        return Err("101 Switching Protocols to a protocol the client did not ask for");
    }
    Ok(value.clone())
}

/// Tell the client the switch happened (the upstream's own hop-by-hop headers are removed).
pub(crate) fn confirm(headers: &mut HeaderMap, protocols: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocols);
}

/// The two connections of a switch: the client's (from its request) and the upstream's (from
/// its 101). Each resolves once its side's connection has handed its IO over (for an HTTP/2
/// client, once its stream's 200 is sent).
pub(crate) struct Ends {
    pub(crate) client: OnUpgrade,
    pub(crate) upstream: OnUpgrade,
    /// The client's end is one stream of an HTTP/2 connection (extended CONNECT).
    pub(crate) stream: bool,
}

/// Attach the tunnel to the response that starts it. `admission` (a concurrency lease, deferred
/// charges) is settled when the tunnel ends; dropped with the tunnel (cut at a drain's end, idle),
/// it settles in the background.
pub(crate) fn hand_over<B>(
    resp: &mut Response<B>,
    ends: Ends,
    admission: Option<Admission>,
    metrics: Arc<Metrics>,
) {
    let settle = Settle(admission);
    let switch = if ends.stream {
        Switch::Stream(StreamTunnel {
            ends,
            settle,
            metrics,
        })
    } else {
        // The connection's own IO is already watched.
        Switch::Connection(Box::pin(run(ends, settle, metrics, |io| io)))
    };
    resp.extensions_mut()
        .insert(Handover(Arc::new(Mutex::new(Some(switch)))));
}

/// A tunnel on one stream of an HTTP/2 connection, to be run beside the connection.
pub(crate) struct StreamTunnel {
    ends: Ends,
    settle: Settle,
    metrics: Arc<Metrics>,
}

impl StreamTunnel {
    /// Splice until either side closes or `ended` resolves (the stream's watchdog: `Some` when
    /// it expired, counted like a connection's, `None` when cut at a drain's end). `watch`
    /// wraps the client's stream so the watchdog sees its bytes.
    pub(crate) async fn run<W, IO, E>(self, watch: W, ended: E)
    where
        W: FnOnce(TokioIo<Upgraded>) -> IO,
        IO: AsyncRead + AsyncWrite + Unpin,
        E: std::future::Future<Output = Option<Expiry>>,
    {
        let StreamTunnel {
            ends,
            settle,
            metrics,
        } = self;
        let counted = metrics.clone();
        tokio::select! {
            () = run(ends, settle, metrics, watch) => {}
            why = ended => if let Some(why) = why {
                counted
                    .connections_timed_out
                    .with_label_values(&["proxy", why.as_str()])
                    .inc();
                tracing::debug!(reason = why.as_str(), "HTTP/2 tunnel timed out");
            },
        }
    }
}

async fn run<W, IO>(ends: Ends, mut settle: Settle, metrics: Arc<Metrics>, watch: W)
where
    W: FnOnce(TokioIo<Upgraded>) -> IO,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::try_join!(ends.client, ends.upstream) {
        Ok((client, upstream)) => {
            let _open = Open::new(&metrics);
            let (mut client, mut upstream) = (watch(TokioIo::new(client)), TokioIo::new(upstream));
            splice(&mut client, &mut upstream).await;
            // Settled before both sockets close, so a client that saw its tunnel end finds its
            // concurrency slot free.
            settle.now().await;
        }
        // The client went away before the 101 was sent, or the upstream's connection failed.
        Err(err) => {
            tracing::debug!(error = %err, "upgrade not completed");
            settle.now().await;
        }
    }
}

/// Pass bytes both ways until one side has closed and what it sent has been passed on.
async fn splice<C, U>(client: C, upstream: U)
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (mut client_in, mut client_out) = tokio::io::split(client);
    let (mut upstream_in, mut upstream_out) = tokio::io::split(upstream);
    // `copy` holds one buffer (8 KiB) and waits for each write: a side that does not read
    // stops the other from being read, down to the kernel's buffers (backpressure, no queue).
    let outcome = tokio::select! {
        up = tokio::io::copy(&mut client_in, &mut upstream_out) => ("client", up),
        down = tokio::io::copy(&mut upstream_in, &mut client_out) => ("upstream", down),
    };
    match outcome {
        (closed, Ok(_)) => tracing::debug!(closed, "tunnel closed"),
        (from, Err(err)) => tracing::debug!(from, error = %err, "tunnel failed"),
    }
}

/// What the request owes once its tunnel ends.
struct Settle(Option<Admission>);

impl Settle {
    async fn now(&mut self) {
        if let Some(owed) = self.0.take().and_then(|a| a.respond(101)) {
            owed.settle().await;
        }
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        // `Owed` settles in the background when dropped; an unanswered admission would only
        // release its lease and forget the charges.
        drop(self.0.take().and_then(|a| a.respond(101)));
    }
}

/// An open tunnel, in `rategate_tunnels_open` and `rategate_tunnels_total`.
struct Open(prometheus::IntGauge);

impl Open {
    fn new(metrics: &Metrics) -> Open {
        metrics.tunnels.inc();
        metrics.tunnels_open.inc();
        Open(metrics.tunnels_open.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The comma-separated tokens of a header value, without whitespace.
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A protocol's name without its version (`websocket/13` -> `websocket`).
fn name_of(token: &[u8]) -> &[u8] {
    token.split(|&b| b == b'/').next().unwrap_or(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WS: &[UpgradeProtocol] = &[UpgradeProtocol::WebSocket];

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn only_an_allowed_protocol_with_connection_upgrade_is_relayed() {
        let ok = req(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(requested(&ok, WS).unwrap(), "WebSocket");
        assert!(requested(&ok, &[]).is_none(), "a route without `upgrade`");
        let no_conn = req(&[("upgrade", "websocket")]);
        assert!(requested(&no_conn, WS).is_none());
        let other = req(&[("connection", "upgrade"), ("upgrade", "websocket, h2c")]);
        assert!(requested(&other, WS).is_none(), "h2c is not allowed");
        let two = req(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("upgrade", "websocket"),
        ]);
        assert!(requested(&two, WS).is_none());
        let empty = req(&[("connection", "upgrade"), ("upgrade", " , ")]);
        assert!(requested(&empty, WS).is_none());
        let mut h2 = req(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        *h2.version_mut() = Version::HTTP_2;
        assert!(requested(&h2, WS).is_none());
    }

    #[test]
    fn the_upstream_may_only_switch_to_what_was_asked() {
        let asked = HeaderValue::from_static("websocket");
        let mut h = HeaderMap::new();
        assert!(switched_to(&h, &asked).is_err());
        h.insert(UPGRADE, HeaderValue::from_static("h2c"));
        assert!(switched_to(&h, &asked).is_err());
        h.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        assert_eq!(switched_to(&h, &asked).unwrap(), "WebSocket");
    }
}
