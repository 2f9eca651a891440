//! The config file exactly as written in TOML (every key, with its type, default and range, is in
//! docs/reference.md section 2 "Config schema"; docs/operations.md and docs/policies.md explain
//! them; `config/rategate.toml` is a commented example).
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

use super::compiled::{AlertFormat, Algorithm, Balance, ClientAuth, Mode, OnError, StoreKind};
use super::duration;
use crate::uri_path::{EscapedSlashes, Semicolons};

pub(crate) const DEFAULT_SERVER_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080));
pub(crate) const DEFAULT_IPV6_PREFIX: u8 = 64;
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Like nginx's `proxy_read_timeout` for upgraded connections.
pub(crate) const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Far above any fd limit a host grants; only there to keep the number sane.
pub(crate) const MAX_MAX_CONNECTIONS: u64 = 1 << 24;
pub(crate) const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9100));
pub(crate) const DEFAULT_STORE_KIND: StoreKind = StoreKind::Memory;
pub(crate) const DEFAULT_STORE_URL: &str = "redis://127.0.0.1:6379/0";
pub(crate) const DEFAULT_KEY_PREFIX: &str = "rategate:";
pub(crate) const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
pub(crate) const DEFAULT_ON_ERROR: OnError = OnError::Fallback;
pub(crate) const DEFAULT_MAX_MEMORY_KEYS: usize = 1_000_000;
pub(crate) const DEFAULT_BATCH_MAX: usize = 64;
pub(crate) const DEFAULT_BATCH_IN_FLIGHT: usize = 2;
pub(crate) const DEFAULT_BATCH_QUEUE: usize = 1024;
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub(crate) const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_BALANCE: Balance = Balance::RoundRobin;
// Envoy's outlier detection defaults (consecutive_gateway_failure, base_ejection_time,
// max_ejection_time).
pub(crate) const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
pub(crate) const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
pub(crate) const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
/// Resolving a name more often than this would load the resolver for nothing: DNS answers are
/// cached for seconds at least.
pub(crate) const MIN_RESOLVE_INTERVAL: Duration = Duration::from_secs(1);
pub(crate) const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
pub(crate) const DEFAULT_HEALTH_HEALTHY: u32 = 2;
pub(crate) const DEFAULT_HEALTH_UNHEALTHY: u32 = 3;
pub(crate) const DEFAULT_MODE: Mode = Mode::Enforce;
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_BLOCK_MEMORY: Duration = Duration::from_secs(24 * 3600);
pub(crate) const DEFAULT_ACCESS_LOG: bool = true;
pub(crate) const DEFAULT_FORWARD_CLIENT_IP_HEADERS: bool = true;
pub(crate) const DEFAULT_ALERT_FORMAT: AlertFormat = AlertFormat::Json;
pub(crate) const DEFAULT_THRESHOLD_WINDOW: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_ALERT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_ALERT_MAX_RETRIES: u32 = 3;
pub(crate) const DEFAULT_ALERT_QUEUE_SIZE: usize = 1000;
pub(crate) const DEFAULT_PATH_SEMICOLONS: Semicolons = Semicolons::Reject;
pub(crate) const DEFAULT_ESCAPED_SLASHES: EscapedSlashes = EscapedSlashes::Keep;
pub(crate) const DEFAULT_CLIENT_AUTH: ClientAuth = ClientAuth::Required;
pub(crate) const DEFAULT_AUTH_LEEWAY: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_AUTH_REQUIRED: bool = true;
pub(crate) const DEFAULT_ON_INVALID: crate::auth::OnInvalid = crate::auth::OnInvalid::Reject;
// Policy `key` defaults to ["ip"], `burst` to `limit`, `block_max` to 24h (or `block_for` when
// longer), route `cost` to 1 and `max_cost` to 100 (see `compiled`), route `methods` to any method
// and `strip_prefix` to false; those are applied where the values are compiled.

/// A string value; `${NAME}` references are substituted when it is compiled.
pub(crate) type EnvString = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    #[serde(default)]
    pub(crate) server: Server,
    #[serde(default)]
    pub(crate) admin: Admin,
    #[serde(default)]
    pub(crate) store: Store,
    #[serde(default)]
    pub(crate) access: Access,
    #[serde(default)]
    pub(crate) upstream: Vec<Upstream>,
    /// Spanned so that a policy missing its window can be pointed at.
    #[serde(default)]
    pub(crate) policy: Vec<Spanned<Policy>>,
    /// Spanned so that a route missing its target can be pointed at.
    #[serde(default)]
    pub(crate) route: Vec<Spanned<Route>>,
    /// Optional webhook alerts.
    pub(crate) alerts: Option<Alerts>,
    /// Token verification sections that routes name with `auth = "NAME"`.
    #[serde(default)]
    pub(crate) auth: Vec<Spanned<Auth>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    /// env; socket address.
    pub(crate) listen: Option<EnvString>,
    /// CIDRs or bare IPs.
    pub(crate) trusted_proxies: Option<Vec<Spanned<String>>>,
    pub(crate) ipv6_prefix: Option<Spanned<u64>>,
    pub(crate) header_read_timeout: Option<duration::Positive>,
    pub(crate) max_header_bytes: Option<Spanned<u64>>,
    pub(crate) shutdown_grace: Option<duration::Any>,
    /// Keep-alive connections with no request in flight close after this.
    pub(crate) idle_timeout: Option<duration::Positive>,
    /// A response that makes no write progress for this long is cut.
    pub(crate) send_timeout: Option<duration::Positive>,
    /// An upgraded connection (WebSocket tunnel) with no bytes either way for this long is closed.
    pub(crate) tunnel_idle_timeout: Option<duration::Positive>,
    /// Concurrent proxy connections; unset = derived from the fd limit at start.
    pub(crate) max_connections: Option<Spanned<u64>>,
    /// One log line per request (target `rategate::access`).
    pub(crate) access_log: Option<bool>,
    /// true: the client-IP headers (X-Real-IP, Forwarded, True-Client-IP, CF-Connecting-IP,
    /// X-Client-IP, X-Cluster-Client-IP, Fastly-Client-IP) reach the upstream only from trusted
    /// proxies; false: from anyone, as received.
    pub(crate) forward_client_ip_headers: Option<bool>,
    pub(crate) tls: Option<Tls>,
    /// `;` path parameters: "reject" (default), "strip" or "keep".
    pub(crate) path_semicolons: Option<Semicolons>,
    /// `%2F` / `%5C` in paths: "keep" (default), "reject" or "decode".
    pub(crate) escaped_slashes: Option<EscapedSlashes>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tls {
    /// env; PEM certificate chain.
    pub(crate) cert: EnvString,
    /// env; PEM private key.
    pub(crate) key: EnvString,
    /// env; PEM CA certificates client certificates are verified against (mTLS).
    pub(crate) client_ca: Option<EnvString>,
    /// With `client_ca`: "required" (default) or "optional".
    pub(crate) client_auth: Option<Spanned<ClientAuth>>,
}

/// `[[auth]]`: how the tokens of the routes naming it are verified.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Auth {
    pub(crate) name: Spanned<String>,
    /// Pinned JWT algorithms ("RS256", "ES256", "EdDSA", "HS256", ...).
    pub(crate) algorithms: Spanned<Vec<Spanned<String>>>,
    /// env; HMAC secret (HS* only), normally `"${NAME}"`.
    pub(crate) secret: Option<EnvString>,
    /// env; PEM public key file, relative to this config file.
    pub(crate) public_key: Option<EnvString>,
    /// env; JWKS file, relative to this config file; re-read when it changes.
    pub(crate) jwks_file: Option<EnvString>,
    /// env; required `iss`.
    pub(crate) issuer: Option<EnvString>,
    /// env; required `aud` (one of the token's audiences).
    pub(crate) audience: Option<EnvString>,
    /// Clock skew allowed on `exp` and `nbf` (default 30s).
    pub(crate) leeway: Option<Spanned<duration::Any>>,
    /// "bearer" (default), "header:NAME" or "cookie:NAME".
    pub(crate) token: Option<Spanned<String>>,
    pub(crate) on_invalid: Option<crate::auth::OnInvalid>,
    /// A request without a token is refused (default true).
    pub(crate) required: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    /// env; socket address.
    pub(crate) listen: Option<EnvString>,
    /// env; bearer token for /admin/*.
    pub(crate) token: Option<EnvString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Store {
    pub(crate) kind: Option<StoreKind>,
    /// env; Redis URL (used when `kind = "redis"`).
    pub(crate) url: Option<EnvString>,
    /// env.
    pub(crate) key_prefix: Option<EnvString>,
    pub(crate) timeout: Option<duration::Positive>,
    pub(crate) on_error: Option<OnError>,
    pub(crate) max_memory_keys: Option<Spanned<u64>>,
    /// Redis: checks one script call carries, at most.
    pub(crate) batch_max: Option<Spanned<u64>>,
    /// Redis: check calls in flight per slot and check script, at most.
    pub(crate) batch_in_flight: Option<Spanned<u64>>,
    /// Redis: checks waiting per script call in flight, at most.
    pub(crate) batch_queue: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Access {
    /// CIDRs or bare IPs never limited nor blocked.
    pub(crate) allow: Option<Vec<Spanned<String>>>,
    /// CIDRs or bare IPs always answered 403.
    pub(crate) deny: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upstream {
    pub(crate) name: Spanned<String>,
    /// env; `http://`, `h2c://` (HTTP/2 with prior knowledge) or `https://` URL, optionally with
    /// a base path. Exactly one of `url` and `targets`.
    pub(crate) url: Option<EnvString>,
    /// env each; several URLs of one service, differing only in host and port.
    pub(crate) targets: Option<Spanned<Vec<EnvString>>>,
    pub(crate) balance: Option<Balance>,
    pub(crate) connect_timeout: Option<duration::Positive>,
    pub(crate) timeout: Option<duration::Positive>,
    /// env; `https://` only: PEM file of the CA certificates trusted instead of the web PKI roots
    /// (relative to the config file's directory).
    pub(crate) ca: Option<EnvString>,
    /// env; `https://` only: the TLS server name sent and verified instead of the URL's host.
    pub(crate) sni: Option<EnvString>,
    /// env; `https://` only: PEM certificate chain presented to the upstream (mTLS), with
    /// `client_key`.
    pub(crate) client_cert: Option<EnvString>,
    /// env; `https://` only: PEM private key of `client_cert`.
    pub(crate) client_key: Option<EnvString>,
    /// Passive health (named after Envoy's outlier detection): failed connects or timeouts in a
    /// row that eject a target.
    pub(crate) consecutive_failures: Option<Spanned<u64>>,
    /// The first ejection's length; the n-th in a row lasts n times this.
    pub(crate) base_ejection_time: Option<duration::Positive>,
    pub(crate) max_ejection_time: Option<Spanned<duration::Positive>>,
    /// Active health checks (off when absent).
    pub(crate) health_check: Option<Spanned<HealthCheck>>,
    /// How often a target's host name is resolved again (it is also resolved at start and on
    /// every reload).
    pub(crate) resolve_interval: Option<Spanned<duration::Positive>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheck {
    /// The path each target is asked for with a GET; any 2xx or 3xx is a pass.
    pub(crate) path: Spanned<String>,
    pub(crate) interval: Option<duration::Positive>,
    pub(crate) timeout: Option<duration::Positive>,
    /// Passes in a row that readmit a target the checks took out.
    pub(crate) healthy: Option<Spanned<u64>>,
    /// Failures in a row that take a target out.
    pub(crate) unhealthy: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Policy {
    pub(crate) name: Spanned<String>,
    pub(crate) algorithm: Spanned<Algorithm>,
    pub(crate) limit: Spanned<u64>,
    /// Required, except for `concurrency` (which has `lease` instead).
    pub(crate) window: Option<Spanned<duration::Positive>>,
    /// `concurrency` only: how long a lease is held without renewal (default 60s).
    pub(crate) lease: Option<Spanned<duration::Positive>>,
    pub(crate) burst: Option<Spanned<u64>>,
    pub(crate) key: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) block_for: Option<Spanned<duration::Positive>>,
    /// Escalating blocks (need `block_for`).
    pub(crate) block_multiplier: Option<Spanned<u64>>,
    pub(crate) block_max: Option<Spanned<duration::Positive>>,
    pub(crate) block_memory: Option<Spanned<duration::Positive>>,
    pub(crate) mode: Option<Mode>,
    /// Charge only responses with one of these statuses (after the upstream answered).
    pub(crate) count_status: Option<Spanned<Vec<Spanned<u64>>>>,
    /// `"errors"`: charge only responses with a status of 400 or more.
    pub(crate) count: Option<Spanned<CountWord>>,
    /// Per key-value limits: `{ "gold-key" = 1000 }`.
    pub(crate) overrides: Option<Spanned<BTreeMap<String, Spanned<u64>>>>,
    /// A TOML file of `"key" = limit` lines, relative to this config file.
    pub(crate) overrides_file: Option<Spanned<String>>,
    /// Where the override key comes from instead of the policy's key: "jwt:claim:NAME".
    pub(crate) overrides_from: Option<Spanned<String>>,
    pub(crate) retry_after_jitter: Option<Spanned<duration::Positive>>,
}

/// The words `count` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CountWord {
    Errors,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub(crate) name: Spanned<String>,
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) path_prefix: Option<Spanned<String>>,
    pub(crate) methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) host: Option<Spanned<String>>,
    /// Match conditions: header name -> exact value (a string) or presence (`true`).
    pub(crate) headers: Option<Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>>,
    pub(crate) upstream: Option<Spanned<String>>,
    pub(crate) respond: Option<Spanned<Respond>>,
    pub(crate) policies: Option<Vec<Spanned<String>>>,
    pub(crate) strip_prefix: Option<Spanned<bool>>,
    /// Match the path regardless of ASCII letter case (default false).
    pub(crate) case_insensitive: Option<bool>,
    /// Units a request without `cost_header` charges (default 1).
    pub(crate) cost: Option<Spanned<u64>>,
    /// A request header carrying the request's cost.
    pub(crate) cost_header: Option<Spanned<String>>,
    /// Largest cost `cost_header` may name (default 100).
    pub(crate) max_cost: Option<Spanned<u64>>,
    /// The `[[auth]]` section verifying this route's tokens.
    pub(crate) auth: Option<Spanned<String>>,
    /// Protocols an HTTP/1.1 `Upgrade` is relayed for (`["websocket"]`); default none.
    pub(crate) upgrade: Option<Spanned<Vec<Spanned<String>>>>,
    /// Sending a request again after it was sent and failed (idempotent, bodiless only).
    pub(crate) retry: Option<Spanned<Retry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retry {
    /// Tries after the first (default 1).
    pub(crate) attempts: Option<Spanned<u64>>,
    /// Which failures (default reset and timeout).
    pub(crate) on: Option<Spanned<Vec<RetryOn>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RetryOn {
    /// The connection failed after the request was sent, before a response head.
    Reset,
    /// No response head within the upstream's `timeout`.
    Timeout,
    /// The upstream answered 502, 503 or 504.
    GatewayError,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Alerts {
    /// env; `http://` or `https://` URL the alerts are POSTed to.
    pub(crate) webhook_url: EnvString,
    pub(crate) format: Option<AlertFormat>,
    /// env; bearer token sent with each alert.
    pub(crate) token: Option<EnvString>,
    /// Name of an environment variable holding the bearer token (instead of `token`).
    pub(crate) token_env: Option<Spanned<String>>,
    /// Alert once when one client is rejected this many times within `threshold_window`.
    pub(crate) rejections_threshold: Option<Spanned<u64>>,
    pub(crate) threshold_window: Option<Spanned<duration::Positive>>,
    /// Per delivery attempt.
    pub(crate) timeout: Option<duration::Positive>,
    pub(crate) max_retries: Option<Spanned<u64>>,
    pub(crate) queue_size: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Respond {
    pub(crate) status: Spanned<u64>,
    /// env; default empty.
    pub(crate) body: Option<EnvString>,
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
