//! The decision for one request: build the keys of the route's policies (with their tier
//! overrides), answer known rejections from the local deny cache, ask the store once, apply
//! shadow mode, and report what the headers need, plus what an admitted request still owes the
//! store afterwards (`admission`). What happens when the store fails (breaker, `on_error`, the
//! fallback, readiness) is `failover`'s; the admin API's pass-throughs are `admin_ops`.

mod admin_ops;
pub(crate) mod admission;
pub(crate) mod breaker;
pub(crate) mod cache;
mod failover;
#[cfg(test)]
mod fixture;
pub mod policy;
pub(crate) mod query;
mod random;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};

use crate::clock::{Clock, SystemClock};
use crate::config::compiled::{Algorithm, Mode, Policy, Route, StoreSettings};
use crate::metrics::Metrics;
use crate::millis;
use crate::store::{
    AnyStore, CheckOutcome, CheckRequest, CheckResult, PolicyCheck, PolicyState, StoreError,
    TokenRef,
};

use admission::{Held, Settler, StoreRef};
use cache::{CachedRejection, DenyCache};
use failover::{Failed, Failover};

pub use crate::auth::Identity;
pub(crate) use admin_ops::LimiterError;
pub(crate) use admission::{Admission, Owed, Settlements, Settling};

/// Who is asking: the resolved client address and its key string (see `proxy::client_ip`).
#[derive(Debug, Clone)]
pub struct ClientId {
    pub ip: IpAddr,
    pub key: String,
}

/// What the request carries that keys may be built from.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Normalized path (what routing matched).
    pub path: &'a str,
    /// The raw query (without `?`), for `query:NAME` key components.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Units this request charges to each policy (see `proxy::cost`).
    pub cost: u64,
    /// Verified token claims and client certificate (`jwt:*`, `tls:*` key components).
    pub identity: Identity<'a>,
}

#[derive(Debug, Clone)]
pub(crate) struct ReportEntry {
    pub(crate) policy: Arc<Policy>,
    pub(crate) state: PolicyState,
}

/// Everything the rate-limit headers need.
#[derive(Debug, Clone)]
pub struct RateReport {
    /// One entry per policy of the route, in route order.
    pub(crate) entries: Vec<ReportEntry>,
    /// Index into `entries` of the policy reported in X-RateLimit-* (least remaining; on a
    /// rejection, the rejecting policy).
    pub(crate) reported: usize,
    /// Store clock at decision time, ms since the Unix epoch (for X-RateLimit-Reset).
    pub(crate) now_ms: u64,
}

impl RateReport {
    /// Every enforce policy that rejected, in route order (the problem's `violated-policies`).
    pub(crate) fn violated_entries(&self) -> impl Iterator<Item = &ReportEntry> + Clone {
        self.entries
            .iter()
            .filter(|e| e.policy.mode == Mode::Enforce && !e.state.allowed)
    }
}

/// The limiter's answer for one request: whether it may go on, with the numbers for the
/// rate-limit headers and what it owes the store afterwards, or why it is refused (429, 503).
#[derive(Debug)]
pub enum Verdict {
    /// The route has no policies, or the client is on the allow list.
    Unlimited,
    Allowed {
        report: RateReport,
        /// What the request owes after the response (count-by-response, concurrency lease).
        admission: Option<Admission>,
    },
    /// Allowed, but these shadow policies would have rejected (indexes into `entries`).
    ShadowLimited {
        report: RateReport,
        shadow: Vec<usize>,
        admission: Option<Admission>,
    },
    /// Over a limit: 429.
    Limited {
        report: RateReport,
        policy: Arc<Policy>,
        /// Seconds for Retry-After: the rejecting policy's retry time (the block's length when
        /// this rejection started one, if longer), plus its `retry_after_jitter`.
        retry_after_s: u64,
        /// Set when this rejection started a `block_for` block (seconds).
        blocked_for_s: Option<u64>,
        /// The policy whose block was applied (with `blocked_for_s`).
        blocked_by: Option<Arc<Policy>>,
    },
    /// Temporarily blocked: 429 with the block time left.
    Blocked { retry_after_s: u64 },
    /// The request's token is revoked: 401.
    Revoked,
    /// Store unavailable with `on_error = "deny"`: 503.
    Unavailable { retry_after_s: u64 },
}

/// Decides requests against the configured store, falling back per `store.on_error`.
pub struct Limiter {
    /// The configured store, and what happens while it fails.
    failover: Failover,
    /// Given only with a remote store: known blocks and rejections answered without a round
    /// trip.
    cache: Option<Arc<DenyCache>>,
    /// Lease ids of requests on routes with concurrency policies.
    lease_ids: random::LeaseIds,
    metrics: Arc<Metrics>,
    /// Charges and releases owed by answered requests, still on their way to the store.
    settlements: Arc<Settlements>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("store", self.failover.store())
            .field("on_error", &self.on_error())
            .finish_non_exhaustive()
    }
}

/// Which store made a decision.
#[derive(Debug, Clone, Copy)]
enum DecidedBy {
    Store,
    Fallback,
}

/// Whole seconds for Retry-After: rounded up, and at least 1 so a client never retries at once.
fn retry_secs(ms: u64) -> u64 {
    millis::secs_ceil(ms).max(1)
}

/// `secs` plus a random 0..=jitter whole seconds (the policy's `retry_after_jitter`), so clients
/// rejected in the same second do not all come back in the same second.
fn with_jitter(secs: u64, policy: &Policy) -> u64 {
    match policy.retry_after_jitter {
        Some(j) if j.as_secs() > 0 => secs.saturating_add(random::up_to(j.as_secs())),
        _ => secs,
    }
}

impl Limiter {
    /// Decide against `store` (built by the caller, see `app::build_limiter`), handling its failures
    /// per `settings.on_error`.
    pub(crate) fn new(store: AnyStore, settings: &StoreSettings, metrics: Arc<Metrics>) -> Self {
        Self::with_fallback_clock(store, settings, metrics, Arc::new(SystemClock))
    }

    /// Like `new`, with the clock of the in-process fallback store given (tests).
    pub fn with_fallback_clock(
        store: AnyStore,
        settings: &StoreSettings,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Limiter {
            failover: Failover::new(store, settings, metrics.clone(), clock),
            cache: None,
            lease_ids: random::LeaseIds::default(),
            metrics,
            settlements: Arc::default(),
        }
    }

    /// Answer known blocks and rejections from `cache` (a remote store's, kept current by its
    /// invalidations) without a store call.
    pub(crate) fn with_deny_cache(mut self, cache: Arc<DenyCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Forget cached decisions (after a reload, policies may have changed).
    pub(crate) fn clear_cache(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    /// The configured store.
    pub fn store(&self) -> &AnyStore {
        self.failover.store()
    }

    pub async fn check(&self, route: &Route, client: &ClientId, req: RequestView<'_>) -> Verdict {
        let token = token_of(req.identity);
        if route.policies.is_empty() {
            return self.check_block_only(client, token).await;
        }
        // All keys in one buffer; `ends[i]` is where key i stops.
        let mut keys = String::with_capacity(route.policies.len() * 48);
        let mut ends = Vec::with_capacity(route.policies.len());
        for p in &route.policies {
            policy::build_key(&mut keys, p, route, client, req);
            ends.push(keys.len());
        }
        let checks: Vec<PolicyCheck<'_>> = route
            .policies
            .iter()
            .zip(&ends)
            .scan(0, |start, (p, &end)| {
                let key = &keys[*start..end];
                *start = end;
                let tier = policy::override_limit(p, route, client, req);
                Some(PolicyCheck::new(p, key).with_limit(tier))
            })
            .collect();
        if let Some(cache) = &self.cache {
            if let Some(left) = cache.blocked(&client.key) {
                return Verdict::Blocked {
                    retry_after_s: retry_secs(millis::floor(left)),
                };
            }
            for (i, check) in checks.iter().enumerate() {
                // Concurrency rejections are never cached (a slot may free at any moment).
                if check.policy.mode != Mode::Enforce
                    || check.policy.algorithm == Algorithm::Concurrency
                {
                    continue;
                }
                if let Some(hit) = cache.limited(check.key, req.cost) {
                    return self.cached_rejection(route, i, hit);
                }
            }
        }
        let lease = if route
            .policies
            .iter()
            .any(|p| p.algorithm == Algorithm::Concurrency)
        {
            self.lease_ids.next()
        } else {
            String::new()
        };
        let request = CheckRequest {
            lease: &lease,
            token,
            ..CheckRequest::new(&client.key, &checks, req.cost)
        };

        let err = match self.failover.call(&request).await {
            Ok(decision) => {
                self.remember(&request, &decision);
                match self.verdict(route, decision, &request, DecidedBy::Store) {
                    Ok(v) => return v,
                    // The script ran: whatever it took is the store's now.
                    Err(e) => Failed {
                        error: e,
                        sent: true,
                    },
                }
            }
            Err(failed) => failed,
        };
        if err.sent {
            self.release_unanswered(route, &request);
        }
        self.failover
            .answer_failed(&request, err.error, |d| {
                self.verdict(route, d, &request, DecidedBy::Fallback)
            })
            .await
    }

    /// The lease a check sent to the store may still be taken there when it runs late (a
    /// stalled Redis runs the queued script when it wakes), and nobody would ever release it:
    /// release it now, off the request path. Sent after the check on the same connection, the
    /// release runs after it; where the check never ran it is a no-op.
    fn release_unanswered(&self, route: &Route, request: &CheckRequest<'_>) {
        if request.lease.is_empty() {
            return;
        }
        let held: Vec<Held> = route
            .policies
            .iter()
            .zip(request.checks)
            .filter(|(p, _)| p.algorithm == Algorithm::Concurrency)
            .map(|(p, check)| Held {
                policy: p.clone(),
                key: check.key.into(),
                limit: (check.limit != p.limit).then_some(check.limit),
            })
            .collect();
        admission::release_now(
            self.settler(DecidedBy::Store),
            request.lease.to_owned(),
            held,
        );
    }

    /// Where an admission settles: the store that decided.
    fn settler(&self, by: DecidedBy) -> Settler {
        Settler {
            store: match by {
                DecidedBy::Store => StoreRef::Primary(self.failover.store().clone()),
                DecidedBy::Fallback => StoreRef::Fallback(self.failover.fallback().clone()),
            },
            metrics: self.metrics.clone(),
            settlements: self.settlements.clone(),
        }
    }

    /// Charges and releases owed by answered requests (shutdown waits for them).
    pub(crate) fn settlements(&self) -> &Settlements {
        &self.settlements
    }

    /// A route without policies still refuses a blocked client ("blocked from every route") and
    /// a revoked token. When the store fails, see [`Failover::answer_failed_block_only`].
    async fn check_block_only(&self, client: &ClientId, token: Option<TokenRef<'_>>) -> Verdict {
        if let Some(cache) = &self.cache {
            if let Some(left) = cache.blocked(&client.key) {
                return Verdict::Blocked {
                    retry_after_s: retry_secs(millis::floor(left)),
                };
            }
        }
        let request = CheckRequest {
            token,
            ..CheckRequest::new(&client.key, &[], 1)
        };
        match self.failover.call(&request).await {
            Ok(decision) => {
                self.remember(&request, &decision);
                match decision.outcome {
                    CheckOutcome::Blocked { ttl_ms } => Verdict::Blocked {
                        retry_after_s: retry_secs(ttl_ms),
                    },
                    CheckOutcome::Revoked => Verdict::Revoked,
                    _ => Verdict::Unlimited,
                }
            }
            Err(_) => self.failover.answer_failed_block_only(&request).await,
        }
    }

    /// An allow-listed client is never limited or blocked, but its verified token is still
    /// checked for revocation: one store call with no client and no policies (none without a
    /// token). When the store fails, `on_error` decides as on a route without policies.
    pub(crate) async fn check_revoked(&self, identity: Identity<'_>) -> Verdict {
        // A token without `jti` or `sub` cannot be revoked: no call for it.
        let Some(token) = token_of(identity).filter(|t| t.jti.is_some() || t.sub.is_some()) else {
            return Verdict::Unlimited;
        };
        let request = CheckRequest {
            token: Some(token),
            ..CheckRequest::new("", &[], 1)
        };
        match self.failover.call(&request).await {
            Ok(CheckResult {
                outcome: CheckOutcome::Revoked,
                ..
            }) => Verdict::Revoked,
            Ok(_) => Verdict::Unlimited,
            Err(_) => self.failover.answer_failed_block_only(&request).await,
        }
    }

    /// Cache what the store said about known blocks and rejections.
    fn remember(&self, request: &CheckRequest<'_>, d: &CheckResult) {
        let Some(cache) = &self.cache else { return };
        match d.outcome {
            CheckOutcome::Blocked { ttl_ms } => {
                cache.insert_block(request.client, Duration::from_millis(ttl_ms));
            }
            CheckOutcome::Limited { policy } => {
                if let (Some(check), Some(state)) =
                    (request.checks.get(policy), d.states.get(policy))
                {
                    // A concurrency slot may free at any moment: never answered from the cache.
                    // A policy with `block_for` blocked the client, and the block is cached
                    // below; once it ends, the store must see the next rejection so that it
                    // blocks (and escalates) again, which a cached rejection would skip.
                    if check.policy.algorithm != Algorithm::Concurrency
                        && check.policy.block_for.is_none()
                    {
                        cache.insert_limited(check.key, *state, d.now_ms, request.cost);
                    }
                }
                if let Some((_, ms)) = d.blocked_now {
                    cache.insert_block(request.client, Duration::from_millis(ms));
                }
            }
            // A revocation is never cached here: removing it must take effect at once, and
            // the token's next request costs the same one call anyway.
            CheckOutcome::Allowed | CheckOutcome::Revoked => {}
        }
    }

    /// A rejection answered from the cache: only the rejecting policy is known, so it is the
    /// one reported.
    fn cached_rejection(&self, route: &Route, index: usize, hit: CachedRejection) -> Verdict {
        let policy = route.policies[index].clone();
        self.metrics
            .policy_rejections
            .with_label_values(&[&policy.name])
            .inc();
        Verdict::Limited {
            retry_after_s: with_jitter(retry_secs(hit.state.retry_after_ms), &policy),
            blocked_for_s: None,
            blocked_by: None,
            report: RateReport {
                entries: vec![ReportEntry {
                    policy: policy.clone(),
                    state: hit.state,
                }],
                reported: 0,
                now_ms: hit.now_ms,
            },
            policy,
        }
    }

    /// Map a store decision to the verdict; a decision that does not fit the route is a protocol
    /// error (handled like any store failure). `by` is the store that decided, where the
    /// admission of an admitted request settles.
    fn verdict(
        &self,
        route: &Route,
        d: CheckResult,
        request: &CheckRequest<'_>,
        by: DecidedBy,
    ) -> Result<Verdict, StoreError> {
        match d.outcome {
            CheckOutcome::Blocked { ttl_ms } => {
                return Ok(Verdict::Blocked {
                    retry_after_s: retry_secs(ttl_ms),
                })
            }
            CheckOutcome::Revoked => return Ok(Verdict::Revoked),
            CheckOutcome::Allowed | CheckOutcome::Limited { .. } => {}
        }
        if d.states.len() != route.policies.len() {
            return Err(StoreError::Protocol(format!(
                "{} policy states for {} policies",
                d.states.len(),
                route.policies.len()
            )));
        }
        for (p, s) in route.policies.iter().zip(&d.states) {
            if !s.allowed {
                self.metrics
                    .policy_rejections
                    .with_label_values(&[&p.name])
                    .inc();
            }
        }
        let entries: Vec<ReportEntry> = route
            .policies
            .iter()
            .zip(&d.states)
            .map(|(p, &state)| ReportEntry {
                policy: p.clone(),
                state,
            })
            .collect();
        match d.outcome {
            CheckOutcome::Limited { policy } => {
                let Some(rejecting) = entries.get(policy) else {
                    return Err(StoreError::Protocol(format!(
                        "rejecting policy {policy} out of range"
                    )));
                };
                let blocked = d
                    .blocked_now
                    .and_then(|(i, ms)| Some((route.policies.get(i)?.clone(), retry_secs(ms))));
                let mut retry = retry_secs(rejecting.state.retry_after_ms);
                // Coming back before the block ends would only meet the block.
                if let Some((_, secs)) = &blocked {
                    retry = retry.max(*secs);
                }
                Ok(Verdict::Limited {
                    policy: rejecting.policy.clone(),
                    retry_after_s: with_jitter(retry, &rejecting.policy),
                    blocked_for_s: blocked.as_ref().map(|(_, s)| *s),
                    blocked_by: blocked.map(|(p, _)| p),
                    report: RateReport {
                        entries,
                        reported: policy,
                        now_ms: d.now_ms,
                    },
                })
            }
            CheckOutcome::Allowed | CheckOutcome::Blocked { .. } | CheckOutcome::Revoked => {
                let admission = admission_of(request, &entries, || self.settler(by));
                let reported = least_remaining(&entries);
                let shadow: Vec<usize> = entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| !e.state.allowed)
                    .map(|(i, _)| i)
                    .collect();
                let report = RateReport {
                    entries,
                    reported,
                    now_ms: d.now_ms,
                };
                Ok(if shadow.is_empty() {
                    Verdict::Allowed { report, admission }
                } else {
                    Verdict::ShadowLimited {
                        report,
                        shadow,
                        admission,
                    }
                })
            }
        }
    }
}

/// What the store checks revocations against: the verified token's `jti`, `sub` and `iat`.
fn token_of<'a>(identity: Identity<'a>) -> Option<TokenRef<'a>> {
    let claims = identity.claims?;
    Some(TokenRef {
        jti: claims.string("jti"),
        sub: claims.string("sub"),
        iat: claims.seconds("iat"),
    })
}

/// What an admitted request owes: the count-by-response policies that admitted it, and the
/// concurrency slots it took (a shadow concurrency policy that would reject took none).
fn admission_of(
    request: &CheckRequest<'_>,
    entries: &[ReportEntry],
    settler: impl FnOnce() -> Settler,
) -> Option<Admission> {
    let owes = |c: &PolicyCheck<'_>| c.deferred || c.policy.algorithm == Algorithm::Concurrency;
    if !request.checks.iter().any(owes) {
        return None;
    }
    let mut deferred = Vec::new();
    let mut leased = Vec::new();
    for (check, entry) in request.checks.iter().zip(entries) {
        if !owes(check) || !entry.state.allowed {
            continue;
        }
        let held = Held {
            policy: entry.policy.clone(),
            key: check.key.into(),
            limit: (check.limit != check.policy.limit).then_some(check.limit),
        };
        if check.policy.algorithm == Algorithm::Concurrency {
            leased.push(held);
        } else {
            deferred.push(held);
        }
    }
    let lease = (!leased.is_empty()).then(|| (request.lease.to_owned(), leased));
    Admission::new(settler(), request.cost, deferred, lease)
}

/// The entry reported in X-RateLimit-*: least remaining among enforce policies (among all when
/// the route has only shadow policies), first in route order on a tie.
fn least_remaining(entries: &[ReportEntry]) -> usize {
    let enforce = entries.iter().any(|e| e.policy.mode == Mode::Enforce);
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !enforce || e.policy.mode == Mode::Enforce)
        .min_by_key(|(i, e)| (e.state.remaining, *i))
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::fixture::*;
    use super::*;
    use crate::config::compiled::{Algorithm, CountOn, OnError, Overrides, Policy};

    #[tokio::test]
    async fn no_policies_is_unlimited() {
        let f = fixture(100, OnError::Deny);
        assert!(matches!(
            check(&f, &route(vec![]), "1.1.1.1").await,
            Verdict::Unlimited
        ));
    }

    #[tokio::test]
    async fn reports_least_remaining_enforce_policy() {
        let f = fixture(100, OnError::Deny);
        let r = route(vec![
            policy("wide", 10, Mode::Enforce, None),
            policy("shadow", 1, Mode::Shadow, None),
            policy("narrow", 3, Mode::Enforce, None),
        ]);
        let Verdict::Allowed { report, .. } = check(&f, &r, "1.1.1.1").await else {
            panic!("allowed expected")
        };
        assert_eq!(report.reported, 2);
        assert_eq!(report.entries[2].state.remaining, 2);
        assert_eq!(report.now_ms, T0);
        let Verdict::ShadowLimited { report, shadow, .. } = check(&f, &r, "1.1.1.1").await else {
            panic!("shadow limited expected")
        };
        assert_eq!(shadow, vec![1]);
        assert_eq!(report.reported, 2);
        let rejections = f
            .metrics
            .policy_rejections
            .with_label_values(&["shadow"])
            .get();
        assert_eq!(rejections, 1);
    }

    #[tokio::test]
    async fn limited_then_blocked() {
        let f = fixture(100, OnError::Deny);
        let r = route(vec![
            policy("wide", 10, Mode::Enforce, None),
            policy("login", 1, Mode::Enforce, Some(90_500)),
        ]);
        assert!(matches!(
            check(&f, &r, "1.1.1.1").await,
            Verdict::Allowed { .. }
        ));
        f.clock.advance_ms(1);
        match check(&f, &r, "1.1.1.1").await {
            Verdict::Limited {
                report,
                policy,
                retry_after_s,
                blocked_for_s,
                blocked_by,
            } => {
                assert_eq!(&*policy.name, "login");
                assert_eq!(report.reported, 1);
                // 9999 ms left in the window, but the block (91 s) outlasts it.
                assert_eq!(retry_after_s, 91);
                assert_eq!(blocked_for_s, Some(91));
                assert_eq!(blocked_by.map(|p| p.name.to_string()), Some("login".into()));
            }
            v => panic!("limited expected, got {v:?}"),
        }
        f.clock.advance_ms(90_000);
        assert!(matches!(
            check(&f, &r, "1.1.1.1").await,
            Verdict::Blocked { retry_after_s: 1 }
        ));
        assert!(f.limiter.unblock("1.1.1.1").await.unwrap());
        assert!(matches!(
            check(&f, &r, "1.1.1.1").await,
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            check(&f, &r, "2.2.2.2").await,
            Verdict::Allowed { .. }
        ));
    }

    #[tokio::test]
    async fn tiers_and_count_by_response() {
        let f = fixture(100, OnError::Deny);
        let login = Arc::new(Policy {
            count: CountOn::Statuses(vec![401].into()),
            overrides: Overrides::new([("1.1.1.1".to_string(), 3)]),
            ..Policy::new("login", Algorithm::FixedWindow, 1, Duration::from_secs(10))
        });
        let r = route(vec![login.clone()]);
        let settle = |v: Verdict| match v {
            Verdict::Allowed { report, admission } => (report, admission),
            other => panic!("allowed expected, got {other:?}"),
        };
        // 1.1.1.1 has a tier of 3; nothing is charged at admission.
        let (report, admission) = settle(check(&f, &r, "1.1.1.1").await);
        assert_eq!(report.entries[0].state.limit, 3);
        // A 200 is not counted.
        assert!(admission.expect("owes a charge").respond(200).is_none());
        for _ in 0..3 {
            let (_, admission) = settle(check(&f, &r, "1.1.1.1").await);
            let owed = admission.expect("owes a charge").respond(401);
            // Settled once this resolves.
            owed.expect("a 401 is owed").settle().await;
        }
        assert_eq!(f.limiter.settlements().pending(), 0);
        assert_eq!(
            f.limiter
                .limit_status(&login, "1.1.1.1")
                .await
                .unwrap()
                .count,
            3
        );
        assert!(matches!(
            check(&f, &r, "1.1.1.1").await,
            Verdict::Limited { .. }
        ));
        // Another client has the default limit of 1.
        let (report, _) = settle(check(&f, &r, "2.2.2.2").await);
        assert_eq!(report.entries[0].state.limit, 1);
        // Plain policies owe nothing: no admission at all.
        let plain = route(vec![policy("plain", 5, Mode::Enforce, None)]);
        assert!(settle(check(&f, &plain, "1.1.1.1").await).1.is_none());
    }

    #[tokio::test]
    async fn what_is_owed_settles_even_when_dropped_and_flush_waits_for_it() {
        let f = fixture(100, OnError::Deny);
        let slot = Arc::new(Policy {
            index: 0,
            ..Policy::new("slot", Algorithm::Concurrency, 1, Duration::from_secs(60))
        });
        let r = route(vec![slot.clone()]);
        let admitted = |v: Verdict| match v {
            Verdict::Allowed { admission, .. } => admission.expect("a lease is owed"),
            other => panic!("allowed expected, got {other:?}"),
        };
        // Answered, then the body is dropped before its end (client gone, cut at shutdown).
        let owed = admitted(check(&f, &r, "1.1.1.1").await).respond(200);
        assert!(matches!(
            check(&f, &r, "1.1.1.1").await,
            Verdict::Limited { .. }
        ));
        drop(owed.expect("the lease is owed"));
        assert!(f.limiter.settlements().flush(Duration::from_secs(5)).await);
        // Never answered at all (the upstream failed, the request was dropped).
        drop(admitted(check(&f, &r, "1.1.1.1").await));
        assert!(f.limiter.settlements().flush(Duration::from_secs(5)).await);
        let status = f.limiter.limit_status(&slot, "1.1.1.1").await.unwrap();
        assert_eq!(status.count, 0);
        assert_eq!(f.limiter.settlements().pending(), 0);
        f.limiter.settlements().begin_drain();
        assert_eq!(f.limiter.settlements().failed_since_drain(), 0);
    }
}
