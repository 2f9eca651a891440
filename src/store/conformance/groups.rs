//! Requests whose keys have different identities: counters keyed by the client next to counters
//! keyed by something else (`|g`, the global part). A Redis Cluster checks these in several
//! groups (one per slot); the outcome must be the single-step one every store gives, so these
//! vectors pin the cross-group rules of the contract: a rejection in one group leaves the
//! counters of every other group as they were (refunded), for every algorithm, and a block
//! started by a policy not keyed by the client still blocks the client.

use std::time::Duration;

use super::steps::*;
use super::{Step, Vector};

/// The vectors of this file.
pub(super) fn vectors() -> Vec<Vector> {
    vec![refund_vector(), foreign_block_vector()]
}

/// One policy of each algorithm keyed by the client and a global one that admits one request:
/// the second request (cost 2) is rejected by the global policy, and every client counter reads
/// as before it.
fn refund_vector() -> Vector {
    let all = &[
        (0, "ipf|i:c1"),
        (1, "ips|i:c1"),
        (2, "ipl|i:c1"),
        (3, "ipt|i:c1"),
        (4, "ipc|i:c1"),
        (5, "glob|g"),
    ][..];
    Vector {
        name: "cross_group_refund",
        policies: vec![
            fixed("ipf", 5, 10_000),
            sliding("ips", 5, 10_000),
            log("ipl", 5, 10_000),
            bucket("ipt", 5, 10_000, 5),
            conc("ipc", 5, 10_000),
            fixed("glob", 2, 10_000),
        ],
        steps: vec![
            req("c1", all).cost(2).lease("a").expect(
                ALLOWED,
                &[
                    ok(3, 10_000),
                    ok(3, 20_000),
                    ok(3, 10_000),
                    ok(3, 4000),
                    ok(4, 0),
                    ok(0, 10_000),
                ],
            ),
            adv(1),
            // Rejected by `glob`: reported as the client counters were before the request.
            req("c1", all).cost(2).lease("b").expect(
                limited(5),
                &[
                    ok(3, 9999),
                    ok(3, 19_999),
                    ok(3, 9999),
                    ok(3, 3999),
                    ok(4, 0),
                    no(0, 9999, 9999),
                ],
            ),
            // Nothing of the rejected request stays charged.
            status(0, "ipf|i:c1", 2, 5, 9999),
            status(1, "ips|i:c1", 2, 5, 19_999),
            status(2, "ipl|i:c1", 2, 5, 9999),
            status(3, "ipt|i:c1", 2, 5, 3999),
            status(4, "ipc|i:c1", 1, 5, 0),
            // The client's own counters still admit exactly what is left.
            req("c1", &all[..5]).cost(3).lease("c").expect(
                ALLOWED,
                &[
                    ok(0, 9999),
                    ok(0, 19_999),
                    ok(0, 10_000),
                    ok(0, 9999),
                    ok(3, 0),
                ],
            ),
            req("c1", &all[..4]).expect(
                limited(0),
                &[
                    no(0, 9999, 9999),
                    no(0, 19_999, 11_999),
                    no(0, 10_000, 9999),
                    no(0, 9999, 1999),
                ],
            ),
        ],
    }
}

/// A block started by a policy keyed by something other than the client (here the global part)
/// blocks the client, from every key, and is listed; a route with only global policies still
/// checks the client's block.
fn foreign_block_vector() -> Vector {
    let mixed = |key: &'static str| -> Vec<(usize, &'static str)> { vec![(0, key), (1, "gb|g")] };
    Vector {
        name: "cross_group_block",
        policies: vec![
            fixed("ipf", 5, 10_000),
            fixed("gb", 1, 10_000).block_for(5000),
            fixed("other", 5, 10_000),
        ],
        steps: vec![
            request(
                "c2",
                &mixed("ipf|i:c2"),
                ALLOWED,
                &[ok(4, 10_000), ok(0, 10_000)],
            ),
            request_blocking(
                "c3",
                &mixed("ipf|i:c3"),
                1,
                &[ok(5, 0), no(0, 10_000, 10_000)],
                (1, 5000),
            ),
            status(0, "ipf|i:c3", 0, 5, 0),
            blocked("c3", &[(2, "other|g")], 5000),
            blocked("c3", &[], 5000),
            Step::Blocks(vec![("c3", 5000, "policy:gb")]),
            events(
                10,
                &[
                    blocked_ev(0, "c3", Some("gb"), "policy:gb", 5000),
                    limited_ev(0, "c3", "gb"),
                ],
            ),
            adv(5000),
            request("c3", &[(2, "other|g")], ALLOWED, &[ok(4, 5000)]),
            Step::Unblock {
                client: "c3",
                existed: false,
            },
            Step::Block {
                client: "c2",
                ttl: Duration::from_millis(1000),
                reason: "manual",
            },
            blocked("c2", &[(2, "other|g")], 1000),
        ],
    }
}
