//! The certificate chain of a TLS 1.3-only server (encrypted on the wire, so rustls completes
//! the handshake for us and records what it was shown), and verification of a chain as a
//! `verify-full` client does it (webpki: chain to the CA, name, dates, serverAuth).

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A verifier that only records the chain it is shown. The probe uses it to read the chain of
/// a server whatever its certificate's state (verification is done separately, and reported);
/// the session is closed right after the handshake and carries no data.
#[derive(Debug)]
pub(crate) struct ChainRecorder {
    pub(crate) chain: Mutex<Option<Vec<Vec<u8>>>>,
    provider: Arc<CryptoProvider>,
}

impl ChainRecorder {
    pub(crate) fn new(provider: Arc<CryptoProvider>) -> Self {
        Self {
            chain: Mutex::new(None),
            provider,
        }
    }
}

impl ServerCertVerifier for ChainRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.to_vec()];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        if let Ok(mut slot) = self.chain.lock() {
            *slot = Some(chain);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls server name for `name` (IP address or DNS name).
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(name.to_string()).map_err(|e| format!("invalid server name {name:?}: {e}"))
}

/// Verify `chain` (leaf first) for `name` against the CA certificates in `ca` (PEM or DER),
/// as rustls/webpki would at `now`. `Err` carries the reason a verify-full client refuses it.
pub fn verify_chain(chain: &[Vec<u8>], ca: &[u8], name: &str) -> Result<(), String> {
    let cas = crate::inspect::read_certificates(ca).map_err(|f| format!("CA: {}", f.message))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in cas {
        roots
            .add(CertificateDer::from(c))
            .map_err(|e| format!("CA certificate unusable as a trust anchor: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
    let Some((leaf, rest)) = chain.split_first() else {
        return Err("the server presented no certificate".into());
    };
    let leaf = CertificateDer::from(leaf.clone());
    let intermediates: Vec<CertificateDer<'static>> =
        rest.iter().cloned().map(CertificateDer::from).collect();
    verifier
        .verify_server_cert(
            &leaf,
            &intermediates,
            &server_name(name)?,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::{Authority, ServerCertRequest};

    fn der_of(pem: &str) -> Vec<u8> {
        crate::inspect::read_certificates(pem.as_bytes())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn verify_like_a_client() {
        let ca = Authority::generate("t", 30).unwrap();
        let same_name = Authority::generate("t", 30).unwrap();
        let other = Authority::generate("another CA", 30).unwrap();
        let server = ca.issue_server(&ServerCertRequest::localhost()).unwrap();
        let chain = vec![der_of(&server.cert_pem)];
        verify_chain(&chain, ca.cert_pem().as_bytes(), "localhost").unwrap();
        verify_chain(&chain, ca.cert_pem().as_bytes(), "127.0.0.1").unwrap();
        let e = verify_chain(&chain, ca.cert_pem().as_bytes(), "db.example.com").unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
        let e = verify_chain(&chain, other.cert_pem().as_bytes(), "localhost").unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
        let e = verify_chain(&chain, same_name.cert_pem().as_bytes(), "localhost").unwrap_err();
        assert!(e.contains("BadSignature"), "{e}");
        let e = verify_chain(&chain, b"garbage", "localhost").unwrap_err();
        assert!(e.starts_with("CA:"), "{e}");
    }
}
