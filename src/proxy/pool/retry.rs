//! Sending a request again after it was sent and failed (a route's `retry`): only requests that
//! may be sent twice (an idempotent method, RFC 9110 9.2.2) and that can be (no body: the
//! gateway streams bodies and keeps no copy).

use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty};

use crate::config::compiled::Retry;
use crate::proxy::upstream::SentFailure;
use crate::proxy::upstream_client::RequestBody;

/// The head of a request, kept to send it again.
pub(super) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    /// A copy of `req`'s head when `retry` may send it again (one copy of the headers, for
    /// those requests only). Boxed: it stays in every request's future, retried or not.
    pub(super) fn of(retry: Option<&Retry>, req: &Request<RequestBody>) -> Option<Box<Replay>> {
        retry?;
        if !idempotent(req.method()) || !req.body().is_end_stream() {
            return None;
        }
        Some(Box::new(Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }))
    }

    pub(super) fn request(&self) -> Request<RequestBody> {
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether `retry` asks for another try after this failure of a sent request.
pub(super) fn after_failure(retry: &Retry, failure: SentFailure) -> bool {
    match failure {
        SentFailure::Reset => retry.on_reset,
        SentFailure::Timeout => retry.on_timeout,
        SentFailure::Final => false,
    }
}

/// Whether `retry` asks for another try after this answer.
pub(super) fn after_answer(retry: &Retry, status: StatusCode) -> bool {
    retry.on_gateway_error
        && matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        )
}
