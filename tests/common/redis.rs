//! Real `redis-server` processes for tests, on free ports in a temporary directory: a single
//! node (optionally with a password and the DEBUG command), a 3-master cluster, and a sentinel
//! watching a master. Every process is killed when its handle drops.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::poll::poll;

/// How long a redis-server process may take to answer after it was spawned.
const STARTS_WITHIN: Duration = Duration::from_secs(10);

pub fn have_redis() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A port free now, whose cluster bus port (+10000) is free as well.
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

pub fn cli(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-p").arg(port.to_string());
    match password.map(|pw| pw.split_once(':')) {
        // "user:password" logs in as an ACL user.
        Some(Some((user, pw))) => {
            cmd.args(["--user", user, "--pass", pw, "--no-auth-warning"]);
        }
        Some(None) => {
            cmd.args(["-a", password.unwrap_or_default(), "--no-auth-warning"]);
        }
        None => {}
    }
    let out = cmd.args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn answers_ping(port: u16, password: Option<&str>) -> bool {
    cli(port, password, &["PING"]) == "PONG"
}

pub struct RedisServer {
    pub port: u16,
    pub password: Option<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(None, &[])
    }

    /// A plain server on a given port (e.g. one a gateway was told about before it existed).
    pub fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer {
            port,
            password: None,
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: Vec::new(),
        };
        server.spawn();
        server
    }

    /// `extra` are additional `redis-server` arguments such as `--enable-debug-command yes`.
    pub fn start_with(password: Option<&str>, extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            password: password.map(str::to_string),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        let tls = self.extra.iter().any(|a| a == "--tls-port");
        cmd.arg("--port")
            .arg(if tls {
                "0".to_string()
            } else {
                self.port.to_string()
            })
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path());
        // An ACL user ("user:password") comes from an --aclfile instead.
        if let Some(pw) = self.password.as_ref().filter(|pw| !pw.contains(':')) {
            cmd.arg("--requirepass").arg(pw);
        }
        cmd.args(&self.extra);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let (port, password) = (self.port, self.password.as_deref());
        if tls {
            poll(format!("redis TLS port {port} to open"), STARTS_WITHIN)
                .every(Duration::from_millis(50))
                .until(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        } else {
            poll(format!("redis on port {port} to start"), STARTS_WITHIN)
                .every(Duration::from_millis(50))
                .until(|| answers_ping(port, password));
        }
    }

    /// A TLS-only server on a free port with the given PEM files (no client certificates).
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> RedisServer {
        let port = free_port();
        let args: Vec<String> = vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            cert.display().to_string(),
            "--tls-key-file".into(),
            key.display().to_string(),
            "--tls-ca-cert-file".into(),
            ca.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let mut server = RedisServer {
            port,
            password: None,
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: args,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, self.password.as_deref(), args)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port after `kill` (an empty server: nothing was persisted).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Freeze the process (SIGSTOP): connections stay open but nothing answers.
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            signal(child.id(), "STOP");
        }
    }

    pub fn resume(&self) {
        if let Some(child) = &self.child {
            signal(child.id(), "CONT");
        }
    }

    /// Whether the process was started and not killed since.
    pub fn child_alive(&self) -> bool {
        self.child.is_some()
    }

    /// Script calls this server has executed (from INFO commandstats): EVALSHA, and FCALL (the
    /// checks, as Redis functions).
    pub fn script_calls(&self) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]);
        // A failed FCALL found no function, and the call went as a script (in a test; a refused
        // write would fail one too).
        command_calls(&info, "evalsha") + command_calls(&info, "fcall")
            - failed_calls(&info, "fcall")
    }

    /// Check calls this server ran as Redis functions (FCALL), failed ones not counted.
    pub fn fcall_calls(&self) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]);
        command_calls(&info, "fcall") - failed_calls(&info, "fcall")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// `calls=` of one command in an `INFO commandstats` reply.
pub fn command_calls(info: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Failed calls of `command` in `INFO commandstats` text.
pub fn failed_calls(info: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix("failed_calls="))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three masters, no replicas, slots spread by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
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
            "0".into(),
            "--cluster-yes".into(),
        ]);
        let out = Command::new("redis-cli").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        poll("the cluster to become ok", Duration::from_secs(20))
            .every(Duration::from_millis(100))
            .until(|| {
                nodes
                    .iter()
                    .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            });
        RedisCluster { nodes }
    }

    pub fn url(&self) -> String {
        let first = self.nodes[0].port;
        let rest: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("node=127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", rest.join("&"))
    }

    pub fn script_calls(&self) -> u64 {
        self.nodes.iter().map(|n| n.script_calls()).sum()
    }

    /// One command on whichever master owns its key (`redis-cli -c` follows MOVED).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        self.nodes[0].cli(&all)
    }
}

/// One master and one sentinel watching it as `mymaster`.
pub struct RedisSentinel {
    pub master: RedisServer,
    pub sentinel_port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        let master = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let sentinel_port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel down-after-milliseconds mymaster 2000\n",
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
        poll(
            format!("sentinel on port {sentinel_port} to start"),
            STARTS_WITHIN,
        )
        .every(Duration::from_millis(50))
        .until(|| answers_ping(sentinel_port, None));
        RedisSentinel {
            master,
            sentinel_port,
            child: Some(child),
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=mymaster",
            self.sentinel_port
        )
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
