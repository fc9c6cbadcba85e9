//! Shared helpers: a real cluster of `rackpoint-store` processes, a client transport over
//! QUIC with mutual TLS, deterministic payloads, and a raw stream client for bad frames.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use bytes::Bytes;
use rackpoint_client::cluster_dir::InitOptions;
use rackpoint_client::local_cluster::LocalCluster;
use rackpoint_client::transport::{Reply, Transport, TransportError};
use rackpoint_core::manifest::{CodeSpec, Manifest, ObjectEntry, ShardEntry, StripeEntry};
use rackpoint_proto::cluster::node_server_name;
use rackpoint_proto::wire::decode_frame;
use rackpoint_proto::{
    CodeParams, Digest, JobName, ManifestKey, NodeId, NodeStats, ObjectName, Rank, Request,
    Response, ShardIndex, ShardKey, Step, StripeIndex,
};
use tempfile::TempDir;

/// Shard size of the test clusters: small, so that tests stay quick.
pub const SHARD_BYTES: usize = 64 * 1024;
/// The only node of a one-node cluster.
pub const ONE: NodeId = NodeId(1);

/// The node binary cargo built for these tests.
pub fn store_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rackpoint-store"))
}

/// A multi-threaded runtime for the client side.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Options of a test cluster of `nodes` nodes with 64 KiB shards. Orphan sweeps take the
/// grace they ask for (the nodes' own minimum is 0; the trust tests set it where they check it).
pub fn options(nodes: usize) -> InitOptions {
    InitOptions {
        shard_size_bytes: SHARD_BYTES as u32,
        k: 2,
        m: 1,
        node_min_orphan_grace_ms: 0,
        ..InitOptions::new(nodes)
    }
}

/// A running cluster in a fresh temporary folder (kept alive by the returned `TempDir`).
pub fn start(opts: &InitOptions) -> (TempDir, LocalCluster) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = LocalCluster::start(dir.path(), opts, &store_bin()).expect("cluster starts");
    (dir, cluster)
}

/// A client transport to the cluster (call inside the runtime).
pub fn transport(cluster: &LocalCluster) -> Arc<Transport> {
    Arc::new(Transport::new(cluster.map(), cluster.tls()).expect("transport"))
}

/// The job every test writes to.
pub fn job() -> JobName {
    JobName::new("test-job").expect("valid job name")
}

/// Shard `i` of checkpoint `step`.
pub fn shard_key(step: u64, i: u32) -> ShardKey {
    ShardKey {
        job: job(),
        step: Step(step),
        rank: Rank(0),
        object: ObjectName::new("model.weights").expect("valid object name"),
        stripe: StripeIndex(i),
        index: ShardIndex(0),
    }
}

/// The manifest of rank `rank` of checkpoint `step`.
pub fn manifest_key(step: u64, rank: u32) -> ManifestKey {
    ManifestKey { job: job(), step: Step(step), rank: Rank(rank) }
}

/// Shard `index` of the one stripe of the one object of part `(step, rank 0)`.
pub fn part_shard_key(step: u64, index: u8) -> ShardKey {
    ShardKey {
        job: job(),
        step: Step(step),
        rank: Rank(0),
        object: ObjectName::new("model.weights").expect("valid object name"),
        stripe: StripeIndex(0),
        index: ShardIndex(index),
    }
}

/// A valid manifest of part `(step, rank 0)` of a world of 1, whose one object is one stripe
/// of the 3 `shards` (k = 2, m = 1), each on node 1.
pub fn part_manifest(step: u64, shards: &[Bytes]) -> Manifest {
    let params = CodeParams::new(2, 1, SHARD_BYTES as u32).expect("valid code");
    let shards: Vec<ShardEntry> =
        shards.iter().map(|b| ShardEntry { node: ONE, hash: digest(b) }).collect();
    let hashes: Vec<u8> = shards.iter().flat_map(|s| s.hash.0).collect();
    Manifest {
        format_version: rackpoint_core::manifest::MANIFEST_FORMAT_VERSION,
        job: job(),
        step: Step(step),
        rank: Rank(0),
        world_size: 1,
        writer: "test".into(),
        code: CodeSpec::for_params(params),
        objects: vec![ObjectEntry {
            name: ObjectName::new("model.weights").expect("valid object name"),
            len: 2 * SHARD_BYTES as u64,
            hash: digest(&hashes),
            stripes: vec![StripeEntry { shards }],
        }],
        user_meta: BTreeMap::new(),
        prev: None,
    }
}

/// `len` deterministic pseudo-random bytes for `seed` (blake3 in XOF mode).
pub fn payload(seed: u64, len: usize) -> Bytes {
    let mut bytes = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut bytes);
    Bytes::from(bytes)
}

/// blake3 of `bytes` as a wire digest.
pub fn digest(bytes: &[u8]) -> Digest {
    Digest(*blake3::hash(bytes).as_bytes())
}

/// Stores a shard.
pub async fn put_shard(
    t: &Transport,
    node: NodeId,
    key: &ShardKey,
    bytes: Bytes,
) -> Result<Reply, TransportError> {
    let req = Request::PutShard { key: key.clone(), hash: digest(&bytes) };
    t.call(node, &req, bytes).await
}

/// Reads a shard back and checks the reply's hash matches its bytes.
pub async fn get_shard(
    t: &Transport,
    node: NodeId,
    key: &ShardKey,
) -> Result<Vec<u8>, TransportError> {
    let reply = t.call(node, &Request::GetShard { key: key.clone() }, Bytes::new()).await?;
    let Response::Shard { hash } = reply.response else {
        panic!("GetShard answered {:?}", reply.response)
    };
    assert_eq!(hash, digest(&reply.payload), "the reply's hash describes its bytes");
    Ok(reply.payload)
}

/// Stores a manifest.
pub async fn put_manifest(
    t: &Transport,
    node: NodeId,
    key: &ManifestKey,
    bytes: Bytes,
) -> Result<Reply, TransportError> {
    let req = Request::PutManifest { key: key.clone(), world_size: 1, hash: digest(&bytes) };
    t.call(node, &req, bytes).await
}

/// Reads a manifest back.
pub async fn get_manifest(
    t: &Transport,
    node: NodeId,
    key: &ManifestKey,
) -> Result<Vec<u8>, TransportError> {
    let reply = t.call(node, &Request::GetManifest { key: key.clone() }, Bytes::new()).await?;
    assert!(matches!(reply.response, Response::Manifest { world_size: 1, .. }));
    Ok(reply.payload)
}

/// The node's counters.
pub async fn stats(t: &Transport, node: NodeId) -> NodeStats {
    match t.call(node, &Request::Stats, Bytes::new()).await.expect("Stats").response {
        Response::Stats(stats) => *stats,
        other => panic!("Stats answered {other:?}"),
    }
}

/// (served, failed) of one request kind in `stats`.
pub fn served_failed(stats: &NodeStats, kind: &str) -> (u64, u64) {
    let c = stats.requests.iter().find(|c| c.kind == kind).expect("every kind is counted");
    (c.served, c.failed)
}

/// A client that writes raw bytes on its own streams (with a valid client certificate).
pub struct RawClient {
    /// Kept so that the endpoint outlives the connection.
    _endpoint: quinn::Endpoint,
    /// The connection to the node.
    pub conn: quinn::Connection,
}

impl RawClient {
    /// Connects to `node` with `config`.
    pub async fn connect_with(
        cluster: &LocalCluster,
        node: NodeId,
        config: quinn::ClientConfig,
    ) -> Result<Self, quinn::ConnectionError> {
        let endpoint = rackpoint_client::tls::client_endpoint(false).expect("client endpoint");
        let addr = cluster.map().node(node).expect("node in map").addr;
        let connecting =
            endpoint.connect_with(config, addr, &node_server_name(node)).expect("connect starts");
        let conn = connecting.await?;
        Ok(Self { _endpoint: endpoint, conn })
    }

    /// Connects to `node` with the cluster's client identity.
    pub async fn connect(cluster: &LocalCluster, node: NodeId) -> Self {
        let config = cluster.tls().quinn_client_config().expect("client config");
        Self::connect_with(cluster, node, config).await.expect("handshake")
    }

    /// Writes `bytes` on a new stream, finishes it, and decodes the reply frame.
    pub async fn send(&self, bytes: &[u8]) -> Response {
        let (mut send, mut recv) = self.conn.open_bi().await.expect("stream");
        send.write_all(bytes).await.expect("write");
        send.finish().expect("finish");
        self.read_reply(&mut recv).await
    }

    /// Reads one whole reply frame from `recv` and decodes it.
    pub async fn read_reply(&self, recv: &mut quinn::RecvStream) -> Response {
        let limit = rackpoint_proto::limits::MAX_PAYLOAD_BYTES as usize + 1024 * 1024;
        let frame = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(limit))
            .await
            .expect("the node answers")
            .expect("a reply");
        let (response, _payload) = decode_frame::<Response>(&frame).expect("a valid reply frame");
        response
    }
}
