//! `[[upstream]]`: where routes forward to, and how (`http://`, `h2c://`, `https://` with its TLS
//! settings, checked in `upstream_tls`).

use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;
use toml::Spanned;

use super::check::{bounded, later, Check, Issue, HEALTH_THRESHOLD_RANGE, OUTLIER_FAILURES_RANGE};
use super::upstream_tls::target_server_name;
use super::validator::Validator;
use crate::config::compiled::{
    HealthCheck, Outlier, Upstream, UpstreamProtocol, UpstreamTarget, UpstreamTls,
};
use crate::config::file::{self, EnvString};

impl Validator<'_> {
    pub(super) fn upstreams(&mut self, list: &[file::Upstream]) -> Vec<Option<Arc<Upstream>>> {
        let mut out = Vec::with_capacity(list.len());
        for (index, u) in list.iter().enumerate() {
            let targets = self.targets(u);
            let targets = self.take(targets);
            let outlier = self.take(outlier(u));
            let health_check = self.take(u.health_check.as_ref().map(health_check).transpose());
            let resolve_interval = self.take(resolve_interval(u));
            let (
                Some((urls, base_path)),
                Some(outlier),
                Some(health_check),
                Some(resolve_interval),
            ) = (targets, outlier, health_check, resolve_interval)
            else {
                out.push(None);
                continue;
            };
            let Some((targets, tls)) = self.targets_tls(u, urls) else {
                out.push(None);
                continue;
            };
            out.push(Some(Arc::new(Upstream {
                name: Arc::from(u.name.get_ref().as_str()),
                targets,
                balance: u.balance.unwrap_or(file::DEFAULT_BALANCE),
                tls,
                base_path,
                connect_timeout: u
                    .connect_timeout
                    .map_or(file::DEFAULT_CONNECT_TIMEOUT, |d| d.0),
                timeout: u.timeout.map_or(file::DEFAULT_UPSTREAM_TIMEOUT, |d| d.0),
                outlier,
                health_check,
                resolve_interval,
                index,
            })));
        }
        out
    }

    /// `url` or `targets` (exactly one), each with where it was written, and the base path
    /// they share.
    fn targets<'u>(
        &self,
        u: &'u file::Upstream,
    ) -> Check<(Vec<(&'u EnvString, UpstreamUrl)>, String)> {
        let urls: Vec<&EnvString> =
            match (&u.url, &u.targets) {
                (Some(url), Some(targets)) => {
                    return Err(Issue::at(
                        &later(url, targets),
                        "an upstream has either `url` or `targets`, not both",
                    ))
                }
                (Some(url), None) => vec![url],
                (None, Some(targets)) if targets.get_ref().is_empty() => {
                    return Err(Issue::at(targets, "must name at least one target URL"))
                }
                (None, Some(targets)) => targets.get_ref().iter().collect(),
                (None, None) => return Err(Issue::at(
                    &u.name,
                    "an upstream needs `url = \"http://...\"` or `targets = [\"http://...\", ...]`",
                )),
            };
        let mut parsed: Vec<(&EnvString, UpstreamUrl)> = Vec::with_capacity(urls.len());
        let mut base: Option<String> = None;
        for at in urls {
            let text = self.expand(at)?;
            let url = upstream_url(at, &text)?;
            match &base {
                Some(first) if *first != url.base_path => {
                    return Err(Issue::at(
                        at,
                        format!(
                            "every target must have the same path (the first has \"{first}\"); \
                             targets differ only in scheme, host and port"
                        ),
                    ))
                }
                Some(_) => {}
                None => base = Some(url.base_path.clone()),
            }
            if parsed.iter().any(|(_, p)| p.label == url.label) {
                return Err(Issue::at(at, format!("`{}` is listed twice", url.label)));
            }
            parsed.push((at, url));
        }
        Ok((parsed, base.unwrap_or_default()))
    }

    /// The targets with their TLS server names, and the TLS settings the `https://` ones share.
    /// TLS keys on an upstream none of whose targets uses TLS are a mistake, not something to
    /// ignore: the operator believes the connection is verified (or carries a client
    /// certificate).
    fn targets_tls(
        &mut self,
        u: &file::Upstream,
        urls: Vec<(&EnvString, UpstreamUrl)>,
    ) -> Option<(Vec<UpstreamTarget>, Option<UpstreamTls>)> {
        let https = urls
            .iter()
            .any(|(_, url)| url.protocol == UpstreamProtocol::Https);
        let tls = if https {
            Some(self.upstream_tls(u)?)
        } else {
            self.no_tls_keys(u).then_some(None)?
        };
        let mut targets = Vec::with_capacity(urls.len());
        for (at, url) in urls {
            let server_name = match (&tls, url.protocol) {
                (Some(tls), UpstreamProtocol::Https) => {
                    Some(self.take(target_server_name(at, &url.authority, tls))?)
                }
                _ => None,
            };
            targets.push(UpstreamTarget {
                scheme: url.scheme,
                protocol: url.protocol,
                host_header: Upstream::host_value(&url.authority),
                authority: url.authority,
                address: None,
                server_name,
                label: url.label,
            });
        }
        Some((targets, tls))
    }

    fn no_tls_keys(&mut self, u: &file::Upstream) -> bool {
        let keys = [&u.ca, &u.sni, &u.client_cert, &u.client_key];
        let mut fine = true;
        for key in keys.into_iter().flatten() {
            self.issues.push(Issue::at(
                key,
                "applies only to an https:// upstream (this one does not use TLS)",
            ));
            fine = false;
        }
        fine
    }
}

fn outlier(u: &file::Upstream) -> Check<Outlier> {
    let consecutive_failures = match &u.consecutive_failures {
        Some(n) => bounded(n, OUTLIER_FAILURES_RANGE)?,
        None => file::DEFAULT_CONSECUTIVE_FAILURES,
    };
    let base_ejection_time = u
        .base_ejection_time
        .map_or(file::DEFAULT_BASE_EJECTION_TIME, |d| d.0);
    let max_ejection_time = match &u.max_ejection_time {
        Some(max) if max.get_ref().0 < base_ejection_time => {
            return Err(Issue::at(
                max,
                format!(
                    "must be at least `base_ejection_time` ({}s)",
                    base_ejection_time.as_secs_f64()
                ),
            ))
        }
        Some(max) => max.get_ref().0,
        None => file::DEFAULT_MAX_EJECTION_TIME.max(base_ejection_time),
    };
    Ok(Outlier {
        consecutive_failures,
        base_ejection_time,
        max_ejection_time,
    })
}

fn resolve_interval(u: &file::Upstream) -> Check<std::time::Duration> {
    match &u.resolve_interval {
        Some(at) if at.get_ref().0 < file::MIN_RESOLVE_INTERVAL => Err(Issue::at(
            at,
            format!(
                "must be at least {}s: names are not resolved more often than that",
                file::MIN_RESOLVE_INTERVAL.as_secs()
            ),
        )),
        Some(at) => Ok(at.get_ref().0),
        None => Ok(file::DEFAULT_RESOLVE_INTERVAL),
    }
}

fn health_check(spanned: &Spanned<file::HealthCheck>) -> Check<HealthCheck> {
    let h = spanned.get_ref();
    let path = h.path.get_ref();
    let parsed = PathAndQuery::try_from(path.as_str())
        .ok()
        .filter(|_| path.starts_with('/') && !path.contains('#'));
    let Some(path) = parsed else {
        return Err(Issue::at(
            &h.path,
            "must be a path starting with `/` (a query is allowed), such as \"/healthz\"",
        ));
    };
    let threshold = |v: &Option<Spanned<u64>>, default: u32| match v {
        Some(n) => bounded(n, HEALTH_THRESHOLD_RANGE),
        None => Ok(default),
    };
    Ok(HealthCheck {
        path,
        interval: h.interval.map_or(file::DEFAULT_HEALTH_INTERVAL, |d| d.0),
        timeout: h.timeout.map_or(file::DEFAULT_HEALTH_TIMEOUT, |d| d.0),
        healthy: threshold(&h.healthy, file::DEFAULT_HEALTH_HEALTHY)?,
        unhealthy: threshold(&h.unhealthy, file::DEFAULT_HEALTH_UNHEALTHY)?,
    })
}

/// What an upstream URL says.
struct UpstreamUrl {
    scheme: Scheme,
    protocol: UpstreamProtocol,
    authority: Authority,
    base_path: String,
    /// `scheme://authority` as written (`UpstreamTarget::label`).
    label: Arc<str>,
}

/// Split and check an upstream URL into scheme, protocol, authority and base path.
fn upstream_url(at: &EnvString, text: &str) -> Check<UpstreamUrl> {
    let fail = |what: &str| {
        Issue::at(
            at,
            format!(
                "{what}; expected an http://, h2c:// or https:// URL such as \
                 \"http://127.0.0.1:8081\""
            ),
        )
    };
    // `Uri` would silently drop a fragment; refuse it instead.
    if text.contains('#') {
        return Err(fail("must not contain a fragment (`#`)"));
    }
    let uri: Uri = text.parse().map_err(|_| fail("not a valid URL"))?;
    let (scheme, protocol) = match uri.scheme_str() {
        Some("http") => (Scheme::HTTP, UpstreamProtocol::Http1),
        // gRPC and other HTTP/2 services without TLS: requests still carry `:scheme http`.
        Some("h2c") => (Scheme::HTTP, UpstreamProtocol::H2c),
        Some("https") => (Scheme::HTTPS, UpstreamProtocol::Https),
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
    let label = Arc::from(format!(
        "{}://{authority}",
        uri.scheme_str().unwrap_or_default()
    ));
    Ok(UpstreamUrl {
        scheme,
        protocol,
        authority,
        base_path,
        label,
    })
}
