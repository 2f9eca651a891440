//! WebSocket over HTTP/2 (RFC 8441): an extended CONNECT (`:method CONNECT`, `:protocol
//! websocket`) is routed on its `:path` like an HTTP/1.1 upgrade (a GET), identified and limited
//! the same way, and forwarded to the upstream as an HTTP/1.1 WebSocket handshake (RFC 6455
//! section 4.1) with a key of the gateway's own. On the upstream's 101, whose
//! `Sec-WebSocket-Accept` must answer that key, the client's stream gets its 200 and is spliced
//! with the upstream's connection (`tunnel`); any other answer is relayed as it is, except a
//! 2xx, which on a CONNECT would tell the client the tunnel is open (a 502 instead).
//!
//! Every other CONNECT is refused before any store call: an HTTP/1.1 one, or one without
//! `:protocol` (the gateway is no forward proxy) 405 as nginx does, with another protocol 501,
//! and on a route without `upgrade = ["websocket"]` 405.

use base64::Engine as _;
use http::header::{
    SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use ring::rand::SecureRandom as _;

use crate::config::compiled::UpgradeProtocol;

/// The `:protocol` this gateway tunnels.
const WEBSOCKET: &str = "websocket";
/// RFC 6455 section 1.3: appended to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a CONNECT is not tunnelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("CONNECT without :protocol")]
    NoProtocol,
    #[error("CONNECT with a :protocol other than websocket")]
    OtherProtocol,
    #[error("extended CONNECT on a route without upgrade = [\"websocket\"]")]
    RouteWithoutUpgrade,
}

impl Refusal {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Refusal::NoProtocol | Refusal::RouteWithoutUpgrade => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::OtherProtocol => StatusCode::NOT_IMPLEMENTED,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::NoProtocol => "CONNECT is only accepted as WebSocket over HTTP/2 (RFC 8441).",
            Refusal::OtherProtocol => "Only the websocket protocol can be tunnelled.",
            Refusal::RouteWithoutUpgrade => "This route does not accept WebSocket.",
        }
    }
}

/// Whether `req` is a WebSocket extended CONNECT (`Ok(true)`), no CONNECT at all (`Ok(false)`),
/// or a CONNECT the gateway refuses. One method comparison for every other request.
pub(crate) fn websocket<B>(req: &Request<B>) -> Result<bool, Refusal> {
    if req.method() != Method::CONNECT {
        return Ok(false);
    }
    // An HTTP/1.1 CONNECT asks for a forward proxy's tunnel: never passed on (an upstream's
    // 2xx to it could not be relayed either).
    if req.version() != Version::HTTP_2 {
        return Err(Refusal::NoProtocol);
    }
    match req.extensions().get::<hyper::ext::Protocol>() {
        None => Err(Refusal::NoProtocol),
        Some(p) if p.as_str().eq_ignore_ascii_case(WEBSOCKET) => Ok(true),
        Some(_) => Err(Refusal::OtherProtocol),
    }
}

/// The route must relay WebSocket for an extended CONNECT to be tunnelled.
pub(crate) fn route_allows(upgrade: &[UpgradeProtocol]) -> Result<(), Refusal> {
    if upgrade.contains(&UpgradeProtocol::WebSocket) {
        Ok(())
    } else {
        Err(Refusal::RouteWithoutUpgrade)
    }
}

/// The `Sec-WebSocket-Key` sent upstream (16 random bytes, base64: RFC 6455 section 4.1).
#[derive(Debug)]
pub(crate) struct Key(HeaderValue);

/// The system's randomness failed (it does not, on the systems rustls runs on).
#[derive(Debug, thiserror::Error)]
#[error("no randomness for a WebSocket key")]
pub(crate) struct NoRandom;

/// Turn the client's extended CONNECT into an HTTP/1.1 WebSocket handshake (the hop-by-hop
/// headers are already removed; `Upgrade` and `Connection` are added by the caller, as for
/// every upgrade). The client's `Sec-WebSocket-Protocol` and `-Extensions` pass as they are.
pub(crate) fn ask_upstream(method: &mut Method, headers: &mut HeaderMap) -> Result<Key, NoRandom> {
    let mut nonce = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| NoRandom)?;
    let key = HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(nonce))
        .map_err(|_| NoRandom)?;
    *method = Method::GET;
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    headers.insert(SEC_WEBSOCKET_KEY, key.clone());
    Ok(Key(key))
}

/// Check the upstream's 101 against `key` and make it the client's 200: the `Sec-WebSocket-*`
/// answers it chose (subprotocol, extensions) stay, the accept (meant for the gateway) goes.
pub(crate) fn confirm<B>(resp: &mut Response<B>, key: &Key) -> Result<(), &'static str> {
    let headers = resp.headers_mut();
    let mut accepts = headers.get_all(SEC_WEBSOCKET_ACCEPT).iter();
    let (Some(accept), None) = (accepts.next(), accepts.next()) else {
        return Err("101 Switching Protocols without one Sec-WebSocket-Accept");
    };
    if accept.as_bytes() != expected_accept(key).as_bytes() {
        return Err("Sec-WebSocket-Accept does not answer the key sent");
    }
    if headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter().count() > 1 {
        return Err("101 Switching Protocols with several subprotocols");
    }
    headers.remove(SEC_WEBSOCKET_ACCEPT);
    *resp.status_mut() = StatusCode::OK;
    Ok(())
}

/// RFC 6455 section 4.2.2: base64 of the SHA-1 of the key and the GUID.
fn expected_accept(key: &Key) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.0.as_bytes());
    ctx.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(protocol: Option<&'static str>) -> Request<()> {
        let mut req = Request::connect("https://example.com/chat")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        if let Some(p) = protocol {
            req.extensions_mut()
                .insert(hyper::ext::Protocol::from_static(p));
        }
        req
    }

    #[test]
    fn only_a_websocket_extended_connect_is_tunnelled() {
        assert_eq!(websocket(&connect(Some("websocket"))), Ok(true));
        assert_eq!(websocket(&connect(Some("WebSocket"))), Ok(true));
        assert_eq!(websocket(&connect(None)), Err(Refusal::NoProtocol));
        assert_eq!(
            websocket(&connect(Some("connect-udp"))),
            Err(Refusal::OtherProtocol)
        );
        let get = Request::get("/").version(Version::HTTP_2).body(()).unwrap();
        assert_eq!(websocket(&get), Ok(false));
        assert_eq!(
            route_allows(&[]),
            Err(Refusal::RouteWithoutUpgrade),
            "a route without upgrade"
        );
    }

    #[test]
    fn the_accept_answers_the_key_as_rfc_6455_computes_it() {
        // RFC 6455 section 1.3's example.
        let key = Key(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(expected_accept(&key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        assert!(confirm(&mut resp, &key).is_err());
        let h = resp.headers_mut();
        h.insert(SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("bm9wZQ=="));
        assert!(confirm(&mut resp, &key).is_err());
        let h = resp.headers_mut();
        h.insert(
            SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("chat"));
        confirm(&mut resp, &key).unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get(SEC_WEBSOCKET_ACCEPT).is_none());
        assert_eq!(resp.headers().get(SEC_WEBSOCKET_PROTOCOL).unwrap(), "chat");
    }

    #[test]
    fn each_handshake_gets_a_fresh_key() {
        let (mut m1, mut m2) = (Method::CONNECT, Method::CONNECT);
        let (mut h1, mut h2) = (HeaderMap::new(), HeaderMap::new());
        let k1 = ask_upstream(&mut m1, &mut h1).unwrap();
        let k2 = ask_upstream(&mut m2, &mut h2).unwrap();
        assert_ne!(k1.0, k2.0);
        assert_eq!(m1, Method::GET);
        assert_eq!(h1.get(SEC_WEBSOCKET_VERSION).unwrap(), "13");
        assert_eq!(h1.get(SEC_WEBSOCKET_KEY).unwrap(), &k1.0);
        assert_eq!(k1.0.len(), 24);
    }
}
