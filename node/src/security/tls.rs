//! [`Tls`]: the node's TLS, on both ports and toward its peers. The node
//! presents its certificate (signed by the cluster CA) to clients and, as
//! a client certificate, to the peers it connects to; it asks every
//! connecting side for a certificate and accepts those the CA signed
//! (peers), or none (clients, who authenticate with tokens). A peer
//! handshake over TLS must come from a connection whose certificate the
//! CA signed: mutual TLS between nodes.
//!
//! Plaintext sent to a TLS port gets a clear refusal instead of a hang:
//! the first byte of a TLS connection is a handshake record (0x16), so
//! anything else is answered in the protocol the sender speaks and the
//! connection closed ([`looks_like_tls`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use tally_client::tls::{load_certs, load_key, provider, roots, TlsClient};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The node's TLS: an acceptor for its ports, a client for its peers.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    /// Presents the node's certificate to peers and trusts the CA.
    pub peer_client: TlsClient,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// From the node's certificate chain and key and the cluster CA (PEM
    /// files).
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<Tls, String> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            peer_client: TlsClient::from_files(ca, Some((cert, key)))?,
        })
    }

    /// Runs the server side of the handshake within `timeout`. The flag
    /// says whether the other side presented a certificate the CA signed.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> std::io::Result<(TlsStream<TcpStream>, bool)> {
        let stream = tokio::time::timeout(timeout, self.acceptor.accept(tcp))
            .await
            .map_err(|_| std::io::Error::other("the TLS handshake took too long"))??;
        let certified = stream
            .get_ref()
            .1
            .peer_certificates()
            .is_some_and(|certs| !certs.is_empty());
        Ok((stream, certified))
    }
}

/// Whether the first byte waiting on `tcp` opens a TLS handshake (waits
/// up to `timeout` for it; `false` when nothing came).
pub async fn looks_like_tls(tcp: &TcpStream, timeout: Duration) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, tcp.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == 0x16
    )
}
