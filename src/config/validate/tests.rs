use std::env::VarError;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, StatusCode};

use super::compile_with_env;
use crate::config::compiled::{AlertThreshold, Config, KeyPart, PathMatch, StoreKind, Target};
use crate::config::ConfigError;
use crate::uri_path::{EscapedSlashes, Semicolons};

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
        (
            u.targets[0].scheme.as_str(),
            u.targets[0].authority.as_str()
        ),
        ("https", "Backend:8443")
    );
    assert_eq!(u.base_path, "/v1");
    assert_eq!(u.uri_for("/x", Some("q=1")).unwrap(), "/v1/x?q=1");
    assert_eq!(u.uri_for("/", None).unwrap(), "/v1/");
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
    let c =
        ok("[[route]]\nname = \"r\"\nrespond = { status = 200, body = \"$${TOKEN} ${TOKEN}\" }\n");
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
        &format!(
            "[alerts]\nwebhook_url = \"http://h/x\"\ntoken = \"a\"\ntoken_env = \"TOKEN\"\n{ROUTE}"
        ),
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

#[test]
fn auth_secrets_come_from_the_environment_and_are_long_enough() {
    let auth = |secret: &str| {
        format!(
            "[[auth]]\nname = \"a\"\nalgorithms = [\"HS256\"]\nsecret = \"{secret}\"\n\n{ROUTE}auth = \"a\"\n"
        )
    };
    // `TOKEN` is 6 bytes.
    assert_err(
        &auth("${TOKEN}"),
        4,
        10,
        "auth[0].secret",
        "the secret has 6 bytes; HMAC secrets need at least 32",
    );
    let c = ok(&auth("${TOKEN}${TOKEN}${TOKEN}${TOKEN}${TOKEN}${TOKEN}"));
    assert_eq!(c.routes[0].auth.as_ref().map(|a| &*a.name), Some("a"));
    assert_err(
        &auth("a-literal-secret-long-enough-to-pass-the-bound"),
        4,
        10,
        "auth[0].secret",
        "must come from the environment",
    );
}

#[test]
fn upgrade_protocols_and_the_tunnel_idle_timeout() {
    const UP: &str = "[[upstream]]\nname = \"u\"\nurl = \"http://127.0.0.1:1\"\n";
    let c = ok(&format!("{UP}[[route]]\nname = \"r\"\nupstream = \"u\"\n"));
    assert!(c.routes[0].upgrade.is_empty(), "off by default");
    assert_eq!(c.server.tunnel_idle_timeout, Duration::from_secs(60));
    let c = ok(&format!(
        "[server]\ntunnel_idle_timeout = \"5m\"\n{UP}[[route]]\nname = \"r\"\nupstream = \"u\"\n\
         upgrade = [\"WebSocket\", \"websocket\"]\n"
    ));
    assert_eq!(
        c.routes[0].upgrade,
        [crate::config::compiled::UpgradeProtocol::WebSocket]
    );
    assert_eq!(c.server.tunnel_idle_timeout, Duration::from_secs(300));
    assert_err(
        &format!(
            "{UP}[[route]]\nname = \"r\"\nupstream = \"u\"\nupgrade = [\"websocket\", \"h2c\"]\n"
        ),
        7,
        25,
        "route[0].upgrade",
        "unknown upgrade protocol `h2c`; expected one of: websocket",
    );
    assert_err(
        "[[route]]\nname = \"r\"\nrespond = { status = 200 }\nupgrade = [\"websocket\"]\n",
        4,
        11,
        "route[0].upgrade",
        "`upgrade` needs an `upstream`",
    );
    assert_err(
        &format!("[server]\ntunnel_idle_timeout = \"0s\"\n{ROUTE}"),
        2,
        23,
        "server.tunnel_idle_timeout",
        "greater than zero",
    );
}

#[test]
fn https_targets_are_each_verified_as_their_own_host_unless_sni_is_set() {
    let upstream = |extra: &str| {
        format!(
            "[[upstream]]\nname = \"api\"\ntargets = [\"https://a.internal:8443\", \
             \"h2c://b.internal:50051\", \"https://[::1]:8443\"]\n{extra}\n\
             [[route]]\nname = \"r\"\nupstream = \"api\"\n"
        )
    };
    let c = ok(&upstream(""));
    let u = &c.upstreams[0];
    let shown: Vec<Option<String>> = u
        .targets
        .iter()
        .map(|t| t.server_name.as_ref().map(|n| n.to_str().into_owned()))
        .collect();
    assert_eq!(
        shown,
        [Some("a.internal".into()), None, Some("::1".into())],
        "the h2c:// target has no TLS; an address in brackets is verified as the address"
    );
    let labels: Vec<&str> = u.targets.iter().map(|t| &*t.label).collect();
    assert_eq!(
        labels,
        [
            "https://a.internal:8443",
            "h2c://b.internal:50051",
            "https://[::1]:8443"
        ]
    );
    assert!(u.tls.as_ref().is_some_and(|t| t.sni.is_none()));

    let c = ok(&upstream("sni = \"api.internal\""));
    let shown: Vec<Option<String>> = c.upstreams[0]
        .targets
        .iter()
        .map(|t| t.server_name.as_ref().map(|n| n.to_str().into_owned()))
        .collect();
    assert_eq!(
        shown,
        [
            Some("api.internal".into()),
            None,
            Some("api.internal".into())
        ]
    );
}
