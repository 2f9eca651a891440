//! An `https://` upstream's TLS client settings (`ca`, `sni`, `client_cert`, `client_key`): the
//! files are read and parsed here, at load, so a missing or broken one is a config error with its
//! file:line, never a failure on the first request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::uri::Authority;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};

use super::check::{Check, Issue};
use super::validator::Validator;
use crate::config::compiled::UpstreamTls;
use crate::config::file::{self, EnvString};

/// ALPN offer: HTTP/2 first, HTTP/1.1 for servers without it.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A client certificate read from its files.
struct ClientAuth<'u> {
    cert_file: PathBuf,
    /// Where a key that does not match the certificate is reported.
    key_at: &'u EnvString,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Validator<'_> {
    /// The TLS settings an upstream's `https://` targets share; each target's server name is
    /// `target_server_name`.
    pub(super) fn upstream_tls(&mut self, u: &file::Upstream) -> Option<UpstreamTls> {
        let mut digest = Sha256::new();
        let mut ca_file = None;
        let roots = match &u.ca {
            None => Some(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
            Some(ca) => {
                let roots =
                    self.pem_file(ca, "CA certificate", &mut digest)
                        .and_then(|(path, pem)| {
                            let roots = ca_roots(ca, &path, &pem)?;
                            ca_file = Some(path);
                            Ok(roots)
                        });
                self.take(roots)
            }
        };
        let sni = match &u.sni {
            Some(sni) => self
                .take(self.expand(sni).and_then(|name| sni_name(sni, name)))
                .map(Some),
            None => Some(None),
        };
        let client = self.client_auth(u, &mut digest);
        let (roots, sni, client) = (roots?, sni?, client?);
        if let Some(sni) = &sni {
            digest.update(b"sni\0");
            digest.update(sni.to_str().as_bytes());
        }

        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let mut client_cert_file = None;
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(auth) => {
                client_cert_file = Some(auth.cert_file);
                let built = builder
                    .with_client_auth_cert(auth.certs, auth.key)
                    .map_err(|e| {
                        Issue::at(
                            auth.key_at,
                            format!("client_cert and client_key do not go together: {e}"),
                        )
                    });
                self.take(built)?
            }
        };
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Some(UpstreamTls {
            config: Arc::new(config),
            fingerprint: digest.finalize().into(),
            ca_file,
            client_cert_file,
            sni,
        })
    }

    /// `client_cert` and `client_key`, both or neither.
    fn client_auth<'u>(
        &mut self,
        u: &'u file::Upstream,
        digest: &mut Sha256,
    ) -> Option<Option<ClientAuth<'u>>> {
        let (cert_at, key_at) = match (&u.client_cert, &u.client_key) {
            (None, None) => return Some(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(cert), None) => {
                self.issues.push(Issue::at(
                    cert,
                    "client_cert needs client_key, the PEM file of its private key",
                ));
                return None;
            }
            (None, Some(key)) => {
                self.issues.push(Issue::at(
                    key,
                    "client_key needs client_cert, the PEM file of its certificate chain",
                ));
                return None;
            }
        };
        let certs = self
            .pem_file(cert_at, "client certificate", digest)
            .and_then(|(path, pem)| Ok((certificates(cert_at, &path, &pem)?, path)));
        let key = self
            .pem_file(key_at, "client key", digest)
            .and_then(|(path, pem)| {
                PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                    Issue::at(
                        key_at,
                        format!("no usable PEM private key in {}: {e}", path.display()),
                    )
                })
            });
        let (certs, key) = (self.take(certs), self.take(key));
        let ((certs, cert_file), key) = (certs?, key?);
        Some(Some(ClientAuth {
            cert_file,
            key_at,
            certs,
            key,
        }))
    }

    /// Read a PEM file named by `at` (relative to the config file's directory), adding its bytes
    /// to `digest`.
    fn pem_file(
        &self,
        at: &EnvString,
        what: &str,
        digest: &mut Sha256,
    ) -> Check<(PathBuf, Vec<u8>)> {
        let name = self.non_empty(at)?;
        let path = match self.path.parent() {
            Some(dir) if Path::new(&name).is_relative() => dir.join(&name),
            _ => PathBuf::from(&name),
        };
        let bytes = std::fs::read(&path).map_err(|e| {
            Issue::at(
                at,
                format!("cannot read {what} file {}: {e}", path.display()),
            )
        })?;
        digest.update(what.as_bytes());
        digest.update((bytes.len() as u64).to_le_bytes());
        digest.update(&bytes);
        Ok((path, bytes))
    }
}

fn certificates(at: &EnvString, path: &Path, pem: &[u8]) -> Check<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Issue::at(at, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Issue::at(
            at,
            format!("no PEM certificate found in {}", path.display()),
        ));
    }
    Ok(certs)
}

fn ca_roots(at: &EnvString, path: &Path, pem: &[u8]) -> Check<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(at, path, pem)? {
        roots.add(cert).map_err(|e| {
            Issue::at(
                at,
                format!(
                    "{} holds a certificate that cannot be a trust anchor: {e}",
                    path.display()
                ),
            )
        })?;
    }
    Ok(roots)
}

fn sni_name(at: &EnvString, name: String) -> Check<ServerName<'static>> {
    ServerName::try_from(name).map_err(|_| {
        Issue::at(
            at,
            "not a valid TLS server name; expected a DNS name such as \"api.internal\" or an IP \
             address",
        )
    })
}

/// What an `https://` target (written at `at`) is verified as: the upstream's `sni`, else its own
/// host (`[::1]` in a URL is the address `::1`).
pub(super) fn target_server_name(
    at: &EnvString,
    authority: &Authority,
    tls: &UpstreamTls,
) -> Check<ServerName<'static>> {
    if let Some(sni) = &tls.sni {
        return Ok(sni.clone());
    }
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).map_err(|_| {
        Issue::at(
            at,
            format!("`{host}` is not a valid TLS server name; set `sni` to the name to verify"),
        )
    })
}
