//! Revocations held in process: at most [`REVOCATIONS_MAX`], one per `jti` and one per `sub`,
//! each until its expiry (store clock). Never evicted: a full table refuses a new revocation
//! instead of forgetting one, which could let a revoked token through.
//!
//! [`SharedRevocations`] is the table as stores hold it: the in-process store's own, shared with
//! its fallback; and, for the Redis store, a mirror of Redis's revocations (loaded whenever the
//! subscriber connects, then kept current by the revocation messages every instance publishes)
//! that the fallback store enforces while Redis fails, so `on_error = "fallback"` does not
//! readmit revoked tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use parking_lot::{Mutex, RwLock};
use prometheus::IntGauge;

use super::{RevocationEntry, Revoked, StoreError, TokenRef, REVOCATIONS_MAX};

#[derive(Debug, Default)]
pub(crate) struct RevocationTable {
    /// `jti` -> expiry (ms, store clock).
    jti: HashMap<String, u64>,
    /// `sub` -> (`before`, expiry).
    sub: HashMap<String, (u64, u64)>,
}

impl RevocationTable {
    fn len(&self) -> usize {
        self.jti.len() + self.sub.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sweep(&mut self, now: u64) {
        self.jti.retain(|_, until| *until > now);
        self.sub.retain(|_, (_, until)| *until > now);
    }

    /// Whether `token` is revoked at `now`. Two map lookups; nothing allocated.
    pub(crate) fn refuses(&self, token: &TokenRef<'_>, now: u64) -> bool {
        let by_jti = token
            .jti
            .and_then(|jti| self.jti.get(jti))
            .is_some_and(|until| *until > now);
        by_jti
            || token
                .sub
                .and_then(|sub| self.sub.get(sub))
                .is_some_and(|&(before, until)| {
                    until > now && token.iat.is_none_or(|iat| iat < before)
                })
    }

    /// Record `revoked` until `until`; a revocation of the same `jti` or `sub` is replaced.
    pub(crate) fn insert(
        &mut self,
        revoked: &Revoked,
        until: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let present = match revoked {
            Revoked::Jti(id) => self.jti.contains_key(id),
            Revoked::Sub { sub, .. } => self.sub.contains_key(sub),
        };
        if !present && self.len() >= REVOCATIONS_MAX {
            self.sweep(now);
            if self.len() >= REVOCATIONS_MAX {
                return Err(StoreError::Capacity);
            }
        }
        match revoked {
            Revoked::Jti(id) => {
                self.jti.insert(id.clone(), until);
            }
            Revoked::Sub { sub, before } => {
                self.sub.insert(sub.clone(), (*before, until));
            }
        }
        Ok(())
    }

    /// Remove the revocation of `kind` and `id`; returns whether it was active at `now`.
    pub(crate) fn remove(&mut self, kind: &str, id: &str, now: u64) -> bool {
        let until = match kind {
            "jti" => self.jti.remove(id),
            "sub" => self.sub.remove(id).map(|(_, until)| until),
            _ => None,
        };
        until.is_some_and(|until| until > now)
    }

    /// Active revocations, longest remaining first (then by kind and id).
    pub(crate) fn list(&mut self, now: u64) -> Vec<RevocationEntry> {
        self.sweep(now);
        let jti = self.jti.iter().map(|(id, until)| RevocationEntry {
            revoked: Revoked::Jti(id.clone()),
            ttl_ms: until - now,
        });
        let sub = self
            .sub
            .iter()
            .map(|(sub, (before, until))| RevocationEntry {
                revoked: Revoked::Sub {
                    sub: sub.clone(),
                    before: *before,
                },
                ttl_ms: until - now,
            });
        let mut out: Vec<RevocationEntry> = jti.chain(sub).collect();
        sort_entries(&mut out);
        out
    }
}

/// One change to a revocation table, as published to every instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// `revoked` for `ttl_ms` from when the change is applied.
    Revoke { revoked: Revoked, ttl_ms: u64 },
    /// The revocation of a `jti` or `sub` (`kind`) named `id` is removed.
    Unrevoke { kind: &'static str, id: String },
}

/// A change with its end resolved on the table's clock, kept while a reload is in flight.
#[derive(Debug)]
enum Op {
    Insert(Revoked, u64),
    Remove(&'static str, String),
}

/// Changes that arrive during a reload are kept at most this many; past it the reload's result
/// is stale and the reload runs again.
const PENDING_MAX: usize = 2 * REVOCATIONS_MAX;

/// A reload in flight: the changes applied since it started, replayed over its result.
#[derive(Debug, Default)]
struct Reload {
    pending: Vec<Op>,
    overflowed: bool,
}

/// A [`RevocationTable`] shared by the stores that enforce it (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct SharedRevocations {
    table: RwLock<RevocationTable>,
    /// Whether the table may hold a revocation: while it is empty (the usual case), a request
    /// with a token costs one atomic load instead of a shared lock.
    any: AtomicBool,
    reload: Mutex<Option<Reload>>,
    /// Whether a reload has completed (a mirror: whether it holds the store's revocations).
    loaded: AtomicBool,
    /// Where the number of revocations held is shown (`rategate_store_fallback_revocations`).
    gauge: OnceLock<IntGauge>,
}

impl SharedRevocations {
    /// A table that is the whole truth from the start (the in-process store's own), as opposed
    /// to a mirror, which knows nothing until its first reload.
    pub(crate) fn authoritative() -> Self {
        let table = SharedRevocations::default();
        table.loaded.store(true, Ordering::Release);
        table
    }

    /// Show the number of revocations held in `gauge`.
    pub(crate) fn count_in(&self, gauge: IntGauge) {
        gauge.set(self.table.read().len() as i64);
        let _ = self.gauge.set(gauge);
    }

    /// After a change to `table` (under its write lock).
    fn changed(&self, table: &RevocationTable) {
        self.any.store(!table.is_empty(), Ordering::Release);
        if let Some(gauge) = self.gauge.get() {
            gauge.set(table.len() as i64);
        }
    }

    /// Whether `token` is revoked at `now`.
    pub(crate) fn refuses(&self, token: &TokenRef<'_>, now: u64) -> bool {
        self.any.load(Ordering::Acquire) && self.table.read().refuses(token, now)
    }

    /// Whether the token named `jti` is revoked at `now` (a `sub` revocation aside).
    pub(crate) fn refuses_jti(&self, jti: &str, now: u64) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .table
                .read()
                .jti
                .get(jti)
                .is_some_and(|until| *until > now)
    }

    pub(crate) fn insert(&self, revoked: &Revoked, until: u64, now: u64) -> Result<(), StoreError> {
        let mut table = self.table.write();
        table.insert(revoked, until, now)?;
        self.changed(&table);
        Ok(())
    }

    pub(crate) fn remove(&self, kind: &str, id: &str, now: u64) -> bool {
        let mut table = self.table.write();
        let existed = table.remove(kind, id, now);
        self.changed(&table);
        existed
    }

    pub(crate) fn list(&self, now: u64) -> Vec<RevocationEntry> {
        let mut table = self.table.write();
        let list = table.list(now);
        self.changed(&table);
        list
    }

    /// Apply a change published by an instance, at `now`. A mirror holds what Redis holds, so
    /// a full table (a race between instances at the bound) is logged, not answered.
    pub(crate) fn apply(&self, change: Change, now: u64) {
        let op = match change {
            Change::Revoke { revoked, ttl_ms } => Op::Insert(revoked, now.saturating_add(ttl_ms)),
            Change::Unrevoke { kind, id } => Op::Remove(kind, id),
        };
        // Under `reload`'s lock, like `finish_reload`'s swap: a change is either in the
        // replaced table's replay or applied after the swap, never lost between the two.
        let mut reload = self.reload.lock();
        self.run(&op, now);
        if let Some(reload) = reload.as_mut() {
            if reload.pending.len() < PENDING_MAX {
                reload.pending.push(op);
            } else {
                reload.overflowed = true;
            }
        }
    }

    fn run(&self, op: &Op, now: u64) {
        match op {
            Op::Insert(revoked, until) => {
                if self.insert(revoked, *until, now).is_err() {
                    tracing::warn!(
                        kind = revoked.kind(),
                        "revocation mirror full; the fallback store does not enforce this one"
                    );
                }
            }
            Op::Remove(kind, id) => {
                self.remove(kind, id, now);
            }
        }
    }

    /// Start a reload: changes applied from now on are kept and replayed over its result.
    pub(crate) fn begin_reload(&self) {
        *self.reload.lock() = Some(Reload::default());
    }

    /// Forget a reload that failed.
    pub(crate) fn abort_reload(&self) {
        *self.reload.lock() = None;
    }

    /// Replace the table with `entries` (the store's whole listing, taken after
    /// [`SharedRevocations::begin_reload`]), then replay the changes applied meanwhile. False
    /// when too many arrived to keep (the caller reloads again).
    pub(crate) fn finish_reload(&self, entries: Vec<RevocationEntry>, now: u64) -> bool {
        let mut reload = self.reload.lock();
        let Some(done) = reload.take() else {
            // Another reload began after this one; its result will do.
            return true;
        };
        if done.overflowed {
            return false;
        }
        let mut fresh = RevocationTable::default();
        for e in entries {
            // At most REVOCATIONS_MAX entries, the store's own bound: never full here.
            let _ = fresh.insert(&e.revoked, now.saturating_add(e.ttl_ms), now);
        }
        {
            let mut table = self.table.write();
            *table = fresh;
            self.changed(&table);
        }
        // Still under `reload`'s lock: no change can slip between the swap and the replay.
        for op in &done.pending {
            self.run(op, now);
        }
        self.loaded.store(true, Ordering::Release);
        true
    }

    /// Whether the table holds the store's revocations: a mirror once a reload has completed, an
    /// authoritative table always.
    pub(crate) fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }
}

/// The listing order every store answers in.
pub(crate) fn sort_entries(entries: &mut [RevocationEntry]) {
    entries.sort_by(|a, b| {
        b.ttl_ms
            .cmp(&a.ttl_ms)
            .then_with(|| a.revoked.kind().cmp(b.revoked.kind()))
            .then_with(|| a.revoked.id().cmp(b.revoked.id()))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jti(id: &str) -> Revoked {
        Revoked::Jti(id.to_owned())
    }

    fn token(id: &str) -> TokenRef<'_> {
        TokenRef {
            jti: Some(id),
            sub: None,
            iat: None,
        }
    }

    fn entry(id: &str, ttl_ms: u64) -> RevocationEntry {
        RevocationEntry {
            revoked: jti(id),
            ttl_ms,
        }
    }

    fn revoke(id: &str, ttl_ms: u64) -> Change {
        Change::Revoke {
            revoked: jti(id),
            ttl_ms,
        }
    }

    fn unrevoke(id: &str) -> Change {
        Change::Unrevoke {
            kind: "jti",
            id: id.to_owned(),
        }
    }

    #[test]
    fn applied_changes_are_enforced_until_they_end() {
        let t = SharedRevocations::default();
        assert!(!t.refuses(&token("a"), 0));
        t.apply(revoke("a", 1_000), 10);
        assert!(t.refuses(&token("a"), 1_009));
        assert!(!t.refuses(&token("a"), 1_010));
        t.apply(revoke("b", 1_000), 10);
        t.apply(unrevoke("b"), 20);
        assert!(!t.refuses(&token("b"), 30));
    }

    #[test]
    fn a_reload_replaces_the_table_and_keeps_changes_that_arrived_meanwhile() {
        let t = SharedRevocations::default();
        // Known before: `old` (removed from the store while this instance was away) and `gone`.
        t.apply(revoke("old", 60_000), 0);
        t.apply(revoke("gone", 60_000), 0);
        assert!(!t.loaded());
        t.begin_reload();
        // During the reload: a new revocation, and the removal of one the listing still has.
        t.apply(revoke("new", 60_000), 5);
        t.apply(unrevoke("listed-then-removed"), 6);
        assert!(t.finish_reload(
            vec![entry("kept", 30_000), entry("listed-then-removed", 30_000)],
            10,
        ));
        assert!(t.loaded());
        assert!(t.refuses(&token("kept"), 20));
        assert!(t.refuses(&token("new"), 20));
        assert!(!t.refuses(&token("listed-then-removed"), 20));
        assert!(!t.refuses(&token("old"), 20));
        assert!(!t.refuses(&token("gone"), 20));
        // A listing's entry ends with its own time left.
        assert!(!t.refuses(&token("kept"), 30_010));
    }

    #[test]
    fn a_reload_that_missed_too_many_changes_is_not_used() {
        let t = SharedRevocations::default();
        t.begin_reload();
        for i in 0..=PENDING_MAX {
            let id = format!("x{}", i % 10);
            t.apply(revoke(&id, 1_000), 0);
        }
        assert!(!t.finish_reload(vec![entry("stale", 1_000)], 0));
        assert!(!t.loaded());
        assert!(!t.refuses(&token("stale"), 1));
        // What was applied stays enforced.
        assert!(t.refuses(&token("x3"), 1));
    }

    #[test]
    fn an_aborted_reload_keeps_the_table() {
        let t = SharedRevocations::default();
        t.apply(revoke("a", 1_000), 0);
        t.begin_reload();
        t.abort_reload();
        // Nothing pending any more: a late finish is someone else's reload, and changes nothing.
        assert!(t.finish_reload(Vec::new(), 1));
        assert!(t.refuses(&token("a"), 2));
    }
}
