//! Concurrency policies: leases acquired, renewed and released (a vector), and exact admission
//! under contention ([`run_concurrency`], for a multi-threaded runtime).

use std::sync::Arc;

use crate::clock::ManualClock;
use crate::config::compiled::Algorithm;
use crate::store::{CheckOutcome, CheckRequest, PolicyCheck, Store};

use super::steps::*;
use super::{PolicySpec, Step, Vector, T0};

/// The vectors of this file.
pub(super) fn vectors() -> Vec<Vector> {
    vec![concurrency_vector()]
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

/// Requests of one call (`together`), then exact admission under contention: for every
/// algorithm (concurrency included: 50 slots, no release), 200 concurrent requests against one key with room for 50 admit exactly 50; and with a second policy on per-task keys listed in varying
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
    ] {
        together(&make(ManualClock::new(T0)), algorithm).await;
    }
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

/// Requests issued together by one task: on the Redis store all but the first ones queue behind
/// the first call and go as one call, whose requests must see the charges, and the block, of the
/// earlier ones. For every counting algorithm, 8 requests of one client with room for 3 and a
/// block on rejection: exactly 3 admitted (remaining 2, 1 and 0), one rejected (it starts the
/// block), 4 found blocked.
async fn together<S: Store>(store: &S, algorithm: Algorithm) {
    let policy = PolicySpec::new("tog", algorithm, 3, 60_000)
        .block_for(30_000)
        .to_policy(0);
    // Keyed by the client, so that in a cluster too the counter and the block share one slot.
    let checks = [PolicyCheck::new(&policy, "tog|i:t1")];
    let req = CheckRequest::new("t1", &checks, 1);
    let results = futures_util::future::join_all((0..8).map(|_| store.check(&req))).await;
    let (mut remaining, mut limited, mut blocked) = (Vec::new(), 0, 0);
    for r in results {
        match r {
            Ok(d) => match d.outcome {
                CheckOutcome::Allowed => remaining.push(d.states[0].remaining),
                CheckOutcome::Limited { .. } => {
                    assert!(d.blocked_now.is_some(), "{algorithm:?}: no block started");
                    limited += 1;
                }
                CheckOutcome::Blocked { .. } => blocked += 1,
                other => panic!("{algorithm:?}: {other:?}"),
            },
            Err(e) => panic!("{algorithm:?}: store error {e}"),
        }
    }
    remaining.sort_unstable();
    assert_eq!(
        (remaining, limited, blocked),
        (vec![0, 1, 2], 1, 4),
        "{algorithm:?}"
    );
}

const SIDE_KEYS: [&str; 7] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6"];
const CLIENTS: [&str; 5] = ["c0", "c1", "c2", "c3", "c4"];
