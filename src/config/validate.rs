//! Validation and compilation of a parsed config file into the runtime model.
//!
//! Every check runs, even after one has failed, and the error reported is the first in file
//! order: an operator fixing errors one at a time then walks down the file instead of jumping
//! around. TOML's own errors (syntax, unknown keys, bad types, bad durations and enum words) stop
//! earlier, in the deserializer, and are reported as they come.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderName, Method, StatusCode, Uri};
use ipnet::IpNet;
use toml::Spanned;

use super::compiled::{
    Access, Admin, AlertSettings, AlertThreshold, Algorithm, Config, KeyPart, Overrides, PathMatch,
    Policy, Route, Server, StoreKind, StoreSettings, Target, TlsFiles, Upstream,
};
use super::env::{self, Lookup};
use super::features;
use super::file::{self, EnvString, File};
use super::locate::Source;
use super::ConfigError;
use crate::net::CidrSet;
use crate::uri_path::{self as path, EscapedSlashes, PathRules, Semicolons};

/// The Redis script computes with doubles, which are exact for integers up to 2^53.
const MAX_EXACT_DOUBLE: u64 = 1 << 53;
const MAX_NAME_LEN: usize = 64;
const MIN_BLOCK_FOR: Duration = Duration::from_secs(1);
const STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];
const REDIS_SCHEMES: [&str; 4] = [
    "redis://",
    "rediss://",
    "redis-sentinel://",
    "redis-cluster://",
];

/// Compile config text, substituting `${NAME}` from the process environment.
pub fn compile(path: &Path, text: &str) -> Result<Config, ConfigError> {
    compile_with_env(path, text, &env::process_env)
}

/// Compile config text with `${NAME}` values taken from `env`. `path` names the file (in errors
/// and `Config::source`) and anchors relative `overrides_file` paths, the only files read here.
pub fn compile_with_env(path: &Path, text: &str, env: Lookup<'_>) -> Result<Config, ConfigError> {
    let source = Source::new(path, text);
    let file: File = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    let mut validator = Validator {
        source: &source,
        path,
        env,
        issues: Vec::new(),
    };
    let config = validator.config(&file, path);
    validator.finish(config)
}

/// One problem found after deserialization. The key path is found from the span unless given.
#[derive(Debug)]
pub(super) struct Issue {
    pub(super) span: Option<Range<usize>>,
    pub(super) key: Option<String>,
    pub(super) message: String,
    /// An error inside another file (an `overrides_file`), reported as is; `span` is where the
    /// config names that file, for the file-order rule.
    pub(super) external: Option<Box<ConfigError>>,
}

impl Issue {
    pub(super) fn at<T>(value: &Spanned<T>, message: impl Into<String>) -> Self {
        Issue {
            span: Some(value.span()),
            key: None,
            message: message.into(),
            external: None,
        }
    }
}

pub(super) type Check<T> = Result<T, Issue>;

struct Validator<'a> {
    source: &'a Source<'a>,
    /// The config file (relative `overrides_file` paths start from its directory).
    path: &'a Path,
    env: Lookup<'a>,
    issues: Vec<Issue>,
}

impl Validator<'_> {
    /// Record a failed check; `None` then means "already reported".
    fn take<T>(&mut self, check: Check<T>) -> Option<T> {
        check.map_err(|issue| self.issues.push(issue)).ok()
    }

    /// Check every item, reporting each failure; `Some` only when all passed.
    fn each<S, T>(&mut self, items: &[S], mut check: impl FnMut(&S) -> Check<T>) -> Option<Vec<T>> {
        let checked: Vec<Option<T>> = items.iter().map(|item| self.take(check(item))).collect();
        checked.into_iter().collect()
    }

    fn finish(self, config: Option<Config>) -> Result<Config, ConfigError> {
        let first = self
            .issues
            .into_iter()
            .min_by_key(|issue| issue.span.as_ref().map_or(usize::MAX, |s| s.start));
        match (config, first) {
            (Some(config), None) => Ok(config),
            (
                _,
                Some(Issue {
                    external: Some(error),
                    ..
                }),
            ) => Err(*error),
            (_, Some(issue)) => Err(self.source.error(issue.span, issue.key, issue.message)),
            // Unreachable by construction (every `None` comes from a recorded issue), but an
            // error beats a panic if that ever stops being true.
            (None, None) => Err(self
                .source
                .error(None, None, "invalid configuration".into())),
        }
    }

    fn config(&mut self, file: &File, path: &Path) -> Option<Config> {
        let server = self.server(&file.server);
        let admin = self.admin(&file.admin);
        let store = self.store(&file.store);
        let access = self.access(&file.access);
        let upstream_names = self.names("upstream", file.upstream.iter().map(|u| &u.name));
        let policy_names = self.names("policy", file.policy.iter().map(|p| &p.get_ref().name));
        self.names("route", file.route.iter().map(|r| &r.get_ref().name));
        let upstreams = self.upstreams(&file.upstream);
        // Override keys of IP-keyed policies are normalized like client keys.
        let ipv6_prefix = server
            .as_ref()
            .map_or(file::DEFAULT_IPV6_PREFIX, |s| s.ipv6_prefix);
        let policies = self.policies(&file.policy, ipv6_prefix);
        let refs = References {
            upstreams: Named::new("upstream", upstream_names, &upstreams),
            policies: Named::new("policy", policy_names, &policies),
        };
        // Route paths are checked against the path rules; those cannot fail on their own.
        let routes = self.routes(&file.route, &refs, path_rules(&file.server));
        let alerts = match &file.alerts {
            None => Some(None),
            Some(alerts) => self.alerts(alerts).map(Some),
        };
        Some(Config {
            source: path.to_path_buf(),
            server: server?,
            admin: admin?,
            store: store?,
            access: access?,
            upstreams: upstreams.into_iter().collect::<Option<_>>()?,
            policies: policies.into_iter().collect::<Option<_>>()?,
            routes: routes?,
            alerts: alerts?,
        })
    }

    fn expand(&self, value: &EnvString) -> Check<String> {
        env::expand(value.get_ref(), self.env).map_err(|e| Issue::at(value, e.to_string()))
    }

    fn socket_addr(
        &mut self,
        value: Option<&EnvString>,
        default: SocketAddr,
    ) -> Option<SocketAddr> {
        let check = value.map_or(Ok(default), |v| {
            let text = self.expand(v)?;
            text.parse().map_err(|_| {
                Issue::at(
                    v,
                    format!(
                        "`{text}` is not a socket address; expected IP:PORT such as \
                         \"0.0.0.0:8080\" or \"[::]:8080\""
                    ),
                )
            })
        });
        self.take(check)
    }

    fn cidrs(&mut self, list: Option<&Vec<Spanned<String>>>) -> Option<CidrSet> {
        let nets = self.each(list.map_or(&[][..], Vec::as_slice), cidr)?;
        Some(CidrSet::new(nets))
    }

    fn server(&mut self, s: &file::Server) -> Option<Server> {
        let listen = self.socket_addr(s.listen.as_ref(), file::DEFAULT_SERVER_LISTEN);
        let trusted_proxies = self.cidrs(s.trusted_proxies.as_ref());
        let ipv6_prefix = self.take(
            s.ipv6_prefix
                .as_ref()
                .map_or(Ok(file::DEFAULT_IPV6_PREFIX), |v| bounded(v, 1, 128)),
        );
        let max_header_bytes = self.take(
            s.max_header_bytes
                .as_ref()
                .map_or(Ok(file::DEFAULT_MAX_HEADER_BYTES), |v| {
                    bounded(v, 1024, 1024 * 1024)
                }),
        );
        let max_connections = self.take(
            s.max_connections
                .as_ref()
                .map(|v| bounded(v, 1, file::MAX_MAX_CONNECTIONS))
                .transpose(),
        );
        let tls = match &s.tls {
            None => Some(None),
            Some(tls) => self.tls(tls).map(Some),
        };
        Some(Server {
            listen: listen?,
            trusted_proxies: trusted_proxies?,
            ipv6_prefix: ipv6_prefix?,
            header_read_timeout: s
                .header_read_timeout
                .map_or(file::DEFAULT_HEADER_READ_TIMEOUT, |d| d.0),
            max_header_bytes: max_header_bytes?,
            shutdown_grace: s
                .shutdown_grace
                .map_or(file::DEFAULT_SHUTDOWN_GRACE, |d| d.0),
            idle_timeout: s.idle_timeout.map_or(file::DEFAULT_IDLE_TIMEOUT, |d| d.0),
            send_timeout: s.send_timeout.map_or(file::DEFAULT_SEND_TIMEOUT, |d| d.0),
            max_connections: max_connections?,
            access_log: s.access_log.unwrap_or(file::DEFAULT_ACCESS_LOG),
            forward_client_ip_headers: s
                .forward_client_ip_headers
                .unwrap_or(file::DEFAULT_FORWARD_CLIENT_IP_HEADERS),
            tls: tls?,
            path_rules: path_rules(s),
        })
    }

    fn tls(&mut self, tls: &file::Tls) -> Option<TlsFiles> {
        let cert = self.take(self.non_empty(&tls.cert));
        let key = self.take(self.non_empty(&tls.key));
        Some(TlsFiles {
            cert: PathBuf::from(cert?),
            key: PathBuf::from(key?),
        })
    }

    /// Expand a value that must not end up empty (paths, tokens).
    fn non_empty(&self, value: &EnvString) -> Check<String> {
        let text = self.expand(value)?;
        if text.is_empty() {
            return Err(Issue::at(value, "must not be empty"));
        }
        Ok(text)
    }

    fn admin(&mut self, a: &file::Admin) -> Option<Admin> {
        let listen = self.socket_addr(a.listen.as_ref(), file::DEFAULT_ADMIN_LISTEN);
        let token = match &a.token {
            None => Some(None),
            Some(token) => self.take(self.non_empty(token)).map(Some),
        };
        let (listen, token) = (listen?, token?);
        if token.is_none() && !listen.ip().to_canonical().is_loopback() {
            // The default listen address is loopback, so `listen` was written and has a span.
            self.issues.push(Issue {
                span: a.listen.as_ref().map(Spanned::span),
                key: Some("admin.token".into()),
                external: None,
                message: format!(
                    "required because admin.listen ({listen}) is not a loopback address; set \
                     token = \"${{RATEGATE_ADMIN_TOKEN}}\" or listen on 127.0.0.1"
                ),
            });
            return None;
        }
        Some(Admin { listen, token })
    }

    fn store(&mut self, s: &file::Store) -> Option<StoreSettings> {
        let kind = s.kind.unwrap_or(file::DEFAULT_STORE_KIND);
        let url = self.take(
            s.url
                .as_ref()
                .map_or(Ok(file::DEFAULT_STORE_URL.to_owned()), |u| {
                    self.store_url(u, kind)
                }),
        );
        let key_prefix = self.take(
            s.key_prefix
                .as_ref()
                .map_or(Ok(file::DEFAULT_KEY_PREFIX.to_owned()), |p| {
                    self.key_prefix(p)
                }),
        );
        let max_memory_keys = self.take(
            s.max_memory_keys
                .as_ref()
                .map_or(Ok(file::DEFAULT_MAX_MEMORY_KEYS), |v| {
                    bounded(v, 1000, u64::MAX)
                }),
        );
        Some(StoreSettings {
            kind,
            url: url?,
            key_prefix: key_prefix?,
            timeout: s.timeout.map_or(file::DEFAULT_STORE_TIMEOUT, |d| d.0),
            on_error: s.on_error.unwrap_or(file::DEFAULT_ON_ERROR),
            max_memory_keys: max_memory_keys?,
        })
    }

    /// The URL may carry a password, so messages show its scheme only.
    fn store_url(&self, url: &EnvString, kind: StoreKind) -> Check<String> {
        let text = self.expand(url)?;
        if kind == StoreKind::Redis && !REDIS_SCHEMES.iter().any(|s| text.starts_with(s)) {
            let scheme = text.split_once("://").map_or("none", |(scheme, _)| scheme);
            return Err(Issue::at(
                url,
                format!(
                    "unsupported URL scheme `{scheme}`; expected {}",
                    REDIS_SCHEMES.join(", ")
                ),
            ));
        }
        Ok(text)
    }

    /// Braces would form a Redis Cluster hash tag and put every key of every client in one slot.
    fn key_prefix(&self, prefix: &EnvString) -> Check<String> {
        let text = self.expand(prefix)?;
        if text.contains(['{', '}']) {
            return Err(Issue::at(
                prefix,
                "must not contain `{` or `}` (they would pin every key to one Redis Cluster slot)",
            ));
        }
        Ok(text)
    }

    fn alerts(&mut self, a: &file::Alerts) -> Option<AlertSettings> {
        let webhook = self.take(
            self.expand(&a.webhook_url)
                .and_then(|text| webhook_url(&a.webhook_url, &text)),
        );
        let token = match (&a.token, &a.token_env) {
            (None, None) => Some(None),
            (Some(token), Some(name)) => {
                self.issues.push(Issue::at(
                    &later(token, name),
                    "set either `token` or `token_env`, not both",
                ));
                None
            }
            (Some(token), None) => self.take(self.non_empty(token)).map(Some),
            (None, Some(name)) => self.take(self.token_env(name)).map(Some),
        };
        let rejections = match &a.rejections_threshold {
            None => Some(None),
            Some(n) => self.take(bounded::<u64>(n, 1, u64::MAX)).map(Some),
        };
        if let (Some(window), None) = (&a.threshold_window, &a.rejections_threshold) {
            self.issues.push(Issue::at(
                window,
                "`threshold_window` needs `rejections_threshold` (alert after N rejections of \
                 one client within the window)",
            ));
        }
        let window = a
            .threshold_window
            .as_ref()
            .map_or(file::DEFAULT_THRESHOLD_WINDOW, |w| w.get_ref().0);
        let max_retries = self.take(
            a.max_retries
                .as_ref()
                .map_or(Ok(file::DEFAULT_ALERT_MAX_RETRIES), |v| bounded(v, 0, 20)),
        );
        let queue_size = self.take(
            a.queue_size
                .as_ref()
                .map_or(Ok(file::DEFAULT_ALERT_QUEUE_SIZE), |v| {
                    bounded(v, 1, 1_000_000)
                }),
        );
        Some(AlertSettings {
            webhook: webhook?,
            format: a.format.unwrap_or(file::DEFAULT_ALERT_FORMAT),
            token: token?,
            threshold: rejections?.map(|rejections| AlertThreshold { rejections, window }),
            timeout: a.timeout.map_or(file::DEFAULT_ALERT_TIMEOUT, |d| d.0),
            max_retries: max_retries?,
            queue_size: queue_size?,
        })
    }

    /// The value of the environment variable `token_env` names.
    fn token_env(&self, name: &Spanned<String>) -> Check<String> {
        let text = name.get_ref();
        let valid = text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Issue::at(
                name,
                format!(
                    "`{text}` is not an environment variable name; expected letters, digits and \
                     `_`, not starting with a digit"
                ),
            ));
        }
        let value = env::expand(&format!("${{{text}}}"), self.env)
            .map_err(|e| Issue::at(name, e.to_string()))?;
        if value.is_empty() {
            return Err(Issue::at(
                name,
                format!("environment variable `{text}` is empty"),
            ));
        }
        Ok(value)
    }

    fn access(&mut self, a: &file::Access) -> Option<Access> {
        let allow = self.cidrs(a.allow.as_ref());
        let deny = self.cidrs(a.deny.as_ref());
        Some(Access {
            allow: allow?,
            deny: deny?,
        })
    }

    /// Check names of one kind; the map keeps each name's first position.
    fn names<'f>(
        &mut self,
        kind: &str,
        names: impl Iterator<Item = &'f Spanned<String>>,
    ) -> HashMap<&'f str, usize> {
        let mut seen: HashMap<&'f str, usize> = HashMap::new();
        let mut first_at: Vec<usize> = Vec::new();
        for (index, name) in names.enumerate() {
            first_at.push(name.span().start);
            if let Err(issue) = valid_name(name) {
                self.issues.push(issue);
            }
            if let Some(&first) = seen.get(name.get_ref().as_str()) {
                let line = self.source.line_of(first_at[first]);
                self.issues.push(Issue::at(
                    name,
                    format!(
                        "duplicate {kind} name `{}` (first defined on line {line}); names must be \
                         unique",
                        name.get_ref()
                    ),
                ));
            } else {
                seen.insert(name.get_ref(), index);
            }
        }
        seen
    }

    fn upstreams(&mut self, list: &[file::Upstream]) -> Vec<Option<Arc<Upstream>>> {
        let mut out = Vec::with_capacity(list.len());
        for (index, u) in list.iter().enumerate() {
            let url = self
                .expand(&u.url)
                .and_then(|text| upstream_url(&u.url, &text));
            out.push(self.take(url).map(|(scheme, authority, base_path)| {
                Arc::new(Upstream {
                    name: Arc::from(u.name.get_ref().as_str()),
                    scheme,
                    host_header: Upstream::host_value(&authority),
                    authority,
                    base_path,
                    connect_timeout: u
                        .connect_timeout
                        .map_or(file::DEFAULT_CONNECT_TIMEOUT, |d| d.0),
                    timeout: u.timeout.map_or(file::DEFAULT_UPSTREAM_TIMEOUT, |d| d.0),
                    index,
                })
            }));
        }
        out
    }

    fn policies(
        &mut self,
        list: &[Spanned<file::Policy>],
        ipv6_prefix: u8,
    ) -> Vec<Option<Arc<Policy>>> {
        let mut out = Vec::with_capacity(list.len());
        for (index, p) in list.iter().enumerate() {
            let policy = self.policy(p, index, ipv6_prefix);
            out.push(policy.map(Arc::new));
        }
        out
    }

    fn policy(
        &mut self,
        spanned: &Spanned<file::Policy>,
        index: usize,
        ipv6_prefix: u8,
    ) -> Option<Policy> {
        let p = spanned.get_ref();
        let algorithm = *p.algorithm.get_ref();
        let window = self.take(features::window(spanned));
        // Checks that need the window are skipped when it is already reported.
        let w = window.unwrap_or(Duration::from_millis(1));
        let limit =
            self.take(bounded(&p.limit, 1, u64::MAX).and_then(|n| within_double(&p.limit, n, w)));
        let burst = match &p.burst {
            None => limit,
            Some(burst) => self.take(token_bucket_burst(burst, algorithm, w)),
        };
        let key = match &p.key {
            None => Some(vec![KeyPart::Ip]),
            Some(key) => self.take(key_parts(key)),
        };
        let block_for = match &p.block_for {
            None => Some(None),
            Some(block_for) => self.take(min_block_for(block_for)).map(Some),
        };
        let escalation = self.take(features::escalation(p, block_for.flatten()));
        let count = self.take(features::count_on(p));
        let retry_after_jitter = self.take(features::jitter(p));
        let overrides = match (&key, limit, burst) {
            (Some(key), Some(limit), Some(burst)) => {
                let shape = features::OverrideShape {
                    key,
                    limit,
                    burst: p.burst.as_ref().map(|_| burst),
                    window: w,
                    ipv6_prefix,
                };
                self.overrides(p, &shape)
            }
            // Overrides are checked against a valid key and limit only.
            _ => None,
        };
        Some(Policy {
            name: Arc::from(p.name.get_ref().as_str()),
            algorithm,
            limit: limit?,
            window: window?,
            burst: burst?,
            burst_set: p.burst.is_some(),
            key: key?,
            block_for: block_for?,
            escalation: escalation?,
            mode: p.mode.unwrap_or(file::DEFAULT_MODE),
            count: count?,
            overrides: overrides?,
            retry_after_jitter: retry_after_jitter?,
            index,
        })
    }

    /// `overrides` and `overrides_file` merged; an error in the file names that file.
    fn overrides(
        &mut self,
        p: &file::Policy,
        shape: &features::OverrideShape<'_>,
    ) -> Option<Overrides> {
        if p.overrides.is_none() && p.overrides_file.is_none() {
            return Some(Overrides::default());
        }
        let first = p
            .overrides
            .as_ref()
            .map(Spanned::span)
            .into_iter()
            .chain(p.overrides_file.as_ref().map(Spanned::span))
            .min_by_key(|s| s.start)
            .unwrap_or_default();
        if let Err(message) = shape.addressable() {
            self.issues
                .push(Issue::at(&Spanned::new(first, ()), message));
            return None;
        }
        let mut entries: Vec<(String, u64)> = Vec::new();
        let mut from_file: HashMap<String, PathBuf> = HashMap::new();
        if let Some(file) = &p.overrides_file {
            match features::read_overrides_file(self.path, file, shape) {
                Ok((path, list)) => {
                    for (key, limit) in list {
                        from_file.insert(key.clone(), path.clone());
                        entries.push((key, limit));
                    }
                }
                Err(features::FileIssue::Here(issue)) => {
                    self.issues.push(issue);
                    return None;
                }
                Err(features::FileIssue::There(error)) => {
                    self.issues.push(Issue {
                        span: Some(file.span()),
                        key: None,
                        message: String::new(),
                        external: Some(Box::new(error)),
                    });
                    return None;
                }
            }
        }
        if let Some(inline) = &p.overrides {
            for (key, limit) in inline.get_ref() {
                let checked = shape
                    .entry(key, limit)
                    .and_then(|(k, n)| match from_file.get(&k) {
                        Some(path) => Err(Issue::at(
                            limit,
                            format!(
                                "`{key}` is also listed in overrides_file {}; list each key once",
                                path.display()
                            ),
                        )),
                        None => Ok((k, n)),
                    });
                entries.push(self.take(checked)?);
            }
        }
        Some(Overrides::new(entries))
    }

    fn routes(
        &mut self,
        list: &[Spanned<file::Route>],
        refs: &References<'_>,
        rules: PathRules,
    ) -> Option<Vec<Route>> {
        if list.is_empty() {
            self.issues.push(Issue {
                span: None,
                key: Some("route".into()),
                message: "no routes: at least one [[route]] is required".into(),
                external: None,
            });
            return None;
        }
        let routes: Vec<Option<Route>> = list
            .iter()
            .enumerate()
            .map(|(index, r)| self.route(r, index, refs, rules))
            .collect();
        routes.into_iter().collect()
    }

    fn route(
        &mut self,
        spanned: &Spanned<file::Route>,
        index: usize,
        refs: &References<'_>,
        rules: PathRules,
    ) -> Option<Route> {
        let r = spanned.get_ref();
        let path = self.take(path_match(r, rules));
        let methods = match &r.methods {
            None => Some(Vec::new()),
            Some(methods) => self.take(route_methods(methods)),
        };
        let host = match &r.host {
            None => Some(None),
            Some(host) => self.take(route_host(host)).map(Some),
        };
        let target = self.take(self.target(spanned, refs)).flatten();
        let policies = self.take(route_policies(r, &refs.policies)).flatten();
        let strip_prefix = self.take(strip_prefix(r));
        let cost = self.take(features::route_cost(r));
        Some(Route {
            name: Arc::from(r.name.get_ref().as_str()),
            path: path?,
            methods: methods?,
            host: host?,
            target: target?,
            policies: policies?,
            strip_prefix: strip_prefix?,
            case_insensitive: r.case_insensitive.unwrap_or(false),
            cost: cost?,
            index,
        })
    }

    /// `Ok(None)` when the named upstream exists but failed its own checks (already reported).
    fn target(
        &self,
        spanned: &Spanned<file::Route>,
        refs: &References<'_>,
    ) -> Check<Option<Target>> {
        let r = spanned.get_ref();
        match (&r.upstream, &r.respond) {
            (Some(upstream), Some(respond)) => Err(Issue::at(
                &later(upstream, respond),
                "a route has either `upstream` or `respond`, not both",
            )),
            (Some(upstream), None) => Ok(refs.upstreams.resolve(upstream)?.map(Target::Upstream)),
            (None, Some(respond)) => self.respond(respond.get_ref()).map(Some),
            (None, None) => Err(Issue::at(
                spanned,
                "a route needs a target: `upstream = \"NAME\"` or \
                 `respond = { status = 200, body = \"...\" }`",
            )),
        }
    }

    fn respond(&self, respond: &file::Respond) -> Check<Target> {
        // A 1xx is never a final answer: a client would wait for the real one.
        let code: u16 = bounded(&respond.status, 200, 599)?;
        let status = StatusCode::from_u16(code)
            .map_err(|_| Issue::at(&respond.status, "must be between 200 and 599"))?;
        let body = match &respond.body {
            None => Bytes::new(),
            Some(body) => Bytes::from(self.expand(body)?),
        };
        Ok(Target::Respond { status, body })
    }
}

/// Resolution of route references by name.
struct References<'a> {
    upstreams: Named<'a, Upstream>,
    policies: Named<'a, Policy>,
}

struct Named<'a, T> {
    kind: &'static str,
    by_name: HashMap<&'a str, usize>,
    items: &'a [Option<Arc<T>>],
}

impl<'a, T> Named<'a, T> {
    fn new(
        kind: &'static str,
        by_name: HashMap<&'a str, usize>,
        items: &'a [Option<Arc<T>>],
    ) -> Self {
        Named {
            kind,
            by_name,
            items,
        }
    }

    /// `Ok(None)` when the item exists but failed its own checks (already reported).
    fn resolve(&self, name: &Spanned<String>) -> Check<Option<Arc<T>>> {
        match self.by_name.get(name.get_ref().as_str()) {
            Some(&index) => Ok(self.items.get(index).cloned().flatten()),
            None => Err(Issue::at(
                name,
                format!(
                    "dangling reference: no [[{}]] named `{}` (defined: {})",
                    self.kind,
                    name.get_ref(),
                    self.defined()
                ),
            )),
        }
    }

    fn defined(&self) -> String {
        let mut names: Vec<(&usize, &&str)> = self.by_name.iter().map(|(n, i)| (i, n)).collect();
        names.sort();
        let names: Vec<&str> = names.into_iter().map(|(_, n)| *n).collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }
}

/// Whichever of two keys comes later in the file: the one that makes the pair conflict.
pub(super) fn later<A, B>(a: &Spanned<A>, b: &Spanned<B>) -> Spanned<()> {
    let span = if b.span().start > a.span().start {
        b.span()
    } else {
        a.span()
    };
    Spanned::new(span, ())
}

/// Names become metric label values and header tokens, hence the narrow alphabet.
fn valid_name(name: &Spanned<String>) -> Check<()> {
    let text = name.get_ref();
    let ok = !text.is_empty()
        && text.len() <= MAX_NAME_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Issue::at(
            name,
            format!(
                "invalid name `{text}`; expected 1 to {MAX_NAME_LEN} characters from \
                 A-Z a-z 0-9 _ . : -"
            ),
        ))
    }
}

/// An integer in `min..=max` converted to the type the runtime model uses.
pub(super) fn bounded<T: TryFrom<u64>>(value: &Spanned<u64>, min: u64, max: u64) -> Check<T> {
    let n = *value.get_ref();
    let message = if max == u64::MAX {
        format!("{n} is too small; must be at least {min}")
    } else {
        format!("{n} is out of range; must be between {min} and {max}")
    };
    if n < min || n > max {
        return Err(Issue::at(value, message));
    }
    T::try_from(n).map_err(|_| Issue::at(value, format!("{n} is too large for this platform")))
}

/// `count * window_ms` must stay exact in a double for the Redis script.
pub(super) fn within_double(value: &Spanned<u64>, count: u64, window: Duration) -> Check<u64> {
    let window_ms = crate::millis::floor(window);
    match count.checked_mul(window_ms) {
        Some(product) if product <= MAX_EXACT_DOUBLE => Ok(count),
        _ => Err(Issue::at(
            value,
            format!(
                "{count} per {window_ms}ms is too large: the value times the window in \
                 milliseconds must not exceed 2^53 ({MAX_EXACT_DOUBLE})"
            ),
        )),
    }
}

fn token_bucket_burst(burst: &Spanned<u64>, algorithm: Algorithm, window: Duration) -> Check<u64> {
    if algorithm != Algorithm::TokenBucket {
        return Err(Issue::at(
            burst,
            format!(
                "`burst` only applies to algorithm \"token_bucket\" (this policy uses \"{}\"); \
                 remove it or change the algorithm",
                algorithm.as_str()
            ),
        ));
    }
    let n = bounded(burst, 1, u64::MAX)?;
    within_double(burst, n, window)
}

fn min_block_for(block_for: &Spanned<super::duration::Positive>) -> Check<Duration> {
    let duration = block_for.get_ref().0;
    if duration < MIN_BLOCK_FOR {
        return Err(Issue::at(block_for, "must be at least 1s"));
    }
    Ok(duration)
}

fn key_parts(key: &Spanned<Vec<Spanned<String>>>) -> Check<Vec<KeyPart>> {
    if key.get_ref().is_empty() {
        return Err(Issue::at(
            key,
            "must name at least one component (omit `key` for the default [\"ip\"])",
        ));
    }
    let mut parts: Vec<KeyPart> = Vec::with_capacity(key.get_ref().len());
    for item in key.get_ref() {
        let part = key_part(item)?;
        if parts.contains(&part) {
            return Err(Issue::at(
                item,
                format!("key component `{part}` is listed twice"),
            ));
        }
        parts.push(part);
    }
    Ok(parts)
}

fn key_part(item: &Spanned<String>) -> Check<KeyPart> {
    let text = item.get_ref().as_str();
    if let Some(name) = text.strip_prefix("header:") {
        // HeaderName lower-cases valid names, so `header:X-Api-Key` and `header:x-api-key` match.
        return HeaderName::from_bytes(name.as_bytes())
            .map(KeyPart::Header)
            .map_err(|_| {
                Issue::at(
                    item,
                    format!("`{name}` is not a valid HTTP header name in key component `{text}`"),
                )
            });
    }
    match text {
        "ip" => Ok(KeyPart::Ip),
        "path" => Ok(KeyPart::Path),
        "method" => Ok(KeyPart::Method),
        "route" => Ok(KeyPart::Route),
        "global" => Ok(KeyPart::Global),
        _ => Err(Issue::at(
            item,
            format!(
                "unknown key component `{text}`; expected \"ip\", \"header:NAME\", \"path\", \
                 \"method\", \"route\" or \"global\""
            ),
        )),
    }
}

fn cidr(item: &Spanned<String>) -> Check<IpNet> {
    let text = item.get_ref();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    // A bare address is a single-host range; mapped IPv6 is unmapped like client addresses are.
    text.parse::<IpAddr>()
        .map(|ip| IpNet::from(ip.to_canonical()))
        .map_err(|_| {
            Issue::at(
                item,
                format!(
                    "`{text}` is not a CIDR range or IP address; expected e.g. \"10.0.0.0/8\", \
                     \"192.0.2.1\" or \"2001:db8::/32\""
                ),
            )
        })
}

/// An alert webhook: http(s) with a host. Messages never repeat the URL, whose path or query is
/// often the secret.
fn webhook_url(at: &EnvString, text: &str) -> Check<Uri> {
    let fail = |what: &str| {
        Issue::at(
            at,
            format!("{what}; expected an http:// or https:// URL such as \"https://hooks.example.com/rategate\""),
        )
    };
    if text.contains('#') {
        return Err(fail("must not contain a fragment (`#`)"));
    }
    let uri: Uri = text.parse().map_err(|_| fail("not a valid URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(fail(&format!("unsupported scheme `{other}`"))),
        None => return Err(fail("missing scheme")),
    }
    let authority = uri.authority().ok_or_else(|| fail("missing host"))?;
    if authority.host().is_empty() {
        return Err(fail("missing host"));
    }
    if authority.as_str().contains('@') {
        return Err(fail(
            "must not contain credentials; use `token` or `token_env`",
        ));
    }
    let has_port = authority.as_str().len() > authority.host().len();
    if has_port && !matches!(authority.port_u16(), Some(port) if port != 0) {
        return Err(fail("invalid port"));
    }
    Ok(uri)
}

/// Split and check an upstream URL into scheme, authority and base path.
fn upstream_url(at: &EnvString, text: &str) -> Check<(Scheme, Authority, String)> {
    let fail = |what: &str| {
        Issue::at(
            at,
            format!(
                "{what}; expected an http:// or https:// URL such as \"http://127.0.0.1:8081\""
            ),
        )
    };
    // `Uri` would silently drop a fragment; refuse it instead.
    if text.contains('#') {
        return Err(fail("must not contain a fragment (`#`)"));
    }
    let uri: Uri = text.parse().map_err(|_| fail("not a valid URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        Some(other) => return Err(fail(&format!("unsupported scheme `{other}`"))),
        None => return Err(fail("missing scheme")),
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| fail("missing host"))?;
    if authority.host().is_empty() {
        return Err(fail("missing host"));
    }
    if authority.as_str().contains('@') {
        return Err(fail("must not contain credentials"));
    }
    // `Uri` accepts any digits after the colon; the connector would fail on them later.
    let has_port = authority.as_str().len() > authority.host().len();
    if has_port && !matches!(authority.port_u16(), Some(port) if port != 0) {
        return Err(fail("invalid port"));
    }
    if uri.query().is_some() {
        return Err(fail("must not contain a query string"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok((scheme, authority, base_path))
}

fn path_rules(s: &file::Server) -> PathRules {
    PathRules {
        semicolons: s.path_semicolons.unwrap_or(file::DEFAULT_PATH_SEMICOLONS),
        escaped_slashes: s.escaped_slashes.unwrap_or(file::DEFAULT_ESCAPED_SLASHES),
    }
}

fn path_match(r: &file::Route, rules: PathRules) -> Check<PathMatch> {
    match (&r.path, &r.path_prefix) {
        (Some(path), Some(prefix)) => Err(Issue::at(
            &later(path, prefix),
            "`path` and `path_prefix` cannot both be set; use `path` for one exact path or \
             `path_prefix` for a subtree",
        )),
        (Some(path), None) => Ok(PathMatch::Exact(route_path(path, rules)?)),
        (None, Some(prefix)) => {
            let prefix = route_path(prefix, rules)?;
            let trimmed = prefix.trim_end_matches('/');
            Ok(PathMatch::Prefix(if trimmed.is_empty() {
                "/".to_owned()
            } else {
                trimmed.to_owned()
            }))
        }
        (None, None) => Ok(PathMatch::Prefix("/".to_owned())),
    }
}

/// Requests are matched after normalization, so a path that is not normalized could never match.
fn route_path(path: &Spanned<String>, rules: PathRules) -> Check<String> {
    let text = path.get_ref();
    if !text.starts_with('/') {
        return Err(Issue::at(path, format!("`{text}` must start with `/`")));
    }
    if text.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#') {
        return Err(Issue::at(
            path,
            format!("`{text}` must be a path only: no whitespace, query (`?`) or fragment (`#`)"),
        ));
    }
    let dotted = text[1..].split('/').any(|s| s == "." || s == "..");
    if text.contains("//") || dotted {
        return Err(Issue::at(
            path,
            format!("`{text}` is not normalized: no `//`, `.` or `..` segments"),
        ));
    }
    route_path_under_rules(text, rules).map_err(|message| Issue::at(path, message))?;
    Ok(text.clone())
}

/// A route path that the path rules would refuse or rewrite in a request can never match.
fn route_path_under_rules(text: &str, rules: PathRules) -> Result<(), String> {
    let upper = text.to_ascii_uppercase();
    let semicolon = text.contains(';') || upper.contains("%3B");
    match rules.semicolons {
        Semicolons::Keep => {}
        _ if !semicolon => {}
        Semicolons::Reject => {
            return Err(format!(
                "`{text}` can never match: server.path_semicolons = \"reject\" refuses requests \
                 whose path holds `;` or `%3B`"
            ))
        }
        Semicolons::Strip => {
            return Err(format!(
                "`{text}` can never match: server.path_semicolons = \"strip\" removes `;` \
                 parameters before matching (and refuses `%3B`)"
            ))
        }
    }
    if upper.contains("%2F") || upper.contains("%5C") {
        match rules.escaped_slashes {
            EscapedSlashes::Keep => {}
            EscapedSlashes::Reject => {
                return Err(format!(
                    "`{text}` can never match: server.escaped_slashes = \"reject\" refuses \
                     requests whose path holds `%2F` or `%5C`"
                ))
            }
            EscapedSlashes::Decode => {
                return Err(format!(
                    "`{text}` can never match: server.escaped_slashes = \"decode\" turns `%2F` \
                     into `/` before matching (and refuses `%5C`); write `/`"
                ))
            }
        }
    }
    match path::normalize(text, rules) {
        Ok(normal) if normal == text => Ok(()),
        Ok(normal) => Err(format!(
            "`{text}` is not normalized: requests are matched in their normalized form, here \
             `{normal}`"
        )),
        Err(e) => Err(format!(
            "`{text}` can never match: requests with this path are refused ({e})"
        )),
    }
}

fn route_methods(methods: &Spanned<Vec<Spanned<String>>>) -> Check<Vec<Method>> {
    if methods.get_ref().is_empty() {
        return Err(Issue::at(
            methods,
            "must name at least one method (omit `methods` to match any method)",
        ));
    }
    let mut out: Vec<Method> = Vec::with_capacity(methods.get_ref().len());
    for item in methods.get_ref() {
        let upper = item.get_ref().to_ascii_uppercase();
        let method = STANDARD_METHODS
            .iter()
            .find(|m| m.as_str() == upper)
            .ok_or_else(|| {
                Issue::at(
                    item,
                    format!(
                        "unknown HTTP method `{}`; expected one of GET, HEAD, POST, PUT, DELETE, \
                         CONNECT, OPTIONS, TRACE, PATCH",
                        item.get_ref()
                    ),
                )
            })?;
        if !out.contains(method) {
            out.push(method.clone());
        }
    }
    Ok(out)
}

fn route_host(host: &Spanned<String>) -> Check<String> {
    let text = host.get_ref();
    let bad = || {
        Issue::at(
            host,
            format!("`{text}` is not a host name; expected e.g. \"api.example.com\""),
        )
    };
    if text.contains(['@', '/']) {
        return Err(bad());
    }
    let authority: Authority = text.parse().map_err(|_| bad())?;
    if authority.host().is_empty() {
        return Err(bad());
    }
    // Ports are ignored when matching, and host names are case-insensitive.
    Ok(authority.host().to_ascii_lowercase())
}

/// `Ok(None)` when a named policy exists but failed its own checks (already reported).
fn route_policies(
    r: &file::Route,
    policies: &Named<'_, Policy>,
) -> Check<Option<Vec<Arc<Policy>>>> {
    let Some(names) = &r.policies else {
        return Ok(Some(Vec::new()));
    };
    let mut out = Vec::with_capacity(names.len());
    let mut complete = true;
    for (i, name) in names.iter().enumerate() {
        if names[..i].iter().any(|n| n.get_ref() == name.get_ref()) {
            return Err(Issue::at(
                name,
                format!("policy `{}` is listed twice", name.get_ref()),
            ));
        }
        match policies.resolve(name)? {
            Some(policy) => out.push(policy),
            None => complete = false,
        }
    }
    Ok(complete.then_some(out))
}

fn strip_prefix(r: &file::Route) -> Check<bool> {
    let Some(flag) = &r.strip_prefix else {
        return Ok(false);
    };
    if *flag.get_ref() && (r.path_prefix.is_none() || r.upstream.is_none()) {
        return Err(Issue::at(
            flag,
            "`strip_prefix = true` needs both `path_prefix` and `upstream`",
        ));
    }
    Ok(*flag.get_ref())
}

#[cfg(test)]
mod tests {
    use std::env::VarError;

    use super::*;

    const ROUTE: &str = "[[route]]\nname = \"r\"\nrespond = { status = 200 }\n";

    fn fake_env(name: &str) -> Result<String, VarError> {
        match name {
            "TOKEN" => Ok("s3cret".into()),
            "REDIS_PASSWORD" => Ok("pw".into()),
            "EMPTY" => Ok(String::new()),
            _ => Err(VarError::NotPresent),
        }
    }

    fn compile_text(text: &str) -> Result<Config, ConfigError> {
        compile_with_env(Path::new("test.toml"), text, &fake_env)
    }

    fn ok(text: &str) -> Config {
        match compile_text(text) {
            Ok(config) => config,
            Err(e) => panic!("expected success, got {e}"),
        }
    }

    fn err(text: &str) -> ConfigError {
        match compile_text(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e,
        }
    }

    /// Line, column, key, and whether the message contains `needle`.
    fn assert_err(text: &str, line: usize, column: usize, key: &str, needle: &str) {
        let e = err(text);
        assert_eq!((e.line, e.column), (Some(line), Some(column)), "{e}");
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(needle), "{e}\nwanted: {needle}");
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let c = ok(ROUTE);
        assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
        assert!(c.server.trusted_proxies.is_empty());
        assert_eq!(c.server.ipv6_prefix, 64);
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_header_bytes, 16384);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
        assert!(c.server.tls.is_none());
        assert_eq!(c.server.path_rules.semicolons, Semicolons::Reject);
        assert_eq!(c.server.path_rules.escaped_slashes, EscapedSlashes::Keep);
        assert!(!c.routes[0].case_insensitive);
        assert_eq!(c.admin.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(c.admin.token, None);
        assert_eq!(c.store.kind, StoreKind::Memory);
        assert_eq!(c.store.url, "redis://127.0.0.1:6379/0");
        assert_eq!(c.store.key_prefix, "rategate:");
        assert_eq!(c.store.timeout, Duration::from_millis(50));
        assert_eq!(c.store.on_error, super::super::compiled::OnError::Fallback);
        assert_eq!(c.store.max_memory_keys, 1_000_000);
        let route = &c.routes[0];
        assert_eq!(route.path, PathMatch::Prefix("/".into()));
        assert!(route.methods.is_empty());
        assert!(!route.strip_prefix);
        assert!(matches!(&route.target, Target::Respond { status, body }
            if *status == StatusCode::OK && body.is_empty()));
    }

    #[test]
    fn policy_defaults_and_references() {
        let c = ok("[[upstream]]\nname = \"api\"\nurl = \"https://Backend:8443/v1/\"\n\
                    [[policy]]\nname = \"a\"\nalgorithm = \"token_bucket\"\nlimit = 5\nwindow = \"1s\"\n\
                    [[policy]]\nname = \"b\"\nalgorithm = \"fixed_window\"\nlimit = 7\nwindow = \"1m\"\n\
                    [[route]]\nname = \"r\"\nupstream = \"api\"\npolicies = [\"b\", \"a\"]\n");
        let a = &c.policies[0];
        assert_eq!(
            (a.burst, a.key.as_slice(), a.index),
            (5, &[KeyPart::Ip][..], 0)
        );
        assert_eq!(c.policies[1].index, 1);
        let names: Vec<&str> = c.routes[0].policies.iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["b", "a"]);
        assert!(Arc::ptr_eq(&c.routes[0].policies[0], &c.policies[1]));
        let Target::Upstream(u) = &c.routes[0].target else {
            panic!("expected an upstream target");
        };
        assert!(Arc::ptr_eq(u, &c.upstreams[0]));
        assert_eq!(
            (u.scheme.as_str(), u.authority.as_str()),
            ("https", "Backend:8443")
        );
        assert_eq!(u.base_path, "/v1");
        assert_eq!(
            u.uri_for("/x", Some("q=1")).unwrap(),
            "https://Backend:8443/v1/x?q=1"
        );
    }

    #[test]
    fn first_error_in_file_order_wins() {
        // The route comes first in the file, so its error is reported before the policy's.
        let text = "[[route]]\nname = \"r\"\nrespond = { status = 700 }\n\
                    [[policy]]\nname = \"p\"\nalgorithm = \"fixed_window\"\nlimit = 0\nwindow = \"1s\"\n";
        assert_err(
            text,
            3,
            22,
            "route[0].respond.status",
            "between 200 and 599",
        );
    }

    #[test]
    fn a_broken_policy_is_not_also_reported_as_dangling() {
        let text =
            "[[policy]]\nname = \"p\"\nalgorithm = \"fixed_window\"\nlimit = 0\nwindow = \"1s\"\n\
                    [[route]]\nname = \"r\"\nrespond = { status = 200 }\npolicies = [\"p\"]\n";
        assert_err(text, 4, 9, "policy[0].limit", "at least 1");
    }

    #[test]
    fn dangling_references_point_at_the_name() {
        let text = format!(
            "{ROUTE}policies = [\"x\", \"nope\"]\n[[policy]]\nname = \"x\"\n\
                            algorithm = \"sliding_log\"\nlimit = 1\nwindow = \"1s\"\n"
        );
        assert_err(
            &text,
            4,
            18,
            "route[0].policies",
            "dangling reference: no [[policy]] named `nope` (defined: x)",
        );
        let text = "[[route]]\nname = \"r\"\nupstream = \"api\"\n";
        assert_err(
            text,
            3,
            12,
            "route[0].upstream",
            "no [[upstream]] named `api` (defined: none)",
        );
    }

    #[test]
    fn duplicate_and_invalid_names() {
        let text = format!("{ROUTE}{ROUTE}");
        assert_err(
            &text,
            5,
            8,
            "route[1].name",
            "duplicate route name `r` (first defined on line 2)",
        );
        let text = "[[route]]\nname = \"has space\"\nrespond = { status = 200 }\n";
        assert_err(text, 2, 8, "route[0].name", "invalid name `has space`");
        let long = "x".repeat(65);
        let text = format!("[[route]]\nname = \"{long}\"\nrespond = {{ status = 200 }}\n");
        assert_err(&text, 2, 8, "route[0].name", "1 to 64 characters");
        let text = "[[route]]\nname = \"\"\nrespond = { status = 200 }\n";
        assert_err(text, 2, 8, "route[0].name", "invalid name ``");
        ok("[[route]]\nname = \"a-b_c.d:e\"\nrespond = { status = 200 }\n");
    }

    #[test]
    fn no_routes_is_an_error_without_position() {
        let e = err("[server]\nlisten = \"127.0.0.1:1\"\n");
        assert_eq!((e.line, e.key.as_str()), (None, "route"));
        assert_eq!(
            e.to_string(),
            "test.toml: key `route`: no routes: at least one [[route]] is required"
        );
    }

    #[test]
    fn toml_errors_carry_position_and_key() {
        let e = err("[server\n");
        assert_eq!((e.line, e.key.as_str()), (Some(1), ""));
        assert_err(
            &format!("{ROUTE}bogus = 1\n"),
            4,
            1,
            "route[0].bogus",
            "unknown field `bogus`",
        );
        assert_err(
            &format!("[store]\non_error = \"retry\"\n{ROUTE}"),
            2,
            12,
            "store.on_error",
            "unknown variant `retry`, expected one of `fallback`, `allow`, `deny`",
        );
        assert_err(
            "[[policy]]\nname = \"p\"\nalgorithm = \"fixed_window\"\nwindow = \"1s\"\n",
            1,
            1,
            "policy[0]",
            "missing field `limit`",
        );
        assert_err(
            "[[policy]]\nname = \"p\"\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1x\"\n",
            5,
            10,
            "policy[0].window",
            "unknown unit `x`",
        );
    }

    #[test]
    fn environment_substitution() {
        let c = ok(&format!("[admin]\nlisten = \"0.0.0.0:9100\"\ntoken = \"${{TOKEN}}\"\n\
                             [store]\nkind = \"redis\"\nurl = \"redis://:${{REDIS_PASSWORD}}@h:6379/0\"\n{ROUTE}"));
        assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
        assert_eq!(c.store.url, "redis://:pw@h:6379/0");
        let c = ok(
            "[[route]]\nname = \"r\"\nrespond = { status = 200, body = \"$${TOKEN} ${TOKEN}\" }\n",
        );
        assert!(
            matches!(&c.routes[0].target, Target::Respond { body, .. } if body == "${TOKEN} s3cret")
        );
        assert_err(
            &format!("[admin]\ntoken = \"${{NOPE}}\"\n{ROUTE}"),
            2,
            9,
            "admin.token",
            "environment variable `NOPE` is not set",
        );
        assert_err(
            &format!("[admin]\ntoken = \"${{EMPTY}}\"\n{ROUTE}"),
            2,
            9,
            "admin.token",
            "must not be empty",
        );
    }

    #[test]
    fn forward_client_ip_headers() {
        assert!(ok(ROUTE).server.forward_client_ip_headers);
        let c = ok(&format!(
            "[server]\nforward_client_ip_headers = false\n{ROUTE}"
        ));
        assert!(!c.server.forward_client_ip_headers);
        assert_err(
            &format!("[server]\nforward_client_ip_headers = \"no\"\n{ROUTE}"),
            2,
            29,
            "server.forward_client_ip_headers",
            "invalid type: string \"no\", expected a boolean",
        );
    }

    #[test]
    fn alerts_section() {
        let c = ok(ROUTE);
        assert!(c.alerts.is_none());
        assert!(c.server.access_log);
        let c = ok(&format!("[server]\naccess_log = false\n{ROUTE}"));
        assert!(!c.server.access_log);

        let c = ok(&format!(
            "[alerts]\nwebhook_url = \"https://hooks.example.com/x?k=${{TOKEN}}\"\n\
             format = \"slack\"\ntoken_env = \"TOKEN\"\nrejections_threshold = 50\n\
             threshold_window = \"5m\"\ntimeout = \"2s\"\nmax_retries = 5\nqueue_size = 10\n{ROUTE}"
        ));
        let a = c.alerts.unwrap();
        assert_eq!(a.webhook, "https://hooks.example.com/x?k=s3cret");
        assert_eq!(a.format, super::super::compiled::AlertFormat::Slack);
        assert_eq!(a.token.as_deref(), Some("s3cret"));
        assert_eq!(
            a.threshold,
            Some(AlertThreshold {
                rejections: 50,
                window: Duration::from_secs(300)
            })
        );
        assert_eq!(
            (a.timeout, a.max_retries, a.queue_size),
            (Duration::from_secs(2), 5, 10)
        );
        assert!(!format!("{a:?}").contains("s3cret"));

        let c = ok(&format!(
            "[alerts]\nwebhook_url = \"http://127.0.0.1:9/hook\"\ntoken = \"${{TOKEN}}\"\n{ROUTE}"
        ));
        let a = c.alerts.unwrap();
        assert_eq!(a.token.as_deref(), Some("s3cret"));
        assert_eq!((a.max_retries, a.queue_size, a.threshold), (3, 1000, None));

        assert_err(
            &format!("[alerts]\nwebhook_url = \"ftp://h/x\"\n{ROUTE}"),
            2,
            15,
            "alerts.webhook_url",
            "unsupported scheme `ftp`",
        );
        assert_err(
            &format!("[alerts]\nwebhook_url = \"http://h/x\"\ntoken = \"a\"\ntoken_env = \"TOKEN\"\n{ROUTE}"),
            4,
            13,
            "alerts.token_env",
            "either `token` or `token_env`",
        );
        assert_err(
            &format!("[alerts]\nwebhook_url = \"http://h/x\"\ntoken_env = \"NOPE\"\n{ROUTE}"),
            3,
            13,
            "alerts.token_env",
            "environment variable `NOPE` is not set",
        );
        assert_err(
            &format!("[alerts]\nwebhook_url = \"http://h/x\"\ntoken_env = \"${{TOKEN}}\"\n{ROUTE}"),
            3,
            13,
            "alerts.token_env",
            "not an environment variable name",
        );
        assert_err(
            &format!("[alerts]\nwebhook_url = \"http://h/x\"\nthreshold_window = \"1m\"\n{ROUTE}"),
            3,
            20,
            "alerts.threshold_window",
            "needs `rejections_threshold`",
        );
        assert_err(
            &format!("[alerts]\nwebhook_url = \"http://h/x\"\nqueue_size = 0\n{ROUTE}"),
            3,
            14,
            "alerts.queue_size",
            "between 1 and 1000000",
        );
        assert_err(
            &format!("[alerts]\nwebhook_url = \"http://h/x\"\nformat = \"xml\"\n{ROUTE}"),
            3,
            10,
            "alerts.format",
            "unknown variant `xml`",
        );
        assert_err(
            &format!("[alerts]\nwebhook_url = \"http://h/x\"\nretries = 1\n{ROUTE}"),
            3,
            1,
            "alerts.retries",
            "unknown field `retries`",
        );
    }

    #[test]
    fn admin_token_rules() {
        let text = format!("[admin]\nlisten = \"0.0.0.0:9100\"\n{ROUTE}");
        assert_err(&text, 2, 10, "admin.token", "not a loopback address");
        ok(&format!("[admin]\nlisten = \"[::1]:9100\"\n{ROUTE}"));
        ok(&format!("[admin]\nlisten = \"127.0.0.2:9100\"\n{ROUTE}"));
        assert_err(
            &format!("[admin]\ntoken = \"\"\n{ROUTE}"),
            2,
            9,
            "admin.token",
            "must not be empty",
        );
        assert_err(
            &format!("[admin]\nlisten = \"localhost:9100\"\n{ROUTE}"),
            2,
            10,
            "admin.listen",
            "not a socket address",
        );
    }

    #[test]
    fn server_ranges_and_lists() {
        let c = ok(&format!(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"::ffff:1.2.3.4\", \
                             \"2001:db8::1\", \"10.1.2.3/16\"]\n{ROUTE}"
        ));
        let nets: Vec<String> = c
            .server
            .trusted_proxies
            .nets()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            nets,
            [
                "1.2.3.4/32",
                "10.0.0.0/8",
                "192.0.2.7/32",
                "2001:db8::1/128"
            ]
        );
        assert_err(
            &format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\",\n  \"10.0.0.0/33\"]\n{ROUTE}"),
            3,
            3,
            "server.trusted_proxies",
            "not a CIDR range or IP address",
        );
        assert_err(
            &format!("[server]\nipv6_prefix = 0\n{ROUTE}"),
            2,
            15,
            "server.ipv6_prefix",
            "between 1 and 128",
        );
        assert_err(
            &format!("[server]\nipv6_prefix = 129\n{ROUTE}"),
            2,
            15,
            "server.ipv6_prefix",
            "between 1 and 128",
        );
        assert_err(
            &format!("[server]\nmax_header_bytes = 1023\n{ROUTE}"),
            2,
            20,
            "server.max_header_bytes",
            "between 1024 and 1048576",
        );
        assert_err(
            &format!("[server]\nheader_read_timeout = \"0s\"\n{ROUTE}"),
            2,
            23,
            "server.header_read_timeout",
            "greater than zero",
        );
        let c = ok(&format!("[server]\nshutdown_grace = \"0s\"\n{ROUTE}"));
        assert_eq!(c.server.shutdown_grace, Duration::ZERO);
        assert_err(
            &format!("[server.tls]\ncert = \"c.pem\"\n{ROUTE}"),
            1,
            1,
            "server.tls",
            "missing field `key`",
        );
        assert_err(
            &format!("[access]\ndeny = [\"nope\"]\n{ROUTE}"),
            2,
            9,
            "access.deny",
            "`nope` is not a CIDR",
        );
    }

    #[test]
    fn connection_bounds() {
        let c = ok(ROUTE);
        assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.server.send_timeout, Duration::from_secs(60));
        assert_eq!(c.server.max_connections, None);
        let c = ok(&format!(
            "[server]\nidle_timeout = \"5s\"\nsend_timeout = \"250ms\"\nmax_connections = 3\n{ROUTE}"
        ));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.server.send_timeout, Duration::from_millis(250));
        assert_eq!(c.server.max_connections, Some(3));
        assert_err(
            &format!("[server]\nidle_timeout = \"0s\"\n{ROUTE}"),
            2,
            16,
            "server.idle_timeout",
            "greater than zero",
        );
        assert_err(
            &format!("[server]\nsend_timeout = \"-5s\"\n{ROUTE}"),
            2,
            16,
            "server.send_timeout",
            "cannot be negative",
        );
        assert_err(
            &format!("[server]\nmax_connections = 0\n{ROUTE}"),
            2,
            19,
            "server.max_connections",
            "between 1 and 16777216",
        );
        assert_err(
            &format!("[server]\nmax_connections = -1\n{ROUTE}"),
            2,
            19,
            "server.max_connections",
            "expected u64",
        );
    }

    #[test]
    fn store_rules() {
        let text = format!("[store]\nkind = \"redis\"\nurl = \"http://h:6379\"\n{ROUTE}");
        assert_err(&text, 3, 7, "store.url", "unsupported URL scheme `http`");
        // The memory store does not use the URL.
        ok(&format!("[store]\nurl = \"whatever\"\n{ROUTE}"));
        for url in [
            "rediss://h/0",
            "redis-sentinel://h:26379/0?sentinelServiceName=m",
            "redis-cluster://h:7000",
        ] {
            ok(&format!(
                "[store]\nkind = \"redis\"\nurl = \"{url}\"\n{ROUTE}"
            ));
        }
        assert_err(
            &format!("[store]\nkey_prefix = \"{{rg}}:\"\n{ROUTE}"),
            2,
            14,
            "store.key_prefix",
            "`{`",
        );
        assert_err(
            &format!("[store]\nmax_memory_keys = 999\n{ROUTE}"),
            2,
            19,
            "store.max_memory_keys",
            "at least 1000",
        );
    }

    fn policy(extra: &str) -> String {
        format!("[[policy]]\nname = \"p\"\nlimit = 10\nwindow = \"1s\"\n{extra}\n{ROUTE}")
    }

    #[test]
    fn policy_rules() {
        let p = |extra: &str| policy(&format!("algorithm = \"token_bucket\"\n{extra}"));
        let c = ok(&p("burst = 20\nkey = [\"header:X-Api-Key\", \"route\", \"ip\"]\nblock_for = \"1s\"\nmode = \"shadow\""));
        let compiled = &c.policies[0];
        assert_eq!(compiled.burst, 20);
        assert_eq!(
            compiled.key,
            [
                KeyPart::Header(HeaderName::from_static("x-api-key")),
                KeyPart::Route,
                KeyPart::Ip
            ]
        );
        assert_eq!(compiled.block_for, Some(Duration::from_secs(1)));
        assert_eq!(compiled.mode, super::super::compiled::Mode::Shadow);

        assert_err(&p("burst = 0"), 6, 9, "policy[0].burst", "at least 1");
        assert_err(
            &p("key = []"),
            6,
            7,
            "policy[0].key",
            "at least one component",
        );
        assert_err(
            &p("key = [\"ip\", \"cookie\"]"),
            6,
            14,
            "policy[0].key",
            "unknown key component `cookie`",
        );
        assert_err(
            &p("key = [\"header:x-a\", \"header:X-A\"]"),
            6,
            22,
            "policy[0].key",
            "`header:x-a` is listed twice",
        );
        assert_err(
            &p("key = [\"header:bad name\"]"),
            6,
            8,
            "policy[0].key",
            "`bad name` is not a valid HTTP header name",
        );
        assert_err(
            &p("key = [\"header:\"]"),
            6,
            8,
            "policy[0].key",
            "not a valid HTTP header name",
        );
        assert_err(
            &p("block_for = \"999ms\""),
            6,
            13,
            "policy[0].block_for",
            "at least 1s",
        );
        assert_err(
            &p("mode = \"dry_run\""),
            6,
            8,
            "policy[0].mode",
            "expected `enforce` or `shadow`",
        );

        let s = |extra: &str| policy(&format!("algorithm = \"sliding_window\"\n{extra}"));
        assert_err(
            &s("burst = 5"),
            6,
            9,
            "policy[0].burst",
            "only applies to algorithm \"token_bucket\"",
        );
        assert_err(
            &policy("algorithm = \"leaky\""),
            5,
            13,
            "policy[0].algorithm",
            "unknown variant `leaky`",
        );
    }

    #[test]
    fn policy_feature_defaults_and_normalization() {
        let c = ok(&format!(
            "[server]\nipv6_prefix = 48\n\
             [[policy]]\nname = \"conc\"\nalgorithm = \"concurrency\"\nlimit = 2\n\
             [[policy]]\nname = \"login\"\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"15m\"\n\
             count_status = [403, 401, 403]\nblock_for = \"1m\"\nblock_multiplier = 10\n\
             overrides = {{ \"2001:db8:1:2::7\" = 9, \"::ffff:10.0.0.1\" = 7 }}\n\
             [[policy]]\nname = \"m\"\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1s\"\n\
             key = [\"method\"]\noverrides = {{ \"post\" = 1 }}\n\
             [[policy]]\nname = \"h\"\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1s\"\n\
             key = [\"header:x-key\"]\noverrides = {{ \" gold \" = 50 }}\n{ROUTE}"
        ));
        let conc = &c.policies[0];
        assert_eq!(conc.window, Duration::from_secs(60), "default lease");
        let login = &c.policies[1];
        assert_eq!(
            login.count,
            super::super::compiled::CountOn::Statuses(vec![401, 403].into())
        );
        let e = login.escalation.expect("escalation");
        assert_eq!(
            (e.multiplier, e.max, e.memory),
            (10, Duration::from_secs(86_400), Duration::from_secs(86_400))
        );
        // IP keys are stored as the client keys the gateway builds.
        assert_eq!(login.overrides.get("2001:db8:1::/48"), Some(9));
        assert_eq!(login.overrides.get("10.0.0.1"), Some(7));
        assert_eq!(c.policies[2].overrides.get("POST"), Some(1));
        assert_eq!(c.policies[3].overrides.get("gold"), Some(50));
        assert_eq!(c.routes[0].cost, super::super::compiled::Cost::default());
    }

    #[test]
    fn overrides_file_is_read_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tiers")).unwrap();
        std::fs::write(
            dir.path().join("tiers/ips.toml"),
            "\"2001:db8::1\" = 10\n\"10.1.1.1\" = 20\n\"2001:db8::2\" = 30\n",
        )
        .unwrap();
        let text = format!(
            "[[policy]]\nname = \"p\"\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1s\"\n\
             overrides_file = \"tiers/ips.toml\"\n{ROUTE}"
        );
        let config = dir.path().join("rategate.toml");
        let e = compile_with_env(&config, &text, &fake_env).unwrap_err();
        // Two addresses of one /64 are one client.
        assert_eq!(e.file, dir.path().join("tiers/ips.toml"));
        assert_eq!((e.line, e.column), (Some(3), Some(17)), "{e}");
        assert!(
            e.message
                .contains("`2001:db8::2` is the same client as `2001:db8::1`"),
            "{e}"
        );
        std::fs::write(dir.path().join("tiers/ips.toml"), "\"10.1.1.1\" = 20\n").unwrap();
        let c = compile_with_env(&config, &text, &fake_env).unwrap();
        assert_eq!(c.policies[0].overrides.get("10.1.1.1"), Some(20));
    }

    #[test]
    fn counts_must_stay_exact_in_doubles() {
        let at_limit = "[[policy]]\nname = \"p\"\nalgorithm = \"fixed_window\"\nlimit = 9007199254740992\nwindow = \"1ms\"\n";
        ok(&format!("{at_limit}{ROUTE}"));
        let over = "[[policy]]\nname = \"p\"\nalgorithm = \"fixed_window\"\nlimit = 9007199254741\nwindow = \"1s\"\n";
        assert_err(
            &format!("{over}{ROUTE}"),
            4,
            9,
            "policy[0].limit",
            "must not exceed 2^53",
        );
        let burst = "[[policy]]\nname = \"p\"\nalgorithm = \"token_bucket\"\nlimit = 1\nwindow = \"1d\"\nburst = 9007199254741\n";
        assert_err(
            &format!("{burst}{ROUTE}"),
            6,
            9,
            "policy[0].burst",
            "must not exceed 2^53",
        );
    }

    fn route(extra: &str) -> String {
        format!("[[upstream]]\nname = \"api\"\nurl = \"http://127.0.0.1:8081\"\n[[route]]\nname = \"r\"\n{extra}\n")
    }

    #[test]
    fn path_rules_and_case_insensitive() {
        let c = ok(&format!(
            "[server]\npath_semicolons = \"keep\"\nescaped_slashes = \"reject\"\n{ROUTE}\
             case_insensitive = true\n"
        ));
        assert_eq!(c.server.path_rules.semicolons, Semicolons::Keep);
        assert_eq!(c.server.path_rules.escaped_slashes, EscapedSlashes::Reject);
        assert!(c.routes[0].case_insensitive);
        assert_err(
            &format!("[server]\nescaped_slashes = \"yes\"\n{ROUTE}"),
            2,
            19,
            "server.escaped_slashes",
            "unknown variant `yes`, expected one of `keep`, `reject`, `decode`",
        );
        assert_err(
            &format!("{ROUTE}case_insensitive = 1\n"),
            4,
            20,
            "route[0].case_insensitive",
            "expected a boolean",
        );
    }

    /// A route path is checked against the rules requests go through: one they would refuse or
    /// rewrite could never match.
    #[test]
    fn route_paths_under_path_rules() {
        let with = |server: &str, extra: &str| format!("[server]\n{server}\n{}", route(extra));
        // `;` is data only under "keep".
        let c = ok(&with(
            "path_semicolons = \"keep\"",
            "path_prefix = \"/a;b\"\nupstream = \"api\"",
        ));
        assert_eq!(c.routes[0].path, PathMatch::Prefix("/a;b".into()));
        for (server, path, needle) in [
            ("", "/a;b", "path_semicolons = \"reject\" refuses"),
            ("", "/a%3Bb", "path_semicolons = \"reject\" refuses"),
            (
                "path_semicolons = \"strip\"",
                "/a;b",
                "\"strip\" removes `;` parameters",
            ),
            (
                "escaped_slashes = \"reject\"",
                "/a%2Fb",
                "escaped_slashes = \"reject\"",
            ),
            (
                "escaped_slashes = \"decode\"",
                "/a%2fb",
                "\"decode\" turns `%2F` into `/`",
            ),
            (
                "escaped_slashes = \"decode\"",
                "/a%5Cb",
                "\"decode\" turns `%2F` into `/`",
            ),
            ("", "/a/%61", "normalized form, here `/a/a`"),
            ("", "/a%2fb", "normalized form, here `/a%2Fb`"),
            (
                "",
                "/a\\\\b",
                "can never match: requests with this path are refused",
            ),
        ] {
            assert_err(
                &with(
                    server,
                    &format!("path_prefix = \"{path}\"\nupstream = \"api\""),
                ),
                8,
                15,
                "route[0].path_prefix",
                needle,
            );
        }
        let c = ok(&with(
            "escaped_slashes = \"keep\"",
            "path = \"/files/a%2Fb\"\nupstream = \"api\"",
        ));
        assert_eq!(c.routes[0].path, PathMatch::Exact("/files/a%2Fb".into()));
    }

    #[test]
    fn route_matching_fields() {
        let c = ok(&route("path_prefix = \"/api/\"\nmethods = [\"get\", \"POST\", \"GET\"]\nhost = \"API.Example.com:8443\"\n\
                           upstream = \"api\"\nstrip_prefix = true"));
        let r = &c.routes[0];
        assert_eq!(r.path, PathMatch::Prefix("/api".into()));
        assert_eq!(r.methods, [Method::GET, Method::POST]);
        assert_eq!(r.host.as_deref(), Some("api.example.com"));
        assert!(r.strip_prefix);
        let c = ok(&route(
            "path = \"/exact/\"\nhost = \"[::1]:80\"\nupstream = \"api\"",
        ));
        assert_eq!(c.routes[0].path, PathMatch::Exact("/exact/".into()));
        assert_eq!(c.routes[0].host.as_deref(), Some("[::1]"));
        let c = ok(&route("path_prefix = \"/\"\nupstream = \"api\""));
        assert_eq!(c.routes[0].path, PathMatch::Prefix("/".into()));

        assert_err(
            &route("path = \"/a\"\npath_prefix = \"/b\"\nupstream = \"api\""),
            7,
            15,
            "route[0].path_prefix",
            "cannot both be set",
        );
        assert_err(
            &route("path = \"a\"\nupstream = \"api\""),
            6,
            8,
            "route[0].path",
            "must start with `/`",
        );
        assert_err(
            &route("path_prefix = \"/a//b\"\nupstream = \"api\""),
            6,
            15,
            "route[0].path_prefix",
            "not normalized",
        );
        assert_err(
            &route("path_prefix = \"/a/../b\"\nupstream = \"api\""),
            6,
            15,
            "route[0].path_prefix",
            "not normalized",
        );
        assert_err(
            &route("path = \"/a?x=1\"\nupstream = \"api\""),
            6,
            8,
            "route[0].path",
            "query",
        );
        assert_err(
            &route("methods = [\"GET\", \"FETCH\"]\nupstream = \"api\""),
            6,
            19,
            "route[0].methods",
            "unknown HTTP method `FETCH`",
        );
        assert_err(
            &route("methods = []\nupstream = \"api\""),
            6,
            11,
            "route[0].methods",
            "at least one method",
        );
        assert_err(
            &route("host = \"user@h\"\nupstream = \"api\""),
            6,
            8,
            "route[0].host",
            "not a host name",
        );
        assert_err(
            &route("host = \"\"\nupstream = \"api\""),
            6,
            8,
            "route[0].host",
            "not a host name",
        );
    }

    #[test]
    fn route_targets() {
        assert_err(
            &route("upstream = \"api\"\nrespond = { status = 200 }"),
            7,
            11,
            "route[0].respond",
            "either `upstream` or `respond`, not both",
        );
        assert_err(&route(""), 4, 1, "route[0]", "needs a target");
        assert_err(
            &route("respond = { status = 99 }"),
            6,
            22,
            "route[0].respond.status",
            "between 200 and 599",
        );
        // 1xx is informational, never a final answer.
        assert_err(
            &route("respond = { status = 101 }"),
            6,
            22,
            "route[0].respond.status",
            "101 is out of range; must be between 200 and 599",
        );
        assert_err(
            &route("respond = { body = \"x\" }"),
            6,
            11,
            "route[0].respond",
            "missing field `status`",
        );
        assert_err(
            &route("respond = { status = 200 }\nstrip_prefix = true\npath_prefix = \"/a\""),
            7,
            16,
            "route[0].strip_prefix",
            "needs both `path_prefix` and `upstream`",
        );
        assert_err(
            &route("upstream = \"api\"\nstrip_prefix = true"),
            7,
            16,
            "route[0].strip_prefix",
            "needs both",
        );
        assert_err(
            &route(
                "upstream = \"api\"\npolicies = [\"p\", \"p\"]\n[[policy]]\nname = \"p\"\n\
                           algorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1s\"",
            ),
            7,
            18,
            "route[0].policies",
            "policy `p` is listed twice",
        );
        ok(&route("upstream = \"api\"\nstrip_prefix = false"));
    }

    #[test]
    fn upstream_urls() {
        let u = |url: &str| format!("[[upstream]]\nname = \"u\"\nurl = \"{url}\"\n{ROUTE}");
        for (url, needle) in [
            ("ftp://h", "unsupported scheme `ftp`"),
            ("127.0.0.1:8081", "missing scheme"),
            ("h:8081", "missing scheme"),
            ("/just/a/path", "missing scheme"),
            ("http://h/?a=1", "query string"),
            ("http://h/#x", "fragment"),
            ("http://user:pw@h/", "credentials"),
            ("http://", "not a valid URL"),
            ("http://h:99999", "invalid port"),
            ("http://h:0", "invalid port"),
            ("http://h:/", "invalid port"),
            ("http://h:port", "invalid port"),
            ("http:///path", "not a valid URL"),
            (" http://h", "not a valid URL"),
        ] {
            assert_err(&u(url), 3, 7, "upstream[0].url", needle);
        }
        let c = ok(&u("http://h"));
        assert_eq!(c.upstreams[0].base_path, "");
        assert_eq!(c.upstreams[0].connect_timeout, Duration::from_secs(2));
        assert_eq!(c.upstreams[0].timeout, Duration::from_secs(30));
    }
}
