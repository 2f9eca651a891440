//! Several policies on one request (check all, then charge all), and what a policy's options
//! change: shadow mode, tier overrides, count by response, counters kept or restarted when the
//! parameters change.

use crate::config::compiled::Algorithm;

use super::steps::*;
use super::{Exp, PolicySpec, Vector};

/// The vectors of this file.
pub(super) fn vectors() -> Vec<Vector> {
    vec![
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
        tier_vector(),
        count_by_response_vector(),
        many_policies_vector(),
    ]
}

/// A route of 1,600 policies: its reply holds 8,002 integers (8,005 when limited), more than
/// Lua's `unpack` returns at once (about 8,000), which the Redis script packs its reply with
/// (`lua/check.lua`, `packed`), so it is packed in slices. Each policy has a limit and a counter of its own;
/// the last one's limit of 1 rejects the second request, which charges none of them.
fn many_policies_vector() -> Vector {
    const N: usize = 1600;
    // A counter key each, as a route's policies have; leaked, as a vector's keys are static
    // (a few kilobytes per run of the vectors).
    let checks: Vec<(usize, &'static str)> = (0..N)
        .map(|i| (i, &*Box::leak(format!("k{i}").into_boxed_str())))
        .collect();
    let limit = |i: usize| if i + 1 == N { 1 } else { i as u64 + 2 };
    let first: Vec<Exp> = (0..N).map(|i| ok(limit(i) - 1, 1000)).collect();
    let mut second = first.clone();
    second[N - 1] = no(0, 1000, 1000);
    Vector {
        name: "many_policies_on_one_request",
        policies: (0..N).map(|i| fixed("many", limit(i), 1000)).collect(),
        steps: vec![
            request("c1", &checks, ALLOWED, &first),
            request("c1", &checks, limited(N - 1), &second),
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
