//! Validation of the policy and route features beyond plain limits: concurrency leases,
//! count-by-response, escalating blocks, retry jitter, tier overrides (inline and from a file)
//! and weighted cost. Kept apart from `validate` so each rule reads next to its siblings; the
//! error conventions (span, message, first in file order) are the same.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::compiled::{Algorithm, Cost, CountOn, Escalation, KeyPart, DEFAULT_MAX_COST};
use super::duration;
use super::file;
use super::locate::Source;
use super::validate::{bounded, later, within_double, Check, Issue};
use super::ConfigError;

/// Longest block an escalation may reach; with a multiplier of at most `MAX_MULTIPLIER` every
/// product the store computes stays below 2^53 ms.
const MAX_BLOCK: Duration = Duration::from_secs(365 * 86_400);
const MAX_MULTIPLIER: u64 = 1000;
const MIN_LEASE: Duration = Duration::from_secs(1);
const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);
const MAX_JITTER: Duration = Duration::from_secs(3600);
/// Largest `max_cost`: far beyond any useful cost, small enough that no product overflows.
const MAX_MAX_COST: u64 = 1_000_000;

/// The policy's window; for `concurrency`, its lease (`window` does not apply there).
pub(super) fn window(spanned: &Spanned<file::Policy>) -> Check<Duration> {
    let p = spanned.get_ref();
    if *p.algorithm.get_ref() == Algorithm::Concurrency {
        if let Some(window) = &p.window {
            return Err(Issue::at(
                window,
                "`window` does not apply to algorithm \"concurrency\"; use `lease` (how long a \
                 request holds its slot without renewal, default 60s)",
            ));
        }
        let Some(lease) = &p.lease else {
            return Ok(file::DEFAULT_LEASE);
        };
        let d = lease.get_ref().0;
        if d < MIN_LEASE || d > MAX_LEASE {
            return Err(Issue::at(lease, "must be between 1s and 24h"));
        }
        return Ok(d);
    }
    if let Some(lease) = &p.lease {
        return Err(Issue::at(
            lease,
            format!(
                "`lease` only applies to algorithm \"concurrency\" (this policy uses \"{}\")",
                p.algorithm.get_ref().as_str()
            ),
        ));
    }
    match &p.window {
        Some(window) => Ok(window.get_ref().0),
        // The message serde would give for a required key, at the same place.
        None => Err(Issue::at(spanned, "missing field `window`")),
    }
}

/// `block_multiplier`, `block_max`, `block_memory`.
pub(super) fn escalation(
    p: &file::Policy,
    block_for: Option<Duration>,
) -> Check<Option<Escalation>> {
    let spans = [
        p.block_multiplier.as_ref().map(Spanned::span),
        p.block_max.as_ref().map(Spanned::span),
        p.block_memory.as_ref().map(Spanned::span),
    ];
    let Some(first) = spans.iter().flatten().min_by_key(|s| s.start).cloned() else {
        return Ok(None);
    };
    let Some(block_for) = block_for else {
        // Either `block_for` is missing, or it is invalid and already reported.
        if p.block_for.is_some() {
            return Ok(None);
        }
        return Err(Issue::at(
            &Spanned::new(first, ()),
            "escalating blocks (`block_multiplier`, `block_max`, `block_memory`) need \
             `block_for`, the first block's duration",
        ));
    };
    let Some(multiplier) = &p.block_multiplier else {
        return Err(Issue::at(
            &Spanned::new(first, ()),
            "`block_max` and `block_memory` need `block_multiplier` (how much longer each \
             repeated block is)",
        ));
    };
    let multiplier: u64 = bounded(multiplier, 2, MAX_MULTIPLIER)?;
    let max = match &p.block_max {
        None => block_for.max(Duration::from_secs(24 * 3600)),
        Some(max) => {
            let d = max.get_ref().0;
            if d < block_for {
                return Err(Issue::at(
                    max,
                    format!(
                        "must be at least block_for ({})",
                        duration::format(block_for)
                    ),
                ));
            }
            if d > MAX_BLOCK {
                return Err(Issue::at(max, "must be at most 365d"));
            }
            d
        }
    };
    if block_for > MAX_BLOCK {
        if let Some(b) = &p.block_for {
            return Err(Issue::at(b, "must be at most 365d when blocks escalate"));
        }
    }
    let memory = match &p.block_memory {
        None => file::DEFAULT_BLOCK_MEMORY,
        Some(memory) => {
            let d = memory.get_ref().0;
            if d < Duration::from_secs(1) || d > MAX_BLOCK {
                return Err(Issue::at(memory, "must be between 1s and 365d"));
            }
            d
        }
    };
    Ok(Some(Escalation {
        multiplier,
        max,
        memory,
    }))
}

/// `count_status` or `count`.
pub(super) fn count_on(p: &file::Policy) -> Check<CountOn> {
    let count = match (&p.count_status, &p.count) {
        (None, None) => return Ok(CountOn::Every),
        (Some(statuses), Some(count)) => {
            return Err(Issue::at(
                &later(statuses, count),
                "`count_status` and `count` are mutually exclusive: list statuses, or use \
                 count = \"errors\" for every status of 400 or more",
            ))
        }
        (Some(statuses), None) => {
            if statuses.get_ref().is_empty() {
                return Err(Issue::at(
                    statuses,
                    "must list at least one status (omit it to count every request)",
                ));
            }
            let mut list = Vec::with_capacity(statuses.get_ref().len());
            for status in statuses.get_ref() {
                list.push(bounded::<u16>(status, 100, 599)?);
            }
            list.sort_unstable();
            list.dedup();
            (CountOn::Statuses(list.into_boxed_slice()), statuses.span())
        }
        (None, Some(count)) => match count.get_ref() {
            file::CountWord::Errors => (CountOn::Errors, count.span()),
        },
    };
    if *p.algorithm.get_ref() == Algorithm::Concurrency {
        return Err(Issue::at(
            &Spanned::new(count.1, ()),
            "counting by response does not apply to algorithm \"concurrency\" (a request holds \
             its slot whatever the answer)",
        ));
    }
    Ok(count.0)
}

/// `retry_after_jitter`: whole seconds are added, so less than 1s would add nothing.
pub(super) fn jitter(p: &file::Policy) -> Check<Option<Duration>> {
    let Some(jitter) = &p.retry_after_jitter else {
        return Ok(None);
    };
    let d = jitter.get_ref().0;
    if d < Duration::from_secs(1) || d > MAX_JITTER {
        return Err(Issue::at(jitter, "must be between 1s and 1h"));
    }
    Ok(Some(d))
}

/// What override entries are checked against: the policy's key, limits and window.
pub(super) struct OverrideShape<'a> {
    pub key: &'a [KeyPart],
    pub limit: u64,
    /// `Some` when `burst` was written (an override then scales it).
    pub burst: Option<u64>,
    pub window: Duration,
    pub ipv6_prefix: u8,
}

impl OverrideShape<'_> {
    /// Overrides are keyed by the value of the policy's single key component.
    pub fn addressable(&self) -> Result<(), String> {
        match self.key {
            [KeyPart::Global] => Err(
                "overrides need a policy keyed by a value (ip, header:NAME, path, method or \
                 route); this policy is keyed by [global], which has one counter for everyone"
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
    pub fn entry(&self, key: &str, value: &Spanned<u64>) -> Check<(String, u64)> {
        let limit: u64 = bounded(value, 1, u64::MAX)?;
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
            Some(KeyPart::Route) | Some(KeyPart::Global) | None => key.to_owned(),
        };
        Ok((normalized, limit))
    }
}

/// Why an overrides file was refused: a problem where the config names it, or inside it.
pub(super) enum FileIssue {
    Here(Issue),
    There(ConfigError),
}

/// Read and check an `overrides_file` (relative to the config file's directory): a TOML table
/// of `"key" = limit`. Returns the resolved path and the normalized entries.
pub(super) fn read_overrides_file(
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

/// A route's `cost`, `cost_header` and `max_cost`.
pub(super) fn route_cost(r: &file::Route) -> Check<Cost> {
    if let (Some(max), None) = (&r.max_cost, &r.cost_header) {
        return Err(Issue::at(
            max,
            "`max_cost` needs `cost_header` (it bounds the cost a request may name)",
        ));
    }
    let header = match &r.cost_header {
        None => None,
        Some(name) => Some(
            HeaderName::from_bytes(name.get_ref().as_bytes()).map_err(|_| {
                Issue::at(
                    name,
                    format!("`{}` is not a valid HTTP header name", name.get_ref()),
                )
            })?,
        ),
    };
    let max = match &r.max_cost {
        None => DEFAULT_MAX_COST,
        Some(max) => bounded(max, 1, MAX_MAX_COST)?,
    };
    let fixed = match &r.cost {
        None => 1,
        Some(cost) if header.is_some() => bounded(cost, 1, max).map_err(|mut issue| {
            issue.message.push_str(" (max_cost)");
            issue
        })?,
        Some(cost) => bounded(cost, 1, MAX_MAX_COST)?,
    };
    Ok(Cost { fixed, header, max })
}
