//! The admin listener. HTTP/1.1 only; it serves operators and scrapers, not the public.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Live;
use crate::metrics::Metrics;
use crate::proxy::body::GatewayBody;

pub struct AdminState {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    /// False while draining, so load balancers stop sending traffic first.
    pub ready: Arc<AtomicBool>,
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let state = state.clone();
                let builder = builder.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(route(&state, req).await) }
                    });
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
            _ = crate::server::stopped(&mut shutdown) => break,
        }
    }
}

async fn route(state: &AdminState, req: Request<Incoming>) -> Response<GatewayBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => match state.metrics.render() {
            Ok(body) => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            ),
            Err(err) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("metrics encoding failed: {err}").into_bytes(),
            ),
        },
        (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        (&Method::GET, "/readyz") => {
            if state.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "text/plain", b"ready\n".to_vec())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    b"draining\n".to_vec(),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
