//! Test configs as TOML tables: a test starts from a base (`config_with` or its own text),
//! then names each key it changes (`.set("server.shutdown_grace", "1s")`) or adds sections
//! written as TOML (`.with(routes)`), instead of editing generated text.

use std::fmt;

use toml::{Table, Value};

/// A gateway config under construction; `Display` renders it as the TOML file the binary reads.
#[derive(Clone, Debug)]
pub struct TestConfig {
    table: Table,
}

/// Listeners on port 0, `shutdown_grace = "5s"`, one upstream `api` at `upstream` (connect
/// timeout 1 s, timeout 2 s), and `rest` (policies and routes, as TOML).
pub fn config_with(upstream: &str, rest: &str) -> TestConfig {
    TestConfig::parse(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"

[admin]
listen = "127.0.0.1:0"

[[upstream]]
name = "api"
url = "{upstream}"
connect_timeout = "1s"
timeout = "2s"
"#
    ))
    .with(rest)
}

impl TestConfig {
    /// A whole config written by the test.
    pub fn parse(text: &str) -> TestConfig {
        let table = text
            .parse::<Table>()
            .unwrap_or_else(|e| panic!("test config is not TOML: {e}\n{text}"));
        TestConfig { table }
    }

    /// Adds `text` (TOML): its tables are merged key by key into the config's, its arrays of
    /// tables (`[[policy]]`, `[[route]]`) appended after the config's own, in order.
    pub fn with(mut self, text: &str) -> TestConfig {
        merge(&mut self.table, TestConfig::parse(text).table);
        self
    }

    /// Sets the key at `path` ("server.max_header_bytes", "server.tls.cert"), creating the
    /// tables on the way. A step through an array of tables (`upstream`, `policy`) names its
    /// only element: `set("upstream.timeout", "30s")` on the config's one upstream.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> TestConfig {
        let (parent, key) = self.parent(path);
        parent.insert(key.to_string(), value.into());
        self
    }

    /// Removes the key (or whole section) at `path`; it must be there.
    pub fn remove(mut self, path: &str) -> TestConfig {
        let (parent, key) = self.parent(path);
        assert!(parent.remove(key).is_some(), "no `{path}` to remove");
        self
    }

    /// A `[store]` on the Redis at `url`; other store keys are set by name.
    pub fn redis_store(self, url: &str) -> TestConfig {
        self.set("store.kind", "redis").set("store.url", url)
    }

    /// The table holding the last key of `path`, and that key.
    fn parent<'p>(&mut self, path: &'p str) -> (&mut Table, &'p str) {
        let (sections, key) = path.rsplit_once('.').unwrap_or(("", path));
        let mut table = &mut self.table;
        for step in sections.split('.').filter(|s| !s.is_empty()) {
            let entry = table
                .entry(step)
                .or_insert_with(|| Value::Table(Table::new()));
            table = match entry {
                Value::Table(t) => t,
                Value::Array(items) => match items.as_mut_slice() {
                    [Value::Table(t)] => t,
                    _ => panic!("`{step}` in `{path}` is not exactly one table"),
                },
                _ => panic!("`{step}` in `{path}` is not a table"),
            };
        }
        (table, key)
    }
}

fn merge(into: &mut Table, from: Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(old)), Value::Table(new)) => merge(old, new),
            (Some(Value::Array(old)), Value::Array(new)) if is_tables(old) && is_tables(&new) => {
                old.extend(new)
            }
            (Some(old), new) => panic!("`{key}` is set twice ({old} and {new}): use `set`"),
            (None, value) => {
                into.insert(key, value);
            }
        }
    }
}

fn is_tables(items: &[Value]) -> bool {
    items.iter().all(Value::is_table)
}

impl fmt::Display for TestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.table)
    }
}
