//! The log's output buffer: formatted events are appended to memory and a flusher thread writes
//! them out in batches, nginx's `access_log ... buffer=64k flush=...` trade-off.
//!
//! Writing each event with its own `write(2)` under the stdout lock both proxy workers share cost
//! an access-logged request more CPU than the rest of its work. Here a worker only copies the
//! formatted bytes under a short lock; the flusher writes every [`FLUSH_INTERVAL`] or as soon as
//! [`FLUSH_BYTES`] are waiting. tracing's fmt layer hands over one whole event per `write_all`,
//! and a whole `write` is appended under the lock, so lines are never split or interleaved.
//!
//! Bounded: when the output blocks (a stuck pipe) and [`HARD_CAP`] bytes are waiting, the logging
//! thread waits for the flusher (back-pressure, as a blocking `write(2)` did before) instead of
//! growing the buffer or dropping lines.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a logged line may wait in memory before it is written.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Waiting bytes that wake the flusher before the interval is over.
pub(crate) const FLUSH_BYTES: usize = 64 * 1024;
/// Waiting bytes past which a logging thread waits for the output (back-pressure).
pub(crate) const HARD_CAP: usize = 8 * 1024 * 1024;

/// Shared by the fmt layer's writers, the flusher thread and the exit paths.
pub(crate) struct LogBuffer {
    pending: Mutex<Vec<u8>>,
    /// Wakes the flusher early (a full batch).
    full: Condvar,
    /// Wakes logging threads waiting on [`HARD_CAP`].
    drained: Condvar,
    /// Taken before `pending` is emptied and held while writing, so batches leave in order even
    /// when an exit path flushes while the flusher thread is writing.
    out: Mutex<Box<dyn Write + Send>>,
    cap: usize,
}

/// A thread that panicked while holding one of these locks left nothing half done worth
/// refusing over: the bytes are still bytes.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogBuffer {
    pub(crate) fn new(out: Box<dyn Write + Send>) -> Arc<Self> {
        Self::with_cap(out, HARD_CAP)
    }

    pub(crate) fn with_cap(out: Box<dyn Write + Send>, cap: usize) -> Arc<Self> {
        Arc::new(Self {
            pending: Mutex::new(Vec::with_capacity(FLUSH_BYTES)),
            full: Condvar::new(),
            drained: Condvar::new(),
            out: Mutex::new(out),
            cap,
        })
    }

    /// Appends one formatted event; waits while [`HARD_CAP`] bytes are already waiting.
    fn append(&self, bytes: &[u8]) {
        let mut pending = lock(&self.pending);
        while pending.len() >= self.cap {
            self.full.notify_one();
            pending = self
                .drained
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        pending.extend_from_slice(bytes);
        if pending.len() >= FLUSH_BYTES {
            self.full.notify_one();
        }
    }

    /// Writes out everything appended so far; returns when it has been handed to the output.
    /// `spare` is swapped in as the new (empty) buffer, so the flusher reuses two allocations.
    fn write_out(&self, spare: &mut Vec<u8>) {
        let mut out = lock(&self.out);
        spare.clear();
        std::mem::swap(&mut *lock(&self.pending), spare);
        self.drained.notify_all();
        if spare.is_empty() {
            return;
        }
        // Nowhere left to report a failed log write; the next batch tries again.
        let _ = out.write_all(spare).and_then(|()| out.flush());
    }

    /// Writes out everything logged so far (exit paths: shutdown, errors, panics).
    pub(crate) fn flush(&self) {
        self.write_out(&mut Vec::new());
    }

    /// The flusher's loop: write a batch every [`FLUSH_INTERVAL`], or sooner when
    /// [`FLUSH_BYTES`] are waiting. Runs for the life of the process.
    fn run_flusher(self: Arc<Self>) {
        let mut spare = Vec::with_capacity(FLUSH_BYTES);
        loop {
            {
                let pending = lock(&self.pending);
                if pending.len() < FLUSH_BYTES {
                    // Woken early by a full batch, or the interval is over: either way, write.
                    drop(
                        self.full
                            .wait_timeout(pending, FLUSH_INTERVAL)
                            .unwrap_or_else(PoisonError::into_inner),
                    );
                }
            }
            self.write_out(&mut spare);
            // A burst may have grown the spare far past a normal batch; don't keep it.
            if spare.capacity() > 4 * FLUSH_BYTES {
                spare = Vec::with_capacity(FLUSH_BYTES);
            }
        }
    }

    /// Starts the flusher thread.
    pub(crate) fn spawn_flusher(self: &Arc<Self>) -> io::Result<()> {
        let this = self.clone();
        std::thread::Builder::new()
            .name("log-flusher".into())
            .spawn(move || this.run_flusher())
            .map(drop)
    }
}

/// The fmt layer's writer factory.
#[derive(Clone)]
pub(crate) struct BufferedWriter(pub(crate) Arc<LogBuffer>);

/// One event's writer: each `write` is appended whole.
pub(crate) struct EventWriter<'a>(&'a LogBuffer);

impl Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedWriter {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    /// An output that records what it got, and can be made to block like a stuck pipe.
    #[derive(Clone, Default)]
    struct Sink {
        got: Arc<Mutex<Vec<u8>>>,
        blocked: Arc<AtomicBool>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            while self.blocked.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            self.got.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn lines_are_kept_whole_and_in_order_and_flush_writes_them() {
        let sink = Sink::default();
        let buffer = LogBuffer::new(Box::new(sink.clone()));
        let writer = BufferedWriter(buffer.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let line =
                            format!("{{\"t\":{t},\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i));
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // No flusher thread: nothing is written until flushed.
        assert!(sink.got.lock().unwrap().is_empty());
        buffer.flush();
        let got = String::from_utf8(sink.got.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in got.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let (t, i) = (
                v["t"].as_u64().unwrap() as usize,
                v["i"].as_u64().unwrap() as usize,
            );
            assert_eq!(i, next[t], "thread {t}'s lines in order");
            assert_eq!(v["pad"].as_str().unwrap().len(), i);
            next[t] += 1;
        }
        assert_eq!(next, [500; 4]);
    }

    #[test]
    fn the_flusher_writes_without_being_asked() {
        let sink = Sink::default();
        let buffer = LogBuffer::new(Box::new(sink.clone()));
        buffer.spawn_flusher().unwrap();
        BufferedWriter(buffer)
            .make_writer()
            .write_all(b"one line\n")
            .unwrap();
        wait_until("the flusher", || {
            sink.got.lock().unwrap().as_slice() == b"one line\n"
        });
    }

    #[test]
    fn a_blocked_output_makes_writers_wait_past_the_cap_without_dropping() {
        let sink = Sink::default();
        sink.blocked.store(true, Ordering::SeqCst);
        let cap = 1000;
        let buffer = LogBuffer::with_cap(Box::new(sink.clone()), cap);
        buffer.spawn_flusher().unwrap();
        let writer = BufferedWriter(buffer.clone());
        let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = written.clone();
        let logger = std::thread::spawn(move || {
            for _ in 0..100 {
                writer.make_writer().write_all(&[b'x'; 99]).unwrap();
                writer.make_writer().write_all(b"\n").unwrap();
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        // The flusher takes one batch and blocks writing it; the next fills up to the cap.
        wait_until("the logger to stall", || {
            let before = written.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            before == written.load(Ordering::SeqCst) && before > 0
        });
        let stalled_at = written.load(Ordering::SeqCst);
        assert!(
            stalled_at < 100,
            "the logger waits while the output is blocked"
        );
        assert!(lock(&buffer.pending).len() <= cap + 100);
        sink.blocked.store(false, Ordering::SeqCst);
        logger.join().unwrap();
        wait_until("every line", || sink.got.lock().unwrap().len() == 100 * 100);
        let got = sink.got.lock().unwrap().clone();
        assert!(got.split(|&b| b == b'\n').take(100).all(|l| l.len() == 99));
    }
}
