//! Group commit of check script calls: concurrent checks bound for the same place share one
//! script call, with no added latency.
//!
//! A lane is a cluster slot (0 on a standalone server or behind Sentinel, where everything is one
//! lane per script) and a check script. A lane has at most `batch_in_flight` calls in flight;
//! while they are, further checks for it wait in its queue, and when a call returns its driver
//! sends everything queued (at most `batch_max` requests) as the next call. A check that finds a
//! call's room free goes out at once (with whatever was waiting). `lua/check.lua` runs a call's
//! requests one after the other, each atomic and in the order queued, and answers each on its
//! own: a request's error stays its own, while a call that fails or times out fails every request
//! in it (each then gets `on_error`). More than one call in flight keeps Redis and the gateway
//! busy at once: with one, each call waits for the previous reply to travel through the
//! gateway's threads, which on a loaded machine cost more throughput than batching saved
//! (docs/benchmarks.md, "Issue 11: batched checks").
//!
//! Bounds: a lane exists only while it has calls in flight (the map holds no idle lanes, so it
//! grows with concurrency, not with clients), and its queue holds at most `batch_queue` checks;
//! past that a check fails at once with `StoreError::Overloaded` (the error path: `on_error`,
//! never an admission). A waiting check whose request has gone (client disconnected) is dropped
//! before its call is sent, so it charges nothing.
//!
//! Not batched: a check carrying a concurrency lease. It goes alone on its lease's connection, so
//! that a release sent after it on that connection runs after it (see `RedisStore::client_for`).
//!
//! Why per slot in a cluster, not per node: a script call's keys must share one slot (Redis
//! answers CROSSSLOT otherwise), and a slot moved by a reshard redirects a whole call; so
//! requests of one identity (one slot) share calls there, and on one server every request does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use fred::types::{FromValue, Resp3Frame, Value};
use tokio::sync::oneshot;

use super::args::int;
use super::{map_error, Batching, Call, RedisStore, Script};
use crate::store::StoreError;

/// One request's part of a check call, as `lua/check.lua` reads it: its keys, and its header
/// followed by its policies' arguments (none with a compiled script).
pub(super) struct Part {
    pub(super) keys: Vec<String>,
    pub(super) args: Vec<Value>,
}

/// One request's answer: the integers of its reply (`groups::decode` reads them).
pub(super) type Answer = Result<Vec<i64>, StoreError>;

/// A queued check and where its answer goes.
struct Waiting {
    part: Part,
    tx: oneshot::Sender<Answer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LaneKey {
    slot: u16,
    /// The script's address: scripts live as long as the store (`Compiled` never drops one).
    script: usize,
}

/// A lane with calls in flight: how many, and the checks waiting for the next one.
#[derive(Default)]
struct Lane {
    in_flight: usize,
    queue: VecDeque<Waiting>,
}

/// The lanes with calls in flight, and their queues.
pub(super) struct Lanes {
    busy: Mutex<HashMap<LaneKey, Lane>>,
    /// Requests per call, at most (`store.batch_max`); 1 sends every check on its own.
    max: usize,
    /// Calls in flight per lane, at most (`store.batch_in_flight`).
    in_flight: usize,
    /// Checks waiting per lane, at most (`store.batch_queue`).
    queue: usize,
}

impl Lanes {
    pub(super) fn new(settings: Batching) -> Self {
        Lanes {
            busy: Mutex::default(),
            max: settings.max.max(1),
            in_flight: settings.in_flight.max(1),
            queue: settings.queue,
        }
    }

    /// What these lanes were built with (a scoped store gets lanes of its own, the same size).
    pub(super) fn settings(&self) -> Batching {
        Batching {
            max: self.max,
            in_flight: self.in_flight,
            queue: self.queue,
        }
    }

    /// Never held across an await; a panic elsewhere while holding it leaves the map consistent
    /// (every change is one insert, push, pop or remove), so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, HashMap<LaneKey, Lane>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `waiting` in its lane. When the lane has room for one more call in flight, that call
    /// is returned (the queue, this check last) and counted: the caller drives it.
    fn enqueue(&self, key: LaneKey, waiting: Waiting) -> Result<Option<Vec<Waiting>>, StoreError> {
        let mut busy = self.lock();
        let lane = busy.entry(key).or_default();
        if lane.in_flight >= self.in_flight && lane.queue.len() >= self.queue {
            return Err(StoreError::Overloaded(self.queue));
        }
        lane.queue.push_back(waiting);
        if lane.in_flight >= self.in_flight {
            return Ok(None);
        }
        let batch = self.take(lane);
        if batch.is_empty() {
            // Only when this check's own request is gone already: nothing to send.
            if lane.in_flight == 0 {
                busy.remove(&key);
            }
            return Ok(None);
        }
        lane.in_flight += 1;
        Ok(Some(batch))
    }

    /// Up to `max` of the lane's queued checks whose requests still wait.
    fn take(&self, lane: &mut Lane) -> Vec<Waiting> {
        let mut batch = Vec::with_capacity(lane.queue.len().min(self.max));
        while batch.len() < self.max {
            match lane.queue.pop_front() {
                Some(w) if w.tx.is_closed() => {}
                Some(w) => batch.push(w),
                None => break,
            }
        }
        batch
    }

    /// The next call of a driver whose call returned. None when nothing waits: the driver ends,
    /// and the lane is gone once none is left.
    fn next(&self, key: LaneKey) -> Option<Vec<Waiting>> {
        let mut busy = self.lock();
        let lane = busy.get_mut(&key)?;
        let batch = self.take(lane);
        if !batch.is_empty() {
            return Some(batch);
        }
        self.end(&mut busy, key);
        None
    }

    /// One driver of `key` ended; the last one takes the lane (and any checks still queued in it:
    /// they get an error rather than wait for a call that will never come).
    fn end(&self, busy: &mut HashMap<LaneKey, Lane>, key: LaneKey) {
        if let Some(lane) = busy.get_mut(&key) {
            lane.in_flight = lane.in_flight.saturating_sub(1);
            if lane.in_flight == 0 {
                busy.remove(&key);
            }
        }
    }
}

/// Ends the driver's turn in its lane if it stops early (a panic, or its runtime shutting down).
struct Driving<'a> {
    lanes: &'a Lanes,
    key: LaneKey,
    done: bool,
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.lanes.end(&mut self.lanes.lock(), self.key);
        }
    }
}

impl RedisStore {
    /// One group's check through its lane (see the module docs): the answer of its request.
    pub(super) async fn check_call(
        &self,
        script: Arc<Script>,
        slot: u16,
        lease: &str,
        part: Part,
    ) -> Answer {
        let lanes = &self.inner.lanes;
        if !lease.is_empty() || lanes.max == 1 {
            let mut answers = self
                .send(&script, lease, std::slice::from_ref(&part))
                .await?;
            return answers.pop().unwrap_or_else(|| Err(no_answer()));
        }
        let key = LaneKey {
            slot,
            script: Arc::as_ptr(&script) as usize,
        };
        let (tx, rx) = oneshot::channel();
        if let Some(batch) = lanes.enqueue(key, Waiting { part, tx })? {
            // A task of its own, so that no request's cancellation cancels a call others wait on.
            tokio::spawn(self.clone().drive(key, script, batch));
        }
        rx.await.unwrap_or_else(|_| Err(no_answer()))
    }

    /// Calls of a lane, one after the other, until its queue is empty (other drivers of the lane,
    /// up to `in_flight`, run alongside).
    async fn drive(self, key: LaneKey, script: Arc<Script>, mut batch: Vec<Waiting>) {
        let mut driving = Driving {
            lanes: &self.inner.lanes,
            key,
            done: false,
        };
        loop {
            let (parts, txs): (Vec<Part>, Vec<_>) =
                batch.into_iter().map(|w| (w.part, w.tx)).unzip();
            match self.send(&script, "", &parts).await {
                Ok(answers) => {
                    for (tx, answer) in txs.into_iter().zip(answers) {
                        let _ = tx.send(answer);
                    }
                }
                Err(e) => {
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
            match driving.lanes.next(key) {
                Some(next) => batch = next,
                None => {
                    driving.done = true;
                    return;
                }
            }
        }
    }

    /// One script call carrying `parts`, bounded by the store timeout: one answer per part, or
    /// the call's error.
    async fn send(
        &self,
        script: &Script,
        lease: &str,
        parts: &[Part],
    ) -> Result<Vec<Answer>, StoreError> {
        self.count_call(Call::Check);
        if let Some(m) = self.inner.metrics.get() {
            m.batch.observe(parts.len() as f64);
        }
        let frame = self
            .run_frame(script, lease, || assemble(self.now_arg(), parts))
            .await?;
        // A reply fred cannot convert (an error nested in it) fails the call, as fred's own
        // conversion failed it.
        let failed = |e: fred::error::Error| map_error(&e, self.inner.timeout);
        let answers: Vec<Answer> = match frame {
            Resp3Frame::Array { data, .. } => data
                .into_iter()
                .map(answer)
                .collect::<Result<_, _>>()
                .map_err(failed)?,
            // Not a list: whatever fred makes of it (an empty list for a null), as before.
            other => Vec::<Value>::from_value(Value::try_from(other).map_err(failed)?)
                .map_err(|e| StoreError::Protocol(e.to_string()))?
                .into_iter()
                .map(answer_value)
                .collect(),
        };
        if answers.len() != parts.len() {
            return Err(StoreError::Protocol(format!(
                "{} answers to a call of {} checks",
                answers.len(),
                parts.len()
            )));
        }
        Ok(answers)
    }
}

/// The keys and arguments of one call (see `lua/check.lua`).
fn assemble(now: Value, parts: &[Part]) -> (Vec<String>, Vec<Value>) {
    let mut keys = Vec::with_capacity(parts.iter().map(|p| p.keys.len()).sum());
    let mut args = Vec::with_capacity(2 + parts.iter().map(|p| p.args.len()).sum::<usize>());
    args.push(now);
    args.push(int(parts.len() as u64));
    for part in parts {
        keys.extend(part.keys.iter().cloned());
        args.extend(part.args.iter().cloned());
    }
    (keys, args)
}

/// One request's reply, read from its frame: a string is the script's packed integers
/// ([`unpack`], what it returns for every request it answers but a failed one), a list of
/// integers is read as is, anything else (a failed request's `{3, text}`) through fred's
/// conversion and [`answer_value`], as before.
fn answer(reply: Resp3Frame) -> Result<Answer, fred::error::Error> {
    if let Resp3Frame::BlobString { data, .. } = &reply {
        return Ok(unpack(data));
    }
    if let Resp3Frame::Array { data, .. } = &reply {
        let mut ints = Vec::with_capacity(data.len());
        for item in data {
            match item {
                Resp3Frame::Number { data, .. } => ints.push(*data),
                _ => return Value::try_from(reply).map(answer_value),
            }
        }
        if ints.first() != Some(&3) {
            return Ok(Ok(ints));
        }
    }
    Value::try_from(reply).map(answer_value)
}

/// A reply `lua/check.lua` packed: its integers, each big-endian in 8 bytes.
fn unpack(bytes: &[u8]) -> Answer {
    let (ints, rest) = bytes.as_chunks::<8>();
    if !rest.is_empty() {
        return Err(StoreError::Protocol(format!(
            "a check's packed reply of {} bytes",
            bytes.len()
        )));
    }
    Ok(ints.iter().map(|b| i64::from_be_bytes(*b)).collect())
}

/// One request's reply: its integers, or (outcome 3) the error the script caught for it.
fn answer_value(reply: Value) -> Answer {
    let Value::Array(items) = reply else {
        return Err(StoreError::Protocol("a check's reply is not a list".into()));
    };
    if let [Value::Integer(3), message, ..] = items.as_slice() {
        let text = message.as_str().map(|s| s.to_string()).unwrap_or_default();
        return Err(StoreError::Unavailable(format!("check script: {text}")));
    }
    items
        .iter()
        .map(|v| {
            v.as_i64()
                .ok_or_else(|| StoreError::Protocol("a check's reply holds a non-integer".into()))
        })
        .collect()
}

fn no_answer() -> StoreError {
    StoreError::Unavailable("the check's call ended without an answer".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_lists_each_request_after_the_clock_and_the_count() {
        let part = |k: &str, a: i64| Part {
            keys: vec![k.to_string()],
            args: vec![Value::Integer(a)],
        };
        let (keys, args) = assemble(Value::String("".into()), &[part("a", 1), part("b", 2)]);
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(
            args,
            [
                Value::String("".into()),
                Value::Integer(2),
                Value::Integer(1),
                Value::Integer(2)
            ]
        );
    }

    #[test]
    fn answers_are_per_request() {
        let num = |data| Resp3Frame::Number {
            data,
            attributes: None,
        };
        let list = |data| Resp3Frame::Array {
            data,
            attributes: None,
        };
        assert_eq!(answer(list(vec![num(0), num(5)])).unwrap().unwrap(), [0, 5]);
        // The script's packed form: big-endian 8-byte integers, negative ones too.
        let packed: Vec<u8> = [0i64, -1, 1_800_000_000_000, 1 << 53]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let blob = |data: Vec<u8>| Resp3Frame::BlobString {
            data: data.into(),
            attributes: None,
        };
        assert_eq!(
            answer(blob(packed.clone())).unwrap().unwrap(),
            [0, -1, 1_800_000_000_000, 1 << 53]
        );
        assert!(matches!(
            answer(blob(packed[..9].to_vec())).unwrap(),
            Err(StoreError::Protocol(_))
        ));
        let failed = list(vec![
            num(3),
            Resp3Frame::BlobString {
                data: "WRONGTYPE".into(),
                attributes: None,
            },
        ]);
        assert!(
            matches!(answer(failed).unwrap(), Err(StoreError::Unavailable(m)) if m.contains("WRONGTYPE"))
        );
        // Read as fred's values read them: a number sent as text, a reply that is no list.
        let text = Resp3Frame::BlobString {
            data: "7".into(),
            attributes: None,
        };
        assert_eq!(answer(list(vec![num(0), text])).unwrap().unwrap(), [0, 7]);
        assert!(answer(num(1)).unwrap().is_err());
        assert!(answer_value(Value::Integer(1)).is_err());
        // An error inside a reply fails fred's conversion: the call's error, as before.
        let nested = Resp3Frame::SimpleError {
            data: "ERR nested".into(),
            attributes: None,
        };
        assert!(answer(list(vec![num(0), nested])).is_err());
    }

    #[test]
    fn a_lane_hands_out_at_most_max_and_goes_idle_when_empty() {
        let lanes = Lanes::new(Batching {
            max: 2,
            in_flight: 1,
            queue: 3,
        });
        let key = LaneKey { slot: 0, script: 1 };
        let mut rxs = Vec::new();
        let mut enqueue = || {
            let (tx, rx) = oneshot::channel();
            rxs.push(rx);
            let part = Part {
                keys: Vec::new(),
                args: Vec::new(),
            };
            lanes
                .enqueue(key, Waiting { part, tx })
                .map(|b| b.map(|b| b.len()))
        };
        // Idle: the first check goes at once, alone; the next ones wait, up to the queue bound.
        assert_eq!(enqueue().unwrap(), Some(1));
        for _ in 0..3 {
            assert_eq!(enqueue().unwrap(), None);
        }
        assert!(matches!(enqueue(), Err(StoreError::Overloaded(3))));
        // The second waiting request went away: it is not sent.
        drop(rxs.remove(2));
        assert_eq!(lanes.next(key).map(|b| b.len()), Some(2));
        assert!(lanes.next(key).is_none());
        assert!(lanes.lock().is_empty());
    }

    #[test]
    fn a_lane_has_at_most_in_flight_calls() {
        let lanes = Lanes::new(Batching {
            max: 64,
            in_flight: 2,
            queue: 10,
        });
        let key = LaneKey { slot: 0, script: 1 };
        let mut rxs = Vec::new();
        let mut enqueue = || {
            let (tx, rx) = oneshot::channel();
            rxs.push(rx);
            let part = Part {
                keys: Vec::new(),
                args: Vec::new(),
            };
            lanes
                .enqueue(key, Waiting { part, tx })
                .unwrap()
                .map(|b| b.len())
        };
        assert_eq!(enqueue(), Some(1));
        assert_eq!(enqueue(), Some(1));
        assert_eq!(enqueue(), None);
        assert_eq!(enqueue(), None);
        // One call returns: its driver takes both waiting checks; the other finds none.
        assert_eq!(lanes.next(key).map(|b| b.len()), Some(2));
        assert!(lanes.next(key).is_none());
        assert_eq!(lanes.lock().get(&key).map(|l| l.in_flight), Some(1));
        assert!(lanes.next(key).is_none());
        assert!(lanes.lock().is_empty());
    }
}
