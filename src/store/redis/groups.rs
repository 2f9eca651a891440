//! A request's checks grouped by the cluster slot of their keys, and the cross-group protocol
//! (the exact rules are in the store contract, `store/mod.rs`):
//!
//! - Standalone and Sentinel: one group, always (one `EVALSHA`, as before sharding; concurrent
//!   requests' groups may share one, see `batch`).
//! - Cluster: one group per slot; the group holding the client's slot also checks the block
//!   entry, and when no policy is keyed by the client the block check is a group of its own. All
//!   groups are in flight at once, each bounded by the store timeout.
//! - Each group checks and charges atomically. Admitted when every group admits and the client is
//!   not blocked; otherwise every group that charged is refunded (one `settle.lua` call each,
//!   awaited before the answer), and a block started by a rejection is applied to the client's
//!   slot by one follow-up call (`penalize`, the same Lua that a single group runs inline).

use fred::types::Value;
use futures_util::future::join_all;
use smallvec::{smallvec, SmallVec};

use crate::config::compiled::{Algorithm, Mode};
use crate::store::{CheckOutcome, CheckRequest, CheckResult, PolicyCheck, PolicyState, StoreError};

use super::args::{int, push_policy, shape};
use super::batch::Part;
use super::{to_u64, Call, RedisStore};

/// Checks (indices into the request's) whose keys share one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    slot: u16,
    /// Whether this group checks the client's block entry.
    block: bool,
    pub(super) checks: SmallVec<[usize; 4]>,
    /// The revocation entries (indices into the plan's) this group reads.
    revs: SmallVec<[usize; 2]>,
}

pub(super) type Groups = SmallVec<[Group; 2]>;

/// Group `keys` (a request's counter keys, in route order) by slot; `block_key` is the client's
/// block entry (none for an anonymous status read), `revs` the token's revocation entries, each
/// read by the group of its slot (a group of its own when no other key is there). Not
/// clustered: one group with everything.
pub(super) fn plan(
    clustered: bool,
    block_key: Option<&str>,
    keys: &[String],
    revs: &[String],
) -> Groups {
    if !clustered {
        return smallvec![Group {
            slot: 0,
            block: block_key.is_some(),
            checks: (0..keys.len()).collect(),
            revs: (0..revs.len()).collect(),
        }];
    }
    let slot = |k: &str| fred::util::redis_keyslot(k.as_bytes());
    let mut groups: Groups = SmallVec::new();
    for (i, key) in keys.iter().enumerate() {
        let s = slot(key);
        match groups.iter_mut().find(|g| g.slot == s) {
            Some(g) => g.checks.push(i),
            None => groups.push(Group {
                slot: s,
                block: false,
                checks: smallvec![i],
                revs: SmallVec::new(),
            }),
        }
    }
    match block_key.map(slot) {
        Some(s) => match groups.iter_mut().find(|g| g.slot == s) {
            Some(g) => g.block = true,
            None => groups.push(Group {
                slot: s,
                block: true,
                checks: SmallVec::new(),
                revs: SmallVec::new(),
            }),
        },
        None if groups.is_empty() && revs.is_empty() => groups.push(Group {
            slot: 0,
            block: false,
            checks: SmallVec::new(),
            revs: SmallVec::new(),
        }),
        None => {}
    }
    for (j, key) in revs.iter().enumerate() {
        let s = slot(key);
        match groups.iter_mut().find(|g| g.slot == s) {
            Some(g) => g.revs.push(j),
            None => groups.push(Group {
                slot: s,
                block: false,
                checks: SmallVec::new(),
                revs: smallvec![j],
            }),
        }
    }
    groups
}

/// Group the keys of settle operations (no block entry).
pub(super) fn plan_keys(clustered: bool, keys: &[String]) -> Groups {
    plan(clustered, None, keys, &[])
}

/// The outcome of a group that found the request's token revoked.
const REVOKED: i64 = 4;

/// One group's answer (see `lua/check.lua`), with indices into the group's checks.
#[derive(Debug)]
struct Reply {
    /// 0 allowed, 1 limited, 2 blocked, 4 revoked.
    outcome: i64,
    arg: u64,
    now: u64,
    blocked_now: Option<(usize, u64)>,
    states: Vec<PolicyState>,
    /// Per check, when the group charged as one of several: (charged, remaining and reset
    /// before the charge, mark).
    charges: Vec<(bool, u64, u64, u64)>,
}

fn decode(reply: &[i64], n: usize) -> Result<Reply, StoreError> {
    let bad = || StoreError::Protocol(format!("unexpected script reply of {} values", reply.len()));
    let outcome = *reply.first().ok_or_else(bad)?;
    // The head: {0, now} when allowed; {1, policy, now, blocked policy, blocked ms} when
    // limited; {2 | 4, arg, now} when blocked or revoked.
    let head = match outcome {
        0 => 2,
        1 => 5,
        2 | REVOKED => 3,
        _ => return Err(bad()),
    };
    let (arg, now, blocked_now) = match *reply.get(..head).ok_or_else(bad)? {
        [_, now] => (0, now, None),
        [_, policy, now, bp, bms] => (policy, now, usize::try_from(bp).ok().map(|i| (i, bms))),
        [_, arg, now] => (arg, now, None),
        _ => return Err(bad()),
    };
    let mut out = Reply {
        outcome,
        arg: to_u64(arg),
        now: to_u64(now),
        blocked_now: blocked_now.map(|(i, ms)| (i, to_u64(ms))),
        states: Vec::new(),
        charges: Vec::new(),
    };
    if outcome == 2 || outcome == REVOKED {
        return Ok(out);
    }
    let rest = &reply[head..];
    let (states, charges) = match rest.len() {
        l if l == 5 * n => (rest, &[][..]),
        l if l == 9 * n && outcome == 0 => rest.split_at(5 * n),
        _ => return Err(bad()),
    };
    out.states = states
        .chunks_exact(5)
        .map(|s| PolicyState {
            allowed: s[0] == 1,
            limit: to_u64(s[1]),
            remaining: to_u64(s[2]),
            reset_ms: to_u64(s[3]),
            retry_after_ms: to_u64(s[4]),
        })
        .collect();
    out.charges = charges
        .chunks_exact(4)
        .map(|c| (c[0] == 1, to_u64(c[1]), to_u64(c[2]), to_u64(c[3])))
        .collect();
    Ok(out)
}

impl Reply {
    fn charged(&self) -> bool {
        self.charges.iter().any(|c| c.0)
    }
}

/// What a request's calls share: its checks' full keys, its client's block entry, its token's
/// revocation entries and its id.
pub(super) struct Plan<'r, 'a> {
    pub(super) req: &'r CheckRequest<'a>,
    pub(super) keys: Vec<String>,
    pub(super) block_key: Option<String>,
    /// The entries that would revoke the request's token (its `jti`'s, its `sub`'s).
    pub(super) revs: SmallVec<[String; 2]>,
    /// Names the sliding-log members a charge adds ("" when there are none).
    pub(super) nonce: String,
}

impl RedisStore {
    /// Run one group's check (`single`: the request's only group).
    async fn check_group(
        &self,
        plan: &Plan<'_, '_>,
        group: &Group,
        single: bool,
    ) -> Result<Reply, StoreError> {
        let req = plan.req;
        let block_key = plan.block_key.as_ref().filter(|_| group.block);
        let checks: SmallVec<[&PolicyCheck<'_>; 4]> =
            group.checks.iter().map(|&i| &req.checks[i]).collect();
        let compiled = self.inner.compiled.get(&checks);
        let n = group.checks.len();
        let mut keys = Vec::with_capacity(1 + group.revs.len() + n);
        keys.extend(group.revs.iter().map(|&j| plan.revs[j].clone()));
        keys.extend(block_key.cloned());
        let width = if compiled.is_some() {
            0
        } else {
            super::args::WIDTH
        };
        // The request's header in `lua/check.lua`, then its policies for the generic script.
        let mut bits = n as u64 * shape::N + group.revs.len() as u64 * shape::REVS;
        for (flag, on) in [
            (shape::BLOCK, block_key.is_some()),
            (shape::SINGLE, single),
            (shape::LEASE, !req.lease.is_empty()),
            (shape::NONCE, !plan.nonce.is_empty()),
        ] {
            if on {
                bits += flag;
            }
        }
        let mut args = Vec::with_capacity(5 + width * n);
        args.push(int(req.cost));
        args.push(int(bits));
        if !req.lease.is_empty() {
            args.push(Value::String(req.lease.into()));
        }
        if !plan.nonce.is_empty() {
            args.push(Value::String(plan.nonce.as_str().into()));
        }
        if !group.revs.is_empty() {
            args.push(match req.token.and_then(|t| t.iat) {
                Some(iat) => int(iat),
                None => Value::Integer(-1),
            });
        }
        for &i in &group.checks {
            keys.push(plan.keys[i].clone());
            if compiled.is_none() {
                push_policy(&mut args, &req.checks[i]);
            }
        }
        let script = compiled.unwrap_or_else(|| self.inner.check.clone());
        let reply = self
            .check_call(script, group.slot, req.lease, Part { keys, args })
            .await?;
        decode(&reply, group.checks.len())
    }

    /// The decision for `plan.req` over `groups` (see the module docs).
    pub(super) async fn check_groups(
        &self,
        plan: &Plan<'_, '_>,
        groups: &Groups,
    ) -> Result<CheckResult, StoreError> {
        let req = plan.req;
        if let [group] = groups.as_slice() {
            let r = self.check_group(plan, group, true).await?;
            let outcome = match r.outcome {
                0 => CheckOutcome::Allowed,
                1 => CheckOutcome::Limited {
                    policy: group
                        .checks
                        .get(usize::try_from(r.arg).unwrap_or(usize::MAX))
                        .copied()
                        .ok_or_else(|| StoreError::Protocol("policy index out of range".into()))?,
                },
                REVOKED => CheckOutcome::Revoked,
                _ => CheckOutcome::Blocked { ttl_ms: r.arg },
            };
            return Ok(CheckResult {
                outcome,
                states: r.states,
                blocked_now: r
                    .blocked_now
                    .map(|(i, ms)| (group.checks.get(i).copied().unwrap_or(i), ms)),
                now_ms: r.now,
            });
        }
        let replies = join_all(groups.iter().map(|g| self.check_group(plan, g, false))).await;
        let mut states: Vec<Option<PolicyState>> = vec![None; req.checks.len()];
        let mut failed = None;
        let mut blocked = None;
        let mut revoked = false;
        let mut now_ms = 0;
        let mut answered: SmallVec<[(&Group, Reply); 2]> = SmallVec::new();
        for (group, reply) in groups.iter().zip(replies) {
            match reply {
                Ok(r) => answered.push((group, r)),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        for (group, r) in &answered {
            if group.block || now_ms == 0 {
                now_ms = r.now;
            }
            if r.outcome == 2 {
                blocked = Some(r.arg);
                continue;
            }
            if r.outcome == REVOKED {
                revoked = true;
                continue;
            }
            for (local, &i) in group.checks.iter().enumerate() {
                states[i] = r.states.get(local).copied();
            }
        }
        let charged: SmallVec<[&(&Group, Reply); 2]> =
            answered.iter().filter(|(_, r)| r.charged()).collect();
        let rejected = if failed.is_some() || blocked.is_some() || revoked {
            None
        } else {
            req.checks
                .iter()
                .zip(&states)
                .position(|(c, s)| c.policy.mode == Mode::Enforce && s.is_some_and(|s| !s.allowed))
        };
        let admitted = failed.is_none() && blocked.is_none() && !revoked && rejected.is_none();
        if admitted {
            return Ok(CheckResult {
                outcome: CheckOutcome::Allowed,
                states: states.into_iter().flatten().collect(),
                blocked_now: None,
                now_ms,
            });
        }
        // Not admitted: nothing stays charged. A rejected request reports every policy as it
        // was before the request (its refund restores exactly that).
        for (group, r) in &charged {
            for (local, &i) in group.checks.iter().enumerate() {
                if let (Some(s), Some(&(true, remaining, reset_ms, _))) =
                    (states[i].as_mut(), r.charges.get(local))
                {
                    s.remaining = remaining;
                    s.reset_ms = reset_ms;
                }
            }
        }
        let refunds = join_all(charged.iter().map(|(g, r)| self.refund(plan, g, r)));
        let penalty = async {
            match rejected {
                Some(_) => self.penalize(plan, &states).await,
                None => Ok(None),
            }
        };
        let (refunds, penalty) = tokio::join!(refunds, penalty);
        for e in refunds.into_iter().filter_map(Result::err) {
            tracing::warn!(error = %e, "cannot refund a group of a rejected request");
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if revoked {
            return Ok(CheckResult {
                outcome: CheckOutcome::Revoked,
                states: Vec::new(),
                blocked_now: None,
                now_ms,
            });
        }
        if let Some(ttl_ms) = blocked {
            return Ok(CheckResult {
                outcome: CheckOutcome::Blocked { ttl_ms },
                states: Vec::new(),
                blocked_now: None,
                now_ms,
            });
        }
        let blocked_now = penalty.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot apply a block started by a rejection");
            None
        });
        Ok(CheckResult {
            outcome: CheckOutcome::Limited {
                policy: rejected.unwrap_or(0),
            },
            states: states.into_iter().flatten().collect(),
            blocked_now,
            now_ms,
        })
    }

    /// Take back what one group charged (see `lua/settle.lua`, `refund`).
    async fn refund(
        &self,
        plan: &Plan<'_, '_>,
        group: &Group,
        reply: &Reply,
    ) -> Result<(), StoreError> {
        let req = plan.req;
        let taken: SmallVec<[(usize, u64); 4]> = group
            .checks
            .iter()
            .zip(&reply.charges)
            .filter(|(_, c)| c.0)
            .map(|(&i, c)| (i, c.3))
            .collect();
        self.count_call(Call::Refund);
        let _: i64 = self
            .run(&self.inner.settle, req.lease, || {
                let n = taken.len();
                let mut args = settle_head(
                    self.now_arg(),
                    "refund",
                    req.cost,
                    n,
                    req.lease,
                    &plan.nonce,
                );
                let mut keys = Vec::with_capacity(n);
                for &(i, _) in &taken {
                    keys.push(plan.keys[i].clone());
                    push_policy(&mut args, &req.checks[i]);
                }
                args.extend(taken.iter().map(|&(_, mark)| int(mark)));
                (keys, args)
            })
            .await?;
        Ok(())
    }

    /// Apply the block of a rejection to the client's entry: the longest effective block among
    /// the rejecting enforce policies, in route order (see `lua/admin.lua`, `penalize`).
    async fn penalize(
        &self,
        plan: &Plan<'_, '_>,
        states: &[Option<PolicyState>],
    ) -> Result<Option<(usize, u64)>, StoreError> {
        let req = plan.req;
        let Some(block_key) = &plan.block_key else {
            return Ok(None);
        };
        let cands: SmallVec<[usize; 4]> = req
            .checks
            .iter()
            .zip(states)
            .enumerate()
            .filter(|(_, (c, s))| {
                c.policy.mode == Mode::Enforce
                    && c.policy.block_for.is_some()
                    && s.is_some_and(|s| !s.allowed)
            })
            .map(|(i, _)| i)
            .collect();
        if cands.is_empty() {
            return Ok(None);
        }
        self.count_call(Call::Penalize);
        let reply: Vec<i64> = self
            .run(&self.inner.admin, "", || {
                let mut args = Vec::with_capacity(3 + (1 + super::args::WIDTH) * cands.len());
                args.push(self.now_arg());
                args.push(Value::String("penalize".into()));
                args.push(int(cands.len() as u64));
                for &i in &cands {
                    args.push(int(i as u64));
                    push_policy(&mut args, &req.checks[i]);
                }
                (vec![block_key.clone()], args)
            })
            .await?;
        match reply.as_slice() {
            [i, ms] if *i >= 0 => Ok(Some((to_u64(*i) as usize, to_u64(*ms)))),
            [_, _] => Ok(None),
            _ => Err(StoreError::Protocol("unexpected penalize reply".into())),
        }
    }

    /// Run a settle operation (`charge`, `renew`, `release`) on `checks`, one call per group;
    /// returns the sum of the groups' answers.
    pub(super) async fn settle_groups(
        &self,
        op: &str,
        cost: u64,
        lease: &str,
        checks: &[&PolicyCheck<'_>],
    ) -> Result<u64, StoreError> {
        let keys: Vec<String> = checks
            .iter()
            .map(|c| self.inner.layout.counter_key(c))
            .collect();
        let groups = plan_keys(self.inner.clustered, &keys);
        let calls = groups.iter().map(|g| async {
            let held: i64 = self
                .run(&self.inner.settle, lease, || {
                    let mut args = settle_head(self.now_arg(), op, cost, g.checks.len(), lease, "");
                    let mut group_keys = Vec::with_capacity(g.checks.len());
                    for &i in &g.checks {
                        group_keys.push(keys[i].clone());
                        push_policy(&mut args, checks[i]);
                    }
                    (group_keys, args)
                })
                .await?;
            Ok::<u64, StoreError>(to_u64(held))
        });
        let mut sum = 0;
        for r in join_all(calls).await {
            sum += r?;
        }
        Ok(sum)
    }
}

/// ARGV[1..6] of `lua/settle.lua`.
fn settle_head(now: Value, op: &str, cost: u64, n: usize, lease: &str, nonce: &str) -> Vec<Value> {
    let mut args = Vec::with_capacity(6 + (super::args::WIDTH + 1) * n);
    args.push(now);
    args.push(Value::String(op.into()));
    args.push(int(cost));
    args.push(int(n as u64));
    args.push(Value::String(lease.into()));
    args.push(Value::String(nonce.into()));
    args
}

/// Whether `checks` need per-request log members (a sliding log charged by the check).
pub(super) fn needs_nonce(req: &CheckRequest<'_>) -> bool {
    req.cost > 0
        && req
            .checks
            .iter()
            .any(|c| c.policy.algorithm == Algorithm::SlidingLog && !c.deferred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_is_one_group() {
        let keys = vec!["a".to_string(), "b".to_string()];
        let g = plan(false, Some("x"), &keys, &[]);
        assert_eq!(g.len(), 1);
        assert!(g[0].block);
        assert_eq!(g[0].checks.as_slice(), &[0, 1]);
    }

    #[test]
    fn cluster_groups_by_slot_and_the_block_joins_its_slot() {
        let keys = vec![
            "p:{i:1.2.3.4}:c:f1.1.1:a".to_string(),
            "p:{g|g}:c:f1.1.1".to_string(),
            "p:{i:1.2.3.4}:c:f1.1.1:b".to_string(),
        ];
        let g = plan(true, Some("p:{i:1.2.3.4}:b"), &keys, &[]);
        assert_eq!(g.len(), 2);
        assert!(g[0].block && !g[1].block);
        assert_eq!(g[0].checks.as_slice(), &[0, 2]);
        assert_eq!(g[1].checks.as_slice(), &[1]);
        // No policy keyed by the client: the block check is a group of its own.
        let g = plan(true, Some("p:{i:1.2.3.4}:b"), &keys[1..2], &[]);
        assert_eq!(g.len(), 2);
        assert!(g[1].block && g[1].checks.is_empty());
    }

    #[test]
    fn revocation_entries_join_their_slot_or_make_their_own_group() {
        let keys = vec![
            "p:{u:alice}:v:f1.1.1:a".to_string(),
            "p:{i:1.2.3.4}:v:f1.1.1:b".to_string(),
        ];
        let revs = vec!["p:{j:t1}:r".to_string(), "p:{u:alice}:r".to_string()];
        let g = plan(true, Some("p:{i:1.2.3.4}:b"), &keys, &revs);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].revs.as_slice(), &[1]);
        assert!(g[1].block && g[1].revs.is_empty());
        assert!(g[2].checks.is_empty() && !g[2].block);
        assert_eq!(g[2].revs.as_slice(), &[0]);
        let g = plan(false, Some("x"), &keys, &revs);
        assert_eq!((g.len(), g[0].revs.as_slice()), (1, &[0, 1][..]));
    }

    #[test]
    fn decodes_replies() {
        let r = decode(&[2, 1500, 10], 2).unwrap();
        assert_eq!((r.outcome, r.arg, r.now), (2, 1500, 10));
        let r = decode(&[1, 0, 10, 0, 60000, 0, 5, 0, 1000, 1000], 1).unwrap();
        assert_eq!((r.now, r.blocked_now), (10, Some((0, 60000))));
        let r = decode(&[1, 0, 10, -1, 0, 0, 5, 0, 1000, 1000], 1).unwrap();
        assert_eq!(r.blocked_now, None);
        let r = decode(&[0, 10, 1, 5, 4, 1000, 0], 1).unwrap();
        assert_eq!((r.now, r.states[0].remaining), (10, 4));
        let r = decode(&[0, 10, 1, 5, 4, 1000, 0, 1, 5, 0, 7], 1).unwrap();
        assert_eq!(r.charges, vec![(true, 5, 0, 7)]);
        assert!(decode(&[0, 10, 1], 1).is_err());
        assert!(decode(&[1, 0, 10], 1).is_err());
        assert!(decode(&[7, 0, 10], 1).is_err());
        assert_eq!(decode(&[4, 0, 10], 2).unwrap().outcome, REVOKED);
    }
}
