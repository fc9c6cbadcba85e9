//! Mutual TLS: a client without a certificate, or with one from another CA, is refused at
//! the handshake and never gets a request served; the cluster's own client is served.

use std::sync::Arc;
use std::time::Duration;

use rackpoint_client::certs::ClusterCa;
use rackpoint_client::local_cluster::LocalCluster;
use rackpoint_client::tls::ClientTls;
use rackpoint_proto::limits::ALPN;
use rackpoint_proto::wire::encode_frame;
use rackpoint_proto::Request;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::common::*;

/// A client config that trusts the cluster CA but presents no certificate.
fn anonymous_config(cluster: &LocalCluster) -> quinn::ClientConfig {
    let ca_pem = std::fs::read(cluster.cluster_file().with_file_name("ca.pem")).expect("ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(&ca_pem).expect("CA PEM")).expect("anchor");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC config");
    quinn::ClientConfig::new(Arc::new(quic))
}

/// A client config that trusts the cluster CA and presents a certificate of another CA.
fn stranger_config(cluster: &LocalCluster) -> quinn::ClientConfig {
    let ca_pem =
        std::fs::read_to_string(cluster.cluster_file().with_file_name("ca.pem")).expect("ca.pem");
    let other = ClusterCa::generate().expect("another CA");
    let identity = other
        .issue_client("stranger", &rackpoint_proto::access::Grant::admin(), 1)
        .expect("client cert");
    ClientTls::from_pem(&ca_pem, &identity.cert_pem, &identity.key_pem)
        .expect("identity")
        .quinn_client_config()
        .expect("config")
}

/// Connects with `config` and tries one `Hello`; returns why the connection ended. With
/// TLS 1.3 the client may finish its side of the handshake before the node has checked
/// the client certificate, so the refusal can arrive as the close of a connection that
/// looked open: either way no reply may come back.
async fn refusal(cluster: &LocalCluster, config: quinn::ClientConfig) -> quinn::ConnectionError {
    let raw = match RawClient::connect_with(cluster, ONE, config).await {
        Err(e) => return e,
        Ok(raw) => raw,
    };
    let frame = encode_frame(&Request::Hello, 0).expect("encodes");
    let attempt = async {
        let Ok((mut send, mut recv)) = raw.conn.open_bi().await else { return };
        if send.write_all(&frame).await.is_err() {
            return;
        }
        let _ = send.finish();
        if let Ok(reply) = recv.read_to_end(1 << 20).await {
            panic!("a refused client got a reply of {} bytes", reply.len());
        }
    };
    attempt.await;
    tokio::time::timeout(Duration::from_secs(20), raw.conn.closed()).await.expect("closed")
}

fn assert_refused_by_tls(reason: &quinn::ConnectionError) {
    // The node closes with a TLS alert carried as a QUIC crypto error (0x100..=0x1ff).
    let code = match reason {
        quinn::ConnectionError::ConnectionClosed(close) => u64::from(close.error_code),
        quinn::ConnectionError::TransportError(e) => u64::from(e.code),
        other => panic!("not a TLS refusal: {other}"),
    };
    assert!((0x100..=0x1ff).contains(&code), "not a TLS alert: {reason}");
}

#[test]
fn clients_without_a_cluster_certificate_are_refused_at_the_handshake() {
    let rt = runtime();
    let (_dir, cluster) = start(&options(1));
    rt.block_on(async {
        let anonymous = refusal(&cluster, anonymous_config(&cluster)).await;
        assert_refused_by_tls(&anonymous);
        let stranger = refusal(&cluster, stranger_config(&cluster)).await;
        assert_refused_by_tls(&stranger);

        let t = transport(&cluster);
        let s = stats(&t, ONE).await;
        assert_eq!(served_failed(&s, "Hello"), (0, 0), "no refused client was served");
        t.close().await;
    });
}
