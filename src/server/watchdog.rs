//! Per-connection deadlines that hyper does not enforce on its own.
//!
//! hyper-util's auto builder reads the protocol preface before hyper's HTTP/1 header timeout
//! starts, and hyper's HTTP/2 server has no header timeout at all, so a silent client, a partial
//! preface or a header block that never ends would hold a connection (and a file descriptor)
//! forever. Nor does hyper know an idle timeout or nginx's `send_timeout`. Each connection
//! therefore gets a watchdog: the IO wrapper, the per-request guards and the response bodies note
//! what the connection is doing in a few atomics (no syscall, no allocation per read or write),
//! and one timer per connection wakes at the nearest deadline, re-reads that state and either
//! sleeps again or ends the connection. Between two wake-ups the state mostly moves deadlines
//! later; the exceptions (a head starting on an idle HTTP/1 connection, a response starting to
//! wait for the client) are caught at the next wake-up, at most min(header_read, idle, send / 4)
//! away.
//!
//! The rules, checked at each wake-up:
//! - no request in flight, and reading a request head (from accept, or since the first byte after
//!   an idle HTTP/1 keep-alive period): closed `header_read` after that start;
//! - no request in flight, nothing read since the last response: closed `idle` after it;
//! - a response frame handed to hyper and no write progress for `send` (the client does not
//!   read, or an HTTP/2 client withholds flow-control credit): closed.
//!
//! Dropping the connection future closes the socket; hyper then drops every response body of the
//! connection, which releases the upstream connections they were streaming from.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Version;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Expiry;
use crate::millis;

/// Marks "not set" in the millisecond fields.
const NONE: u64 = u64::MAX;
/// The shortest sleep between wake-ups, so a tiny timeout cannot make the watchdog spin.
const MIN_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) header_read: Duration,
    pub(crate) idle: Duration,
    pub(crate) send: Duration,
}

/// What one connection is doing. Times are milliseconds since `start` (the accept).
#[derive(Debug)]
pub(crate) struct ConnClock {
    start: Instant,
    /// Requests whose head has arrived and whose response body has not ended.
    active: AtomicU32,
    /// When reading the next request head began; `NONE` while a request is in flight or the
    /// connection is idle with nothing read. Starts at 0: the first head is due from accept.
    head_since: AtomicU64,
    /// When the last in-flight request ended.
    idle_since: AtomicU64,
    /// Set by the first HTTP/2 request: from then on, bytes read while idle are pings and
    /// window updates as likely as a new head, so they do not start the header clock.
    h2: AtomicBool,
    /// Response frames handed to hyper and not yet taken back (waiting to be sent).
    frames_waiting: AtomicU32,
    /// Bumped whenever a response frame is handed over or taken, and (HTTP/1) whenever bytes
    /// reach the socket: the watchdog samples it to see write progress without a clock read per
    /// write. A slow reader of a large HTTP/1 chunk makes progress although hyper has not taken
    /// the next frame; on HTTP/2 socket writes include pings, so only frames count there.
    progress: AtomicU64,
}

impl ConnClock {
    pub(crate) fn new(accepted: Instant) -> Arc<ConnClock> {
        Arc::new(ConnClock {
            start: accepted,
            active: AtomicU32::new(0),
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            frames_waiting: AtomicU32::new(0),
            progress: AtomicU64::new(0),
        })
    }

    fn millis_at(&self, at: Instant) -> u64 {
        millis::floor(at.saturating_duration_since(self.start)).min(NONE - 1)
    }

    fn now(&self) -> u64 {
        self.millis_at(Instant::now())
    }

    /// A request head is complete; the guard lives as long as its response body.
    pub(crate) fn request_started(self: &Arc<Self>, version: Version) -> RequestGuard {
        if version == Version::HTTP_2 {
            self.h2.store(true, Relaxed);
        }
        self.active.fetch_add(1, Relaxed);
        self.head_since.store(NONE, Relaxed);
        RequestGuard {
            clock: self.clone(),
            handed: false,
        }
    }

    fn on_write(&self) {
        if !self.h2.load(Relaxed) {
            self.progress.fetch_add(1, Relaxed);
        }
    }

    fn on_read(&self) {
        // Three plain loads on the common path; the clock is read once per head.
        if self.head_since.load(Relaxed) == NONE
            && self.active.load(Relaxed) == 0
            && !self.h2.load(Relaxed)
        {
            self.head_since.store(self.now(), Relaxed);
        }
    }

    /// The nearest deadline (ms since start) and what it is for, given the last time write
    /// progress was seen.
    fn deadline(&self, t: &Timeouts, progress_at: u64) -> Option<(u64, Expiry)> {
        let ms = |d: Duration| millis::floor(d).min(NONE / 2);
        let sending = (self.frames_waiting.load(Relaxed) > 0)
            .then(|| (progress_at.saturating_add(ms(t.send)), Expiry::Send));
        let waiting = if self.active.load(Relaxed) > 0 {
            None
        } else {
            match self.head_since.load(Relaxed) {
                NONE => Some((
                    self.idle_since.load(Relaxed).saturating_add(ms(t.idle)),
                    Expiry::Idle,
                )),
                since => Some((since.saturating_add(ms(t.header_read)), Expiry::HeaderRead)),
            }
        };
        match (sending, waiting) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// Resolves when the connection has outlived one of its deadlines.
pub(crate) async fn expired(clock: &ConnClock, t: Timeouts) -> Expiry {
    let mut events = clock.progress.load(Relaxed);
    let mut progress_at = clock.now();
    loop {
        let now = clock.now();
        let seen = clock.progress.load(Relaxed);
        if seen != events {
            // Progress happened at or before now: counting from now never cuts early.
            events = seen;
            progress_at = now;
        }
        let deadline = clock.deadline(&t, progress_at);
        if let Some((at, why)) = deadline {
            if at <= now {
                return why;
            }
        }
        // Wake up again before a state change could have brought a deadline nearer (a request
        // may end and a head start, a response may start waiting for the client), so no
        // deadline is overshot by more than this cap.
        let cap = t.header_read.min(t.idle).min(t.send / 4);
        let until = deadline.map_or(NONE, |(at, _)| at - now);
        let sleep = Duration::from_millis(until).min(cap).max(MIN_TICK);
        tokio::time::sleep(sleep).await;
    }
}

/// Keeps a request counted as in flight until its response body ends or is dropped, and tracks
/// whether a frame of that body is waiting to be sent.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    clock: Arc<ConnClock>,
    handed: bool,
}

impl RequestGuard {
    fn frame_taken(&mut self) {
        if self.handed {
            self.handed = false;
            self.clock.frames_waiting.fetch_sub(1, Relaxed);
            self.clock.progress.fetch_add(1, Relaxed);
        }
    }

    fn frame_handed(&mut self) {
        self.handed = true;
        self.clock.frames_waiting.fetch_add(1, Relaxed);
        self.clock.progress.fetch_add(1, Relaxed);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.handed {
            self.clock.frames_waiting.fetch_sub(1, Relaxed);
        }
        // Stamped before the count drops, so a watchdog that sees no request in flight never
        // pairs it with an older idle start.
        self.clock.idle_since.store(self.clock.now(), Relaxed);
        self.clock.active.fetch_sub(1, Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports to its connection's watchdog.
    pub(crate) struct Tracked<B> {
        #[pin]
        body: B,
        guard: RequestGuard,
    }
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, guard: RequestGuard) -> Self {
        Tracked { body, guard }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        // hyper polls again only once it has room for more: the previous frame was taken.
        this.guard.frame_taken();
        let polled = this.body.poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.guard.frame_handed();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The connection's IO, noting reads for the header clock and writes as send progress.
    pub(crate) struct Watched<S> {
        #[pin]
        io: S,
        clock: Arc<ConnClock>,
    }
}

impl<S> Watched<S> {
    pub(crate) fn new(io: S, clock: Arc<ConnClock>) -> Self {
        Watched { io, clock }
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.on_read();
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(1..)) = polled {
            this.clock.on_write();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(1..)) = polled {
            this.clock.on_write();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(30),
    };

    #[test]
    fn first_head_is_due_from_accept() {
        let clock = ConnClock::new(Instant::now());
        assert_eq!(clock.deadline(&T, 0), Some((10_000, Expiry::HeaderRead)));
        clock.on_read();
        assert_eq!(clock.deadline(&T, 0), Some((10_000, Expiry::HeaderRead)));
    }

    #[test]
    fn no_deadline_while_a_request_waits_for_its_upstream() {
        let clock = ConnClock::new(Instant::now());
        let guard = clock.request_started(Version::HTTP_11);
        clock.on_read();
        assert_eq!(clock.deadline(&T, 0), None);
        drop(guard);
        let (at, why) = clock.deadline(&T, 0).unwrap();
        assert_eq!(why, Expiry::Idle);
        assert!(at >= 60_000);
    }

    #[test]
    fn http1_bytes_after_idle_start_the_header_clock_http2_bytes_do_not() {
        for (version, expect) in [
            (Version::HTTP_11, Expiry::HeaderRead),
            (Version::HTTP_2, Expiry::Idle),
        ] {
            let clock = ConnClock::new(Instant::now());
            drop(clock.request_started(version));
            clock.on_read();
            assert_eq!(clock.deadline(&T, 0).unwrap().1, expect, "{version:?}");
        }
    }

    #[test]
    fn a_waiting_frame_is_due_send_after_the_last_progress() {
        let clock = ConnClock::new(Instant::now());
        let mut guard = clock.request_started(Version::HTTP_11);
        guard.frame_handed();
        assert_eq!(clock.deadline(&T, 500), Some((30_500, Expiry::Send)));
        guard.frame_taken();
        assert_eq!(clock.deadline(&T, 500), None);
        guard.frame_handed();
        drop(guard);
        assert_eq!(clock.frames_waiting.load(Relaxed), 0);
        assert_eq!(clock.active.load(Relaxed), 0);
    }
}
