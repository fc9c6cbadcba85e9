//! The client's TLS identity and QUIC settings: the cluster CA as the only trust anchor, the
//! client certificate it presents (mutual TLS), the quinn client configuration (ALPN
//! `rackpoint/1`, TLS 1.3 on ring, windows tuned for bulk transfer), and the client's UDP
//! endpoint with large socket buffers.
//!
//! A node is verified against the CA *and* its per-node name
//! ([`rackpoint_proto::cluster::node_server_name`]): one node cannot pose as another.

use std::fmt;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rackpoint_proto::cluster::ClientTlsPaths;
use rackpoint_proto::limits::{
    ALPN, CLIENT_UDP_RECV_BUFFER_BYTES, MAX_PEM_FILE_BYTES, QUIC_CONNECTION_WINDOW_BYTES,
    QUIC_IDLE_TIMEOUT_MS, QUIC_KEEP_ALIVE_MS, QUIC_MAX_UDP_PAYLOAD_BYTES, QUIC_STREAM_WINDOW_BYTES,
    UDP_SOCKET_BUFFER_BYTES,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// Why TLS material could not be loaded or a QUIC client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read (or is over `MAX_PEM_FILE_BYTES`).
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A PEM text holds no usable item of the expected kind.
    #[error("{source_name}: no valid {what} in it: {reason}")]
    Pem {
        /// The file (or a label for in-memory PEM).
        source_name: String,
        /// What was expected: "CA certificate", "certificate", "private key".
        what: &'static str,
        /// The parser's reason.
        reason: String,
    },
    /// rustls refused the material (a CA that is not a valid anchor, a key that does not
    /// match its certificate, ...).
    #[error("invalid TLS material: {0}")]
    Rustls(rustls::Error),
    /// quinn refused the rustls configuration.
    #[error("cannot use the TLS configuration for QUIC: {0}")]
    Quic(String),
    /// The client UDP socket could not be set up.
    #[error("cannot open the client UDP endpoint: {0}")]
    Socket(std::io::Error),
    /// The endpoint must be made inside a tokio runtime.
    #[error("the QUIC endpoint must be created inside a tokio runtime")]
    NoRuntime,
}

/// What a client presents and trusts: the cluster CA roots, its certificate chain and key.
pub struct ClientTls {
    roots: Arc<RootCertStore>,
    /// The CA certificates (DER) the roots were made of: what a signed cluster map must
    /// verify against.
    cas: Arc<Vec<Vec<u8>>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for ClientTls {
    fn clone(&self) -> Self {
        Self {
            roots: self.roots.clone(),
            cas: self.cas.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots.len())
            .field("chain", &self.chain.len())
            .field("key", &"<private>")
            .finish()
    }
}

impl ClientTls {
    /// Loads the CA, certificate and key files (paths already resolved by the caller).
    pub fn from_pem_files(paths: &ClientTlsPaths) -> Result<Self, TlsError> {
        let ca = read_pem_file(&paths.ca)?;
        let cert = read_pem_file(&paths.cert)?;
        let key = read_pem_file(&paths.key)?;
        Self::from_parts(
            (&paths.ca.display().to_string(), &ca),
            (&paths.cert.display().to_string(), &cert),
            (&paths.key.display().to_string(), &key),
        )
    }

    /// Builds the identity from PEM texts held in memory.
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        Self::from_parts(
            ("CA PEM", ca_pem.as_bytes()),
            ("certificate PEM", cert_pem.as_bytes()),
            ("key PEM", key_pem.as_bytes()),
        )
    }

    fn from_parts(
        ca: (&str, &[u8]),
        cert: (&str, &[u8]),
        key: (&str, &[u8]),
    ) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        let mut cas = Vec::new();
        for anchor in certificates(ca.0, ca.1, "CA certificate")? {
            cas.push(anchor.as_ref().to_vec());
            roots.add(anchor).map_err(TlsError::Rustls)?;
        }
        let chain = certificates(cert.0, cert.1, "certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key.1).map_err(|e| TlsError::Pem {
            source_name: key.0.to_owned(),
            what: "private key",
            reason: e.to_string(),
        })?;
        Ok(Self { roots: Arc::new(roots), cas: Arc::new(cas), chain, key })
    }

    /// The cluster CA certificates (DER) this identity trusts.
    pub fn ca_certificates(&self) -> Vec<&[u8]> {
        self.cas.iter().map(Vec::as_slice).collect()
    }

    /// The quinn client configuration: trusts only the cluster CA, presents the client
    /// certificate, negotiates ALPN `rackpoint/1` over TLS 1.3, and uses
    /// [`transport_config`]. Connect with the server name `node_server_name(id)`.
    pub fn quinn_client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Rustls)?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(TlsError::Rustls)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(Arc::new(transport_config()));
        Ok(config)
    }
}

/// QUIC transport settings of a client connection: stream and connection windows from
/// `limits` (so one stream can carry a whole shard without stalling on flow control),
/// keep-alive well under the idle timeout, and no streams accepted from the node (nodes
/// only answer).
pub fn transport_config() -> TransportConfig {
    let idle = IdleTimeout::try_from(Duration::from_millis(QUIC_IDLE_TIMEOUT_MS))
        .expect("QUIC_IDLE_TIMEOUT_MS is far below the QUIC varint limit");
    let mut config = TransportConfig::default();
    config
        .stream_receive_window(VarInt::from_u32(QUIC_STREAM_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(QUIC_CONNECTION_WINDOW_BYTES))
        .send_window(u64::from(QUIC_CONNECTION_WINDOW_BYTES))
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(Duration::from_millis(QUIC_KEEP_ALIVE_MS)))
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    // Path-MTU discovery up to large datagrams, as on the node: each direction discovers its
    // own MTU, so puts gain only if the client probes too (and the node accepts them: see
    // `endpoint_config`).
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(QUIC_MAX_UDP_PAYLOAD_BYTES);
    config.mtu_discovery_config(Some(mtu));
    config
}

/// Endpoint settings: datagrams up to `QUIC_MAX_UDP_PAYLOAD_BYTES` accepted (and so
/// advertised: quinn's default of 1,472 would keep the node's MTU discovery at 1,472 however
/// high its own bound).
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(QUIC_MAX_UDP_PAYLOAD_BYTES)
        .expect("QUIC_MAX_UDP_PAYLOAD_BYTES is within quinn's 1200..=65527");
    config
}

/// A client QUIC endpoint on an OS-chosen port with `UDP_SOCKET_BUFFER_BYTES` send and
/// receive buffers (the receive buffer grown towards `CLIENT_UDP_RECV_BUFFER_BYTES` where
/// the kernel allows, see [`client_endpoint_sized`]). `ipv6` binds a dual-stack `[::]` socket
/// (reaches IPv4 and IPv6 nodes); otherwise `0.0.0.0`. Must be called inside a tokio runtime.
pub fn client_endpoint(ipv6: bool) -> Result<quinn::Endpoint, TlsError> {
    client_endpoint_sized(ipv6).map(|(endpoint, _)| endpoint)
}

/// [`client_endpoint`], and the receive buffer the kernel gave its socket (bytes, as
/// `SO_RCVBUF` reads back: Linux reports twice what it was asked, half being bookkeeping).
/// Replies of every node land on this one socket at once, so it asks for
/// `CLIENT_UDP_RECV_BUFFER_BYTES`: `SO_RCVBUF` is capped at `net.core.rmem_max`, and past it
/// `SO_RCVBUFFORCE` works only with CAP_NET_ADMIN; without it the capped size stays.
pub fn client_endpoint_sized(ipv6: bool) -> Result<(quinn::Endpoint, usize), TlsError> {
    use socket2::{Domain, Protocol, Socket, Type};
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TlsError::NoRuntime);
    }
    let bind: SocketAddr =
        if ipv6 { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))
        .map_err(TlsError::Socket)?;
    if ipv6 {
        socket.set_only_v6(false).map_err(TlsError::Socket)?;
    }
    socket.set_recv_buffer_size(UDP_SOCKET_BUFFER_BYTES).map_err(TlsError::Socket)?;
    socket.set_send_buffer_size(UDP_SOCKET_BUFFER_BYTES).map_err(TlsError::Socket)?;
    let recv_buffer = grow_recv_buffer(&socket);
    socket.set_nonblocking(true).map_err(TlsError::Socket)?;
    socket.bind(&bind.into()).map_err(TlsError::Socket)?;
    let endpoint =
        quinn::Endpoint::new(endpoint_config(), None, socket.into(), Arc::new(quinn::TokioRuntime))
            .map_err(TlsError::Socket)?;
    Ok((endpoint, recv_buffer))
}

/// Asks for a `CLIENT_UDP_RECV_BUFFER_BYTES` receive buffer (the kernel doubles what it is
/// asked, so half is asked), forcing past `rmem_max` when allowed; returns what it got.
/// Failures keep the buffer already set: a smaller buffer costs drops, not correctness.
fn grow_recv_buffer(socket: &socket2::Socket) -> usize {
    let ask = CLIENT_UDP_RECV_BUFFER_BYTES / 2;
    let got = |s: &socket2::Socket| s.recv_buffer_size().unwrap_or(0);
    if got(socket) < CLIENT_UDP_RECV_BUFFER_BYTES {
        let _ = socket.set_recv_buffer_size(ask); // capped at rmem_max
    }
    if got(socket) < CLIENT_UDP_RECV_BUFFER_BYTES {
        let forced =
            nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::RcvBufForce, &ask);
        if let Err(e) = forced {
            tracing::debug!(error = %e, "SO_RCVBUFFORCE refused; keeping the capped buffer");
        }
    }
    let bytes = got(socket);
    tracing::debug!(bytes, "client UDP receive buffer");
    bytes
}

fn certificates(
    source_name: &str,
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error =
        |reason: String| TlsError::Pem { source_name: source_name.to_owned(), what, reason };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE section".into()));
    }
    Ok(certs)
}

fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    read_file_bounded(path, MAX_PEM_FILE_BYTES)
        .map_err(|error| TlsError::Read { path: path.to_owned(), error })
}

/// Reads a whole file, refusing one over `max` bytes (without reading past the limit).
pub(crate) fn read_file_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is over the limit of {max} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::ClusterCa;

    fn identity() -> (ClusterCa, ClientTls) {
        let ca = ClusterCa::generate().expect("CA");
        let client =
            ca.issue_client("test", &rackpoint_proto::access::Grant::admin(), 1).expect("client");
        let tls = ClientTls::from_pem(ca.cert_pem(), &client.cert_pem, &client.key_pem)
            .expect("identity");
        (ca, tls)
    }

    #[test]
    fn a_valid_identity_builds_a_quinn_config() {
        let (_, tls) = identity();
        tls.quinn_client_config().expect("config");
        assert!(format!("{tls:?}").contains("<private>"));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let ca = ClusterCa::generate().expect("CA");
        let a = ca.issue_client("a", &rackpoint_proto::access::Grant::admin(), 1).expect("a");
        let b = ca.issue_client("b", &rackpoint_proto::access::Grant::admin(), 1).expect("b");
        let tls = ClientTls::from_pem(ca.cert_pem(), &a.cert_pem, &b.key_pem).expect("parses");
        assert!(matches!(tls.quinn_client_config(), Err(TlsError::Rustls(_))));
    }

    #[test]
    fn missing_or_wrong_pem_sections_are_named() {
        let ca = ClusterCa::generate().expect("CA");
        let c = ca.issue_client("c", &rackpoint_proto::access::Grant::admin(), 1).expect("c");
        let err = ClientTls::from_pem("", &c.cert_pem, &c.key_pem).expect_err("no CA");
        assert!(matches!(err, TlsError::Pem { what: "CA certificate", .. }), "{err}");
        let err = ClientTls::from_pem(ca.cert_pem(), &c.key_pem, &c.key_pem).expect_err("no cert");
        assert!(matches!(err, TlsError::Pem { what: "certificate", .. }), "{err}");
        let err = ClientTls::from_pem(ca.cert_pem(), &c.cert_pem, &c.cert_pem).expect_err("no key");
        assert!(matches!(err, TlsError::Pem { what: "private key", .. }), "{err}");
    }

    #[test]
    fn files_are_read_with_a_bound_and_errors_name_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; MAX_PEM_FILE_BYTES as usize + 1]).expect("write");
        let paths = ClientTlsPaths { ca: big.clone(), cert: big.clone(), key: big.clone() };
        let err = ClientTls::from_pem_files(&paths).expect_err("too big");
        assert!(err.to_string().contains("big.pem"), "{err}");
        let missing = dir.path().join("missing.pem");
        let paths = ClientTlsPaths { ca: missing.clone(), cert: missing.clone(), key: missing };
        let err = ClientTls::from_pem_files(&paths).expect_err("missing");
        assert!(matches!(err, TlsError::Read { .. }) && err.to_string().contains("missing.pem"));
    }

    #[test]
    fn an_endpoint_needs_a_runtime_and_gets_one_inside() {
        assert!(matches!(client_endpoint(false), Err(TlsError::NoRuntime)));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let endpoint = client_endpoint(false).expect("endpoint");
            assert_ne!(endpoint.local_addr().expect("bound").port(), 0);
        });
    }
}
