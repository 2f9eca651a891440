//! `/admin/revocations`: revoke verified tokens by `jti`, or every token of a `sub` issued before
//! a time. Shaped like `/admin/blocks` (same auth, JSON body rules and error answers); the store
//! refuses a revoked token inside the request's one check call.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::input;
use super::reply::{self, ApiError};
use super::AdminState;
use crate::body::ResponseBody;
use crate::config::duration;
use crate::millis;
use crate::store::{RevocationEntry, Revoked, StoreError, REVOCATIONS_MAX};

type Reply = Result<Response<ResponseBody>, ApiError>;

/// How long a revocation lasts when the request names no `ttl`: longer than the access tokens
/// of common issuers live (minutes to hours), so the token expires before its revocation does.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest `jti` or `sub` accepted (bytes).
const MAX_ID_LEN: usize = 256;

fn entry_json(e: &RevocationEntry) -> Value {
    let ttl = millis::secs_ceil(e.ttl_ms);
    match &e.revoked {
        Revoked::Jti(id) => json!({ "jti": id, "ttl": ttl }),
        Revoked::Sub { sub, before } => json!({ "sub": sub, "before": before, "ttl": ttl }),
    }
}

/// `GET /admin/revocations`: every active revocation (at most `REVOCATIONS_MAX`), longest
/// remaining first.
pub(crate) async fn list(state: &AdminState) -> Reply {
    let list = state.limiter.revocations().await?;
    Ok(reply::ok(&Value::Array(
        list.iter().map(entry_json).collect(),
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRevocation {
    /// A string, or a number (named by its JSON spelling, as a token's number claim is).
    jti: Option<Value>,
    sub: Option<Value>,
    before: Option<u64>,
    ttl: Option<String>,
}

/// `POST /admin/revocations {"jti", "ttl"?}` or `{"sub", "before", "ttl"?}`
pub(crate) async fn add(state: &AdminState, req: Request<Incoming>) -> Reply {
    let new: NewRevocation = input::json_body(req).await?;
    let revoked = match (new.jti, new.sub) {
        (Some(jti), None) => {
            if new.before.is_some() {
                return Err(ApiError::BadRequest(
                    "before: only a `sub` revocation takes `before`; a `jti` names one token"
                        .into(),
                ));
            }
            Revoked::Jti(claim_id("jti", &jti)?)
        }
        (None, Some(sub)) => Revoked::Sub {
            sub: claim_id("sub", &sub)?,
            before: before(new.before)?,
        },
        _ => return Err(ApiError::BadRequest(
            "jti, sub: give exactly one: {\"jti\": ...} or {\"sub\": ..., \"before\": <unix s>}"
                .into(),
        )),
    };
    let ttl = match new.ttl.as_deref() {
        None => DEFAULT_TTL,
        Some(text) => ttl(text)?,
    };
    state
        .limiter
        .revoke(&revoked, ttl)
        .await
        .map_err(|e| match e {
            StoreError::Capacity => ApiError::Full(format!(
                "at most {REVOCATIONS_MAX} revocations are kept; remove some or wait for them \
                 to expire"
            )),
            e => ApiError::Store(e),
        })?;
    tracing::info!(kind = revoked.kind(), id = revoked.id(), ttl = ?ttl, "admin revocation");
    let entry = RevocationEntry {
        revoked,
        ttl_ms: millis::ceil(ttl),
    };
    Ok(reply::json_response(
        StatusCode::CREATED,
        &entry_json(&entry),
    ))
}

/// `DELETE /admin/revocations?jti=...` or `?sub=...`
pub(crate) async fn remove(state: &AdminState, req: &Request<Incoming>) -> Reply {
    let params = input::query(req, &["jti", "sub"])?;
    let (kind, text) = match params.as_slice() {
        [(kind, text)] => (*kind, text),
        _ => {
            return Err(ApiError::BadRequest(
                "jti, sub: give exactly one query parameter, jti or sub".into(),
            ))
        }
    };
    let id = id(kind, text)?;
    if !state.limiter.unrevoke(kind, &id).await? {
        return Err(ApiError::NotFound(format!("{kind} `{id}` is not revoked")));
    }
    tracing::info!(kind, id, "admin revocation removed");
    Ok(reply::ok(&json!({ kind: id, "revoked": false })))
}

/// A `jti` or `sub` from a JSON body: a string, or a number in its JSON spelling (a token's
/// number claim is revoked by either).
fn claim_id(field: &str, value: &Value) -> Result<String, ApiError> {
    match value {
        Value::String(text) => id(field, text),
        Value::Number(n) => id(field, &n.to_string()),
        _ => Err(ApiError::BadRequest(format!(
            "{field}: must be a string or a number, as the token's `{field}` claim"
        ))),
    }
}

/// A `jti` or `sub` as the token carries it: non-empty, at most [`MAX_ID_LEN`] bytes, no control
/// characters (never trimmed: a claim is compared exactly).
fn id(field: &str, text: &str) -> Result<String, ApiError> {
    if text.is_empty() || text.len() > MAX_ID_LEN || text.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{field}: must be 1 to {MAX_ID_LEN} bytes without control characters, exactly as \
             the token's `{field}` claim"
        )));
    }
    Ok(text.to_owned())
}

/// `before`: required with `sub`, a Unix time in seconds no later than a year from now.
fn before(value: Option<u64>) -> Result<u64, ApiError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match value {
        Some(b) if b >= 1 && b <= now.saturating_add(MAX_TTL.as_secs()) => Ok(b),
        Some(_) => Err(ApiError::BadRequest(
            "before: must be a Unix time in seconds, at most a year from now".into(),
        )),
        None => Err(ApiError::BadRequest(
            "before: required with `sub` (a Unix time in seconds: tokens of the subject issued \
             before it are revoked)"
                .into(),
        )),
    }
}

fn ttl(text: &str) -> Result<Duration, ApiError> {
    let d =
        duration::parse(text).map_err(|e| ApiError::BadRequest(format!("ttl: `{text}`: {e}")))?;
    if d < Duration::from_secs(1) || d > MAX_TTL {
        return Err(ApiError::BadRequest(format!(
            "ttl: `{text}` must be between 1s and 365d"
        )));
    }
    Ok(d)
}
