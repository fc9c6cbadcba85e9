//! A running storage node: opens the engine, builds TLS, binds the QUIC endpoint (and the
//! metrics listener if `metrics_addr` is set), starts the service and the scrubber, and stops
//! them in order (stop accepting, drain in-flight requests within `NODE_DRAIN_TIMEOUT_MS`,
//! close the endpoint, close the engine). A node that starts with no shard on a data folder
//! that held its shards says so ([`crate::data_marker`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::Endpoint;
use rackpoint_proto::limits::{
    NODE_CLOSE_GRACE_MS, NODE_DATA_MARKER_CHECK_MS, NODE_DRAIN_TIMEOUT_MS,
};
use rackpoint_proto::{NodeConfig, NodeId};
use tokio::sync::watch;

use crate::data_marker;
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::handler::{Handler, InflightBudget, MapKeeper, MapRefusal, NodeIdentity, NodePolicy};
use crate::identity::{RevocationError, Revocations};
use crate::metrics;
use crate::quota::Quotas;
use crate::scrub::Scrubber;
use crate::service::{self, DrainTracker};
use crate::stats::NodeCounters;
use crate::tls::{self, TlsError, TlsFiles};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS material is missing or unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The data dir could not be opened (locked by another process, unreadable, ...).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The engine's opening task failed.
    #[error("engine open task failed")]
    Task(#[from] tokio::task::JoinError),
    /// The revocation list named in `node.toml` could not be read.
    #[error(transparent)]
    Revocations(#[from] RevocationError),
    /// The data folder could not be made private (0700).
    #[error("cannot make the data folder {path} private (0700): {error}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// `wire_version_max` names a version this build does not speak.
    #[error(transparent)]
    Config(#[from] rackpoint_proto::cluster::ConfigError),
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {addr}: {error}")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The stored cluster map could not be read, or the map file `node.toml` names does not
    /// verify against the CA.
    #[error("cluster map: {0}")]
    ClusterMap(#[from] MapRefusal),
    /// The UDP address could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// Whether every in-flight request finished within the drain timeout.
    pub drained: bool,
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    endpoint: Endpoint,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    started_empty: bool,
    engine: Arc<Engine>,
    shutdown: watch::Sender<bool>,
    tracker: DrainTracker,
}

/// Makes the data folder (if missing) readable by the node's user only: with k shards of a
/// stripe the plaintext can be rebuilt, so no other local user may read them. Files inside
/// are created 0600 by the process umask (`rackpoint-store` sets 077).
fn private_dir(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let error = |error| StartError::DataDir { path: dir.to_owned(), error };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(error)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(error)
}

async fn open_engine(config: &NodeConfig) -> Result<Engine, StartError> {
    let dir: PathBuf = config.data_dir.clone();
    let options =
        EngineOptions { capacity_bytes: config.capacity_bytes, ..EngineOptions::default() };
    Ok(tokio::task::spawn_blocking(move || Engine::open(&dir, options)).await??)
}

/// The node's map keeper over its stored map, after taking `node.toml`'s `cluster_map`
/// file when it is newer.
async fn open_map_keeper(
    config: &NodeConfig,
    engine: Arc<Engine>,
) -> Result<Arc<MapKeeper>, StartError> {
    let cas = tls::ca_certificates(&config.ca)?;
    let file = config.cluster_map.clone();
    let open = move || -> Result<MapKeeper, MapRefusal> {
        let keeper = MapKeeper::open(&engine, cas)?;
        if let Some(path) = &file {
            keeper.offer_file(&engine, path)?;
        }
        Ok(keeper)
    };
    Ok(Arc::new(tokio::task::spawn_blocking(open).await??))
}

impl Node {
    /// Starts a node from its (already path-resolved) configuration. Once this returns, the
    /// endpoint is bound and serving. Must run inside a multi-threaded tokio runtime.
    pub async fn start(config: &NodeConfig) -> Result<Self, StartError> {
        let files =
            TlsFiles { ca: config.ca.clone(), cert: config.cert.clone(), key: config.key.clone() };
        let crypto = tls::server_crypto(&files)?;
        let revocations = Revocations::load(config.revoked.as_deref())?;
        let wire_versions = config.wire_versions()?;
        private_dir(&config.data_dir)?;
        let engine = Arc::new(open_engine(config).await?);
        let maps = open_map_keeper(config, engine.clone()).await?;
        let bind_error = |error| StartError::Bind { addr: config.listen, error };
        let endpoint = service::bind_endpoint(config.listen, service::server_config(crypto))
            .map_err(bind_error)?;
        let local_addr = endpoint.local_addr().map_err(bind_error)?;
        let counters = Arc::new(NodeCounters::default());
        let started_empty =
            data_marker::started_empty(&config.data_dir, config.id, engine.counts().shards);
        if started_empty {
            counters.set_started_empty();
            tracing::warn!(
                data_dir = %config.data_dir.display(),
                marker = %data_marker::marker_path(&config.data_dir).display(),
                "node {} started on an empty data folder {} that held its shards before (a \
                 replaced or wiped disk): its shards are missing here; run `rackpoint repair` \
                 to rebuild them",
                config.id, config.data_dir.display()
            );
        }
        let metrics_listener = match config.metrics_addr {
            Some(addr) => {
                let error = |error| StartError::MetricsBind { addr, error };
                Some(metrics::bind(addr).await.map_err(error)?)
            }
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr().map_err(|error| StartError::MetricsBind {
                addr: config.metrics_addr.unwrap_or(local_addr),
                error,
            })?),
            None => None,
        };
        let identity = NodeIdentity { node_id: config.id, rack: config.rack.clone() };
        let policy = NodePolicy {
            revocations,
            min_orphan_grace_ms: config.min_orphan_grace_ms,
            quotas: Quotas::new(&config.quota),
            wire_versions,
        };
        let handler =
            Handler::new(engine.clone(), counters.clone(), identity, InflightBudget::default())
                .with_policy(policy)
                .with_cluster_maps(maps);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tracker = DrainTracker::new();
        let guard = tracker.guard();
        if let Some(listener) = metrics_listener {
            let registry = Arc::new(metrics::registry(handler.clone()));
            let guard = tracker.guard();
            tokio::spawn(metrics::serve(listener, registry, shutdown_rx.clone(), guard));
        }
        tokio::spawn(keep_data_marker(
            engine.clone(),
            config.data_dir.clone(),
            config.id,
            shutdown_rx.clone(),
        ));
        tokio::spawn(service::serve(endpoint.clone(), handler, shutdown_rx.clone(), guard));
        if config.scrub_bytes_per_sec > 0 {
            let scrubber = Scrubber::new(engine.clone(), counters, config.scrub_bytes_per_sec)
                .with_start_jitter(config.scrub_start_jitter_ms);
            let guard = tracker.guard();
            tokio::spawn(async move {
                scrubber.run(shutdown_rx).await;
                drop(guard);
            });
        }
        Ok(Self { endpoint, local_addr, metrics_addr, started_empty, engine, shutdown, tracker })
    }

    /// The address the node serves on (with the OS-chosen port if the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the metrics endpoint, if the config asked for one (with the OS-chosen
    /// port if it said 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Whether the node started on an empty data folder that held its shards before.
    pub fn started_empty(&self) -> bool {
        self.started_empty
    }

    /// Stops accepting connections and streams, waits for in-flight requests (at most
    /// `NODE_DRAIN_TIMEOUT_MS`), closes every connection, and closes the engine.
    pub async fn stop(self) -> StopReport {
        let Self { endpoint, engine, shutdown, tracker, .. } = self;
        endpoint.set_server_config(None);
        shutdown.send_replace(true);
        let drain = Duration::from_millis(NODE_DRAIN_TIMEOUT_MS);
        let drained = tokio::time::timeout(drain, tracker.wait()).await.is_ok();
        endpoint.close(0u32.into(), b"node stopping");
        let grace = Duration::from_millis(NODE_CLOSE_GRACE_MS);
        let _ = tokio::time::timeout(grace, endpoint.wait_idle()).await;
        // Tasks still running past the drain timeout keep their own references; the engine
        // closes when the last one goes.
        drop(engine);
        StopReport { drained }
    }
}

/// Leaves the data folder's marker once the node holds a shard (at once if it does already),
/// looking every `NODE_DATA_MARKER_CHECK_MS` until then or until `shutdown`.
async fn keep_data_marker(
    engine: Arc<Engine>,
    data_dir: PathBuf,
    node: NodeId,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(NODE_DATA_MARKER_CHECK_MS));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if engine.counts().shards == 0 {
            continue;
        }
        let dir = data_dir.clone();
        match tokio::task::spawn_blocking(move || data_marker::record(&dir, node)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                let marker = data_marker::marker_path(&data_dir);
                tracing::warn!(marker = %marker.display(),
                    "cannot leave the data folder's marker (a replaced disk will not be told apart from a new node): {e}");
                return;
            }
            Err(e) => {
                tracing::warn!("data marker task failed: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{call, call_raw, client_endpoint, node_config, TestCa};
    use rackpoint_proto::cluster::node_server_name;
    use rackpoint_proto::limits::MAX_HEADER_BYTES;
    use rackpoint_proto::wire::encode_frame;
    use rackpoint_proto::{
        Digest, ErrorCode, JobName, NodeId, ObjectName, Rank, Request, Response, ShardIndex,
        ShardKey, Step, StripeIndex,
    };

    fn shard_key() -> ShardKey {
        ShardKey {
            job: JobName::new("job").expect("valid"),
            step: Step(1),
            rank: Rank(0),
            object: ObjectName::new("weights").expect("valid"),
            stripe: StripeIndex(0),
            index: ShardIndex(0),
        }
    }

    fn code(response: &Response) -> Option<ErrorCode> {
        match response {
            Response::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    async fn connect(
        endpoint: &quinn::Endpoint,
        node: &Node,
    ) -> Result<quinn::Connection, quinn::ConnectionError> {
        let name = node_server_name(NodeId(1));
        endpoint.connect(node.local_addr(), &name).expect("valid connect parameters").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_requests_over_mutual_tls_and_survives_bad_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = TestCa::new("cluster CA");
        let node = Node::start(&node_config(dir.path(), &ca, NodeId(1))).await.expect("starts");
        let client = client_endpoint(&ca, Some(&ca.client()));
        let conn = connect(&client, &node).await.expect("handshake");

        let (hello, _) = call(&conn, &Request::Hello, b"").await.expect("hello");
        assert!(matches!(hello, Response::Hello { node_id: NodeId(1), .. }), "{hello:?}");

        let data = vec![7u8; 1 << 20];
        let hash = Digest(*blake3::hash(&data).as_bytes());
        let put = Request::PutShard { key: shard_key(), hash };
        assert_eq!(call(&conn, &put, &data).await.expect("put").0, Response::ShardStored);
        let (got, payload) =
            call(&conn, &Request::GetShard { key: shard_key() }, b"").await.expect("get");
        assert_eq!((got, payload == data), (Response::Shard { hash }, true));

        let mut too_large = vec![0u8; 8];
        too_large[..4].copy_from_slice(&(MAX_HEADER_BYTES + 1).to_be_bytes());
        let (reply, _) = call_raw(&conn, &too_large).await.expect("an error reply");
        assert_eq!(code(&reply), Some(ErrorCode::TooLarge));

        let mut short = encode_frame(&put, data.len() as u32).expect("encodes");
        short.extend_from_slice(&data[..1000]);
        let (reply, _) = call_raw(&conn, &short).await.expect("an error reply");
        assert_eq!(code(&reply), Some(ErrorCode::LengthMismatch));

        let (stats, _) =
            call(&conn, &Request::Stats, b"").await.expect("the connection still serves");
        let Response::Stats(stats) = stats else { panic!("expected stats, got {stats:?}") };
        assert_eq!((stats.shards, stats.shard_bytes), (1, 1 << 20));
        let put_counters = stats.requests.iter().find(|c| c.kind == "PutShard").expect("listed");
        assert_eq!((put_counters.served, put_counters.failed), (1, 1));
        assert_eq!(node.stop().await, StopReport { drained: true });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_drains_a_request_in_flight() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = TestCa::new("cluster CA");
        let node = Node::start(&node_config(dir.path(), &ca, NodeId(1))).await.expect("starts");
        let client = client_endpoint(&ca, Some(&ca.client()));
        let conn = connect(&client, &node).await.expect("handshake");
        let data = vec![3u8; 256 * 1024];
        let hash = Digest(*blake3::hash(&data).as_bytes());
        let frame = encode_frame(&Request::PutShard { key: shard_key(), hash }, data.len() as u32)
            .expect("encodes");
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        send.write_all(&frame).await.expect("header");
        send.write_all(&data[..1000]).await.expect("part of the payload");
        // The node accepts streams in id order: once this later stream is answered, the
        // put's stream is being served.
        call(&conn, &Request::Hello, b"").await.expect("hello");
        let finish_put = async {
            send.write_all(&data[1000..]).await.expect("rest of the payload");
            send.finish().expect("finish");
            recv.read_to_end(1 << 20).await.expect("reply")
        };
        // `join!` polls `stop` first: it stops accepting before the put can complete.
        let (report, reply) = tokio::join!(node.stop(), finish_put);
        let (response, _) =
            rackpoint_proto::wire::decode_frame::<Response>(&reply).expect("a reply frame");
        assert_eq!(response, Response::ShardStored);
        assert_eq!(report, StopReport { drained: true });
        assert!(call(&conn, &Request::Hello, b"").await.is_err(), "the node is gone");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_without_a_cluster_certificate_never_reach_a_handler() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = TestCa::new("cluster CA");
        let node = Node::start(&node_config(dir.path(), &ca, NodeId(1))).await.expect("starts");
        let stranger_ca = TestCa::new("another CA");
        for identity in [None, Some(stranger_ca.client())] {
            let client = client_endpoint(&ca, identity.as_ref());
            // TLS 1.3 lets a client finish its side before the server has checked its
            // certificate, so the refusal may show at connect or at the first request.
            let outcome = match connect(&client, &node).await {
                Ok(conn) => call(&conn, &Request::Hello, b"").await.map(|_| ()),
                Err(e) => Err(e.into()),
            };
            assert!(outcome.is_err(), "an unauthenticated client was served");
        }
        let good = client_endpoint(&ca, Some(&ca.client()));
        let conn = connect(&good, &node).await.expect("handshake");
        let (stats, _) = call(&conn, &Request::Stats, b"").await.expect("stats");
        let Response::Stats(stats) = stats else { panic!("expected stats, got {stats:?}") };
        let hello = stats.requests.iter().find(|c| c.kind == "Hello").expect("listed");
        assert_eq!((hello.served, hello.failed), (0, 0));
        node.stop().await;
    }

    /// Throughput of 1 MiB puts then gets over one connection with `STREAMS` requests in
    /// flight. Run with `cargo test --release -p rackpoint-store --lib -- --ignored
    /// --nocapture quic_throughput`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a check"]
    async fn quic_throughput() {
        const SHARDS: u32 = 1024;
        const STREAMS: u32 = 32;
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = TestCa::new("cluster CA");
        let node = Node::start(&node_config(dir.path(), &ca, NodeId(1))).await.expect("starts");
        let client = client_endpoint(&ca, Some(&ca.client()));
        let conn = connect(&client, &node).await.expect("handshake");
        let data: Arc<Vec<u8>> =
            Arc::new((0..1u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect());
        let hash = Digest(*blake3::hash(&data).as_bytes());
        let key = |i: u32| ShardKey { stripe: StripeIndex(i), ..shard_key() };
        for phase in ["put", "get"] {
            let start = std::time::Instant::now();
            let tasks: Vec<_> = (0..STREAMS)
                .map(|s| {
                    let (conn, data) = (conn.clone(), data.clone());
                    tokio::spawn(async move {
                        for i in (s..SHARDS).step_by(STREAMS as usize) {
                            let (request, payload) = match phase {
                                "put" => (Request::PutShard { key: key(i), hash }, &data[..]),
                                _ => (Request::GetShard { key: key(i) }, &[][..]),
                            };
                            let (reply, _) = call(&conn, &request, payload).await.expect("call");
                            assert!(code(&reply).is_none(), "{reply:?}");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("no panic");
            }
            let secs = start.elapsed().as_secs_f64();
            let mb = f64::from(SHARDS) * f64::from(1u32 << 20) / 1e6;
            println!(
                "{phase}: {SHARDS} x 1 MiB, {STREAMS} streams: {:.0} MB/s ({secs:.2} s)",
                mb / secs
            );
        }
        node.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_node_on_the_same_data_dir_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = TestCa::new("cluster CA");
        let config = node_config(dir.path(), &ca, NodeId(1));
        let node = Node::start(&config).await.expect("starts");
        let err = Node::start(&config).await.expect_err("the data dir is locked");
        assert!(matches!(err, StartError::Engine(EngineError::Locked { .. })), "{err}");
        node.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreadable_certificates_are_a_start_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = TestCa::new("cluster CA");
        let mut config = node_config(dir.path(), &ca, NodeId(1));
        config.key = dir.path().join("missing.key");
        let err = Node::start(&config).await.expect_err("no key");
        assert!(matches!(err, StartError::Tls(TlsError::Read { .. })), "{err}");
        std::fs::write(&config.key, "not a key").expect("write");
        let err = Node::start(&config).await.expect_err("bad key");
        assert!(matches!(err, StartError::Tls(TlsError::Pem { .. })), "{err}");
    }
}
