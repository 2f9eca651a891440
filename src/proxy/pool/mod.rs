//! Upstream pools: which of an upstream's targets a request goes to, their health, and trying
//! another target when a connect fails. Talking to the chosen target is `proxy::upstream`'s job
//! (one `UpstreamPool::send` call per attempt).
//!
//! - `Targets` (one per process, shared by the workers) holds each target's state, keyed by
//!   upstream name and label (`scheme://authority`, and the address for a resolved name), so
//!   health and counts survive a reload or re-resolution that keeps the target; a target that
//!   left the config (or an address its name no longer resolves to) is forgotten (with its
//!   metric series). It also resolves the targets' host names (`resolve`), runs the active
//!   health checks and keeps the ejected gauges current (`run`).
//! - `WorkerTargets` (one per worker) caches the groups of the config its requests run under,
//!   so a request finds its group with an uncontended lock and an index.
//! - A request whose connect failed (nothing was sent) is tried once more on another target;
//!   one that was sent only as the route's `retry` allows (`retry`).

mod check;
mod health;
mod pick;
mod resolve;
mod retry;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http::{Request, Response};
use hyper::body::Incoming;
use parking_lot::Mutex;

use self::health::{Clock, TargetState};
use self::pick::Group;
use self::resolve::Resolution;
use self::retry::Replay;
use super::response::GatewayError;
use super::upstream::{SendError, SentFailure, UpstreamPool};
use super::upstream_client::RequestBody;
use crate::config::compiled::{Outlier, Retry, Upstream};
use crate::config::{Config, Live};
use crate::metrics::Metrics;

/// How often the background task looks at the targets.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The hash `hash_client` ranks targets by, from a client key (`net::client_key`).
pub(crate) fn client_hash(key: &str) -> u64 {
    health::stable_hash(key.as_bytes())
}

/// Where a request goes and how: what `WorkerTargets::send` needs besides the request.
pub(crate) struct Dispatch<'a> {
    pub(crate) upstream: &'a Upstream,
    /// The client key's hash for `hash_client` (0 otherwise).
    pub(crate) affinity: u64,
    /// The route's `retry`.
    pub(crate) retry: Option<&'a Retry>,
    /// The client accepts trailers (`UpstreamClient::round_trip`).
    pub(crate) te_trailers: bool,
}

/// Every target's state, shared by the workers.
pub(crate) struct Targets {
    metrics: Arc<Metrics>,
    live: Arc<Live>,
    clock: Clock,
    /// Counts changes of resolved addresses: a worker's cached groups are rebuilt when it moves.
    resolved: AtomicU64,
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    /// By target authority whose host is a name: what it resolved to.
    names: HashMap<Authority, Resolution, ahash::RandomState>,
    /// By upstream name: the group of the newest config that has the upstream.
    groups: HashMap<Arc<str>, Arc<Group>, ahash::RandomState>,
    /// By (upstream name, target label).
    states: HashMap<(Arc<str>, Arc<str>), Arc<TargetState>, ahash::RandomState>,
}

impl Targets {
    pub(crate) fn new(live: Arc<Live>, metrics: Arc<Metrics>) -> Self {
        let targets = Targets {
            metrics,
            live,
            clock: Clock::new(),
            resolved: AtomicU64::new(0),
            inner: Mutex::new(Registry::default()),
        };
        // Every target's series exists from the start, so /metrics lists them before traffic.
        let current = targets.live.snapshot();
        targets.groups(&current);
        targets
    }

    /// Resolve every target host name of the running config once (at start, before requests
    /// are served), each lookup bounded; a name that does not resolve is logged and tried
    /// through the connector per connection until it does.
    pub(crate) async fn resolve_names(&self) {
        let config = self.live.snapshot();
        let due = self.names_due(&config, true);
        let mut lookups = tokio::task::JoinSet::new();
        for (name, scheme) in due {
            lookups.spawn(async move {
                let found = resolve::lookup(&name, &scheme).await;
                (name, found)
            });
        }
        while let Some(done) = lookups.join_next().await {
            if let Ok((name, found)) = done {
                self.resolved(&name, found);
            }
        }
        self.groups(&config);
    }

    /// The names of `config`'s targets to look up now (`all`: every one not being looked up
    /// already, as after a reload), marked as being looked up and due again after their
    /// upstream's `resolve_interval`.
    fn names_due(&self, config: &Config, all: bool) -> Vec<(Authority, Scheme)> {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        let mut due = Vec::new();
        for u in &config.upstreams {
            for t in u.targets.iter().filter(|t| t.has_host_name()) {
                let entry = inner.names.entry(t.authority.clone()).or_default();
                if entry.resolving || (!all && entry.due_ms > now) {
                    continue;
                }
                entry.resolving = true;
                entry.due_ms = now.saturating_add(crate::millis::ceil(u.resolve_interval));
                due.push((t.authority.clone(), t.scheme.clone()));
            }
        }
        due
    }

    /// A lookup of `name` ended.
    fn resolved(&self, name: &Authority, found: Result<Vec<SocketAddr>, String>) {
        let changed = match self.inner.lock().names.get_mut(name) {
            Some(entry) => entry.update(name, found),
            // The name left the config meanwhile.
            None => false,
        };
        if changed {
            self.resolved.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Start the lookups that are due (`all` after a reload), each in a task of its own.
    fn resolve_due(self: &Arc<Self>, config: &Config, all: bool) {
        for (name, scheme) in self.names_due(config, all) {
            let targets = self.clone();
            tokio::spawn(async move {
                let found = resolve::lookup(&name, &scheme).await;
                targets.resolved(&name, found);
            });
        }
    }

    /// Run the active health checks that are due and keep the ejected gauges current (an
    /// ejection ends by time, with no request to notice), and resolve the targets' names when
    /// due (all of them after a reload); runs until the process ends. Reads the running config
    /// each time, so a reload's checks and targets apply at once.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // `resolve_names` resolved this one's names.
        let mut seen = self.live.snapshot();
        loop {
            tick.tick().await;
            let config = self.live.snapshot();
            let reloaded = !Arc::ptr_eq(&seen, &config);
            if reloaded {
                seen = config.clone();
            }
            self.resolve_due(&config, reloaded);
            let groups = self.groups(&config);
            let now = self.clock.now_ms();
            for (upstream, group) in config.upstreams.iter().zip(&groups) {
                let Some(hc) = &upstream.health_check else {
                    continue;
                };
                for (target, state) in group.endpoints.iter().zip(&group.targets) {
                    check::maybe_start(upstream, hc, target, state, now);
                }
            }
            let states: Vec<Arc<TargetState>> =
                self.inner.lock().states.values().cloned().collect();
            for state in states {
                state.refresh_gauge(now);
            }
        }
    }

    /// The groups of `config`'s upstreams, by `Upstream::index`.
    fn groups(&self, config: &Arc<Config>) -> Vec<Arc<Group>> {
        let mut inner = self.inner.lock();
        let groups: Vec<Arc<Group>> = config
            .upstreams
            .iter()
            .map(|u| inner.group(&self.metrics, u))
            .collect();
        // Forgetting is done for the running config only: a request still on an older one must
        // not make the newer one's targets start over.
        if Arc::ptr_eq(config, &self.live.snapshot()) {
            inner.prune(config, &groups, &self.metrics);
        }
        groups
    }
}

impl Registry {
    fn group(&mut self, metrics: &Metrics, u: &Arc<Upstream>) -> Arc<Group> {
        let mut endpoints = Vec::with_capacity(u.targets.len());
        for t in &u.targets {
            let addresses = self
                .names
                .get(&t.authority)
                .map_or(&[][..], |r| &r.addresses[..]);
            resolve::expand(t, addresses, &mut endpoints);
        }
        let previous = self.groups.get(&u.name);
        if let Some(g) = previous {
            if g.is_for(u, &endpoints) {
                return g.clone();
            }
        }
        let previous = previous.cloned();
        let states = endpoints
            .iter()
            .map(|t| {
                self.states
                    .entry((u.name.clone(), t.label.clone()))
                    .or_insert_with(|| Arc::new(TargetState::new(metrics, &u.name, &t.label)))
                    .clone()
            })
            .collect();
        let group = Arc::new(Group::new(
            u.clone(),
            states,
            endpoints,
            previous.as_deref(),
        ));
        self.groups.insert(u.name.clone(), group.clone());
        group
    }

    /// Forget the upstreams, targets and names `config` (the running one, whose groups are
    /// `groups`) no longer has, with their metric series: the maps then hold no more than the
    /// running config's targets (and, for a moment, those a request on an older config looked
    /// up again). A request still holding a forgotten target's state finishes with it.
    fn prune(&mut self, config: &Config, groups: &[Arc<Group>], metrics: &Metrics) {
        self.groups
            .retain(|name, _| config.upstreams.iter().any(|u| u.name == *name));
        let live: HashSet<(&str, &str), ahash::RandomState> = groups
            .iter()
            .flat_map(|g| g.targets.iter().map(|t| (&*t.upstream, &*t.label)))
            .collect();
        self.states.retain(|(name, label), state| {
            let kept = live.contains(&(&**name, &**label));
            if !kept {
                state.forget_metrics(metrics);
            }
            kept
        });
        self.names.retain(|name, _| {
            config
                .upstreams
                .iter()
                .any(|u| u.targets.iter().any(|t| t.authority == *name))
        });
    }
}

/// A config, the resolution count they were built at (`Targets::resolved`) and the groups of
/// its upstreams, by `Upstream::index`.
type ConfigGroups = (Arc<Config>, u64, Vec<Arc<Group>>);

/// One worker's view: the groups of the config its latest request ran under.
pub(crate) struct WorkerTargets {
    shared: Arc<Targets>,
    cache: Mutex<Option<ConfigGroups>>,
}

impl WorkerTargets {
    pub(crate) fn new(shared: Arc<Targets>) -> Self {
        WorkerTargets {
            shared,
            cache: Mutex::new(None),
        }
    }

    fn group(&self, config: &Arc<Config>, upstream: &Upstream) -> Option<Arc<Group>> {
        let resolved = self.shared.resolved.load(Ordering::Relaxed);
        let mut cache = self.cache.lock();
        let groups = match &mut *cache {
            Some((c, at, groups)) if Arc::ptr_eq(c, config) && *at == resolved => groups,
            // First request, another config (a reload; or a request still on the old one), or
            // a name resolved to other addresses.
            slot => {
                let groups = self.shared.groups(config);
                &mut slot.insert((config.clone(), resolved, groups)).2
            }
        };
        groups.get(upstream.index).cloned()
    }

    /// Send `req` to a target of `upstream` chosen by its balance (`affinity`: the client key's
    /// hash for `hash_client`). A failed connect (nothing sent) is tried once more on another
    /// target; with the route's `retry`, an idempotent request without a body is sent again
    /// (on another target when there is one) after the failures `retry` names.
    pub(crate) async fn send(
        &self,
        client: &UpstreamPool,
        config: &Arc<Config>,
        to: Dispatch<'_>,
        mut req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, GatewayError> {
        let Dispatch {
            upstream,
            affinity,
            retry,
            te_trailers,
        } = to;
        let Some(group) = self.group(config, upstream) else {
            // Unreachable: every upstream of a config has a group.
            return Err(GatewayError::UpstreamConnect("no targets".into()));
        };
        let replay = Replay::of(retry, &req).zip(retry);
        let mut retries = replay.as_ref().map_or(0, |(_, r)| r.attempts);
        let mut connect_retry = group.targets.len() > 1;
        let mut last = None;
        loop {
            let now = self.shared.clock.now_ms();
            let index = group.pick(upstream.balance, affinity, last, now);
            last = Some(index);
            // Same order by construction (`Registry::group`).
            let (Some(state), Some(target)) =
                (group.targets.get(index), group.endpoints.get(index))
            else {
                return Err(GatewayError::UpstreamConnect("no such target".into()));
            };
            // Awaited here rather than in a helper: one future less to move the request into.
            let mut in_flight = state.start();
            let outcome = client.send(upstream, target, req, te_trailers).await;
            if matches!(outcome, Err(SendError::Refused)) {
                in_flight.refused();
            }
            drop(in_flight);
            self.note(state, &upstream.outlier, &outcome);
            let again = match (outcome, &replay) {
                (Ok(resp), Some((replay, retry)))
                    if retries > 0 && retry::after_answer(retry, resp.status()) =>
                {
                    // The answer is dropped unread, and its connection with it.
                    retries -= 1;
                    replay.request()
                }
                (Ok(resp), _) => return Ok(resp),
                (Err(SendError::Unsent(unsent, _)), _) if connect_retry => {
                    connect_retry = false;
                    *unsent
                }
                (Err(SendError::Sent { failure, .. }), Some((replay, retry)))
                    if retries > 0 && retry::after_failure(retry, failure) =>
                {
                    retries -= 1;
                    replay.request()
                }
                (Err(SendError::Unsent(_, error) | SendError::Sent { error, .. }), _) => {
                    return Err(error)
                }
                (Err(SendError::Refused), _) => return Err(GatewayError::Overloaded),
            };
            tracing::debug!(upstream = &*upstream.name, "upstream request tried again");
            req = again;
        }
    }

    /// What an attempt says about its target's health.
    fn note(
        &self,
        state: &TargetState,
        outlier: &Outlier,
        outcome: &Result<Response<Incoming>, SendError>,
    ) {
        match outcome {
            Ok(_) => state.succeeded(),
            Err(
                SendError::Unsent(..)
                | SendError::Sent {
                    failure: SentFailure::Timeout,
                    ..
                },
            ) => state.failed(outlier, self.shared.clock.now_ms()),
            Err(SendError::Sent { .. } | SendError::Refused) => {}
        }
    }
}

#[cfg(test)]
mod tests;
