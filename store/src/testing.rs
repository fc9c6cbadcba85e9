//! Test support: a throwaway cluster CA with node and client certificates (rcgen), a node
//! config in a temp dir, and a minimal mutual-TLS QUIC client that speaks the wire format.

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;
use rackpoint_proto::access::{Grant, GRANT_EXTENSION_OID};
use rackpoint_proto::cluster::node_server_name;
use rackpoint_proto::limits::{ALPN, MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES};
use rackpoint_proto::wire::{decode_frame, encode_frame};
use rackpoint_proto::{NodeConfig, NodeId, Request, Response};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CustomExtension, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA and its key.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

/// A certificate signed by a [`TestCa`], with its key, as PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key generation");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().expect("key generation");
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("signing");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    pub fn node(&self, id: NodeId) -> Issued {
        self.issue(&node_server_name(id), ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with an admin grant.
    pub fn client(&self) -> Issued {
        self.client_with("client.rackpoint", &Grant::admin())
    }

    /// A client certificate named `name` carrying `grant`.
    pub fn client_with(&self, name: &str, grant: &Grant) -> Issued {
        let key = KeyPair::generate().expect("key generation");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.custom_extensions =
            vec![CustomExtension::from_oid_content(GRANT_EXTENSION_OID, grant.to_der())];
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("signing");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// Writes the CA and node certificate into `dir` and returns a node config using them (with
/// absolute paths, an OS-chosen port, and the scrubber off).
pub fn node_config(dir: &Path, ca: &TestCa, id: NodeId) -> NodeConfig {
    let node = ca.node(id);
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
    std::fs::write(dir.join("node.pem"), node.cert_pem).expect("write cert");
    std::fs::write(dir.join("node.key"), node.key_pem).expect("write key");
    NodeConfig {
        id,
        listen: "127.0.0.1:0".parse().expect("valid address"),
        rack: "rack-a".into(),
        data_dir: dir.join("data"),
        ca: dir.join("ca.pem"),
        cert: dir.join("node.pem"),
        key: dir.join("node.key"),
        capacity_bytes: 0,
        scrub_bytes_per_sec: 0,
        scrub_start_jitter_ms: 0,
        revoked: None,
        quota: Vec::new(),
        min_orphan_grace_ms: 0,
        wire_version_max: None,
        metrics_addr: None,
        log_format: None,
        cluster_map: None,
    }
}

/// A QUIC client trusting `ca`, presenting `identity` (or no certificate).
pub fn client_endpoint(ca: &TestCa, identity: Option<&Issued>) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).expect("CA is valid");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some(id) => {
            let certs = vec![CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).expect("cert")];
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("key");
            builder.with_client_auth_cert(certs, key).expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).expect("QUIC client crypto");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("valid address")).expect("bind");
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(crate::service::transport_config()));
    endpoint.set_default_client_config(client);
    endpoint
}

/// Sends raw request bytes on a new stream and returns the decoded reply and its payload.
pub async fn call_raw(
    conn: &quinn::Connection,
    bytes: &[u8],
) -> Result<(Response, Vec<u8>), Box<dyn std::error::Error + Send + Sync>> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(bytes).await?;
    send.finish()?;
    let limit = 8 + MAX_HEADER_BYTES as usize + MAX_PAYLOAD_BYTES as usize;
    let reply = recv.read_to_end(limit).await?;
    let (response, payload) = decode_frame::<Response>(&reply)?;
    Ok((response, payload.to_vec()))
}

/// Sends a request with its payload and returns the reply.
pub async fn call(
    conn: &quinn::Connection,
    request: &Request,
    payload: &[u8],
) -> Result<(Response, Vec<u8>), Box<dyn std::error::Error + Send + Sync>> {
    let mut bytes = encode_frame(request, payload.len() as u32)?;
    bytes.extend_from_slice(payload);
    call_raw(conn, &bytes).await
}
