//! `[[policy]]`: algorithm, limit and window (or a concurrency lease), burst, key, blocks and
//! their escalation, counting by response, retry jitter; its overrides are checked in
//! `overrides`.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::check::{
    bounded, later, within_double, Check, Issue, BLOCK_MEMORY_RANGE, BLOCK_MULTIPLIER_RANGE,
    COUNT_STATUS_RANGE, LEASE_RANGE, MAX_ESCALATED_BLOCK, MIN_BLOCK_FOR, RETRY_AFTER_JITTER_RANGE,
};
use super::overrides::OverrideShape;
use super::validator::Validator;
use crate::config::compiled::{Algorithm, CountOn, Escalation, KeyPart, Policy};
use crate::config::duration;
use crate::config::file;
use crate::config::header_text::PolicyHeaderText;

impl Validator<'_> {
    pub(super) fn policies(
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
        let window = self.take(window(spanned));
        // Checks that need the window are skipped when it is already reported.
        let w = window.unwrap_or(Duration::from_millis(1));
        let limit =
            self.take(bounded(&p.limit, 1..=u64::MAX).and_then(|n| within_double(&p.limit, n, w)));
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
        let escalation = self.take(escalation(p, block_for.flatten()));
        let count = self.take(count_on(p));
        let retry_after_jitter = self.take(jitter(p));
        let overrides_from = match &p.overrides_from {
            None => Some(None),
            Some(from) => self.take(overrides_from(p, from)).map(Some),
        };
        let overrides = match (&key, limit, burst, &overrides_from) {
            (Some(key), Some(limit), Some(burst), Some(from)) => {
                // With `overrides_from`, override keys are values of that claim.
                let claim = from.as_ref().map(|name| [KeyPart::JwtClaim(name.clone())]);
                let shape = OverrideShape {
                    key: claim.as_ref().map_or(key.as_slice(), |c| c.as_slice()),
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
        let (limit, window) = (limit?, window?);
        Some(Policy {
            name: Arc::from(p.name.get_ref().as_str()),
            algorithm,
            limit,
            window,
            burst: burst?,
            burst_set: p.burst.is_some(),
            key: key?,
            block_for: block_for?,
            escalation: escalation?,
            mode: p.mode.unwrap_or(file::DEFAULT_MODE),
            count: count?,
            overrides: overrides?,
            overrides_from: overrides_from?,
            retry_after_jitter: retry_after_jitter?,
            index,
            headers: PolicyHeaderText::new(
                p.name.get_ref(),
                algorithm,
                limit,
                crate::millis::floor(window),
            ),
        })
    }
}

/// The policy's window; for `concurrency`, its lease (`window` does not apply there).
fn window(spanned: &Spanned<file::Policy>) -> Check<Duration> {
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
        if !LEASE_RANGE.contains(&d) {
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
fn escalation(p: &file::Policy, block_for: Option<Duration>) -> Check<Option<Escalation>> {
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
    let multiplier: u64 = bounded(multiplier, BLOCK_MULTIPLIER_RANGE)?;
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
            if d > MAX_ESCALATED_BLOCK {
                return Err(Issue::at(max, "must be at most 365d"));
            }
            d
        }
    };
    if block_for > MAX_ESCALATED_BLOCK {
        if let Some(b) = &p.block_for {
            return Err(Issue::at(b, "must be at most 365d when blocks escalate"));
        }
    }
    let memory = match &p.block_memory {
        None => file::DEFAULT_BLOCK_MEMORY,
        Some(memory) => {
            let d = memory.get_ref().0;
            if !BLOCK_MEMORY_RANGE.contains(&d) {
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
fn count_on(p: &file::Policy) -> Check<CountOn> {
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
                list.push(bounded::<u16>(status, COUNT_STATUS_RANGE)?);
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

/// `retry_after_jitter`.
fn jitter(p: &file::Policy) -> Check<Option<Duration>> {
    let Some(jitter) = &p.retry_after_jitter else {
        return Ok(None);
    };
    let d = jitter.get_ref().0;
    if !RETRY_AFTER_JITTER_RANGE.contains(&d) {
        return Err(Issue::at(jitter, "must be between 1s and 1h"));
    }
    Ok(Some(d))
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
    let n = bounded(burst, 1..=u64::MAX)?;
    within_double(burst, n, window)
}

fn min_block_for(block_for: &Spanned<duration::Positive>) -> Check<Duration> {
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

/// Longest `query:NAME` name: names are matched decoded, and real ones are short.
const MAX_QUERY_NAME: usize = 128;

/// A `{NAME}` of a route pattern and a `param:NAME` key component: letters, digits and `_`.
pub(super) fn is_param_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `overrides_from = "jwt:claim:NAME"`, which needs overrides to look up.
fn overrides_from(p: &file::Policy, from: &Spanned<String>) -> Check<Box<str>> {
    let text = from.get_ref();
    let Some(name) = text
        .strip_prefix("jwt:claim:")
        .filter(|n| valid_claim_name(n))
    else {
        return Err(Issue::at(
            from,
            format!("`{text}` is not a tier source; expected \"jwt:claim:NAME\""),
        ));
    };
    if p.overrides.is_none() && p.overrides_file.is_none() {
        return Err(Issue::at(
            from,
            "`overrides_from` needs `overrides` or `overrides_file` (the limit of each claim value)",
        ));
    }
    Ok(name.into())
}

/// Claim names as JSON object keys may be anything; a config names plain ones.
fn valid_claim_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
}

fn key_part(item: &Spanned<String>) -> Check<KeyPart> {
    let text = item.get_ref().as_str();
    if let Some(name) = text.strip_prefix("jwt:claim:") {
        return if valid_claim_name(name) {
            Ok(KeyPart::JwtClaim(name.into()))
        } else {
            Err(Issue::at(
                item,
                format!(
                    "`{name}` is not a claim name in key component `{text}`; expected 1 to 64 \
                     characters from A-Z a-z 0-9 _ - . : /"
                ),
            ))
        };
    }
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
    if let Some(name) = text.strip_prefix("param:") {
        return if is_param_name(name) {
            Ok(KeyPart::Param(name.into()))
        } else {
            Err(Issue::at(
                item,
                format!(
                    "`{name}` is not a segment name in key component `{text}`; names are \
                     letters, digits and `_`, as in `{{id}}`"
                ),
            ))
        };
    }
    if let Some(name) = text.strip_prefix("query:") {
        return if !name.is_empty() && name.len() <= MAX_QUERY_NAME && !name.contains(['&', '=']) {
            Ok(KeyPart::Query(name.into()))
        } else {
            Err(Issue::at(
                item,
                format!(
                    "`{name}` is not a query parameter name in key component `{text}`: 1 to \
                     {MAX_QUERY_NAME} bytes, without `&` or `=` (write the name decoded)"
                ),
            ))
        };
    }
    match text {
        "ip" => Ok(KeyPart::Ip),
        "path" => Ok(KeyPart::Path),
        "method" => Ok(KeyPart::Method),
        "route" => Ok(KeyPart::Route),
        "global" => Ok(KeyPart::Global),
        "jwt:sub" => Ok(KeyPart::JwtSub),
        "tls:subject" => Ok(KeyPart::TlsSubject),
        "tls:fingerprint" => Ok(KeyPart::TlsFingerprint),
        _ => Err(Issue::at(
            item,
            format!(
                "unknown key component `{text}`; expected \"ip\", \"header:NAME\", \"path\", \
                 \"method\", \"route\", \"param:NAME\", \"query:NAME\", \"global\", \"jwt:sub\", \
                 \"jwt:claim:NAME\", \"tls:subject\" or \"tls:fingerprint\""
            ),
        )),
    }
}
