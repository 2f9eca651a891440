//! The human summary `rategate check` prints (and `POST /admin/reload` returns) for a valid
//! config. Secrets never appear: the admin token is shown as set or not, and Redis URLs lose their
//! credentials.

use std::fmt::Write as _;

use super::compiled::{
    Access, Admin, AlertSettings, Algorithm, Config, CountOn, PathMatch, Policy, Route, Server,
    StoreKind, StoreSettings, Target, Upstream,
};
use super::duration::format as dur;
use super::shadow;
use crate::net::CidrSet;
use crate::uri_path::PathRules;

/// A multi-line description of what the config will do.
pub fn summary(cfg: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail, so the fmt::Result carries nothing.
    let _ = write_summary(&mut out, cfg);
    out
}

fn write_summary(out: &mut String, cfg: &Config) -> std::fmt::Result {
    writeln!(out, "config {}", cfg.source.display())?;
    server(out, &cfg.server)?;
    paths(out, &cfg.server.path_rules)?;
    admin(out, &cfg.admin)?;
    store(out, &cfg.store)?;
    access(out, &cfg.access)?;
    writeln!(out, "upstreams ({}):", cfg.upstreams.len())?;
    for u in &cfg.upstreams {
        upstream(out, u)?;
    }
    writeln!(out, "policies ({}):", cfg.policies.len())?;
    for p in &cfg.policies {
        policy(out, p)?;
    }
    writeln!(out, "routes ({}, first match wins):", cfg.routes.len())?;
    for r in &cfg.routes {
        route(out, r)?;
    }
    for (later, earlier) in shadow::shadowed(&cfg.routes) {
        if let (Some(later), Some(earlier)) = (cfg.routes.get(later), cfg.routes.get(earlier)) {
            writeln!(
                out,
                "warning: route `{}` can never match: the earlier route `{}` takes every \
                 request it would (first match wins; move it above `{}` or narrow `{}`)",
                later.name, earlier.name, earlier.name, earlier.name
            )?;
        }
    }
    alerts(out, cfg.alerts.as_ref())
}

fn server(out: &mut String, s: &Server) -> std::fmt::Result {
    let tls = s.tls.as_ref().map_or("off".to_owned(), |t| {
        let clients = t.client_ca.as_ref().map_or(String::new(), |ca| {
            format!(
                ", client certificates {} by {}",
                t.client_auth.as_str(),
                ca.display()
            )
        });
        format!("cert {} key {}{clients}", t.cert.display(), t.key.display())
    });
    writeln!(
        out,
        "server: listen {} (tls {tls}), trusted_proxies {}, ipv6_prefix /{}, \
         header_read_timeout {}, max_header_bytes {}, shutdown_grace {}, access_log {}, \
         forward_client_ip_headers {}",
        s.listen,
        cidrs(&s.trusted_proxies),
        s.ipv6_prefix,
        dur(s.header_read_timeout),
        s.max_header_bytes,
        dur(s.shutdown_grace),
        if s.access_log { "on" } else { "off" },
        if s.forward_client_ip_headers {
            "trusted proxies only"
        } else {
            "from anyone"
        },
    )?;
    connections(out, s)
}

fn paths(out: &mut String, rules: &PathRules) -> std::fmt::Result {
    writeln!(
        out,
        "paths: path_semicolons {}, escaped_slashes {}",
        rules.semicolons.as_str(),
        rules.escaped_slashes.as_str(),
    )
}

fn connections(out: &mut String, s: &Server) -> std::fmt::Result {
    let max = s
        .max_connections
        .map_or_else(|| "auto (from the fd limit)".to_owned(), |n| n.to_string());
    writeln!(
        out,
        "connections: idle_timeout {}, send_timeout {}, max_connections {max}, \
         tunnel_idle_timeout {}",
        dur(s.idle_timeout),
        dur(s.send_timeout),
        dur(s.tunnel_idle_timeout),
    )
}

fn admin(out: &mut String, a: &Admin) -> std::fmt::Result {
    let token = if a.token.is_some() { "set" } else { "none" };
    writeln!(out, "admin: listen {}, token {token}", a.listen)
}

fn store(out: &mut String, s: &StoreSettings) -> std::fmt::Result {
    let memory = format!("max_memory_keys {}", s.max_memory_keys);
    match s.kind {
        StoreKind::Memory => writeln!(out, "store: memory, {memory}"),
        StoreKind::Redis => writeln!(
            out,
            "store: redis {}, key_prefix {:?}, timeout {}, on_error {}, {memory}, batch_max {}, \
             batch_in_flight {}, batch_queue {}",
            redact_url(&s.url),
            s.key_prefix,
            dur(s.timeout),
            s.on_error.as_str(),
            s.batch_max,
            s.batch_in_flight,
            s.batch_queue,
        ),
    }
}

/// The webhook's path and query are often its secret: only scheme and host are shown.
fn alerts(out: &mut String, a: Option<&AlertSettings>) -> std::fmt::Result {
    let Some(a) = a else {
        return writeln!(out, "alerts: off");
    };
    let scheme = a.webhook.scheme_str().unwrap_or("http");
    let host = a.webhook.authority().map_or("", |h| h.as_str());
    let token = if a.token.is_some() { "set" } else { "none" };
    let threshold = a.threshold.map_or("off".to_owned(), |t| {
        format!("{} rejections per {}", t.rejections, dur(t.window))
    });
    writeln!(
        out,
        "alerts: webhook {scheme}://{host}/*** ({}), token {token}, threshold {threshold}, \
         timeout {}, max_retries {}, queue_size {}",
        a.format.as_str(),
        dur(a.timeout),
        a.max_retries,
        a.queue_size,
    )
}

fn access(out: &mut String, a: &Access) -> std::fmt::Result {
    writeln!(
        out,
        "access: allow {}, deny {}",
        cidrs(&a.allow),
        cidrs(&a.deny)
    )
}

fn upstream(out: &mut String, u: &Upstream) -> std::fmt::Result {
    let targets: Vec<String> = u
        .targets
        .iter()
        .map(|t| format!("{}{}", t.label, u.base_path))
        .collect();
    write!(
        out,
        "  {}: {} (connect_timeout {}, timeout {}",
        u.name,
        targets.join(", "),
        dur(u.connect_timeout),
        dur(u.timeout),
    )?;
    if u.targets.len() > 1 {
        write!(
            out,
            ", {}, eject after {} failures for {}..{}",
            u.balance.as_str(),
            u.outlier.consecutive_failures,
            dur(u.outlier.base_ejection_time),
            dur(u.outlier.max_ejection_time),
        )?;
    }
    if let Some(h) = &u.health_check {
        write!(out, ", health check {} every {}", h.path, dur(h.interval))?;
    }
    if let Some(tls) = &u.tls {
        match &tls.ca_file {
            Some(ca) => write!(out, ", ca {}", ca.display())?,
            None => write!(out, ", web PKI roots")?,
        }
        if let Some(sni) = &tls.sni {
            write!(out, ", sni {}", sni.to_str())?;
        }
        if let Some(cert) = &tls.client_cert_file {
            write!(out, ", client_cert {}", cert.display())?;
        }
    }
    if u.targets.iter().any(|t| t.has_host_name()) {
        write!(out, ", names resolved every {}", dur(u.resolve_interval))?;
    }
    writeln!(out, ")")
}

fn policy(out: &mut String, p: &Policy) -> std::fmt::Result {
    let key: Vec<String> = p.key.iter().map(ToString::to_string).collect();
    if p.algorithm == Algorithm::Concurrency {
        write!(
            out,
            "  {}: concurrency {} in flight, lease {}",
            p.name,
            p.limit,
            dur(p.window)
        )?;
    } else {
        write!(
            out,
            "  {}: {} {} per {}",
            p.name,
            p.algorithm.as_str(),
            p.limit,
            dur(p.window)
        )?;
    }
    if p.burst != p.limit {
        write!(out, ", burst {}", p.burst)?;
    }
    write!(out, ", key [{}], mode {}", key.join(", "), p.mode.as_str())?;
    match &p.count {
        CountOn::Every => {}
        CountOn::Errors => write!(out, ", counts responses >= 400")?,
        CountOn::Statuses(list) => {
            let list: Vec<String> = list.iter().map(ToString::to_string).collect();
            write!(out, ", counts responses {}", list.join(","))?;
        }
    }
    if let Some(block_for) = p.block_for {
        write!(out, ", block_for {}", dur(block_for))?;
    }
    if let Some(e) = &p.escalation {
        write!(
            out,
            " x{} up to {} (remembered {})",
            e.multiplier,
            dur(e.max),
            dur(e.memory)
        )?;
    }
    if !p.overrides.is_empty() {
        write!(out, ", {} overrides", p.overrides.len())?;
        if let Some(claim) = &p.overrides_from {
            write!(out, " by jwt:claim:{claim}")?;
        }
    }
    if let Some(jitter) = p.retry_after_jitter {
        write!(out, ", retry_after_jitter {}", dur(jitter))?;
    }
    writeln!(out)
}

fn route(out: &mut String, r: &Route) -> std::fmt::Result {
    let mut path = match &r.path {
        PathMatch::Exact(path) => format!("path {path}"),
        PathMatch::Prefix(prefix) => format!("path_prefix {prefix}"),
        PathMatch::Pattern(p) => format!("path {} (pattern)", p.text),
    };
    if r.case_insensitive {
        path.push_str(" (case-insensitive)");
    }
    let methods = if r.methods.is_empty() {
        "any method".to_owned()
    } else {
        let names: Vec<&str> = r.methods.iter().map(|m| m.as_str()).collect();
        format!("methods {}", names.join(","))
    };
    let mut host = r
        .host
        .as_deref()
        .map_or("any host".to_owned(), |h| format!("host {h}"));
    for cond in &r.headers {
        match &cond.value {
            None => write!(host, ", header {} present", cond.name)?,
            Some(v) => write!(
                host,
                ", header {} = {:?}",
                cond.name,
                String::from_utf8_lossy(v)
            )?,
        }
    }
    let target = match &r.target {
        Target::Upstream(u) if r.strip_prefix => format!("upstream {} (strip_prefix)", u.name),
        Target::Upstream(u) => format!("upstream {}", u.name),
        Target::Respond { status, body } => {
            format!("respond {} ({} bytes)", status.as_u16(), body.len())
        }
    };
    let policies: Vec<&str> = r.policies.iter().map(|p| &*p.name).collect();
    let policies = if policies.is_empty() {
        "none".to_owned()
    } else {
        policies.join(", ")
    };
    let cost = match (&r.cost.header, r.cost.fixed) {
        (None, 1) => String::new(),
        (None, n) => format!(", cost {n}"),
        (Some(h), n) => format!(", cost {n} or header {h} (1..={})", r.cost.max),
    };
    let retry = match &r.retry {
        None => String::new(),
        Some(retry) => {
            let on: Vec<&str> = [
                (retry.on_reset, "reset"),
                (retry.on_timeout, "timeout"),
                (retry.on_gateway_error, "gateway_error"),
            ]
            .into_iter()
            .filter_map(|(on, word)| on.then_some(word))
            .collect();
            format!(", retry {} on {}", retry.attempts, on.join(","))
        }
    };
    let upgrade = if r.upgrade.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = r.upgrade.iter().map(|p| p.token()).collect();
        format!(", upgrade {}", names.join(","))
    };
    let auth = r.auth.as_ref().map_or(String::new(), |a| {
        format!(", auth {} ({})", a.name, a.describe())
    });
    writeln!(
        out,
        "  {}: {path}, {methods}, {host} -> {target}, policies {policies}{cost}{retry}{upgrade}{auth}",
        r.name
    )
}

fn cidrs(set: &CidrSet) -> String {
    if set.is_empty() {
        return "none".to_owned();
    }
    let nets: Vec<String> = set.nets().iter().map(ToString::to_string).collect();
    nets.join(" ")
}

/// Drop credentials from a Redis URL: the user info, and any query parameter whose name mentions
/// a password (sentinel URLs carry `sentinelPassword`).
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority.to_owned(), |(_, host)| format!("***@{host}"));
    let mut out = format!("{scheme}://{host}{path}");
    if let Some(query) = query {
        let params: Vec<String> = query.split('&').map(redact_param).collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn redact_param(param: &str) -> String {
    match param.split_once('=') {
        Some((name, _)) if name.to_ascii_lowercase().contains("password") => format!("{name}=***"),
        _ => param.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_lose_their_credentials() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact_url("rediss://user:p@ss@h/1"), "rediss://***@h/1");
        assert_eq!(
            redact_url("redis-sentinel://h:26379/0?sentinelServiceName=m&sentinelPassword=x"),
            "redis-sentinel://h:26379/0?sentinelServiceName=m&sentinelPassword=***"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
