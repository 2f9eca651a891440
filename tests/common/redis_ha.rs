//! Redis topology changes for resilience tests: moving a cluster slot to another master (what
//! `redis-cli --cluster reshard` does, slot by slot), a cluster whose masters have replicas, and a
//! Sentinel deployment with a replica and three sentinels that can fail over.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::poll::poll;
use super::redis::{answers_ping, free_port, RedisServer};

/// How long a cluster or sentinel topology change may take to settle on a loaded machine.
const SETTLES_WITHIN: Duration = Duration::from_secs(30);

/// A cluster node's id.
pub fn node_id(node: &RedisServer) -> String {
    node.cli(&["CLUSTER", "MYID"])
}

/// The hash slot of `key`.
pub fn slot_of(node: &RedisServer, key: &str) -> u16 {
    node.cli(&["CLUSTER", "KEYSLOT", key]).parse().unwrap()
}

/// Whether `node` (a master) owns `slot`, by its own view of the cluster.
pub fn owns(node: &RedisServer, slot: u16) -> bool {
    let me = node_id(node);
    node.cli(&["CLUSTER", "NODES"]).lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.first() == Some(&me.as_str())
            && fields.iter().skip(8).any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                match (lo.parse::<u16>(), hi.parse::<u16>()) {
                    (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                    _ => false,
                }
            })
    })
}

/// Every key under `prefix` on `nodes` (each node's own keys).
pub fn keys_with_prefix<'a>(
    nodes: impl IntoIterator<Item = &'a RedisServer>,
    prefix: &str,
) -> Vec<String> {
    let pattern = format!("{prefix}*");
    nodes
        .into_iter()
        .flat_map(|n| {
            n.cli(&["--scan", "--pattern", &pattern])
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Move `slot` from `from` to `to` with its keys, the way `redis-cli --cluster reshard` does:
/// IMPORTING/MIGRATING, MIGRATE the keys (`ASK` redirections for keys already moved), then assign
/// the slot to `to` on every master (`MOVED` from then on). `masters` are all the cluster's
/// masters. Keys move one at a time with `pace` after each, as a big slot's keys would.
pub fn move_slot(
    masters: &[&RedisServer],
    slot: u16,
    from: &RedisServer,
    to: &RedisServer,
    pace: Duration,
) {
    let (from_id, to_id) = (node_id(from), node_id(to));
    let s = slot.to_string();
    assert_eq!(
        to.cli(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]),
        "OK"
    );
    assert_eq!(
        from.cli(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]),
        "OK"
    );
    loop {
        let keys = from.cli(&["CLUSTER", "GETKEYSINSLOT", &s, "1"]);
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let port = to.port.to_string();
        let mut args = vec![
            "MIGRATE",
            "127.0.0.1",
            &port,
            "",
            "0",
            "5000",
            "REPLACE",
            "KEYS",
        ];
        args.extend(keys.iter().copied());
        let out = from.cli(&args);
        assert!(out == "OK" || out == "NOKEY", "MIGRATE: {out}");
        std::thread::sleep(pace);
    }
    // The new owner first, as redis-cli does, so the old one's MOVED never points at a node that
    // does not know yet.
    assert_eq!(to.cli(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]), "OK");
    assert_eq!(from.cli(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]), "OK");
    for m in masters {
        if m.port != to.port && m.port != from.port {
            m.cli(&["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        }
    }
    poll(
        format!("every master to see slot {slot} on its new owner"),
        SETTLES_WITHIN,
    )
    .every(Duration::from_millis(50))
    .until(|| {
        masters
            .iter()
            .all(|m| node_owner(m, slot).as_deref() == Some(to_id.as_str()))
    });
}

/// The id of the master owning `slot` as `node` sees it.
fn node_owner(node: &RedisServer, slot: u16) -> Option<String> {
    node.cli(&["CLUSTER", "NODES"]).lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let owns = fields.iter().skip(8).any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
        });
        owns.then(|| fields[0].to_string())
    })
}

/// Three masters, each with one replica (`--cluster-replicas 1`): `nodes[0..3]` start as masters.
pub struct ReplicatedCluster {
    pub nodes: Vec<RedisServer>,
}

impl ReplicatedCluster {
    pub fn start() -> ReplicatedCluster {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(
                    None,
                    &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
                )
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend([
            "--cluster-replicas".into(),
            "1".into(),
            "--cluster-yes".into(),
        ]);
        let out = Command::new("redis-cli").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = ReplicatedCluster { nodes };
        poll(
            "the cluster to become ok with its replicas in sync",
            SETTLES_WITHIN,
        )
        .every(Duration::from_millis(100))
        .until(|| {
            cluster
                .nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                && cluster.nodes.iter().filter(|n| is_master(n)).count() == 3
                && cluster.nodes.iter().filter(|n| !is_master(n)).all(|n| {
                    n.cli(&["INFO", "replication"])
                        .contains("master_link_status:up")
                })
        });
        cluster
    }

    pub fn url(&self) -> String {
        let first = self.nodes[0].port;
        let rest: Vec<String> = self.nodes[1..3]
            .iter()
            .map(|n| format!("node=127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", rest.join("&"))
    }

    /// The index of the node that is the master owning `slot` now.
    pub fn master_of(&self, slot: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.child_alive() && is_master(n) && owns(n, slot))
            .unwrap_or_else(|| panic!("no master owns slot {slot}"))
    }

    /// The index of `master`'s replica.
    pub fn replica_of(&self, master: usize) -> usize {
        let id = node_id(&self.nodes[master]);
        self.nodes
            .iter()
            .position(|n| {
                n.child_alive()
                    && n.cli(&["CLUSTER", "NODES"]).lines().any(|l| {
                        l.contains("myself") && l.split_whitespace().nth(3) == Some(id.as_str())
                    })
            })
            .unwrap_or_else(|| panic!("node {master} has no replica"))
    }

    /// Wait until every live node reports `cluster_state:ok`.
    pub fn wait_ok(&self) {
        poll("the cluster to be ok", SETTLES_WITHIN)
            .every(Duration::from_millis(100))
            .until(|| {
                self.nodes
                    .iter()
                    .filter(|n| n.child_alive())
                    .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            });
    }
}

pub fn is_master(node: &RedisServer) -> bool {
    node.cli(&["ROLE"]).lines().next() == Some("master")
}

/// A master, its replica and three sentinels (quorum 2) watching them as `mymaster`, with a
/// short down-after so a stalled master is failed over within seconds.
pub struct SentinelGroup {
    /// `servers[0]` starts as the master, `servers[1]` as its replica.
    pub servers: Vec<RedisServer>,
    pub sentinel_ports: Vec<u16>,
    sentinels: Vec<Child>,
    dir: tempfile::TempDir,
}

impl SentinelGroup {
    pub fn start() -> SentinelGroup {
        let master = RedisServer::start();
        let replica = RedisServer::start();
        assert_eq!(
            replica.cli(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]),
            "OK"
        );
        poll("the replica to sync", SETTLES_WITHIN)
            .every(Duration::from_millis(50))
            .until(|| {
                replica
                    .cli(&["INFO", "replication"])
                    .contains("master_link_status:up")
            });
        let dir = tempfile::tempdir().unwrap();
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds mymaster 1000\n\
                     sentinel failover-timeout mymaster 5000\n",
                    dir.path().display(),
                    master.port
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            sentinels.push(child);
            sentinel_ports.push(port);
        }
        let group = SentinelGroup {
            servers: vec![master, replica],
            sentinel_ports,
            sentinels,
            dir,
        };
        // Each sentinel must know the replica and the other sentinels before a failover can be
        // agreed on.
        poll(
            "the sentinels to discover each other and the replica",
            SETTLES_WITHIN,
        )
        .every(Duration::from_millis(100))
        .until(|| {
            group.sentinel_ports.iter().all(|p| {
                answers_ping(*p, None) && {
                    let info = super::redis::cli(*p, None, &["SENTINEL", "MASTER", "mymaster"]);
                    field(&info, "num-other-sentinels") == Some("2")
                        && field(&info, "num-slaves") == Some("1")
                }
            })
        });
        group
    }

    pub fn url(&self) -> String {
        let rest: Vec<String> = self.sentinel_ports[1..]
            .iter()
            .map(|p| format!("node=127.0.0.1:{p}"))
            .collect();
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=mymaster&{}",
            self.sentinel_ports[0],
            rest.join("&")
        )
    }

    /// The port of the master as the sentinels agree on it.
    pub fn master_port(&self) -> Option<u16> {
        let reply = super::redis::cli(
            self.sentinel_ports[0],
            None,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"],
        );
        reply.lines().nth(1).and_then(|p| p.trim().parse().ok())
    }
}

/// A field of a `SENTINEL MASTER` reply (alternating name and value lines).
fn field<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    let lines: Vec<&str> = reply.lines().collect();
    lines
        .chunks_exact(2)
        .find(|kv| kv[0] == name)
        .map(|kv| kv[1])
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for child in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
