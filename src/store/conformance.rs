//! Conformance vectors every store must pass, and their runner.
//!
//! A vector is a named sequence of steps against a fresh store whose clock starts at [`T0`] (a
//! day boundary, so every window in the vectors starts exactly there): move the clock, make a
//! request and compare the whole [`CheckResult`], or use the admin operations. Only the [`Store`]
//! trait is used, so the Redis store (driven by the same manual clock through its test-only `now`
//! argument) runs the very same vectors.
//!
//! ```ignore
//! rategate::store::conformance::run_all(|clock| MemoryStore::new(10_000, Arc::new(clock))).await;
//! ```

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, ManualClock};
use crate::config::compiled::{Algorithm, CountOn, Escalation, KeyPart, Mode, Policy};

use super::{
    BlockEntry, CheckOutcome, CheckRequest, CheckResult, Event, EventKind, LimitStatus,
    PolicyCheck, PolicyState, Store, Suspect,
};

/// The clock at the start of every vector: 2023-11-15T00:00:00Z, a multiple of every window used.
pub const T0: u64 = 1_700_006_400_000;

/// A policy as the vectors need it; turned into a config [`Policy`] for the store.
#[derive(Debug, Clone)]
pub struct PolicySpec {
    pub(crate) name: &'static str,
    pub(crate) algorithm: Algorithm,
    pub(crate) limit: u64,
    pub(crate) window_ms: u64,
    pub(crate) burst: u64,
    pub(crate) mode: Mode,
    pub(crate) block_for_ms: Option<u64>,
    /// Whether `burst` was set (a tier override then scales it).
    pub(crate) burst_set: bool,
    /// `(multiplier, max ms, memory ms)`.
    pub(crate) escalation: Option<(u64, u64, u64)>,
    /// Charged after the response (count by response) instead of by `check`.
    pub(crate) deferred: bool,
}

impl PolicySpec {
    pub fn new(name: &'static str, algorithm: Algorithm, limit: u64, window_ms: u64) -> Self {
        PolicySpec {
            name,
            algorithm,
            limit,
            window_ms,
            burst: limit,
            mode: Mode::Enforce,
            block_for_ms: None,
            burst_set: false,
            escalation: None,
            deferred: false,
        }
    }

    pub(crate) fn burst(mut self, burst: u64) -> Self {
        self.burst = burst;
        self.burst_set = true;
        self
    }

    pub(crate) fn escalate(mut self, multiplier: u64, max_ms: u64, memory_ms: u64) -> Self {
        self.escalation = Some((multiplier, max_ms, memory_ms));
        self
    }

    /// Count by response (the statuses do not matter to the store).
    pub(crate) fn deferred(mut self) -> Self {
        self.deferred = true;
        self
    }

    pub(crate) fn shadow(mut self) -> Self {
        self.mode = Mode::Shadow;
        self
    }

    pub(crate) fn block_for(mut self, ms: u64) -> Self {
        self.block_for_ms = Some(ms);
        self
    }

    /// What `PolicyState::limit` reports: the most that can ever be remaining (under a tier
    /// override `limit`, when given).
    pub(crate) fn capacity(&self, limit: Option<u64>) -> u64 {
        let (limit, burst) = self.to_policy(0).limits_for(limit);
        match self.algorithm {
            Algorithm::TokenBucket => burst,
            _ => limit,
        }
    }

    pub fn to_policy(&self, index: usize) -> Policy {
        Policy {
            burst: self.burst,
            burst_set: self.burst_set,
            key: vec![KeyPart::Ip],
            block_for: self.block_for_ms.map(Duration::from_millis),
            escalation: self.escalation.map(|(multiplier, max, memory)| Escalation {
                multiplier,
                max: Duration::from_millis(max),
                memory: Duration::from_millis(memory),
            }),
            mode: self.mode,
            count: if self.deferred {
                CountOn::Errors
            } else {
                CountOn::Every
            },
            index,
            ..Policy::new(
                self.name,
                self.algorithm,
                self.limit,
                Duration::from_millis(self.window_ms),
            )
        }
    }
}

fn fixed(name: &'static str, limit: u64, window_ms: u64) -> PolicySpec {
    PolicySpec::new(name, Algorithm::FixedWindow, limit, window_ms)
}

fn sliding(name: &'static str, limit: u64, window_ms: u64) -> PolicySpec {
    PolicySpec::new(name, Algorithm::SlidingWindow, limit, window_ms)
}

fn log(name: &'static str, limit: u64, window_ms: u64) -> PolicySpec {
    PolicySpec::new(name, Algorithm::SlidingLog, limit, window_ms)
}

fn bucket(name: &'static str, limit: u64, window_ms: u64, burst: u64) -> PolicySpec {
    PolicySpec::new(name, Algorithm::TokenBucket, limit, window_ms).burst(burst)
}

fn conc(name: &'static str, limit: u64, lease_ms: u64) -> PolicySpec {
    PolicySpec::new(name, Algorithm::Concurrency, limit, lease_ms)
}

/// Expected state of one policy; `limit` is taken from the policy (`PolicySpec::capacity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exp {
    pub(crate) allowed: bool,
    pub(crate) remaining: u64,
    pub(crate) reset_ms: u64,
    pub(crate) retry_after_ms: u64,
}

/// Allowed, with `remaining` left and the quota fully back in `reset_ms`.
pub(crate) fn ok(remaining: u64, reset_ms: u64) -> Exp {
    Exp {
        allowed: true,
        remaining,
        reset_ms,
        retry_after_ms: 0,
    }
}

/// Rejected by this policy.
pub(crate) fn no(remaining: u64, reset_ms: u64, retry_after_ms: u64) -> Exp {
    Exp {
        allowed: false,
        remaining,
        reset_ms,
        retry_after_ms,
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Expect {
    /// The client is blocked; nothing evaluated.
    Blocked { ttl_ms: u64 },
    Decided {
        outcome: CheckOutcome,
        states: Vec<Exp>,
        blocked_now: Option<(usize, u64)>,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum Step {
    Advance(u64),
    Request {
        client: &'static str,
        /// (index into the vector's policies, counter key)
        checks: Vec<(usize, &'static str)>,
        cost: u64,
        /// Tier override of each check's limit (missing entries: none).
        limits: Vec<Option<u64>>,
        /// The request's lease id ("" without concurrency policies).
        lease: &'static str,
        expect: Expect,
    },
    /// `charge(checks, cost)` after a response (count by response).
    Charge {
        checks: Vec<(usize, &'static str)>,
        cost: u64,
    },
    /// `renew(lease, checks)` returns `held`.
    Renew {
        lease: &'static str,
        checks: Vec<(usize, &'static str)>,
        held: u64,
    },
    Release {
        lease: &'static str,
        checks: Vec<(usize, &'static str)>,
    },
    Block {
        client: &'static str,
        ttl: Duration,
        reason: &'static str,
    },
    Unblock {
        client: &'static str,
        existed: bool,
    },
    /// Active blocks, longest first: (client, ttl_ms, reason).
    Blocks(Vec<(&'static str, u64, &'static str)>),
    Status {
        policy: usize,
        key: &'static str,
        expect: LimitStatus,
    },
    ResetLimit {
        policy: usize,
        key: &'static str,
        existed: bool,
    },
    /// `events(limit)`, newest first.
    Events {
        limit: usize,
        expect: Vec<Ev>,
    },
    /// `suspicious(limit)`: (client, rejections), most first.
    Suspicious {
        limit: usize,
        expect: Vec<(&'static str, u64)>,
    },
}

/// An expected event; `at` is relative to [`T0`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ev {
    pub(crate) at: u64,
    pub(crate) client: &'static str,
    pub(crate) kind: EventKind,
    pub(crate) policy: Option<&'static str>,
    pub(crate) reason: Option<&'static str>,
    pub(crate) ttl_ms: Option<u64>,
}

impl Ev {
    fn to_event(self) -> Event {
        Event {
            at_ms: T0 + self.at,
            client: self.client.into(),
            kind: self.kind,
            policy: self.policy.map(Into::into),
            reason: self.reason.map(Into::into),
            ttl_ms: self.ttl_ms,
        }
    }
}

fn limited_ev(at: u64, client: &'static str, policy: &'static str) -> Ev {
    Ev {
        at,
        client,
        kind: EventKind::Limited,
        policy: Some(policy),
        reason: None,
        ttl_ms: None,
    }
}

fn blocked_ev(
    at: u64,
    client: &'static str,
    policy: Option<&'static str>,
    reason: &'static str,
    ttl_ms: u64,
) -> Ev {
    Ev {
        at,
        client,
        kind: EventKind::Blocked,
        policy,
        reason: Some(reason),
        ttl_ms: Some(ttl_ms),
    }
}

fn unblocked_ev(at: u64, client: &'static str) -> Ev {
    Ev {
        at,
        client,
        kind: EventKind::Unblocked,
        policy: None,
        reason: None,
        ttl_ms: None,
    }
}

fn events(limit: usize, expect: &[Ev]) -> Step {
    Step::Events {
        limit,
        expect: expect.to_vec(),
    }
}

fn suspicious(limit: usize, expect: &[(&'static str, u64)]) -> Step {
    Step::Suspicious {
        limit,
        expect: expect.to_vec(),
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Vector {
    pub(crate) name: &'static str,
    pub(crate) policies: Vec<PolicySpec>,
    pub(crate) steps: Vec<Step>,
}

fn adv(ms: u64) -> Step {
    Step::Advance(ms)
}

/// A single-policy request (policy 0, client `c1`, key `k`) of `cost`; enforce semantics.
fn one_cost(cost: u64, exp: Exp) -> Step {
    let outcome = if exp.allowed {
        CheckOutcome::Allowed
    } else {
        CheckOutcome::Limited { policy: 0 }
    };
    Step::Request {
        client: "c1",
        checks: vec![(0, "k")],
        cost,
        limits: Vec::new(),
        lease: "",
        expect: Expect::Decided {
            outcome,
            states: vec![exp],
            blocked_now: None,
        },
    }
}

fn one(exp: Exp) -> Step {
    one_cost(1, exp)
}

fn request(
    client: &'static str,
    checks: &[(usize, &'static str)],
    outcome: CheckOutcome,
    states: &[Exp],
) -> Step {
    Step::Request {
        client,
        checks: checks.to_vec(),
        cost: 1,
        limits: Vec::new(),
        lease: "",
        expect: Expect::Decided {
            outcome,
            states: states.to_vec(),
            blocked_now: None,
        },
    }
}

fn request_blocking(
    client: &'static str,
    checks: &[(usize, &'static str)],
    policy: usize,
    states: &[Exp],
    blocked_now: (usize, u64),
) -> Step {
    Step::Request {
        client,
        checks: checks.to_vec(),
        cost: 1,
        limits: Vec::new(),
        lease: "",
        expect: Expect::Decided {
            outcome: CheckOutcome::Limited { policy },
            states: states.to_vec(),
            blocked_now: Some(blocked_now),
        },
    }
}

fn blocked(client: &'static str, checks: &[(usize, &'static str)], ttl_ms: u64) -> Step {
    Step::Request {
        client,
        checks: checks.to_vec(),
        cost: 1,
        limits: Vec::new(),
        lease: "",
        expect: Expect::Blocked { ttl_ms },
    }
}

fn status(policy: usize, key: &'static str, count: u64, limit: u64, reset_ms: u64) -> Step {
    Step::Status {
        policy,
        key,
        expect: LimitStatus {
            count,
            limit,
            remaining: limit - count,
            reset_ms,
        },
    }
}

const ALLOWED: CheckOutcome = CheckOutcome::Allowed;

fn limited(policy: usize) -> CheckOutcome {
    CheckOutcome::Limited { policy }
}

/// Every vector.
pub(crate) fn vectors() -> Vec<Vector> {
    vec![
        Vector {
            name: "fixed_window_boundaries",
            policies: vec![fixed("fw", 3, 1000)],
            steps: vec![
                one(ok(2, 1000)),
                one(ok(1, 1000)),
                one(ok(0, 1000)),
                one(no(0, 1000, 1000)),
                adv(999),
                one(no(0, 1, 1)),
                adv(1),
                one(ok(2, 1000)),
                adv(1),
                one(ok(1, 999)),
                adv(998),
                one(ok(0, 1)),
                one(no(0, 1, 1)),
                adv(1),
                one(ok(2, 1000)),
                status(0, "k", 1, 3, 1000),
                adv(5000),
                status(0, "k", 0, 3, 0),
            ],
        },
        Vector {
            name: "fixed_window_cost",
            policies: vec![fixed("fw", 5, 10_000)],
            steps: vec![
                one_cost(2, ok(3, 10_000)),
                one_cost(2, ok(1, 10_000)),
                // Does not fit; nothing charged, so a cost of 1 still fits.
                one_cost(2, no(1, 10_000, 10_000)),
                one_cost(1, ok(0, 10_000)),
                adv(10_000),
                // More than the limit can ever admit: rejected, retry a window.
                one_cost(6, no(5, 0, 10_000)),
                one_cost(5, ok(0, 10_000)),
            ],
        },
        Vector {
            name: "sliding_window_weighted",
            policies: vec![sliding("sw", 4, 1000)],
            steps: vec![
                one(ok(3, 2000)),
                one(ok(2, 2000)),
                one(ok(1, 2000)),
                one(ok(0, 2000)),
                // 4 in this window: after the roll they weigh 4*(1000-s)/1000; 1 more fits at
                // s = 250.
                one(no(0, 2000, 1250)),
                adv(999),
                one(no(0, 1001, 251)),
                adv(1),
                one(no(0, 1000, 250)),
                adv(1),
                one(no(0, 999, 249)),
                adv(249),
                one(ok(0, 1750)),
                one(no(0, 1750, 250)),
                adv(750),
                // prev = 1 at full weight.
                one(ok(2, 2000)),
                status(0, "k", 2, 4, 2000),
                adv(2000),
                one(ok(3, 2000)),
            ],
        },
        Vector {
            name: "sliding_window_prev_weight_and_cost",
            policies: vec![sliding("sw", 10, 1000)],
            steps: vec![
                adv(500),
                one(ok(9, 1500)),
                one(ok(8, 1500)),
                one(ok(7, 1500)),
                one(ok(6, 1500)),
                one(ok(5, 1500)),
                one(ok(4, 1500)),
                one(ok(3, 1500)),
                one(ok(2, 1500)),
                one(ok(1, 1500)),
                one(ok(0, 1500)),
                adv(500),
                // prev = 10 at full weight: 1 fits once 100 ms of it has slid out.
                one(no(0, 1000, 100)),
                adv(100),
                one(ok(0, 1900)),
                adv(400),
                // estimate = 10*500/1000 + 1 = 6.
                one(ok(3, 1500)),
                one_cost(4, no(3, 1500, 100)),
                one_cost(11, no(3, 1500, 1000)),
                adv(100),
                one_cost(4, ok(0, 1400)),
            ],
        },
        Vector {
            name: "sliding_log_exact",
            policies: vec![log("sl", 3, 1000)],
            steps: vec![
                one(ok(2, 1000)),
                adv(100),
                one(ok(1, 1000)),
                adv(100),
                one(ok(0, 1000)),
                adv(100),
                one(no(0, 900, 700)),
                adv(699),
                one(no(0, 201, 1)),
                adv(1),
                // The unit from T0 has aged out exactly now.
                one(ok(0, 1000)),
                one(no(0, 1000, 100)),
                adv(100),
                one_cost(2, no(1, 900, 100)),
                adv(100),
                one_cost(2, ok(0, 1000)),
                one_cost(4, no(0, 1000, 1000)),
                status(0, "k", 3, 3, 1000),
                adv(50),
                // Units at +1000 (1) and +1200 (2): a cost of 2 needs both runs to age out.
                one_cost(2, no(0, 950, 950)),
                one_cost(1, no(0, 950, 750)),
            ],
        },
        Vector {
            name: "token_bucket_burst_and_refill",
            policies: vec![bucket("tb", 2, 1000, 4)],
            steps: vec![
                // Starts full at burst; one token back every 500 ms.
                one(ok(3, 500)),
                one(ok(2, 1000)),
                one(ok(1, 1500)),
                one(ok(0, 2000)),
                one(no(0, 2000, 500)),
                adv(499),
                one(no(0, 1501, 1)),
                adv(1),
                one(ok(0, 2000)),
                adv(250),
                one(no(0, 1750, 250)),
                adv(10_000),
                one(ok(3, 500)),
                one_cost(5, no(3, 500, 1000)),
                one_cost(3, ok(0, 2000)),
                status(0, "k", 4, 4, 2000),
            ],
        },
        Vector {
            name: "token_bucket_fractional_refill",
            policies: vec![bucket("tb", 3, 1000, 3)],
            steps: vec![
                one(ok(2, 334)),
                one(ok(1, 667)),
                one(ok(0, 1000)),
                one(no(0, 1000, 334)),
                adv(333),
                one(no(0, 667, 1)),
                adv(1),
                one(ok(0, 1000)),
                adv(666),
                one(ok(1, 667)),
                one_cost(2, no(1, 667, 334)),
            ],
        },
        Vector {
            name: "check_all_then_charge_all",
            policies: vec![
                fixed("wide", 5, 1000),
                fixed("narrow", 1, 1000),
                fixed("narrow2", 1, 1000),
            ],
            steps: vec![
                request(
                    "c1",
                    &[(0, "w"), (1, "n")],
                    ALLOWED,
                    &[ok(4, 1000), ok(0, 1000)],
                ),
                // "narrow" rejects: "wide" is not charged.
                request(
                    "c1",
                    &[(0, "w"), (1, "n")],
                    limited(1),
                    &[ok(4, 1000), no(0, 1000, 1000)],
                ),
                request(
                    "c1",
                    &[(0, "w"), (1, "n")],
                    limited(1),
                    &[ok(4, 1000), no(0, 1000, 1000)],
                ),
                request("c1", &[(0, "w")], ALLOWED, &[ok(3, 1000)]),
                request(
                    "c1",
                    &[(1, "n"), (0, "w")],
                    limited(0),
                    &[no(0, 1000, 1000), ok(3, 1000)],
                ),
                request("c1", &[(2, "n2")], ALLOWED, &[ok(0, 1000)]),
                // Two reject: the first in route order is reported.
                request(
                    "c1",
                    &[(0, "w"), (2, "n2"), (1, "n")],
                    limited(1),
                    &[ok(3, 1000), no(0, 1000, 1000), no(0, 1000, 1000)],
                ),
                status(0, "w", 2, 5, 1000),
            ],
        },
        Vector {
            name: "check_all_across_algorithms",
            policies: vec![
                sliding("sw", 2, 1000),
                log("sl", 2, 1000),
                bucket("tb", 1, 1000, 2),
                fixed("fw", 1, 1000),
            ],
            steps: vec![
                request(
                    "c1",
                    &[(0, "a"), (1, "b"), (2, "c"), (3, "d")],
                    ALLOWED,
                    &[ok(1, 2000), ok(1, 1000), ok(1, 1000), ok(0, 1000)],
                ),
                request(
                    "c1",
                    &[(0, "a"), (1, "b"), (2, "c"), (3, "d")],
                    limited(3),
                    &[ok(1, 2000), ok(1, 1000), ok(1, 1000), no(0, 1000, 1000)],
                ),
                request(
                    "c1",
                    &[(0, "a"), (1, "b"), (2, "c")],
                    ALLOWED,
                    &[ok(0, 2000), ok(0, 1000), ok(0, 2000)],
                ),
            ],
        },
        Vector {
            name: "shadow_mode",
            policies: vec![
                fixed("shadow", 1, 1000).shadow(),
                fixed("enforce", 3, 1000),
                fixed("shadow_block", 1, 1000).shadow().block_for(60_000),
            ],
            steps: vec![
                request(
                    "c1",
                    &[(0, "s"), (1, "e")],
                    ALLOWED,
                    &[ok(0, 1000), ok(2, 1000)],
                ),
                // The shadow policy would reject: reported, never rejects, not charged.
                request(
                    "c1",
                    &[(0, "s"), (1, "e")],
                    ALLOWED,
                    &[no(0, 1000, 1000), ok(1, 1000)],
                ),
                request(
                    "c1",
                    &[(0, "s"), (1, "e")],
                    ALLOWED,
                    &[no(0, 1000, 1000), ok(0, 1000)],
                ),
                request(
                    "c1",
                    &[(0, "s"), (1, "e")],
                    limited(1),
                    &[no(0, 1000, 1000), no(0, 1000, 1000)],
                ),
                status(0, "s", 1, 1, 1000),
                // A shadow policy with block_for never blocks.
                request("c2", &[(2, "x")], ALLOWED, &[ok(0, 1000)]),
                request("c2", &[(2, "x")], ALLOWED, &[no(0, 1000, 1000)]),
                request("c2", &[(1, "e2")], ALLOWED, &[ok(2, 1000)]),
            ],
        },
        Vector {
            name: "block_for",
            policies: vec![
                fixed("login", 1, 1000).block_for(5000),
                fixed("other", 10, 1000),
                fixed("short", 1, 1000).block_for(1000),
                fixed("long", 1, 1000).block_for(3000),
                fixed("noblock", 1, 1000),
            ],
            steps: vec![
                request("c1", &[(0, "login|c1")], ALLOWED, &[ok(0, 1000)]),
                request_blocking("c1", &[(0, "login|c1")], 0, &[no(0, 1000, 1000)], (0, 5000)),
                // Blocked from every key and route.
                blocked("c1", &[(1, "other|c1")], 5000),
                blocked("c1", &[], 5000),
                request("c2", &[(1, "other|c2")], ALLOWED, &[ok(9, 1000)]),
                Step::Blocks(vec![("c1", 5000, "policy:login")]),
                adv(4999),
                blocked("c1", &[(1, "other|c1")], 1),
                Step::Blocks(vec![("c1", 1, "policy:login")]),
                adv(1),
                request("c1", &[(1, "other|c1")], ALLOWED, &[ok(9, 1000)]),
                request("c1", &[(0, "login|c1")], ALLOWED, &[ok(0, 1000)]),
                Step::Blocks(vec![]),
                // Several reject: the first is reported, the longest block_for applies.
                request(
                    "c3",
                    &[(4, "a"), (2, "b"), (3, "c")],
                    ALLOWED,
                    &[ok(0, 1000), ok(0, 1000), ok(0, 1000)],
                ),
                request_blocking(
                    "c3",
                    &[(4, "a"), (2, "b"), (3, "c")],
                    0,
                    &[no(0, 1000, 1000), no(0, 1000, 1000), no(0, 1000, 1000)],
                    (2, 3000),
                ),
                blocked("c3", &[(1, "other|c3")], 3000),
                Step::Blocks(vec![("c3", 3000, "policy:long")]),
            ],
        },
        Vector {
            name: "admin_block_unblock",
            policies: vec![fixed("fw", 10, 1000), fixed("minute", 10, 60_000)],
            steps: vec![
                Step::Block {
                    client: "c1",
                    ttl: Duration::from_millis(10_000),
                    reason: "manual",
                },
                Step::Block {
                    client: "c2",
                    ttl: Duration::from_millis(3000),
                    reason: "abuse",
                },
                Step::Blocks(vec![("c1", 10_000, "manual"), ("c2", 3000, "abuse")]),
                blocked("c1", &[(0, "k1")], 10_000),
                // A new block replaces the old one, shorter or not.
                Step::Block {
                    client: "c1",
                    ttl: Duration::from_millis(2000),
                    reason: "shorter",
                },
                Step::Blocks(vec![("c2", 3000, "abuse"), ("c1", 2000, "shorter")]),
                Step::Unblock {
                    client: "c1",
                    existed: true,
                },
                Step::Unblock {
                    client: "c1",
                    existed: false,
                },
                Step::Unblock {
                    client: "c9",
                    existed: false,
                },
                request("c1", &[(0, "k1")], ALLOWED, &[ok(9, 1000)]),
                adv(3000),
                Step::Blocks(vec![]),
                request("c2", &[(0, "k2")], ALLOWED, &[ok(9, 1000)]),
                // Requests while blocked charge nothing.
                Step::Block {
                    client: "c4",
                    ttl: Duration::from_millis(1000),
                    reason: "manual",
                },
                blocked("c4", &[(1, "k4")], 1000),
                blocked("c4", &[(1, "k4")], 1000),
                adv(1000),
                request("c4", &[(1, "k4")], ALLOWED, &[ok(9, 56_000)]),
            ],
        },
        Vector {
            name: "reset_limit",
            policies: vec![fixed("fw", 2, 1000), bucket("tb", 1, 1000, 2)],
            steps: vec![
                request("c1", &[(0, "a")], ALLOWED, &[ok(1, 1000)]),
                request("c1", &[(0, "a")], ALLOWED, &[ok(0, 1000)]),
                request("c1", &[(0, "a")], limited(0), &[no(0, 1000, 1000)]),
                Step::ResetLimit {
                    policy: 0,
                    key: "a",
                    existed: true,
                },
                request("c1", &[(0, "a")], ALLOWED, &[ok(1, 1000)]),
                Step::ResetLimit {
                    policy: 0,
                    key: "never",
                    existed: false,
                },
                request("c1", &[(1, "b")], ALLOWED, &[ok(1, 1000)]),
                request("c1", &[(1, "b")], ALLOWED, &[ok(0, 2000)]),
                request("c1", &[(1, "b")], limited(0), &[no(0, 2000, 1000)]),
                Step::ResetLimit {
                    policy: 1,
                    key: "b",
                    existed: true,
                },
                status(1, "b", 0, 2, 0),
                request("c1", &[(1, "b")], ALLOWED, &[ok(1, 1000)]),
            ],
        },
        activity_vector(),
        count_by_response_vector(),
        escalation_vector(),
        concurrency_vector(),
        tier_vector(),
        block_rounding_vector(),
        Vector {
            name: "params_change_restarts_counter",
            policies: vec![
                fixed("p", 2, 1000),
                fixed("p", 3, 1000),
                sliding("p", 2, 1000),
                fixed("p", 2, 1000).shadow().block_for(1000),
            ],
            steps: vec![
                request("c1", &[(0, "k")], ALLOWED, &[ok(1, 1000)]),
                // Same name, algorithm, limit and window: the counter is shared.
                request("c1", &[(3, "k")], ALLOWED, &[ok(0, 1000)]),
                request("c1", &[(0, "k")], limited(0), &[no(0, 1000, 1000)]),
                // Another limit or algorithm starts from empty.
                request("c1", &[(1, "k")], ALLOWED, &[ok(2, 1000)]),
                request("c1", &[(2, "k")], ALLOWED, &[ok(1, 2000)]),
            ],
        },
    ]
}

/// A request with the options the plain helpers lack (cost, tier limits, lease).
struct Req {
    client: &'static str,
    checks: Vec<(usize, &'static str)>,
    cost: u64,
    limits: Vec<Option<u64>>,
    lease: &'static str,
}

fn req(client: &'static str, checks: &[(usize, &'static str)]) -> Req {
    Req {
        client,
        checks: checks.to_vec(),
        cost: 1,
        limits: Vec::new(),
        lease: "",
    }
}

impl Req {
    fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    fn limits(mut self, limits: &[Option<u64>]) -> Self {
        self.limits = limits.to_vec();
        self
    }

    fn lease(mut self, lease: &'static str) -> Self {
        self.lease = lease;
        self
    }

    fn step(self, expect: Expect) -> Step {
        Step::Request {
            client: self.client,
            checks: self.checks,
            cost: self.cost,
            limits: self.limits,
            lease: self.lease,
            expect,
        }
    }

    fn expect(self, outcome: CheckOutcome, states: &[Exp]) -> Step {
        self.step(Expect::Decided {
            outcome,
            states: states.to_vec(),
            blocked_now: None,
        })
    }
}

fn charge(checks: &[(usize, &'static str)], cost: u64) -> Step {
    Step::Charge {
        checks: checks.to_vec(),
        cost,
    }
}

/// Count by response: checked like the others, never charged by `check`; `charge` adds units
/// whatever the limit (the token bucket clamps at empty).
fn count_by_response_vector() -> Vector {
    let both = &[(0, "l"), (1, "a")][..];
    Vector {
        name: "count_by_response",
        policies: vec![
            fixed("login", 3, 60_000).deferred().block_for(900_000),
            fixed("all", 100, 60_000),
            bucket("tb", 2, 1000, 2).deferred(),
            log("lg", 2, 1000).deferred(),
            sliding("sw", 2, 1000).deferred(),
        ],
        steps: vec![
            // Admitted: `all` is charged, `login` is not (and reports its uncharged state).
            request("c1", both, ALLOWED, &[ok(3, 0), ok(99, 60_000)]),
            charge(&[(0, "l")], 1),
            status(0, "l", 1, 3, 60_000),
            request("c1", both, ALLOWED, &[ok(2, 60_000), ok(98, 60_000)]),
            charge(&[(0, "l")], 2),
            // At its limit: rejects, charges nothing, and its block_for applies.
            request_blocking(
                "c1",
                both,
                0,
                &[no(0, 60_000, 60_000), ok(98, 60_000)],
                (0, 900_000),
            ),
            blocked("c1", &[(0, "l")], 900_000),
            // A charge past the limit is taken as is.
            charge(&[(0, "l")], 1),
            status(0, "l", 3, 3, 60_000),
            adv(60_000),
            request("c2", &[(0, "m")], ALLOWED, &[ok(3, 0)]),
            // t=60000: the bucket is emptied (5 tokens asked, 2 there), not overdrawn.
            charge(&[(2, "t")], 5),
            request("c2", &[(2, "t")], limited(0), &[no(0, 1000, 500)]),
            adv(500),
            request("c2", &[(2, "t")], ALLOWED, &[ok(1, 500)]),
            // t=60500: 3 units in a log of limit 2; the 2nd oldest must age out first.
            charge(&[(3, "g")], 3),
            request("c2", &[(3, "g")], limited(0), &[no(0, 1000, 1000)]),
            // Sliding window: cur 3 of 2, weight 500: wait for the roll and then some.
            charge(&[(4, "s")], 3),
            request("c2", &[(4, "s")], limited(0), &[no(0, 1500, 1167)]),
        ],
    }
}

/// Escalating blocks: 1m, 10m, then capped at 1h; an admin unblock keeps the offence; only the
/// policy whose block is applied records one; offences are forgotten `memory` after the block.
fn escalation_vector() -> Vector {
    const H: u64 = 3_600_000;
    let k = &[(0, "k")][..];
    let both = &[(0, "k3"), (1, "p3")][..];
    Vector {
        name: "escalating_blocks",
        policies: vec![
            fixed("login", 1, H)
                .block_for(60_000)
                .escalate(10, H, 86_400_000),
            fixed("plain", 1, H).block_for(120_000),
        ],
        steps: vec![
            request("c1", k, ALLOWED, &[ok(0, H)]),
            request_blocking("c1", k, 0, &[no(0, H, H)], (0, 60_000)),
            blocked("c1", k, 60_000),
            adv(60_000),
            request_blocking("c1", k, 0, &[no(0, H - 60_000, H - 60_000)], (0, 600_000)),
            Step::Unblock {
                client: "c1",
                existed: true,
            },
            request_blocking("c1", k, 0, &[no(0, H - 60_000, H - 60_000)], (0, H)),
            Step::Blocks(vec![("c1", H, "policy:login")]),
            Step::Unblock {
                client: "c1",
                existed: true,
            },
            request_blocking("c1", k, 0, &[no(0, H - 60_000, H - 60_000)], (0, H)),
            // Offences are per client.
            request("c2", &[(0, "k2")], ALLOWED, &[ok(0, H - 60_000)]),
            request_blocking(
                "c2",
                &[(0, "k2")],
                0,
                &[no(0, H - 60_000, H - 60_000)],
                (0, 60_000),
            ),
            // The longer plain block wins, so `login` records no offence for c3.
            request("c3", both, ALLOWED, &[ok(0, H - 60_000), ok(0, H - 60_000)]),
            request_blocking(
                "c3",
                both,
                0,
                &[no(0, H - 60_000, H - 60_000), no(0, H - 60_000, H - 60_000)],
                (1, 120_000),
            ),
            Step::Unblock {
                client: "c3",
                existed: true,
            },
            request_blocking(
                "c3",
                both,
                0,
                &[no(0, H - 60_000, H - 60_000), no(0, H - 60_000, H - 60_000)],
                (1, 120_000),
            ),
            // c1's last block (1h from t=60000) is remembered for 24h after it ends, i.e. until
            // t=90060000 exclusive.
            adv(89_999_999),
            request("c1", k, ALLOWED, &[ok(0, 3_540_001)]),
            Step::Unblock {
                client: "c1",
                existed: false,
            },
            adv(1),
            request_blocking("c1", k, 0, &[no(0, 3_540_000, 3_540_000)], (0, 60_000)),
        ],
    }
}

/// Concurrency: leases acquired by admitted requests only, released, renewed while live, never
/// revived once expired; cost takes one slot.
fn concurrency_vector() -> Vector {
    let k = &[(0, "k")][..];
    let mixed = &[(0, "k2"), (1, "f2")][..];
    Vector {
        name: "concurrency_leases",
        policies: vec![conc("conc", 2, 10_000), fixed("fw", 1, 100_000)],
        steps: vec![
            req("c1", k).lease("a").expect(ALLOWED, &[ok(1, 0)]),
            req("c1", k).lease("b").expect(ALLOWED, &[ok(0, 0)]),
            req("c1", k)
                .lease("c")
                .expect(limited(0), &[no(0, 0, 1000)]),
            status(0, "k", 2, 2, 0),
            Step::Release {
                lease: "a",
                checks: k.to_vec(),
            },
            req("c1", k).lease("c").expect(ALLOWED, &[ok(0, 0)]),
            adv(9_999),
            Step::Renew {
                lease: "b",
                checks: k.to_vec(),
                held: 1,
            },
            // t=10001: c (acquired at 0) has expired; b was renewed until 19999.
            adv(2),
            Step::Renew {
                lease: "c",
                checks: k.to_vec(),
                held: 0,
            },
            req("c1", k).lease("d").expect(ALLOWED, &[ok(0, 0)]),
            req("c1", k)
                .lease("e")
                .expect(limited(0), &[no(0, 0, 1000)]),
            adv(9_500),
            // The earliest lease (b) ends in 498 ms.
            req("c1", k).lease("e").expect(limited(0), &[no(0, 0, 498)]),
            status(0, "k", 2, 2, 0),
            // Rejected by another policy: no slot is taken.
            req("c2", mixed)
                .lease("m")
                .expect(ALLOWED, &[ok(1, 0), ok(0, 80_499)]),
            req("c2", mixed)
                .lease("n")
                .expect(limited(1), &[ok(1, 0), no(0, 80_499, 80_499)]),
            status(0, "k2", 1, 2, 0),
            Step::Release {
                lease: "never-held",
                checks: mixed.to_vec(),
            },
            // Whatever the cost, one request is one slot.
            req("c3", &[(0, "k3")])
                .lease("x")
                .cost(5)
                .expect(ALLOWED, &[ok(1, 0)]),
            status(0, "k3", 1, 2, 0),
        ],
    }
}

/// Tier overrides: another limit for this key (and its own counter); a written burst scales with
/// the override, a defaulted one follows it.
fn tier_vector() -> Vector {
    let four = &[Some(4)][..];
    Vector {
        name: "tier_overrides",
        policies: vec![
            fixed("tier", 2, 1000),
            bucket("tb", 2, 1000, 4),
            PolicySpec::new("tbd", Algorithm::TokenBucket, 2, 1000),
        ],
        steps: vec![
            req("c1", &[(0, "k")])
                .limits(four)
                .expect(ALLOWED, &[ok(3, 1000)]),
            req("c1", &[(0, "k")])
                .limits(four)
                .expect(ALLOWED, &[ok(2, 1000)]),
            req("c1", &[(0, "k")])
                .limits(four)
                .expect(ALLOWED, &[ok(1, 1000)]),
            req("c1", &[(0, "k")])
                .limits(four)
                .expect(ALLOWED, &[ok(0, 1000)]),
            req("c1", &[(0, "k")])
                .limits(four)
                .expect(limited(0), &[no(0, 1000, 1000)]),
            // The default tier has a counter of its own.
            request("c1", &[(0, "k")], ALLOWED, &[ok(1, 1000)]),
            // burst 4 at limit 2, override 4: burst 8.
            req("c1", &[(1, "t")])
                .limits(four)
                .cost(8)
                .expect(ALLOWED, &[ok(0, 2000)]),
            req("c1", &[(1, "t")])
                .limits(four)
                .expect(limited(0), &[no(0, 2000, 250)]),
            // Defaulted burst: follows the override (4), so 5 never fits.
            req("c1", &[(2, "d")])
                .limits(four)
                .cost(5)
                .expect(limited(0), &[no(4, 0, 1000)]),
            req("c1", &[(2, "d")])
                .limits(four)
                .cost(4)
                .expect(ALLOWED, &[ok(0, 1000)]),
        ],
    }
}

/// A block is never shorter than asked: a partial millisecond counts as a whole one, so a block
/// under a millisecond still blocks instead of reading as 0 (which removes a block).
fn block_rounding_vector() -> Vector {
    Vector {
        name: "block_length_rounds_up",
        policies: vec![fixed("fw", 10, 1000)],
        steps: vec![
            Step::Block {
                client: "c1",
                ttl: Duration::from_micros(1500),
                reason: "manual",
            },
            Step::Block {
                client: "c2",
                ttl: Duration::from_micros(300),
                reason: "manual",
            },
            Step::Blocks(vec![("c1", 2, "manual"), ("c2", 1, "manual")]),
            events(
                10,
                &[
                    blocked_ev(0, "c2", None, "manual", 1),
                    blocked_ev(0, "c1", None, "manual", 2),
                ],
            ),
            blocked("c2", &[(0, "k2")], 1),
            adv(1),
            blocked("c1", &[(0, "k1")], 1),
            request("c2", &[(0, "k2")], ALLOWED, &[ok(9, 999)]),
            adv(1),
            request("c1", &[(0, "k1")], ALLOWED, &[ok(9, 998)]),
        ],
    }
}

/// Events and suspicious clients (the rules are in the `store` module docs). Times in comments
/// are offsets from T0; T0 is a multiple of the 10-minute suspect bucket.
fn activity_vector() -> Vector {
    let q = &[(1, "q|c1")][..];
    let e1 = limited_ev(0, "c1", "q");
    let e2 = limited_ev(1000, "c1", "q");
    let e3 = limited_ev(1000, "c3", "p");
    let e4 = blocked_ev(1000, "c3", Some("p"), "policy:p", 5000);
    let e5 = blocked_ev(1001, "c4", None, "manual", 2500);
    let e6 = unblocked_ev(1001, "c4");
    let e7 = limited_ev(601_001, "c1", "q");
    Vector {
        name: "activity",
        policies: vec![
            fixed("p", 1, 10_000).block_for(5000),
            fixed("q", 1, 10_000),
            fixed("s", 1, 10_000).shadow(),
        ],
        steps: vec![
            events(10, &[]),
            suspicious(10, &[]),
            // t=0: allowed records nothing; the rejection records e1.
            request("c1", q, ALLOWED, &[ok(0, 10_000)]),
            request("c1", q, limited(0), &[no(0, 10_000, 10_000)]),
            events(10, &[e1]),
            // t=999: same client and policy within EVENT_REPEAT_MS: counted, no event.
            adv(999),
            request("c1", q, limited(0), &[no(0, 9001, 9001)]),
            // t=1000: EVENT_REPEAT_MS after e1: recorded again (e2).
            adv(1),
            request("c1", q, limited(0), &[no(0, 9000, 9000)]),
            // Shadow rejections admit the request: no event, no count.
            request("c2", &[(2, "s|c2")], ALLOWED, &[ok(0, 9000)]),
            request("c2", &[(2, "s|c2")], ALLOWED, &[no(0, 9000, 9000)]),
            // A rejection that starts a block: the limited event (e3), then the block (e4).
            request("c3", &[(0, "p|c3")], ALLOWED, &[ok(0, 9000)]),
            request_blocking("c3", &[(0, "p|c3")], 0, &[no(0, 9000, 9000)], (0, 5000)),
            // Requests of a blocked client are counted but record no event.
            blocked("c3", &[(1, "q|c3")], 5000),
            adv(1),
            blocked("c3", &[(0, "p|c3")], 4999),
            // t=1001: admin block (e5) and unblock (e6); a second unblock records nothing.
            Step::Block {
                client: "c4",
                ttl: Duration::from_millis(2500),
                reason: "manual",
            },
            Step::Unblock {
                client: "c4",
                existed: true,
            },
            Step::Unblock {
                client: "c4",
                existed: false,
            },
            events(10, &[e6, e5, e4, e3, e2, e1]),
            events(2, &[e6, e5]),
            // A tie is broken by client, ascending.
            suspicious(10, &[("c1", 3), ("c3", 3)]),
            suspicious(1, &[("c1", 3)]),
            // t=601001: the next bucket; the previous one still counts.
            adv(600_000),
            suspicious(10, &[("c1", 3), ("c3", 3)]),
            request("c1", q, ALLOWED, &[ok(0, 8999)]),
            request("c1", q, limited(0), &[no(0, 8999, 8999)]),
            suspicious(10, &[("c1", 4), ("c3", 3)]),
            // t=1201001: the first bucket no longer counts.
            adv(600_000),
            suspicious(10, &[("c1", 1)]),
            events(1, &[e7]),
            // t=3600000: e1 is exactly EVENT_TTL_MS old and no longer listed.
            adv(2_398_999),
            events(10, &[e7, e6, e5, e4, e3, e2]),
            // t=3601001: only e7 is younger than an hour.
            adv(1001),
            events(10, &[e7]),
            suspicious(10, &[]),
        ],
    }
}

/// Run every vector against a fresh store from `make`, which gets the vector's clock (at [`T0`]).
/// Panics with the vector, step and a diff on the first mismatch.
pub async fn run_all<S: Store>(make: impl Fn(ManualClock) -> S) {
    for vector in vectors() {
        let clock = ManualClock::new(T0);
        let store = make(clock.clone());
        run_vector(&vector, &store, &clock).await;
    }
}

fn mismatch(vector: &Vector, step: usize, expected: &dyn Debug, actual: &dyn Debug) -> ! {
    panic!(
        "conformance vector `{}` step {step} ({:?}):\n  expected: {expected:?}\n    actual: {actual:?}",
        vector.name, vector.steps[step],
    )
}

/// Run one vector against `store`, which must read time from `clock`.
pub(crate) async fn run_vector<S: Store>(vector: &Vector, store: &S, clock: &ManualClock) {
    let policies: Vec<Policy> = vector
        .policies
        .iter()
        .enumerate()
        .map(|(i, p)| p.to_policy(i))
        .collect();
    for (i, step) in vector.steps.iter().enumerate() {
        match step {
            Step::Advance(ms) => clock.advance_ms(*ms),
            Step::Request {
                client,
                checks,
                cost,
                limits,
                lease,
                expect,
            } => {
                let checks: Vec<PolicyCheck<'_>> = checks
                    .iter()
                    .enumerate()
                    .map(|(i, &(p, key))| {
                        PolicyCheck::new(&policies[p], key)
                            .with_limit(limits.get(i).copied().flatten())
                    })
                    .collect();
                let req = CheckRequest {
                    lease,
                    ..CheckRequest::new(client, &checks, *cost)
                };
                let actual = match store.check(&req).await {
                    Ok(d) => d,
                    Err(e) => mismatch(vector, i, expect, &e),
                };
                let expected = expected_decision(vector, step, expect, clock.now_ms());
                if actual != expected {
                    mismatch(vector, i, &expected, &actual);
                }
            }
            Step::Charge { checks, cost } => {
                let checks = plain_checks(&policies, checks);
                if let Err(e) = store.charge(&checks, *cost).await {
                    mismatch(vector, i, &"Ok(())", &e);
                }
            }
            Step::Renew {
                lease,
                checks,
                held,
            } => {
                let checks = plain_checks(&policies, checks);
                let actual = store.renew(lease, &checks).await.map_err(|e| e.to_string());
                if actual != Ok(*held) {
                    mismatch(vector, i, &Ok::<u64, String>(*held), &actual);
                }
            }
            Step::Release { lease, checks } => {
                let checks = plain_checks(&policies, checks);
                if let Err(e) = store.release(lease, &checks).await {
                    mismatch(vector, i, &"Ok(())", &e);
                }
            }
            Step::Block {
                client,
                ttl,
                reason,
            } => {
                if let Err(e) = store.block(client, *ttl, reason).await {
                    mismatch(vector, i, &"Ok(())", &e);
                }
            }
            Step::Unblock { client, existed } => {
                let actual = store.unblock(client).await.map_err(|e| e.to_string());
                if actual != Ok(*existed) {
                    mismatch(vector, i, &Ok::<bool, String>(*existed), &actual);
                }
            }
            Step::Blocks(expected) => {
                let expected: Vec<BlockEntry> = expected
                    .iter()
                    .map(|&(client, ttl_ms, reason)| BlockEntry {
                        client: client.into(),
                        ttl_ms,
                        reason: reason.into(),
                    })
                    .collect();
                let actual = store.blocks().await.map_err(|e| e.to_string());
                if actual.as_ref() != Ok(&expected) {
                    mismatch(vector, i, &expected, &actual);
                }
            }
            Step::Status {
                policy,
                key,
                expect,
            } => {
                let actual = store
                    .limit_status(&PolicyCheck::new(&policies[*policy], key))
                    .await
                    .map_err(|e| e.to_string());
                if actual.as_ref() != Ok(expect) {
                    mismatch(vector, i, expect, &actual);
                }
            }
            Step::ResetLimit {
                policy,
                key,
                existed,
            } => {
                let actual = store
                    .reset_limit(&PolicyCheck::new(&policies[*policy], key))
                    .await
                    .map_err(|e| e.to_string());
                if actual != Ok(*existed) {
                    mismatch(vector, i, &Ok::<bool, String>(*existed), &actual);
                }
            }
            Step::Events { limit, expect } => {
                let expected: Vec<Event> = expect.iter().map(|e| e.to_event()).collect();
                let actual = store.events(*limit).await.map_err(|e| e.to_string());
                if actual.as_ref() != Ok(&expected) {
                    mismatch(vector, i, &expected, &actual);
                }
            }
            Step::Suspicious { limit, expect } => {
                let expected: Vec<Suspect> = expect
                    .iter()
                    .map(|&(client, rejections)| Suspect {
                        client: client.into(),
                        rejections,
                    })
                    .collect();
                let actual = store.suspicious(*limit).await.map_err(|e| e.to_string());
                if actual.as_ref() != Ok(&expected) {
                    mismatch(vector, i, &expected, &actual);
                }
            }
        }
    }
}

/// Checks at the policies' own limits.
fn plain_checks<'a>(policies: &'a [Policy], checks: &[(usize, &'a str)]) -> Vec<PolicyCheck<'a>> {
    checks
        .iter()
        .map(|&(p, key)| PolicyCheck::new(&policies[p], key))
        .collect()
}

fn expected_decision(vector: &Vector, step: &Step, expect: &Expect, now_ms: u64) -> CheckResult {
    let Step::Request { checks, limits, .. } = step else {
        unreachable!("only requests have decisions")
    };
    match expect {
        Expect::Blocked { ttl_ms } => CheckResult {
            outcome: CheckOutcome::Blocked { ttl_ms: *ttl_ms },
            states: Vec::new(),
            blocked_now: None,
            now_ms,
        },
        Expect::Decided {
            outcome,
            states,
            blocked_now,
        } => CheckResult {
            outcome: *outcome,
            states: checks
                .iter()
                .zip(states)
                .enumerate()
                .map(|(i, (&(p, _), e))| PolicyState {
                    allowed: e.allowed,
                    limit: vector.policies[p].capacity(limits.get(i).copied().flatten()),
                    remaining: e.remaining,
                    reset_ms: e.reset_ms,
                    retry_after_ms: e.retry_after_ms,
                })
                .collect(),
            blocked_now: *blocked_now,
            now_ms,
        },
    }
}

/// Exact admission under contention: for every algorithm (concurrency included: 50 slots, no
/// release), 200 concurrent requests against one key with room for 50 admit exactly 50; and with a second policy on per-task keys listed in varying
/// order (so requests lock different key sets in different orders), still exactly 50, each
/// charged once. Run it on a multi-threaded runtime.
pub async fn run_concurrency<S, F>(make: F)
where
    S: Store + 'static,
    F: Fn(ManualClock) -> S,
{
    const TASKS: usize = 200;
    const ROOM: u64 = 50;
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::SlidingLog,
        Algorithm::TokenBucket,
        Algorithm::Concurrency,
    ] {
        let clock = ManualClock::new(T0);
        let store = Arc::new(make(clock));
        let hot = Arc::new(PolicySpec::new("hot", algorithm, ROOM, 60_000).to_policy(0));
        let side = Arc::new(fixed("side", 1000, 60_000).to_policy(1));
        for with_side in [false, true] {
            let mut tasks = Vec::with_capacity(TASKS);
            for i in 0..TASKS {
                let (store, hot, side) = (store.clone(), hot.clone(), side.clone());
                tasks.push(tokio::spawn(async move {
                    let hot_key = if with_side { "hot2" } else { "hot" };
                    let side_key = SIDE_KEYS[i % SIDE_KEYS.len()];
                    let hot_check = PolicyCheck::new(&hot, hot_key);
                    let side_check = PolicyCheck::new(&side, side_key);
                    let checks = match (with_side, i % 2) {
                        (false, _) => vec![hot_check],
                        (true, 0) => vec![hot_check, side_check],
                        (true, _) => vec![side_check, hot_check],
                    };
                    // Unique per request; only concurrency policies record it.
                    let lease = format!("lease-{with_side}-{i}");
                    let req = CheckRequest {
                        lease: &lease,
                        ..CheckRequest::new(CLIENTS[i % CLIENTS.len()], &checks, 1)
                    };
                    store.check(&req).await.map(|d| d.outcome)
                }));
            }
            let mut admitted = 0u64;
            for t in tasks {
                match t.await {
                    Ok(Ok(CheckOutcome::Allowed)) => admitted += 1,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("{algorithm:?}: store error {e}"),
                    Err(e) => panic!("{algorithm:?}: task failed {e}"),
                }
            }
            assert_eq!(
                admitted, ROOM,
                "{algorithm:?} (second policy: {with_side}): admitted {admitted} of {TASKS}, room {ROOM}"
            );
            if with_side {
                let mut charged = 0;
                for key in SIDE_KEYS {
                    match store.limit_status(&PolicyCheck::new(&side, key)).await {
                        Ok(s) => charged += s.count,
                        Err(e) => panic!("{algorithm:?}: store error {e}"),
                    }
                }
                assert_eq!(
                    charged, ROOM,
                    "{algorithm:?}: side policy charged {charged}"
                );
            }
        }
    }
}

const SIDE_KEYS: [&str; 7] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6"];
const CLIENTS: [&str; 5] = ["c0", "c1", "c2", "c3", "c4"];
