//! `/admin/*` handlers (docs/reference.md section 5, "Admin side port"). Routing and
//! authentication happen in `server`; every handler validates its input fully before the store
//! sees it.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::input::{self, client_key};
use super::reply::{self, ApiError};
use super::AdminState;
use crate::alerts::Alert;
use crate::body::ResponseBody;
use crate::config::compiled::{Config, Policy};
use crate::config::duration;
use crate::config::reload::Trigger;
use crate::limiter::LimiterError;
use crate::millis;
use crate::store::{BlockEntry, Event};

type Reply = Result<Response<ResponseBody>, ApiError>;

const MAX_BLOCK: Duration = Duration::from_secs(365 * 24 * 3600);
const MAX_REASON_LEN: usize = 200;
const DEFAULT_REASON: &str = "manual";
const EVENTS_DEFAULT: usize = 100;
const SUSPICIOUS_DEFAULT: usize = 20;
const SUSPICIOUS_MAX: usize = 1000;

fn block_json(b: &BlockEntry) -> Value {
    json!({ "client": b.client, "ttl": millis::secs_ceil(b.ttl_ms), "reason": b.reason })
}

/// `GET /admin/blocks`
pub(crate) async fn list_blocks(state: &AdminState) -> Reply {
    let blocks = state.limiter.blocks().await?;
    state.metrics.blocked_clients.set(gauge_value(blocks.len()));
    let list: Vec<Value> = blocks.iter().map(block_json).collect();
    Ok(reply::ok(&Value::Array(list)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBlock {
    client: String,
    duration: String,
    reason: Option<String>,
}

/// `POST /admin/blocks {"client", "duration", "reason"}`
pub(crate) async fn add_block(state: &AdminState, req: Request<Incoming>) -> Reply {
    let new: NewBlock = input::json_body(req).await?;
    let config = state.live.snapshot();
    let client = client_key(&new.client, config.server.ipv6_prefix)?;
    let ttl = block_duration(&new.duration)?;
    let reason = block_reason(new.reason.as_deref())?;
    state.limiter.block(&client, ttl, &reason).await?;
    super::refresh_blocked_gauge(&state.limiter, &state.metrics).await;
    tracing::info!(client, ttl = ?ttl, reason, "admin block");
    state.alerts.notify(Alert::ClientBlocked {
        client: client.clone(),
        reason: reason.clone(),
        policy: None,
        duration: ttl,
    });
    // Rounded up like the listing (`block_json`), so a block never reads shorter than it is.
    let body =
        json!({ "client": client, "ttl": millis::secs_ceil(millis::ceil(ttl)), "reason": reason });
    Ok(reply::json_response(StatusCode::CREATED, &body))
}

fn block_duration(text: &str) -> Result<Duration, ApiError> {
    let d = duration::parse(text)
        .map_err(|e| ApiError::BadRequest(format!("duration `{text}`: {e}")))?;
    if d < Duration::from_secs(1) || d > MAX_BLOCK {
        return Err(ApiError::BadRequest(format!(
            "duration `{text}` must be between 1s and 365d"
        )));
    }
    Ok(d)
}

fn block_reason(reason: Option<&str>) -> Result<String, ApiError> {
    let reason = reason.map_or(DEFAULT_REASON, str::trim);
    if reason.is_empty() {
        return Ok(DEFAULT_REASON.to_owned());
    }
    if reason.chars().count() > MAX_REASON_LEN || reason.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "reason must be at most {MAX_REASON_LEN} characters without control characters"
        )));
    }
    Ok(reason.to_owned())
}

/// `DELETE /admin/blocks/{client}`; `raw` is the percent-encoded path segment.
pub(crate) async fn remove_block(state: &AdminState, raw: &str) -> Reply {
    let text = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::BadRequest("client is not valid UTF-8".into()))?;
    let config = state.live.snapshot();
    let client = client_key(&text, config.server.ipv6_prefix)?;
    let existed = state.limiter.unblock(&client).await?;
    super::refresh_blocked_gauge(&state.limiter, &state.metrics).await;
    if !existed {
        return Err(ApiError::NotFound(format!(
            "client {client} is not blocked"
        )));
    }
    tracing::info!(client, "admin unblock");
    Ok(reply::ok(&json!({ "client": client, "unblocked": true })))
}

/// The policy and client key of a `/admin/limits` query.
fn limit_target(
    config: &Config,
    req: &Request<Incoming>,
) -> Result<(Arc<Policy>, String), ApiError> {
    let params = input::query(req, &["policy", "client"])?;
    let name = input::required(&params, "policy")?;
    let client = client_key(
        input::required(&params, "client")?,
        config.server.ipv6_prefix,
    )?;
    let policy = config
        .policies
        .iter()
        .find(|p| &*p.name == name)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = config.policies.iter().map(|p| &*p.name).collect();
            ApiError::NotFound(format!(
                "no policy named `{}` (defined: {})",
                name.chars().take(64).collect::<String>(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ))
        })?;
    Ok((policy, client))
}

fn limiter_error(e: LimiterError) -> ApiError {
    match e {
        LimiterError::Store(e) => ApiError::Store(e),
        LimiterError::Key(e) => ApiError::BadRequest(format!(
            "{e}; its counters can only be reset by waiting for the window, or all at once by \
             renaming the policy"
        )),
    }
}

/// `GET /admin/limits?policy=&client=`
pub(crate) async fn get_limit(state: &AdminState, req: &Request<Incoming>) -> Reply {
    let config = state.live.snapshot();
    let (policy, client) = limit_target(&config, req)?;
    let s = state
        .limiter
        .limit_status(&policy, &client)
        .await
        .map_err(limiter_error)?;
    Ok(reply::ok(&json!({
        "policy": &*policy.name,
        "client": client,
        "algorithm": policy.algorithm.as_str(),
        "window": duration::format(policy.window),
        "count": s.count,
        "limit": s.limit,
        "remaining": s.remaining,
        "reset": millis::secs_ceil(s.reset_ms),
    })))
}

/// `DELETE /admin/limits?policy=&client=`
pub(crate) async fn reset_limit(state: &AdminState, req: &Request<Incoming>) -> Reply {
    let config = state.live.snapshot();
    let (policy, client) = limit_target(&config, req)?;
    let existed = state
        .limiter
        .reset_limit(&policy, &client)
        .await
        .map_err(limiter_error)?;
    tracing::info!(policy = %policy.name, client, existed, "admin reset of a counter");
    Ok(reply::ok(&json!({
        "policy": &*policy.name,
        "client": client,
        "existed": existed,
    })))
}

fn event_json(e: &Event) -> Value {
    let mut m = Map::new();
    m.insert("at_ms".into(), json!(e.at_ms));
    m.insert("kind".into(), json!(e.kind.as_str()));
    m.insert("client".into(), json!(e.client));
    if let Some(p) = &e.policy {
        m.insert("policy".into(), json!(p));
    }
    if let Some(r) = &e.reason {
        m.insert("reason".into(), json!(r));
    }
    if let Some(ms) = e.ttl_ms {
        m.insert("ttl".into(), json!(millis::secs_ceil(ms)));
    }
    Value::Object(m)
}

/// `GET /admin/events?limit=N`
pub(crate) async fn events(state: &AdminState, req: &Request<Incoming>) -> Reply {
    let params = input::query(req, &["limit"])?;
    let limit = input::limit(&params, EVENTS_DEFAULT, crate::store::EVENTS_MAX)?;
    let events = state.limiter.events(limit).await?;
    Ok(reply::ok(&Value::Array(
        events.iter().map(event_json).collect(),
    )))
}

/// `GET /admin/suspicious?limit=N`; each client says whether it is blocked right now.
pub(crate) async fn suspicious(state: &AdminState, req: &Request<Incoming>) -> Reply {
    let params = input::query(req, &["limit"])?;
    let limit = input::limit(&params, SUSPICIOUS_DEFAULT, SUSPICIOUS_MAX)?;
    let suspects = state.limiter.suspicious(limit).await?;
    let blocked = state.limiter.blocks().await?;
    let list: Vec<Value> = suspects
        .iter()
        .map(|s| {
            json!({
                "client": s.client,
                "rejections": s.rejections,
                "blocked": blocked.iter().any(|b| b.client == s.client),
            })
        })
        .collect();
    Ok(reply::ok(&Value::Array(list)))
}

/// `POST /admin/reload`
pub(crate) async fn reload(state: &AdminState, req: Request<Incoming>) -> Reply {
    // The body is ignored, but still bounded.
    input::body(req).await?;
    match state.reloader.reload_async(Trigger::Admin).await {
        Ok(config) => Ok(reply::ok(&json!({
            "result": "ok",
            "summary": crate::config::summary(&config),
        }))),
        Err(e) => Err(ApiError::InvalidConfig(Box::new(e))),
    }
}

pub(crate) fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
