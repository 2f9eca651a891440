//! The registry with resolutions fed by hand (no resolver): targets follow a name's address
//! set, and an address that stays keeps its health.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::resolve::MAX_ADDRESSES;
use super::*;
use crate::config::compiled::UpstreamTarget;

/// Compiled anew on each call, as a reload does.
fn compile() -> Config {
    crate::config::load_str(
        Path::new("test.toml"),
        r#"
[[upstream]]
name = "api"
targets = ["http://api.internal:8080", "http://10.0.0.9:8080"]

[[route]]
name = "all"
path_prefix = "/"
upstream = "api"
"#,
    )
    .unwrap()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn labels(group: &Group) -> Vec<&str> {
    group.endpoints.iter().map(|t| &*t.label).collect()
}

/// Build the running config's group and forget what it no longer has, as `Targets::groups` does.
fn regroup(registry: &mut Registry, config: &Config, metrics: &Metrics) -> Arc<Group> {
    let group = registry.group(metrics, &config.upstreams[0]);
    registry.prune(config, std::slice::from_ref(&group), metrics);
    group
}

fn resolve(
    registry: &mut Registry,
    name: &Authority,
    found: Result<Vec<SocketAddr>, String>,
) -> bool {
    registry
        .names
        .entry(name.clone())
        .or_default()
        .update(name, found)
}

#[test]
fn targets_follow_the_addresses_a_name_resolves_to() {
    let config = compile();
    let metrics = Metrics::new().unwrap();
    let mut registry = Registry::default();
    let name = config.upstreams[0].targets[0].authority.clone();

    // Not resolved yet: the name is one target, connected to by name.
    let group = regroup(&mut registry, &config, &metrics);
    assert_eq!(
        labels(&group),
        ["http://api.internal:8080", "http://10.0.0.9:8080"]
    );
    assert_eq!(group.endpoints[0].address, None);

    // Resolved (in any order, with repeats): one target per address, sorted; Host stays the name.
    let found = vec![
        addr("10.0.0.2:8080"),
        addr("10.0.0.1:8080"),
        addr("10.0.0.1:8080"),
    ];
    assert!(resolve(&mut registry, &name, Ok(found)));
    let group = regroup(&mut registry, &config, &metrics);
    assert_eq!(
        labels(&group),
        [
            "http://api.internal:8080 (10.0.0.1)",
            "http://api.internal:8080 (10.0.0.2)",
            "http://10.0.0.9:8080",
        ]
    );
    assert_eq!(group.endpoints[1].address, Some(addr("10.0.0.2:8080")));
    assert_eq!(group.endpoints[1].host_header, "api.internal:8080");
    assert_eq!(group.endpoints[1].authority, name);
    // The unresolved name's state (and series) is gone.
    assert!(!registry
        .states
        .keys()
        .any(|(_, label)| &**label == "http://api.internal:8080"));

    // 10.0.0.2 is ejected; then the name moves from 10.0.0.1 to 10.0.0.3.
    let outlier = Outlier {
        consecutive_failures: 1,
        base_ejection_time: Duration::from_secs(60),
        max_ejection_time: Duration::from_secs(60),
    };
    let ejected = group.targets[1].clone();
    ejected.failed(&outlier, 1);
    assert!(!ejected.available(2));
    assert!(resolve(
        &mut registry,
        &name,
        Ok(vec![addr("10.0.0.3:8080"), addr("10.0.0.2:8080")])
    ));
    let group = regroup(&mut registry, &config, &metrics);
    assert_eq!(
        labels(&group),
        [
            "http://api.internal:8080 (10.0.0.2)",
            "http://api.internal:8080 (10.0.0.3)",
            "http://10.0.0.9:8080",
        ]
    );
    // The address that stayed kept its state: still ejected.
    assert!(Arc::ptr_eq(&group.targets[0], &ejected));
    assert!(!group.targets[0].available(2));
    assert!(group.targets[1].available(2));
    assert!(!registry
        .states
        .keys()
        .any(|(_, label)| label.contains("10.0.0.1)")));

    // A failed or empty answer keeps the last addresses; the same set again changes nothing.
    assert!(!resolve(&mut registry, &name, Err("timed out".into())));
    assert!(!resolve(&mut registry, &name, Ok(Vec::new())));
    assert!(!resolve(
        &mut registry,
        &name,
        Ok(vec![addr("10.0.0.2:8080"), addr("10.0.0.3:8080")])
    ));
    let same = regroup(&mut registry, &config, &metrics);
    assert!(Arc::ptr_eq(&same, &group), "an unchanged group is reused");

    // A reload keeping the targets: the new config's group, over the same states.
    let reloaded = compile();
    let after = regroup(&mut registry, &reloaded, &metrics);
    assert!(!Arc::ptr_eq(&after, &group));
    assert!(Arc::ptr_eq(&after.targets[0], &ejected));
    assert_eq!(labels(&after), labels(&group));

    // At most MAX_ADDRESSES per name.
    let many = (1..=40)
        .map(|i| addr(&format!("10.1.0.{i}:8080")))
        .collect();
    assert!(resolve(&mut registry, &name, Ok(many)));
    let group = regroup(&mut registry, &reloaded, &metrics);
    assert_eq!(group.endpoints.len(), MAX_ADDRESSES + 1);
    assert_eq!(registry.states.len(), MAX_ADDRESSES + 1);
}

#[test]
fn only_host_names_are_resolved() {
    let config = compile();
    let targets = &config.upstreams[0].targets;
    assert!(targets[0].has_host_name());
    assert!(!targets[1].has_host_name());
    let v6 = UpstreamTarget {
        authority: "[::1]:8080".parse().unwrap(),
        ..targets[0].clone()
    };
    assert!(!v6.has_host_name());
}
