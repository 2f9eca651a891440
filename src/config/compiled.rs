//! The immutable runtime model. Everything the hot path reads is parsed and resolved here once,
//! so a request never parses a string from the config.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Method, StatusCode, Uri};
use serde::Deserialize;

use super::header_text::PolicyHeaderText;
pub use super::routes::Routes;
use crate::auth::Authenticator;
use crate::net::CidrSet;
use crate::uri_path::PathRules;

#[derive(Debug)]
pub struct Config {
    /// The file this config was loaded from (for reload and messages).
    pub source: PathBuf,
    pub server: Server,
    pub admin: Admin,
    pub store: StoreSettings,
    pub access: Access,
    pub upstreams: Vec<Arc<Upstream>>,
    pub policies: Vec<Arc<Policy>>,
    pub routes: Routes,
    /// Some route relays `Upgrade` (`upgrade`): connections accepted under this config are
    /// served able to switch protocols.
    pub upgrades: bool,
    /// Webhook alerts; `None` when the file has no `[alerts]`.
    pub alerts: Option<AlertSettings>,
    /// The `[[auth]]` sections, in file order (their JWKS files are refreshed while running).
    pub(crate) auths: Vec<Arc<Authenticator>>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub trusted_proxies: CidrSet,
    /// IPv6 clients are keyed by this prefix length (1..=128).
    pub ipv6_prefix: u8,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    /// An upgraded connection with no bytes either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// `None`: derived from the process's fd limit when the listener starts.
    pub max_connections: Option<usize>,
    /// Log one line per request.
    pub access_log: bool,
    /// Client-IP headers (X-Real-IP, Forwarded, True-Client-IP, CF-Connecting-IP, X-Client-IP,
    /// X-Cluster-Client-IP, Fastly-Client-IP) are owned by the gateway: forwarded only as a trusted proxy sent them, removed from anyone else.
    /// `false` passes them from every peer untouched.
    pub forward_client_ip_headers: bool,
    pub tls: Option<TlsFiles>,
    /// How `;` path parameters and encoded slashes are treated before routing and forwarding.
    pub path_rules: PathRules,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA certificates client certificates are verified against; `None`: no client auth.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// Whether a client certificate is needed to connect (with `client_ca`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    Required,
    Optional,
}

impl ClientAuth {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Bearer token for /admin/*; `None` only allowed when `listen` is loopback.
    pub token: Option<String>,
}

// The enums deserialize straight from their config spelling, so the accepted words live in one
// place and serde's "unknown variant, expected ..." message lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    Fallback,
    Allow,
    Deny,
}

impl OnError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OnError::Fallback => "fallback",
            OnError::Allow => "allow",
            OnError::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertFormat {
    /// rategate's own JSON object.
    Json,
    /// `{"text": "..."}`, what Slack (and Mattermost, Rocket.Chat...) incoming webhooks take.
    Slack,
}

impl AlertFormat {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AlertFormat::Json => "json",
            AlertFormat::Slack => "slack",
        }
    }
}

/// N rejections of one client within `window` raise one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertThreshold {
    pub rejections: u64,
    pub window: Duration,
}

#[derive(Clone)]
pub struct AlertSettings {
    pub webhook: Uri,
    pub format: AlertFormat,
    /// Bearer token for the webhook.
    pub token: Option<String>,
    pub threshold: Option<AlertThreshold>,
    /// Per delivery attempt.
    pub timeout: Duration,
    /// Attempts after the first one failed.
    pub max_retries: u32,
    /// Alerts waiting for delivery at most; more are dropped (and counted). Read at start.
    pub queue_size: usize,
}

/// The webhook URL's path and query often are the secret (Slack's are), and the token is one:
/// neither is printed.
impl fmt::Debug for AlertSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertSettings")
            .field("webhook_host", &self.webhook.authority())
            .field("format", &self.format)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("threshold", &self.threshold)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("queue_size", &self.queue_size)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub kind: StoreKind,
    pub url: String,
    pub key_prefix: String,
    pub timeout: Duration,
    pub on_error: OnError,
    pub max_memory_keys: usize,
    /// Redis: checks carried by one script call, at most (1: every check on its own).
    pub batch_max: usize,
    /// Redis: script calls carrying checks in flight per cluster slot and check script, at most.
    pub batch_in_flight: usize,
    /// Redis: checks waiting for one script call's turn, at most; past it a check fails.
    pub batch_queue: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Access {
    pub allow: CidrSet,
    pub deny: CidrSet,
}

#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    /// Where requests go: one per `url` or `targets` entry, in file order (never empty).
    pub targets: Vec<UpstreamTarget>,
    pub balance: Balance,
    /// The TLS client set-up the `https://` targets share (trust, client certificate); `None`
    /// when no target uses TLS.
    pub(crate) tls: Option<UpstreamTls>,
    /// Path prefix shared by every target's URL without a trailing slash ("" when none).
    pub base_path: String,
    pub connect_timeout: Duration,
    /// Deadline for the whole response head; 504 past it.
    pub timeout: Duration,
    pub outlier: Outlier,
    pub health_check: Option<HealthCheck>,
    /// How often the targets' host names are resolved again (`proxy::pool::resolve`).
    pub resolve_interval: Duration,
    /// Position in `Config::upstreams` (stable index for metrics handles).
    pub index: usize,
}

/// One target of an upstream: an address requests are sent to.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// `http` (also for `h2c://`) or `https`: the scheme requests to this target carry.
    pub scheme: http::uri::Scheme,
    /// The HTTP version(s) spoken to it.
    pub protocol: UpstreamProtocol,
    pub authority: http::uri::Authority,
    /// The address connected to, when `authority`'s host name was resolved by the pool
    /// (`proxy::pool::resolve`); `None`: the connector resolves `authority` per connection.
    /// `Host`, SNI and certificate verification stay `authority`'s either way.
    pub(crate) address: Option<std::net::SocketAddr>,
    /// `https://` only: sent as SNI and verified against the certificate: the upstream's `sni`,
    /// or this target's host.
    pub(crate) server_name: Option<rustls::pki_types::ServerName<'static>>,
    /// `authority` as the `Host` header the upstream receives, built once here rather than per
    /// request.
    pub(crate) host_header: http::HeaderValue,
    /// `scheme://authority` as written (`h2c://` included), followed by ` (address)` for a
    /// resolved address: the metric label and the identity that keeps a target's health across
    /// reloads and re-resolutions.
    pub label: Arc<str>,
}

impl UpstreamTarget {
    /// Whether the host is a name the pool resolves (not an address literal).
    pub(crate) fn has_host_name(&self) -> bool {
        let host = self.authority.host();
        !(host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok())
    }
}

/// How a request picks one of an upstream's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    RoundRobin,
    /// The target with the fewest requests in flight (from this gateway), ties in turn.
    LeastRequests,
    /// The client's key picks the target by rendezvous hashing: a client stays on one target,
    /// and a target leaving moves only its own clients.
    HashClient,
}

impl Balance {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequests => "least_requests",
            Balance::HashClient => "hash_client",
        }
    }
}

/// Passive health: when a target is taken out of the balance after failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// Connect failures or timeouts in a row that eject the target.
    pub consecutive_failures: u32,
    /// The n-th ejection in a row lasts n times this, at most `max_ejection_time`.
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
}

/// Active health checks: a GET of `path` on every target each `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    /// Passes in a row that readmit a target.
    pub healthy: u32,
    /// Failures in a row that take a target out.
    pub unhealthy: u32,
}

/// How the gateway speaks HTTP to an upstream, from its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// `http://`: HTTP/1.1.
    Http1,
    /// `h2c://`: HTTP/2 over plain TCP with prior knowledge (RFC 9113 section 3.3), as gRPC
    /// servers speak it.
    H2c,
    /// `https://`: TLS, then HTTP/2 or HTTP/1.1 as ALPN settles.
    Https,
}

/// The TLS client side of an upstream's `https://` targets, built and checked at load (each
/// target's server name is its own: `UpstreamTarget::server_name`).
#[derive(Debug, Clone)]
pub(crate) struct UpstreamTls {
    /// Trust (the `ca` file or the web PKI roots), the client certificate, ALPN `h2, http/1.1`.
    pub(crate) config: Arc<rustls::ClientConfig>,
    /// SHA-256 over everything `config` was built from and `sni`: a reload keeps the pooled
    /// connections of a target whose TLS settings it did not change, and only those.
    pub(crate) fingerprint: [u8; 32],
    /// For `rategate check`: the files and `sni` when set.
    pub(crate) ca_file: Option<std::path::PathBuf>,
    pub(crate) client_cert_file: Option<std::path::PathBuf>,
    pub(crate) sni: Option<rustls::pki_types::ServerName<'static>>,
}

impl Upstream {
    /// The `Host` value for `authority`. An authority only holds characters that are valid in a
    /// header value, so the fallback (an empty value) is never used in practice.
    pub(crate) fn host_value(authority: &http::uri::Authority) -> http::HeaderValue {
        http::HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| http::HeaderValue::from_static(""))
    }

    /// The request target the upstream receives for a normalized, already prefix-stripped path
    /// and query: origin form (`/base/path?query`), which is what an HTTP/1.1 origin server
    /// expects; the connection already names the upstream. One allocation, no scheme or
    /// authority copied.
    pub(crate) fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut pq =
            Vec::with_capacity(self.base_path.len() + path.len() + 1 + query.map_or(0, str::len));
        pq.extend_from_slice(self.base_path.as_bytes());
        pq.extend_from_slice(path.as_bytes());
        if let Some(q) = query {
            pq.push(b'?');
            pq.extend_from_slice(q.as_bytes());
        }
        Ok(Uri::from(http::uri::PathAndQuery::from_maybe_shared(
            Bytes::from(pq),
        )?))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    FixedWindow,
    SlidingWindow,
    SlidingLog,
    TokenBucket,
    /// At most `limit` requests of one key in flight; `window` holds the lease duration.
    Concurrency,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::SlidingLog => "sliding_log",
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::Concurrency => "concurrency",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Enforce,
    Shadow,
}

impl Mode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Ip,
    /// Header value; absent or empty falls back to the client IP.
    Header(HeaderName),
    Path,
    Method,
    Route,
    Global,
    /// A named segment of the route's path pattern (`{NAME}`); validation makes sure every route
    /// using the policy has it.
    Param(Box<str>),
    /// A query parameter, percent-decoded; absent, empty, repeated or not UTF-8 falls back to the
    /// client IP (like a header).
    Query(Box<str>),
    /// The verified token's `sub`; anonymous requests fall back to the client IP.
    JwtSub,
    /// A string or number claim of the verified token; absent falls back to the client IP.
    JwtClaim(Box<str>),
    /// The verified client certificate's subject; none falls back to the client IP.
    TlsSubject,
    /// The SHA-256 of the verified client certificate's DER.
    TlsFingerprint,
}

impl KeyPart {
    /// Whether the part reads a verified token (the route needs `auth`).
    pub(crate) fn needs_token(&self) -> bool {
        matches!(self, KeyPart::JwtSub | KeyPart::JwtClaim(_))
    }
}

/// The config spelling (`ip`, `header:x-api-key`, ...).
impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::Ip => f.write_str("ip"),
            KeyPart::Header(name) => write!(f, "header:{name}"),
            KeyPart::Path => f.write_str("path"),
            KeyPart::Method => f.write_str("method"),
            KeyPart::Route => f.write_str("route"),
            KeyPart::Global => f.write_str("global"),
            KeyPart::Param(name) => write!(f, "param:{name}"),
            KeyPart::Query(name) => write!(f, "query:{name}"),
            KeyPart::JwtSub => f.write_str("jwt:sub"),
            KeyPart::JwtClaim(name) => write!(f, "jwt:claim:{name}"),
            KeyPart::TlsSubject => f.write_str("tls:subject"),
            KeyPart::TlsFingerprint => f.write_str("tls:fingerprint"),
        }
    }
}

#[derive(Debug)]
pub struct Policy {
    pub name: Arc<str>,
    pub algorithm: Algorithm,
    /// Requests per window (token bucket: refill of `limit` tokens per window; concurrency:
    /// requests in flight at once).
    pub limit: u64,
    /// The window; for `concurrency`, the lease duration (`lease`).
    pub window: Duration,
    /// Token bucket capacity (defaults to `limit`); equals `limit` for other algorithms.
    pub burst: u64,
    /// Whether `burst` was written in the config (then a tier override scales it; otherwise it
    /// follows the overridden limit).
    pub burst_set: bool,
    pub key: Vec<KeyPart>,
    pub block_for: Option<Duration>,
    /// Longer blocks for clients blocked again (needs `block_for`).
    pub escalation: Option<Escalation>,
    pub mode: Mode,
    /// Which requests are charged: all of them when admitted, or only those whose response has
    /// a matching status (charged after the upstream answered).
    pub count: CountOn,
    /// Per key-value limits (tiers); empty for most policies.
    pub overrides: Overrides,
    /// `overrides_from = "jwt:claim:NAME"`: the tier is looked up by this claim of the verified
    /// token rather than by the policy's key.
    pub overrides_from: Option<Box<str>>,
    /// Up to this much is added to Retry-After at random on this policy's rejections.
    pub retry_after_jitter: Option<Duration>,
    /// Position in `Config::policies` (stable index for metrics handles).
    pub index: usize,
    /// The constant text of its rate-limit headers, from `name`, `algorithm`, `limit` and
    /// `window` (built with them: `Policy::new`, validation).
    pub headers: PolicyHeaderText,
}

impl Policy {
    /// A policy with every optional setting at its default (tests and tools; config files go
    /// through validation).
    pub fn new(name: &str, algorithm: Algorithm, limit: u64, window: Duration) -> Self {
        Policy {
            name: Arc::from(name),
            algorithm,
            limit,
            window,
            burst: limit,
            burst_set: false,
            key: vec![KeyPart::Ip],
            block_for: None,
            escalation: None,
            mode: Mode::Enforce,
            count: CountOn::Every,
            overrides: Overrides::default(),
            overrides_from: None,
            retry_after_jitter: None,
            index: 0,
            headers: PolicyHeaderText::new(name, algorithm, limit, crate::millis::floor(window)),
        }
    }

    pub(crate) fn window_ms(&self) -> u64 {
        crate::millis::floor(self.window)
    }

    /// `(limit, burst)` for a key whose tier override is `limit` (`None`: the policy's own).
    ///
    /// A defaulted burst follows the overridden limit; a burst written in the config keeps its
    /// ratio to the limit (`burst * override / limit`, rounded up, at least 1), so a tier ten
    /// times larger also bursts ten times larger. Validation checks every override's products
    /// stay exact in doubles.
    pub fn limits_for(&self, limit: Option<u64>) -> (u64, u64) {
        let Some(limit) = limit else {
            return (self.limit, self.burst);
        };
        if !self.burst_set {
            return (limit, limit);
        }
        let scaled =
            (u128::from(self.burst) * u128::from(limit)).div_ceil(u128::from(self.limit.max(1)));
        (limit, u64::try_from(scaled).unwrap_or(u64::MAX).max(1))
    }

    /// Whether this policy is charged after the response instead of at admission.
    pub(crate) fn deferred(&self) -> bool {
        self.count != CountOn::Every
    }
}

/// When a policy is charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountOn {
    /// Every admitted request, at admission (the default).
    Every,
    /// After the response, when its status is one of these (`count_status`), sorted.
    Statuses(Box<[u16]>),
    /// After the response, when its status is 400 or more (`count = "errors"`).
    Errors,
}

impl CountOn {
    /// Whether a response with `status` is charged (only meaningful for deferred policies).
    pub fn matches(&self, status: u16) -> bool {
        match self {
            CountOn::Every => true,
            CountOn::Statuses(list) => list.binary_search(&status).is_ok(),
            CountOn::Errors => status >= 400,
        }
    }
}

/// Escalating blocks: the n-th block by one policy within `memory` of the previous one lasts
/// `block_for * multiplier^(n-1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escalation {
    pub multiplier: u64,
    pub max: Duration,
    pub memory: Duration,
}

/// Per key-value limits of one policy (from `overrides` and `overrides_file`), keyed by the
/// value of the policy's single key component (an IP key is stored normalized as the client
/// key the gateway builds, so an IPv6 address matches its prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    map: HashMap<Box<str>, u64, ahash::RandomState>,
}

impl Overrides {
    pub(crate) fn new(entries: impl IntoIterator<Item = (String, u64)>) -> Self {
        Overrides {
            map: entries
                .into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v))
                .collect(),
        }
    }

    pub fn get(&self, value: &str) -> Option<u64> {
        self.map.get(value).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Segment-aware prefix without a trailing slash ("/" matches everything).
    Prefix(String),
    Exact(String),
    /// Named segments (`{id}`) and an optional trailing `*`.
    Pattern(PathPattern),
}

/// A `path` with named segments (`/api/users/{id}/orders`) and/or a trailing `*` (`/static/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// As written in the config (for messages and `rategate check`).
    pub text: String,
    /// One per path segment after the leading `/`.
    pub segments: Box<[Segment]>,
    /// Ends in `/*`: any rest of the path after the last segment's `/`, possibly empty.
    pub rest: bool,
}

impl PathPattern {
    /// Position of the named segment `name`.
    pub fn param_position(&self, name: &str) -> Option<usize> {
        self.segments
            .iter()
            .position(|s| matches!(s, Segment::Param(n) if &**n == name))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Normalized text, compared whole.
    Literal(Box<str>),
    /// `{NAME}`: any one non-empty segment.
    Param(Box<str>),
}

/// `headers = { NAME = "value" | true }` on a route: the request must carry the header (`true`)
/// or carry it exactly once with exactly this value (surrounding whitespace ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    pub name: HeaderName,
    /// `None`: present with any value.
    pub value: Option<Box<[u8]>>,
}

#[derive(Debug)]
pub enum Target {
    Upstream(Arc<Upstream>),
    Respond { status: StatusCode, body: Bytes },
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub path: PathMatch,
    /// Empty means any method.
    pub methods: Vec<Method>,
    /// Lower-cased host without port.
    pub host: Option<String>,
    /// Every condition must hold; empty for most routes.
    pub headers: Vec<HeaderCondition>,
    pub target: Target,
    pub policies: Vec<Arc<Policy>>,
    pub strip_prefix: bool,
    /// The path matches regardless of ASCII letter case (for upstreams that serve `/API` and
    /// `/api` alike); the `path` key component is then lower-cased too.
    pub case_insensitive: bool,
    /// Units each request charges to the route's policies.
    pub cost: Cost,
    /// The `[[auth]]` section verifying this route's tokens.
    pub auth: Option<Arc<Authenticator>>,
    /// The protocols an HTTP/1.1 `Upgrade` is relayed for; empty: `Upgrade` is removed like any
    /// hop-by-hop header.
    pub upgrade: Vec<UpgradeProtocol>,
    /// Sending an idempotent request without a body again after it was sent and failed.
    pub retry: Option<Retry>,
    /// Position in `Config::routes` (stable index for metrics handles).
    pub index: usize,
}

impl Route {
    /// The value of the named segment `{name}` in `path` (the normalized path this route
    /// matched); `None` when the route's path has no such segment.
    pub(crate) fn param<'p>(&self, name: &str, path: &'p str) -> Option<&'p str> {
        let PathMatch::Pattern(pattern) = &self.path else {
            return None;
        };
        let at = pattern.param_position(name)?;
        path.get(1..)?.split('/').nth(at)
    }
}

/// A protocol a route may switch to with HTTP/1.1 `Upgrade` (config `upgrade`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeProtocol {
    WebSocket,
}

impl UpgradeProtocol {
    pub const ALL: [UpgradeProtocol; 1] = [UpgradeProtocol::WebSocket];

    /// The protocol name as written in `Upgrade` (RFC 9110 section 7.8) and in the config.
    pub fn token(self) -> &'static str {
        match self {
            UpgradeProtocol::WebSocket => "websocket",
        }
    }
}

/// A route's `retry`: which failures of a sent request are tried again, and how often. Only
/// requests with an idempotent method (RFC 9110 9.2.2) and no body are sent again; a failed
/// connect is tried once on another target whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries after the first, each on another target when the upstream has one.
    pub attempts: u32,
    /// The connection failed after the request was sent, before a response head.
    pub on_reset: bool,
    /// No response head within the upstream's `timeout`.
    pub on_timeout: bool,
    /// The upstream answered 502, 503 or 504.
    pub on_gateway_error: bool,
}

/// What one request of a route costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    /// `cost`: the cost of a request without the cost header (default 1).
    pub fixed: u64,
    /// `cost_header`: a request header naming its cost, 1..=`max`.
    pub header: Option<HeaderName>,
    /// `max_cost` (default 100).
    pub max: u64,
}

impl Default for Cost {
    fn default() -> Self {
        Cost {
            fixed: 1,
            header: None,
            max: DEFAULT_MAX_COST,
        }
    }
}

/// `max_cost` when a route sets `cost_header` without it.
pub(crate) const DEFAULT_MAX_COST: u64 = 100;
