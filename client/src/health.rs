//! The client's live view of which nodes are up: the pure [`HealthView`] behind a lock, fed
//! with the real clock, with a log line when a node goes down or comes back. The rules are
//! the view's: a request that fails at the node level (connect, timeout, lost connection)
//! marks its node down, so every later stripe plans around it at once: a dead node costs one
//! timeout, not one per shard. Any answer brings it back, including the heartbeats (`Hello`
//! every `HEARTBEAT_INTERVAL_MS`, sent by `ctx`).
//!
//! It also tells a busy node from a stalled one: a node with requests outstanding that has
//! completed none for a while is stopped or partitioned (`suspect_stalled` marks it down),
//! while a node that keeps answering is merely loaded, and hedging around it would only add
//! load.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rackpoint_proto::NodeId;

use crate::health_view::{Change, HealthView, RequestEnd};

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

    /// A request to `id` starts; the guard ends it (abandoned unless `answered` or
    /// `node_failed` is called).
    pub fn begin(self: &Arc<Self>, id: NodeId) -> Outstanding {
        self.lock().begin(id, Instant::now());
        Outstanding { health: self.clone(), id, how: RequestEnd::Abandoned }
    }

    /// Stall suspicion (see [`HealthView::suspect_stalled`]): marks down the `late` nodes
    /// that answered nothing for a whole `hedge_after` at `now`; returns those it took down.
    pub fn suspect_stalled(
        &self,
        late: Vec<NodeId>,
        now: Instant,
        hedge_after: Duration,
    ) -> Vec<NodeId> {
        let suspected = self.lock().suspect_stalled(late, now, hedge_after);
        for &n in &suspected {
            log(n, Change::WentDown);
        }
        suspected
    }

    fn end(&self, id: NodeId, how: RequestEnd) {
        log(id, self.lock().end(id, how, Instant::now()));
    }

    /// Ids currently believed down.
    pub fn down_nodes(&self) -> Vec<NodeId> {
        self.lock().down_nodes()
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

/// One outstanding request; dropping it without `answered` or `node_failed` counts as
/// abandoned (no progress, no failure).
#[derive(Debug)]
pub struct Outstanding {
    health: Arc<Health>,
    id: NodeId,
    how: RequestEnd,
}

impl Outstanding {
    /// The node answered (with data or with an error of its own): it is alive.
    pub fn answered(mut self) {
        self.how = RequestEnd::Answered;
    }

    /// The request failed at the node level: the node is down.
    pub fn node_failed(mut self) {
        self.how = RequestEnd::NodeFailure;
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.health.end(self.id, self.how);
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
    fn a_stalled_node_is_suspected_and_an_answer_brings_it_back() {
        let h = Arc::new(Health::default());
        let (id, hedge) = (NodeId(3), Duration::from_millis(100));
        let t0 = Instant::now();
        assert!(h.suspect_stalled(vec![id], t0 + hedge * 10, hedge).is_empty(), "nothing out");
        let first = h.begin(id);
        let second = h.begin(id);
        assert!(h.suspect_stalled(vec![id], Instant::now(), hedge).is_empty(), "not yet");
        first.answered();
        let later = Instant::now() + hedge;
        assert_eq!(h.suspect_stalled(vec![id], later, hedge), vec![id], "no answer since");
        assert!(h.is_down(id));
        let third = h.begin(id);
        third.answered();
        assert!(!h.is_down(id), "an answer brings a suspected node back");
        drop(second);
        assert!(!h.is_down(id), "an abandoned request is no failure");
        assert!(h.suspect_stalled(vec![id], later + hedge * 10, hedge).is_empty(), "nothing out");
    }

    #[test]
    fn a_node_level_failure_takes_the_node_down() {
        let h = Arc::new(Health::default());
        h.begin(NodeId(5)).node_failed();
        assert!(h.is_down(NodeId(5)));
        assert_eq!(h.down_nodes(), vec![NodeId(5)]);
    }
}
