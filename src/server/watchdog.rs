//! Per-connection deadlines that hyper does not enforce on its own.
//!
//! hyper-util's auto builder reads the protocol preface before hyper's HTTP/1 header timeout
//! starts, and hyper's HTTP/2 server has no header timeout at all, so a silent client, a partial
//! preface or a header block that never ends would hold a connection (and a file descriptor)
//! forever. Nor does hyper know an idle timeout or nginx's `send_timeout`. Each connection
//! therefore gets a watchdog: the IO wrapper, the per-request guards and the response bodies note
//! what the connection is doing in a few atomics (no syscall, no allocation, no clock read per
//! read or write), and one [`Reaper`] per listener and worker sweeps its connections every tick,
//! reads that state and ends the connections past a deadline.
//!
//! Why one sweeper and not a timer per connection: a per-connection timer is a second branch
//! polled every time the connection's task wakes (several times per request), and the clock is
//! read for every stamp. The reaper reads the clock once per tick and publishes it as a coarse
//! time the stamps use; the connection polls one atomic flag. The tick is a tenth of the shortest
//! timeout (10 ms to 1 s). A stamp is at most one tick old, so a deadline counts one extra tick
//! (never early) and is noticed at most one tick after that: a connection is ended between its
//! deadline and two ticks later.
//!
//! The rules, checked at each sweep:
//! - no request in flight, and reading a request head (from accept, or since the first byte after
//!   an idle HTTP/1 keep-alive period): closed `header_read` after that start;
//! - no request in flight, nothing read since the last response: closed `idle` after it;
//! - a response frame handed to hyper and no write progress for `send` (the client does not
//!   read, or an HTTP/2 client withholds flow-control credit): closed;
//! - on HTTP/2, a response frame of any one stream waiting for `send` (its stream's window kept
//!   shut), whatever the other streams do: closed. Without it a client could keep stalled
//!   streams (each holding an upstream connection) open for ever by moving one other stream
//!   now and then. Frames are counted per epoch of a quarter of `send` in which they were
//!   handed over ([`STALL_SLOTS`] counters), so the check is a few loads per sweep and a
//!   frame costs one counter more; a stalled stream ends its connection between `send` and
//!   1.25 x `send` (plus two ticks) after its frame was handed over. hyper cannot reset one
//!   stream from outside, so the whole connection goes, as for the rule above;
//! - an upgraded connection (a tunnel, see [`ConnClock::upgraded`]) with no byte read or written
//!   for `tunnel_idle`: closed. Every byte of a tunnel crosses the client's socket, so the
//!   client side's reads and writes are the tunnel's activity. A write to a tunnel's client
//!   waiting for `send` (the client does not read, whatever it sends): closed too;
//!
//! A tunnel on one stream of an HTTP/2 connection (WebSocket over HTTP/2) gets a clock of its
//! own, swept like a connection's and timed as a tunnel from the start; its connection counts
//! it as a request in flight for as long as it runs ([`RequestGuard::spawn_stream_tunnel`]).
//!
//! The reaper also cuts every connection at once when a drain's grace is over ([`Reaper::cut`]).
//! Dropping the connection future closes the socket; hyper then drops every response body of the
//! connection, which releases the upstream connections they were streaming from.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::Version;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::inflight::{Entered, InFlight};
use crate::metrics::Expiry;
use crate::millis;
use crate::proxy::tunnel;

/// Marks "not set" in the millisecond fields.
const NONE: u64 = u64::MAX;
/// The reaper's tick is the shortest timeout divided by this, within [`MIN_TICK`, `MAX_TICK`].
const TICKS_PER_TIMEOUT: u32 = 10;
/// So a tiny timeout cannot make the reaper spin.
const MIN_TICK: Duration = Duration::from_millis(10);
/// So an idle gateway with long timeouts still sweeps often enough to end connections promptly.
const MAX_TICK: Duration = Duration::from_secs(1);
/// HTTP/2 frames waiting to be sent are counted by the epoch they were handed over in, an
/// epoch being `send / STALL_EPOCHS_PER_SEND`; a ring of `STALL_SLOTS` counters holds the
/// epochs still in reach, so frames of epochs `STALL_EPOCHS_PER_SEND + 1` and more back have
/// waited longer than `send`.
const STALL_SLOTS: u64 = 8;
const STALL_EPOCHS_PER_SEND: u64 = 4;
const NO_SLOT: u8 = u8::MAX;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) header_read: Duration,
    pub(crate) idle: Duration,
    pub(crate) send: Duration,
    pub(crate) tunnel_idle: Duration,
}

/// A tunnel handed to its connection, counted among its reaper's open tunnels from the moment
/// the response asked for it until it ends (or is dropped unrun), so a drain never misses one
/// that is about to start.
pub(crate) struct Tunnel {
    pub(crate) run: tunnel::Run,
    _open: Entered,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").finish_non_exhaustive()
    }
}

/// What one connection is doing. Times are milliseconds of its reaper's coarse clock.
#[derive(Debug)]
pub(crate) struct ConnClock {
    /// The coarse time stamps are taken from.
    now: Arc<Coarse>,
    /// Requests whose head has arrived and whose response body has not ended.
    active: AtomicU32,
    /// When reading the next request head began; `NONE` while a request is in flight or the
    /// connection is idle with nothing read. Starts at the accept: the first head is due from
    /// then.
    head_since: AtomicU64,
    /// When the last in-flight request ended.
    idle_since: AtomicU64,
    /// Set by the first HTTP/2 request: from then on, bytes read while idle are pings and
    /// window updates as likely as a new head, so they do not start the header clock.
    h2: AtomicBool,
    /// Response frames handed to hyper and not yet taken back (waiting to be sent).
    frames_waiting: AtomicU32,
    /// HTTP/2: the frames of `frames_waiting` by the epoch they were handed over in
    /// ([`STALL_SLOTS`]).
    stalled: [AtomicU32; STALL_SLOTS as usize],
    /// Bumped whenever a response frame is handed over or taken, and (HTTP/1) whenever bytes
    /// reach the socket: the reaper samples it to see write progress without a clock read per
    /// write. A slow reader of a large HTTP/1 chunk makes progress although hyper has not taken
    /// the next frame; on HTTP/2 socket writes include pings, so only frames count there.
    progress: AtomicU64,
    /// The reaper's own: `progress` at its last sweep, and when it last saw it move.
    progress_seen: AtomicU64,
    progress_at: AtomicU64,
    /// Set once hyper has handed the connection over to a tunnel: from then on reads count as
    /// progress, and the deadlines are `tunnel_idle` after the last progress and `send` after
    /// a write to the client started waiting (`write_blocked`).
    tunnel: AtomicBool,
    /// A tunnel's: since when a write to the client has been waiting for the client to read
    /// (`NONE`: none is). Without it a tunnel whose client never reads but sends a byte now
    /// and then (progress) would hold its place and its upstream connection for ever.
    write_blocked: AtomicU64,
    /// The tunnel a response asked for, run by the connection's task once hyper is done.
    after_upgrade: Mutex<Option<Tunnel>>,
    /// The open tunnels of the connection's reaper.
    tunnels: Arc<InFlight>,
    /// The connection's reaper, which sweeps the clocks of its stream tunnels too.
    swept: Weak<Swept>,
    /// How the connection must end ([`Ending::code`]), 0 while it may go on.
    ending: AtomicU8,
    /// The connection's task, woken when `ending` is set.
    waker: AtomicWaker,
}

impl ConnClock {
    fn new(
        now: Arc<Coarse>,
        accepted: u64,
        tunnels: Arc<InFlight>,
        swept: Weak<Swept>,
    ) -> ConnClock {
        let sweep = now.get();
        ConnClock {
            now,
            active: AtomicU32::new(0),
            head_since: AtomicU64::new(accepted),
            idle_since: AtomicU64::new(accepted),
            h2: AtomicBool::new(false),
            frames_waiting: AtomicU32::new(0),
            stalled: Default::default(),
            progress: AtomicU64::new(0),
            progress_seen: AtomicU64::new(0),
            progress_at: AtomicU64::new(sweep),
            tunnel: AtomicBool::new(false),
            write_blocked: AtomicU64::new(NONE),
            after_upgrade: Mutex::new(None),
            tunnels,
            swept,
            ending: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        }
    }

    fn now(&self) -> u64 {
        self.now.get()
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
            h2: version == Version::HTTP_2,
            stall_slot: NO_SLOT,
        }
    }

    /// The tunnel to run once hyper has switched the connection's protocol (its 101 is sent).
    pub(crate) fn set_after_upgrade(&self, run: tunnel::Run) {
        let tunnel = Tunnel {
            run,
            _open: self.tunnels.enter(),
        };
        *self.after_upgrade.lock() = Some(tunnel);
    }

    /// The tunnel a response asked for, if any; from now on the connection is timed as one.
    pub(crate) fn upgraded(&self) -> Option<Tunnel> {
        let tunnel = self.after_upgrade.lock().take()?;
        self.tunnel.store(true, Relaxed);
        Some(tunnel)
    }

    fn on_write(&self) {
        if !self.h2.load(Relaxed) {
            self.progress.fetch_add(1, Relaxed);
        }
        if self.write_blocked.load(Relaxed) != NONE {
            self.write_blocked.store(NONE, Relaxed);
        }
    }

    /// A write found no room: on a tunnel, the client is not reading (for now).
    fn on_write_pending(&self) {
        if self.tunnel.load(Relaxed) && self.write_blocked.load(Relaxed) == NONE {
            self.write_blocked.store(self.now(), Relaxed);
        }
    }

    fn on_read(&self) {
        // Three plain loads on the common path; the coarse clock is read once per head.
        if self.head_since.load(Relaxed) == NONE
            && self.active.load(Relaxed) == 0
            && !self.h2.load(Relaxed)
        {
            // A tunnel has no heads; its reads are progress like its writes.
            if self.tunnel.load(Relaxed) {
                self.progress.fetch_add(1, Relaxed);
            } else {
                self.head_since.store(self.now(), Relaxed);
            }
        }
    }

    /// The nearest deadline (coarse ms) and what it is for, given the last time write
    /// progress was seen.
    fn deadline(&self, t: &Timeouts, progress_at: u64) -> Option<(u64, Expiry)> {
        let ms = |d: Duration| millis::floor(d).min(NONE / 2);
        if self.tunnel.load(Relaxed) {
            let idle = progress_at.saturating_add(ms(t.tunnel_idle));
            let blocked = match self.write_blocked.load(Relaxed) {
                NONE => NONE,
                since => since.saturating_add(ms(t.send)),
            };
            return Some(if blocked < idle {
                (blocked, Expiry::Send)
            } else {
                (idle, Expiry::TunnelIdle)
            });
        }
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

    /// The reaper's check at `now`: records write progress, then says whether a deadline
    /// (plus `slack`, for stamps up to one tick old) has passed.
    fn overdue(&self, t: &Timeouts, now: u64, slack: u64) -> Option<Expiry> {
        let seen = self.progress.load(Relaxed);
        if seen != self.progress_seen.load(Relaxed) {
            // Progress happened at or before now: counting from now never cuts early.
            self.progress_seen.store(seen, Relaxed);
            self.progress_at.store(now, Relaxed);
        }
        if self.h2.load(Relaxed)
            && self.frames_waiting.load(Relaxed) > 0
            && self.stalled(now, slack)
        {
            return Some(Expiry::Send);
        }
        let (at, why) = self.deadline(t, self.progress_at.load(Relaxed))?;
        (at.saturating_add(slack) <= now).then_some(why)
    }

    /// Whether some HTTP/2 frame has waited longer than `send`: one handed over in an epoch
    /// `STALL_EPOCHS_PER_SEND + 1` or more before the current one (taking stamps up to `slack`
    /// old into account). Epochs further back than the ring were checked on earlier sweeps.
    fn stalled(&self, now: u64, slack: u64) -> bool {
        let epoch = self.now.stall_epoch;
        let current = now.saturating_sub(slack) / epoch;
        // Frames are stamped with the coarse clock, which may be an epoch ahead of
        // `now - slack`: an epoch whose slot is also the newest one's is not looked at.
        let newest = now / epoch;
        (STALL_EPOCHS_PER_SEND + 1..STALL_SLOTS).any(|back| {
            current >= back
                && newest - (current - back) < STALL_SLOTS
                && self.stalled[stall_slot(current - back)].load(Relaxed) > 0
        })
    }

    /// Ask the connection to end (the first reason wins) and wake its task.
    fn end(&self, why: Ending) {
        if self
            .ending
            .compare_exchange(0, why.code(), Relaxed, Relaxed)
            .is_ok()
        {
            self.waker.wake();
        }
    }
}

/// Why the reaper ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Expired(Expiry),
    /// The drain's grace is over ([`Reaper::cut`]).
    Cut,
}

impl Ending {
    fn code(self) -> u8 {
        match self {
            Ending::Expired(Expiry::HeaderRead) => 1,
            Ending::Expired(Expiry::Idle) => 2,
            Ending::Expired(Expiry::Send) => 3,
            Ending::Expired(Expiry::TunnelIdle) => 5,
            Ending::Cut => 4,
        }
    }

    fn of(code: u8) -> Option<Ending> {
        Some(match code {
            1 => Ending::Expired(Expiry::HeaderRead),
            2 => Ending::Expired(Expiry::Idle),
            3 => Ending::Expired(Expiry::Send),
            4 => Ending::Cut,
            5 => Ending::Expired(Expiry::TunnelIdle),
            _ => return None,
        })
    }
}

/// Resolves when the reaper has ended the connection. Polled whenever the connection's task
/// wakes, so the common case is one atomic load and a pointer comparison.
pub(crate) fn ended(clock: &ConnClock) -> Ended<'_> {
    Ended {
        clock,
        registered: None,
    }
}

#[derive(Debug)]
pub(crate) struct Ended<'a> {
    clock: &'a ConnClock,
    /// The waker last given to the clock: only this future registers one, so while the task's
    /// waker is the same there is nothing to update.
    registered: Option<Waker>,
}

impl Future for Ended<'_> {
    type Output = Ending;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ending> {
        if let Some(why) = Ending::of(self.clock.ending.load(Relaxed)) {
            return Poll::Ready(why);
        }
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.clock.waker.register(cx.waker());
            self.registered = Some(cx.waker().clone());
            // Set between the load above and the registration: the wake went to the old waker.
            if let Some(why) = Ending::of(self.clock.ending.load(Relaxed)) {
                return Poll::Ready(why);
            }
        }
        Poll::Pending
    }
}

/// Milliseconds since the reaper started, as of its last tick.
#[derive(Debug)]
struct Coarse {
    ms: AtomicU64,
    /// The length of an epoch of [`STALL_SLOTS`], in ms (at least 1).
    stall_epoch: u64,
}

/// Which of [`ConnClock::stalled`] counts the frames of `epoch`.
fn stall_slot(epoch: u64) -> usize {
    // Below STALL_SLOTS: fits.
    (epoch % STALL_SLOTS) as usize
}

impl Coarse {
    fn get(&self) -> u64 {
        self.ms.load(Relaxed)
    }
}

/// The watchdog of one listener on one runtime: the connections it serves, swept every tick.
#[derive(Debug)]
pub(crate) struct Reaper {
    shared: Arc<Swept>,
}

#[derive(Debug)]
struct Swept {
    start: Instant,
    now: Arc<Coarse>,
    timeouts: Timeouts,
    tick: Duration,
    /// Bounded by the listener's connection ceiling; dead entries leave at each sweep.
    conns: Mutex<Vec<Weak<ConnClock>>>,
    /// Tunnels handed to connections and not yet ended.
    tunnels: Arc<InFlight>,
}

impl Reaper {
    /// Starts the sweeping task on the current runtime; it stops once the reaper is dropped.
    pub(crate) fn start(timeouts: Timeouts) -> Reaper {
        let shortest = timeouts
            .header_read
            .min(timeouts.idle)
            .min(timeouts.send)
            .min(timeouts.tunnel_idle);
        let shared = Arc::new(Swept {
            start: Instant::now(),
            now: Arc::new(Coarse {
                ms: AtomicU64::new(0),
                stall_epoch: (millis::floor(timeouts.send) / STALL_EPOCHS_PER_SEND).max(1),
            }),
            timeouts,
            tick: (shortest / TICKS_PER_TIMEOUT).clamp(MIN_TICK, MAX_TICK),
            conns: Mutex::new(Vec::new()),
            tunnels: Arc::default(),
        });
        tokio::spawn(sweep_forever(Arc::downgrade(&shared)));
        Reaper { shared }
    }

    /// A clock for a connection accepted at `accepted` (its first head is due from then),
    /// swept from now on.
    pub(crate) fn watch(&self, accepted: Instant) -> Arc<ConnClock> {
        let s = &self.shared;
        let at = millis::floor(accepted.saturating_duration_since(s.start)).min(NONE - 1);
        let clock = Arc::new(ConnClock::new(
            s.now.clone(),
            at,
            s.tunnels.clone(),
            Arc::downgrade(s),
        ));
        s.conns.lock().push(Arc::downgrade(&clock));
        clock
    }

    /// Resolves once no tunnel of this reaper's connections is open (or about to start).
    pub(crate) async fn tunnels_closed(&self) {
        self.shared.tunnels.idle().await;
    }

    /// End every connection now (the drain's grace is over).
    pub(crate) fn cut(&self) {
        for conn in self.shared.conns.lock().iter().filter_map(Weak::upgrade) {
            conn.end(Ending::Cut);
        }
    }
}

async fn sweep_forever(swept: Weak<Swept>) {
    let Some(tick) = swept.upgrade().map(|s| s.tick) else {
        return;
    };
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(s) = swept.upgrade() else {
            return;
        };
        s.sweep();
    }
}

impl Swept {
    fn sweep(&self) {
        let now = millis::floor(self.start.elapsed()).min(NONE - 1);
        self.now.ms.store(now, Relaxed);
        let slack = millis::ceil(self.tick);
        self.conns.lock().retain(|conn| {
            let Some(conn) = conn.upgrade() else {
                return false;
            };
            match conn.overdue(&self.timeouts, now, slack) {
                Some(why) => {
                    conn.end(Ending::Expired(why));
                    false
                }
                None => true,
            }
        });
    }
}

/// Keeps a request counted as in flight until its response body ends or is dropped, and tracks
/// whether a frame of that body is waiting to be sent.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    clock: Arc<ConnClock>,
    handed: bool,
    h2: bool,
    /// Where the waiting frame is counted in [`ConnClock::stalled`] (HTTP/2), or `NO_SLOT`.
    stall_slot: u8,
}

impl RequestGuard {
    /// The response asks to switch protocols: `run` runs once hyper has sent it.
    pub(crate) fn set_after_upgrade(&self, run: tunnel::Run) {
        self.clock.set_after_upgrade(run);
    }

    /// The response opens a tunnel on its HTTP/2 stream: run it on a task of its own, beside
    /// the connection's other streams, under a clock of its own (`tunnel_idle` from the start,
    /// cut at a drain's end), counted among the open tunnels (a drain waits for it) and as a
    /// request in flight of its connection (which keeps the connection from going idle).
    pub(crate) fn spawn_stream_tunnel(&self, tunnel: tunnel::StreamTunnel) {
        // The reaper is gone only when the runtime ends: the tunnel is dropped, and what its
        // request owes settles in the background.
        let Some(swept) = self.clock.swept.upgrade() else {
            return;
        };
        let stream = Arc::new(ConnClock::new(
            swept.now.clone(),
            swept.now.get(),
            swept.tunnels.clone(),
            Arc::downgrade(&swept),
        ));
        // No head is read on a tunnel: its reads and writes are progress from the start.
        stream.head_since.store(NONE, Relaxed);
        stream.tunnel.store(true, Relaxed);
        swept.conns.lock().push(Arc::downgrade(&stream));
        let open = self.clock.tunnels.enter();
        let busy = self.clock.request_started(Version::HTTP_2);
        tokio::spawn(async move {
            let _running = (open, busy);
            let watched = stream.clone();
            let ended = async {
                match ended(&stream).await {
                    Ending::Expired(why) => Some(why),
                    Ending::Cut => None,
                }
            };
            tunnel.run(move |io| Watched::new(io, watched), ended).await;
        });
    }

    fn frame_taken(&mut self) {
        if self.handed {
            self.handed = false;
            self.clock.frames_waiting.fetch_sub(1, Relaxed);
            self.clock.progress.fetch_add(1, Relaxed);
            self.unstall();
        }
    }

    fn frame_handed(&mut self) {
        self.handed = true;
        self.clock.frames_waiting.fetch_add(1, Relaxed);
        self.clock.progress.fetch_add(1, Relaxed);
        if self.h2 {
            let slot = stall_slot(self.clock.now() / self.clock.now.stall_epoch);
            self.clock.stalled[slot].fetch_add(1, Relaxed);
            // Below STALL_SLOTS: fits.
            self.stall_slot = slot as u8;
        }
    }

    fn unstall(&mut self) {
        if let Some(counter) = self.clock.stalled.get(usize::from(self.stall_slot)) {
            counter.fetch_sub(1, Relaxed);
            self.stall_slot = NO_SLOT;
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.handed {
            self.clock.frames_waiting.fetch_sub(1, Relaxed);
            self.unstall();
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
        // HTTP/2: what is left of a data frame handed over in pieces.
        rest: Option<Bytes>,
    }
}

/// On HTTP/2 a data frame is handed to hyper at most this much at a time (the protocol's
/// default frame size): a stream's `send_timeout` then runs per piece, so a client reading
/// slowly but steadily through a small window is never cut for a large chunk of the upstream's
/// (hundreds of KB) taking longer than `send_timeout` to pass.
const H2_PIECE: usize = 16 * 1024;

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, guard: RequestGuard) -> Self {
        Tracked {
            body,
            guard,
            rest: None,
        }
    }
}

/// The first `H2_PIECE` bytes of `data`, the rest left in `rest`.
fn piece(mut data: Bytes, rest: &mut Option<Bytes>) -> Frame<Bytes> {
    if data.len() > H2_PIECE {
        *rest = Some(data.split_off(H2_PIECE));
    }
    Frame::data(data)
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
        if let Some(rest) = this.rest.take() {
            this.guard.frame_handed();
            return Poll::Ready(Some(Ok(piece(rest, this.rest))));
        }
        match this.body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.guard.frame_handed();
                if !this.guard.h2 {
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Ok(match frame.into_data() {
                    Ok(data) => piece(data, this.rest),
                    Err(frame) => frame,
                })))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.body.size_hint();
        if let Some(rest) = &self.rest {
            let n = u64::try_from(rest.len()).unwrap_or(u64::MAX);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper.saturating_add(n));
            }
            hint.set_lower(hint.lower().saturating_add(n));
        }
        hint
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
        match polled {
            Poll::Ready(Ok(1..)) => this.clock.on_write(),
            Poll::Pending => this.clock.on_write_pending(),
            Poll::Ready(_) => {}
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
        match polled {
            Poll::Ready(Ok(1..)) => this.clock.on_write(),
            Poll::Pending => this.clock.on_write_pending(),
            Poll::Ready(_) => {}
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
        tunnel_idle: Duration::from_secs(120),
    };

    /// A connection accepted at time 0 of a clock that stays at 0.
    fn clock() -> Arc<ConnClock> {
        Arc::new(ConnClock::new(
            Arc::new(Coarse {
                ms: AtomicU64::new(0),
                stall_epoch: millis::floor(T.send) / STALL_EPOCHS_PER_SEND,
            }),
            0,
            Arc::default(),
            Weak::new(),
        ))
    }

    #[test]
    fn a_deadline_counts_one_tick_of_slack_and_progress_moves_the_send_deadline() {
        let clock = clock();
        assert_eq!(clock.overdue(&T, 10_000, 100), None);
        assert_eq!(clock.overdue(&T, 10_100, 100), Some(Expiry::HeaderRead));
        let mut guard = clock.request_started(Version::HTTP_11);
        guard.frame_handed();
        // Progress seen at 20 000: the send deadline runs from there.
        assert_eq!(clock.overdue(&T, 20_000, 100), None);
        assert_eq!(clock.overdue(&T, 50_000, 100), None);
        assert_eq!(clock.overdue(&T, 50_100, 100), Some(Expiry::Send));
    }

    #[tokio::test]
    async fn the_reaper_ends_an_overdue_connection_and_cuts_the_rest() {
        let reaper = Reaper::start(Timeouts {
            header_read: Duration::from_millis(50),
            idle: Duration::from_secs(60),
            send: Duration::from_secs(60),
            tunnel_idle: Duration::from_secs(60),
        });
        let silent = reaper.watch(Instant::now());
        let busy = reaper.watch(Instant::now());
        let _request = busy.request_started(Version::HTTP_11);
        let why = tokio::time::timeout(Duration::from_secs(10), ended(&silent)).await;
        assert_eq!(why.unwrap(), Ending::Expired(Expiry::HeaderRead));
        // A request in flight has no deadline but the cut.
        let mut busy_ended = std::pin::pin!(ended(&busy));
        let pending =
            std::future::poll_fn(|cx| Poll::Ready(busy_ended.as_mut().poll(cx).is_pending()));
        assert!(pending.await);
        reaper.cut();
        assert_eq!(busy_ended.await, Ending::Cut);
    }

    #[test]
    fn first_head_is_due_from_accept() {
        let clock = clock();
        assert_eq!(clock.deadline(&T, 0), Some((10_000, Expiry::HeaderRead)));
        clock.on_read();
        assert_eq!(clock.deadline(&T, 0), Some((10_000, Expiry::HeaderRead)));
    }

    #[test]
    fn no_deadline_while_a_request_waits_for_its_upstream() {
        let clock = clock();
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
            let clock = clock();
            drop(clock.request_started(version));
            clock.on_read();
            assert_eq!(clock.deadline(&T, 0).unwrap().1, expect, "{version:?}");
        }
    }

    #[test]
    fn an_upgraded_connection_is_due_tunnel_idle_after_its_last_byte_either_way() {
        let clock = clock();
        drop(clock.request_started(Version::HTTP_11));
        assert!(clock.upgraded().is_none(), "no tunnel was asked for");
        clock.set_after_upgrade(Box::pin(async {}));
        assert!(clock.upgraded().is_some());
        assert_eq!(clock.deadline(&T, 0), Some((120_000, Expiry::TunnelIdle)));
        // A read is progress (not the start of a head): the deadline moves with it.
        clock.on_read();
        assert_eq!(clock.overdue(&T, 100_000, 100), None);
        assert_eq!(clock.overdue(&T, 219_999, 100), None);
        assert_eq!(clock.overdue(&T, 220_100, 100), Some(Expiry::TunnelIdle));
        // So is a write.
        clock.on_write();
        assert_eq!(clock.overdue(&T, 300_000, 100), None);
        assert_eq!(clock.deadline(&T, 300_000).unwrap().0, 420_000);
        // A write waiting for the client (stamped at the coarse 0) is due `send` after it,
        // whatever is read meanwhile; one that goes through clears it.
        clock.on_write_pending();
        clock.on_read();
        assert_eq!(clock.deadline(&T, 300_000), Some((30_000, Expiry::Send)));
        clock.on_write();
        assert_eq!(
            clock.deadline(&T, 300_000),
            Some((420_000, Expiry::TunnelIdle))
        );
    }

    #[test]
    fn a_waiting_frame_is_due_send_after_the_last_progress() {
        let clock = clock();
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

    /// One HTTP/2 stream's frame waiting for `send` ends the connection although other
    /// streams make progress; a frame taken in time, or dropped, leaves no trace.
    #[test]
    fn a_stalled_http2_stream_is_due_send_whatever_the_others_do() {
        let clock = clock();
        let mut stalled = clock.request_started(Version::HTTP_2);
        // Handed over at 0 (epoch 0 of 7.5 s epochs).
        stalled.frame_handed();
        let mut busy = clock.request_started(Version::HTTP_2);
        for now in (1_000..=37_500).step_by(1_000) {
            // Progress on another stream at every sweep.
            busy.frame_handed();
            busy.frame_taken();
            let due = clock.overdue(&T, now, 100);
            // Within send (30 s) plus an epoch (7.5 s) and the slack, not before send.
            if now <= 30_000 {
                assert_eq!(due, None, "at {now}");
            }
            if now == 37_500 {
                assert_eq!(due, None, "slack at {now}");
            }
        }
        assert_eq!(clock.overdue(&T, 37_600, 100), Some(Expiry::Send));
        stalled.frame_taken();
        assert_eq!(clock.overdue(&T, 37_700, 100), None);
        // A frame handed over just after an epoch began is not mistaken for one eight epochs
        // old when the sweep's slack reaches back into the epoch before (the slots are shared).
        let fresh = clock.request_started(Version::HTTP_2);
        clock.now.ms.store(60_000, Relaxed);
        let mut fresh = fresh;
        fresh.frame_handed();
        assert_eq!(clock.overdue(&T, 60_099, 100), None);
        fresh.frame_taken();
        clock.now.ms.store(0, Relaxed);
        // A frame dropped with its stream stops counting too.
        let mut gone = clock.request_started(Version::HTTP_2);
        gone.frame_handed();
        drop(gone);
        assert_eq!(clock.overdue(&T, 200_000, 100), None);
        assert!(clock.stalled.iter().all(|c| c.load(Relaxed) == 0));
        // HTTP/1.1 frames are not counted here (its connection's progress rule covers them).
        let mut h1 = clock.request_started(Version::HTTP_11);
        h1.frame_handed();
        assert!(clock.stalled.iter().all(|c| c.load(Relaxed) == 0));
    }
}
