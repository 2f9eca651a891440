//! In-process bookkeeping of recent events and suspicious clients, exactly as the store contract
//! defines them (see the `store` module docs): the memory store, and so the in-process fallback,
//! records through this. Everything is bounded: the event list, the per-client dedup entries and
//! the suspect buckets.
//!
//! Only rejections and admin operations reach this code, never an allowed request, so two small
//! global mutexes are enough; nothing awaits while holding them.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::lru::Lru;

use super::{
    CheckOutcome, CheckRequest, CheckResult, Event, EventKind, Revoked, Suspect, EVENTS_MAX,
    EVENT_REPEAT_MS, EVENT_TTL_MS, SUSPECTS_MAX, SUSPECT_BUCKET_MS,
};

/// Dedup entries kept at most; past this, the least recently recorded one makes room (O(1); the
/// worst case is a repeated event, never a lost one).
const REPEAT_MAX: usize = 10_000;

type Map<V> = HashMap<Arc<str>, V, ahash::RandomState>;

#[derive(Debug)]
pub(crate) struct Activity {
    events: Mutex<EventLog>,
    suspects: Mutex<Suspects>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::with_limits(EVENTS_MAX, SUSPECTS_MAX)
    }
}

impl Activity {
    /// Smaller bounds than the contract's, for tests of the bounding itself.
    pub(crate) fn with_limits(events_max: usize, suspects_max: usize) -> Self {
        Activity {
            events: Mutex::new(EventLog {
                list: VecDeque::new(),
                max: events_max.max(1),
                repeat: Lru::default(),
            }),
            suspects: Mutex::new(Suspects {
                current: Bucket::new(0),
                previous: Bucket::new(0),
                max: suspects_max.max(1),
            }),
        }
    }

    /// Record what the contract asks of a `check` that answered `decision`.
    pub(crate) fn record_check(&self, req: &CheckRequest<'_>, decision: &CheckResult) {
        let now = decision.now_ms;
        let rejecting = match decision.outcome {
            // A revoked token is an authentication refusal, not a rate rejection.
            CheckOutcome::Allowed | CheckOutcome::Revoked => return,
            CheckOutcome::Blocked { .. } => None,
            CheckOutcome::Limited { policy } => Some(policy),
        };
        self.suspects.lock().count(req.client, now);
        let Some(index) = rejecting else {
            return;
        };
        let name = |i: usize| req.checks.get(i).map(|c| c.policy.name.to_string());
        let mut events = self.events.lock();
        if let Some(policy) = name(index) {
            if events.first_in_a_while(req.client, &policy, now) {
                events.push(Event {
                    at_ms: now,
                    client: req.client.to_owned(),
                    kind: EventKind::Limited,
                    policy: Some(policy),
                    reason: None,
                    ttl_ms: None,
                });
            }
        }
        if let Some((i, ms)) = decision.blocked_now {
            let policy = name(i);
            events.push(Event {
                at_ms: now,
                client: req.client.to_owned(),
                kind: EventKind::Blocked,
                reason: policy.as_ref().map(|p| format!("policy:{p}")),
                policy,
                ttl_ms: Some(ms),
            });
        }
    }

    /// An admin block of `ttl_ms` (> 0) started at `now`.
    pub(crate) fn record_block(&self, client: &str, ttl_ms: u64, reason: &str, now: u64) {
        self.events.lock().push(Event {
            at_ms: now,
            client: client.to_owned(),
            kind: EventKind::Blocked,
            policy: None,
            reason: Some(reason.to_owned()),
            ttl_ms: Some(ttl_ms),
        });
    }

    /// An admin unblock that removed an active block.
    pub(crate) fn record_unblock(&self, client: &str, now: u64) {
        self.events.lock().push(Event {
            at_ms: now,
            client: client.to_owned(),
            kind: EventKind::Unblocked,
            policy: None,
            reason: None,
            ttl_ms: None,
        });
    }

    /// An admin revocation: `client` is `jti:<id>` or `sub:<id>`; a `sub` revocation's reason
    /// says which tokens (`iat before <unix s>`).
    pub(crate) fn record_revoke(&self, revoked: &Revoked, ttl_ms: u64, now: u64) {
        self.events
            .lock()
            .push(revocation_event(revoked, ttl_ms, now));
    }

    /// An admin removal of an active revocation.
    pub(crate) fn record_unrevoke(&self, kind: &str, id: &str, now: u64) {
        self.events.lock().push(Event {
            at_ms: now,
            client: format!("{kind}:{id}"),
            kind: EventKind::Unrevoked,
            policy: None,
            reason: None,
            ttl_ms: None,
        });
    }

    /// The newest events younger than `EVENT_TTL_MS`, newest first.
    pub(crate) fn events(&self, limit: usize, now: u64) -> Vec<Event> {
        let events = self.events.lock();
        events
            .list
            .iter()
            .take_while(|e| now.saturating_sub(e.at_ms) < EVENT_TTL_MS)
            .take(limit.min(events.max))
            .cloned()
            .collect()
    }

    /// Rejections per client in the current and previous bucket of `now`, most first.
    pub(crate) fn suspicious(&self, limit: usize, now: u64) -> Vec<Suspect> {
        let b = now / SUSPECT_BUCKET_MS;
        let suspects = self.suspects.lock();
        let mut sums: HashMap<&str, u64> = HashMap::new();
        for bucket in [&suspects.current, &suspects.previous] {
            if bucket.index == b || bucket.index.checked_add(1) == Some(b) {
                for (client, &n) in &bucket.counts {
                    *sums.entry(client).or_default() += n;
                }
            }
        }
        let mut out: Vec<Suspect> = sums
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(client, rejections)| Suspect {
                client: client.to_owned(),
                rejections,
            })
            .collect();
        out.sort_by(|a, b| {
            b.rejections
                .cmp(&a.rejections)
                .then_with(|| a.client.cmp(&b.client))
        });
        out.truncate(limit);
        out
    }
}

#[derive(Debug)]
struct EventLog {
    /// Newest first.
    list: VecDeque<Event>,
    max: usize,
    /// `client|policy` -> when its last `Limited` event was recorded.
    repeat: Lru<u64>,
}

impl EventLog {
    fn push(&mut self, event: Event) {
        self.list.push_front(event);
        self.list.truncate(self.max);
    }

    /// Whether a `Limited` event for this client and policy may be recorded now (and if so,
    /// remember that it was).
    fn first_in_a_while(&mut self, client: &str, policy: &str, now: u64) -> bool {
        let key = format!("{client}|{policy}");
        let found = self.repeat.find(0, &key);
        if let Some(&at) = found.and_then(|slot| self.repeat.get(slot)) {
            if now.saturating_sub(at) < EVENT_REPEAT_MS {
                return false;
            }
        }
        if found.is_none() && self.repeat.len() >= REPEAT_MAX {
            if let Some(oldest) = self.repeat.oldest() {
                self.repeat.remove(oldest);
            }
        }
        self.repeat.insert(0, &key, now);
        true
    }
}

#[derive(Debug)]
struct Suspects {
    current: Bucket,
    previous: Bucket,
    max: usize,
}

impl Suspects {
    fn count(&mut self, client: &str, now: u64) {
        let b = now / SUSPECT_BUCKET_MS;
        let bucket = if b == self.current.index {
            &mut self.current
        } else if b > self.current.index {
            // Time moved into a new bucket: the current one becomes the previous one only when
            // it is adjacent; anything older no longer counts.
            let old = std::mem::replace(&mut self.current, Bucket::new(b));
            self.previous = if old.index + 1 == b {
                old
            } else {
                Bucket::new(b - 1)
            };
            &mut self.current
        } else if b == self.previous.index {
            // A clock step back across a bucket boundary.
            &mut self.previous
        } else {
            return;
        };
        bucket.increment(client, self.max);
    }
}

/// One aligned bucket of rejection counts. `order` mirrors `counts` sorted by (count, client) so
/// that the lowest entry is found in O(log n) when the bucket is full.
#[derive(Debug)]
struct Bucket {
    index: u64,
    counts: Map<u64>,
    order: BTreeSet<(u64, Arc<str>)>,
}

impl Bucket {
    fn new(index: u64) -> Self {
        Bucket {
            index,
            counts: Map::default(),
            order: BTreeSet::new(),
        }
    }

    fn increment(&mut self, client: &str, max: usize) {
        let (key, old) = match self.counts.get_key_value(client) {
            Some((k, &n)) => (k.clone(), n),
            None => (Arc::from(client), 0),
        };
        if old > 0 {
            self.order.remove(&(old, key.clone()));
        }
        self.counts.insert(key.clone(), old + 1);
        self.order.insert((old + 1, key));
        if self.counts.len() > max {
            if let Some((_, lowest)) = self.order.pop_first() {
                self.counts.remove(&lowest);
            }
        }
    }
}

/// The event of an admin revocation (the same in every store).
pub(crate) fn revocation_event(revoked: &Revoked, ttl_ms: u64, now: u64) -> Event {
    Event {
        at_ms: now,
        client: format!("{}:{}", revoked.kind(), revoked.id()),
        kind: EventKind::Revoked,
        policy: None,
        reason: match revoked {
            Revoked::Jti(_) => None,
            Revoked::Sub { before, .. } => Some(format!("iat before {before}")),
        },
        ttl_ms: Some(ttl_ms),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::compiled::{Algorithm, Policy};
    use crate::store::PolicyCheck;

    const T0: u64 = 1_700_006_400_000;

    fn policy(name: &str) -> Policy {
        Policy::new(name, Algorithm::FixedWindow, 1, Duration::from_secs(1))
    }

    fn decision(outcome: CheckOutcome, blocked_now: Option<(usize, u64)>, now: u64) -> CheckResult {
        CheckResult {
            outcome,
            states: Vec::new(),
            blocked_now,
            now_ms: now,
        }
    }

    fn reject(a: &Activity, client: &str, p: &Policy, now: u64) {
        let checks = [PolicyCheck::new(p, "k")];
        let req = CheckRequest::new(client, &checks, 1);
        a.record_check(
            &req,
            &decision(CheckOutcome::Limited { policy: 0 }, None, now),
        );
    }

    #[test]
    fn events_are_bounded_and_expire() {
        let a = Activity::with_limits(3, 10);
        let p = policy("p");
        for i in 0..5u64 {
            reject(&a, &format!("c{i}"), &p, T0 + i);
        }
        let clients: Vec<String> = a.events(10, T0 + 5).into_iter().map(|e| e.client).collect();
        assert_eq!(clients, ["c4", "c3", "c2"]);
        assert_eq!(a.events(1, T0 + 5).len(), 1);
        assert_eq!(a.events(10, T0 + 2 + EVENT_TTL_MS).len(), 2);
        assert!(a.events(10, T0 + 4 + EVENT_TTL_MS).is_empty());
    }

    #[test]
    fn limited_events_are_deduplicated_per_client_and_policy() {
        let a = Activity::default();
        let (p, q) = (policy("p"), policy("q"));
        reject(&a, "c1", &p, T0);
        reject(&a, "c1", &p, T0 + EVENT_REPEAT_MS - 1);
        reject(&a, "c1", &q, T0 + 1);
        reject(&a, "c2", &p, T0 + 1);
        reject(&a, "c1", &p, T0 + EVENT_REPEAT_MS);
        assert_eq!(a.events(10, T0 + EVENT_REPEAT_MS).len(), 4);
        let s = a.suspicious(10, T0 + EVENT_REPEAT_MS);
        assert_eq!(s[0].client, "c1");
        assert_eq!(s[0].rejections, 4);
    }

    #[test]
    fn suspects_use_two_aligned_buckets() {
        let a = Activity::default();
        let p = policy("p");
        let b0 = (T0 / SUSPECT_BUCKET_MS) * SUSPECT_BUCKET_MS;
        reject(&a, "old", &p, b0 + 5);
        reject(&a, "old", &p, b0 + 6);
        reject(&a, "new", &p, b0 + SUSPECT_BUCKET_MS);
        let s = a.suspicious(10, b0 + SUSPECT_BUCKET_MS);
        assert_eq!(
            s,
            [
                Suspect {
                    client: "old".into(),
                    rejections: 2
                },
                Suspect {
                    client: "new".into(),
                    rejections: 1
                }
            ]
        );
        // Two buckets later the first no longer counts.
        let s = a.suspicious(10, b0 + 2 * SUSPECT_BUCKET_MS);
        assert_eq!(s.len(), 1);
        assert!(a.suspicious(10, b0 + 3 * SUSPECT_BUCKET_MS).is_empty());
        // Skipping a bucket entirely resets both.
        reject(&a, "late", &p, b0 + 5 * SUSPECT_BUCKET_MS);
        let s = a.suspicious(10, b0 + 5 * SUSPECT_BUCKET_MS);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].client, "late");
    }

    #[test]
    fn a_full_bucket_drops_its_lowest_client() {
        let a = Activity::with_limits(10, 2);
        let p = policy("p");
        reject(&a, "b", &p, T0);
        reject(&a, "b", &p, T0);
        reject(&a, "c", &p, T0);
        reject(&a, "c", &p, T0);
        // "a" would be the third: the lowest (itself, count 1) is dropped.
        reject(&a, "a", &p, T0);
        let names: Vec<String> = a.suspicious(10, T0).into_iter().map(|s| s.client).collect();
        assert_eq!(names, ["b", "c"]);
        reject(&a, "c", &p, T0);
        assert_eq!(a.suspicious(1, T0)[0].client, "c");
    }

    #[test]
    fn a_full_dedup_map_forgets_its_oldest_entry() {
        let a = Activity::default();
        let p = policy("p");
        for i in 0..REPEAT_MAX {
            reject(&a, &format!("c{i}"), &p, T0);
        }
        // Full: a new client is still recorded, and the oldest dedup entry made room for it.
        reject(&a, "new", &p, T0);
        assert_eq!(a.events(1, T0)[0].client, "new");
        let events = a.events.lock();
        assert_eq!(events.repeat.len(), REPEAT_MAX);
        assert!(events.repeat.find(0, "c0|p").is_none());
        assert!(events.repeat.find(0, "c1|p").is_some());
    }

    #[test]
    fn blocked_rejections_count_but_record_no_event() {
        let a = Activity::default();
        let p = policy("p");
        let checks = [PolicyCheck::new(&p, "k")];
        let req = CheckRequest::new("c1", &checks, 1);
        for _ in 0..3 {
            a.record_check(
                &req,
                &decision(CheckOutcome::Blocked { ttl_ms: 5 }, None, T0),
            );
        }
        a.record_check(&req, &decision(CheckOutcome::Allowed, None, T0));
        assert!(a.events(10, T0).is_empty());
        assert_eq!(a.suspicious(10, T0)[0].rejections, 3);
        a.record_check(
            &req,
            &decision(CheckOutcome::Limited { policy: 0 }, Some((0, 9000)), T0),
        );
        let e = a.events(10, T0);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].kind, EventKind::Blocked);
        assert_eq!(e[0].reason.as_deref(), Some("policy:p"));
        assert_eq!(e[0].ttl_ms, Some(9000));
        assert_eq!(e[1].kind, EventKind::Limited);
    }
}
