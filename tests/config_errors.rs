//! Every kind of config error, one fixture each, must name the file, the line (and column where
//! the error is about a value) and the key; and a config using every key must compile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, StatusCode};
use rategate::config::compiled::{
    AlertFormat, AlertThreshold, Algorithm, Balance, Config, Cost, CountOn, Escalation,
    HealthCheck, KeyPart, Mode, OnError, Outlier, PathMatch, Retry, StoreKind, Target,
    UpstreamProtocol,
};
use rategate::config::{load, ConfigError};
use rategate::uri_path::{EscapedSlashes, Semicolons};

fn fixture(kind: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(kind)
        .join(name)
}

/// `(file, line, column, key, part of the message)`; column `None` when the error is about a
/// table or the whole file rather than a value.
type Expected = (
    &'static str,
    Option<usize>,
    Option<usize>,
    &'static str,
    &'static str,
);

const BAD: &[Expected] = &[
    ("syntax_error.toml", Some(3), Some(23), "", "invalid basic string, expected `\"`"),
    ("unknown_key.toml", Some(7), Some(1), "route[0].upstreem", "unknown field `upstreem`, expected one of"),
    ("bad_type.toml", Some(4), Some(9), "policy[0].limit", "invalid type: string \"30\", expected u64"),
    ("missing_required.toml", Some(1), Some(1), "policy[0]", "missing field `window`"),
    ("bad_duration.toml", Some(5), Some(10), "policy[0].window", "invalid duration \"60 sec\": unknown unit ` sec`; expected an integer followed by ms, s, m, h or d"),
    ("zero_duration.toml", Some(2), Some(11), "store.timeout", "must be greater than zero"),
    ("bad_enum.toml", Some(3), Some(12), "store.on_error", "unknown variant `retry`, expected one of `fallback`, `allow`, `deny`"),
    ("bad_algorithm.toml", Some(3), Some(13), "policy[0].algorithm", "expected one of `fixed_window`, `sliding_window`, `sliding_log`, `token_bucket`"),
    ("dangling_policy.toml", Some(10), Some(21), "route[0].policies", "dangling reference: no [[policy]] named `login` (defined: auth)"),
    ("dangling_upstream.toml", Some(7), Some(12), "route[0].upstream", "dangling reference: no [[upstream]] named `backend` (defined: api)"),
    ("duplicate_name.toml", Some(8), Some(8), "policy[1].name", "duplicate policy name `auth` (first defined on line 2)"),
    ("invalid_name.toml", Some(2), Some(8), "route[0].name", "invalid name `all routes`; expected 1 to 64 characters from A-Z a-z 0-9 _ . : -"),
    ("unset_env.toml", Some(3), Some(9), "admin.token", "environment variable `RATEGATE_TEST_SURELY_UNSET_7F3A` is not set"),
    ("admin_token_missing.toml", Some(2), Some(10), "admin.token", "required because admin.listen (0.0.0.0:9100) is not a loopback address"),
    ("empty_token.toml", Some(2), Some(9), "admin.token", "must not be empty"),
    ("bad_listen.toml", Some(2), Some(10), "server.listen", "`localhost:8080` is not a socket address; expected IP:PORT"),
    ("bad_cidr.toml", Some(4), Some(3), "server.trusted_proxies", "`172.16.0.0/33` is not a CIDR range or IP address"),
    ("ipv6_prefix_range.toml", Some(2), Some(15), "server.ipv6_prefix", "0 is out of range; must be between 1 and 128"),
    ("max_header_bytes_range.toml", Some(2), Some(20), "server.max_header_bytes", "must be between 1024 and 1048576"),
    ("tls_missing_key.toml", Some(4), Some(1), "server.tls", "missing field `key`"),
    ("bad_store_url.toml", Some(3), Some(7), "store.url", "unsupported URL scheme `http`; expected redis://, rediss://, redis-sentinel://, redis-cluster://"),
    ("max_memory_keys_small.toml", Some(2), Some(19), "store.max_memory_keys", "10 is too small; must be at least 1000"),
    ("batch_max_range.toml", Some(3), Some(13), "store.batch_max", "0 is out of range; must be between 1 and 1024"),
    ("bad_upstream_url.toml", Some(3), Some(7), "upstream[0].url", "must not contain a query string"),
    ("upstream_bad_scheme.toml", Some(3), Some(7), "upstream[0].url", "unsupported scheme `grpc`; expected an http://, h2c:// or https:// URL"),
    ("upstream_ca_missing.toml", Some(4), Some(6), "upstream[0].ca", "cannot read CA certificate file"),
    ("upstream_ca_not_pem.toml", Some(4), Some(6), "upstream[0].ca", "no PEM certificate found in"),
    ("upstream_cert_without_key.toml", Some(4), Some(15), "upstream[0].client_cert", "client_cert needs client_key"),
    ("upstream_tls_key_on_h2c.toml", Some(4), Some(7), "upstream[0].sni", "applies only to an https:// upstream"),
    ("upstream_key_mismatch.toml", Some(5), Some(14), "upstream[0].client_key", "client_cert and client_key do not go together"),
    ("upstream_bad_sni.toml", Some(4), Some(7), "upstream[0].sni", "not a valid TLS server name"),
    ("targets_tls_key_without_https.toml", Some(4), Some(6), "upstream[0].ca", "applies only to an https:// upstream"),
    ("targets_https_ca_missing.toml", Some(4), Some(6), "upstream[0].ca", "cannot read CA certificate file"),
    ("path_and_prefix.toml", Some(4), Some(15), "route[0].path_prefix", "`path` and `path_prefix` cannot both be set"),
    ("path_without_slash.toml", Some(3), Some(15), "route[0].path_prefix", "`api/auth` must start with `/`"),
    ("respond_and_upstream.toml", Some(8), Some(11), "route[0].respond", "a route has either `upstream` or `respond`, not both"),
    ("no_target.toml", Some(1), Some(1), "route[0]", "a route needs a target"),
    ("retry_without_upstream.toml", Some(5), Some(9), "route[0].retry", "`retry` needs `upstream`"),
    ("retry_on_empty.toml", Some(9), Some(30), "route[0].retry.on", "must name at least one of \"reset\", \"timeout\", \"gateway_error\""),
    ("retry_attempts_range.toml", Some(9), Some(22), "route[0].retry.attempts", "9 is out of range; must be between 1 and 5"),
    ("url_and_targets.toml", Some(4), Some(11), "upstream[0].targets", "an upstream has either `url` or `targets`, not both"),
    ("upstream_without_url.toml", Some(2), Some(8), "upstream[0].name", "an upstream needs `url = \"http://...\"` or `targets = [\"http://...\", ...]`"),
    ("targets_paths_differ.toml", Some(5), Some(3), "upstream[0].targets", "every target must have the same path (the first has \"/v1\")"),
    ("target_twice.toml", Some(3), Some(36), "upstream[0].targets", "`http://10.0.0.1:8080` is listed twice"),
    ("bad_balance.toml", Some(4), Some(11), "upstream[0].balance", "unknown variant `random`, expected one of `round_robin`, `least_requests`, `hash_client`"),
    ("max_ejection_below_base.toml", Some(5), Some(21), "upstream[0].max_ejection_time", "must be at least `base_ejection_time` (60s)"),
    ("resolve_interval_short.toml", Some(4), Some(20), "upstream[0].resolve_interval", "must be at least 1s: names are not resolved more often than that"),
    ("resolve_interval_zero.toml", Some(4), Some(20), "upstream[0].resolve_interval", "must be greater than zero"),
    ("health_check_bad_path.toml", Some(4), Some(25), "upstream[0].health_check.path", "must be a path starting with `/`"),
    ("health_check_threshold_zero.toml", Some(5), Some(49), "upstream[0].health_check.unhealthy", "0 is out of range; must be between 1 and 100"),
    ("strip_prefix_without_prefix.toml", Some(9), Some(16), "route[0].strip_prefix", "`strip_prefix = true` needs both `path_prefix` and `upstream`"),
    ("bad_method.toml", Some(3), Some(19), "route[0].methods", "unknown HTTP method `FETCH`; expected one of GET"),
    ("bad_status.toml", Some(3), Some(22), "route[0].respond.status", "999 is out of range; must be between 200 and 599"),
    ("respond_informational.toml", Some(3), Some(22), "route[0].respond.status", "101 is out of range; must be between 200 and 599"),
    ("no_routes.toml", None, None, "route", "no routes: at least one [[route]] is required"),
    ("limit_zero.toml", Some(4), Some(9), "policy[0].limit", "0 is too small; must be at least 1"),
    ("limit_over_2_53.toml", Some(4), Some(9), "policy[0].limit", "must not exceed 2^53"),
    ("burst_not_token_bucket.toml", Some(6), Some(9), "policy[0].burst", "`burst` only applies to algorithm \"token_bucket\" (this policy uses \"sliding_window\")"),
    ("bad_header_key.toml", Some(6), Some(14), "policy[0].key", "`X Api Key` is not a valid HTTP header name"),
    ("bad_key_component.toml", Some(6), Some(8), "policy[0].key", "unknown key component `cookie:session`; expected \"ip\", \"header:NAME\""),
    ("duplicate_key_component.toml", Some(6), Some(28), "policy[0].key", "key component `header:x-api-key` is listed twice"),
    ("block_for_short.toml", Some(6), Some(13), "policy[0].block_for", "must be at least 1s"),
    ("alerts_bad_webhook.toml", Some(2), Some(15), "alerts.webhook_url", "not a valid URL; expected an http:// or https:// URL"),
    ("alerts_token_twice.toml", Some(4), Some(13), "alerts.token_env", "set either `token` or `token_env`, not both"),
    ("count_both.toml", Some(7), Some(9), "policy[0].count", "`count_status` and `count` are mutually exclusive"),
    ("count_status_range.toml", Some(6), Some(22), "policy[0].count_status", "99 is out of range; must be between 100 and 599"),
    ("count_on_concurrency.toml", Some(5), Some(9), "policy[0].count", "counting by response does not apply to algorithm \"concurrency\""),
    ("concurrency_window.toml", Some(5), Some(10), "policy[0].window", "`window` does not apply to algorithm \"concurrency\"; use `lease`"),
    ("lease_not_concurrency.toml", Some(6), Some(9), "policy[0].lease", "`lease` only applies to algorithm \"concurrency\" (this policy uses \"sliding_window\")"),
    ("escalation_without_block_for.toml", Some(6), Some(20), "policy[0].block_multiplier", "need `block_for`, the first block's duration"),
    ("block_max_without_multiplier.toml", Some(7), Some(13), "policy[0].block_max", "`block_max` and `block_memory` need `block_multiplier`"),
    ("block_multiplier_range.toml", Some(7), Some(20), "policy[0].block_multiplier", "1 is out of range; must be between 2 and 1000"),
    ("block_max_short.toml", Some(8), Some(13), "policy[0].block_max", "must be at least block_for (10m)"),
    ("overrides_multi_key.toml", Some(7), Some(13), "policy[0].overrides", "overrides need a policy keyed by exactly one component"),
    ("overrides_global.toml", Some(7), Some(13), "policy[0].overrides", "this policy is keyed by [global]"),
    ("overrides_bad_ip.toml", Some(6), Some(43), "policy[0].overrides.office", "override key `office` is not an IP address (this policy is keyed by ip)"),
    ("overrides_file_missing.toml", Some(7), Some(18), "policy[0].overrides_file", "cannot read overrides file"),
    ("overrides_duplicate.toml", Some(8), Some(28), "policy[0].overrides.gold-key", "`gold-key` is also listed in overrides_file"),
    ("jitter_range.toml", Some(6), Some(22), "policy[0].retry_after_jitter", "must be between 1s and 1h"),
    ("max_cost_without_header.toml", Some(4), Some(12), "route[0].max_cost", "`max_cost` needs `cost_header`"),
    ("cost_over_max.toml", Some(6), Some(8), "route[0].cost", "20 is out of range; must be between 1 and 10 (max_cost)"),
    ("bad_cost_header.toml", Some(4), Some(15), "route[0].cost_header", "`X Request Cost` is not a valid HTTP header name"),
    // Path rules (server.path_semicolons, server.escaped_slashes, route case_insensitive).
    ("bad_path_semicolons.toml", Some(2), Some(19), "server.path_semicolons", "unknown variant `drop`, expected one of `reject`, `strip`, `keep`"),
    ("bad_escaped_slashes.toml", Some(2), Some(19), "server.escaped_slashes", "unknown variant `encode`, expected one of `keep`, `reject`, `decode`"),
    ("bad_case_insensitive.toml", Some(4), Some(20), "route[0].case_insensitive", "invalid type: string \"yes\", expected a boolean"),
    ("route_path_semicolon.toml", Some(3), Some(15), "route[0].path_prefix", "`/app;jsessionid` can never match: server.path_semicolons = \"reject\" refuses"),
    ("route_path_escaped_slash.toml", Some(6), Some(15), "route[0].path_prefix", "`/files/a%2Fb` can never match: server.escaped_slashes = \"decode\" turns `%2F` into `/`"),
    ("route_path_not_normalized.toml", Some(3), Some(8), "route[0].path", "`/api/%61uth` is not normalized: requests are matched in their normalized form, here `/api/auth`"),
    // Route patterns, header conditions, param: and query: key components.
    ("route_param_not_in_path.toml", Some(12), Some(13), "route[0].policies", "policy `per_user` is keyed by `param:id`, but this route's path has no `{id}` segment"),
    ("bad_param_key.toml", Some(6), Some(8), "policy[0].key", "`user-id` is not a segment name in key component `param:user-id`"),
    ("bad_query_key.toml", Some(6), Some(8), "policy[0].key", "`a=b` is not a query parameter name in key component `query:a=b`"),
    ("route_pattern_star_inside.toml", Some(3), Some(8), "route[0].path", "`/files/*/raw`: `*` stands for the rest of the path, so it can only be the last segment"),
    ("route_pattern_twice.toml", Some(3), Some(8), "route[0].path", "`/users/{id}/{id}`: `{id}` is named twice"),
    ("route_pattern_partial.toml", Some(3), Some(8), "route[0].path", "`/users/u{id}`: a named segment is a whole segment"),
    ("route_header_false.toml", Some(4), Some(45), "route[0].headers.x-beta", "`false` is not a condition"),
    ("route_header_bad_name.toml", Some(4), Some(13), "route[0].headers.x tenant", "`x tenant` is not a valid HTTP header name"),
    ("idle_timeout_zero.toml", Some(3), Some(16), "server.idle_timeout", "must be greater than zero"),
    // Verified identities: [[auth]], jwt:* and tls:* key components, overrides_from, mTLS.
    ("auth_bad_algorithm.toml", Some(3), Some(24), "auth[0].algorithms", "unknown JWT algorithm `none`; expected one of HS256"),
    ("auth_mixed_families.toml", Some(3), Some(14), "auth[0].algorithms", "HS* algorithms cannot share an [[auth]] with public-key algorithms"),
    ("auth_two_key_sources.toml", Some(5), Some(13), "auth[0].jwks_file", "`secret`, `public_key` and `jwks_file` are mutually exclusive"),
    ("auth_no_keys.toml", Some(1), Some(1), "auth[0]", "an [[auth]] needs its keys: `secret` (HS*), `public_key` or `jwks_file`"),
    ("auth_public_key_missing.toml", Some(4), Some(14), "auth[0].public_key", "no-such-key.pem: No such file or directory"),
    ("auth_literal_secret.toml", Some(4), Some(10), "auth[0].secret", "the secret must come from the environment: write `secret = \"${NAME}\"`"),
    ("auth_bad_token_source.toml", Some(5), Some(9), "auth[0].token", "unknown token source `query:access_token`; expected \"bearer\", \"header:NAME\" or \"cookie:NAME\""),
    ("auth_leeway_range.toml", Some(5), Some(10), "auth[0].leeway", "must be whole seconds, at most 5m"),
    ("auth_dangling.toml", Some(4), Some(8), "route[0].auth", "dangling reference: no [[auth]] named `users` (defined: none)"),
    ("jwt_key_without_auth.toml", Some(11), Some(13), "route[0].policies", "policy `per-user` is keyed by `jwt:sub`, which needs a verified token"),
    ("tls_key_without_client_ca.toml", Some(6), Some(8), "policy[0].key", "key component `tls:fingerprint` needs client certificates: set [server.tls] client_ca"),
    ("overrides_from_bad.toml", Some(7), Some(18), "policy[0].overrides_from", "`header:x-plan` is not a tier source; expected \"jwt:claim:NAME\""),
    ("client_auth_without_ca.toml", Some(4), Some(15), "server.tls.client_auth", "`client_auth` needs `client_ca`"),
    ("send_timeout_negative.toml", Some(3), Some(16), "server.send_timeout", "a duration cannot be negative"),
    ("max_connections_zero.toml", Some(3), Some(19), "server.max_connections", "0 is out of range; must be between 1 and 16777216"),
];

/// Errors inside an `overrides_file`: `(config, overrides file, line, column, key, message part)`.
/// They name the overrides file, not the config that refers to it.
const BAD_OVERRIDES: &[(&str, &str, usize, usize, &str, &str)] = &[
    ("overrides_file_bad_value.toml", "overrides/bad_value.toml", 3, 16, "broken-key", "0 is too small; must be at least 1"),
    ("overrides_file_bad_type.toml", "overrides/bad_type.toml", 2, 16, "silver-key", "invalid type: string \"500\", expected u64; an overrides file holds `\"key\" = limit` lines"),
];

fn load_bad(name: &str) -> ConfigError {
    match load(&fixture("bad", name)) {
        Ok(_) => panic!("{name}: expected a config error"),
        Err(e) => e,
    }
}

#[test]
fn every_bad_fixture_names_file_line_column_and_key() {
    for &(name, line, column, key, needle) in BAD {
        let e = load_bad(name);
        let shown = e.to_string();
        assert_eq!(e.file, fixture("bad", name), "{shown}");
        assert_eq!((e.line, e.column), (line, column), "{name}: {shown}");
        assert_eq!(e.key, key, "{name}: {shown}");
        assert!(
            e.message.contains(needle),
            "{name}: {shown}\n  wanted: {needle}"
        );

        let mut prefix = fixture("bad", name).display().to_string();
        if let (Some(line), Some(column)) = (line, column) {
            prefix = format!("{prefix}:{line}:{column}");
        }
        if !key.is_empty() {
            prefix = format!("{prefix}: key `{key}`");
        }
        assert!(shown.starts_with(&format!("{prefix}: ")), "{shown}");
    }
}

#[test]
fn overrides_file_errors_name_that_file() {
    for &(config, file, line, column, key, needle) in BAD_OVERRIDES {
        let e = load_bad(config);
        let shown = e.to_string();
        assert_eq!(e.file, fixture("bad", file), "{shown}");
        assert_eq!((e.line, e.column), (Some(line), Some(column)), "{shown}");
        assert_eq!(e.key, key, "{shown}");
        assert!(e.message.contains(needle), "{shown}\n  wanted: {needle}");
        assert!(
            shown.starts_with(&format!(
                "{}:{line}:{column}: key `{key}`: ",
                fixture("bad", file).display()
            )),
            "{shown}"
        );
    }
}

#[test]
fn every_bad_fixture_is_checked() {
    let dir = fixture("bad", "");
    // Top-level files are configs; `overrides/` holds the files they refer to.
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = BAD
        .iter()
        .map(|b| b.0.to_owned())
        .chain(BAD_OVERRIDES.iter().map(|b| b.0.to_owned()))
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn message_format() {
    let e = load_bad("dangling_policy.toml");
    assert_eq!(
        e.to_string(),
        format!(
            "{}:10:21: key `route[0].policies`: dangling reference: no [[policy]] named `login` \
             (defined: auth)",
            fixture("bad", "dangling_policy.toml").display()
        )
    );
}

#[test]
fn missing_file_is_an_error_not_a_panic() {
    let e = load_bad("does_not_exist.toml");
    assert_eq!((e.line, e.key.as_str()), (None, ""));
    assert!(e.message.starts_with("cannot read config file"), "{e}");
}

fn load_full() -> Config {
    // Set before loading; std's environment access is synchronized, and no test here reads the
    // environment through libc directly.
    std::env::set_var("RATEGATE_FULL_TEST_TOKEN", "t0ken");
    match load(&fixture("good", "full.toml")) {
        Ok(config) => config,
        Err(e) => panic!("full.toml should compile: {e}"),
    }
}

#[test]
fn full_config_compiles_with_every_key() {
    let c = load_full();
    assert_eq!(c.source, fixture("good", "full.toml"));

    let s = &c.server;
    assert_eq!(s.listen, "0.0.0.0:8443".parse().unwrap());
    assert!(s.trusted_proxies.contains("10.9.8.7".parse().unwrap()));
    assert!(s.trusted_proxies.contains("192.168.1.1".parse().unwrap()));
    assert!(!s.trusted_proxies.contains("192.168.1.2".parse().unwrap()));
    assert!(s.trusted_proxies.contains("fd12::1".parse().unwrap()));
    assert_eq!(s.ipv6_prefix, 56);
    assert_eq!(s.header_read_timeout, Duration::from_secs(5));
    assert_eq!(s.max_header_bytes, 32768);
    assert_eq!(s.shutdown_grace, Duration::from_secs(15));
    assert_eq!(s.idle_timeout, Duration::from_secs(75));
    assert_eq!(s.send_timeout, Duration::from_secs(20));
    assert_eq!(s.max_connections, Some(5000));
    assert!(!s.access_log);
    assert!(!s.forward_client_ip_headers);
    assert_eq!(s.path_rules.semicolons, Semicolons::Strip);
    assert_eq!(s.path_rules.escaped_slashes, EscapedSlashes::Decode);
    let tls = s.tls.as_ref().unwrap();
    assert_eq!(tls.cert, Path::new("certs/server.pem"));
    assert_eq!(tls.key, Path::new("certs/server.key"));

    assert_eq!(c.admin.listen, "0.0.0.0:9100".parse().unwrap());
    assert_eq!(c.admin.token.as_deref(), Some("t0ken"));

    let st = &c.store;
    assert_eq!(st.kind, StoreKind::Redis);
    assert_eq!(st.url, "redis://:t0ken@redis.internal:6379/2");
    assert_eq!(st.key_prefix, "rg-test:");
    assert_eq!(st.timeout, Duration::from_millis(250));
    assert_eq!(st.on_error, OnError::Deny);
    assert_eq!(st.max_memory_keys, 50_000);
    assert_eq!(
        (st.batch_max, st.batch_in_flight, st.batch_queue),
        (32, 3, 500)
    );

    assert!(c.access.allow.contains("127.0.0.1".parse().unwrap()));
    assert!(c.access.allow.contains("::1".parse().unwrap()));
    assert!(c.access.deny.contains("203.0.113.77".parse().unwrap()));

    let a = c.alerts.as_ref().unwrap();
    assert_eq!(a.webhook, "https://hooks.example.com/services/t0ken");
    assert_eq!(a.format, AlertFormat::Slack);
    assert_eq!(a.token.as_deref(), Some("t0ken"));
    assert_eq!(
        a.threshold,
        Some(AlertThreshold {
            rejections: 500,
            window: Duration::from_secs(300)
        })
    );
    assert_eq!(
        (a.timeout, a.max_retries, a.queue_size),
        (Duration::from_secs(3), 5, 50)
    );
}

#[test]
fn full_config_upstreams_and_policies() {
    let c = load_full();
    let api = &c.upstreams[0];
    assert_eq!((&*api.name, api.index), ("api", 0));
    let labels: Vec<&str> = api.targets.iter().map(|t| &*t.label).collect();
    assert_eq!(
        (
            labels,
            api.targets[0].authority.as_str(),
            api.base_path.as_str()
        ),
        (vec!["http://127.0.0.1:8081"], "127.0.0.1:8081", "")
    );
    // The defaults: round robin, Envoy's outlier detection numbers, no active checks.
    assert_eq!(api.balance, Balance::RoundRobin);
    assert_eq!(
        api.outlier,
        Outlier {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
        }
    );
    assert_eq!(api.health_check, None);
    assert_eq!(
        (api.connect_timeout, api.timeout),
        (Duration::from_secs(1), Duration::from_secs(45))
    );
    let legacy = &c.upstreams[1];
    assert_eq!((&*legacy.name, legacy.index), ("legacy", 1));
    assert_eq!(
        (legacy.targets[0].scheme.as_str(), legacy.base_path.as_str()),
        ("https", "/v1")
    );
    assert_eq!(legacy.targets[0].protocol, UpstreamProtocol::Https);
    assert_eq!(api.targets[0].protocol, UpstreamProtocol::Http1);
    assert_eq!(
        (legacy.connect_timeout, legacy.timeout),
        (Duration::from_secs(2), Duration::from_secs(30))
    );
    let pool = &c.upstreams[2];
    let labels: Vec<&str> = pool.targets.iter().map(|t| &*t.label).collect();
    assert_eq!(
        (labels, pool.base_path.as_str()),
        (vec!["http://10.0.0.1:8080", "http://10.0.0.2:8080"], "/api")
    );
    assert_eq!(pool.balance, Balance::HashClient);
    assert_eq!(
        pool.outlier,
        Outlier {
            consecutive_failures: 3,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(120),
        }
    );
    assert_eq!(
        pool.health_check,
        Some(HealthCheck {
            path: "/healthz?deep=1".parse().unwrap(),
            interval: Duration::from_secs(3),
            timeout: Duration::from_secs(1),
            healthy: 3,
            unhealthy: 2,
        })
    );
    assert_eq!(
        (pool.resolve_interval, legacy.resolve_interval),
        (Duration::from_secs(10), Duration::from_secs(30))
    );

    let names: Vec<&str> = c.policies.iter().map(|p| &*p.name).collect();
    assert_eq!(
        names,
        [
            "auth",
            "api-keys",
            "global",
            "log",
            "login-failures",
            "reports",
            "inflight",
            "partner",
            "per-user"
        ]
    );
    let auth = &c.policies[0];
    assert_eq!(
        (auth.algorithm, auth.limit, auth.window, auth.burst),
        (Algorithm::SlidingWindow, 30, Duration::from_secs(60), 30)
    );
    assert_eq!(
        (auth.key.as_slice(), auth.block_for, auth.mode),
        (
            &[KeyPart::Ip][..],
            Some(Duration::from_secs(600)),
            Mode::Enforce
        )
    );
    let keys = &c.policies[1];
    assert_eq!(
        (
            keys.algorithm,
            keys.limit,
            keys.burst,
            keys.mode,
            keys.index
        ),
        (Algorithm::TokenBucket, 100, 250, Mode::Shadow, 1)
    );
    assert_eq!(
        keys.key,
        [
            KeyPart::Header(HeaderName::from_static("x-api-key")),
            KeyPart::Method,
            KeyPart::Path
        ]
    );
    assert_eq!(c.policies[2].key, [KeyPart::Global, KeyPart::Route]);
    assert_eq!(c.policies[3].window, Duration::from_secs(86_400));
    assert_eq!(c.policies[3].key, [KeyPart::Ip]);
    // Defaults of the newer keys on a plain policy.
    assert_eq!(c.policies[0].count, CountOn::Every);
    assert!(c.policies[0].escalation.is_none() && c.policies[0].overrides.is_empty());
    assert_eq!(c.policies[0].retry_after_jitter, None);
}

#[test]
fn full_config_policy_features() {
    let c = load_full();
    let login = &c.policies[4];
    assert_eq!(login.count, CountOn::Statuses(vec![401, 403].into()));
    assert!(login.count.matches(401) && !login.count.matches(200));
    assert_eq!(
        login.escalation,
        Some(Escalation {
            multiplier: 10,
            max: Duration::from_secs(6 * 3600),
            memory: Duration::from_secs(2 * 86_400),
        })
    );
    assert_eq!(login.retry_after_jitter, Some(Duration::from_secs(5)));
    assert_eq!(c.policies[5].count, CountOn::Errors);

    let inflight = &c.policies[6];
    assert_eq!(inflight.algorithm, Algorithm::Concurrency);
    // The lease is the concurrency policy's window.
    assert_eq!(
        (inflight.limit, inflight.window),
        (4, Duration::from_secs(30))
    );
    assert_eq!(inflight.overrides.get("gold-key"), Some(16));

    // Tiers from the file and inline; a written burst scales with the tier.
    let partner = &c.policies[7];
    assert_eq!(partner.overrides.len(), 3);
    assert_eq!(partner.overrides.get("gold-key"), Some(1000));
    assert_eq!(partner.overrides.get("trial-key"), Some(10));
    assert_eq!(partner.overrides.get("silver-key"), Some(500));
    assert_eq!(partner.overrides.get("other"), None);
    assert_eq!(partner.limits_for(Some(1000)), (1000, 2000));
    assert_eq!(partner.limits_for(None), (100, 200));
    assert_eq!(inflight.limits_for(Some(16)), (16, 16));

    let export = &c.routes[2];
    assert_eq!(
        export.cost,
        Cost {
            fixed: 5,
            header: Some(HeaderName::from_static("x-request-cost")),
            max: 50,
        }
    );
    assert_eq!(c.routes[0].cost, Cost::default());
}

#[test]
fn full_config_routes() {
    let c = load_full();
    let auth = &c.routes[0];
    assert_eq!((&*auth.name, auth.index), ("auth", 0));
    assert_eq!(auth.path, PathMatch::Prefix("/api/auth".into()));
    assert_eq!(auth.methods, [Method::POST, Method::PUT]);
    assert_eq!(auth.host.as_deref(), Some("api.example.com"));
    assert!(auth.strip_prefix);
    assert!(matches!(&auth.target, Target::Upstream(u) if Arc::ptr_eq(u, &c.upstreams[0])));
    assert!(Arc::ptr_eq(&auth.policies[0], &c.policies[0]));
    assert!(Arc::ptr_eq(&auth.policies[1], &c.policies[2]));
    assert!(!auth.case_insensitive);
    assert!(c.routes[2].case_insensitive, "export");
    assert_eq!(
        c.routes[2].retry,
        Some(Retry {
            attempts: 2,
            on_reset: false,
            on_timeout: true,
            on_gateway_error: true,
        })
    );
    assert_eq!(auth.retry, None);

    let health = &c.routes[1];
    assert_eq!(health.path, PathMatch::Exact("/healthz".into()));
    assert!(health.methods.is_empty() && health.host.is_none() && health.policies.is_empty());
    match &health.target {
        Target::Respond { status, body } => {
            assert_eq!(*status, StatusCode::OK);
            assert_eq!(&body[..], b"ok ${literal} t0ken");
        }
        Target::Upstream(_) => panic!("health responds directly"),
    }

    let orders = &c.routes[3];
    let PathMatch::Pattern(pattern) = &orders.path else {
        panic!("orders is a pattern: {:?}", orders.path);
    };
    assert_eq!(pattern.text, "/api/users/{id}/orders");
    assert_eq!(pattern.param_position("id"), Some(2));
    assert!(!pattern.rest);
    let conditions: Vec<(&str, Option<&[u8]>)> = orders
        .headers
        .iter()
        .map(|c| (c.name.as_str(), c.value.as_deref()))
        .collect();
    assert_eq!(
        conditions,
        [("x-tenant", Some(&b"gold"[..])), ("x-beta", None)]
    );
    assert_eq!(
        c.policies[8].key,
        [KeyPart::Param("id".into()), KeyPart::Query("tenant".into())]
    );

    let legacy = &c.routes[4];
    assert_eq!(legacy.path, PathMatch::Prefix("/".into()));
    assert!(!legacy.strip_prefix);
    let names: Vec<&str> = legacy.policies.iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["api-keys", "log"]);
}

#[test]
fn full_config_summary_names_everything_and_no_secret() {
    let c = load_full();
    let text = rategate::config::summary(&c);
    for needle in [
        "listen 0.0.0.0:8443",
        "admin: listen 0.0.0.0:9100, token set",
        "store: redis redis://***@redis.internal:6379/2",
        "on_error deny",
        "max_memory_keys 50000, batch_max 32, batch_in_flight 3, batch_queue 500",
        "api: http://127.0.0.1:8081 (connect_timeout 1s, timeout 45s)",
        "pool: http://10.0.0.1:8080/api, http://10.0.0.2:8080/api (connect_timeout 2s, timeout 30s, hash_client, eject after 3 failures for 10s..2m, health check /healthz?deep=1 every 3s)",
        "auth: sliding_window 30 per 1m, key [ip], mode enforce, block_for 10m",
        "api-keys: token_bucket 100 per 1s, burst 250, key [header:x-api-key, method, path], mode shadow",
        "auth: path_prefix /api/auth, methods POST,PUT, host api.example.com -> upstream api (strip_prefix), policies auth, global",
        "health: path /healthz, any method, any host -> respond 200",
        "legacy: path_prefix /, any method, any host -> upstream legacy, policies api-keys, log, upgrade websocket",
        "legacy: https://legacy.internal:8443/v1 (connect_timeout 2s, timeout 30s, ca ",
        "certs/upstream-ca.pem, sni legacy.example, client_cert ",
        "certs/upstream-client.pem, names resolved every 30s)",
        "access_log off, forward_client_ip_headers from anyone",
        "connections: idle_timeout 75s, send_timeout 20s, max_connections 5000, tunnel_idle_timeout 90s",
        "alerts: webhook https://hooks.example.com/*** (slack), token set, threshold 500 rejections per 5m, timeout 3s, max_retries 5, queue_size 50",
        "login-failures: fixed_window 5 per 15m, key [ip], mode enforce, counts responses 401,403, block_for 1m x10 up to 6h (remembered 2d), retry_after_jitter 5s",
        "reports: fixed_window 100 per 1h, key [route], mode enforce, counts responses >= 400",
        "inflight: concurrency 4 in flight, lease 30s, key [header:x-api-key], mode enforce, 1 overrides",
        "partner: token_bucket 100 per 1s, burst 200, key [header:x-api-key], mode enforce, 3 overrides",
        "paths: path_semicolons strip, escaped_slashes decode",
        "per-user: fixed_window 10 per 1m, key [param:id, query:tenant], mode enforce",
        "orders: path /api/users/{id}/orders (pattern), any method, any host, header x-tenant = \"gold\", header x-beta present -> upstream api, policies per-user",
        "export: path /export (case-insensitive), any method, any host -> upstream api, policies login-failures, reports, inflight, partner, cost 5 or header x-request-cost (1..=50), retry 2 on timeout,gateway_error",
    ] {
        assert!(text.contains(needle), "summary lacks {needle:?}:\n{text}");
    }
    assert!(!text.contains("t0ken"), "{text}");
}
