//! TLS for connections to nodes (rustls on the ring provider; TLS 1.2 and
//! 1.3). [`TlsClient`] trusts the certificates a cluster CA signed, and
//! may present a certificate of its own (nodes do, to each other: mutual
//! TLS). docs/security.md says how to make the files (`tally certs`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The crypto provider every TLS config here uses: ring's. rustls marks
/// it deprecated since 0.23.48 because it lacks post-quantum key
/// exchange; the alternative, aws-lc-rs, is a large C and assembly build
/// (ARCHITECTURE.md, "Dependencies and why"). Classical X25519 and P-256
/// key exchange with AES-GCM and ChaCha20-Poly1305 remain what most TLS
/// on the internet speaks.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates from a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// A private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A store of the CA certificates in `ca` (PEM).
pub fn roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a CA certificate: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// The client side of TLS to nodes.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

impl TlsClient {
    /// Trusts the CA certificates in `ca`; presents `identity` (a
    /// certificate chain and its key, PEM files) when given.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<TlsClient, String> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots(ca)?);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| format!("{}: {e}", cert.display()))?,
            None => builder.with_no_client_auth(),
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Runs the TLS handshake over `tcp` to the node at `addr`
    /// (`host:port`): its certificate must name `host` (an IP address
    /// or a DNS name) and chain to the trusted CA.
    pub async fn connect(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::other(format!("{host}: not a server name: {e}")))?;
        self.connector.connect(name, tcp).await
    }
}
