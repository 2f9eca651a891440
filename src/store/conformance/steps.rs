//! The words the vector files are written in: policies by algorithm, expected states, steps
//! and events.

use crate::config::compiled::Algorithm;
use crate::store::{CheckOutcome, EventKind, LimitStatus};

use super::{Ev, Exp, Expect, PolicySpec, Step};

pub(super) fn fixed(name: &'static str, limit: u64, window_ms: u64) -> PolicySpec {
    PolicySpec::new(name, Algorithm::FixedWindow, limit, window_ms)
}

pub(super) fn sliding(name: &'static str, limit: u64, window_ms: u64) -> PolicySpec {
    PolicySpec::new(name, Algorithm::SlidingWindow, limit, window_ms)
}

pub(super) fn log(name: &'static str, limit: u64, window_ms: u64) -> PolicySpec {
    PolicySpec::new(name, Algorithm::SlidingLog, limit, window_ms)
}

pub(super) fn bucket(name: &'static str, limit: u64, window_ms: u64, burst: u64) -> PolicySpec {
    PolicySpec::new(name, Algorithm::TokenBucket, limit, window_ms).burst(burst)
}

pub(super) fn conc(name: &'static str, limit: u64, lease_ms: u64) -> PolicySpec {
    PolicySpec::new(name, Algorithm::Concurrency, limit, lease_ms)
}

/// Allowed, with `remaining` left and the quota fully back in `reset_ms`.
pub(super) fn ok(remaining: u64, reset_ms: u64) -> Exp {
    Exp {
        allowed: true,
        remaining,
        reset_ms,
        retry_after_ms: 0,
    }
}

/// Rejected by this policy.
pub(super) fn no(remaining: u64, reset_ms: u64, retry_after_ms: u64) -> Exp {
    Exp {
        allowed: false,
        remaining,
        reset_ms,
        retry_after_ms,
    }
}

pub(super) fn adv(ms: u64) -> Step {
    Step::Advance(ms)
}

/// A single-policy request (policy 0, client `c1`, key `k`) of `cost`; enforce semantics.
pub(super) fn one_cost(cost: u64, exp: Exp) -> Step {
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

pub(super) fn one(exp: Exp) -> Step {
    one_cost(1, exp)
}

pub(super) fn request(
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

pub(super) fn request_blocking(
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

pub(super) fn blocked(client: &'static str, checks: &[(usize, &'static str)], ttl_ms: u64) -> Step {
    Step::Request {
        client,
        checks: checks.to_vec(),
        cost: 1,
        limits: Vec::new(),
        lease: "",
        expect: Expect::Blocked { ttl_ms },
    }
}

pub(super) fn status(
    policy: usize,
    key: &'static str,
    count: u64,
    limit: u64,
    reset_ms: u64,
) -> Step {
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

pub(super) const ALLOWED: CheckOutcome = CheckOutcome::Allowed;

pub(super) fn limited(policy: usize) -> CheckOutcome {
    CheckOutcome::Limited { policy }
}

/// A request with the options the plain helpers lack (cost, tier limits, lease).
pub(super) struct Req {
    client: &'static str,
    checks: Vec<(usize, &'static str)>,
    cost: u64,
    limits: Vec<Option<u64>>,
    lease: &'static str,
}

pub(super) fn req(client: &'static str, checks: &[(usize, &'static str)]) -> Req {
    Req {
        client,
        checks: checks.to_vec(),
        cost: 1,
        limits: Vec::new(),
        lease: "",
    }
}

impl Req {
    pub(super) fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    pub(super) fn limits(mut self, limits: &[Option<u64>]) -> Self {
        self.limits = limits.to_vec();
        self
    }

    pub(super) fn lease(mut self, lease: &'static str) -> Self {
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

    pub(super) fn expect(self, outcome: CheckOutcome, states: &[Exp]) -> Step {
        self.step(Expect::Decided {
            outcome,
            states: states.to_vec(),
            blocked_now: None,
        })
    }
}

pub(super) fn charge(checks: &[(usize, &'static str)], cost: u64) -> Step {
    Step::Charge {
        checks: checks.to_vec(),
        cost,
    }
}

pub(super) fn limited_ev(at: u64, client: &'static str, policy: &'static str) -> Ev {
    Ev {
        at,
        client,
        kind: EventKind::Limited,
        policy: Some(policy),
        reason: None,
        ttl_ms: None,
    }
}

pub(super) fn blocked_ev(
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

pub(super) fn unblocked_ev(at: u64, client: &'static str) -> Ev {
    Ev {
        at,
        client,
        kind: EventKind::Unblocked,
        policy: None,
        reason: None,
        ttl_ms: None,
    }
}

pub(super) fn events(limit: usize, expect: &[Ev]) -> Step {
    Step::Events {
        limit,
        expect: expect.to_vec(),
    }
}

pub(super) fn suspicious(limit: usize, expect: &[(&'static str, u64)]) -> Step {
    Step::Suspicious {
        limit,
        expect: expect.to_vec(),
    }
}
