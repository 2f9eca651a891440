//! A policy's `overrides` and `overrides_file`: per-key limits (tiers), checked against the
//! policy's key, limit and window, their keys normalized the way the gateway builds them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::check::{bounded, within_double, Check, Issue};
use super::validator::Validator;
use crate::config::compiled::{KeyPart, Overrides};
use crate::config::file;
use crate::config::locate::Source;
use crate::config::ConfigError;

impl Validator<'_> {
    /// `overrides` and `overrides_file` merged; an error in the file names that file.
    pub(super) fn overrides(
        &mut self,
        p: &file::Policy,
        shape: &OverrideShape<'_>,
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
            match read_overrides_file(self.path, file, shape) {
                Ok((path, list)) => {
                    for (key, limit) in list {
                        from_file.insert(key.clone(), path.clone());
                        entries.push((key, limit));
                    }
                }
                Err(FileIssue::Here(issue)) => {
                    self.issues.push(issue);
                    return None;
                }
                Err(FileIssue::There(error)) => {
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
}

/// What override entries are checked against: the policy's key, limits and window.
pub(super) struct OverrideShape<'a> {
    pub(crate) key: &'a [KeyPart],
    pub(crate) limit: u64,
    /// `Some` when `burst` was written (an override then scales it).
    pub(crate) burst: Option<u64>,
    pub(crate) window: Duration,
    pub(crate) ipv6_prefix: u8,
}

impl OverrideShape<'_> {
    /// Overrides are keyed by the value of the policy's single key component.
    pub(crate) fn addressable(&self) -> Result<(), String> {
        match self.key {
            [KeyPart::Global] => Err(
                "overrides need a policy keyed by a value (ip, header:NAME, path, method, \
                 route, param:NAME or query:NAME); this policy is keyed by [global], which has \
                 one counter for everyone"
                    .into(),
            ),
            [_] => Ok(()),
            parts => {
                let parts: Vec<String> = parts.iter().map(ToString::to_string).collect();
                Err(format!(
                    "overrides need a policy keyed by exactly one component (their keys are that \
                     component's values); this policy is keyed by [{}]",
                    parts.join(", ")
                ))
            }
        }
    }

    /// One entry, its key normalized the way the gateway builds the value at request time.
    pub(crate) fn entry(&self, key: &str, value: &Spanned<u64>) -> Check<(String, u64)> {
        let limit: u64 = bounded(value, 1..=u64::MAX)?;
        within_double(value, limit, self.window)?;
        if let Some(burst) = self.burst {
            let scaled = (u128::from(burst) * u128::from(limit)).div_ceil(u128::from(self.limit));
            let scaled = u64::try_from(scaled).unwrap_or(u64::MAX);
            within_double(value, scaled, self.window).map_err(|_| {
                Issue::at(
                    value,
                    format!(
                        "{limit} scales burst to {scaled}, too large: burst times the window in \
                         milliseconds must not exceed 2^53"
                    ),
                )
            })?;
        }
        let bad = |what: &str| Issue::at(value, format!("override key `{key}` {what}"));
        let normalized = match self.key.first() {
            Some(KeyPart::Ip) => {
                let ip: IpAddr = key
                    .parse()
                    .map_err(|_| bad("is not an IP address (this policy is keyed by ip)"))?;
                crate::net::client_key(ip.to_canonical(), self.ipv6_prefix)
            }
            Some(KeyPart::Header(_)) => {
                let trimmed = key.trim();
                if trimmed.is_empty() {
                    return Err(bad(
                        "is empty (a request without the header is keyed by its address)",
                    ));
                }
                trimmed.to_owned()
            }
            Some(KeyPart::Path) => {
                if !key.starts_with('/') {
                    return Err(bad("must be a path starting with `/`"));
                }
                key.to_owned()
            }
            Some(KeyPart::Method) => key.to_ascii_uppercase(),
            Some(KeyPart::Param(_)) | Some(KeyPart::Query(_)) if key.is_empty() => {
                return Err(bad(
                    "is empty (a named segment is never empty; a request without the query \
                     parameter is keyed by its address)",
                ))
            }
            Some(KeyPart::Param(_)) | Some(KeyPart::Query(_)) => key.to_owned(),
            Some(
                KeyPart::JwtSub
                | KeyPart::JwtClaim(_)
                | KeyPart::TlsSubject
                | KeyPart::TlsFingerprint,
            ) => {
                if key.is_empty() {
                    return Err(bad(
                        "is empty (a request without one is keyed by its address)",
                    ));
                }
                key.to_owned()
            }
            Some(KeyPart::Route) | Some(KeyPart::Global) | None => key.to_owned(),
        };
        Ok((normalized, limit))
    }
}

/// Why an overrides file was refused: a problem where the config names it, or inside it.
enum FileIssue {
    Here(Issue),
    There(ConfigError),
}

/// Read and check an `overrides_file` (relative to the config file's directory): a TOML table
/// of `"key" = limit`. Returns the resolved path and the normalized entries.
fn read_overrides_file(
    config: &Path,
    file: &Spanned<String>,
    shape: &OverrideShape<'_>,
) -> Result<(PathBuf, Vec<(String, u64)>), FileIssue> {
    let name = file.get_ref();
    if name.trim().is_empty() {
        return Err(FileIssue::Here(Issue::at(file, "must not be empty")));
    }
    let path = match config.parent() {
        Some(dir) if Path::new(name).is_relative() => dir.join(name),
        _ => PathBuf::from(name),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        FileIssue::Here(Issue::at(
            file,
            format!("cannot read overrides file {}: {e}", path.display()),
        ))
    })?;
    let source = Source::new(&path, &text);
    let table: BTreeMap<String, Spanned<u64>> = toml::from_str(&text).map_err(|e| {
        let mut error = source.toml_error(&e);
        if e.message().contains("invalid type") {
            error.message = format!(
                "{}; an overrides file holds `\"key\" = limit` lines",
                error.message
            );
        }
        FileIssue::There(error)
    })?;
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut out = Vec::with_capacity(table.len());
    // File order, so the first bad entry is reported.
    let mut entries: Vec<(&String, &Spanned<u64>)> = table.iter().collect();
    entries.sort_by_key(|(_, v)| v.span().start);
    for (key, value) in entries {
        let checked = shape
            .entry(key, value)
            .and_then(|(k, n)| match seen.get(k.as_str()) {
                Some(first) => Err(Issue::at(
                    value,
                    format!("override key `{key}` is the same client as `{first}`"),
                )),
                None => Ok((k, n)),
            });
        match checked {
            Ok((k, n)) => {
                seen.insert(k.clone(), key);
                out.push((k, n));
            }
            Err(issue) => {
                return Err(FileIssue::There(source.error(
                    issue.span,
                    None,
                    issue.message,
                )))
            }
        }
    }
    Ok((path, out))
}
