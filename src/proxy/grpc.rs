//! The gRPC form of the gateway's own answers. A gRPC client reads the outcome of a call from
//! `grpc-status` and `grpc-message`, not from the HTTP status: answered with a 429 or a JSON body
//! it reports a transport failure and drops the message. So a refused call gets HTTP 200, the
//! client's gRPC content type and a "trailers-only" response (gRPC over HTTP/2: the status in
//! the one HEADERS frame, which also ends the stream), with the other headers of the refusal
//! (rate-limit headers, `Retry-After`). `proxy/response` decides the code; this writes it.

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS};

use super::body::GatewayBody;

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// gRPC's server pushback (the retry design, gRFC A6): a client with a retry policy waits this
/// many milliseconds before retrying, instead of its own backoff.
static GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// `grpc-message` is percent-encoded: everything outside printable ASCII, and `%` itself.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// The status codes the gateway answers with (grpc/grpc `doc/statuscodes.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    Cancelled = 1,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// The request's content type if it is a gRPC call (`application/grpc`, with or without a
/// `+proto`-like suffix, or gRPC-Web's `application/grpc-web...`).
pub(crate) fn content_type(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(CONTENT_TYPE).filter(|v| {
        let v = v.as_bytes();
        v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/grpc")
    })
}

/// A trailers-only answer: `code` and `message` in the head, no body. `content_type` is the
/// call's own, so gRPC-Web clients get gRPC-Web back.
pub(crate) fn answer(
    code: Code,
    message: &str,
    content_type: HeaderValue,
    retry_after_s: Option<u64>,
) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(&GRPC_STATUS, HeaderValue::from(code as u16));
    let encoded = percent_encoding::utf8_percent_encode(message, MESSAGE_ESCAPES).to_string();
    // Percent-encoded text is printable ASCII, always a valid value.
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        headers.insert(&GRPC_MESSAGE, v);
    }
    if let Some(secs) = retry_after_s {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        headers.insert(
            &GRPC_RETRY_PUSHBACK_MS,
            HeaderValue::from(secs.saturating_mul(1000)),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[test]
    fn grpc_content_types() {
        let ct = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
            content_type(&h).is_some()
        };
        assert!(ct("application/grpc"));
        assert!(ct("application/grpc+proto"));
        assert!(ct("Application/GRPC-web+json"));
        assert!(!ct("application/json"));
        assert!(!ct("application/grp"));
        assert!(content_type(&HeaderMap::new()).is_none());
    }

    #[test]
    fn trailers_only_answer() {
        let resp = answer(
            Code::ResourceExhausted,
            "Rate limit exceeded for policy 'p'. Retry in 5 s. 100% é",
            HeaderValue::from_static("application/grpc+proto"),
            Some(5),
        );
        assert_eq!(resp.status(), 200);
        let h = resp.headers();
        assert_eq!(h[CONTENT_TYPE], "application/grpc+proto");
        assert_eq!(h["grpc-status"], "8");
        assert_eq!(
            h["grpc-message"],
            "Rate limit exceeded for policy 'p'. Retry in 5 s. 100%25 %C3%A9"
        );
        assert_eq!(h["retry-after"], "5");
        assert_eq!(h["grpc-retry-pushback-ms"], "5000");
        assert!(resp.body().is_end_stream());
    }
}
