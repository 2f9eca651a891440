//! Upstream pools: which of an upstream's targets a request goes to, their health, and trying
//! another target when a connect fails. Talking to the chosen target is `proxy::upstream`'s job
//! (one `UpstreamPool::send` call per attempt).
//!
//! - `Targets` (one per process, shared by the workers) holds each target's state, keyed by
//!   upstream name and `scheme://authority`, so health and counts survive a reload that keeps the
//!   target; a target that left the config is forgotten (with its metric series) once no request
//!   holds it. It also runs the active health checks and keeps the ejected gauges current
//!   (`run`).
//! - `WorkerTargets` (one per worker) caches the groups of the config its requests run under,
//!   so a request finds its group with an uncontended lock and an index.
//! - A request whose connect failed (nothing was sent) is tried once more on another target.

mod check;
mod health;
mod pick;

use std::collections::HashMap;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use parking_lot::Mutex;

use self::health::{Clock, TargetState};
use self::pick::Group;
use super::response::GatewayError;
use super::upstream::{SendError, UpstreamPool};
use crate::config::compiled::Upstream;
use crate::config::{Config, Live};
use crate::metrics::Metrics;

/// How often the background task looks at the targets.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The hash `hash_client` ranks targets by, from a client key (`net::client_key`).
pub(crate) fn client_hash(key: &str) -> u64 {
    health::stable_hash(key.as_bytes())
}

/// Every target's state, shared by the workers.
pub(crate) struct Targets {
    metrics: Arc<Metrics>,
    live: Arc<Live>,
    clock: Clock,
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
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
            inner: Mutex::new(Registry::default()),
        };
        // Every target's series exists from the start, so /metrics lists them before traffic.
        let current = targets.live.snapshot();
        targets.groups(&current);
        targets
    }

    /// Run the active health checks that are due and keep the ejected gauges current (an
    /// ejection ends by time, with no request to notice); runs until the process ends. Reads
    /// the running config each time, so a reload's checks and targets apply at once.
    pub(crate) async fn run(self: Arc<Self>) {
        let client = check::client();
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let config = self.live.snapshot();
            let groups = self.groups(&config);
            let now = self.clock.now_ms();
            for (upstream, group) in config.upstreams.iter().zip(&groups) {
                let Some(hc) = &upstream.health_check else {
                    continue;
                };
                for (target, state) in upstream.targets.iter().zip(&group.targets) {
                    check::maybe_start(&client, hc, target, state, now);
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
            inner.prune(config, &self.metrics);
        }
        groups
    }
}

impl Registry {
    fn group(&mut self, metrics: &Metrics, u: &Upstream) -> Arc<Group> {
        if let Some(g) = self.groups.get(&u.name) {
            if g.is_for(u.targets.iter().map(|t| &*t.label)) {
                return g.clone();
            }
        }
        let states = u
            .targets
            .iter()
            .map(|t| {
                self.states
                    .entry((u.name.clone(), t.label.clone()))
                    .or_insert_with(|| Arc::new(TargetState::new(metrics, &u.name, &t.label)))
                    .clone()
            })
            .collect();
        let group = Arc::new(Group::new(states));
        self.groups.insert(u.name.clone(), group.clone());
        group
    }

    /// Drop the groups of upstreams `config` no longer has, then every target state nothing
    /// holds any more (the map then has no more entries than configs in use have targets).
    fn prune(&mut self, config: &Config, metrics: &Metrics) {
        self.groups
            .retain(|name, _| config.upstreams.iter().any(|u| u.name == *name));
        self.states.retain(|_, state| {
            let held = Arc::strong_count(state) > 1;
            if !held {
                state.forget_metrics(metrics);
            }
            held
        });
    }
}

/// A config and the groups of its upstreams, by `Upstream::index`.
type ConfigGroups = (Arc<Config>, Vec<Arc<Group>>);

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
        let mut cache = self.cache.lock();
        let groups = match &mut *cache {
            Some((c, groups)) if Arc::ptr_eq(c, config) => groups,
            // First request, or another config (a reload; or a request still on the old one).
            slot => &mut slot.insert((config.clone(), self.shared.groups(config))).1,
        };
        groups.get(upstream.index).cloned()
    }

    /// Send `req` to a target of `upstream` chosen by its balance (`client`: the client key's
    /// hash for `hash_client`); a connect failure is tried once more on another target.
    pub(crate) async fn send(
        &self,
        client: &UpstreamPool,
        config: &Arc<Config>,
        upstream: &Upstream,
        affinity: u64,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, GatewayError> {
        let Some(group) = self.group(config, upstream) else {
            // Unreachable: every upstream of a config has a group.
            return Err(GatewayError::UpstreamConnect("no targets".into()));
        };
        let clock = self.shared.clock;
        let first = group.pick(upstream.balance, affinity, None, clock.now_ms());
        let req = match self.attempt(client, upstream, &group, first, req).await {
            Ok(resp) => return Ok(resp),
            Err(SendError::Unsent(req, _)) if group.targets.len() > 1 => *req,
            Err(SendError::Unsent(_, error) | SendError::Sent { error, .. }) => return Err(error),
        };
        let second = group.pick(upstream.balance, affinity, Some(first), clock.now_ms());
        match self.attempt(client, upstream, &group, second, req).await {
            Ok(resp) => Ok(resp),
            Err(SendError::Unsent(_, error) | SendError::Sent { error, .. }) => Err(error),
        }
    }

    async fn attempt(
        &self,
        client: &UpstreamPool,
        upstream: &Upstream,
        group: &Group,
        index: usize,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, SendError> {
        let (Some(state), Some(target)) = (group.targets.get(index), upstream.targets.get(index))
        else {
            return Err(SendError::Unsent(
                Box::new(req),
                GatewayError::UpstreamConnect("no such target".into()),
            ));
        };
        let in_flight = state.start();
        let result = client.send(upstream, target, req).await;
        drop(in_flight);
        match &result {
            Ok(_) => state.succeeded(),
            Err(
                SendError::Unsent(..)
                | SendError::Sent {
                    target_fault: true, ..
                },
            ) => state.failed(&upstream.outlier, self.shared.clock.now_ms()),
            Err(SendError::Sent { .. }) => {}
        }
        result
    }
}
