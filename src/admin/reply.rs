//! Responses of the side port: JSON bodies, and every admin error mapped to one status and one
//! JSON shape `{"error": "<code>", "message": "<what to do>"}`.

use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::body::ResponseBody;
use crate::config::ConfigError;
use crate::store::StoreError;

/// Everything an admin request can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed(&'static [Method]),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// A bounded list is full (revocations).
    #[error("{0}")]
    Full(String),
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    InvalidConfig(Box<ConfigError>),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Full(_) => (StatusCode::CONFLICT, "full"),
            ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            ApiError::InvalidConfig(_) => (StatusCode::BAD_REQUEST, "invalid_config"),
        }
    }

    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        let (status, code) = self.status_and_code();
        let mut body = json!({ "error": code, "message": self.to_string() });
        if let ApiError::InvalidConfig(e) = &self {
            body["file"] = json!(e.file.display().to_string());
            body["line"] = json!(e.line);
            body["column"] = json!(e.column);
            body["key"] = json!(e.key);
        }
        if let ApiError::Store(e) = &self {
            body["kind"] = json!(e.kind());
        }
        let mut resp = json_response(status, &body);
        match &self {
            ApiError::Unauthorized(_) => {
                resp.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"rategate-admin\""),
                );
            }
            ApiError::MethodNotAllowed(allowed) => {
                let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                    resp.headers_mut().insert(ALLOW, v);
                }
            }
            _ => {}
        }
        resp
    }
}

/// A JSON response; admin answers are never cached.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<ResponseBody> {
    let mut text = body.to_string();
    text.push('\n');
    let mut resp = Response::new(ResponseBody::full(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(crate) fn ok(body: &Value) -> Response<ResponseBody> {
    json_response(StatusCode::OK, body)
}

pub(crate) fn text(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
