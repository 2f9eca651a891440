//! Conformance vectors every store must pass, and their runner.
//!
//! A vector is a named sequence of steps against a fresh store whose clock starts at [`T0`] (a
//! day boundary, so every window in the vectors starts exactly there): move the clock, make a
//! request and compare the whole [`CheckResult`], or use the admin operations. Only the [`Store`]
//! trait is used, so the Redis store (driven by the same manual clock through its test-only `now`
//! argument) runs the very same vectors.
//!
//! This file holds the types and the step interpreter; `steps.rs` the helpers vectors are
//! written with; the vectors are grouped by what they test (`algorithms.rs`, `policies.rs`,
//! `blocks.rs`, `concurrency.rs`, `groups.rs` for requests whose keys have different identities,
//! `revocations.rs`). Built only with the `test-util` feature (the integration tests
//! turn it on), so the release library carries none of it.
//!
//! ```ignore
//! rategate::store::conformance::run_all(|clock| MemoryStore::new(10_000, Arc::new(clock))).await;
//! ```

use std::fmt::Debug;
use std::time::Duration;

use crate::clock::{Clock, ManualClock};
use crate::config::compiled::{Algorithm, CountOn, Escalation, KeyPart, Mode, Policy};

use super::{
    BlockEntry, CheckOutcome, CheckRequest, CheckResult, Event, EventKind, LimitStatus,
    PolicyCheck, PolicyState, RevocationEntry, Revoked, Store, Suspect, TokenRef,
};

mod algorithms;
mod blocks;
mod concurrency;
mod groups;
mod policies;
mod revocations;
mod steps;

pub use concurrency::run_concurrency;

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

/// Expected state of one policy; `limit` is taken from the policy (`PolicySpec::capacity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exp {
    pub(crate) allowed: bool,
    pub(crate) remaining: u64,
    pub(crate) reset_ms: u64,
    pub(crate) retry_after_ms: u64,
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
    /// A request of cost 1 carrying a verified token (`jti`, `sub`, `iat` in seconds): either
    /// refused as revoked (the whole result compared), or admitted (`revoked: false`; its
    /// states are checked by the steps that follow).
    Token {
        client: &'static str,
        checks: Vec<(usize, &'static str)>,
        token: Tok,
        revoked: bool,
    },
    /// `revoke` (`Rev.before`: `None` for a jti).
    Revoke {
        rev: Rev,
        ttl: Duration,
    },
    /// `unrevoke(kind, id)` returns `existed`.
    Unrevoke {
        kind: &'static str,
        id: &'static str,
        existed: bool,
    },
    /// Active revocations, longest first: (revocation, ttl_ms).
    Revocations(Vec<(Rev, u64)>),
}

/// A token's revocable claims.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tok {
    pub(crate) jti: Option<&'static str>,
    pub(crate) sub: Option<&'static str>,
    pub(crate) iat: Option<u64>,
}

/// A revocation: `Jti(id)`, or `Sub(id, before)`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rev {
    Jti(&'static str),
    Sub(&'static str, u64),
}

impl Rev {
    fn revoked(self) -> Revoked {
        match self {
            Rev::Jti(id) => Revoked::Jti(id.into()),
            Rev::Sub(sub, before) => Revoked::Sub {
                sub: sub.into(),
                before,
            },
        }
    }
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

#[derive(Debug, Clone)]
pub(crate) struct Vector {
    pub(crate) name: &'static str,
    pub(crate) policies: Vec<PolicySpec>,
    pub(crate) steps: Vec<Step>,
}

/// Every vector.
pub(crate) fn vectors() -> Vec<Vector> {
    [
        algorithms::vectors(),
        policies::vectors(),
        blocks::vectors(),
        concurrency::vectors(),
        groups::vectors(),
        revocations::vectors(),
    ]
    .concat()
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
            Step::Token {
                client,
                checks,
                token,
                revoked,
            } => {
                let checks = plain_checks(&policies, checks);
                let req = CheckRequest {
                    token: Some(TokenRef {
                        jti: token.jti,
                        sub: token.sub,
                        iat: token.iat,
                    }),
                    ..CheckRequest::new(client, &checks, 1)
                };
                let actual = store.check(&req).await.map_err(|e| e.to_string());
                let matches = match &actual {
                    Ok(d) if *revoked => {
                        *d == CheckResult {
                            outcome: CheckOutcome::Revoked,
                            states: Vec::new(),
                            blocked_now: None,
                            now_ms: clock.now_ms(),
                        }
                    }
                    Ok(d) => d.outcome == CheckOutcome::Allowed,
                    Err(_) => false,
                };
                if !matches {
                    let expected = if *revoked { "Revoked" } else { "Allowed" };
                    mismatch(vector, i, &expected, &actual);
                }
            }
            Step::Revoke { rev, ttl } => {
                if let Err(e) = store.revoke(&rev.revoked(), *ttl).await {
                    mismatch(vector, i, &"Ok(())", &e);
                }
            }
            Step::Unrevoke { kind, id, existed } => {
                let actual = store.unrevoke(kind, id).await.map_err(|e| e.to_string());
                if actual != Ok(*existed) {
                    mismatch(vector, i, &Ok::<bool, String>(*existed), &actual);
                }
            }
            Step::Revocations(expected) => {
                let expected: Vec<RevocationEntry> = expected
                    .iter()
                    .map(|&(rev, ttl_ms)| RevocationEntry {
                        revoked: rev.revoked(),
                        ttl_ms,
                    })
                    .collect();
                let actual = store.revocations().await.map_err(|e| e.to_string());
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
