//! The proxy's response stream: the upstream's body, streamed through untouched, or a body that
//! settles what its request owes first (`Settled`). A request that owes the store something once
//! answered (a count-by-response charge, a concurrency lease) wraps its body: the settlement
//! runs when the last frame is reached and that frame is held back until the store has it, so
//! a client never sees the end of a response whose charge or release has not landed. Frames
//! before the last pass at once: streaming is not delayed. Dropped early (client gone, cut at
//! shutdown), the debt settles in the background. Bodies the gateway writes itself are
//! `crate::body`'s.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::body::{BoxError, ResponseBody};
use crate::limiter::{Owed, Settling};

/// Every answer of the proxy port.
pub(crate) type GatewayBody = ResponseBody<Streamed>;

pin_project_lite::pin_project! {
    #[project = StreamedProj]
    pub(crate) enum Streamed {
        Upstream { #[pin] body: Incoming },
        Settled { body: Pin<Box<GatewayBody>>, tail: Tail },
    }
}

/// Where a `Settled` body stands.
pub(crate) enum Tail {
    /// Frames pass through; the settlement has not started.
    Streaming(Option<Owed>),
    /// The last item (a final frame, an error or the end) waits for the settlement.
    Settling(Settling, Option<Result<Frame<Bytes>, BoxError>>),
    Done,
}

impl GatewayBody {
    pub(crate) fn upstream(body: Incoming) -> Self {
        ResponseBody::Stream {
            body: Streamed::Upstream { body },
        }
    }

    /// `body`, settling `owed` before its last frame (or when dropped). A body that is already
    /// at its end, or that the protocol will not send (HEAD, 204, 304), is never polled: settle
    /// those before answering instead.
    pub(crate) fn settled(body: GatewayBody, owed: Owed) -> Self {
        ResponseBody::Stream {
            body: Streamed::Settled {
                body: Box::pin(body),
                tail: Tail::Streaming(Some(owed)),
            },
        }
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            StreamedProj::Upstream { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(BoxError::from))),
            StreamedProj::Settled { body, tail } => loop {
                match tail {
                    Tail::Streaming(owed) => {
                        let polled = std::task::ready!(body.as_mut().poll_frame(cx));
                        let last = match &polled {
                            // Content-Length bodies know their last data frame; chunked ones
                            // learn it from the end (the terminal chunk is written after).
                            Some(Ok(frame)) => frame.is_trailers() || body.is_end_stream(),
                            Some(Err(_)) | None => true,
                        };
                        if !last {
                            return Poll::Ready(polled);
                        }
                        let settling = match owed.take() {
                            Some(owed) => owed.settle(),
                            None => return Poll::Ready(polled),
                        };
                        *tail = Tail::Settling(settling, polled);
                    }
                    Tail::Settling(settling, held) => {
                        std::task::ready!(Pin::new(settling).poll(cx));
                        let item = held.take();
                        *tail = Tail::Done;
                        return Poll::Ready(item);
                    }
                    Tail::Done => return Poll::Ready(None),
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Streamed::Upstream { body } => body.is_end_stream(),
            // Never before the settlement is done: an ended body would not be polled again.
            Streamed::Settled { tail, .. } => matches!(tail, Tail::Done),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Streamed::Upstream { body } => body.size_hint(),
            Streamed::Settled { body, tail } => match tail {
                Tail::Streaming(_) => body.size_hint(),
                Tail::Settling(_, Some(Ok(frame))) => {
                    SizeHint::with_exact(frame.data_ref().map_or(0, |d| d.len() as u64))
                }
                Tail::Settling(..) | Tail::Done => SizeHint::with_exact(0),
            },
        }
    }
}
