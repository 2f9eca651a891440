//! `[server]` (listening, client identity, timeouts, TLS, path rules), `[admin]` and `[access]`:
//! who may connect where. Socket addresses and CIDR lists are checked here for all three.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use toml::Spanned;

use super::check::{
    bounded, Check, Issue, IPV6_PREFIX_RANGE, MAX_CONNECTIONS_RANGE, MAX_HEADER_BYTES_RANGE,
};
use super::validator::Validator;
use crate::config::compiled::{Access, Admin, Server, TlsFiles};
use crate::config::file::{self, EnvString};
use crate::net::CidrSet;
use crate::uri_path::PathRules;

impl Validator<'_> {
    fn socket_addr(
        &mut self,
        value: Option<&EnvString>,
        default: SocketAddr,
    ) -> Option<SocketAddr> {
        let check = value.map_or(Ok(default), |v| {
            let text = self.expand(v)?;
            text.parse().map_err(|_| {
                Issue::at(
                    v,
                    format!(
                        "`{text}` is not a socket address; expected IP:PORT such as \
                         \"0.0.0.0:8080\" or \"[::]:8080\""
                    ),
                )
            })
        });
        self.take(check)
    }

    fn cidrs(&mut self, list: Option<&Vec<Spanned<String>>>) -> Option<CidrSet> {
        let nets = self.each(list.map_or(&[][..], Vec::as_slice), cidr)?;
        Some(CidrSet::new(nets))
    }

    pub(super) fn server(&mut self, s: &file::Server) -> Option<Server> {
        let listen = self.socket_addr(s.listen.as_ref(), file::DEFAULT_SERVER_LISTEN);
        let trusted_proxies = self.cidrs(s.trusted_proxies.as_ref());
        let ipv6_prefix = self.take(
            s.ipv6_prefix
                .as_ref()
                .map_or(Ok(file::DEFAULT_IPV6_PREFIX), |v| {
                    bounded(v, IPV6_PREFIX_RANGE)
                }),
        );
        let max_header_bytes = self.take(
            s.max_header_bytes
                .as_ref()
                .map_or(Ok(file::DEFAULT_MAX_HEADER_BYTES), |v| {
                    bounded(v, MAX_HEADER_BYTES_RANGE)
                }),
        );
        let max_connections = self.take(
            s.max_connections
                .as_ref()
                .map(|v| bounded(v, MAX_CONNECTIONS_RANGE))
                .transpose(),
        );
        let tls = match &s.tls {
            None => Some(None),
            Some(tls) => self.tls(tls).map(Some),
        };
        Some(Server {
            listen: listen?,
            trusted_proxies: trusted_proxies?,
            ipv6_prefix: ipv6_prefix?,
            header_read_timeout: s
                .header_read_timeout
                .map_or(file::DEFAULT_HEADER_READ_TIMEOUT, |d| d.0),
            max_header_bytes: max_header_bytes?,
            shutdown_grace: s
                .shutdown_grace
                .map_or(file::DEFAULT_SHUTDOWN_GRACE, |d| d.0),
            idle_timeout: s.idle_timeout.map_or(file::DEFAULT_IDLE_TIMEOUT, |d| d.0),
            send_timeout: s.send_timeout.map_or(file::DEFAULT_SEND_TIMEOUT, |d| d.0),
            tunnel_idle_timeout: s
                .tunnel_idle_timeout
                .map_or(file::DEFAULT_TUNNEL_IDLE_TIMEOUT, |d| d.0),
            max_connections: max_connections?,
            access_log: s.access_log.unwrap_or(file::DEFAULT_ACCESS_LOG),
            forward_client_ip_headers: s
                .forward_client_ip_headers
                .unwrap_or(file::DEFAULT_FORWARD_CLIENT_IP_HEADERS),
            tls: tls?,
            path_rules: path_rules(s),
        })
    }

    fn tls(&mut self, tls: &file::Tls) -> Option<TlsFiles> {
        let cert = self.take(self.non_empty(&tls.cert));
        let key = self.take(self.non_empty(&tls.key));
        let client_ca = match &tls.client_ca {
            None => Some(None),
            Some(ca) => self
                .take(self.non_empty(ca))
                .map(|p| Some(PathBuf::from(p))),
        };
        if let (None, Some(client_auth)) = (&tls.client_ca, &tls.client_auth) {
            self.issues.push(Issue::at(
                client_auth,
                "`client_auth` needs `client_ca` (the CA client certificates are verified against)",
            ));
            return None;
        }
        Some(TlsFiles {
            cert: PathBuf::from(cert?),
            key: PathBuf::from(key?),
            client_ca: client_ca?,
            client_auth: tls
                .client_auth
                .as_ref()
                .map_or(file::DEFAULT_CLIENT_AUTH, |c| *c.get_ref()),
        })
    }

    pub(super) fn admin(&mut self, a: &file::Admin) -> Option<Admin> {
        let listen = self.socket_addr(a.listen.as_ref(), file::DEFAULT_ADMIN_LISTEN);
        let token = match &a.token {
            None => Some(None),
            Some(token) => self.take(self.non_empty(token)).map(Some),
        };
        let (listen, token) = (listen?, token?);
        if token.is_none() && !listen.ip().to_canonical().is_loopback() {
            // The default listen address is loopback, so `listen` was written and has a span.
            self.issues.push(Issue {
                span: a.listen.as_ref().map(Spanned::span),
                key: Some("admin.token".into()),
                external: None,
                message: format!(
                    "required because admin.listen ({listen}) is not a loopback address; set \
                     token = \"${{RATEGATE_ADMIN_TOKEN}}\" or listen on 127.0.0.1"
                ),
            });
            return None;
        }
        Some(Admin { listen, token })
    }

    pub(super) fn access(&mut self, a: &file::Access) -> Option<Access> {
        let allow = self.cidrs(a.allow.as_ref());
        let deny = self.cidrs(a.deny.as_ref());
        Some(Access {
            allow: allow?,
            deny: deny?,
        })
    }
}

fn cidr(item: &Spanned<String>) -> Check<IpNet> {
    let text = item.get_ref();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    // A bare address is a single-host range; mapped IPv6 is unmapped like client addresses are.
    text.parse::<IpAddr>()
        .map(|ip| IpNet::from(ip.to_canonical()))
        .map_err(|_| {
            Issue::at(
                item,
                format!(
                    "`{text}` is not a CIDR range or IP address; expected e.g. \"10.0.0.0/8\", \
                     \"192.0.2.1\" or \"2001:db8::/32\""
                ),
            )
        })
}

pub(super) fn path_rules(s: &file::Server) -> PathRules {
    PathRules {
        semicolons: s.path_semicolons.unwrap_or(file::DEFAULT_PATH_SEMICOLONS),
        escaped_slashes: s.escaped_slashes.unwrap_or(file::DEFAULT_ESCAPED_SLASHES),
    }
}
