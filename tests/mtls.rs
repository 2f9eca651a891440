//! Client certificates through the real binary: a private CA made here, `[server.tls] client_ca`
//! with `client_auth` required or optional, and policies keyed by `tls:subject` and
//! `tls:fingerprint`.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::{config_with, Gateway, TestConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        der: cert.der().clone(),
        pem: cert.pem(),
        params,
        key,
    }
}

/// A certificate for `cn` (O=Acme) signed by `ca`: its DER, its key and its PEM.
fn leaf(ca: &Ca, cn: &str, server: bool) -> (CertificateDer<'static>, KeyPair, String) {
    let names = if server {
        vec!["localhost".to_owned()]
    } else {
        Vec::new()
    };
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Acme");
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.der().clone(), key, cert.pem())
}

/// A gateway with TLS from `ca` and client certificates verified against `ca`, `client_auth`
/// as given, and two routes: `/s` keyed by subject, `/f` keyed by fingerprint (2 per hour).
fn gateway(dir: &Path, ca: &Ca, client_auth: &str) -> Gateway {
    let (_, key, pem) = leaf(ca, "gateway", true);
    let files = [
        ("server.pem", pem),
        ("server.key", key.serialize_pem()),
        ("ca.pem", ca.pem.clone()),
    ];
    for (name, text) in &files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    Gateway::start(&config(dir, client_auth))
}

fn config(dir: &Path, client_auth: &str) -> TestConfig {
    let mut policies = String::new();
    for (name, key) in [("s", "tls:subject"), ("f", "tls:fingerprint")] {
        policies.push_str(&format!(
            r#"
[[policy]]
name = "{name}"
algorithm = "fixed_window"
limit = 2
window = "1h"
key = ["{key}"]

[[route]]
name = "{name}"
path_prefix = "/{name}"
respond = {{ status = 200 }}
policies = ["{name}"]
"#
        ));
    }
    config_with("http://127.0.0.1:9", &policies)
        .set(
            "server.tls.cert",
            dir.join("server.pem").display().to_string(),
        )
        .set(
            "server.tls.key",
            dir.join("server.key").display().to_string(),
        )
        .set(
            "server.tls.client_ca",
            dir.join("ca.pem").display().to_string(),
        )
        .set("server.tls.client_auth", client_auth)
}

/// A client trusting `ca` for the server, presenting `identity` if given.
fn client(
    gw_ca: &Ca,
    identity: Option<&(CertificateDer<'static>, KeyPair, String)>,
    addr: SocketAddr,
) -> reqwest::blocking::Client {
    common::install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(gw_ca.der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let tls = match identity {
        None => builder.with_no_client_auth(),
        Some((der, key, _)) => {
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            builder
                .with_client_auth_cert(vec![der.clone()], key)
                .unwrap()
        }
    };
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve("localhost", addr)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

fn status(client: &reqwest::blocking::Client, gw: &Gateway, path: &str) -> Result<u16, String> {
    client
        .get(format!("https://localhost:{}{path}", gw.addr.port()))
        .send()
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn required_client_certificates_key_by_subject_and_by_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("clients");
    let gw = gateway(dir.path(), &ca, "required");
    let alice = leaf(&ca, "alice", false);
    let alice_again = leaf(&ca, "alice", false);
    let bob = leaf(&ca, "bob", false);
    let (a, a2, b) = (
        client(&ca, Some(&alice), gw.addr),
        client(&ca, Some(&alice_again), gw.addr),
        client(&ca, Some(&bob), gw.addr),
    );
    // By subject: alice's two certificates are one identity, bob is another.
    assert_eq!(status(&a, &gw, "/s"), Ok(200));
    assert_eq!(status(&a2, &gw, "/s"), Ok(200));
    assert_eq!(status(&a, &gw, "/s"), Ok(429));
    assert_eq!(status(&b, &gw, "/s"), Ok(200));
    // By fingerprint: each certificate is its own identity.
    for _ in 0..2 {
        assert_eq!(status(&a, &gw, "/f"), Ok(200));
    }
    assert_eq!(status(&a, &gw, "/f"), Ok(429));
    assert_eq!(status(&a2, &gw, "/f"), Ok(200));

    // No certificate, or one from another CA: no connection at all.
    assert!(status(&client(&ca, None, gw.addr), &gw, "/s").is_err());
    let stranger = leaf(&self::ca("elsewhere"), "alice", false);
    assert!(status(&client(&ca, Some(&stranger), gw.addr), &gw, "/s").is_err());
}

#[test]
fn optional_client_certificates_fall_back_to_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("clients");
    let gw = gateway(dir.path(), &ca, "optional");
    let anonymous = client(&ca, None, gw.addr);
    assert_eq!(status(&anonymous, &gw, "/s"), Ok(200));
    assert_eq!(status(&anonymous, &gw, "/s"), Ok(200));
    assert_eq!(status(&anonymous, &gw, "/s"), Ok(429));
    // A certificate holder has its own counter, not the address's.
    let alice = client(&ca, Some(&leaf(&ca, "alice", false)), gw.addr);
    assert_eq!(status(&alice, &gw, "/s"), Ok(200));
    // A certificate the CA did not sign is still refused.
    let stranger = leaf(&self::ca("elsewhere"), "mallory", false);
    assert!(status(&client(&ca, Some(&stranger), gw.addr), &gw, "/s").is_err());

    // `rategate check` says how clients are verified.
    let path = dir.path().join("check.toml");
    std::fs::write(&path, config(dir.path(), "optional").to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rategate"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "client certificates optional by {}",
            dir.path().join("ca.pem").display()
        )),
        "{text}"
    );
    assert!(text.contains("key [tls:subject]"), "{text}");
}
