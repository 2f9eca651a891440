//! The delivery task: posts each alert to the webhook of the running config, retrying failures
//! with exponential backoff. Alerts are delivered one at a time, in order; while one is being
//! retried the others wait in the bounded queue.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::flap::Damper;
use super::Alert;
use crate::config::compiled::{AlertFormat, AlertSettings};
use crate::config::Live;
use crate::metrics::Metrics;

/// First retry after this; doubled each time, capped at [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Deliver queued alerts until the queue's senders are gone. Store state alerts are damped
/// (see `flap`).
pub(crate) async fn run(mut rx: mpsc::Receiver<Alert>, live: Arc<Live>, metrics: Arc<Metrics>) {
    let client = http_client();
    let mut damper = Damper::default();
    loop {
        let wake = damper.wake_at();
        let alert = tokio::select! {
            received = rx.recv() => match received {
                Some(alert) if Damper::applies(&alert) => damper.offer(alert, Instant::now()),
                Some(alert) => Some(alert),
                None => return,
            },
            () = sleep_until(wake), if wake.is_some() => damper.release(Instant::now()),
        };
        let Some(alert) = alert else {
            continue;
        };
        // Settings of the running config: a reload applies to the next alert.
        let Some(settings) = live.snapshot().alerts.clone() else {
            continue;
        };
        let result = if deliver(&client, &settings, &alert).await {
            "sent"
        } else {
            "failed"
        };
        metrics.alerts.with_label_values(&[result]).inc();
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

fn http_client() -> HttpClient {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

/// Post `alert`, retrying up to `max_retries` times; whether it was accepted (2xx).
async fn deliver(client: &HttpClient, settings: &AlertSettings, alert: &Alert) -> bool {
    let body = Bytes::from(payload(alert, settings.format, unix_now()).to_string());
    let mut backoff = FIRST_BACKOFF;
    for attempt in 0..=settings.max_retries {
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let request = match request(settings, body.clone()) {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(error = %err, "cannot build the alert request");
                return false;
            }
        };
        let outcome = tokio::time::timeout(settings.timeout, client.request(request)).await;
        // Never log the URL: its path or query is often the webhook's secret.
        let host = settings.webhook.host().unwrap_or_default();
        match outcome {
            Ok(Ok(resp)) if resp.status().is_success() => {
                tracing::debug!(kind = alert.kind(), host, "alert delivered");
                return true;
            }
            Ok(Ok(resp)) if !retryable(resp.status()) => {
                tracing::warn!(
                    kind = alert.kind(),
                    host,
                    status = resp.status().as_u16(),
                    "alert refused by the webhook; not retried"
                );
                return false;
            }
            Ok(Ok(resp)) => {
                tracing::warn!(
                    kind = alert.kind(),
                    host,
                    attempt,
                    status = resp.status().as_u16(),
                    "alert delivery failed"
                );
            }
            Ok(Err(err)) => {
                tracing::warn!(kind = alert.kind(), host, attempt, error = %err, "alert delivery failed");
            }
            Err(_) => {
                tracing::warn!(kind = alert.kind(), host, attempt, timeout = ?settings.timeout, "alert delivery timed out");
            }
        }
    }
    tracing::error!(
        kind = alert.kind(),
        attempts = settings.max_retries + 1,
        "alert not delivered; giving up"
    );
    false
}

/// Server errors, throttling and request timeouts may pass on a retry; other refusals will not.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

fn request(settings: &AlertSettings, body: Bytes) -> Result<Request<Full<Bytes>>, http::Error> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(settings.webhook.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(
            USER_AGENT,
            HeaderValue::from_static(concat!("rategate/", env!("CARGO_PKG_VERSION"))),
        );
    if let Some(token) = &settings.token {
        builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Full::new(body))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The JSON posted for `alert`: rategate's own object, or Slack's `{"text": ...}`.
pub(crate) fn payload(alert: &Alert, format: AlertFormat, time: u64) -> Value {
    let message = alert.message();
    if format == AlertFormat::Slack {
        return json!({ "text": format!("rategate: {message}") });
    }
    let mut out = json!({
        "source": "rategate",
        "kind": alert.kind(),
        "time": time,
        "message": message,
    });
    let details = match alert {
        Alert::ClientBlocked {
            client,
            reason,
            policy,
            duration,
        } => json!({
            "client": client,
            "reason": reason,
            "policy": policy,
            "duration_s": duration.as_secs(),
        }),
        Alert::RejectionThreshold {
            client,
            rejections,
            window,
        } => json!({
            "client": client,
            "rejections": rejections,
            "window_s": window.as_secs(),
        }),
        Alert::StoreFallback {
            store,
            on_error,
            error,
        } => json!({ "store": store, "on_error": on_error, "error": error }),
        Alert::StoreRecovered { store } => json!({ "store": store }),
    };
    if let (Some(out), Value::Object(details)) = (out.as_object_mut(), details) {
        out.extend(details);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_formats() {
        let alert = Alert::ClientBlocked {
            client: "1.2.3.4".into(),
            reason: "policy:login".into(),
            policy: Some("login".into()),
            duration: Duration::from_secs(120),
        };
        assert_eq!(
            payload(&alert, AlertFormat::Json, 1_764_000_000),
            json!({
                "source": "rategate",
                "kind": "client_blocked",
                "time": 1_764_000_000u64,
                "message": "client 1.2.3.4 blocked for 2m (policy:login)",
                "client": "1.2.3.4",
                "reason": "policy:login",
                "policy": "login",
                "duration_s": 120,
            })
        );
        assert_eq!(
            payload(&alert, AlertFormat::Slack, 0),
            json!({ "text": "rategate: client 1.2.3.4 blocked for 2m (policy:login)" })
        );
        let alert = Alert::StoreRecovered { store: "redis" };
        assert_eq!(
            payload(&alert, AlertFormat::Json, 5)["kind"],
            "store_recovered"
        );
    }

    #[test]
    fn retry_policy() {
        assert!(retryable(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable(StatusCode::BAD_REQUEST));
        assert!(!retryable(StatusCode::UNAUTHORIZED));
        assert!(!retryable(StatusCode::NOT_FOUND));
    }
}
