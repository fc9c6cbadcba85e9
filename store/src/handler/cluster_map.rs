//! The node's signed cluster map: [`MapKeeper`] holds the newest map the node was given
//! (in memory, and durably in the engine), takes a new one only if it verifies against the
//! node's CA certificate and its epoch is newer (`signed_map`'s two rules), and the handler
//! serves it (`GetClusterMap`, to any client) and takes it (`PutClusterMap`, admins only,
//! checked by `admit` before the payload is read). Nodes never read the map themselves:
//! they keep it for clients, whose `Hello` learns its epoch.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rackpoint_proto::limits::MAX_CLUSTER_MAP_BYTES;
use rackpoint_proto::signed_map::{check_newer, MapError, SignedMap};
use rackpoint_proto::{ErrorCode, Response};

use super::{Handler, Reply, RequestError};
use crate::engine::{Engine, EngineError};

/// Why a map was not taken.
#[derive(Debug, thiserror::Error)]
pub enum MapRefusal {
    /// The map failed a check (signature, epoch, body, envelope).
    #[error(transparent)]
    Map(#[from] MapError),
    /// The request's epoch is not the signed one.
    #[error("the request says epoch {said}, the signed map is epoch {signed}")]
    EpochMismatch {
        /// The request header's epoch.
        said: u64,
        /// The signed epoch.
        signed: u64,
    },
    /// The engine could not store it.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A map file given at start could not be read.
    #[error("cannot read the cluster map file {path}: {error}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl MapRefusal {
    /// The wire error code of this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            MapRefusal::Map(MapError::Stale { held, .. }) => ErrorCode::StaleMap { held: *held },
            MapRefusal::Map(
                MapError::BadSignature
                | MapError::UnknownScheme(_)
                | MapError::UnknownFormat(_)
                | MapError::SignatureTooLong(_)
                | MapError::Truncated,
            ) => ErrorCode::UnsignedMap,
            MapRefusal::Map(MapError::TooLarge { .. }) => ErrorCode::TooLarge,
            MapRefusal::Map(MapError::Body(_) | MapError::Invalid(_))
            | MapRefusal::EpochMismatch { .. } => ErrorCode::Malformed,
            MapRefusal::Map(MapError::BadCa(_)) | MapRefusal::File { .. } => ErrorCode::Internal,
            MapRefusal::Engine(e) => e.code(),
        }
    }
}

/// The newest signed cluster map this node was given, and the CA certificates a map must
/// verify against.
#[derive(Debug, Default)]
pub struct MapKeeper {
    trusted_cas: Vec<Vec<u8>>,
    held: Mutex<Option<SignedMap>>,
    epoch: AtomicU64,
}

impl MapKeeper {
    /// The keeper of `engine`'s stored map, verifying maps against `trusted_cas` (DER). A
    /// stored map that no longer verifies (the CA file was replaced) is set aside with a
    /// warning: the node then holds none until it is given one.
    pub fn open(engine: &Engine, trusted_cas: Vec<Vec<u8>>) -> Result<Self, EngineError> {
        let keeper = Self { trusted_cas, ..Self::default() };
        if let Some(bytes) = engine.cluster_map()? {
            match SignedMap::open(&bytes, &keeper.cas()) {
                Ok(map) => keeper.hold(map),
                Err(e) => tracing::warn!("the stored cluster map is set aside: {e}"),
            }
        }
        Ok(keeper)
    }

    fn cas(&self) -> Vec<&[u8]> {
        self.trusted_cas.iter().map(Vec::as_slice).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SignedMap>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hold(&self, map: SignedMap) {
        self.epoch.store(map.epoch(), Ordering::SeqCst);
        *self.lock() = Some(map);
    }

    /// The held map's epoch (0: none).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The held map's epoch and bytes.
    pub fn held(&self) -> Option<(u64, Vec<u8>)> {
        self.lock().as_ref().map(|m| (m.epoch(), m.bytes().to_vec()))
    }

    /// Takes `bytes` if they verify, say `epoch` (when given) and are newer than the held
    /// map; durable in `engine` before it returns. The map held already (the same layout,
    /// whatever its signature's bytes) is `Ok(true)`.
    pub fn offer(
        &self,
        engine: &Engine,
        bytes: &[u8],
        epoch: Option<u64>,
    ) -> Result<bool, MapRefusal> {
        let map = SignedMap::open(bytes, &self.cas())?;
        if let Some(said) = epoch.filter(|said| *said != map.epoch()) {
            return Err(MapRefusal::EpochMismatch { said, signed: map.epoch() });
        }
        let mut held = self.lock();
        // The same map signed again (ECDSA signatures differ each time) is the map held.
        if held.as_ref().is_some_and(|h| h.layout() == map.layout()) {
            return Ok(true);
        }
        check_newer(held.as_ref().map(SignedMap::epoch), map.epoch())?;
        engine.put_cluster_map(map.bytes())?;
        self.epoch.store(map.epoch(), Ordering::SeqCst);
        *held = Some(map);
        Ok(false)
    }

    /// At start: takes the map file `path` (`node.toml`'s `cluster_map`) if it is newer
    /// than the stored one; an older or the same one is no error. A file that does not
    /// verify is.
    pub fn offer_file(&self, engine: &Engine, path: &Path) -> Result<(), MapRefusal> {
        let bytes = crate::config::read_bounded(path, u64::from(MAX_CLUSTER_MAP_BYTES))
            .map_err(|error| MapRefusal::File { path: path.to_owned(), error })?;
        match self.offer(engine, &bytes, None) {
            Ok(_) => Ok(()),
            Err(MapRefusal::Map(MapError::Stale { held, offered })) => {
                tracing::info!(
                    held,
                    offered,
                    "the cluster map file is not newer than the map held"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl Handler {
    /// The same handler keeping (and serving) cluster maps with `maps`.
    pub fn with_cluster_maps(mut self, maps: Arc<MapKeeper>) -> Self {
        self.maps = maps;
        self
    }

    /// The held map's epoch, as `Hello` reports it to a caller of wire `version` (0 before
    /// version 3, which has no map).
    pub(super) fn map_epoch_for(&self, version: u8) -> u64 {
        if version >= 3 {
            self.maps.epoch()
        } else {
            0
        }
    }

    pub(super) async fn get_cluster_map(&self) -> Result<Reply, RequestError> {
        let (epoch, bytes) = self.maps.held().ok_or(EngineError::NotFound)?;
        let permit = self.budget.acquire(u32::try_from(bytes.len()).unwrap_or(u32::MAX)).await?;
        Ok(Reply::with_payload(Response::ClusterMap { epoch }, bytes, permit))
    }

    pub(super) async fn put_cluster_map(
        &self,
        epoch: u64,
        payload: Bytes,
    ) -> Result<Reply, RequestError> {
        let (engine, maps) = (self.engine.clone(), self.maps.clone());
        let taken = tokio::task::spawn_blocking(move || maps.offer(&engine, &payload, Some(epoch)))
            .await?
            .map_err(RequestError::Map)?;
        if !taken {
            tracing::info!(epoch, "took a new cluster map");
        }
        Ok(Reply::bare(Response::ClusterMapStored { existed: taken }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineOptions;
    use crate::handler::{InflightBudget, NodeIdentity};
    use crate::identity::Caller;
    use rackpoint_client::certs::ClusterCa;
    use rackpoint_proto::access::{Access, Grant, JobPattern};
    use rackpoint_proto::cluster::{ClusterLayout, CodeParams};
    use rackpoint_proto::{NodeId, NodeInfo, Request};
    use rustls::pki_types::pem::PemObject;

    struct Fixture {
        _dir: tempfile::TempDir,
        handler: Handler,
        ca: ClusterCa,
    }

    fn der(ca: &ClusterCa) -> Vec<u8> {
        rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())
            .expect("PEM")
            .to_vec()
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Arc::new(Engine::open(dir.path(), EngineOptions::default()).expect("opens"));
        let ca = ClusterCa::generate().expect("CA");
        let keeper = MapKeeper::open(&engine, vec![der(&ca)]).expect("keeper");
        let identity = NodeIdentity { node_id: NodeId(1), rack: "r".into() };
        let handler = Handler::new(engine, Arc::default(), identity, InflightBudget::default())
            .with_cluster_maps(Arc::new(keeper));
        Fixture { _dir: dir, handler, ca }
    }

    fn layout(epoch: u64) -> ClusterLayout {
        ClusterLayout {
            epoch,
            code: CodeParams::new(2, 1, 4096).expect("valid"),
            nodes: (1..=3)
                .map(|i| NodeInfo {
                    id: NodeId(i),
                    addr: ([127, 0, 0, 1], 7000 + i as u16).into(),
                    rack: "r".into(),
                    decommissioned: false,
                })
                .collect(),
        }
    }

    fn admin() -> Caller {
        Caller::in_process("admin", Grant::admin())
    }

    async fn push(f: &Fixture, who: &Caller, epoch: u64, bytes: &[u8]) -> Response {
        let req = Request::PutClusterMap { epoch };
        f.handler.handle(who, req, Bytes::copy_from_slice(bytes)).await.response
    }

    fn code(r: &Response) -> Option<ErrorCode> {
        match r {
            Response::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    async fn hello_epoch(f: &Fixture, version: u8) -> u64 {
        let reply = f.handler.handle_at(&admin(), Request::Hello, Bytes::new(), version).await;
        match reply.response {
            Response::Hello { map_epoch, .. } => map_epoch,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn only_a_signed_newer_map_from_an_admin_is_taken() {
        let f = fixture();
        let get = |f: &Fixture| {
            let h = f.handler.clone();
            async move { h.handle(&admin(), Request::GetClusterMap, Bytes::new()).await }
        };
        assert_eq!(code(&get(&f).await.response), Some(ErrorCode::NotFound));
        let one = f.ca.sign_layout(&layout(1)).expect("signs");
        let writer = Caller::in_process(
            "writer",
            Grant::new(Access::Write, vec![JobPattern::All]).expect("grant"),
        );
        assert_eq!(code(&push(&f, &writer, 1, &one).await), Some(ErrorCode::PermissionDenied));
        let stranger = ClusterCa::generate().expect("CA").sign_layout(&layout(5)).expect("signs");
        assert_eq!(code(&push(&f, &admin(), 5, &stranger).await), Some(ErrorCode::UnsignedMap));
        assert_eq!(code(&push(&f, &admin(), 1, b"not a map").await), Some(ErrorCode::UnsignedMap));
        assert_eq!(code(&push(&f, &admin(), 2, &one).await), Some(ErrorCode::Malformed));
        assert_eq!(hello_epoch(&f, 3).await, 0, "nothing taken yet");
        assert_eq!(
            push(&f, &admin(), 1, &one).await,
            Response::ClusterMapStored { existed: false }
        );
        assert_eq!(push(&f, &admin(), 1, &one).await, Response::ClusterMapStored { existed: true });
        let one_again = f.ca.sign_layout(&layout(1)).expect("signs");
        assert_ne!(one_again, one, "ECDSA signs anew each time");
        assert_eq!(
            push(&f, &admin(), 1, &one_again).await,
            Response::ClusterMapStored { existed: true },
            "the same map signed again is the map held"
        );
        let two = f.ca.sign_layout(&layout(2)).expect("signs");
        assert_eq!(
            push(&f, &admin(), 2, &two).await,
            Response::ClusterMapStored { existed: false }
        );
        assert_eq!(code(&push(&f, &admin(), 1, &one).await), Some(ErrorCode::StaleMap { held: 2 }));
        let other_two = {
            let mut l = layout(2);
            l.nodes.pop();
            f.ca.sign_layout(&l).expect("signs")
        };
        assert_eq!(
            code(&push(&f, &admin(), 2, &other_two).await),
            Some(ErrorCode::StaleMap { held: 2 }),
            "another map of the same epoch is no newer"
        );
        let served = get(&f).await;
        assert_eq!(served.response, Response::ClusterMap { epoch: 2 });
        assert_eq!(served.payload.as_ref(), two.as_slice());
        assert_eq!((hello_epoch(&f, 3).await, hello_epoch(&f, 2).await), (2, 0));
    }
}
