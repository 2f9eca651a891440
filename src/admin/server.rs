//! The admin listener and its routing. HTTP/1.1 and HTTP/2; it serves operators and scrapers, not
//! the public.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::reply::{self, ApiError};
use super::revocations;
use super::{api, auth, dashboard, AdminState};
use crate::body::ResponseBody;
use crate::config::compiled::OnError;
use crate::server::accept;
use crate::server::conn::Listener;
use crate::server::slots::ADMIN_MAX_CONNECTIONS;
use crate::server::watchdog::Timeouts;

const GET: &[Method] = &[Method::GET, Method::HEAD];
const GET_POST: &[Method] = &[Method::GET, Method::HEAD, Method::POST];
const POST: &[Method] = &[Method::POST];
const DELETE: &[Method] = &[Method::DELETE];
const GET_DELETE: &[Method] = &[Method::GET, Method::HEAD, Method::DELETE];
const GET_POST_DELETE: &[Method] = &[Method::GET, Method::HEAD, Method::POST, Method::DELETE];

/// Serve until `shutdown` turns true. The app turns it only after the proxy has drained, so
/// `/readyz` keeps answering 503 during the drain. Connections get the proxy's timeouts and a
/// small fixed ceiling: the port serves operators and scrapers, and a flood of connections to it
/// must not use up the descriptors the proxy needs.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    timeouts: Timeouts,
    shutdown: watch::Receiver<bool>,
) {
    let metrics = state.metrics.clone();
    let service = move |req| {
        let state = state.clone();
        async move { route(&state, req).await }
    };
    accept::serve_plain(
        listener,
        Listener::Admin,
        ADMIN_MAX_CONNECTIONS,
        timeouts,
        metrics,
        shutdown,
        service,
    )
    .await;
}

async fn route(state: &AdminState, req: Request<Incoming>) -> Response<ResponseBody> {
    let path = req.uri().path().to_owned();
    let result = match path.as_str() {
        "/" | "/index.html" => allow(&req, GET).map(|()| dashboard::page()),
        "/metrics" => allow(&req, GET).map(|()| metrics(state)),
        "/healthz" => {
            allow(&req, GET).map(|()| reply::text(StatusCode::OK, "text/plain", b"ok\n".to_vec()))
        }
        "/readyz" => allow(&req, GET).map(|()| readyz(state)),
        p if p == "/admin" || p.starts_with("/admin/") => admin(state, req, p).await,
        _ => Err(ApiError::NotFound(
            "no such endpoint; see /admin/blocks, /admin/revocations, /admin/limits, \
             /admin/events, /admin/suspicious, /admin/reload, /metrics, /healthz, /readyz"
                .into(),
        )),
    };
    result.unwrap_or_else(ApiError::into_response)
}

async fn admin(
    state: &AdminState,
    req: Request<Incoming>,
    path: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    // The token of the running config, so a reload can rotate it.
    let config = state.live.snapshot();
    auth::check(&req, config.admin.token.as_deref())?;
    let method = req.method().clone();
    match path {
        "/admin/blocks" => {
            allow(&req, GET_POST)?;
            if method == Method::POST {
                api::add_block(state, req).await
            } else {
                api::list_blocks(state).await
            }
        }
        "/admin/limits" => {
            allow(&req, GET_DELETE)?;
            if method == Method::DELETE {
                api::reset_limit(state, &req).await
            } else {
                api::get_limit(state, &req).await
            }
        }
        "/admin/revocations" => {
            allow(&req, GET_POST_DELETE)?;
            match method {
                Method::POST => revocations::add(state, req).await,
                Method::DELETE => revocations::remove(state, &req).await,
                _ => revocations::list(state).await,
            }
        }
        "/admin/events" => {
            allow(&req, GET)?;
            api::events(state, &req).await
        }
        "/admin/suspicious" => {
            allow(&req, GET)?;
            api::suspicious(state, &req).await
        }
        "/admin/reload" => {
            allow(&req, POST)?;
            api::reload(state, req).await
        }
        p => match p.strip_prefix("/admin/blocks/") {
            Some(client) => {
                allow(&req, DELETE)?;
                api::remove_block(state, client).await
            }
            None => Err(ApiError::NotFound(format!(
                "no admin endpoint `{}`",
                p.chars().take(64).collect::<String>()
            ))),
        },
    }
}

fn allow<B>(req: &Request<B>, methods: &'static [Method]) -> Result<(), ApiError> {
    if methods.contains(req.method()) {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(methods))
    }
}

fn metrics(state: &AdminState) -> Response<ResponseBody> {
    match state.metrics.render() {
        Ok(body) => reply::text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            body,
        ),
        Err(err) => reply::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("metrics encoding failed: {err}").into_bytes(),
        ),
    }
}

/// Ready unless draining, or the store cannot decide while `on_error = "deny"` (every limited
/// request would get 503). For Redis that is the breaker, which a background probe keeps current,
/// so readiness changes with no traffic at all. A failing store with `fallback` or `allow` still
/// serves by design; taking every instance out of rotation because a shared Redis is down would
/// turn a degraded service into an outage.
fn readyz(state: &AdminState) -> Response<ResponseBody> {
    let (status, body) = if !state.ready.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false, "reason": "draining"}),
        )
    } else if !state.limiter.store_ready() && state.limiter.on_error() == OnError::Deny {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false, "reason": "store unavailable (on_error = deny)"}),
        )
    } else {
        (StatusCode::OK, json!({"ready": true}))
    };
    reply::json_response(status, &body)
}
