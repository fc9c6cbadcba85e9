//! Transport tests against a small in-test QUIC server with mutual TLS. The server plays the
//! node's side of the wire, including replies a correct node never sends, so that the
//! client's handling of each one is checked.

use super::*;
use crate::certs::ClusterCa;
use quinn::crypto::rustls::QuicServerConfig;
use rackpoint_proto::cluster::{ClientTlsPaths, CodeParams, NodeInfo};
use rackpoint_proto::limits::ALPN;
use rackpoint_proto::wire::{decode_header, encode_frame, encode_frame_at, header_fields_bytes};
use rackpoint_proto::Digest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the test server does with one request frame.
enum Action {
    /// Send these bytes and finish the stream.
    Reply(Vec<u8>),
    /// Read on and never answer (the client must time out).
    Hang,
    /// Close the whole connection.
    CloseConnection,
}

type Behaviour = Arc<dyn Fn(&[u8]) -> Action + Send + Sync>;

struct TestNode {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    _endpoint: quinn::Endpoint,
}

fn server_config(ca: &ClusterCa, cert_id: NodeId) -> quinn::ServerConfig {
    let node = ca.issue_node(cert_id, [127, 0, 0, 1].into()).expect("node cert");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("CA"))
        .expect("anchor");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(node.cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes()).expect("key"),
        )
        .expect("server config");
    tls.alpn_protocols = vec![ALPN.to_vec()];
    quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).expect("quic")))
}

fn start_node(ca: &ClusterCa, cert_id: NodeId, behaviour: Behaviour) -> TestNode {
    let endpoint = quinn::Endpoint::server(server_config(ca, cert_id), ([127, 0, 0, 1], 0).into())
        .expect("server endpoint");
    let addr = endpoint.local_addr().expect("bound");
    let connections = Arc::new(AtomicUsize::new(0));
    let (accepting, count) = (endpoint.clone(), connections.clone());
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            let Ok(conn) = incoming.await else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(conn, behaviour.clone()));
        }
    });
    TestNode { addr, connections, _endpoint: endpoint }
}

async fn serve(conn: quinn::Connection, behaviour: Behaviour) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let behaviour = behaviour.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            let Ok(request) = recv.read_to_end(1 << 20).await else { return };
            match behaviour(&request) {
                Action::Reply(mut bytes) => {
                    echo_request_id(&request, &mut bytes);
                    let _ = send.write_all(&bytes).await;
                    let _ = send.finish();
                    let _ = send.stopped().await;
                }
                Action::Hang => {
                    let _ = send.stopped().await;
                }
                Action::CloseConnection => conn.close(VarInt::from_u32(9), b"test close"),
            }
        });
    }
}

/// As a node does: a reply of wire version 3 on that names no request id (id 0) gets the
/// request's (one that names another is sent as it is).
fn echo_request_id(request: &[u8], reply: &mut [u8]) {
    let (Some(&asked), Some(&answered)) = (request.get(PREFIX_BYTES), reply.get(PREFIX_BYTES))
    else {
        return;
    };
    let id = PREFIX_BYTES + 1..PREFIX_BYTES + header_fields_bytes(3);
    if asked >= 3
        && answered >= 3
        && reply.get(id.clone()).is_some_and(|b| b.iter().all(|b| *b == 0))
    {
        if let Some(from) = request.get(id.clone()) {
            let from = from.to_vec();
            reply[id].copy_from_slice(&from);
        }
    }
}

fn frame(response: &Response, payload: &[u8]) -> Vec<u8> {
    let mut bytes = encode_frame(response, payload.len() as u32).expect("encodes");
    bytes.extend_from_slice(payload);
    bytes
}

fn hello(id: u32) -> Vec<u8> {
    let hello = Response::Hello {
        node_id: NodeId(id),
        rack: "rack-0".into(),
        capacity_bytes: 0,
        used_bytes: 0,
        map_epoch: 0,
    };
    frame(&hello, &[])
}

fn client(ca: &ClusterCa, nodes: &[(NodeId, SocketAddr)]) -> Transport {
    let identity =
        ca.issue_client("test", &rackpoint_proto::access::Grant::admin(), 1).expect("client cert");
    let tls = ClientTls::from_pem(ca.cert_pem(), &identity.cert_pem, &identity.key_pem)
        .expect("identity");
    let map = ClusterMap {
        epoch: 0,
        code: CodeParams::new(2, 1, 4096).expect("code"),
        tls: ClientTlsPaths { ca: "ca.pem".into(), cert: "c.pem".into(), key: "c.key".into() },
        nodes: nodes
            .iter()
            .map(|&(id, addr)| NodeInfo { id, addr, rack: "rack-0".into(), decommissioned: false })
            .collect(),
    };
    Transport::new(&map, &tls).expect("transport")
}

fn ok_hello() -> Behaviour {
    Arc::new(|_| Action::Reply(hello(1)))
}

#[tokio::test]
async fn a_reply_and_its_payload_come_back() {
    let ca = ClusterCa::generate().expect("CA");
    let node = start_node(
        &ca,
        NodeId(1),
        Arc::new(|request: &[u8]| {
            let header_len = u32::from_be_bytes(request[..4].try_into().expect("4 bytes"));
            let payload = &request[PREFIX_BYTES + header_len as usize..];
            let echoed: Vec<u8> = payload.iter().rev().copied().collect();
            Action::Reply(frame(&Response::Shard { hash: Digest([7; 32]) }, &echoed))
        }),
    );
    let transport = client(&ca, &[(NodeId(1), node.addr)]);
    let req = Request::PutShard { key: shard_key(), hash: Digest::default() };
    let reply = transport.call(NodeId(1), &req, Bytes::from_static(b"abc")).await.expect("call");
    assert_eq!(reply.response, Response::Shard { hash: Digest([7; 32]) });
    assert_eq!(reply.payload, b"cba");
    transport.close().await;
}

fn shard_key() -> rackpoint_proto::ShardKey {
    use rackpoint_proto::{JobName, ObjectName, Rank, ShardIndex, Step, StripeIndex};
    rackpoint_proto::ShardKey {
        job: JobName::new("job").expect("valid"),
        step: Step(1),
        rank: Rank(0),
        object: ObjectName::new("obj").expect("valid"),
        stripe: StripeIndex(0),
        index: ShardIndex(0),
    }
}

#[tokio::test]
async fn an_error_reply_is_a_remote_error_not_a_node_failure() {
    let ca = ClusterCa::generate().expect("CA");
    let node = start_node(
        &ca,
        NodeId(1),
        Arc::new(|_| Action::Reply(frame(&Response::error(ErrorCode::NotFound, "no such"), &[]))),
    );
    let transport = client(&ca, &[(NodeId(1), node.addr)]);
    let err = transport.call(NodeId(1), &Request::Stats, Bytes::new()).await.expect_err("remote");
    assert!(
        matches!(&err, TransportError::Remote { code: ErrorCode::NotFound, message, .. } if message == "no such"),
        "{err}"
    );
    assert!(!err.is_node_failure());
    assert_eq!(err.node(), Some(NodeId(1)));
}

#[tokio::test]
async fn concurrent_first_calls_share_one_connection() {
    let ca = ClusterCa::generate().expect("CA");
    let node = start_node(&ca, NodeId(1), ok_hello());
    let transport = Arc::new(client(&ca, &[(NodeId(1), node.addr)]));
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let t = transport.clone();
            tokio::spawn(async move { t.call(NodeId(1), &Request::Hello, Bytes::new()).await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("call");
    }
    assert_eq!(node.connections.load(Ordering::SeqCst), 1);
    transport.forget(NodeId(1));
    transport.call(NodeId(1), &Request::Hello, Bytes::new()).await.expect("call");
    assert_eq!(node.connections.load(Ordering::SeqCst), 2, "forget opens a new connection");
}

#[tokio::test]
async fn a_closed_connection_is_replaced_on_the_next_call() {
    let ca = ClusterCa::generate().expect("CA");
    let node = start_node(
        &ca,
        NodeId(1),
        Arc::new(|request: &[u8]| {
            let header = &request[PREFIX_BYTES..];
            if decode_header::<Request>(header, 0) == Ok(Request::Stats) {
                Action::CloseConnection
            } else {
                Action::Reply(hello(1))
            }
        }),
    );
    let transport = client(&ca, &[(NodeId(1), node.addr)]);
    let err = transport.call(NodeId(1), &Request::Stats, Bytes::new()).await.expect_err("lost");
    assert!(matches!(err, TransportError::ConnectionLost { .. }), "{err}");
    assert!(err.is_node_failure());
    transport.call(NodeId(1), &Request::Hello, Bytes::new()).await.expect("reconnects");
    assert_eq!(node.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn malformed_replies_are_protocol_errors() {
    let ca = ClusterCa::generate().expect("CA");
    let mut trailing = hello(1);
    trailing.push(0);
    let truncated = hello(1)[..PREFIX_BYTES + 2].to_vec();
    let mut oversized = vec![0u8; PREFIX_BYTES];
    oversized[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut payload_on_hello = hello(1);
    payload_on_hello[4..8].copy_from_slice(&5u32.to_be_bytes());
    payload_on_hello.extend_from_slice(b"12345");
    for (name, bytes) in [
        ("trailing", trailing),
        ("truncated", truncated),
        ("oversized", oversized),
        ("payload on Hello", payload_on_hello),
        ("empty", Vec::new()),
    ] {
        let node = start_node(&ca, NodeId(1), Arc::new(move |_| Action::Reply(bytes.clone())));
        let transport = client(&ca, &[(NodeId(1), node.addr)]);
        let err = transport.call(NodeId(1), &Request::Hello, Bytes::new()).await.expect_err(name);
        assert!(matches!(err, TransportError::Protocol { .. }), "{name}: {err}");
        assert!(!err.is_node_failure(), "{name}");
    }
}

#[tokio::test]
async fn a_silent_node_times_out() {
    let ca = ClusterCa::generate().expect("CA");
    let node = start_node(&ca, NodeId(1), Arc::new(|_| Action::Hang));
    let transport = client(&ca, &[(NodeId(1), node.addr)]);
    let bound = Duration::from_millis(200);
    let err = transport
        .call_with_timeout(NodeId(1), &Request::Hello, Bytes::new(), bound)
        .await
        .expect_err("timeout");
    assert!(matches!(err, TransportError::Timeout { after_ms: 200, .. }), "{err}");
    assert!(err.is_node_failure());
}

/// A node that takes no bytes: the client's write blocks on flow control, the call times
/// out, and the half-sent request must arrive as a reset stream, never as a short request.
#[tokio::test]
async fn an_abandoned_request_is_reset_not_finished() {
    let ca = ClusterCa::generate().expect("CA");
    let endpoint =
        quinn::Endpoint::server(server_config(&ca, NodeId(1)), ([127, 0, 0, 1], 0).into())
            .expect("server endpoint");
    let addr = endpoint.local_addr().expect("bound");
    let resume = Arc::new(tokio::sync::Notify::new());
    let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel();
    let server_resume = resume.clone();
    tokio::spawn(async move {
        let conn = endpoint.accept().await.expect("incoming").await.expect("handshake");
        let (_send, mut recv) = conn.accept_bi().await.expect("stream");
        server_resume.notified().await;
        let outcome = recv.read_to_end(64 << 20).await.map(|b| b.len());
        let _ = outcome_tx.send(outcome);
    });
    let transport = client(&ca, &[(NodeId(1), addr)]);
    let req = Request::PutShard { key: shard_key(), hash: Digest::default() };
    // Larger than quinn's default stream receive window, which the test server keeps.
    let payload = Bytes::from(vec![0u8; 8 << 20]);
    let err = transport
        .call_with_timeout(NodeId(1), &req, payload, Duration::from_millis(300))
        .await
        .expect_err("timeout");
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    resume.notify_one();
    let outcome = outcome_rx.await.expect("server reports");
    assert!(
        matches!(outcome, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) if code == ABANDONED_STREAM),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_node_with_another_nodes_certificate_is_refused() {
    let ca = ClusterCa::generate().expect("CA");
    let impostor = start_node(&ca, NodeId(2), ok_hello());
    let transport = client(&ca, &[(NodeId(1), impostor.addr)]);
    let err = transport.call(NodeId(1), &Request::Hello, Bytes::new()).await.expect_err("name");
    assert!(matches!(err, TransportError::Connect { .. }), "{err}");
    assert!(err.is_node_failure());
}

#[tokio::test]
async fn a_node_of_another_cluster_is_refused() {
    let ca = ClusterCa::generate().expect("CA");
    let other = ClusterCa::generate().expect("CA");
    let stranger = start_node(&other, NodeId(1), ok_hello());
    let transport = client(&ca, &[(NodeId(1), stranger.addr)]);
    let err = transport.call(NodeId(1), &Request::Hello, Bytes::new()).await.expect_err("CA");
    assert!(matches!(err, TransportError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn unknown_nodes_and_bad_payload_lengths_fail_before_the_network() {
    let ca = ClusterCa::generate().expect("CA");
    let node = start_node(&ca, NodeId(1), ok_hello());
    let transport = client(&ca, &[(NodeId(1), node.addr)]);
    let err = transport.call(NodeId(5), &Request::Hello, Bytes::new()).await.expect_err("unknown");
    assert!(matches!(err, TransportError::UnknownNode(NodeId(5))));
    let err = transport
        .call(NodeId(1), &Request::Stats, Bytes::from_static(b"x"))
        .await
        .expect_err("Stats carries no payload");
    assert!(matches!(err, TransportError::InvalidRequest { .. }), "{err}");
    assert_eq!(node.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn concurrent_calls_to_a_dead_node_share_one_failed_attempt() {
    let ca = ClusterCa::generate().expect("CA");
    // A bound UDP socket that never answers: the handshake can only time out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let transport = Arc::new(client(&ca, &[(NodeId(1), addr)]));
    let started = tokio::time::Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let t = transport.clone();
            tokio::spawn(async move { t.call(NodeId(1), &Request::Hello, Bytes::new()).await })
        })
        .collect();
    for call in calls {
        let err = call.await.expect("task").expect_err("dead");
        assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
        assert!(err.is_node_failure());
    }
    let bound = Duration::from_millis(CLIENT_CONNECT_TIMEOUT_MS);
    assert!(started.elapsed() < bound * 2, "one shared attempt, not one per call");
}

/// A node of the previous release: it speaks wire version 1 only, and answers a request of
/// any other version with `BadVersion` in version 1 (as that release's node did); counts the
/// requests it got in each version.
fn version_1_node(ca: &ClusterCa, seen: Arc<[AtomicUsize; 3]>) -> TestNode {
    start_node(
        ca,
        NodeId(1),
        Arc::new(move |request: &[u8]| {
            let version = request[PREFIX_BYTES];
            seen[usize::from(version.min(2))].fetch_add(1, Ordering::SeqCst);
            let reply = if version == 1 {
                Response::Hello {
                    node_id: NodeId(1),
                    rack: "r".into(),
                    capacity_bytes: 0,
                    used_bytes: 0,
                    map_epoch: 0,
                }
            } else {
                Response::error(
                    ErrorCode::BadVersion,
                    "wire version 2 is not supported (this build speaks 1)",
                )
            };
            Action::Reply(encode_frame_at(&reply, 0, 1).expect("encodes"))
        }),
    )
}

#[tokio::test]
async fn a_client_falls_back_to_an_older_nodes_version_once_per_connection() {
    let ca = ClusterCa::generate().expect("CA");
    let seen: Arc<[AtomicUsize; 3]> = Arc::default();
    let node = version_1_node(&ca, seen.clone());
    let transport = client(&ca, &[(NodeId(1), node.addr)]);
    assert_eq!(transport.wire_version(NodeId(1)), Some(rackpoint_proto::limits::WIRE_VERSION));
    for _ in 0..3 {
        let reply = transport.call(NodeId(1), &Request::Hello, Bytes::new()).await.expect("call");
        assert!(matches!(reply.response, Response::Hello { .. }));
    }
    assert_eq!(seen[2].load(Ordering::SeqCst), 1, "one request in version 2, refused");
    assert_eq!(seen[1].load(Ordering::SeqCst), 3, "then every call in version 1");
    assert_eq!(transport.wire_version(NodeId(1)), Some(1));
    // A request version 1 lacks is never sent to that node, and says why.
    let mark = Request::MarkDeleting { job: shard_key().job, step: rackpoint_proto::Step(1) };
    let err = transport.call(NodeId(1), &mark, Bytes::new()).await.expect_err("too old");
    assert!(
        matches!(
            err,
            TransportError::PeerTooOld { kind: "MarkDeleting", version: 1, since: 2, .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade the node"), "{err}");
    assert!(!err.is_node_failure());
    assert_eq!(seen[1].load(Ordering::SeqCst) + seen[2].load(Ordering::SeqCst), 4);
    // A new connection (the node may have been upgraded meanwhile) starts from the newest.
    transport.forget(NodeId(1));
    transport.call(NodeId(1), &Request::Hello, Bytes::new()).await.expect("call");
    assert_eq!(seen[2].load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_reply_in_a_newer_version_says_to_upgrade_the_client() {
    let ca = ClusterCa::generate().expect("CA");
    let node = start_node(
        &ca,
        NodeId(1),
        Arc::new(|_| {
            let mut reply = hello(1);
            reply[PREFIX_BYTES] = rackpoint_proto::limits::WIRE_VERSION + 1;
            Action::Reply(reply)
        }),
    );
    let transport = client(&ca, &[(NodeId(1), node.addr)]);
    let err = transport.call(NodeId(1), &Request::Hello, Bytes::new()).await.expect_err("newer");
    assert!(matches!(err, TransportError::PeerTooNew { .. }), "{err}");
    assert!(err.to_string().contains("upgrade the client"), "{err}");
}

#[tokio::test]
async fn a_reply_in_another_version_than_the_request_is_a_protocol_error() {
    let ca = ClusterCa::generate().expect("CA");
    let node = start_node(
        &ca,
        NodeId(1),
        Arc::new(|_| {
            let hello = Response::Hello {
                node_id: NodeId(1),
                rack: "r".into(),
                capacity_bytes: 0,
                used_bytes: 0,
                map_epoch: 0,
            };
            Action::Reply(encode_frame_at(&hello, 0, 1).expect("encodes"))
        }),
    );
    let transport = client(&ca, &[(NodeId(1), node.addr)]);
    let err = transport.call(NodeId(1), &Request::Hello, Bytes::new()).await.expect_err("mixed");
    assert!(matches!(err, TransportError::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn every_call_carries_a_fresh_request_id_and_the_reply_must_name_it() {
    use rackpoint_proto::wire::{encode_frame_with_id, header_request_id, RequestId};
    let ca = ClusterCa::generate().expect("CA");
    let seen: Arc<Mutex<Vec<Option<RequestId>>>> = Arc::default();
    let log = seen.clone();
    let node = start_node(
        &ca,
        NodeId(1),
        Arc::new(move |request: &[u8]| {
            let id = header_request_id(&request[PREFIX_BYTES..]);
            log.lock().expect("lock").push(id);
            if decode_header::<Request>(&request[PREFIX_BYTES..], 0) == Ok(Request::Stats) {
                // A reply that names another request's id.
                let other = RequestId::new(id.map_or(1, |i| i.get() ^ 1));
                let reply = Response::error(ErrorCode::NotFound, "x");
                let bytes = encode_frame_with_id(&reply, 0, 3, other).expect("encodes");
                return Action::Reply(bytes);
            }
            Action::Reply(hello(1))
        }),
    );
    let transport = client(&ca, &[(NodeId(1), node.addr)]);
    for _ in 0..3 {
        transport.call(NodeId(1), &Request::Hello, Bytes::new()).await.expect("call");
    }
    let err = transport.call(NodeId(1), &Request::Stats, Bytes::new()).await.expect_err("bad id");
    assert!(
        matches!(&err, TransportError::Protocol { reason, .. } if reason.contains("request id")),
        "{err}"
    );
    let ids: Vec<RequestId> =
        seen.lock().expect("lock").iter().map(|id| id.expect("every call names one")).collect();
    assert_eq!(ids.len(), 4);
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "a fresh id per call: {ids:?}");
    assert!(ids.windows(2).all(|w| w[0].get() >> 32 == w[1].get() >> 32), "one process prefix");
}
