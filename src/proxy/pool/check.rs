//! Active health checks: a GET of `health_check.path` on each target every `interval`, on a
//! fresh connection (a pooled one would say nothing about accepting new ones) made the way
//! requests' are (`UpstreamClient`: the target's protocol, the upstream's TLS trust, client
//! certificate and server name). A 2xx or 3xx within `timeout` passes. `unhealthy` failures in
//! a row take the target out of the balance, `healthy` passes in a row bring it back; a target
//! starts healthy.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::HOST;
use http::Request;
use http_body_util::{Either, Empty};

use super::health::TargetState;
use crate::config::compiled::{HealthCheck, Upstream, UpstreamTarget};
use crate::proxy::upstream_client::{Endpoint, RequestBody, UpstreamClient};

/// Start a check of `state` (`target` of `upstream`) when one is due and none is running;
/// `now_ms` on the pool's clock.
pub(super) fn maybe_start(
    upstream: &Upstream,
    check: &HealthCheck,
    target: &UpstreamTarget,
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
    // A client of its own, dropped with its connection once the check is done.
    let client = UpstreamClient::new(Endpoint::of(upstream, target), None);
    let req = Request::get(check.path.clone())
        .header(HOST, target.host_header.clone())
        .body(Either::Right(Empty::new()));
    let (check, state) = (check.clone(), state.clone());
    tokio::spawn(async move {
        let passed = match req {
            Ok(req) => probe(&client, req, &check).await,
            Err(_) => false,
        };
        record(&state, &check, passed);
        state.checking.store(false, Ordering::Relaxed);
    });
}

async fn probe(client: &UpstreamClient, req: Request<RequestBody>, check: &HealthCheck) -> bool {
    match tokio::time::timeout(
        check.timeout,
        client.round_trip(
            req,
            false,
            false,
            tokio::time::Instant::now() + check.timeout,
        ),
    )
    .await
    {
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
