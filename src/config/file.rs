//! The config file exactly as written in TOML (the keys are described in README.md
//! "Configuration", docs/operations.md and docs/policies.md; `config/rategate.toml` is a commented
//! example).
//!
//! Unknown keys are errors everywhere. Optional keys are `Option`s and their defaults are the
//! `DEFAULT_*` constants below, applied by `validate`: keeping "absent" visible lets validation
//! tell a default apart from a value the operator wrote and point at the latter. Values that are
//! checked after parsing are `Spanned` so an error can name their line and column. Strings marked
//! "env" get `${NAME}` substitution.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::compiled::{AlertFormat, Algorithm, Mode, OnError, StoreKind};
use super::duration;
use crate::uri_path::{EscapedSlashes, Semicolons};

pub const DEFAULT_SERVER_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080));
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Far above any fd limit a host grants; only there to keep the number sane.
pub const MAX_MAX_CONNECTIONS: u64 = 1 << 24;
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9100));
pub const DEFAULT_STORE_KIND: StoreKind = StoreKind::Memory;
pub const DEFAULT_STORE_URL: &str = "redis://127.0.0.1:6379/0";
pub const DEFAULT_KEY_PREFIX: &str = "rategate:";
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
pub const DEFAULT_ON_ERROR: OnError = OnError::Fallback;
pub const DEFAULT_MAX_MEMORY_KEYS: usize = 1_000_000;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MODE: Mode = Mode::Enforce;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
pub const DEFAULT_BLOCK_MEMORY: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_ACCESS_LOG: bool = true;
pub const DEFAULT_FORWARD_CLIENT_IP_HEADERS: bool = true;
pub const DEFAULT_ALERT_FORMAT: AlertFormat = AlertFormat::Json;
pub const DEFAULT_THRESHOLD_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_ALERT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_ALERT_MAX_RETRIES: u32 = 3;
pub const DEFAULT_ALERT_QUEUE_SIZE: usize = 1000;
pub const DEFAULT_PATH_SEMICOLONS: Semicolons = Semicolons::Reject;
pub const DEFAULT_ESCAPED_SLASHES: EscapedSlashes = EscapedSlashes::Keep;
// Policy `key` defaults to ["ip"], `burst` to `limit`, `block_max` to 24h (or `block_for` when
// longer), route `cost` to 1 and `max_cost` to 100 (see `compiled`), route `methods` to any method
// and `strip_prefix` to false; those are applied where the values are compiled.

/// A string value; `${NAME}` references are substituted when it is compiled.
pub type EnvString = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub store: Store,
    #[serde(default)]
    pub access: Access,
    #[serde(default)]
    pub upstream: Vec<Upstream>,
    /// Spanned so that a policy missing its window can be pointed at.
    #[serde(default)]
    pub policy: Vec<Spanned<Policy>>,
    /// Spanned so that a route missing its target can be pointed at.
    #[serde(default)]
    pub route: Vec<Spanned<Route>>,
    /// Optional webhook alerts.
    pub alerts: Option<Alerts>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// env; socket address.
    pub listen: Option<EnvString>,
    /// CIDRs or bare IPs.
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub ipv6_prefix: Option<Spanned<u64>>,
    pub header_read_timeout: Option<duration::Positive>,
    pub max_header_bytes: Option<Spanned<u64>>,
    pub shutdown_grace: Option<duration::Any>,
    /// Keep-alive connections with no request in flight close after this.
    pub idle_timeout: Option<duration::Positive>,
    /// A response that makes no write progress for this long is cut.
    pub send_timeout: Option<duration::Positive>,
    /// Concurrent proxy connections; unset = derived from the fd limit at start.
    pub max_connections: Option<Spanned<u64>>,
    /// One log line per request (target `rategate::access`).
    pub access_log: Option<bool>,
    /// true: the client-IP headers (X-Real-IP, Forwarded, True-Client-IP, CF-Connecting-IP,
    /// X-Client-IP, X-Cluster-Client-IP, Fastly-Client-IP) reach the upstream only from trusted
    /// proxies; false: from anyone, as received.
    pub forward_client_ip_headers: Option<bool>,
    pub tls: Option<Tls>,
    /// `;` path parameters: "reject" (default), "strip" or "keep".
    pub path_semicolons: Option<Semicolons>,
    /// `%2F` / `%5C` in paths: "keep" (default), "reject" or "decode".
    pub escaped_slashes: Option<EscapedSlashes>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// env; PEM certificate chain.
    pub cert: EnvString,
    /// env; PEM private key.
    pub key: EnvString,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// env; socket address.
    pub listen: Option<EnvString>,
    /// env; bearer token for /admin/*.
    pub token: Option<EnvString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    pub kind: Option<StoreKind>,
    /// env; Redis URL (used when `kind = "redis"`).
    pub url: Option<EnvString>,
    /// env.
    pub key_prefix: Option<EnvString>,
    pub timeout: Option<duration::Positive>,
    pub on_error: Option<OnError>,
    pub max_memory_keys: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// CIDRs or bare IPs never limited nor blocked.
    pub allow: Option<Vec<Spanned<String>>>,
    /// CIDRs or bare IPs always answered 403.
    pub deny: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: Spanned<String>,
    /// env; `http://` or `https://` URL, optionally with a base path.
    pub url: EnvString,
    pub connect_timeout: Option<duration::Positive>,
    pub timeout: Option<duration::Positive>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: Spanned<String>,
    pub algorithm: Spanned<Algorithm>,
    pub limit: Spanned<u64>,
    /// Required, except for `concurrency` (which has `lease` instead).
    pub window: Option<Spanned<duration::Positive>>,
    /// `concurrency` only: how long a lease is held without renewal (default 60s).
    pub lease: Option<Spanned<duration::Positive>>,
    pub burst: Option<Spanned<u64>>,
    pub key: Option<Spanned<Vec<Spanned<String>>>>,
    pub block_for: Option<Spanned<duration::Positive>>,
    /// Escalating blocks (need `block_for`).
    pub block_multiplier: Option<Spanned<u64>>,
    pub block_max: Option<Spanned<duration::Positive>>,
    pub block_memory: Option<Spanned<duration::Positive>>,
    pub mode: Option<Mode>,
    /// Charge only responses with one of these statuses (after the upstream answered).
    pub count_status: Option<Spanned<Vec<Spanned<u64>>>>,
    /// `"errors"`: charge only responses with a status of 400 or more.
    pub count: Option<Spanned<CountWord>>,
    /// Per key-value limits: `{ "gold-key" = 1000 }`.
    pub overrides: Option<Spanned<BTreeMap<String, Spanned<u64>>>>,
    /// A TOML file of `"key" = limit` lines, relative to this config file.
    pub overrides_file: Option<Spanned<String>>,
    pub retry_after_jitter: Option<Spanned<duration::Positive>>,
}

/// The words `count` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountWord {
    Errors,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Spanned<String>,
    pub path: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub host: Option<Spanned<String>>,
    pub upstream: Option<Spanned<String>>,
    pub respond: Option<Spanned<Respond>>,
    pub policies: Option<Vec<Spanned<String>>>,
    pub strip_prefix: Option<Spanned<bool>>,
    /// Match the path regardless of ASCII letter case (default false).
    pub case_insensitive: Option<bool>,
    /// Units a request without `cost_header` charges (default 1).
    pub cost: Option<Spanned<u64>>,
    /// A request header carrying the request's cost.
    pub cost_header: Option<Spanned<String>>,
    /// Largest cost `cost_header` may name (default 100).
    pub max_cost: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// env; `http://` or `https://` URL the alerts are POSTed to.
    pub webhook_url: EnvString,
    pub format: Option<AlertFormat>,
    /// env; bearer token sent with each alert.
    pub token: Option<EnvString>,
    /// Name of an environment variable holding the bearer token (instead of `token`).
    pub token_env: Option<Spanned<String>>,
    /// Alert once when one client is rejected this many times within `threshold_window`.
    pub rejections_threshold: Option<Spanned<u64>>,
    pub threshold_window: Option<Spanned<duration::Positive>>,
    /// Per delivery attempt.
    pub timeout: Option<duration::Positive>,
    pub max_retries: Option<Spanned<u64>>,
    pub queue_size: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    pub status: Spanned<u64>,
    /// env; default empty.
    pub body: Option<EnvString>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let file: File = toml::from_str("").unwrap();
        assert!(file.server.listen.is_none());
        assert!(file.route.is_empty());
    }

    #[test]
    fn spec_example_deserializes() {
        let text = r#"
            [server]
            listen = "0.0.0.0:8080"
            trusted_proxies = ["10.0.0.0/8"]
            ipv6_prefix = 64
            header_read_timeout = "10s"
            max_header_bytes = 16384
            shutdown_grace = "30s"
            [server.tls]
            cert = "certs/server.pem"
            key = "certs/server.key"

            [admin]
            listen = "127.0.0.1:9100"
            token = "${RATEGATE_ADMIN_TOKEN}"

            [store]
            kind = "redis"
            url = "redis://127.0.0.1:6379/0"
            key_prefix = "rategate:"
            timeout = "50ms"
            on_error = "fallback"
            max_memory_keys = 1000000

            [access]
            allow = ["127.0.0.1/32"]
            deny = ["203.0.113.0/24"]

            [[upstream]]
            name = "api"
            url = "http://127.0.0.1:8081"
            connect_timeout = "2s"
            timeout = "30s"

            [[policy]]
            name = "auth"
            algorithm = "sliding_window"
            limit = 30
            window = "60s"
            burst = 10
            key = ["ip"]
            block_for = "10m"
            mode = "shadow"

            [[route]]
            name = "auth"
            path_prefix = "/api/auth"
            methods = ["POST"]
            host = "api.example.com"
            upstream = "api"
            policies = ["auth"]
            strip_prefix = false
            respond = { status = 200, body = "ok" }
        "#;
        let file: File = toml::from_str(text).unwrap();
        assert_eq!(file.store.kind, Some(StoreKind::Redis));
        assert_eq!(file.policy[0].get_ref().mode, Some(Mode::Shadow));
        assert_eq!(
            *file.policy[0].get_ref().algorithm.get_ref(),
            Algorithm::SlidingWindow
        );
        assert_eq!(
            file.server.shutdown_grace,
            Some(duration::Any(Duration::from_secs(30)))
        );
        let route = file.route[0].get_ref();
        assert_eq!(
            route
                .respond
                .as_ref()
                .map(|r| *r.get_ref().status.get_ref()),
            Some(200)
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        for text in [
            "bogus = 1",
            "[server]\nlisten_addr = \"x\"",
            "[server.tls]\ncert = \"a\"\nkey = \"b\"\nca = \"c\"",
            "[[route]]\nname = \"r\"\nrespond = { status = 200, headers = {} }",
        ] {
            let err = toml::from_str::<File>(text).unwrap_err();
            assert!(err.message().contains("unknown field"), "{text}: {err}");
        }
    }
}
