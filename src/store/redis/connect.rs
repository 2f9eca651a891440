//! The Redis store's connections: how they are built, kept alive through resharding, failover and
//! restarts, and how a call is sent.
//!
//! Three fred behaviours shape this module (fred 10.1):
//! - A cluster redirection (`MOVED`, `ASK`) is followed inside fred, and following it spends one
//!   of the command's write attempts. With one attempt, a `MOVED` fails the command and an `ASK`
//!   ends the client's routing task for good ("Max attempts reached"): the client then never
//!   answers again and every call on it times out, long after the cluster is healthy. So commands
//!   get [`ATTEMPTS`], and a client whose routing task ends anyway is started again ([`start`]).
//! - Extra attempts must not mean re-sending a script call that may already have run: a command
//!   that was in flight when its connection dropped would be re-sent after the reconnect and
//!   charge twice. Script calls therefore go out with fred's per-command `fail_fast` ([`Conn`]),
//!   which fails such a command (the caller applies `on_error`) and fails at once while the client
//!   is reconnecting, instead of queueing it behind the reconnect. A redirection is not a resend:
//!   the node that redirected did not run the script.
//! - A pool is several independent clients. Behind Sentinel each finds the master on its own, so
//!   after a failover one of them can keep talking to the old master. [`start`] keeps them
//!   together: when one client reconnects to a different server, the others are made to reconnect
//!   (and so ask the sentinels again); and a `READONLY` reply (a demoted master) makes a client
//!   reconnect instead of returning error after error.

use std::time::Duration;

use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::{Config, Pool, ReconnectPolicy, ServerConfig};
use fred::types::config::Server;
use fred::types::config::{Options, UnresponsiveConfig};
use fred::types::{Builder, ClusterHash, CustomCommand, MultipleKeys, Resp3Frame, Value};

use super::StoreError;
use crate::config::compiled::StoreSettings;

/// Write attempts per command: the first write and up to two redirections (an `ASK` during a
/// slot migration, then a `MOVED` once it completes).
const ATTEMPTS: u32 = 3;

/// Pause before starting again a client whose routing task ended, so a client that keeps failing
/// does not spin.
const RESTART_PAUSE: Duration = Duration::from_millis(100);

/// The store's clients: a pool for commands and one client for pub/sub.
pub(super) struct Clients {
    pub(super) pool: Pool,
    pub(super) subscriber: fred::clients::Client,
    /// Behind Sentinel: one connection per sentinel with the service name it watches.
    watchers: Vec<(fred::clients::Client, String)>,
}

/// Per sentinel, a connection that listens for `+switch-master` (see [`watch_sentinels`]).
fn sentinel_watchers(
    config: &Config,
    timeout: Duration,
) -> Result<Vec<(fred::clients::Client, String)>, StoreError> {
    let ServerConfig::Sentinel {
        hosts,
        service_name,
        ..
    } = &config.server
    else {
        return Ok(Vec::new());
    };
    hosts
        .iter()
        .map(|sentinel| {
            let mut c = config.clone();
            c.server = ServerConfig::Centralized {
                server: sentinel.clone(),
            };
            // Sentinels have no databases.
            c.database = None;
            let client = configure(Builder::from_config(c), timeout)
                .build()
                .map_err(|e| StoreError::Unavailable(format!("cannot build Redis client: {e}")))?;
            Ok((client, service_name.clone()))
        })
        .collect()
}

/// The connection, timeout and reconnect settings every client shares.
fn configure(mut builder: Builder, timeout: Duration) -> Builder {
    builder
        .with_connection_config(|c| {
            c.connection_timeout = timeout.max(Duration::from_secs(1));
            c.internal_command_timeout = timeout.max(Duration::from_secs(1));
            c.max_command_attempts = ATTEMPTS;
            // A stalled server (CLIENT PAUSE, SIGSTOP) is dropped and reconnected.
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(Duration::from_secs(2)),
                interval: Duration::from_millis(500),
            };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
        })
        // Back-off capped at 1 s: an instance is back in rotation (readiness, the breaker's
        // probe) within about 2 s of Redis answering again.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 1_000, 2));
    builder
}

/// Build the clients for `settings` (nothing connects yet; see [`start`]).
pub(super) fn build(settings: &StoreSettings, pool_size: usize) -> Result<Clients, StoreError> {
    let mut config = Config::from_url(&settings.url).map_err(|e| {
        StoreError::Unavailable(format!(
            "invalid store.url {}: {e}",
            super::redact(&settings.url)
        ))
    })?;
    // Keep retrying (with backoff) when Redis is unreachable at start, instead of giving up.
    config.fail_fast = false;
    let watchers = sentinel_watchers(&config, settings.timeout)?;
    let builder = configure(Builder::from_config(config), settings.timeout);
    let pool = builder
        .build_pool(pool_size)
        .map_err(|e| StoreError::Unavailable(format!("cannot build Redis client: {e}")))?;
    let subscriber = builder
        .build()
        .map_err(|e| StoreError::Unavailable(format!("cannot build Redis client: {e}")))?;
    Ok(Clients {
        pool,
        subscriber,
        watchers,
    })
}

/// Connect every client, each under a supervisor that starts it again if its routing task ends
/// (see the module docs), and keep a Sentinel pool on one master.
pub(super) fn start(clients: &Clients) {
    let mut all: Vec<fred::clients::Client> = clients.pool.clients().to_vec();
    all.push(clients.subscriber.clone());
    if matches!(
        clients.subscriber.client_config().server,
        ServerConfig::Sentinel { .. }
    ) {
        follow_one_master(&all);
    }
    for (watcher, service) in &clients.watchers {
        watch_sentinel(watcher, service, all.clone());
        supervise(watcher.clone());
    }
    for client in all {
        log_connection_errors(&client);
        supervise(client);
    }
}

/// Move every client connected anywhere but `master` (they ask the sentinels again).
fn move_to(clients: &[fred::clients::Client], master: &Server) {
    for client in clients {
        let at = client.active_connections();
        // A client with no connection is connecting and will ask the sentinels itself.
        if let Some(was) = at.first().filter(|_| !at.contains(master)) {
            tracing::info!(
                master = %master,
                was = %was,
                "Redis master changed; moving a pooled connection to it"
            );
            let client = client.clone();
            tokio::spawn(async move {
                if let Err(e) = client.force_reconnection().await {
                    tracing::warn!(error = %e, "cannot move a Redis connection");
                }
            });
        }
    }
}

/// Listen on one sentinel for `+switch-master <service> <old ip> <old port> <new ip> <new
/// port>`, published when a failover completes: connections that never dropped (the old master
/// only stalled, or was healthy for a manual failover) learn of it at once instead of when the
/// sentinels demote the old master and kill its clients, about 10 s after it is back.
fn watch_sentinel(
    watcher: &fred::clients::Client,
    service: &str,
    clients: Vec<fred::clients::Client>,
) {
    let service = service.to_string();
    drop(watcher.on_message(move |msg| {
        let switched = msg.value.as_str().and_then(|text| {
            let f: Vec<&str> = text.split(' ').collect();
            match f.as_slice() {
                [name, _, _, ip, port] if *name == service => {
                    port.parse().ok().map(|p| Server::new(*ip, p))
                }
                _ => None,
            }
        });
        if let Some(master) = switched {
            move_to(&clients, &master);
        }
        async { Ok(()) }
    }));
    let client = watcher.clone();
    // Subscribe on every (re)connect.
    drop(watcher.on_reconnect(move |_| {
        let client = client.clone();
        async move {
            if let Err(e) = client.subscribe("+switch-master").await {
                tracing::warn!(error = %e, "cannot subscribe to Sentinel failovers");
            }
            Ok(())
        }
    }));
}

/// The Sentinel client rule for pools: when one client (re)connects to a master, every other
/// client of the instance that is connected elsewhere reconnects, and so asks the sentinels again.
/// Without it a client that reconnected to a stalled master just before it resumed keeps running
/// checks there until the sentinels demote it (about 10 s), and those counts are thrown away.
/// Each client verifies the master's `ROLE` when connecting, so the clients converge on the master
/// the sentinels agree on.
fn follow_one_master(clients: &[fred::clients::Client]) {
    for (i, client) in clients.iter().enumerate() {
        let others: Vec<fred::clients::Client> = clients
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, c)| c.clone())
            .collect();
        // The listener task lives as long as the client; its handle is not needed.
        drop(client.on_reconnect(move |master| {
            move_to(&others, &master);
            async { Ok(()) }
        }));
    }
}

/// Run `client`'s connection task, and run it again whenever it ends with an error (fred ends it
/// on some redirection failures and never restarts it by itself). Ends when the client quits.
fn supervise(client: fred::clients::Client) {
    tokio::spawn(async move {
        loop {
            let ended = client.connect().await;
            let error = match ended {
                Ok(Ok(())) => return,
                Ok(Err(e)) if e.is_canceled() => return,
                Ok(Err(e)) => e.to_string(),
                Err(join) => join.to_string(),
            };
            tracing::warn!(
                error = %error,
                "Redis client stopped routing commands; reconnecting it"
            );
            tokio::time::sleep(RESTART_PAUSE).await;
        }
    });
}

/// Connection failures (refused, wrong password, TLS) are logged where operators look; fred
/// retries with backoff, so this logs at most every couple of seconds per client.
fn log_connection_errors(client: &fred::clients::Client) {
    drop(client.on_error(|(error, server)| async move {
        tracing::warn!(
            server = ?server.map(|s| s.to_string()),
            error = %error,
            "Redis connection error"
        );
        Ok(())
    }));
}

/// One pooled client, for calls that must not be re-sent after a connection drop (see the
/// module docs): script calls, which may charge.
#[derive(Clone, Copy)]
pub(super) struct Conn<'a> {
    client: &'a fred::clients::Client,
}

impl<'a> Conn<'a> {
    pub(super) fn new(client: &'a fred::clients::Client) -> Self {
        Conn { client }
    }

    /// `EVALSHA sha keys args`: the reply's frame (see `script`).
    pub(super) async fn evalsha<S, K, V>(
        &self,
        sha: S,
        keys: K,
        args: V,
    ) -> Result<Resp3Frame, fred::error::Error>
    where
        S: Into<Value>,
        K: Into<MultipleKeys>,
        V: IntoIterator<Item = Value>,
    {
        self.script("EVALSHA", sha.into(), keys.into(), args).await
    }

    /// `FCALL name keys args`: the reply's frame (see `script`).
    pub(super) async fn fcall<K, V>(
        &self,
        name: &str,
        keys: K,
        args: V,
    ) -> Result<Resp3Frame, fred::error::Error>
    where
        K: Into<MultipleKeys>,
        V: IntoIterator<Item = Value>,
    {
        self.script("FCALL", Value::from(name), keys.into(), args)
            .await
    }

    /// `FUNCTION LOAD library` on the node owning `slot` (any node without one).
    pub(super) async fn function_load(
        &self,
        library: &str,
        slot: Option<u16>,
    ) -> Result<(), fred::error::Error> {
        self.function(vec![Value::from("LOAD"), Value::from(library)], slot)
            .await
            .map(drop)
    }

    /// The names of the function libraries starting with `prefix` on the node owning `slot`.
    pub(super) async fn function_list(
        &self,
        prefix: &str,
        slot: Option<u16>,
    ) -> Result<Vec<String>, fred::error::Error> {
        let args = vec![
            Value::from("LIST"),
            Value::from("LIBRARYNAME"),
            Value::from(format!("{prefix}*")),
        ];
        let frame = self.function(args, slot).await?;
        let Value::Array(libraries) = Value::try_from(frame)? else {
            return Ok(Vec::new());
        };
        // Each library is a map (RESP3) or a list of name and value pairs (RESP2).
        let name = |library: Value| -> Option<String> {
            let pairs: Vec<(Value, Value)> = match library {
                Value::Map(map) => map
                    .inner()
                    .into_iter()
                    .map(|(k, v)| (k.into(), v))
                    .collect(),
                Value::Array(items) => {
                    let mut items = items.into_iter();
                    std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
                }
                _ => return None,
            };
            pairs
                .into_iter()
                .find(|(k, _)| k.as_str().as_deref() == Some("library_name"))
                .and_then(|(_, v)| v.as_string())
                .filter(|n| n.starts_with(prefix))
        };
        Ok(libraries.into_iter().filter_map(name).collect())
    }

    /// `FUNCTION DELETE name` on the node owning `slot`; one already gone is not an error.
    pub(super) async fn function_delete(
        &self,
        name: &str,
        slot: Option<u16>,
    ) -> Result<(), fred::error::Error> {
        match self
            .function(vec![Value::from("DELETE"), Value::from(name)], slot)
            .await
        {
            Err(e) if e.details().contains("not found") => Ok(()),
            other => other.map(drop),
        }
    }

    /// A `FUNCTION` subcommand on the node owning `slot` (any node without one).
    async fn function(
        &self,
        args: Vec<Value>,
        slot: Option<u16>,
    ) -> Result<Resp3Frame, fred::error::Error> {
        let slot = slot.map_or(ClusterHash::Random, ClusterHash::Custom);
        let frame = Box::pin(
            self.client
                .with_options(&fail_fast())
                .custom_raw(CustomCommand::new_static("FUNCTION", slot, false), args),
        )
        .await?;
        error_of(frame)
    }

    /// `EVAL text keys args`: the reply's frame (see `script`).
    pub(super) async fn eval<S, K, V>(
        &self,
        text: S,
        keys: K,
        args: V,
    ) -> Result<Resp3Frame, fred::error::Error>
    where
        S: Into<Value>,
        K: Into<MultipleKeys>,
        V: IntoIterator<Item = Value>,
    {
        self.script("EVAL", text.into(), keys.into(), args).await
    }

    /// A script call as a command of our own: fred's `evalsha`/`eval` ignore per-command options
    /// (fred issue 353), a custom command honours them. It is routed by its first key's slot, as
    /// fred routes a script call. The reply comes as its frame, not converted to `Value`s, so a
    /// check call's integers are read straight from it (`batch::answer`); an error reply is the
    /// error fred's conversion gives it (same kind and text as `custom` returns).
    async fn script(
        &self,
        command: &'static str,
        script: Value,
        keys: MultipleKeys,
        args: impl IntoIterator<Item = Value>,
    ) -> Result<Resp3Frame, fred::error::Error> {
        let keys = keys.inner();
        let slot = keys.first().map_or(ClusterHash::Random, |k| {
            ClusterHash::Custom(fred::util::redis_keyslot(k.as_bytes()))
        });
        let args = args.into_iter();
        let mut all = Vec::with_capacity(2 + keys.len() + args.size_hint().0);
        all.push(script);
        all.push(Value::Integer(
            i64::try_from(keys.len()).unwrap_or(i64::MAX),
        ));
        all.extend(keys.into_iter().map(Value::from));
        all.extend(args);
        let client = self.client.with_options(&fail_fast());
        // Boxed: fred's future nests deep enough to overflow the compiler's layout depth limit in
        // the request path's futures; one allocation next to the several fred makes per call.
        let frame =
            Box::pin(client.custom_raw(CustomCommand::new_static(command, slot, false), all))
                .await?;
        error_of(frame)
    }
}

fn fail_fast() -> Options {
    Options {
        fail_fast: true,
        ..Options::default()
    }
}

/// An error reply as the error fred's conversion gives it (same kind and text as `custom`
/// returns); any other frame as it is.
fn error_of(frame: Resp3Frame) -> Result<Resp3Frame, fred::error::Error> {
    if matches!(
        frame,
        Resp3Frame::SimpleError { .. } | Resp3Frame::BlobError { .. }
    ) {
        return Err(Value::try_from(frame).err().unwrap_or_else(|| {
            fred::error::Error::new(fred::error::ErrorKind::Unknown, "an error reply")
        }));
    }
    Ok(frame)
}
