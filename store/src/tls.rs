//! The node's TLS: its certificate and key, and client authentication required against the
//! cluster CA (a client with no certificate, or one from another CA, fails the handshake and
//! never reaches a handler). rustls with the ring provider, TLS 1.3 only (QUIC needs it),
//! ALPN `limits::ALPN`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use rackpoint_proto::limits::{ALPN, MAX_PEM_FILE_BYTES};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// Why the node's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {error}")]
    Read {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{what} {path} holds no valid PEM {expected}: {reason}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What was expected in it.
        expected: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// rustls refused the material (a CA it cannot use, a key that does not fit the cert).
    #[error("TLS setup failed: {0}")]
    Rustls(String),
}

/// Paths of the node's TLS material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// The node's certificate chain (PEM).
    pub cert: PathBuf,
    /// The node's private key (PEM).
    pub key: PathBuf,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::config::read_bounded(path, MAX_PEM_FILE_BYTES).map_err(|error| TlsError::Read {
        what,
        path: path.to_owned(),
        error,
    })
}

/// The CA certificates of `path` (PEM), DER: what a signed cluster map must verify against.
pub fn ca_certificates(path: &Path) -> Result<Vec<Vec<u8>>, TlsError> {
    Ok(read_certs("CA certificate", path)?.into_iter().map(|c| c.as_ref().to_vec()).collect())
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        expected: "certificate",
        reason,
    };
    let text = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE section".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read("node key", path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| TlsError::Pem {
        what: "node key",
        path: path.to_owned(),
        expected: "private key",
        reason: e.to_string(),
    })
}

fn rustls_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Rustls(e.to_string())
}

/// The QUIC server crypto for a node: its certificate and key, client certificates
/// required and checked against the CA, ALPN `rackpoint/1`.
pub fn server_crypto(files: &TlsFiles) -> Result<QuicServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in read_certs("CA certificate", &files.ca)? {
        roots.add(ca).map_err(rustls_error)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(rustls_error)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs("node certificate", &files.cert)?, read_key(&files.key)?)
        .map_err(rustls_error)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    QuicServerConfig::try_from(config).map_err(rustls_error)
}
