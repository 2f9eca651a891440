//! Every answer the gateway writes itself, from one place: a [`GatewayError`] (refusals and
//! failures) maps to a status, its headers and a small JSON body that never carries internals (no
//! upstream addresses, no error chains); a route's `respond` target is [`respond`]. Rejections
//! (429) are RFC 9457 problem details (`application/problem+json`) of type
//! [`QUOTA_EXCEEDED`], which also carry the members earlier clients read (`error`, `policy`,
//! `retry_after`, `message`), and the rate-limit headers when a policy rejected. A gRPC call gets
//! the same answer in gRPC's form ([`GatewayError::into_response_for`], written by `proxy/grpc`).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::body::GatewayBody;
use super::cost::BadCost;
use super::extended_connect::Refusal;
use super::host::BadHost;
use super::{grpc, rate_headers};
use crate::auth::Invalid;
use crate::config::compiled::Policy;
use crate::limiter::RateReport;
use crate::metrics::DecisionLabel;
use crate::uri_path::PathError;

/// The problem type of every 429 (IANA HTTP Problem Types registry).
pub(crate) const QUOTA_EXCEEDED: &str =
    "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// Upstream connections close as their responses end and idle ones within seconds: a client
/// refused for want of one may try again soon.
const OVERLOADED_RETRY_AFTER_S: u64 = 1;

/// Every answer the gateway gives in place of the route's, as the client may learn it: a request
/// it cannot serve (malformed, unrouted, the upstream failing) or will not (an access list, a
/// limit, a block, the store away under `on_error = "deny"`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
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
    /// The upstream's timeout passed while the client was still sending its body.
    #[error("client request body too slow")]
    ClientBodyTimeout,
    #[error("request head too large")]
    HeadTooLarge,
    /// Forwarding needs a new upstream connection and `server.max_connections` of them are
    /// open (`proxy::upstream_ceiling`): nothing was sent.
    #[error("upstream connection ceiling reached")]
    Overloaded,
    #[error("no route matches")]
    NoRoute,
    #[error("client denied by access list")]
    Forbidden,
    /// Over a limit: `policy` is the one reported; `report` holds every policy of the route (the
    /// rate-limit headers, and the enforce policies that rejected).
    #[error("rate limit exceeded for policy {}", policy.name)]
    RateLimited {
        report: RateReport,
        policy: Arc<Policy>,
        retry_after_s: u64,
    },
    #[error("client temporarily blocked")]
    Blocked { retry_after_s: u64 },
    /// The store is unavailable and `on_error = "deny"`.
    #[error("rate limiting unavailable")]
    Unavailable { retry_after_s: u64 },
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
    /// A CONNECT the gateway does not tunnel (see `proxy/extended_connect`).
    #[error(transparent)]
    Connect(#[from] Refusal),
    /// The route's `[[auth]]` (named `realm`) refused the request: no token where one is
    /// required (`invalid` is `None`), or an invalid one with `on_invalid = "reject"`.
    #[error("unauthorized ({realm})")]
    Unauthorized {
        realm: Arc<str>,
        invalid: Option<Invalid>,
    },
}

impl GatewayError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadPath(_)
            | GatewayError::BadHost(_)
            | GatewayError::BadBody
            | GatewayError::ClientGone => StatusCode::BAD_REQUEST,
            GatewayError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::Forbidden => StatusCode::FORBIDDEN,
            GatewayError::RateLimited { .. } | GatewayError::Blocked { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            GatewayError::Unavailable { .. } | GatewayError::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::UpstreamConnect(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamRequest(_) | GatewayError::UpstreamProtocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::BadCost(_) => StatusCode::BAD_REQUEST,
            GatewayError::Connect(refusal) => refusal.status(),
            GatewayError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `error` member of the JSON body.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            GatewayError::BadPath(_) | GatewayError::BadHost(_) => "bad_request",
            GatewayError::BadBody => "bad_request_body",
            GatewayError::ClientGone => "client_closed_request",
            GatewayError::ClientBodyTimeout => "request_timeout",
            GatewayError::HeadTooLarge => "header_too_large",
            GatewayError::NoRoute => "no_route",
            GatewayError::Forbidden => "forbidden",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::Blocked { .. } => "blocked",
            GatewayError::Unavailable { .. } => "unavailable",
            GatewayError::Overloaded => "overloaded",
            GatewayError::UpstreamConnect(_)
            | GatewayError::UpstreamRequest(_)
            | GatewayError::UpstreamProtocol(_) => "bad_gateway",
            GatewayError::UpstreamTimeout => "gateway_timeout",
            GatewayError::BadCost(_) => "invalid_cost",
            GatewayError::Connect(Refusal::OtherProtocol) => "not_implemented",
            GatewayError::Connect(_) => "method_not_allowed",
            GatewayError::Unauthorized { invalid: None, .. } => "missing_token",
            GatewayError::Unauthorized { .. } => "invalid_token",
        }
    }

    /// The decision label recorded for this error, if it is a decision at all.
    pub(crate) fn decision(&self) -> Option<DecisionLabel> {
        match self {
            GatewayError::BadPath(_) | GatewayError::BadHost(_) | GatewayError::HeadTooLarge => {
                Some(DecisionLabel::BadRequest)
            }
            GatewayError::NoRoute => Some(DecisionLabel::NoRoute),
            GatewayError::Forbidden => Some(DecisionLabel::Denied),
            GatewayError::RateLimited { .. } => Some(DecisionLabel::Limited),
            GatewayError::Blocked { .. } => Some(DecisionLabel::Blocked),
            // The gateway refuses by policy, like an access-list denial.
            GatewayError::Unavailable { .. } => Some(DecisionLabel::Denied),
            // Refused by the route's cost rule before any limit was consulted.
            GatewayError::BadCost(_) => Some(DecisionLabel::Denied),
            // A request this gateway does not serve, refused before any store call.
            GatewayError::Connect(_) => Some(DecisionLabel::BadRequest),
            GatewayError::Unauthorized { .. } => Some(DecisionLabel::Unauthorized),
            _ => None,
        }
    }

    fn message(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            GatewayError::BadHost(BadHost::Missing) => "An HTTP/1.1 request needs a Host header.",
            GatewayError::BadHost(BadHost::Repeated) => "A request has at most one Host header.",
            GatewayError::BadHost(BadHost::Invalid) => "The Host header is not a valid host.",
            GatewayError::BadHost(BadHost::Conflicting) => {
                "The Host header names another host than the request target."
            }
            GatewayError::BadBody => "The request body is malformed.",
            GatewayError::ClientGone => "The request body ended early.",
            GatewayError::ClientBodyTimeout => "The request body did not arrive in time.",
            GatewayError::BadPath(e) => path_message(*e),
            GatewayError::HeadTooLarge => "The request head is larger than this gateway accepts.",
            GatewayError::Overloaded => {
                "The gateway has as many upstream connections open as it may; retry shortly."
            }
            GatewayError::NoRoute => "No route matches this request.",
            GatewayError::Forbidden => "Access from this address is not allowed.",
            GatewayError::Unauthorized { invalid: None, .. } => {
                "This route needs a token, and the request carries none."
            }
            GatewayError::Unauthorized {
                invalid: Some(invalid),
                ..
            } => invalid.message(),
            // The two messages of every rejection, built without `fmt` (one exact allocation).
            GatewayError::RateLimited {
                policy,
                retry_after_s,
                ..
            } => {
                return Cow::Owned(retry_message(
                    &[
                        "Rate limit exceeded for policy '",
                        &policy.name,
                        "'. Retry in ",
                    ],
                    *retry_after_s,
                ))
            }
            GatewayError::Blocked { retry_after_s } => {
                return Cow::Owned(retry_message(
                    &["This client is temporarily blocked. Retry in "],
                    *retry_after_s,
                ))
            }
            GatewayError::Unavailable { .. } => "Rate limiting is temporarily unavailable.",
            GatewayError::UpstreamConnect(_) | GatewayError::UpstreamRequest(_) => {
                "The upstream service could not be reached."
            }
            GatewayError::UpstreamProtocol(_) => {
                "The upstream service sent a response this gateway cannot relay."
            }
            GatewayError::UpstreamTimeout => "The upstream service did not answer in time.",
            // The cost error names the header and the range the client must use.
            GatewayError::BadCost(e) => return Cow::Owned(format!("{e}.")),
            GatewayError::Connect(refusal) => refusal.message(),
        })
    }

    /// The gRPC status of this answer. The rejections follow the gateway's meaning (a limit is
    /// RESOURCE_EXHAUSTED, not the UNAVAILABLE gRPC's HTTP mapping gives a 429); the rest
    /// follow gRPC's HTTP-to-status mapping (`doc/http-grpc-status-mapping.md`: 400 INTERNAL,
    /// 404 UNIMPLEMENTED, 502-504 UNAVAILABLE), but a timeout is DEADLINE_EXCEEDED and a bad
    /// cost header INVALID_ARGUMENT, which say more.
    pub(crate) fn grpc_code(&self) -> grpc::Code {
        match self {
            GatewayError::RateLimited { .. } | GatewayError::Blocked { .. } => {
                grpc::Code::ResourceExhausted
            }
            GatewayError::Forbidden => grpc::Code::PermissionDenied,
            GatewayError::Unauthorized { .. } => grpc::Code::Unauthenticated,
            GatewayError::Unavailable { .. }
            | GatewayError::Overloaded
            | GatewayError::UpstreamConnect(_)
            | GatewayError::UpstreamRequest(_)
            | GatewayError::UpstreamProtocol(_) => grpc::Code::Unavailable,
            GatewayError::UpstreamTimeout | GatewayError::ClientBodyTimeout => {
                grpc::Code::DeadlineExceeded
            }
            GatewayError::NoRoute => grpc::Code::Unimplemented,
            GatewayError::BadCost(_) => grpc::Code::InvalidArgument,
            GatewayError::Connect(_) => grpc::Code::Unimplemented,
            GatewayError::ClientGone => grpc::Code::Cancelled,
            GatewayError::BadPath(_)
            | GatewayError::BadHost(_)
            | GatewayError::BadBody
            | GatewayError::HeadTooLarge => grpc::Code::Internal,
        }
    }

    /// The answer to a request whose content type was `grpc` (a gRPC call: see `proxy/grpc`),
    /// or the usual one.
    pub(crate) fn into_response_for(self, grpc: Option<&HeaderValue>) -> Response<GatewayBody> {
        let Some(content_type) = grpc else {
            return self.into_response();
        };
        let retry_after = match &self {
            GatewayError::RateLimited { retry_after_s, .. }
            | GatewayError::Blocked { retry_after_s }
            | GatewayError::Unavailable { retry_after_s } => Some(*retry_after_s),
            GatewayError::Overloaded => Some(OVERLOADED_RETRY_AFTER_S),
            _ => None,
        };
        let mut resp = grpc::answer(
            self.grpc_code(),
            &self.message(),
            content_type.clone(),
            retry_after,
        );
        match &self {
            GatewayError::RateLimited { report, .. } => {
                rate_headers::apply_rate_headers(resp.headers_mut(), report)
            }
            GatewayError::Unauthorized { realm, invalid } => {
                add_challenge(resp.headers_mut(), realm, invalid.is_some())
            }
            _ => {}
        }
        resp
    }

    pub(crate) fn into_response(self) -> Response<GatewayBody> {
        if let GatewayError::RateLimited {
            report,
            policy,
            retry_after_s,
        } = &self
        {
            // The most frequent answer: no message string, the body from compiled pieces.
            let mut resp = answer(
                StatusCode::TOO_MANY_REQUESTS,
                "application/problem+json",
                rate_limited_json(report, policy, *retry_after_s),
                Some(*retry_after_s),
                RATE_HEADERS,
            );
            rate_headers::apply_rate_headers(resp.headers_mut(), report);
            return resp;
        }
        let message = self.message();
        match &self {
            GatewayError::Blocked { retry_after_s } => problem(&Problem {
                kind: QUOTA_EXCEEDED,
                title: "Client temporarily blocked",
                status: 429,
                detail: &message,
                violated_policies: None,
                error: self.code(),
                policy: None,
                retry_after: *retry_after_s,
                message: &message,
            }),
            GatewayError::Unauthorized { realm, invalid } => {
                unauthorized(realm, *invalid, &message)
            }
            _ => {
                let retry_after = match &self {
                    GatewayError::Unavailable { retry_after_s } => Some(*retry_after_s),
                    GatewayError::Overloaded => Some(OVERLOADED_RETRY_AFTER_S),
                    _ => None,
                };
                json(
                    self.status(),
                    &ErrorBody {
                        error: self.code(),
                        message: &message,
                        policy: None,
                        retry_after,
                    },
                    retry_after,
                )
            }
        }
    }
}

/// The 429 answer to a rejection by the report's reported policy (a block if the report is
/// empty), as the handler builds it, body included but not returned: for `benches/hot_path.rs`.
pub fn rate_limited_for_bench(report: RateReport, retry_after_s: u64) -> Response<()> {
    let policy = report
        .entries
        .get(report.reported)
        .map(|e| Arc::clone(&e.policy));
    let err = match policy {
        Some(policy) => GatewayError::RateLimited {
            report,
            policy,
            retry_after_s,
        },
        None => GatewayError::Blocked { retry_after_s },
    };
    err.into_response().map(|_| ())
}

/// How many rate-limit headers `apply_rate_headers` adds (room is made for them up front).
const RATE_HEADERS: usize = 6;

/// The start of every 429 body for a policy's rejection, up to the `detail` member's value.
const RATE_LIMITED_HEAD: &[u8] = b"{\"type\":\"https://iana.org/assignments/http-problem-types#quota-exceeded\",\"title\":\"Too many requests\",\"status\":429,\"detail\":";

/// The problem+json body of a rejection by `policy`: byte for byte what [`Problem::to_json`]
/// writes for it (a unit test holds them equal), from text compiled with the config (the policy
/// names as JSON strings, `PolicyHeaderText::json_name`), so a rejection only copies bytes and
/// formats one number. The detail and the message are the same text:
/// `Rate limit exceeded for policy '<name>'. Retry in <secs> s.` (JSON escaping is per
/// character, so the escaped name can be copied into the middle of the string).
fn rate_limited_json(report: &RateReport, policy: &Policy, retry_after_s: u64) -> Vec<u8> {
    let name = &policy.headers.json_name[..];
    // The name's escaped text without its quotes.
    let inner = name
        .get(1..name.len().saturating_sub(1))
        .unwrap_or_default();
    let mut digits = itoa::Buffer::new();
    let secs = digits.format(retry_after_s).as_bytes();
    let message = |b: &mut Vec<u8>| {
        b.extend_from_slice(b"\"Rate limit exceeded for policy '");
        b.extend_from_slice(inner);
        b.extend_from_slice(b"'. Retry in ");
        b.extend_from_slice(secs);
        b.extend_from_slice(b" s.\"");
    };
    let violated = report.violated_entries();
    let names: usize = violated
        .clone()
        .map(|e| e.policy.headers.json_name.len() + 1)
        .sum();
    let mut b = Vec::with_capacity(
        RATE_LIMITED_HEAD.len() + 2 * (inner.len() + secs.len() + 48) + names + name.len() + 96,
    );
    b.extend_from_slice(RATE_LIMITED_HEAD);
    message(&mut b);
    b.extend_from_slice(b",\"violated-policies\":[");
    for (i, e) in violated.enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(&e.policy.headers.json_name);
    }
    b.extend_from_slice(b"],\"error\":\"rate_limited\",\"policy\":");
    b.extend_from_slice(name);
    b.extend_from_slice(b",\"retry_after\":");
    b.extend_from_slice(secs);
    b.extend_from_slice(b",\"message\":");
    message(&mut b);
    b.push(b'}');
    b
}

/// `parts`, then `secs` and " s.".
fn retry_message(parts: &[&str], secs: u64) -> String {
    let mut digits = itoa::Buffer::new();
    let secs = digits.format(secs);
    let len = parts.iter().map(|p| p.len()).sum::<usize>() + secs.len() + 3;
    let mut out = String::with_capacity(len);
    for p in parts {
        out.push_str(p);
    }
    out.push_str(secs);
    out.push_str(" s.");
    out
}

/// A 401 (RFC 6750 3): `WWW-Authenticate: Bearer realm="<auth name>"`, with
/// `error="invalid_token"` when a token was sent, and an RFC 9457 problem body.
fn unauthorized(realm: &str, invalid: Option<Invalid>, message: &str) -> Response<GatewayBody> {
    #[derive(Serialize)]
    struct AuthProblem<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        title: &'static str,
        status: u16,
        detail: &'a str,
        error: &'static str,
        message: &'a str,
    }
    let error = if invalid.is_some() {
        "invalid_token"
    } else {
        "missing_token"
    };
    let mut resp = json_answer(
        StatusCode::UNAUTHORIZED,
        "application/problem+json",
        &AuthProblem {
            kind: "about:blank",
            title: "Unauthorized",
            status: 401,
            detail: message,
            error,
            message,
        },
        None,
    );
    add_challenge(resp.headers_mut(), realm, invalid.is_some());
    resp
}

/// `WWW-Authenticate` for a 401 (and for a gRPC call's UNAUTHENTICATED answer).
fn add_challenge(headers: &mut HeaderMap, realm: &str, invalid: bool) {
    // Auth names are config names (a narrow alphabet), so the value is always valid.
    let challenge = if invalid {
        format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
    } else {
        format!("Bearer realm=\"{realm}\"")
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        headers.insert(WWW_AUTHENTICATE, value);
    }
}

/// A route's own answer (`respond` target): its status and body, as plain text.
pub(crate) fn respond(status: StatusCode, body: Bytes) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
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

/// An RFC 9457 problem for a 429, with the members of the gateway's other JSON errors. Written
/// by [`Problem::to_json`], byte for byte what serde_json writes for it (the tests derive
/// `Serialize` to check that).
#[cfg_attr(test, derive(Serialize))]
struct Problem<'a> {
    #[cfg_attr(test, serde(rename = "type"))]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    #[cfg_attr(
        test,
        serde(rename = "violated-policies", skip_serializing_if = "Option::is_none")
    )]
    violated_policies: Option<&'a [&'a str]>,
    error: &'static str,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    policy: Option<&'a str>,
    retry_after: u64,
    message: &'a str,
}

impl Problem<'_> {
    /// The body of every 429, so the cheapest answer the gateway gives: written straight into
    /// one buffer of the right size (serde_json grows its buffer several times and escapes
    /// byte by byte; every string here is plain printable ASCII but for odd policy names).
    fn to_json(&self) -> Vec<u8> {
        let names = self
            .violated_policies
            .map_or(0, |v| v.iter().map(|n| n.len() + 3).sum());
        let policy = self.policy.map_or(0, str::len);
        let strings = self.kind.len() + self.title.len() + self.error.len();
        let mut b = Vec::with_capacity(
            160 + strings + 2 * self.detail.len().max(self.message.len()) + names + policy,
        );
        b.extend_from_slice(b"{\"type\":");
        push_json_str(&mut b, self.kind);
        b.extend_from_slice(b",\"title\":");
        push_json_str(&mut b, self.title);
        b.extend_from_slice(b",\"status\":");
        b.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        b.extend_from_slice(b",\"detail\":");
        push_json_str(&mut b, self.detail);
        if let Some(violated) = self.violated_policies {
            b.extend_from_slice(b",\"violated-policies\":[");
            for (i, name) in violated.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                push_json_str(&mut b, name);
            }
            b.push(b']');
        }
        b.extend_from_slice(b",\"error\":");
        push_json_str(&mut b, self.error);
        if let Some(policy) = self.policy {
            b.extend_from_slice(b",\"policy\":");
            push_json_str(&mut b, policy);
        }
        b.extend_from_slice(b",\"retry_after\":");
        b.extend_from_slice(itoa::Buffer::new().format(self.retry_after).as_bytes());
        b.extend_from_slice(b",\"message\":");
        push_json_str(&mut b, self.message);
        b.push(b'}');
        b
    }
}

/// `s` as a JSON string. Printable ASCII other than `"` and `\` is copied as is; anything else
/// goes through serde_json, so the escaping is serde_json's.
fn push_json_str(b: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|c| (0x20..0x7F).contains(&c) && c != b'"' && c != b'\\')
    {
        b.push(b'"');
        b.extend_from_slice(s.as_bytes());
        b.push(b'"');
    } else if serde_json::to_writer(&mut *b, s).is_err() {
        // Writing a string into a Vec cannot fail; an empty string keeps the JSON valid anyway.
        b.extend_from_slice(b"\"\"");
    }
}

fn problem(body: &Problem<'_>) -> Response<GatewayBody> {
    answer(
        StatusCode::TOO_MANY_REQUESTS,
        "application/problem+json",
        body.to_json(),
        Some(body.retry_after),
        0,
    )
}

fn json(
    status: StatusCode,
    body: &ErrorBody<'_>,
    retry_after_s: Option<u64>,
) -> Response<GatewayBody> {
    json_answer(status, "application/json", body, retry_after_s)
}

fn json_answer(
    status: StatusCode,
    content_type: &'static str,
    body: &impl Serialize,
    retry_after_s: Option<u64>,
) -> Response<GatewayBody> {
    // Serializing a struct of strings and integers cannot fail; fall back to a fixed body anyway
    // so this path never panics.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
    answer(status, content_type, bytes, retry_after_s, 0)
}

/// `more_headers`: how many headers the caller adds afterwards (the map is sized once).
fn answer(
    status: StatusCode,
    content_type: &'static str,
    bytes: Vec<u8>,
    retry_after_s: Option<u64>,
    more_headers: usize,
) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::full(bytes));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.reserve(3 + more_headers);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry_after_s {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::compiled::Algorithm;
    use crate::limiter::ReportEntry;
    use crate::store::PolicyState;
    use http_body_util::BodyExt;

    async fn body_json(resp: Response<GatewayBody>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// A report of `(policy, allowed)` entries, the first one reported.
    fn report(entries: &[(&Arc<Policy>, bool)]) -> RateReport {
        RateReport {
            entries: entries
                .iter()
                .map(|&(p, allowed)| ReportEntry {
                    policy: Arc::clone(p),
                    state: PolicyState {
                        allowed,
                        limit: p.limit,
                        remaining: 0,
                        reset_ms: 16_001,
                        retry_after_ms: 16_001,
                    },
                })
                .collect(),
            reported: 0,
            now_ms: 1_763_999_983_500,
        }
    }

    fn policy(name: &str) -> Arc<Policy> {
        Arc::new(Policy::new(
            name,
            Algorithm::SlidingWindow,
            30,
            Duration::from_secs(60),
        ))
    }

    #[tokio::test]
    async fn rate_limited_body_and_headers() {
        let (auth, global, minute) = (policy("auth"), policy("global"), policy("minute"));
        let resp = GatewayError::RateLimited {
            report: report(&[(&auth, false), (&minute, true), (&global, false)]),
            policy: Arc::clone(&auth),
            retry_after_s: 17,
        }
        .into_response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[RETRY_AFTER], "17");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
        // The report's rate-limit headers come with the rejection.
        assert_eq!(resp.headers()["x-ratelimit-policy"], "auth");
        assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
        assert_eq!(
            resp.headers()["ratelimit"],
            "\"auth\";r=0;t=17, \"minute\";r=0;t=17, \"global\";r=0;t=17"
        );
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

    #[test]
    fn problem_bodies_are_what_serde_json_writes() {
        let odd = "odd \"name\" \\ \u{7f} \n é";
        let violated = ["auth", odd];
        for (policy, violated, retry_after) in [
            (Some("auth"), Some(&violated[..1]), 17),
            (Some(odd), Some(&violated[..]), 0),
            (None, None, u64::MAX),
            (Some(""), Some(&[][..]), 5),
        ] {
            let message = retry_message(&["Retry '", policy.unwrap_or(""), "' in "], retry_after);
            let p = Problem {
                kind: QUOTA_EXCEEDED,
                title: "Too many requests",
                status: 429,
                detail: &message,
                violated_policies: violated,
                error: "rate_limited",
                policy,
                retry_after,
                message: &message,
            };
            assert_eq!(
                String::from_utf8(p.to_json()).unwrap(),
                serde_json::to_string(&p).unwrap()
            );
        }
    }

    #[test]
    fn rate_limited_bodies_are_what_the_problem_writer_writes() {
        let odd = policy("odd \"name\" \\ \u{7f} \n \u{e9}");
        let (auth, minute) = (policy("auth"), policy("minute"));
        let shadow = Arc::new(Policy {
            mode: crate::config::compiled::Mode::Shadow,
            ..Policy::new("shadow", Algorithm::FixedWindow, 1, Duration::from_secs(1))
        });
        for (reported, entries, retry_after) in [
            (&auth, vec![(&auth, false)], 17),
            (
                &odd,
                vec![
                    (&auth, false),
                    (&minute, true),
                    (&shadow, false),
                    (&odd, false),
                ],
                0,
            ),
            (&minute, vec![], u64::MAX),
        ] {
            let report = report(&entries);
            let err = GatewayError::RateLimited {
                report,
                policy: Arc::clone(reported),
                retry_after_s: retry_after,
            };
            let GatewayError::RateLimited { report, .. } = &err else {
                unreachable!()
            };
            let message = err.message();
            let violated: Vec<&str> = report.violated_entries().map(|e| &*e.policy.name).collect();
            let expected = Problem {
                kind: QUOTA_EXCEEDED,
                title: "Too many requests",
                status: 429,
                detail: &message,
                violated_policies: Some(&violated),
                error: err.code(),
                policy: Some(&reported.name),
                retry_after,
                message: &message,
            };
            assert_eq!(
                String::from_utf8(rate_limited_json(report, reported, retry_after)).unwrap(),
                serde_json::to_string(&expected).unwrap()
            );
        }
    }

    #[test]
    fn rejection_messages_name_the_policy_and_the_wait() {
        let e = GatewayError::RateLimited {
            report: report(&[]),
            policy: policy("auth"),
            retry_after_s: 17,
        };
        assert_eq!(
            e.message(),
            "Rate limit exceeded for policy 'auth'. Retry in 17 s."
        );
        assert_eq!(
            GatewayError::Blocked { retry_after_s: 540 }.message(),
            "This client is temporarily blocked. Retry in 540 s."
        );
    }

    #[tokio::test]
    async fn blocked_is_a_problem_too() {
        let resp = GatewayError::Blocked { retry_after_s: 540 }.into_response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[RETRY_AFTER], "540");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
        let v = body_json(resp).await;
        assert_eq!(v["type"], QUOTA_EXCEEDED);
        assert_eq!(v["error"], "blocked");
        assert_eq!(v["retry_after"], 540);
        assert!(v.get("violated-policies").is_none());
    }

    #[tokio::test]
    async fn unavailable_says_when_to_retry() {
        let resp = GatewayError::Unavailable { retry_after_s: 5 }.into_response();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()[RETRY_AFTER], "5");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        let v = body_json(resp).await;
        assert_eq!(v["error"], "unavailable");
        assert_eq!(v["retry_after"], 5);
        assert!(v.get("policy").is_none());
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

    #[test]
    fn grpc_calls_get_grpc_statuses() {
        let grpc = HeaderValue::from_static("application/grpc");
        let status = |e: GatewayError| {
            let resp = e.into_response_for(Some(&grpc));
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/grpc");
            resp.headers()["grpc-status"].to_str().unwrap().to_owned()
        };
        assert_eq!(status(GatewayError::Blocked { retry_after_s: 9 }), "8");
        assert_eq!(status(GatewayError::Forbidden), "7");
        assert_eq!(status(GatewayError::Unavailable { retry_after_s: 5 }), "14");
        assert_eq!(status(GatewayError::UpstreamConnect("x".into())), "14");
        assert_eq!(status(GatewayError::UpstreamTimeout), "4");
        assert_eq!(status(GatewayError::NoRoute), "12");
        let limited = GatewayError::RateLimited {
            report: report(&[(&policy("auth"), false)]),
            policy: policy("auth"),
            retry_after_s: 17,
        }
        .into_response_for(Some(&grpc));
        assert_eq!(limited.headers()["grpc-status"], "8");
        assert_eq!(limited.headers()["x-ratelimit-policy"], "auth");
        assert_eq!(limited.headers()[RETRY_AFTER], "17");
        // Not a gRPC call: the usual answer.
        assert_eq!(
            GatewayError::Forbidden.into_response_for(None).status(),
            403
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
