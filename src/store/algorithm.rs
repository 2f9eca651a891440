//! The five algorithms as pure integer arithmetic on millisecond timestamps, shared by the memory
//! store and mirrored line by line in the Redis Lua script.
//!
//! Every function here takes the stored state (or `None` when there is no live entry), the clock
//! (`now`, ms since the Unix epoch) and the request's `cost`, and returns an [`Evaluation`]: whether
//! this policy alone admits the request, the [`PolicyState`] to report when nothing is charged, and
//! (when admitted and `cost > 0`) the state to write, the state to report after charging and the
//! TTL after which the written entry can no longer influence a decision (an expired entry evaluates
//! exactly like a missing one).
//!
//! # Rules for the Lua port
//!
//! * Only integers. Lua numbers are doubles, exact up to 2^53; config guarantees
//!   `limit * window_ms <= 2^53` and `burst * window_ms <= 2^53`, and every product below is
//!   bounded by one of those (the bound is noted where it is not obvious).
//! * `a // b` below means floor division of non-negative integers and `ceil_div(a, b)` means
//!   `(a + b - 1) // b`. In Lua 5.1 write floor division as `q = math.floor(a / b)` followed by
//!   the correction `r = a - q * b; if r < 0 then q = q - 1 elseif r >= b then q = q + 1 end`,
//!   because the double quotient can round up to the next integer when `a` is near 2^53.
//! * `W` is `window_ms` (at least 1). Windows are aligned to the Unix epoch: the window containing
//!   `now` starts at `now - now % W`.
//! * Time never goes backwards for one counter: every algorithm first replaces `now` with
//!   `max(now, t)` where `t` is the latest time stored in its state, so a clock step back (NTP,
//!   Redis failover) can only make a decision stricter, never grant extra quota. The formulas
//!   compute durations from that effective `now`; as a last step every non-zero `reset`, `retry`
//!   and `ttl` gets `skew = effective now - caller's now` added, so all durations returned are
//!   relative to the caller's clock (skew is 0 unless the clock stepped back).
//! * `cost > capacity` (capacity = `limit`, or `burst` for the token bucket) can never be admitted:
//!   it is rejected with `retry_after = W` and nothing else special.
//! * A stored entry also records the policy's parameters; an entry written under other parameters
//!   (algorithm, limit, window or burst changed by a reload) is treated as missing.

use std::collections::VecDeque;

use crate::config::compiled::Algorithm;

use super::{PolicyCheck, PolicyState, CONCURRENCY_RETRY_MS};

/// The parameters of a policy that shape its counter. Two policies with equal `Params` (and equal
/// name) share counters across a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Params {
    pub(crate) algorithm: Algorithm,
    pub(crate) limit: u64,
    /// At least 1.
    pub(crate) window_ms: u64,
    /// Token bucket capacity; equals `limit` for the other algorithms.
    pub(crate) burst: u64,
}

impl Params {
    /// The parameters of one check: the policy's algorithm and window with the check's limit
    /// and burst (a tier override's).
    pub(crate) fn of_check(check: &PolicyCheck<'_>) -> Self {
        let policy = check.policy;
        let burst = match policy.algorithm {
            Algorithm::TokenBucket => check.burst,
            _ => check.limit,
        };
        Params {
            algorithm: policy.algorithm,
            limit: check.limit,
            // A zero window would divide by zero; config rejects it, this keeps the math total.
            window_ms: policy.window_ms().max(1),
            burst,
        }
    }

    /// The most units the policy can ever admit at once; reported as `PolicyState::limit`.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::TokenBucket => self.burst,
            _ => self.limit,
        }
    }
}

/// Fixed window: `count` units admitted in the window starting at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedWindow {
    pub(crate) start: u64,
    pub(crate) count: u64,
}

/// Sliding window (two counters): `cur` units admitted in the window starting at `start`, `prev`
/// in the window before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlidingWindow {
    pub(crate) start: u64,
    pub(crate) prev: u64,
    pub(crate) cur: u64,
}

/// Sliding log: the admission time of every admitted unit, oldest first. Units admitted in the same
/// millisecond share one `(ts, units)` run; that is only a compact encoding of the same multiset
/// (the Lua port may store one sorted-set member per unit instead).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SlidingLog {
    runs: VecDeque<(u64, u64)>,
    /// Sum of `units` over `runs`, including runs that have aged out but are not yet pruned.
    total: u64,
}

impl SlidingLog {
    fn newest(&self) -> Option<u64> {
        self.runs.back().map(|&(ts, _)| ts)
    }

    /// Units whose timestamp is in `(now - W, now]`, and the index of the first such run.
    fn live(&self, now: u64, w: u64) -> (u64, usize) {
        let mut expired = 0u64;
        let mut first = 0usize;
        for &(ts, units) in &self.runs {
            // A unit admitted at `ts` counts while `ts + W > now`.
            if ts.saturating_add(w) > now {
                break;
            }
            expired += units;
            first += 1;
        }
        (self.total - expired, first)
    }

    fn append(&mut self, now: u64, w: u64, units: u64) {
        while let Some(&(ts, n)) = self.runs.front() {
            if ts.saturating_add(w) > now {
                break;
            }
            self.total -= n;
            self.runs.pop_front();
        }
        match self.runs.back_mut() {
            Some((ts, n)) if *ts == now => *n += units,
            _ => self.runs.push_back((now, units)),
        }
        self.total += units;
    }
}

/// Token bucket: `units` available at time `ts`, where one token is `W` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    pub(crate) units: u64,
    pub(crate) ts: u64,
}

/// Concurrency: the leases of the requests in flight, `(lease id, expiry)`. A lease is live while
/// `now < expiry`. (Lua: a sorted set, member = lease id, score = expiry.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Leases {
    held: Vec<(Box<str>, u64)>,
}

impl Leases {
    /// Live leases at `now` and the earliest expiry among them.
    fn live(&self, now: u64) -> (u64, Option<u64>) {
        let mut count = 0u64;
        let mut earliest: Option<u64> = None;
        for &(_, expiry) in &self.held {
            if expiry > now {
                count += 1;
                earliest = Some(earliest.map_or(expiry, |e| e.min(expiry)));
            }
        }
        (count, earliest)
    }

    /// Drop expired leases, then record `id` until `expiry`.
    pub(crate) fn acquire(&mut self, now: u64, id: &str, expiry: u64) {
        self.held.retain(|(held, e)| *e > now && &**held != id);
        self.held.push((id.into(), expiry));
    }

    /// Move a live lease's expiry; false when `id` is not held (released or reclaimed).
    pub(crate) fn renew(&mut self, now: u64, id: &str, expiry: u64) -> bool {
        match self
            .held
            .iter_mut()
            .find(|(held, e)| &**held == id && *e > now)
        {
            Some((_, e)) => {
                *e = expiry;
                true
            }
            None => false,
        }
    }

    /// Remove `id`; false when it was not held.
    pub(crate) fn release(&mut self, id: &str) -> bool {
        let before = self.held.len();
        self.held.retain(|(held, _)| &**held != id);
        self.held.len() != before
    }

    /// Whether any lease is live at `now` (the set is then limiting, and never evicted).
    pub(crate) fn any_live(&self, now: u64) -> bool {
        self.held.iter().any(|&(_, e)| e > now)
    }

    /// The latest expiry (when the whole set can be forgotten).
    pub(crate) fn latest(&self) -> Option<u64> {
        self.held.iter().map(|&(_, e)| e).max()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// A stored counter of any algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Counter {
    Fixed(FixedWindow),
    Sliding(SlidingWindow),
    Log(SlidingLog),
    Bucket(TokenBucket),
    Leases(Leases),
}

/// What to write when a request is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// Replace the state.
    Fixed(FixedWindow),
    Sliding(SlidingWindow),
    Bucket(TokenBucket),
    /// Drop units with `ts + W <= now`, then add `units` at `now` (Lua: ZREMRANGEBYSCORE, ZADD).
    LogAppend {
        now: u64,
        window_ms: u64,
        units: u64,
    },
    /// Drop expired leases and record the request's lease until `expiry` (Lua:
    /// ZREMRANGEBYSCORE, ZADD).
    Lease {
        now: u64,
        expiry: u64,
    },
}

impl Counter {
    /// Apply a write; `slot` is the stored entry (`None` or stale ones are replaced). `lease` is
    /// the request's lease id, used by `Write::Lease` only.
    pub(crate) fn apply(slot: &mut Option<Counter>, write: Write, lease: &str) {
        match write {
            Write::Lease { now, expiry } => {
                if let Some(Counter::Leases(leases)) = slot {
                    leases.acquire(now, lease, expiry);
                } else {
                    let mut leases = Leases::default();
                    leases.acquire(now, lease, expiry);
                    *slot = Some(Counter::Leases(leases));
                }
            }
            Write::Fixed(s) => *slot = Some(Counter::Fixed(s)),
            Write::Sliding(s) => *slot = Some(Counter::Sliding(s)),
            Write::Bucket(s) => *slot = Some(Counter::Bucket(s)),
            Write::LogAppend {
                now,
                window_ms,
                units,
            } => {
                if let Some(Counter::Log(log)) = slot {
                    log.append(now, window_ms, units);
                } else {
                    let mut log = SlidingLog::default();
                    log.append(now, window_ms, units);
                    *slot = Some(Counter::Log(log));
                }
            }
        }
    }
}

/// The result of charging an admitted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Charged {
    /// The state to report after charging.
    pub(crate) state: PolicyState,
    pub(crate) write: Write,
    /// Milliseconds after which the written entry is equivalent to no entry.
    pub(crate) ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Evaluation {
    /// The state to report when nothing is charged (`allowed` says whether this policy admits).
    pub(crate) state: PolicyState,
    /// `Some` when this policy admits a request with `cost > 0`.
    pub(crate) charged: Option<Charged>,
}

impl Evaluation {
    pub(crate) fn allowed(&self) -> bool {
        self.state.allowed
    }

    /// The state to report: after charging when `charge` and something was charged.
    pub(crate) fn report(&self, charge: bool) -> PolicyState {
        match (&self.charged, charge) {
            (Some(c), true) => c.state,
            _ => self.state,
        }
    }
}

/// Evaluate `cost` units against `state` under `params` at `now`. A state of another algorithm is
/// treated as missing.
pub(crate) fn evaluate(
    params: &Params,
    state: Option<&Counter>,
    now: u64,
    cost: u64,
) -> Evaluation {
    let effective = match state {
        Some(Counter::Fixed(s)) => s.start,
        Some(Counter::Sliding(s)) => s.start,
        Some(Counter::Log(s)) => s.newest().unwrap_or(0),
        Some(Counter::Bucket(s)) => s.ts,
        // Lease expiries lie in the future by design; a clock step back only keeps them longer.
        Some(Counter::Leases(_)) | None => 0,
    };
    let mut e = evaluate_at(params, state, now, cost);
    // The state of another algorithm is ignored by `evaluate_at`, so its time must not count.
    let matches = matches!(
        (params.algorithm, state),
        (Algorithm::FixedWindow, Some(Counter::Fixed(_)))
            | (Algorithm::SlidingWindow, Some(Counter::Sliding(_)))
            | (Algorithm::SlidingLog, Some(Counter::Log(_)))
            | (Algorithm::TokenBucket, Some(Counter::Bucket(_)))
            | (Algorithm::Concurrency, Some(Counter::Leases(_)))
    );
    let skew = if matches {
        effective.saturating_sub(now)
    } else {
        0
    };
    if skew > 0 {
        shift(&mut e.state, skew);
        if let Some(c) = &mut e.charged {
            shift(&mut c.state, skew);
            c.ttl_ms += skew;
        }
    }
    e
}

/// Make durations computed at an effective `now` that is `skew` ms ahead of the caller's clock
/// relative to the caller's clock. Zero stays zero: it means "now".
fn shift(s: &mut PolicyState, skew: u64) {
    if s.reset_ms > 0 {
        s.reset_ms += skew;
    }
    if s.retry_after_ms > 0 {
        s.retry_after_ms += skew;
    }
}

fn evaluate_at(params: &Params, state: Option<&Counter>, now: u64, cost: u64) -> Evaluation {
    match params.algorithm {
        Algorithm::FixedWindow => {
            let s = match state {
                Some(Counter::Fixed(s)) => Some(s),
                _ => None,
            };
            fixed_window(params, s, now, cost)
        }
        Algorithm::SlidingWindow => {
            let s = match state {
                Some(Counter::Sliding(s)) => Some(s),
                _ => None,
            };
            sliding_window(params, s, now, cost)
        }
        Algorithm::SlidingLog => {
            let s = match state {
                Some(Counter::Log(s)) => Some(s),
                _ => None,
            };
            sliding_log(params, s, now, cost)
        }
        Algorithm::TokenBucket => {
            let s = match state {
                Some(Counter::Bucket(s)) => Some(s),
                _ => None,
            };
            token_bucket(params, s, now, cost)
        }
        Algorithm::Concurrency => {
            let s = match state {
                Some(Counter::Leases(s)) => Some(s),
                _ => None,
            };
            concurrency(params, s, now, cost)
        }
    }
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

fn allowed_state(limit: u64, remaining: u64, reset_ms: u64) -> PolicyState {
    PolicyState {
        allowed: true,
        limit,
        remaining,
        reset_ms,
        retry_after_ms: 0,
    }
}

/// Fixed window.
///
/// ```text
/// now   = max(now, state.start)
/// start = now - now % W ; end = start + W
/// count = (state and state.start == start) ? state.count : 0
/// allowed   = cost <= limit and count + cost <= limit
/// remaining = limit - count                      (after charging: limit - (count + cost))
/// reset     = count > 0 ? end - now : 0          (after charging count + cost > 0: end - now)
/// retry     = cost > limit ? W : end - now       (rejected only; 0 when allowed)
/// write     = {start, count + cost}, ttl = end - now
/// ```
pub(crate) fn fixed_window(
    p: &Params,
    st: Option<&FixedWindow>,
    now: u64,
    cost: u64,
) -> Evaluation {
    let w = p.window_ms;
    let now = st.map_or(now, |s| now.max(s.start));
    let start = now - now % w;
    let end_in = start + w - now;
    let count = match st {
        Some(s) if s.start == start => s.count,
        _ => 0,
    };
    let remaining = p.limit.saturating_sub(count);
    let reset = if count > 0 { end_in } else { 0 };
    if cost > p.limit || count.saturating_add(cost) > p.limit {
        let retry = if cost > p.limit { w } else { end_in };
        return Evaluation {
            state: PolicyState {
                allowed: false,
                limit: p.limit,
                remaining,
                reset_ms: reset,
                retry_after_ms: retry,
            },
            charged: None,
        };
    }
    let charged = (cost > 0).then(|| Charged {
        state: allowed_state(p.limit, remaining - cost, end_in),
        write: Write::Fixed(FixedWindow {
            start,
            count: count + cost,
        }),
        ttl_ms: end_in,
    });
    Evaluation {
        state: allowed_state(p.limit, remaining, reset),
        charged,
    }
}

/// Sliding window with two counters: the previous window's count is weighted by the part of it
/// still inside the sliding window. Scaled by `W` so that everything stays integer.
///
/// ```text
/// now     = max(now, state.start)
/// start   = now - now % W
/// (p, c)  = state.start == start     ? (state.prev, state.cur)
///         : state.start + W == start ? (state.cur, 0)
///         :                            (0, 0)            (also when there is no state)
/// w       = W - (now - start)                            weight of p, in 1..=W
/// est     = p * w + c * W                                estimate * W, <= limit * W
/// free    = max(0, limit * W - est)
/// allowed = cost <= limit and cost * W <= free
/// remaining = free // W                                  (after charging: (free - cost*W) // W)
/// reset   = c > 0 ? w + W : (p > 0 ? w : 0)              time until est = 0 without traffic
///                                                        (after charging c + cost > 0: w + W)
/// retry (rejected):
///   cost > limit                      -> W
///   c + cost <= limit (p decays enough in this window; here p > 0)
///                                     -> w - ((limit - c - cost) * W) // p
///   else (wait for the roll; c >= 1)  -> w + W - ((limit - cost) * W) // c
/// write   = {start, p, c + cost}, ttl = w + W
/// ```
///
/// Why `retry` is exact: at `now + t` with `t <= w` the estimate is `p * (w - t) + c * W`, which at
/// `t = w` equals the estimate just after the roll (`c` becomes the previous window with full
/// weight). Admission needs `p * (w - t) <= (limit - c - cost) * W`, so the least `t` is
/// `w - room // p`. Past the roll, at `now + w + s`, the estimate is `c * (W - s)` and admission
/// needs `c * (W - s) <= (limit - cost) * W`, so the least `s` is `W - room // c`.
pub(crate) fn sliding_window(
    p: &Params,
    st: Option<&SlidingWindow>,
    now: u64,
    cost: u64,
) -> Evaluation {
    let w_ms = p.window_ms;
    let now = st.map_or(now, |s| now.max(s.start));
    let start = now - now % w_ms;
    let (prev, cur) = match st {
        Some(s) if s.start == start => (s.prev, s.cur),
        Some(s) if s.start.saturating_add(w_ms) == start => (s.cur, 0),
        _ => (0, 0),
    };
    let weight = w_ms - (now - start);
    let scaled_limit = p.limit.saturating_mul(w_ms);
    let est = prev
        .saturating_mul(weight)
        .saturating_add(cur.saturating_mul(w_ms));
    let free = scaled_limit.saturating_sub(est);
    let remaining = free / w_ms;
    let reset = if cur > 0 {
        weight + w_ms
    } else if prev > 0 {
        weight
    } else {
        0
    };
    if cost > p.limit || cost.saturating_mul(w_ms) > free {
        let retry = if cost > p.limit {
            w_ms
        } else if cur + cost <= p.limit {
            // Rejected although c + cost fits, so p * w > room and p > 0.
            let room = (p.limit - cur - cost) * w_ms;
            weight - room / prev.max(1)
        } else {
            let room = (p.limit - cost) * w_ms;
            weight + w_ms - room / cur.max(1)
        };
        return Evaluation {
            state: PolicyState {
                allowed: false,
                limit: p.limit,
                remaining,
                reset_ms: reset,
                retry_after_ms: retry,
            },
            charged: None,
        };
    }
    let charged = (cost > 0).then(|| Charged {
        state: allowed_state(p.limit, (free - cost * w_ms) / w_ms, weight + w_ms),
        write: Write::Sliding(SlidingWindow {
            start,
            prev,
            cur: cur + cost,
        }),
        ttl_ms: weight + w_ms,
    });
    Evaluation {
        state: allowed_state(p.limit, remaining, reset),
        charged,
    }
}

/// Sliding log: exact count of units admitted in `(now - W, now]`.
///
/// ```text
/// now     = max(now, newest timestamp in the log)
/// live    = units with ts + W > now, oldest first; count = number of live units
/// allowed = cost <= limit and count + cost <= limit
/// remaining = limit - count                           (after charging: limit - count - cost)
/// reset   = count > 0 ? newest + W - now : 0          (after charging: W, newest = now)
/// retry (rejected):
///   cost > limit -> W
///   else         -> ts_k + W - now, where ts_k is the timestamp of the k-th oldest live unit,
///                   k = count + cost - limit (that many units must age out first)
/// write   = drop units with ts + W <= now, add `cost` units at now; ttl = W
/// ```
/// At most `limit` live units are ever stored per key.
pub(crate) fn sliding_log(p: &Params, st: Option<&SlidingLog>, now: u64, cost: u64) -> Evaluation {
    let w = p.window_ms;
    let now = st.and_then(SlidingLog::newest).map_or(now, |n| now.max(n));
    let (count, first_live) = st.map_or((0, 0), |s| s.live(now, w));
    let remaining = p.limit.saturating_sub(count);
    let reset = match st.and_then(SlidingLog::newest) {
        Some(newest) if count > 0 => newest + w - now,
        _ => 0,
    };
    if cost > p.limit || count.saturating_add(cost) > p.limit {
        let retry = match st {
            Some(s) if cost <= p.limit => {
                // cost <= limit, so need <= count: the k-th live unit exists.
                let need = count + cost - p.limit;
                let mut seen = 0u64;
                s.runs
                    .iter()
                    .skip(first_live)
                    .find(|&&(_, units)| {
                        seen += units;
                        seen >= need
                    })
                    .map_or(w, |&(ts, _)| ts + w - now)
            }
            _ => w,
        };
        return Evaluation {
            state: PolicyState {
                allowed: false,
                limit: p.limit,
                remaining,
                reset_ms: reset,
                retry_after_ms: retry,
            },
            charged: None,
        };
    }
    let charged = (cost > 0).then(|| Charged {
        state: allowed_state(p.limit, remaining - cost, w),
        write: Write::LogAppend {
            now,
            window_ms: w,
            units: cost,
        },
        ttl_ms: w,
    });
    Evaluation {
        state: allowed_state(p.limit, remaining, reset),
        charged,
    }
}

/// Token bucket, starting full. One token is `W` units; the bucket holds `C = burst * W` units
/// and refills `limit` units per millisecond (= `limit` tokens per window), so refill never loses
/// a fraction.
///
/// ```text
/// C       = burst * W
/// now     = max(now, state.ts)
/// units   = no state ? C
///         : (elapsed = now - state.ts; deficit = C - state.units;
///            elapsed * limit >= deficit ? C : state.units + elapsed * limit)
///           (in doubles elapsed * limit may round when > 2^53, but then it is >= deficit anyway)
/// allowed = cost <= burst and units >= cost * W
/// remaining = units // W                           (after charging: (units - cost*W) // W)
/// reset   = ceil_div(C - units, limit)             time until full (after charging: with units - cost*W)
/// retry (rejected): cost > burst ? W : ceil_div(cost * W - units, limit)
/// write   = {units - cost * W, now}, ttl = reset after charging
/// ```
/// `PolicyState::limit` is `burst`, the most a client can ever have remaining.
pub(crate) fn token_bucket(
    p: &Params,
    st: Option<&TokenBucket>,
    now: u64,
    cost: u64,
) -> Evaluation {
    let w = p.window_ms;
    // Config guarantees limit >= 1; the clamp only keeps the division total.
    let rate = p.limit.max(1);
    let cap = p.burst.saturating_mul(w);
    let (now, units) = match st {
        None => (now, cap),
        Some(s) => {
            let now = now.max(s.ts);
            let have = s.units.min(cap);
            let elapsed = now - s.ts;
            let refill = elapsed.saturating_mul(rate);
            let units = if refill >= cap - have {
                cap
            } else {
                have + refill
            };
            (now, units)
        }
    };
    let remaining = units / w;
    let reset = ceil_div(cap - units, rate);
    if cost > p.burst || units < cost * w {
        let retry = if cost > p.burst {
            w
        } else {
            ceil_div(cost * w - units, rate)
        };
        return Evaluation {
            state: PolicyState {
                allowed: false,
                limit: p.burst,
                remaining,
                reset_ms: reset,
                retry_after_ms: retry,
            },
            charged: None,
        };
    }
    let charged = (cost > 0).then(|| {
        let left = units - cost * w;
        let ttl = ceil_div(cap - left, rate);
        Charged {
            state: allowed_state(p.burst, left / w, ttl),
            write: Write::Bucket(TokenBucket {
                units: left,
                ts: now,
            }),
            ttl_ms: ttl,
        }
    });
    Evaluation {
        state: allowed_state(p.burst, remaining, reset),
        charged,
    }
}

/// The block a policy with `block_for` starts when the client has `prev` remembered offences:
/// `block_for * multiplier^prev`, capped at `max` (multiplied step by step, so nothing overflows;
/// Lua: the same loop). Without escalation, `block_for`.
pub(crate) fn escalated_block(block_for_ms: u64, escalation: Option<(u64, u64)>, prev: u64) -> u64 {
    let Some((multiplier, max_ms)) = escalation else {
        return block_for_ms;
    };
    let mut d = block_for_ms;
    let mut i = 0;
    while i < prev && d < max_ms {
        d = d.saturating_mul(multiplier).min(max_ms);
        i += 1;
    }
    d
}

/// Concurrency: at most `limit` requests in flight. `W` is the lease duration; `cost` only says
/// whether to acquire (`cost > 0`), a request always takes one slot.
///
/// ```text
/// live    = leases with expiry > now ; earliest = least such expiry
/// allowed = live + 1 <= limit
/// remaining = limit - live                        (after acquiring: limit - live - 1)
/// reset   = 0                                     (nothing to wait for: a slot frees on release)
/// retry (rejected) = min(CONCURRENCY_RETRY_MS, earliest - now)
/// write   = drop expired leases, add lease -> now + W; ttl = W
/// ```
pub(crate) fn concurrency(p: &Params, st: Option<&Leases>, now: u64, cost: u64) -> Evaluation {
    let w = p.window_ms;
    let (live, earliest) = st.map_or((0, None), |s| s.live(now));
    let remaining = p.limit.saturating_sub(live);
    if live.saturating_add(1) > p.limit {
        let retry = earliest.map_or(CONCURRENCY_RETRY_MS, |e| {
            (e - now).min(CONCURRENCY_RETRY_MS)
        });
        return Evaluation {
            state: PolicyState {
                allowed: false,
                limit: p.limit,
                remaining,
                reset_ms: 0,
                retry_after_ms: retry,
            },
            charged: None,
        };
    }
    let charged = (cost > 0).then(|| Charged {
        state: allowed_state(p.limit, remaining - 1, 0),
        write: Write::Lease {
            now,
            expiry: now + w,
        },
        ttl_ms: w,
    });
    Evaluation {
        state: allowed_state(p.limit, remaining, 0),
        charged,
    }
}

/// Count by response: the write that adds `cost` units to `state` whatever the limit, and the
/// entry's TTL after it. `None` when there is nothing to write (`cost == 0`, concurrency).
///
/// ```text
/// now   = max(now, the state's latest time), skew = now - caller's now (as in `evaluate`)
/// fixed:   write {start, count + cost},          ttl = end - now + skew
/// sliding: write {start, prev, cur + cost},      ttl = weight + W + skew
/// log:     add cost units at now,                ttl = W + skew
/// bucket:  left = max(0, units - cost * W),
///          write {left, now},                    ttl = ceil_div(C - left, limit) + skew
/// ```
/// where `start`, `count`, `prev`, `cur`, `weight` and `units` are computed exactly as the
/// evaluation of the same algorithm computes them.
pub(crate) fn charge(
    p: &Params,
    state: Option<&Counter>,
    now0: u64,
    cost: u64,
) -> Option<(Write, u64)> {
    if cost == 0 {
        return None;
    }
    let w = p.window_ms;
    match (p.algorithm, state) {
        (Algorithm::FixedWindow, st) => {
            let st = match st {
                Some(Counter::Fixed(s)) => Some(s),
                _ => None,
            };
            let now = st.map_or(now0, |s| now0.max(s.start));
            let start = now - now % w;
            let count = match st {
                Some(s) if s.start == start => s.count,
                _ => 0,
            };
            let write = Write::Fixed(FixedWindow {
                start,
                count: count.saturating_add(cost),
            });
            Some((write, start + w - now + (now - now0)))
        }
        (Algorithm::SlidingWindow, st) => {
            let st = match st {
                Some(Counter::Sliding(s)) => Some(s),
                _ => None,
            };
            let now = st.map_or(now0, |s| now0.max(s.start));
            let start = now - now % w;
            let (prev, cur) = match st {
                Some(s) if s.start == start => (s.prev, s.cur),
                Some(s) if s.start.saturating_add(w) == start => (s.cur, 0),
                _ => (0, 0),
            };
            let weight = w - (now - start);
            let write = Write::Sliding(SlidingWindow {
                start,
                prev,
                cur: cur.saturating_add(cost),
            });
            Some((write, weight + w + (now - now0)))
        }
        (Algorithm::SlidingLog, st) => {
            let newest = match st {
                Some(Counter::Log(s)) => s.newest(),
                _ => None,
            };
            let now = newest.map_or(now0, |n| now0.max(n));
            let write = Write::LogAppend {
                now,
                window_ms: w,
                units: cost,
            };
            Some((write, w + (now - now0)))
        }
        (Algorithm::TokenBucket, st) => {
            let rate = p.limit.max(1);
            let cap = p.burst.saturating_mul(w);
            let (now, units) = match st {
                Some(Counter::Bucket(s)) => {
                    let now = now0.max(s.ts);
                    let have = s.units.min(cap);
                    let refill = (now - s.ts).saturating_mul(rate);
                    let units = if refill >= cap - have {
                        cap
                    } else {
                        have + refill
                    };
                    (now, units)
                }
                _ => (now0, cap),
            };
            let left = units.saturating_sub(cost.saturating_mul(w));
            let write = Write::Bucket(TokenBucket {
                units: left,
                ts: now,
            });
            Some((write, ceil_div(cap - left, rate).max(1) + (now - now0)))
        }
        (Algorithm::Concurrency, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(algorithm: Algorithm, limit: u64, window_ms: u64, burst: u64) -> Params {
        Params {
            algorithm,
            limit,
            window_ms,
            burst,
        }
    }

    /// Run `cost` at `now` and apply the write when admitted.
    fn step(p: &Params, slot: &mut Option<Counter>, now: u64, cost: u64) -> PolicyState {
        let e = evaluate(p, slot.as_ref(), now, cost);
        match e.charged {
            Some(c) => {
                Counter::apply(slot, c.write, "");
                c.state
            }
            None => e.state,
        }
    }

    /// Brute force: find the least t at which `cost` would be admitted with no other traffic.
    fn brute_retry(p: &Params, slot: &Option<Counter>, now: u64, cost: u64) -> u64 {
        (0..=3 * p.window_ms + 1)
            .find(|t| evaluate(p, slot.as_ref(), now + t, cost).allowed())
            .unwrap_or(u64::MAX)
    }

    /// Brute force: the least t at which remaining equals capacity.
    fn brute_reset(p: &Params, slot: &Option<Counter>, now: u64) -> u64 {
        (0..=3 * p.window_ms + 1)
            .find(|t| evaluate(p, slot.as_ref(), now + t, 0).state.remaining == p.capacity())
            .unwrap_or(u64::MAX)
    }

    /// retry_after and reset agree with a brute-force search for every algorithm, over a
    /// deterministic pseudo-random traffic pattern.
    #[test]
    fn retry_and_reset_match_brute_force() {
        for algorithm in [
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
            Algorithm::SlidingLog,
            Algorithm::TokenBucket,
        ] {
            for (limit, window, burst) in [(3u64, 100u64, 3u64), (7, 37, 4), (5, 10, 9)] {
                let p = params(algorithm, limit, window, burst);
                let mut slot = None;
                let mut now = 1_000_000u64;
                let mut x = 12345u64;
                let (mut admitted, mut rejected) = (0, 0);
                for _ in 0..400 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    now += (x >> 33) % (window / 3 + 1);
                    let cost = 1 + (x >> 20) % 2;
                    let before = slot.clone();
                    let s = step(&p, &mut slot, now, cost);
                    // A clock stepped back by up to a third of a window sees no more quota
                    // and durations that still hold from its point of view.
                    let back = now - (x >> 40) % (window / 3 + 1);
                    let e = evaluate(&p, before.as_ref(), back, cost);
                    if !e.allowed() {
                        assert_eq!(
                            e.state.retry_after_ms,
                            brute_retry(&p, &before, back, cost),
                            "{p:?} stepped-back retry@{back}"
                        );
                    }
                    assert_eq!(e.state.reset_ms, brute_reset(&p, &before, back), "{p:?}");
                    if s.allowed {
                        admitted += 1;
                        assert_eq!(s.reset_ms, brute_reset(&p, &slot, now), "{p:?} reset@{now}");
                    } else {
                        rejected += 1;
                        assert_eq!(
                            s.retry_after_ms,
                            brute_retry(&p, &before, now, cost),
                            "{p:?} retry@{now} cost {cost}"
                        );
                        assert_eq!(
                            s.reset_ms,
                            brute_reset(&p, &before, now),
                            "{p:?} reset@{now}"
                        );
                    }
                }
                assert!(
                    admitted > 50 && rejected > 50,
                    "{p:?}: {admitted}/{rejected}"
                );
            }
        }
    }

    #[test]
    fn fixed_window_boundary() {
        let p = params(Algorithm::FixedWindow, 2, 1000, 2);
        let mut slot = None;
        assert_eq!(step(&p, &mut slot, 5000, 1).remaining, 1);
        assert_eq!(step(&p, &mut slot, 5999, 1).remaining, 0);
        let r = step(&p, &mut slot, 5999, 1);
        assert!(!r.allowed);
        assert_eq!(r.retry_after_ms, 1);
        assert!(step(&p, &mut slot, 6000, 1).allowed);
    }

    #[test]
    fn cost_over_capacity_is_never_admitted() {
        for algorithm in [
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
            Algorithm::SlidingLog,
            Algorithm::TokenBucket,
        ] {
            let p = params(algorithm, 3, 500, 3);
            let e = evaluate(&p, None, 10_000, 4);
            assert!(!e.allowed(), "{algorithm:?}");
            assert_eq!(e.state.retry_after_ms, 500);
            assert_eq!(e.state.remaining, 3);
        }
    }

    #[test]
    fn clock_step_back_never_grants_quota() {
        let p = params(Algorithm::FixedWindow, 1, 1000, 1);
        let mut slot = None;
        assert!(step(&p, &mut slot, 10_500, 1).allowed);
        // The clock jumps back into the previous window: still the same (full) window.
        assert!(!step(&p, &mut slot, 9_900, 1).allowed);
        let p = params(Algorithm::TokenBucket, 1, 1000, 1);
        let mut slot = None;
        assert!(step(&p, &mut slot, 10_500, 1).allowed);
        assert!(!step(&p, &mut slot, 9_000, 1).allowed);
    }

    #[test]
    fn token_bucket_refill_is_exact() {
        // 3 tokens per 1000 ms: one token every 333.33 ms, i.e. 1000 units at 3 units/ms.
        let p = params(Algorithm::TokenBucket, 3, 1000, 3);
        let mut slot = None;
        for _ in 0..3 {
            assert!(step(&p, &mut slot, 0, 1).allowed);
        }
        let r = step(&p, &mut slot, 0, 1);
        assert_eq!(r.retry_after_ms, 334);
        assert!(!step(&p, &mut slot, 333, 1).allowed);
        assert!(step(&p, &mut slot, 334, 1).allowed);
    }
}
