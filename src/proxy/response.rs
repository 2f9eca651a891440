//! Every answer the gateway writes itself, from one place: errors map to a status and a small
//! JSON body that never carries internals (no upstream addresses, no error chains). Rejections
//! (429) are RFC 9457 problem details (`application/problem+json`) of type
//! [`QUOTA_EXCEEDED`], which also carry the members earlier clients read (`error`, `policy`,
//! `retry_after`, `message`).

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::body::GatewayBody;
use super::cost::BadCost;
use super::host::BadHost;
use crate::metrics::Decision;
use crate::uri_path::PathError;

/// The problem type of every 429 (IANA HTTP Problem Types registry).
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// What went wrong on the request path, as the client may learn it.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("bad request path: {0}")]
    BadPath(PathError),
    #[error(transparent)]
    BadHost(#[from] BadHost),
    /// The client's request body broke its framing (a bad chunk size, say) while it was being
    /// forwarded: the client's fault, never the upstream's.
    #[error("malformed request body")]
    BadBody,
    /// The client went away before sending its whole body; nobody reads the answer.
    #[error("client closed the connection before its request body ended")]
    ClientGone,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("no route matches")]
    NoRoute,
    #[error("client denied by access list")]
    Forbidden,
    #[error("upstream connection failed: {0}")]
    UpstreamConnect(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// An answer the gateway must not relay: a `101` it never asked for, or a transfer coding
    /// the client's protocol cannot carry.
    #[error("upstream response cannot be relayed: {0}")]
    UpstreamProtocol(&'static str),
    #[error("upstream request could not be built: {0}")]
    UpstreamRequest(String),
    #[error(transparent)]
    BadCost(#[from] BadCost),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadPath(_)
            | GatewayError::BadHost(_)
            | GatewayError::BadBody
            | GatewayError::ClientGone => StatusCode::BAD_REQUEST,
            GatewayError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::Forbidden => StatusCode::FORBIDDEN,
            GatewayError::UpstreamConnect(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamRequest(_) | GatewayError::UpstreamProtocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::BadCost(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The `error` member of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadPath(_) | GatewayError::BadHost(_) => "bad_request",
            GatewayError::BadBody => "bad_request_body",
            GatewayError::ClientGone => "client_closed_request",
            GatewayError::HeadTooLarge => "header_too_large",
            GatewayError::NoRoute => "no_route",
            GatewayError::Forbidden => "forbidden",
            GatewayError::UpstreamConnect(_)
            | GatewayError::UpstreamRequest(_)
            | GatewayError::UpstreamProtocol(_) => "bad_gateway",
            GatewayError::UpstreamTimeout => "gateway_timeout",
            GatewayError::BadCost(_) => "invalid_cost",
        }
    }

    /// The decision label recorded for this error, if it is a decision at all.
    pub fn decision(&self) -> Option<Decision> {
        match self {
            GatewayError::BadPath(_) | GatewayError::BadHost(_) | GatewayError::HeadTooLarge => {
                Some(Decision::BadRequest)
            }
            GatewayError::NoRoute => Some(Decision::NoRoute),
            GatewayError::Forbidden => Some(Decision::Denied),
            // Refused by the route's cost rule before any limit was consulted.
            GatewayError::BadCost(_) => Some(Decision::Denied),
            _ => None,
        }
    }

    fn message(&self) -> &'static str {
        match self {
            GatewayError::BadHost(BadHost::Missing) => "An HTTP/1.1 request needs a Host header.",
            GatewayError::BadHost(BadHost::Repeated) => "A request has at most one Host header.",
            GatewayError::BadHost(BadHost::Invalid) => "The Host header is not a valid host.",
            GatewayError::BadHost(BadHost::Conflicting) => {
                "The Host header names another host than the request target."
            }
            GatewayError::BadBody => "The request body is malformed.",
            GatewayError::ClientGone => "The request body ended early.",
            GatewayError::BadPath(e) => path_message(*e),
            GatewayError::HeadTooLarge => "The request head is larger than this gateway accepts.",
            GatewayError::NoRoute => "No route matches this request.",
            GatewayError::Forbidden => "Access from this address is not allowed.",
            GatewayError::UpstreamConnect(_) | GatewayError::UpstreamRequest(_) => {
                "The upstream service could not be reached."
            }
            GatewayError::UpstreamProtocol(_) => {
                "The upstream service sent a response this gateway cannot relay."
            }
            GatewayError::UpstreamTimeout => "The upstream service did not answer in time.",
            GatewayError::BadCost(_) => "The request cost header is invalid.",
        }
    }

    pub fn into_response(self) -> Response<GatewayBody> {
        // The cost error names the header and the range the client must use.
        let detail = match &self {
            GatewayError::BadCost(e) => Some(format!("{e}.")),
            _ => None,
        };
        json(
            self.status(),
            &ErrorBody {
                error: self.code(),
                message: detail.as_deref().unwrap_or(self.message()),
                policy: None,
                retry_after: None,
            },
            None,
        )
    }
}

/// Why a path was refused, in words a client can act on.
fn path_message(e: PathError) -> &'static str {
    match e {
        PathError::AboveRoot => "The request path climbs above the root.",
        PathError::Malformed => "The request path is malformed.",
        PathError::Semicolon => {
            "The request path contains a semicolon (`;` or `%3B`), which this gateway does not \
             accept in paths."
        }
        PathError::EscapedSlash => {
            "The request path contains an encoded slash or backslash (`%2F` or `%5C`), which \
             this gateway does not accept in paths."
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    message: &'a str,
}

/// An RFC 9457 problem for a 429, with the members of the gateway's other JSON errors.
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    #[serde(rename = "violated-policies", skip_serializing_if = "Option::is_none")]
    violated_policies: Option<&'a [&'a str]>,
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    retry_after: u64,
    message: &'a str,
}

/// 429 for a request over a policy's limit: `policy` is the one reported, `violated` every
/// enforce policy that rejected (in route order).
pub fn rate_limited(policy: &str, violated: &[&str], retry_after_s: u64) -> Response<GatewayBody> {
    let message = format!("Rate limit exceeded for policy '{policy}'. Retry in {retry_after_s} s.");
    problem(&Problem {
        kind: QUOTA_EXCEEDED,
        title: "Too many requests",
        status: 429,
        detail: &message,
        violated_policies: Some(violated),
        error: "rate_limited",
        policy: Some(policy),
        retry_after: retry_after_s,
        message: &message,
    })
}

/// 429 for a client that is temporarily blocked.
pub fn blocked(retry_after_s: u64) -> Response<GatewayBody> {
    let message = format!("This client is temporarily blocked. Retry in {retry_after_s} s.");
    problem(&Problem {
        kind: QUOTA_EXCEEDED,
        title: "Client temporarily blocked",
        status: 429,
        detail: &message,
        violated_policies: None,
        error: "blocked",
        policy: None,
        retry_after: retry_after_s,
        message: &message,
    })
}

fn problem(body: &Problem<'_>) -> Response<GatewayBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
    let mut resp = Response::new(GatewayBody::full(bytes));
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(RETRY_AFTER, HeaderValue::from(body.retry_after));
    resp
}

/// 503 when the store is unavailable and `on_error = "deny"`.
pub fn unavailable(retry_after_s: u64) -> Response<GatewayBody> {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &ErrorBody {
            error: "unavailable",
            policy: None,
            retry_after: Some(retry_after_s),
            message: "Rate limiting is temporarily unavailable.",
        },
        Some(retry_after_s),
    )
}

fn json(
    status: StatusCode,
    body: &ErrorBody<'_>,
    retry_after_s: Option<u64>,
) -> Response<GatewayBody> {
    // Serializing a struct of strings and integers cannot fail; fall back to a fixed body anyway
    // so this path never panics.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
    let mut resp = Response::new(GatewayBody::full(bytes));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry_after_s {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(resp: Response<GatewayBody>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn rate_limited_body_and_headers() {
        let resp = rate_limited("auth", &["auth", "global"], 17);
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[RETRY_AFTER], "17");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
        let v = body_json(resp).await;
        assert_eq!(v["type"], QUOTA_EXCEEDED);
        assert_eq!(v["status"], 429);
        assert_eq!(v["title"], "Too many requests");
        assert_eq!(
            v["violated-policies"],
            serde_json::json!(["auth", "global"])
        );
        assert_eq!(v["error"], "rate_limited");
        assert_eq!(v["policy"], "auth");
        assert_eq!(v["retry_after"], 17);
        assert_eq!(v["detail"], v["message"]);
    }

    #[tokio::test]
    async fn blocked_is_a_problem_too() {
        let resp = blocked(540);
        assert_eq!(resp.headers()[RETRY_AFTER], "540");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
        let v = body_json(resp).await;
        assert_eq!(v["type"], QUOTA_EXCEEDED);
        assert_eq!(v["error"], "blocked");
        assert_eq!(v["retry_after"], 540);
        assert!(v.get("violated-policies").is_none());
    }

    #[tokio::test]
    async fn bad_cost_names_header_and_range() {
        let e = GatewayError::from(BadCost {
            header: "x-request-cost".into(),
            max: 100,
        });
        let resp = e.into_response();
        assert_eq!(resp.status(), 400);
        let v = body_json(resp).await;
        assert_eq!(v["error"], "invalid_cost");
        assert_eq!(
            v["message"],
            "x-request-cost must be a whole number from 1 to 100."
        );
    }

    #[tokio::test]
    async fn upstream_errors_do_not_leak_details() {
        let resp = GatewayError::UpstreamConnect("10.9.8.7:80 refused".into()).into_response();
        assert_eq!(resp.status(), 502);
        let v = body_json(resp).await;
        assert!(!v.to_string().contains("10.9.8.7"));
    }
}
