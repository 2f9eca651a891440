//! Active health checks: a GET of `health_check.path` on each target every `interval`, on a
//! fresh connection (a pooled one would say nothing about accepting new ones). A 2xx or 3xx
//! within `timeout` passes. `unhealthy` failures in a row take the target out of the balance,
//! `healthy` passes in a row bring it back; a target starts healthy.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::health::TargetState;
use crate::config::compiled::{Endpoint, HealthCheck};

pub(super) type CheckClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client that keeps no connection between checks, trusting what requests' connections trust.
pub(super) fn client() -> CheckClient {
    let tls = crate::proxy::upstream::webpki_tls();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(https)
}

/// Start a check of `state` when one is due and none is running; `now_ms` on the pool's clock.
pub(super) fn maybe_start(
    client: &CheckClient,
    check: &HealthCheck,
    target: &Endpoint,
    state: &Arc<TargetState>,
    now_ms: u64,
) {
    if state.check_due.load(Ordering::Relaxed) > now_ms
        || state.checking.swap(true, Ordering::Relaxed)
    {
        return;
    }
    state.check_due.store(
        now_ms.saturating_add(crate::millis::ceil(check.interval)),
        Ordering::Relaxed,
    );
    let uri = Uri::builder()
        .scheme(target.scheme.clone())
        .authority(target.authority.clone())
        .path_and_query(check.path.clone())
        .build();
    let (client, check, state) = (client.clone(), check.clone(), state.clone());
    tokio::spawn(async move {
        let passed = match uri {
            Ok(uri) => probe(&client, uri, &check).await,
            Err(_) => false,
        };
        record(&state, &check, passed);
        state.checking.store(false, Ordering::Relaxed);
    });
}

async fn probe(client: &CheckClient, uri: Uri, check: &HealthCheck) -> bool {
    let Ok(req) = Request::get(uri).body(Empty::new()) else {
        return false;
    };
    match tokio::time::timeout(check.timeout, client.request(req)).await {
        Ok(Ok(resp)) => resp.status().is_success() || resp.status().is_redirection(),
        _ => false,
    }
}

/// One result into the streak, and the verdict when the streak reaches its threshold.
fn record(state: &TargetState, check: &HealthCheck, passed: bool) {
    let streak = state.check_streak.load(Ordering::Relaxed);
    let streak = match (passed, streak) {
        (true, s) if s > 0 => s.saturating_add(1),
        (true, _) => 1,
        (false, s) if s < 0 => s.saturating_sub(1),
        (false, _) => -1,
    };
    state.check_streak.store(streak, Ordering::Relaxed);
    let down = state.check_down();
    if down && streak >= i64::from(check.healthy) {
        state.set_check_down(false);
    } else if !down && -streak >= i64::from(check.unhealthy) {
        state.set_check_down(true);
    }
}
