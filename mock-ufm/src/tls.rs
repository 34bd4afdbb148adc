//! Certificates and rustls configuration: a throw-away CA that signs server and client
//! certificates ([`TestPki`]), and the server config (aws-lc-rs, optional client certificates).
//!
//! The crypto provider is passed explicitly, so nothing here depends on (or panics over) a
//! process-wide default provider.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Why certificates could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("reading PEM {what}: {source}")]
    Pem { what: String, source: rustls::pki_types::pem::Error },
    #[error("{0} contains no certificate")]
    NoCertificate(String),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Certificate followed by key: the form `reqwest::Identity::from_pem` takes.
    pub fn identity_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

/// A throw-away certificate authority for tests: it signs server certificates (any SANs) and
/// client certificates, and hands out its own certificate for clients or servers to trust.
#[derive(Debug)]
pub struct TestPki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    /// A new CA whose subject common name is `name`.
    pub fn new(name: &str) -> Result<TestPki, TlsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "mock-ufm");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(TestPki { ca_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA certificate (PEM) to trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn issue(&self, common_name: &str, sans: &[String], usage: ExtendedKeyUsagePurpose) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::new(sans.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A server certificate valid for `sans` (DNS names or IP addresses).
    pub fn issue_server(&self, sans: &[String]) -> Result<Issued, TlsError> {
        let cn = sans.first().map_or("mock-ufm", String::as_str);
        self.issue(cn, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with subject `common_name` (also its DNS SAN).
    pub fn issue_client(&self, common_name: &str) -> Result<Issued, TlsError> {
        self.issue(common_name, &[common_name.to_string()], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Who may present client certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// PEM of the CA that signs acceptable client certificates.
    pub ca_pem: String,
    /// Refuse the TLS handshake without a client certificate (otherwise it is optional and
    /// Basic auth still works).
    pub required: bool,
}

fn certs_from_pem(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what: what.to_string(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what.to_string()));
    }
    Ok(certs)
}

/// The aws-lc-rs provider, used explicitly everywhere.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A rustls server config for HTTP/1.1 with the given chain and key (PEM).
pub fn server_config(
    cert_chain_pem: &str,
    key_pem: &str,
    client_auth: Option<&ClientAuth>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let chain = certs_from_pem("server certificate", cert_chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|source| TlsError::Pem { what: "server key".to_string(), source })?;
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let mut roots = RootCertStore::empty();
            for c in certs_from_pem("client CA", &auth.ca_pem)? {
                roots.add(c)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth.required { verifier.build()? } else { verifier.allow_unauthenticated().build()? };
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes `contents` to `dir/name`, creating `dir`.
pub fn write_pem(dir: &Path, name: &str, contents: &str) -> Result<(), TlsError> {
    let path = dir.join(name);
    let err = |source| TlsError::Write { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::write(&path, contents).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_load_into_a_server_config() {
        let pki = TestPki::new("test CA").unwrap();
        let server = pki.issue_server(&["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        assert!(server.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(server.key_pem.contains("PRIVATE KEY"));
        let clients = TestPki::new("client CA").unwrap();
        let auth = ClientAuth { ca_pem: clients.ca_pem().to_string(), required: false };
        server_config(&server.cert_pem, &server.key_pem, Some(&auth)).unwrap();
        let id = clients.issue_client("fabric-sync").unwrap().identity_pem();
        assert_eq!(id.matches("-----BEGIN").count(), 2);
    }

    #[test]
    fn garbage_pem_is_an_error_not_a_panic() {
        let err = server_config("nope", "nope", None).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate(_)), "{err}");
    }
}
