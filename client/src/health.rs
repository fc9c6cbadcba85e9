//! The client's live view of which nodes are up: the pure [`HealthView`] behind a lock, fed
//! with the real clock, with a log line when a node goes down or comes back. A node is marked
//! down when a request to it fails at the node level (connect, timeout, lost connection), so
//! every later stripe plans around it at once: a dead node costs one timeout, not one per
//! shard. Any answer brings it back, including the heartbeats (`Hello` every
//! `HEARTBEAT_INTERVAL_MS`, sent by `ctx`).
//!
//! It also tells a busy node from a stalled one: a node with requests outstanding that has
//! completed none for a while (`is_stalled`) is stopped or partitioned, while a node that
//! keeps answering is merely loaded, and hedging around it would only add load.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rackpoint_proto::NodeId;

use crate::health_view::{Change, HealthView};

/// Shared up/down state of every node in the map.
#[derive(Debug, Default)]
pub struct Health {
    view: Mutex<HealthView>,
}

impl Health {
    /// Whether `id` is currently believed down.
    pub fn is_down(&self, id: NodeId) -> bool {
        self.lock().is_down(id)
    }

    /// Records a node-level failure of `id`; returns true if this call took it down.
    pub fn mark_down(&self, id: NodeId) -> bool {
        log(id, self.lock().mark_down(id, Instant::now())) == Change::WentDown
    }

    /// Records that `id` answered.
    pub fn mark_up(&self, id: NodeId) {
        log(id, self.lock().mark_up(id));
    }

    /// A request to `id` starts; the guard ends it (as a failure unless `answered` is called).
    pub fn begin(self: &Arc<Self>, id: NodeId) -> Outstanding {
        self.lock().begin(id, Instant::now());
        Outstanding { health: self.clone(), id, answered: false }
    }

    /// Whether `id` has requests outstanding and has answered none for `after`.
    pub fn is_stalled(&self, id: NodeId, now: Instant, after: Duration) -> bool {
        self.lock().is_stalled(id, now, after)
    }

    fn end(&self, id: NodeId, answered: bool) {
        log(id, self.lock().end(id, answered, Instant::now()));
    }

    /// Ids currently believed down.
    pub fn down_nodes(&self) -> Vec<NodeId> {
        self.lock().down_nodes()
    }

    /// A copy of the view, to plan with without holding the lock.
    pub fn snapshot(&self) -> HealthView {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthView> {
        // A panic while holding this lock cannot leave the view inconsistent (plain updates).
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn log(id: NodeId, change: Change) -> Change {
    match change {
        Change::WentDown => tracing::warn!(node = %id, "node marked down"),
        Change::BackUp => tracing::info!(node = %id, "node is back up"),
        Change::None => {}
    }
    change
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
