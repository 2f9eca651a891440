//! Revoked tokens: refused by `jti`, or by `sub` when issued before `before` (or undated),
//! before the block and the policies and without charging them, on a request without policies
//! too; replaced, listed, removed and expired on the store clock; recorded as events.

use std::time::Duration;

use crate::store::EventKind;

use super::steps::*;
use super::{Ev, Rev, Step, Tok, Vector};

fn token(
    client: &'static str,
    checks: &[(usize, &'static str)],
    jti: Option<&'static str>,
    sub: Option<&'static str>,
    iat: Option<u64>,
    revoked: bool,
) -> Step {
    Step::Token {
        client,
        checks: checks.to_vec(),
        token: Tok { jti, sub, iat },
        revoked,
    }
}

fn revoke(rev: Rev, ttl_ms: u64) -> Step {
    Step::Revoke {
        rev,
        ttl: Duration::from_millis(ttl_ms),
    }
}

fn revoked_ev(at: u64, client: &'static str, reason: Option<&'static str>, ttl_ms: u64) -> Ev {
    Ev {
        at,
        client,
        kind: EventKind::Revoked,
        policy: None,
        reason,
        ttl_ms: Some(ttl_ms),
    }
}

/// The vectors of this file.
pub(super) fn vectors() -> Vec<Vector> {
    const FW: &[(usize, &str)] = &[(0, "fw|c1")];
    vec![Vector {
        name: "revocations",
        policies: vec![fixed("fw", 3, 1000)],
        steps: vec![
            revoke(Rev::Jti("t1"), 5000),
            revoke(Rev::Sub("alice", 100), 3000),
            Step::Revocations(vec![(Rev::Jti("t1"), 5000), (Rev::Sub("alice", 100), 3000)]),
            // The jti alone, whatever the subject; the subject when issued before 100 s or
            // undated; neither charges the policy.
            token("c1", FW, Some("t1"), Some("bob"), Some(500), true),
            token("c1", FW, Some("t2"), Some("alice"), Some(99), true),
            token("c1", FW, Some("t2"), Some("alice"), None, true),
            token("c1", FW, Some("t2"), Some("alice"), Some(100), false),
            token("c1", FW, None, Some("bob"), None, false),
            request("c1", FW, ALLOWED, &[ok(0, 1000)]),
            // Before the block, and without policies.
            Step::Block {
                client: "c2",
                ttl: Duration::from_millis(10_000),
                reason: "manual",
            },
            token("c2", &[], Some("t1"), None, None, true),
            blocked("c2", &[], 10_000),
            token("c3", &[], Some("t1"), None, None, true),
            token("c3", &[], Some("t9"), Some("alice"), Some(200), false),
            // Replaced by a shorter one.
            revoke(Rev::Jti("t1"), 1000),
            Step::Revocations(vec![(Rev::Sub("alice", 100), 3000), (Rev::Jti("t1"), 1000)]),
            adv(999),
            token("c3", &[], Some("t1"), None, None, true),
            adv(1),
            token("c3", &[], Some("t1"), None, None, false),
            Step::Revocations(vec![(Rev::Sub("alice", 100), 2000)]),
            Step::Unrevoke {
                kind: "jti",
                id: "t1",
                existed: false,
            },
            Step::Unrevoke {
                kind: "sub",
                id: "alice",
                existed: true,
            },
            Step::Unrevoke {
                kind: "sub",
                id: "alice",
                existed: false,
            },
            Step::Revocations(vec![]),
            token("c3", &[], Some("t2"), Some("alice"), Some(1), false),
            events(
                5,
                &[
                    Ev {
                        at: 1000,
                        client: "sub:alice",
                        kind: EventKind::Unrevoked,
                        policy: None,
                        reason: None,
                        ttl_ms: None,
                    },
                    revoked_ev(0, "jti:t1", None, 1000),
                    blocked_ev(0, "c2", None, "manual", 10_000),
                    revoked_ev(0, "sub:alice", Some("iat before 100"), 3000),
                    revoked_ev(0, "jti:t1", None, 5000),
                ],
            ),
        ],
    }]
}
