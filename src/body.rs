//! The response body type of both ports: a small body the gateway wrote itself (`Full`), or a
//! stream `S` it passes on. The admin port only writes its own bodies ([`NoStream`]); the proxy's
//! stream (the upstream's body, and the settlement held before its last frame) is
//! `proxy::body`. An enum rather than a boxed trait object, so the common path allocates nothing
//! for the body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    #[project = ResponseBodyProj]
    pub(crate) enum ResponseBody<S = NoStream> {
        Full { data: Option<Bytes> },
        Stream { #[pin] body: S },
    }
}

impl<S> ResponseBody<S> {
    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        ResponseBody::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl<S: Body<Data = Bytes, Error = BoxError>> Body for ResponseBody<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ResponseBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ResponseBodyProj::Stream { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full { data } => data.is_none(),
            ResponseBody::Stream { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ResponseBody::Stream { body } => body.size_hint(),
        }
    }
}

/// The stream of a port that sends only bodies it wrote itself: there is none.
pub(crate) enum NoStream {}

impl Body for NoStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match *self {}
    }
}
