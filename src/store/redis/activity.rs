//! Activity off the request path: what the store contract records for the admin API (events,
//! suspect counts) and the block index are queued in-process, bounded (drop-oldest, counted),
//! and flushed by a background task in batches, one script call (`lua/activity.lua`) per batch
//! into the shared `{rg}` keys: every [`FLUSH_EVERY`] or as soon as [`BATCH`] records wait. So no
//! request writes the shared slot, and a cluster spreads the request path over every master.
//! Reads of the admin API flush this instance's queue first; another instance's records appear
//! within its flush interval.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::types::Value;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::config::compiled::Mode;
use crate::store::{CheckOutcome, CheckRequest, CheckResult, StoreError};

use super::args::int;
use super::{Inner, RedisStore};

/// Most records one flush sends.
pub(super) const BATCH: usize = 256;
/// How often the queue is flushed when it holds fewer than [`BATCH`] records.
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Most records waiting; beyond this the oldest is dropped (and counted).
const QUEUE_MAX: usize = 16 * BATCH;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A rejected request (the client's suspect count).
    Suspect,
    /// A `limited` event (deduplicated per client and policy when flushed).
    Limited,
    Blocked,
    Unblocked,
    /// The client's block, until `value`, in the block index.
    Index,
    /// The client out of the block index.
    Unindex,
    /// An admin revocation (`client` is `jti:<id>` or `sub:<id>`).
    Revoked,
    Unrevoked,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::Suspect => "s",
            Kind::Limited => "l",
            Kind::Blocked => "b",
            Kind::Unblocked => "u",
            Kind::Index => "i",
            Kind::Unindex => "x",
            Kind::Revoked => "r",
            Kind::Unrevoked => "v",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Record {
    pub(super) kind: Kind,
    /// Store clock when it happened.
    pub(super) at: u64,
    pub(super) client: String,
    pub(super) policy: String,
    pub(super) reason: String,
    /// A block's ms (`Blocked`) or end (`Index`).
    pub(super) value: u64,
}

impl Record {
    pub(super) fn new(kind: Kind, at: u64, client: &str) -> Self {
        Record {
            kind,
            at,
            client: client.to_owned(),
            policy: String::new(),
            reason: String::new(),
            value: 0,
        }
    }

    fn push_args(&self, args: &mut Vec<Value>) {
        args.push(Value::String(self.kind.code().into()));
        args.push(int(self.at));
        args.push(Value::String(self.client.as_str().into()));
        args.push(Value::String(self.policy.as_str().into()));
        args.push(Value::String(self.reason.as_str().into()));
        args.push(int(self.value));
    }
}

#[derive(Debug)]
pub(super) struct Queue {
    state: Mutex<State>,
    wake: Notify,
    /// How many records have left the queue (flushed, failed or dropped).
    done: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    records: VecDeque<Record>,
    /// Records ever queued, and ever taken out (by a flush or dropped).
    pushed: u64,
    taken: u64,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            state: Mutex::default(),
            wake: Notify::new(),
            done: watch::channel(0).0,
        }
    }
}

impl Queue {
    /// Queue records; returns how many old ones were dropped to make room.
    pub(super) fn push(&self, records: impl IntoIterator<Item = Record>) -> u64 {
        let mut dropped = 0;
        let full = {
            let mut s = self.state.lock();
            for r in records {
                if s.records.len() >= QUEUE_MAX {
                    s.records.pop_front();
                    s.taken += 1;
                    dropped += 1;
                }
                s.records.push_back(r);
                s.pushed += 1;
            }
            s.records.len() >= BATCH
        };
        if full {
            self.wake.notify_one();
        }
        dropped
    }

    /// The next batch and the count of records taken once it is out.
    fn take(&self) -> (Vec<Record>, u64) {
        let mut s = self.state.lock();
        let n = s.records.len().min(BATCH);
        let batch: Vec<Record> = s.records.drain(..n).collect();
        s.taken += n as u64;
        (batch, s.taken)
    }
}

/// Start the flusher of `inner`'s queue; it ends when the store is dropped.
pub(super) fn spawn_flusher(inner: &Arc<Inner>) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let queue = inner.activity.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = queue.wake.notified() => {}
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
            }
            let Some(inner) = weak.upgrade() else { return };
            let store = RedisStore::handle(inner);
            loop {
                let (batch, taken) = queue.take();
                if !batch.is_empty() {
                    if let Err(e) = store.flush_batch(&batch).await {
                        store.count_dropped(batch.len() as u64);
                        tracing::warn!(error = %e, records = batch.len(),
                            "cannot record activity in Redis; records dropped");
                    }
                }
                queue.done.send_replace(taken);
                if batch.len() < BATCH {
                    break;
                }
            }
        }
    });
}

impl RedisStore {
    /// Queue records, counting those dropped to make room.
    pub(super) fn record(&self, records: impl IntoIterator<Item = Record>) {
        let dropped = self.inner.activity.push(records);
        if dropped > 0 {
            self.count_dropped(dropped);
        }
    }

    /// Wait (bounded by the store timeout) until every record queued so far has been flushed:
    /// the admin API's reads see this instance's own activity.
    pub(super) async fn flush_now(&self) {
        let queue = &self.inner.activity;
        let target = queue.state.lock().pushed;
        let mut done = queue.done.subscribe();
        queue.wake.notify_one();
        let _ = tokio::time::timeout(self.inner.timeout * 2, done.wait_for(|&d| d >= target)).await;
    }

    async fn flush_batch(&self, batch: &[Record]) -> Result<(), StoreError> {
        let key = self.inner.layout.events_key();
        let _: i64 = self
            .run(&self.inner.activity_script, "", || {
                let mut args = Vec::with_capacity(2 + 6 * batch.len());
                args.push(self.now_arg());
                args.push(int(batch.len() as u64));
                for r in batch {
                    r.push_args(&mut args);
                }
                (vec![key.clone()], args)
            })
            .await?;
        Ok(())
    }

    /// What the contract records for a `check` that answered `decision` (see "Activity" in
    /// `store/mod.rs`): the rejection count, a `limited` event, and a block it started (with its
    /// index entry).
    pub(super) fn record_check(&self, req: &CheckRequest<'_>, decision: &CheckResult) {
        let now = decision.now_ms;
        let rejecting = match decision.outcome {
            // A revoked token is an authentication refusal, not a rate rejection.
            CheckOutcome::Allowed | CheckOutcome::Revoked => return,
            CheckOutcome::Blocked { .. } => None,
            CheckOutcome::Limited { policy } => Some(policy),
        };
        let suspect = Record::new(Kind::Suspect, now, req.client);
        let Some(policy) = rejecting.and_then(|i| req.checks.get(i)) else {
            self.record([suspect]);
            return;
        };
        let limited = Record {
            policy: policy.policy.name.to_string(),
            ..Record::new(Kind::Limited, now, req.client)
        };
        let block = decision.blocked_now.and_then(|(i, ms)| {
            let p = req.checks.get(i)?.policy;
            debug_assert_eq!(p.mode, Mode::Enforce);
            Some((p.name.to_string(), ms))
        });
        match block {
            None => self.record([suspect, limited]),
            Some((name, ms)) => self.record([
                suspect,
                limited,
                Record {
                    reason: format!("policy:{name}"),
                    policy: name,
                    value: ms,
                    ..Record::new(Kind::Blocked, now, req.client)
                },
                Record {
                    value: now + ms,
                    ..Record::new(Kind::Index, now, req.client)
                },
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_and_drops_the_oldest() {
        let q = Queue::default();
        let dropped = q.push((0..QUEUE_MAX as u64 + 3).map(|i| Record::new(Kind::Suspect, i, "c")));
        assert_eq!(dropped, 3);
        let (batch, taken) = q.take();
        assert_eq!(batch.len(), BATCH);
        assert_eq!(batch[0].at, 3);
        assert_eq!(taken, 3 + BATCH as u64);
    }
}
