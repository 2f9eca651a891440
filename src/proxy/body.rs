//! The response body type: either the upstream's body, streamed through untouched, or a small
//! body the gateway wrote itself. An enum rather than a boxed trait object, so the common path
//! allocates nothing for the body. A request holding a concurrency lease wraps its body
//! (`Leased`), so the lease is released when the body ends or is dropped (client gone).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::limiter::LeaseGuard;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    #[project = GatewayBodyProj]
    pub enum GatewayBody {
        Upstream { #[pin] body: Incoming },
        Full { data: Option<Bytes> },
        Leased { body: Pin<Box<GatewayBody>>, lease: LeaseGuard },
    }
}

impl GatewayBody {
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        GatewayBody::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    pub fn empty() -> Self {
        GatewayBody::Full { data: None }
    }

    pub fn upstream(body: Incoming) -> Self {
        GatewayBody::Upstream { body }
    }

    /// `body`, releasing `lease` when it ends or is dropped.
    pub fn leased(body: GatewayBody, lease: LeaseGuard) -> Self {
        GatewayBody::Leased {
            body: Box::pin(body),
            lease,
        }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            GatewayBodyProj::Upstream { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(BoxError::from))),
            GatewayBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            GatewayBodyProj::Leased { body, lease } => {
                let polled = body.as_mut().poll_frame(cx);
                // The end of the body (or a failed one) ends the request: free the slot now
                // rather than whenever the connection drops the body.
                if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
                    lease.release();
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Upstream { body } => body.is_end_stream(),
            GatewayBody::Full { data } => data.is_none(),
            GatewayBody::Leased { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Upstream { body } => body.size_hint(),
            GatewayBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            GatewayBody::Leased { body, .. } => body.size_hint(),
        }
    }
}
