//! `https://` upstreams through the real binary, against TLS upstreams run here with a private CA
//! made for the test (rcgen): the CA trusted through `ca` and refused without it, the server name
//! set by `sni`, a client certificate presented to an upstream that requires one, and ALPN
//! choosing HTTP/2 or HTTP/1.1 (the upstream reports what it negotiated and what it was spoken);
//! a pool of two such upstreams, its requests and its active health checks alike.

#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What a TLS upstream saw of one request.
#[derive(Debug, Clone)]
struct SeenTls {
    path: String,
    sni: Option<String>,
    alpn: Option<String>,
    version: String,
    client_cert: bool,
}

struct TlsUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenTls>>>,
    /// TCP connections accepted.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl TlsUpstream {
    /// Serves with `cert`/`key`, offering `alpn`; with `client_ca`, a client certificate
    /// issued by it is required.
    fn start(pki: &Pki, alpn: &[&[u8]], client_ca: bool) -> TlsUpstream {
        install_crypto();
        let certs = vec![CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap();
        let builder = rustls::ServerConfig::builder();
        let builder = if client_ca {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap())
                .unwrap();
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap(),
            )
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(certs, key).unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<SeenTls>>> = Arc::default();
        let seen2 = seen.clone();
        let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let accepted2 = accepted.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                accepted2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (acceptor, seen) = (acceptor.clone(), seen2.clone());
                tokio::spawn(async move {
                    // A refused handshake (the gateway distrusting us, no client
                    // certificate) just ends the connection.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let conn = tls.get_ref().1;
                    let facts = (
                        conn.server_name().map(str::to_owned),
                        conn.alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                        conn.peer_certificates().is_some_and(|c| !c.is_empty()),
                    );
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (seen, facts) = (seen.clone(), facts.clone());
                        async move {
                            seen.lock().unwrap().push(SeenTls {
                                path: req.uri().path().to_owned(),
                                sni: facts.0,
                                alpn: facts.1,
                                version: format!("{:?}", req.version()),
                                client_cert: facts.2,
                            });
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"secure",
                            ))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsUpstream {
            addr,
            seen,
            accepted,
            _runtime: runtime,
        }
    }

    fn seen(&self) -> Vec<SeenTls> {
        self.seen.lock().unwrap().clone()
    }
}

/// A private CA, a server certificate for `upstream.test` only (not for 127.0.0.1) and a client
/// certificate, all issued by it, as PEM; written to `dir` as files for the config.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let issue = |names: Vec<String>| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = issue(vec!["upstream.test".into()]);
        let (client_cert, client_key) = issue(vec!["gateway.test".into()]);
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("client.pem"), client_cert).unwrap();
        std::fs::write(dir.join("client.key"), client_key).unwrap();
        Pki {
            ca: ca.pem(),
            server_cert,
            server_key,
            dir: dir.to_owned(),
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// An `[[upstream]]` named `name` at `https://addr` with `extra` keys, and a route
/// `/name/` to it.
fn upstream_and_route(name: &str, addr: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "{name}"
url = "https://{addr}"
connect_timeout = "2s"
timeout = "5s"
{extra}

[[route]]
name = "{name}"
path_prefix = "/{name}/"
upstream = "{name}"
"#
    )
}

#[test]
fn private_ca_sni_client_certificates_and_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let h2 = TlsUpstream::start(&pki, &[b"h2", b"http/1.1"], false);
    let mtls = TlsUpstream::start(&pki, &[b"http/1.1"], true);
    let (ca, cert, key) = (
        pki.file("ca.pem"),
        pki.file("client.pem"),
        pki.file("client.key"),
    );
    let trusted = format!("ca = \"{ca}\"\nsni = \"upstream.test\"");
    let routes = [
        upstream_and_route("trusted", h2.addr, &trusted),
        // The web PKI roots do not know the private CA.
        upstream_and_route("untrusted", h2.addr, "sni = \"upstream.test\""),
        // Without `sni` the name verified is 127.0.0.1, which the certificate does not name.
        upstream_and_route("nosni", h2.addr, &format!("ca = \"{ca}\"")),
        upstream_and_route(
            "mtls",
            mtls.addr,
            &format!("{trusted}\nclient_cert = \"{cert}\"\nclient_key = \"{key}\""),
        ),
        upstream_and_route("nocert", mtls.addr, &trusted),
    ];
    let gw = Gateway::start(&TestConfig::parse(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
{}
"#,
        routes.concat()
    )));
    let http = client();
    let get = |path: &str| {
        let resp = http.get(gw.url(path)).send().unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    };

    assert_eq!(get("/trusted/x"), (200, "secure".to_owned()));
    let seen = h2.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].sni.as_deref(), Some("upstream.test"));
    assert_eq!(seen[0].alpn.as_deref(), Some("h2"));
    assert_eq!(seen[0].version, "HTTP/2.0");
    assert!(!seen[0].client_cert);

    assert_eq!(get("/untrusted/x").0, 502);
    assert_eq!(get("/nosni/x").0, 502);
    assert_eq!(
        h2.seen().len(),
        1,
        "no request got through an unverified connection"
    );

    assert_eq!(get("/mtls/x"), (200, "secure".to_owned()));
    let seen = mtls.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].client_cert);
    assert_eq!(seen[0].alpn.as_deref(), Some("http/1.1"));
    assert_eq!(seen[0].version, "HTTP/1.1");
    assert_eq!(get("/nocert/x").0, 502);
    assert_eq!(mtls.seen().len(), 1);

    // A second request (on the pooled HTTP/2 connection) arrives as HTTP/2 too.
    assert_eq!(get("/trusted/y").0, 200);
    assert_eq!(h2.seen()[1].version, "HTTP/2.0");
}

#[test]
fn a_pool_of_https_targets_uses_the_upstreams_tls_settings_for_requests_and_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // Both require the client certificate; one speaks HTTP/2, the other HTTP/1.1 only.
    let h2 = TlsUpstream::start(&pki, &[b"h2", b"http/1.1"], true);
    let h1 = TlsUpstream::start(&pki, &[b"http/1.1"], true);
    let (ca, cert, key) = (
        pki.file("ca.pem"),
        pki.file("client.pem"),
        pki.file("client.key"),
    );
    let gw = Gateway::start(&TestConfig::parse(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"

[[upstream]]
name = "pool"
targets = ["https://{}", "https://{}"]
ca = "{ca}"
sni = "upstream.test"
client_cert = "{cert}"
client_key = "{key}"
health_check = {{ path = "/health", interval = "100ms", timeout = "5s", healthy = 1, unhealthy = 3 }}

[[route]]
name = "pool"
path_prefix = "/"
upstream = "pool"
"#,
        h2.addr, h1.addr
    )));
    let checks = |up: &TlsUpstream| -> Vec<SeenTls> {
        up.seen()
            .into_iter()
            .filter(|s| s.path == "/health")
            .collect()
    };
    // Health checks trust the private CA and present the client certificate, as requests do:
    // with any other TLS settings the handshake fails and no check arrives.
    poll("a health check on each target", Duration::from_secs(10))
        .until(|| !checks(&h2).is_empty() && !checks(&h1).is_empty());
    for (up, alpn) in [(&h2, "h2"), (&h1, "http/1.1")] {
        let check = &checks(up)[0];
        assert_eq!(check.sni.as_deref(), Some("upstream.test"), "{check:?}");
        assert_eq!(check.alpn.as_deref(), Some(alpn), "{check:?}");
        assert!(check.client_cert, "{check:?}");
        let ejected = format!(
            "rategate_upstream_target_ejected{{target=\"https://{}\",upstream=\"pool\"}}",
            up.addr
        );
        assert_eq!(gw.metric(&ejected), Some(0.0));
    }

    let http = client();
    for _ in 0..4 {
        let resp = http.get(gw.url("/x")).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.text().unwrap(), "secure");
    }
    // Round robin: two requests each, each target spoken to in the protocol it negotiated.
    for (up, version) in [(&h2, "HTTP/2.0"), (&h1, "HTTP/1.1")] {
        let requests: Vec<SeenTls> = up.seen().into_iter().filter(|s| s.path == "/x").collect();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert!(
            requests
                .iter()
                .all(|r| r.version == version && r.client_cert),
            "{requests:?}"
        );
    }
}

/// A reload that changes the contents of an upstream's TLS file (here the CA file, same path)
/// opens new connections to it; one that changes nothing keeps the pooled one.
#[test]
fn a_reload_changing_a_tls_file_opens_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let up = TlsUpstream::start(&pki, &[b"h2", b"http/1.1"], false);
    let ca = pki.file("ca.pem");
    let trusted = format!("ca = \"{ca}\"\nsni = \"upstream.test\"");
    let gw = Gateway::start(&TestConfig::parse(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        upstream_and_route("trusted", up.addr, &trusted)
    )));
    let http = client();
    let get = |path: &str| http.get(gw.url(path)).send().unwrap().status().as_u16();
    let reloaded = |n: f64| {
        poll("the reload", std::time::Duration::from_secs(10))
            .until(|| gw.metric(r#"rategate_config_reloads_total{result="ok"}"#) == Some(n))
    };
    let accepted = || up.accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(get("/trusted/a"), 200);
    assert_eq!(accepted(), 1);
    gw.signal("HUP");
    reloaded(1.0);
    assert_eq!(get("/trusted/b"), 200);
    assert_eq!(
        accepted(),
        1,
        "nothing changed: the pooled connection is kept"
    );
    // The same CA with a comment line before it: other contents, same trust.
    let pem = std::fs::read_to_string(&ca).unwrap();
    std::fs::write(&ca, format!("# rotated\n{pem}")).unwrap();
    gw.signal("HUP");
    reloaded(2.0);
    assert_eq!(get("/trusted/c"), 200);
    assert_eq!(accepted(), 2, "the CA file changed: a new connection");
}
