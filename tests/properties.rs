//! The config loader on arbitrary input, through the library's public API: no panic on any
//! bytes; an error always points inside the file; a config that loads has route paths in the
//! form requests are matched in, so every route can be reached.

use std::path::Path;

use http::Method;
use proptest::prelude::*;
use rategate::config::compiled::PathMatch;
use rategate::config::{load_str, summary};
use rategate::proxy::route;
use rategate::uri_path;

fn pick(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(values).prop_map(str::to_owned)
}

/// Values valid somewhere, invalid elsewhere, and hostile ones.
const ANY_VALUE: &[&str] = &[
    "true",
    "false",
    "0",
    "1",
    "-1",
    "18446744073709551616",
    "\"\"",
    "\"1s\"",
    "\"0s\"",
    "\"10 minutes\"",
    "\"reject\"",
    "\"strip\"",
    "\"keep\"",
    "\"decode\"",
    "\"/api\"",
    "\"${RATEGATE_SURELY_UNSET_PROP}\"",
    "\"\\u001b]0;title\\u0007\"",
    "[]",
    "[\"ip\"]",
    "9007199254740993",
    "99",
    "129",
    "[\"10.0.0.0/33\"]",
    "{ status = 200 }",
    "{ a = 1 }",
];

fn value(good: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![30 => pick(good), 1 => pick(ANY_VALUE)]
}

/// `key = value` lines: each optional key present about a third of the time.
fn optional(keys: Vec<(&'static str, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
    let per_key: Vec<BoxedStrategy<Option<String>>> = keys
        .into_iter()
        .map(|(k, v)| {
            prop::option::weighted(0.3, v.prop_map(move |v| format!("{k} = {v}\n"))).boxed()
        })
        .collect();
    per_key
        .prop_map(|lines| lines.into_iter().flatten().collect::<String>())
        .boxed()
}

fn server() -> BoxedStrategy<String> {
    optional(vec![
        (
            "path_semicolons",
            value(&["\"reject\"", "\"strip\"", "\"keep\""]).boxed(),
        ),
        (
            "escaped_slashes",
            value(&["\"keep\"", "\"reject\"", "\"decode\""]).boxed(),
        ),
        ("ipv6_prefix", value(&["64", "48"]).boxed()),
        ("header_read_timeout", value(&["\"5s\""]).boxed()),
        ("trusted_proxies", value(&["[\"10.0.0.0/8\"]"]).boxed()),
    ])
    .prop_map(|body| format!("[server]\nlisten = \"127.0.0.1:0\"\n{body}"))
    .boxed()
}

/// Route paths in normalized form (under the default rules).
const GOOD_PATHS: &[&str] = &[
    "\"/\"",
    "\"/api\"",
    "\"/api/\"",
    "\"/API/Auth\"",
    "\"/login\"",
];

/// Every way of not being one, or of being one only under some rules.
const ODD_PATHS: &[&str] = &[
    "\"/a;b\"",
    "\"/a%3Bb\"",
    "\"/files/a%2Fb\"",
    "\"/a%5Cb\"",
    "\"/api/%61uth\"",
    "\"/a%2fb\"",
    "\"/caf\u{e9}\"",
    "\"/x{y}\"",
    "\"/a/../b\"",
    "\"//a\"",
    "\"api\"",
    "\"/a\\\\b\"",
];

fn policy(name: &'static str) -> BoxedStrategy<String> {
    (
        value(&["\"fixed_window\"", "\"sliding_window\"", "\"token_bucket\""]),
        value(&["1", "10"]),
        value(&["\"1s\"", "\"1m\""]),
        optional(vec![
            (
                "key",
                value(&["[\"ip\"]", "[\"path\"]", "[\"header:x-key\", \"path\"]"]).boxed(),
            ),
            ("mode", value(&["\"shadow\""]).boxed()),
        ]),
    )
        .prop_map(move |(algorithm, limit, window, rest)| {
            format!(
                "[[policy]]\nname = \"{name}\"\nalgorithm = {algorithm}\nlimit = {limit}\n\
                 window = {window}\n{rest}"
            )
        })
        .boxed()
}

fn route_table() -> BoxedStrategy<String> {
    (
        any::<bool>(),
        prop_oneof![5 => value(GOOD_PATHS), 1 => pick(ODD_PATHS)],
        prop_oneof![
            3 => value(&["{ status = 200 }", "{ status = 404 }"])
                .prop_map(|v| format!("respond = {v}\n")),
            1 => Just("upstream = \"api\"\n".to_owned()),
        ],
        optional(vec![
            (
                "policies",
                value(&["[\"p\"]", "[\"q\"]", "[\"p\", \"q\"]"]).boxed(),
            ),
            ("case_insensitive", value(&["true", "false"]).boxed()),
            ("methods", value(&["[\"GET\"]"]).boxed()),
        ]),
    )
        .prop_map(|(exact, path, target, rest)| {
            let kind = if exact { "path" } else { "path_prefix" };
            format!("{kind} = {path}\n{target}{rest}")
        })
        .boxed()
}

fn config_text() -> impl Strategy<Value = String> {
    (
        prop::option::of(server()),
        prop::option::weighted(0.8, policy("p")),
        prop::option::weighted(0.8, policy("q")),
        prop::bool::weighted(0.8),
        prop::collection::vec(route_table(), 1..4),
        prop::option::weighted(
            0.1,
            pick(&["bogus = 1\n", "[store]\nkind = \"redis\"\n", "[[route]\n"]),
        ),
    )
        .prop_map(|(server, p, q, upstream, routes, junk)| {
            let mut text = server.unwrap_or_default();
            text.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
            if upstream {
                text.push_str("[[upstream]]\nname = \"api\"\nurl = \"http://127.0.0.1:1\"\n");
            }
            text.push_str(&p.unwrap_or_default());
            text.push_str(&q.unwrap_or_default());
            for (i, r) in routes.iter().enumerate() {
                text.push_str(&format!("[[route]]\nname = \"r{i}\"\n{r}"));
            }
            text.push_str(&junk.unwrap_or_default());
            text
        })
}

/// The checks every outcome must pass.
fn check(text: &str) -> Result<(), TestCaseError> {
    let file = Path::new("prop.toml");
    match load_str(file, text) {
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(shown.starts_with("prop.toml"), "{shown}");
            if let Some(line) = e.line {
                // One past the last line is where TOML reports an unexpected end of input.
                prop_assert!(
                    line >= 1 && line <= text.lines().count() + 1,
                    "line {line} of {} lines: {shown}",
                    text.lines().count()
                );
            }
        }
        Ok(config) => {
            let _ = summary(&config);
            let rules = config.server.path_rules;
            for r in &config.routes {
                let p = match &r.path {
                    PathMatch::Exact(p) | PathMatch::Prefix(p) => p.as_str(),
                    // Patterns are checked segment by segment (tests/routes.rs).
                    PathMatch::Pattern(_) => continue,
                };
                // Written in the form requests are matched in...
                let normal = uri_path::normalize(p, rules);
                prop_assert!(
                    matches!(&normal, Ok(n) if n == p),
                    "route path {p:?} under {rules:?} normalizes to {normal:?}"
                );
                // ...so a request for it reaches a route (this one or an earlier one).
                prop_assert!(route::find(
                    &config.routes,
                    &Method::GET,
                    None,
                    &http::HeaderMap::new(),
                    p,
                    None
                )
                .is_some());
                if r.case_insensitive {
                    let upper = p.to_ascii_uppercase();
                    prop_assert!(
                        route::find(
                            &config.routes,
                            &Method::GET,
                            None,
                            &http::HeaderMap::new(),
                            &upper,
                            None
                        )
                        .is_some(),
                        "{upper}"
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn generated_configs(text in config_text()) {
        check(&text)?;
    }

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn arbitrary_text(text in "[\\[\\]a-z_ =\"\n.0-9{}/;%]{0,200}") {
        check(&text)?;
    }
}

/// The generator must reach both outcomes for the properties above to mean anything.
#[test]
fn generator_reaches_valid_and_invalid_configs() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut ok, mut err) = (0, 0);
    for _ in 0..400 {
        let text = config_text()
            .new_tree(&mut runner)
            .expect("generate")
            .current();
        match load_str(Path::new("prop.toml"), &text) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    assert!(ok >= 40 && err >= 40, "ok {ok}, err {err}");
}
