//! `[[upstream]]`: where routes forward to.

use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http::Uri;

use super::check::{Check, Issue};
use super::validator::Validator;
use crate::config::compiled::Upstream;
use crate::config::file::{self, EnvString};

impl Validator<'_> {
    pub(super) fn upstreams(&mut self, list: &[file::Upstream]) -> Vec<Option<Arc<Upstream>>> {
        let mut out = Vec::with_capacity(list.len());
        for (index, u) in list.iter().enumerate() {
            let url = self
                .expand(&u.url)
                .and_then(|text| upstream_url(&u.url, &text));
            out.push(self.take(url).map(|(scheme, authority, base_path)| {
                Arc::new(Upstream {
                    name: Arc::from(u.name.get_ref().as_str()),
                    scheme,
                    host_header: Upstream::host_value(&authority),
                    authority,
                    base_path,
                    connect_timeout: u
                        .connect_timeout
                        .map_or(file::DEFAULT_CONNECT_TIMEOUT, |d| d.0),
                    timeout: u.timeout.map_or(file::DEFAULT_UPSTREAM_TIMEOUT, |d| d.0),
                    index,
                })
            }));
        }
        out
    }
}

/// Split and check an upstream URL into scheme, authority and base path.
fn upstream_url(at: &EnvString, text: &str) -> Check<(Scheme, Authority, String)> {
    let fail = |what: &str| {
        Issue::at(
            at,
            format!(
                "{what}; expected an http:// or https:// URL such as \"http://127.0.0.1:8081\""
            ),
        )
    };
    // `Uri` would silently drop a fragment; refuse it instead.
    if text.contains('#') {
        return Err(fail("must not contain a fragment (`#`)"));
    }
    let uri: Uri = text.parse().map_err(|_| fail("not a valid URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
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
    Ok((scheme, authority, base_path))
}
