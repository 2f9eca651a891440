//! The client's request body on its way upstream, able to tell whether it has been read to its
//! end: when the upstream does not answer in time, a body the client has not finished sending
//! is the client's stall (answered `408`), not the upstream's failure (counted against the
//! target, which passive health may eject). Without it one slow client could eject every
//! healthy target of a pool.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pin_project_lite::pin_project! {
    pub(crate) struct ClientBody {
        #[pin]
        inner: Incoming,
        // Set once the last frame has been read; only while someone watches.
        ended: Option<Arc<AtomicBool>>,
    }
}

impl ClientBody {
    pub(crate) fn new(inner: Incoming) -> Self {
        ClientBody { inner, ended: None }
    }

    /// A flag set once the body has been read to its end (already set for a body with nothing
    /// left to read). One allocation, only for a request that has a body.
    pub(crate) fn watch(&mut self) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(self.inner.is_end_stream()));
        self.ended = Some(flag.clone());
        flag
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(ended) = this.ended {
            // A Content-Length body knows its last data frame; others learn it from the end.
            let last = match &polled {
                None => true,
                Some(Ok(frame)) => frame.is_trailers() || this.inner.is_end_stream(),
                Some(Err(_)) => false,
            };
            if last {
                ended.store(true, Ordering::Release);
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
