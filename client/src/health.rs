//! The client's live view of which nodes are up. A node is marked down when a request to it
//! fails at the node level (connect, timeout, lost connection), so every later stripe plans
//! around it at once: a dead node costs one timeout, not one per shard. Heartbeats (`Hello`
//! every `HEARTBEAT_INTERVAL_MS`) bring it back when it answers again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rackpoint_proto::limits::{HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS};
use rackpoint_proto::{NodeId, Request};

use crate::transport::Transport;

#[derive(Debug, Clone, Copy, Default)]
struct NodeState {
    down_since: Option<Instant>,
    failures: u64,
}

/// Shared up/down state of every node in the map.
#[derive(Debug, Default)]
pub struct Health {
    nodes: Mutex<HashMap<NodeId, NodeState>>,
}

impl Health {
    /// Whether `id` is currently believed down.
    pub fn is_down(&self, id: NodeId) -> bool {
        self.lock().get(&id).is_some_and(|s| s.down_since.is_some())
    }

    /// Records a node-level failure of `id`; returns true if this call took it down.
    pub fn mark_down(&self, id: NodeId) -> bool {
        let mut nodes = self.lock();
        let s = nodes.entry(id).or_default();
        s.failures += 1;
        let newly = s.down_since.is_none();
        if newly {
            s.down_since = Some(Instant::now());
            tracing::warn!(node = %id, "node marked down");
        }
        newly
    }

    /// Records that `id` answered.
    pub fn mark_up(&self, id: NodeId) {
        let mut nodes = self.lock();
        let s = nodes.entry(id).or_default();
        if s.down_since.take().is_some() {
            tracing::info!(node = %id, "node is back up");
        }
    }

    /// Ids currently believed down.
    pub fn down_nodes(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> =
            self.lock().iter().filter(|(_, s)| s.down_since.is_some()).map(|(id, _)| *id).collect();
        v.sort();
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, NodeState>> {
        // A panic while holding this lock cannot leave the map inconsistent (plain inserts).
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Pings every node with `Hello` forever, updating `health`; run it as a task and abort it
/// when the client goes away.
pub async fn heartbeat_loop(transport: Arc<Transport>, health: Arc<Health>) {
    let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ids: Vec<NodeId> = transport.map().nodes.iter().map(|n| n.id).collect();
        let pings = ids.into_iter().map(|id| {
            let (transport, health) = (transport.clone(), health.clone());
            async move {
                let timeout = Duration::from_millis(HEARTBEAT_TIMEOUT_MS);
                let hello =
                    transport.call_with_timeout(id, &Request::Hello, Default::default(), timeout);
                match hello.await {
                    Ok(_) => health.mark_up(id),
                    Err(e) if e.is_node_failure() => {
                        if health.mark_down(id) {
                            transport.forget(id);
                        }
                    }
                    Err(_) => health.mark_up(id),
                }
            }
        });
        futures::future::join_all(pings).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_and_up() {
        let h = Health::default();
        assert!(!h.is_down(NodeId(1)));
        assert!(h.mark_down(NodeId(1)));
        assert!(!h.mark_down(NodeId(1)), "already down");
        assert!(h.is_down(NodeId(1)));
        assert_eq!(h.down_nodes(), vec![NodeId(1)]);
        h.mark_up(NodeId(1));
        assert!(!h.is_down(NodeId(1)));
        assert!(h.down_nodes().is_empty());
    }
}
