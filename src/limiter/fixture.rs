//! What the limiter's unit tests share: a limiter over an in-process store on a manual clock,
//! and routes, policies and clients to check against it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use super::{ClientId, Limiter, RequestView, Verdict};
use crate::clock::ManualClock;
use crate::config::compiled::{
    Algorithm, Mode, OnError, PathMatch, Policy, Route, StoreKind, StoreSettings, Target,
};
use crate::metrics::Metrics;
use crate::store::{AnyStore, MemoryStore};

pub(super) const T0: u64 = 1_700_006_400_000;

pub(super) fn settings(on_error: OnError) -> StoreSettings {
    StoreSettings {
        kind: StoreKind::Memory,
        url: String::new(),
        key_prefix: "rategate:".into(),
        timeout: Duration::from_millis(50),
        on_error,
        max_memory_keys: 1000,
        batch_max: 64,
        batch_in_flight: 2,
        batch_queue: 1024,
    }
}

pub(super) fn policy(name: &str, limit: u64, mode: Mode, block_for: Option<u64>) -> Arc<Policy> {
    Arc::new(Policy {
        block_for: block_for.map(Duration::from_millis),
        mode,
        ..Policy::new(name, Algorithm::FixedWindow, limit, Duration::from_secs(10))
    })
}

pub(super) fn route(policies: Vec<Arc<Policy>>) -> Route {
    Route {
        name: Arc::from("api"),
        path: PathMatch::Prefix("/".into()),
        methods: vec![],
        host: None,
        headers: Vec::new(),
        target: Target::Respond {
            status: StatusCode::OK,
            body: Bytes::new(),
        },
        policies,
        strip_prefix: false,
        case_insensitive: false,
        upgrade: Vec::new(),
        cost: Default::default(),
        auth: None,
        retry: None,
        index: 0,
    }
}

pub(super) fn client(ip: &str) -> ClientId {
    ClientId {
        ip: ip.parse().unwrap(),
        key: ip.into(),
    }
}

pub(super) struct Fixture {
    pub(super) limiter: Limiter,
    pub(super) metrics: Arc<Metrics>,
    pub(super) clock: ManualClock,
}

pub(super) fn fixture(max_keys: usize, on_error: OnError) -> Fixture {
    let clock = ManualClock::new(T0);
    let metrics = Arc::new(Metrics::new().unwrap());
    let store = AnyStore::Memory(MemoryStore::new(max_keys, Arc::new(clock.clone())));
    let limiter = Limiter::with_fallback_clock(
        store,
        &settings(on_error),
        metrics.clone(),
        Arc::new(clock.clone()),
    );
    Fixture {
        limiter,
        metrics,
        clock,
    }
}

pub(super) async fn check(f: &Fixture, route: &Route, ip: &str) -> Verdict {
    let headers = HeaderMap::new();
    let req = RequestView {
        method: &Method::GET,
        path: "/x",
        query: None,
        headers: &headers,
        cost: 1,
        identity: Default::default(),
    };
    f.limiter.check(route, &client(ip), req).await
}
