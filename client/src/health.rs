//! The client's live view of which nodes are up. A node is marked down when a request to it
//! fails at the node level (connect, timeout, lost connection), so every later stripe plans
//! around it at once: a dead node costs one timeout, not one per shard. Heartbeats (`Hello`
//! every `HEARTBEAT_INTERVAL_MS`) bring it back when it answers again.
//!
//! It also tells a busy node from a stalled one: a node with requests outstanding that has
//! completed none for a while (`is_stalled`) is stopped or partitioned, while a node that
//! keeps answering is merely loaded, and hedging around it would only add load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rackpoint_proto::limits::{HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS};
use rackpoint_proto::{NodeId, Request};

use crate::transport::Transport;

#[derive(Debug, Clone, Copy, Default)]
struct NodeState {
    down_since: Option<Instant>,
    /// Requests sent and not yet answered.
    outstanding: u32,
    /// Last answer, or when `outstanding` last went from 0 to 1.
    progress_at: Option<Instant>,
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
        let newly = s.down_since.is_none();
        if newly {
            s.down_since = Some(Instant::now());
            tracing::warn!(node = %id, "node marked down");
        }
        newly
    }

    /// Records that `id` answered.
    pub fn mark_up(&self, id: NodeId) {
        bring_up(self.lock().entry(id).or_default(), id);
    }

    /// A request to `id` starts; the guard ends it (as a failure unless `answered` is called).
    pub fn begin(self: &Arc<Self>, id: NodeId) -> Outstanding {
        let mut nodes = self.lock();
        let s = nodes.entry(id).or_default();
        s.outstanding += 1;
        if s.outstanding == 1 {
            s.progress_at = Some(Instant::now());
        }
        Outstanding { health: self.clone(), id, answered: false }
    }

    /// Whether `id` has requests outstanding and has answered none for `after`.
    pub fn is_stalled(&self, id: NodeId, now: Instant, after: Duration) -> bool {
        self.lock()
            .get(&id)
            .is_some_and(|s| s.outstanding > 0 && s.progress_at.is_none_or(|t| now >= t + after))
    }

    fn end(&self, id: NodeId, answered: bool) {
        let mut nodes = self.lock();
        let s = nodes.entry(id).or_default();
        s.outstanding = s.outstanding.saturating_sub(1);
        if answered {
            s.progress_at = Some(Instant::now());
            bring_up(s, id);
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

fn bring_up(s: &mut NodeState, id: NodeId) {
    if s.down_since.take().is_some() {
        tracing::info!(node = %id, "node is back up");
    }
}

/// One outstanding request; dropping it without `answered` counts as no progress.
#[derive(Debug)]
pub struct Outstanding {
    health: Arc<Health>,
    id: NodeId,
    answered: bool,
}

impl Outstanding {
    /// The node answered (with data or with an error of its own): it is alive.
    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.health.end(self.id, self.answered);
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

    #[test]
    fn stalled_means_outstanding_without_progress() {
        let h = Arc::new(Health::default());
        let (id, hedge) = (NodeId(3), Duration::from_millis(100));
        let t0 = Instant::now();
        assert!(!h.is_stalled(id, t0 + hedge * 10, hedge), "nothing outstanding");
        let first = h.begin(id);
        let second = h.begin(id);
        assert!(!h.is_stalled(id, Instant::now(), hedge));
        assert!(h.is_stalled(id, Instant::now() + hedge, hedge), "no answer for the whole window");
        first.answered();
        assert!(!h.is_stalled(id, Instant::now(), hedge), "an answer is progress");
        h.mark_down(id);
        let third = h.begin(id);
        third.answered();
        assert!(!h.is_down(id), "an answer brings a suspected node back");
        drop(second);
        assert!(!h.is_stalled(id, Instant::now() + hedge * 10, hedge), "nothing outstanding");
    }
}
