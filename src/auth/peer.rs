//! The identity of a client certificate the TLS handshake verified: its subject (RFC 4514
//! text, read by `x509-parser`) and the SHA-256 of its DER, for the `tls:subject` and
//! `tls:fingerprint` key components.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub(crate) subject: Box<str>,
    /// Lowercase hex SHA-256 of the certificate's DER.
    pub(crate) fingerprint: Box<str>,
}

impl PeerCert {
    /// `None` when the DER does not parse (rustls verified it, so only a certificate the
    /// parser cannot read gets here; the connection then has no certificate identity).
    pub(crate) fn from_der(der: &[u8]) -> Option<PeerCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject().to_string();
        let mut fingerprint = String::with_capacity(64);
        for b in Sha256::digest(der) {
            // Writing to a String cannot fail.
            let _ = write!(fingerprint, "{b:02x}");
        }
        Some(PeerCert {
            subject: subject.into(),
            fingerprint: fingerprint.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_and_fingerprint() {
        let mut params = rcgen::CertificateParams::new(vec!["client".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let peer = PeerCert::from_der(cert.der()).unwrap();
        assert!(peer.subject.contains("CN=alice"), "{}", peer.subject);
        assert!(peer.subject.contains("O=Acme"), "{}", peer.subject);
        assert_eq!(peer.fingerprint.len(), 64);
        assert!(PeerCert::from_der(b"not a certificate").is_none());
    }
}
