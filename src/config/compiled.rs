//! The immutable runtime model. Everything the hot path reads is parsed and resolved here once,
//! so a request never parses a string from the config.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Method, StatusCode, Uri};
use serde::Deserialize;

use crate::net::CidrSet;

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
    pub routes: Vec<Route>,
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
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
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

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Redis => "redis",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    Fallback,
    Allow,
    Deny,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Fallback => "fallback",
            OnError::Allow => "allow",
            OnError::Deny => "deny",
        }
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
}

#[derive(Debug, Clone, Default)]
pub struct Access {
    pub allow: CidrSet,
    pub deny: CidrSet,
}

#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// `authority` as the `Host` header the upstream receives, built once here rather than per
    /// request.
    pub host_header: http::HeaderValue,
    /// Path prefix from the upstream URL without a trailing slash ("" when the URL has none).
    pub base_path: String,
    pub connect_timeout: Duration,
    /// Deadline for the whole response head; 504 past it.
    pub timeout: Duration,
    /// Position in `Config::upstreams` (stable index for metrics handles).
    pub index: usize,
}

impl Upstream {
    /// The `Host` value for `authority`. An authority only holds characters that are valid in a
    /// header value, so the fallback (an empty value) is never used in practice.
    pub fn host_value(authority: &http::uri::Authority) -> http::HeaderValue {
        http::HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| http::HeaderValue::from_static(""))
    }

    /// The URI the upstream receives for a normalized, already prefix-stripped path and query.
    pub fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut pq = String::with_capacity(
            self.base_path.len() + path.len() + 1 + query.map_or(0, str::len),
        );
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    FixedWindow,
    SlidingWindow,
    SlidingLog,
    TokenBucket,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::SlidingLog => "sliding_log",
            Algorithm::TokenBucket => "token_bucket",
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
    pub fn as_str(self) -> &'static str {
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
        }
    }
}

#[derive(Debug)]
pub struct Policy {
    pub name: Arc<str>,
    pub algorithm: Algorithm,
    /// Requests per window (token bucket: refill of `limit` tokens per window).
    pub limit: u64,
    pub window: Duration,
    /// Token bucket capacity (defaults to `limit`); equals `limit` for other algorithms.
    pub burst: u64,
    pub key: Vec<KeyPart>,
    pub block_for: Option<Duration>,
    pub mode: Mode,
    /// Position in `Config::policies` (stable index for metrics handles).
    pub index: usize,
}

impl Policy {
    pub fn window_ms(&self) -> u64 {
        super::duration::millis(self.window)
    }

    /// True when two policies may share counters across a reload.
    pub fn same_counters(&self, other: &Policy) -> bool {
        self.name == other.name
            && self.algorithm == other.algorithm
            && self.limit == other.limit
            && self.window == other.window
            && self.burst == other.burst
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Segment-aware prefix without a trailing slash ("/" matches everything).
    Prefix(String),
    Exact(String),
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
    pub target: Target,
    pub policies: Vec<Arc<Policy>>,
    pub strip_prefix: bool,
    /// Position in `Config::routes` (stable index for metrics handles).
    pub index: usize,
}
