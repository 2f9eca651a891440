//! Blocks (by a policy's `block_for`, by the admin, escalating, their length in milliseconds) and
//! the activity requests leave (events, suspicious clients).

use std::time::Duration;

use super::steps::*;
use super::{Step, Vector};

/// The vectors of this file.
pub(super) fn vectors() -> Vec<Vector> {
    vec![
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
        escalation_vector(),
        block_rounding_vector(),
        activity_vector(),
    ]
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
