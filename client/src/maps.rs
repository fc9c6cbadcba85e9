//! The newest cluster map this client knows, and the heartbeat that learns it. [`Maps`]
//! holds the `Ctx` of the newest map; an operation takes it once ([`Maps::current`]) and
//! keeps it to the end, so it never sees two maps. The heartbeat (`Hello` to every node
//! every `HEARTBEAT_INTERVAL_MS`, through `Ctx::call`, which keeps the health view) reads
//! each node's map epoch; when one is newer than the client's, the client fetches that
//! node's signed map (`GetClusterMap`) and takes it only if it verifies against the cluster
//! CA the client trusts and is newer still (`signed_map`'s rules). A map a node served that
//! failed is not asked of that node again at that epoch. Taking a map makes a new `Ctx`
//! (transport, health, request slots and pools sized for its nodes and code) with the
//! client's own TLS identity, for operations that start from then on.
//!
//! Before a client's first operation, one round of `Hello`s (each at most
//! `HEARTBEAT_TIMEOUT_MS`) learns the newest map ([`Maps::learned`]), so a client started
//! with an old `cluster.toml` places its first save by the newest map.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use rackpoint_proto::limits::HEARTBEAT_INTERVAL_MS;
use rackpoint_proto::signed_map::{check_newer, MapError, SignedMap};
use rackpoint_proto::NodeId;

use crate::ctx::{ClientOptions, Ctx};
use crate::tls::ClientTls;
use crate::transport::TransportError;

/// Why a map a node served was not taken.
#[derive(Debug, thiserror::Error)]
pub enum MapFetchError {
    /// The node did not serve it.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// It failed the signature or the epoch rule, or is not a valid map.
    #[error("node {node} served a cluster map that was refused: {error}")]
    Refused {
        /// The node.
        node: NodeId,
        /// Why.
        error: MapError,
    },
}

/// The `Ctx` of the newest map, and what a newer one is built with.
pub(crate) struct Maps {
    current: RwLock<Arc<Ctx>>,
    tls: ClientTls,
    options: ClientOptions,
    /// Set once the first round of `Hello`s has been heard.
    learned: tokio::sync::OnceCell<()>,
    /// (node, epoch) pairs whose served map was refused: not fetched again.
    refused: Mutex<HashSet<(NodeId, u64)>>,
}

impl Maps {
    /// Starts from `ctx` (the map the client was given).
    pub(crate) fn new(ctx: Ctx, tls: &ClientTls, options: &ClientOptions) -> Self {
        Self {
            current: RwLock::new(Arc::new(ctx)),
            tls: tls.clone(),
            options: options.clone(),
            learned: tokio::sync::OnceCell::new(),
            refused: Mutex::default(),
        }
    }

    /// The context of the newest map taken so far.
    pub(crate) fn current(&self) -> Arc<Ctx> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The context of the newest map, once the first round of `Hello`s has been heard.
    pub(crate) async fn learned(&self) -> Arc<Ctx> {
        self.learned
            .get_or_init(|| async {
                let ctx = self.current();
                let epochs = hellos(&ctx).await;
                self.take_newer(&ctx, epochs).await;
            })
            .await;
        self.current()
    }

    /// Fetches and takes the newest map the `epochs` (what nodes said they hold) name, if
    /// newer than `ctx`'s: nodes of the newest epoch first; a node whose map fails moves
    /// on to the next.
    async fn take_newer(&self, ctx: &Ctx, epochs: Vec<(NodeId, u64)>) {
        let own = ctx.map.epoch;
        let mut newer: Vec<(NodeId, u64)> = {
            let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            epochs.into_iter().filter(|(n, e)| *e > own && !refused.contains(&(*n, *e))).collect()
        };
        newer.sort_by_key(|(n, e)| (std::cmp::Reverse(*e), *n));
        for (node, epoch) in newer {
            match self.fetch(ctx, node).await {
                Ok(map) => {
                    self.take(node, map);
                    return;
                }
                Err(e) => {
                    tracing::warn!("cluster map epoch {epoch} from node {node}: {e}");
                    if matches!(e, MapFetchError::Refused { .. }) {
                        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                        refused.insert((node, epoch));
                    }
                }
            }
        }
    }

    /// A node's signed map, verified against the client's CA and newer than `ctx`'s.
    pub(crate) async fn fetch(&self, ctx: &Ctx, node: NodeId) -> Result<SignedMap, MapFetchError> {
        let bytes = ctx.get_cluster_map(node).await?;
        let refused = |error| MapFetchError::Refused { node, error };
        let map = SignedMap::open(&bytes, &self.tls.ca_certificates()).map_err(refused)?;
        check_newer(Some(ctx.map.epoch), map.epoch()).map_err(refused)?;
        Ok(map)
    }

    /// Makes the context of `map` the current one, unless a map as new is current already.
    fn take(&self, node: NodeId, map: SignedMap) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if check_newer(Some(current.map.epoch), map.epoch()).is_err() {
            return;
        }
        let next = current.map.with_layout(map.layout().clone());
        let (epoch, nodes) = (next.epoch, next.nodes.len());
        match Ctx::new(next, &self.tls, &self.options) {
            Ok(ctx) => {
                ctx.set_progress(current.progress());
                let old = std::mem::replace(&mut *current, Arc::new(ctx));
                tracing::info!(epoch, nodes, %node, "took a newer cluster map");
                tokio::spawn(close_when_unused(old));
            }
            Err(e) => tracing::warn!("cannot use cluster map epoch {epoch}: {e}"),
        }
    }
}

/// Every node's map epoch, from one round of `Hello`s (nodes that did not answer left out).
async fn hellos(ctx: &Ctx) -> Vec<(NodeId, u64)> {
    let pings = ctx.map.nodes.iter().map(|n| async move { (n.id, ctx.hello(n.id).await) });
    let answers = futures::future::join_all(pings).await;
    answers.into_iter().filter_map(|(n, epoch)| epoch.ok().map(|e| (n, e))).collect()
}

/// Closes an old map's connections once no operation holds its context any more.
async fn close_when_unused(old: Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    while Arc::strong_count(&old) > 1 {
        tick.tick().await;
    }
    old.close().await;
}

/// Pings every node of the current map with `Hello` every `HEARTBEAT_INTERVAL_MS` through
/// [`Ctx::call`], which updates the health view, and takes a newer map when a node names
/// one; ends when the client is gone. Run it as a task.
pub(crate) async fn heartbeat_loop(maps: Weak<Maps>) {
    let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(maps) = maps.upgrade() else { return };
        let ctx = maps.current();
        let epochs = hellos(&ctx).await;
        maps.take_newer(&ctx, epochs).await;
    }
}
