//! `[[upstream]]`: where routes forward to, and how (`http://`, `h2c://`, `https://` with its TLS
//! settings, checked in `upstream_tls`).

use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http::Uri;

use super::check::{Check, Issue};
use super::validator::Validator;
use crate::config::compiled::{Upstream, UpstreamProtocol};
use crate::config::file::{self, EnvString};

impl Validator<'_> {
    pub(super) fn upstreams(&mut self, list: &[file::Upstream]) -> Vec<Option<Arc<Upstream>>> {
        let mut out = Vec::with_capacity(list.len());
        for (index, u) in list.iter().enumerate() {
            let url = self
                .expand(&u.url)
                .and_then(|text| upstream_url(&u.url, &text));
            let Some(url) = self.take(url) else {
                out.push(None);
                continue;
            };
            let tls = match url.protocol {
                UpstreamProtocol::Https => self.upstream_tls(u, &url.authority).map(Some),
                UpstreamProtocol::Http1 | UpstreamProtocol::H2c => {
                    self.no_tls_keys(u).then_some(None)
                }
            };
            out.push(tls.map(|tls| {
                Arc::new(Upstream {
                    name: Arc::from(u.name.get_ref().as_str()),
                    scheme: url.scheme,
                    protocol: url.protocol,
                    tls,
                    host_header: Upstream::host_value(&url.authority),
                    authority: url.authority,
                    base_path: url.base_path,
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

    /// TLS keys on an upstream that does not use TLS are a mistake, not something to ignore:
    /// the operator believes the connection is verified (or carries a client certificate).
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

/// What an upstream URL says.
struct UpstreamUrl {
    scheme: Scheme,
    protocol: UpstreamProtocol,
    authority: Authority,
    base_path: String,
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
    Ok(UpstreamUrl {
        scheme,
        protocol,
        authority,
        base_path,
    })
}
