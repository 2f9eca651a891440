//! Header rules for a message the gateway passes on: hop-by-hop removal both ways (with the
//! client-IP headers from untrusted peers, and `Transfer-Encoding` taking `Content-Length` with
//! it), and X-Forwarded-* for the upstream (docs/operations.md section 3 and its "HTTP conformance"),
//! without the headers by which an upstream would route the request to another path.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Always hop-by-hop (RFC 9110 section 7.6.1, plus the non-standard ones proxies still see),
/// then the client-IP headers an upstream may believe (`X-Real-IP`, RFC 7239 `Forwarded`, and
/// the CDN and load-balancer spellings), which only a trusted proxy may set
/// (`server.forward_client_ip_headers`).
static STRIPPED: [HeaderName; HOP_BY_HOP + 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("x-real-ip"),
    header::FORWARDED,
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("fastly-client-ip"),
];
/// The hop-by-hop names lead `STRIPPED`.
const HOP_BY_HOP: usize = 9;
const TRANSFER_ENCODING_AT: usize = 7;

/// Headers that make IIS URL Rewrite, Symfony < 5 and Laminas route by their value instead of
/// the request path: a client sending them would choose the upstream's route while the gateway
/// limits the one the path names. Never forwarded, whoever sent them.
static ROUTING_OVERRIDES: [HeaderName; 2] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// Names a `Connection` header may list but that are never removed because of it: the
/// X-Forwarded-* the gateway sets itself (a client naming them must not make the gateway drop
/// its own, whichever of `remove_hop_by_hop`/`set_forwarded` runs first), and the end-to-end
/// `Host` and `Content-Length` that a peer has no business turning into hop-by-hop fields.
const PROTECTED: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "host",
    "content-length",
];

/// What a message's `Transfer-Encoding` said, once it is removed with the other hop-by-hop
/// headers. hyper has already undone a final `chunked` on receipt and frames the body again for
/// the next hop; any other coding is still on the body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransferCodings {
    /// No `Transfer-Encoding`: `Content-Length` (or the end of the connection) frames the body.
    None,
    /// Only `chunked`.
    Chunked,
    /// The codings the body still carries, in order (e.g. `gzip`): the next hop must be told,
    /// in a `Transfer-Encoding` hyper completes with `chunked`, or the body cannot be relayed.
    Other(HeaderValue),
}

/// Remove hop-by-hop headers, including those named in `Connection` (but never the
/// X-Forwarded-* headers the gateway sets itself), and with `client_ip` also the client-IP
/// headers of `STRIPPED`. A `Transfer-Encoding` takes `Content-Length` with it (RFC 9112
/// section 6.3: the length is stale once the framing changes) and is reported.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap, client_ip: bool) -> TransferCodings {
    remove(headers, client_ip, false).0
}

/// Which X-Forwarded-* headers a request carries: noted by [`remove_hop_by_hop_noting`] in its
/// pass over the names, so that [`set_forwarded`] looks up only the ones present (from most
/// clients, none: three hash lookups saved per proxied request).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ForwardedSeen {
    xff: bool,
    proto: bool,
    host: bool,
}

/// [`remove_hop_by_hop`], also saying which X-Forwarded-* headers the message carries (they
/// are never removed here: `PROTECTED`).
pub(crate) fn remove_hop_by_hop_noting(
    headers: &mut HeaderMap,
    client_ip: bool,
) -> (TransferCodings, ForwardedSeen) {
    remove(headers, client_ip, true)
}

/// `note`: look for the X-Forwarded-* too (a request's pass; a response's need not compare
/// every name three more times).
fn remove(
    headers: &mut HeaderMap,
    client_ip: bool,
    note: bool,
) -> (TransferCodings, ForwardedSeen) {
    let names = if client_ip {
        &STRIPPED[..]
    } else {
        &STRIPPED[..HOP_BY_HOP]
    };
    // Runs twice per proxied request. One pass over the names present (no hashing) finds the
    // ones to remove, usually none or only `Connection`; removing all of them by name cost a
    // hash lookup each time (about 5% of the gateway's instructions per request for nine).
    let (present, seen) = scan(headers, names, note);
    if !present.contains(&true) {
        return (TransferCodings::None, seen);
    }
    let codings = if present[TRANSFER_ENCODING_AT] {
        headers.remove(header::CONTENT_LENGTH);
        transfer_codings(headers)
    } else {
        TransferCodings::None
    };
    // Headers listed in `Connection` go first, while we still have its values. The common
    // single-line case takes the value out (no allocation); several lines are cloned (cheap
    // `Bytes` clones) because removing while borrowing the map is not possible.
    match headers.get_all(header::CONNECTION).iter().count() {
        0 => {}
        1 => {
            if let Some(v) = headers.remove(header::CONNECTION) {
                remove_listed(headers, &v);
            }
        }
        _ => {
            let values: Vec<HeaderValue> = headers
                .get_all(header::CONNECTION)
                .iter()
                .cloned()
                .collect();
            for v in &values {
                remove_listed(headers, v);
            }
        }
    }
    for (name, _) in STRIPPED.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    (codings, seen)
}

/// Which of `names` (a prefix of `STRIPPED`) and, with `note`, of the X-Forwarded-* headers
/// `headers` holds.
fn scan(
    headers: &HeaderMap,
    names: &[HeaderName],
    note: bool,
) -> ([bool; STRIPPED.len()], ForwardedSeen) {
    let mut present = [false; STRIPPED.len()];
    let mut seen = ForwardedSeen::default();
    for name in headers.keys() {
        if let Some(i) = names.iter().position(|h| h == name) {
            present[i] = true;
        } else if !note {
            continue;
        } else if name == X_FORWARDED_FOR {
            seen.xff = true;
        } else if name == X_FORWARDED_PROTO {
            seen.proto = true;
        } else if name == X_FORWARDED_HOST {
            seen.host = true;
        }
    }
    (present, seen)
}

/// Join several `Cookie` fields into one, separated by `"; "`: the form RFC 9113 section 8.2.3
/// asks of a proxy passing HTTP/2's one-field-per-cookie on, and the one every upstream parser
/// reads whole (some read only the first of several `Cookie` lines, and would then see another
/// cookie than the gateway authenticated). Nothing to do for the usual zero or one.
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    // Joined from valid field values with a visible separator: always a valid value.
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        headers.insert(header::COOKIE, value);
    }
}

/// Whether the message's `TE` lists `trailers`: the client accepts trailers, which the gateway
/// then asks of an HTTP/2 upstream (read before `remove_hop_by_hop` drops `TE`).
pub(crate) fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|line| {
        line.as_bytes()
            .split(|&b| b == b',')
            .any(|token| trim_ows(token).eq_ignore_ascii_case(b"trailers"))
    })
}

/// The codings of every `Transfer-Encoding` line, in order, without a final `chunked` (the only
/// one hyper decodes). `chunked` alone, the usual case, allocates nothing.
fn transfer_codings(headers: &HeaderMap) -> TransferCodings {
    let lines = headers.get_all(header::TRANSFER_ENCODING);
    let mut iter = lines.iter();
    if let (Some(only), None) = (iter.next(), iter.next()) {
        if trim_ows(only.as_bytes()).eq_ignore_ascii_case(b"chunked") {
            return TransferCodings::Chunked;
        }
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut before_last = 0;
    let mut last_chunked = false;
    for line in &lines {
        for token in line.as_bytes().split(|&b| b == b',') {
            let token = trim_ows(token);
            if token.is_empty() {
                continue;
            }
            last_chunked = token.eq_ignore_ascii_case(b"chunked");
            before_last = buf.len();
            if !buf.is_empty() {
                buf.extend_from_slice(b", ");
            }
            buf.extend_from_slice(token);
        }
    }
    if last_chunked {
        buf.truncate(before_last);
    }
    if buf.is_empty() {
        return TransferCodings::Chunked;
    }
    // Slices of valid values joined by ", " are a valid value; were it ever not, the first
    // line as received still names the codings.
    match HeaderValue::from_maybe_shared(Bytes::from(buf)) {
        Ok(v) => TransferCodings::Other(v),
        Err(_) => match headers.get(header::TRANSFER_ENCODING) {
            Some(v) => TransferCodings::Other(v.clone()),
            None => TransferCodings::Chunked,
        },
    }
}

/// Remove every header named in one `Connection` value (a comma list of tokens).
fn remove_listed(headers: &mut HeaderMap, connection: &HeaderValue) {
    for token in connection.as_bytes().split(|&b| b == b',') {
        // Not UTF-8 means not a header name: nothing to remove.
        let Ok(token) = std::str::from_utf8(trim_ows(token)) else {
            continue;
        };
        if token.is_empty() || PROTECTED.iter().any(|p| p.eq_ignore_ascii_case(token)) {
            continue;
        }
        // `remove(&str)` lower-cases on the stack and ignores invalid names; `close` and
        // `keep-alive` simply find nothing.
        headers.remove(token);
    }
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Set X-Forwarded-For/-Proto/-Host for the upstream. The existing X-Forwarded-For chain is kept
/// only when the peer is a trusted proxy; otherwise it is replaced by the peer address.
///
/// X-Forwarded-Proto and X-Forwarded-Host are likewise kept only when a trusted peer supplied
/// them; otherwise they are `proto` and the request's `host` (removed when there is no host),
/// so a client can never choose what the upstream reads there. `proto` must be a valid header
/// value (`"http"` / `"https"`). `seen`: which of them `headers` holds
/// ([`remove_hop_by_hop_noting`]). Every request passes here once, so the routing-override
/// headers (`X-Original-URL`, `X-Rewrite-URL`) are removed here too.
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    seen: ForwardedSeen,
    peer: IpAddr,
    peer_trusted: bool,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    // One pass over the names present (no hashing) as in `remove_hop_by_hop`: usually none.
    if headers.keys().any(|name| ROUTING_OVERRIDES.contains(name)) {
        for name in &ROUTING_OVERRIDES {
            headers.remove(name);
        }
    }
    // Dual-stack listeners report `::ffff:a.b.c.d`; the upstream should see `a.b.c.d`.
    let peer = peer.to_canonical();
    let chain = if peer_trusted && seen.xff {
        forwarded_chain(headers, peer)
    } else {
        ip_text(Vec::with_capacity(40), peer)
    };
    match HeaderValue::from_maybe_shared(Bytes::from(chain)) {
        Ok(v) => {
            headers.insert(&X_FORWARDED_FOR, v);
        }
        // Cannot happen (the parts were valid values); never forward the client's chain.
        Err(_) => {
            headers.remove(&X_FORWARDED_FOR);
        }
    }

    if !(peer_trusted && seen.proto && has_nonempty(headers, &X_FORWARDED_PROTO)) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(peer_trusted && seen.host && has_nonempty(headers, &X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                headers.insert(&X_FORWARDED_HOST, h.clone());
            }
            None if seen.host => {
                headers.remove(&X_FORWARDED_HOST);
            }
            None => {}
        }
    }
}

/// The existing X-Forwarded-For lines joined with ", " (empty lines skipped), then the peer.
fn forwarded_chain(headers: &HeaderMap, peer: IpAddr) -> Vec<u8> {
    let existing: usize = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(|v| v.len() + 2)
        .sum();
    let mut buf = Vec::with_capacity(existing + 40);
    for v in &headers.get_all(&X_FORWARDED_FOR) {
        let line = trim_ows(v.as_bytes());
        if line.is_empty() {
            continue;
        }
        if !buf.is_empty() {
            buf.extend_from_slice(b", ");
        }
        buf.extend_from_slice(line);
    }
    if !buf.is_empty() {
        buf.extend_from_slice(b", ");
    }
    ip_text(buf, peer)
}

fn ip_text(mut buf: Vec<u8>, ip: IpAddr) -> Vec<u8> {
    crate::net::push_ip(&mut buf, ip);
    buf
}

fn has_nonempty(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| !trim_ows(v.as_bytes()).is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::test_headers::{get, hv, one};

    /// `set_forwarded` on a map as it stands (what the handler's hop-by-hop pass would note).
    fn forwarded(
        h: &mut HeaderMap,
        peer: IpAddr,
        trusted: bool,
        proto: &'static str,
        host: Option<&HeaderValue>,
    ) {
        let (_, seen) = scan(h, &[], true);
        set_forwarded(h, seen, peer, trusted, proto, host);
    }

    // ---- hop-by-hop ----

    #[test]
    fn removes_standard_hop_by_hop() {
        let mut h = HeaderMap::new();
        for n in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            h.append(n, hv("x"));
        }
        h.insert("content-type", hv("text/plain"));
        h.insert("authorization", hv("Bearer t"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("content-type"));
        assert!(h.contains_key("authorization"));
    }

    #[test]
    fn the_hop_by_hop_pass_notes_the_forwarded_headers() {
        let mut h = HeaderMap::new();
        h.append("connection", hv("x-forwarded-for, X-Forwarded-Host"));
        h.append("x-forwarded-for", hv("203.0.113.9"));
        h.append("x-forwarded-host", hv("example.org"));
        let (_, seen) = remove_hop_by_hop_noting(&mut h, true);
        set_forwarded(&mut h, seen, ip("10.0.0.1"), true, "http", None);
        assert_eq!(one(&h, "x-forwarded-for"), Some("203.0.113.9, 10.0.0.1"));
        assert_eq!(one(&h, "x-forwarded-host"), Some("example.org"));
        assert_eq!(one(&h, "x-forwarded-proto"), Some("http"));
        // Seen nowhere: only the gateway's own.
        let mut h = HeaderMap::new();
        let (_, seen) = remove_hop_by_hop_noting(&mut h, false);
        set_forwarded(&mut h, seen, ip("10.0.0.1"), true, "https", None);
        assert_eq!(one(&h, "x-forwarded-for"), Some("10.0.0.1"));
        assert_eq!(one(&h, "x-forwarded-proto"), Some("https"));
        assert!(!h.contains_key("x-forwarded-host"));
    }

    #[test]
    fn removes_headers_named_in_connection() {
        let mut h = HeaderMap::new();
        h.append("connection", hv("close, X-Foo ,\tx-bar"));
        h.append("connection", hv("X-BAZ"));
        h.insert("x-foo", hv("1"));
        h.insert("x-bar", hv("2"));
        h.insert("x-baz", hv("3"));
        h.insert("x-keep", hv("4"));
        remove_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("x-foo"));
        assert!(!h.contains_key("x-bar"));
        assert!(!h.contains_key("x-baz"));
        assert!(!h.contains_key("connection"));
        assert_eq!(one(&h, "x-keep"), Some("4"));
    }

    #[test]
    fn connection_single_line_and_junk_tokens() {
        let mut h = HeaderMap::new();
        h.insert("connection", hv("keep-alive, , ,bad token, \"q\", x-foo,"));
        h.insert("x-foo", hv("1"));
        h.insert("x-other", hv("2"));
        remove_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("x-foo"));
        assert_eq!(one(&h, "x-other"), Some("2"));
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_bytes(b"x-\xff, x-foo").expect("obs-text is a valid value"),
        );
        h.insert("x-foo", hv("1"));
        remove_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("x-foo"));
    }

    #[test]
    fn connection_cannot_remove_protected_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            hv("X-Forwarded-For, x-forwarded-proto, X-FORWARDED-HOST, Host, Content-Length"),
        );
        h.insert("x-forwarded-for", hv("1.1.1.1"));
        h.insert("x-forwarded-proto", hv("https"));
        h.insert("x-forwarded-host", hv("a.example"));
        h.insert("host", hv("a.example"));
        h.insert("content-length", hv("3"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 5, "{h:?}");
    }

    #[test]
    fn forwarded_headers_survive_either_order() {
        let make = || {
            let mut h = HeaderMap::new();
            h.insert(
                "connection",
                hv("x-forwarded-for, x-forwarded-proto, x-forwarded-host"),
            );
            h.insert("x-forwarded-for", hv("6.6.6.6"));
            h.insert("x-forwarded-host", hv("evil.example"));
            h
        };
        let host = hv("api.example.com");
        let peer: IpAddr = "198.51.100.7".parse().expect("test address");

        let mut a = make();
        remove_hop_by_hop(&mut a, false);
        forwarded(&mut a, peer, false, "https", Some(&host));
        let mut b = make();
        forwarded(&mut b, peer, false, "https", Some(&host));
        remove_hop_by_hop(&mut b, false);

        assert_eq!(a, b);
        assert_eq!(one(&a, "x-forwarded-for"), Some("198.51.100.7"));
        assert_eq!(one(&a, "x-forwarded-proto"), Some("https"));
        assert_eq!(one(&a, "x-forwarded-host"), Some("api.example.com"));
        assert!(!a.contains_key("connection"));
    }

    #[test]
    fn routing_override_headers_never_pass() {
        let peer: IpAddr = "198.51.100.7".parse().expect("test address");
        for trusted in [false, true] {
            let mut h = HeaderMap::new();
            h.append("x-original-url", hv("/admin"));
            h.append("x-original-url", hv("/admin2"));
            h.insert("x-rewrite-url", hv("/admin"));
            h.insert("x-keep", hv("1"));
            forwarded(&mut h, peer, trusted, "http", None);
            assert!(!h.contains_key("x-original-url"), "trusted {trusted}");
            assert!(!h.contains_key("x-rewrite-url"), "trusted {trusted}");
            assert_eq!(one(&h, "x-keep"), Some("1"));
        }
    }

    #[test]
    fn client_ip_headers_go_only_when_asked() {
        let make = || {
            let mut h = HeaderMap::new();
            for n in [
                "x-real-ip",
                "forwarded",
                "true-client-ip",
                "cf-connecting-ip",
                "x-client-ip",
                "x-cluster-client-ip",
                "fastly-client-ip",
            ] {
                h.append(n, hv("6.6.6.6"));
            }
            h.insert("x-keep", hv("1"));
            h
        };
        let mut h = make();
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
        let mut h = make();
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 8, "{h:?}");
    }

    fn codings(lines: &[&'static str], with_length: bool) -> (TransferCodings, HeaderMap) {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("transfer-encoding", hv(l));
        }
        if with_length {
            h.insert("content-length", hv("2"));
        }
        h.insert("content-type", hv("text/plain"));
        (remove_hop_by_hop(&mut h, false), h)
    }

    #[test]
    fn transfer_encoding_takes_content_length_with_it() {
        let (c, h) = codings(&["chunked"], true);
        assert_eq!(c, TransferCodings::Chunked);
        assert!(!h.contains_key("content-length"));
        assert!(!h.contains_key("transfer-encoding"));
        assert!(h.contains_key("content-type"));
        let (c, h) = codings(&[], true);
        assert_eq!(c, TransferCodings::None);
        assert!(h.contains_key("content-length"));
    }

    #[test]
    fn transfer_codings_other_than_the_final_chunked_are_kept() {
        let other = |s: &'static str| TransferCodings::Other(hv(s));
        assert_eq!(codings(&["gzip, chunked"], true).0, other("gzip"));
        assert_eq!(codings(&["gzip", "Chunked"], false).0, other("gzip"));
        assert_eq!(
            codings(&[" chunked ", ""], false).0,
            TransferCodings::Chunked
        );
        // Not final: hyper decoded nothing, the body carries all of them.
        assert_eq!(codings(&["chunked, gzip"], false).0, other("chunked, gzip"));
        assert_eq!(codings(&["gzip"], false).0, other("gzip"));
        assert_eq!(
            codings(&["x-a,,x-b ,\tchunked"], false).0,
            other("x-a, x-b")
        );
    }

    #[test]
    fn te_trailers_is_found_among_codings() {
        let te = |lines: &[&'static str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append("te", hv(l));
            }
            accepts_trailers(&h)
        };
        assert!(te(&["trailers"]));
        assert!(te(&["gzip;q=0.5", " Trailers ,deflate"]));
        assert!(!te(&[]));
        assert!(!te(&["gzip, trailers-x"]));
    }

    // ---- X-Forwarded-* ----

    #[test]
    fn cookie_fields_are_joined_into_one() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_bytes(b"c=\xe9").unwrap());
        join_cookies(&mut h);
        let all: Vec<&[u8]> = h
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(all, [b"a=1; b=2; c=\xe9".as_slice()]);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn untrusted_peer_replaces_chain() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", hv("6.6.6.6"));
        h.append("x-forwarded-for", hv("7.7.7.7"));
        forwarded(&mut h, ip("198.51.100.7"), false, "http", None);
        assert_eq!(get(&h, "x-forwarded-for"), ["198.51.100.7"]);
    }

    #[test]
    fn trusted_peer_appends_to_joined_chain() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", hv("198.51.100.7"));
        h.append("x-forwarded-for", hv(""));
        h.append("x-forwarded-for", hv("10.1.1.1, 10.2.2.2"));
        forwarded(&mut h, ip("10.0.0.1"), true, "http", None);
        assert_eq!(
            get(&h, "x-forwarded-for"),
            ["198.51.100.7, 10.1.1.1, 10.2.2.2, 10.0.0.1"]
        );
        let mut h = HeaderMap::new();
        forwarded(&mut h, ip("10.0.0.1"), true, "http", None);
        assert_eq!(get(&h, "x-forwarded-for"), ["10.0.0.1"]);
    }

    #[test]
    fn forwarded_peer_is_unmapped() {
        let mut h = HeaderMap::new();
        forwarded(&mut h, ip("::ffff:198.51.100.7"), false, "http", None);
        assert_eq!(get(&h, "x-forwarded-for"), ["198.51.100.7"]);
        let mut h = HeaderMap::new();
        forwarded(&mut h, ip("2001:db8::1"), false, "http", None);
        assert_eq!(get(&h, "x-forwarded-for"), ["2001:db8::1"]);
    }

    #[test]
    fn proto_and_host_from_untrusted_client_are_replaced() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-proto", hv("https"));
        h.append("x-forwarded-proto", hv("https"));
        h.insert("x-forwarded-host", hv("evil.example"));
        let host = hv("api.example.com:8443");
        forwarded(&mut h, ip("198.51.100.7"), false, "http", Some(&host));
        assert_eq!(get(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(get(&h, "x-forwarded-host"), ["api.example.com:8443"]);
        // No host: a client-sent X-Forwarded-Host must not survive.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", hv("evil.example"));
        forwarded(&mut h, ip("198.51.100.7"), false, "https", None);
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(get(&h, "x-forwarded-proto"), ["https"]);
    }

    #[test]
    fn trusted_peer_keeps_proto_and_host() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", hv("https"));
        h.insert("x-forwarded-host", hv("public.example"));
        let host = hv("internal:8080");
        forwarded(&mut h, ip("10.0.0.1"), true, "http", Some(&host));
        assert_eq!(get(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&h, "x-forwarded-host"), ["public.example"]);
        // Empty values from a trusted peer count as absent.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", hv(""));
        h.insert("x-forwarded-host", hv(" "));
        forwarded(&mut h, ip("10.0.0.1"), true, "http", Some(&host));
        assert_eq!(get(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(get(&h, "x-forwarded-host"), ["internal:8080"]);
    }
}
