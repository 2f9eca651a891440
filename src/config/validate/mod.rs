//! Validation and compilation of a parsed config file into the runtime model.
//!
//! Every check runs, even after one has failed, and the error reported is the first in file
//! order: an operator fixing errors one at a time then walks down the file instead of jumping
//! around. TOML's own errors (syntax, unknown keys, bad types, bad durations and enum words) stop
//! earlier, in the deserializer, and are reported as they come.
//!
//! This file runs every section's checks and checks names across sections. One file per section
//! of the config file: `server` (with `admin` and `access`), `store`, `alerts`, `upstream`,
//! `policy`, `overrides` (a policy's per-key limits, inline or from an `overrides_file`) and
//! `route`. Each adds its checks as methods of the `Validator` (`validator`: the issues recorded so
//! far) and builds on `check` (`Issue` and the bounds of every value). Imports only go down: this
//! file uses the sections, `policy` uses `overrides`, and `check` uses no other file here.

mod alerts;
mod auth;
mod check;
mod overrides;
mod policy;
mod route;
mod server;
mod store;
#[cfg(test)]
mod tests;
mod upstream;
mod upstream_tls;
mod validator;

use std::collections::HashMap;
use std::path::Path;

use toml::Spanned;

use self::check::{Check, Issue, MAX_NAME_LEN};
use self::route::{Named, References};
use self::server::path_rules;
use self::validator::Validator;
use super::compiled::{Config, Routes};
use super::env::{self, Lookup};
use super::file::{self, File};
use super::locate::Source;
use super::ConfigError;

/// Compile config text, substituting `${NAME}` from the process environment.
pub(crate) fn compile(path: &Path, text: &str) -> Result<Config, ConfigError> {
    compile_with_env(path, text, &env::process_env)
}

/// Compile config text with `${NAME}` values taken from `env`. `path` names the file (in errors
/// and `Config::source`) and anchors relative `overrides_file` paths, the only files read here.
pub(crate) fn compile_with_env(
    path: &Path,
    text: &str,
    env: Lookup<'_>,
) -> Result<Config, ConfigError> {
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

impl Validator<'_> {
    fn config(&mut self, file: &File, path: &Path) -> Option<Config> {
        let server = self.server(&file.server);
        let admin = self.admin(&file.admin);
        let store = self.store(&file.store);
        let access = self.access(&file.access);
        let upstream_names = self.names("upstream", file.upstream.iter().map(|u| &u.name));
        let policy_names = self.names("policy", file.policy.iter().map(|p| &p.get_ref().name));
        self.names("route", file.route.iter().map(|r| &r.get_ref().name));
        let auth_names = self.names("auth", file.auth.iter().map(|a| &a.get_ref().name));
        let upstreams = self.upstreams(&file.upstream);
        // Override keys of IP-keyed policies are normalized like client keys.
        let ipv6_prefix = server
            .as_ref()
            .map_or(file::DEFAULT_IPV6_PREFIX, |s| s.ipv6_prefix);
        let policies = self.policies(&file.policy, ipv6_prefix);
        self.client_cert_keys(file);
        let auths = self.auths(&file.auth);
        let refs = References {
            upstreams: Named::new("upstream", upstream_names, &upstreams),
            policies: Named::new("policy", policy_names, &policies),
            auths: Named::new("auth", auth_names, &auths),
        };
        // Route paths are checked against the path rules; those cannot fail on their own.
        let routes = self.routes(&file.route, &refs, path_rules(&file.server));
        let alerts = match &file.alerts {
            None => Some(None),
            Some(alerts) => self.alerts(alerts).map(Some),
        };
        let routes = routes?;
        Some(Config {
            source: path.to_path_buf(),
            upgrades: routes.iter().any(|r| !r.upgrade.is_empty()),
            server: server?,
            admin: admin?,
            store: store?,
            access: access?,
            upstreams: upstreams.into_iter().collect::<Option<_>>()?,
            policies: policies.into_iter().collect::<Option<_>>()?,
            routes: Routes::new(routes),
            alerts: alerts?,
            auths: auths.into_iter().collect::<Option<_>>()?,
        })
    }

    /// `tls:*` key components need client certificates: `[server.tls] client_ca`.
    fn client_cert_keys(&mut self, file: &File) {
        let verified = file
            .server
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        if verified {
            return;
        }
        for policy in &file.policy {
            let items = policy.get_ref().key.iter().flat_map(|k| k.get_ref());
            for item in items.filter(|i| i.get_ref().starts_with("tls:")) {
                self.issues.push(Issue::at(
                    item,
                    format!(
                        "key component `{}` needs client certificates: set [server.tls] \
                         client_ca",
                        item.get_ref()
                    ),
                ));
            }
        }
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
