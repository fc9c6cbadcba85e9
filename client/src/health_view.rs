//! The health view, pure: which nodes are believed down, and which have stalled (requests
//! outstanding, none answered for a while). Every call takes `now`; nothing here reads a
//! clock, so the client (`health`, behind a lock, with the real clock) and the simulator's
//! fast mode (with its own clock) drive the same rules:
//!
//! - a node-level failure marks a node down at once (a dead node costs one timeout, not one
//!   per shard); any answer, of any kind, brings it back;
//! - a node is *stalled* when it has requests outstanding and has answered none for a whole
//!   window (its last answer, or the moment its first outstanding request began, is older
//!   than the window): stopped or partitioned, unlike a busy node that still answers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rackpoint_proto::NodeId;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NodeState {
    down_since: Option<Instant>,
    /// Requests sent and not yet answered.
    outstanding: u32,
    /// Last answer, or when `outstanding` last went from 0 to 1.
    progress_at: Option<Instant>,
}

/// What changed for a node, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    None,
    /// The node was down and is up again.
    BackUp,
    /// The node was up and is now believed down.
    WentDown,
}

/// Up/down and progress state of every node seen so far (an unseen node is up).
#[derive(Debug, Clone, Default)]
pub struct HealthView {
    nodes: HashMap<NodeId, NodeState>,
}

impl HealthView {
    /// Whether `id` is believed down.
    pub fn is_down(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|s| s.down_since.is_some())
    }

    /// Since when `id` is believed down, if it is.
    pub fn down_since(&self, id: NodeId) -> Option<Instant> {
        self.nodes.get(&id).and_then(|s| s.down_since)
    }

    /// A node-level failure of `id` at `now` (or a suspicion): it is down from now on.
    pub fn mark_down(&mut self, id: NodeId, now: Instant) -> Change {
        let s = self.nodes.entry(id).or_default();
        if s.down_since.is_some() {
            return Change::None;
        }
        s.down_since = Some(now);
        Change::WentDown
    }

    /// `id` answered something outside a tracked request (a heartbeat, say).
    pub fn mark_up(&mut self, id: NodeId) -> Change {
        bring_up(self.nodes.entry(id).or_default())
    }

    /// A request to `id` begins at `now`.
    pub fn begin(&mut self, id: NodeId, now: Instant) {
        let s = self.nodes.entry(id).or_default();
        s.outstanding = s.outstanding.saturating_add(1);
        if s.outstanding == 1 {
            s.progress_at = Some(now);
        }
    }

    /// A request to `id` ended at `now`: `answered` if the node replied (with data or an
    /// error of its own), which is progress and brings the node back up.
    pub fn end(&mut self, id: NodeId, answered: bool, now: Instant) -> Change {
        let s = self.nodes.entry(id).or_default();
        s.outstanding = s.outstanding.saturating_sub(1);
        if !answered {
            return Change::None;
        }
        s.progress_at = Some(now);
        bring_up(s)
    }

    /// Whether `id` has requests outstanding and has answered none for `window` at `now`.
    pub fn is_stalled(&self, id: NodeId, now: Instant, window: Duration) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|s| s.outstanding > 0 && s.progress_at.is_none_or(|t| now >= t + window))
    }

    /// Requests outstanding to `id`.
    pub fn outstanding(&self, id: NodeId) -> u32 {
        self.nodes.get(&id).map_or(0, |s| s.outstanding)
    }

    /// Ids believed down, ascending.
    pub fn down_nodes(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> =
            self.nodes.iter().filter(|(_, s)| s.down_since.is_some()).map(|(id, _)| *id).collect();
        v.sort();
        v
    }
}

fn bring_up(s: &mut NodeState) -> Change {
    match s.down_since.take() {
        Some(_) => Change::BackUp,
        None => Change::None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const WINDOW: Duration = Duration::from_millis(100);

    #[test]
    fn down_and_back_up() {
        let (mut h, t0) = (HealthView::default(), Instant::now());
        assert!(!h.is_down(NodeId(1)));
        assert_eq!(h.mark_down(NodeId(1), t0), Change::WentDown);
        assert_eq!(h.mark_down(NodeId(1), t0 + WINDOW), Change::None, "already down");
        assert_eq!(h.down_since(NodeId(1)), Some(t0), "since the first failure");
        assert_eq!(h.down_nodes(), vec![NodeId(1)]);
        assert_eq!(h.mark_up(NodeId(1)), Change::BackUp);
        assert_eq!(h.mark_up(NodeId(1)), Change::None);
        assert!(h.down_nodes().is_empty());
    }

    #[test]
    fn an_answer_is_progress_and_brings_a_node_back() {
        let (mut h, t0) = (HealthView::default(), Instant::now());
        let id = NodeId(3);
        assert!(!h.is_stalled(id, t0 + WINDOW * 10, WINDOW), "nothing outstanding");
        h.begin(id, t0);
        h.begin(id, t0 + WINDOW / 2);
        assert!(!h.is_stalled(id, t0 + WINDOW / 2, WINDOW));
        assert!(h.is_stalled(id, t0 + WINDOW, WINDOW), "the window runs from the first request");
        assert_eq!(h.end(id, true, t0 + WINDOW), Change::None);
        assert!(!h.is_stalled(id, t0 + WINDOW, WINDOW), "an answer restarts the window");
        assert!(h.is_stalled(id, t0 + WINDOW * 2, WINDOW), "one still outstanding");
        h.mark_down(id, t0 + WINDOW * 2);
        assert_eq!(h.end(id, false, t0 + WINDOW * 3), Change::None, "a timeout is no answer");
        assert!(h.is_down(id));
        h.begin(id, t0 + WINDOW * 3);
        assert_eq!(h.end(id, true, t0 + WINDOW * 3), Change::BackUp);
        assert!(!h.is_stalled(id, t0 + WINDOW * 10, WINDOW), "nothing outstanding");
    }

    proptest! {
        /// Outstanding counts never underflow and match begins minus ends; a node is down
        /// exactly when its last up/down event was a failure; a node with nothing
        /// outstanding is never stalled.
        #[test]
        fn the_view_follows_its_events(events in proptest::collection::vec((0u32..4, 0u8..5, 0u64..300), 0..80)) {
            let (mut h, t0) = (HealthView::default(), Instant::now());
            let mut outstanding = [0u32; 4];
            let mut down = [false; 4];
            let mut now = t0;
            for (node, what, dt) in events {
                now += Duration::from_millis(dt);
                let id = NodeId(node);
                let i = node as usize;
                match what {
                    0 => { h.begin(id, now); outstanding[i] += 1; }
                    1 | 2 => {
                        let answered = what == 1;
                        h.end(id, answered, now);
                        outstanding[i] = outstanding[i].saturating_sub(1);
                        if answered { down[i] = false; }
                    }
                    3 => { h.mark_down(id, now); down[i] = true; }
                    _ => { h.mark_up(id); down[i] = false; }
                }
                for n in 0..4u32 {
                    prop_assert_eq!(h.outstanding(NodeId(n)), outstanding[n as usize]);
                    prop_assert_eq!(h.is_down(NodeId(n)), down[n as usize]);
                    if outstanding[n as usize] == 0 {
                        prop_assert!(!h.is_stalled(NodeId(n), now + WINDOW * 100, WINDOW));
                    }
                }
            }
        }
    }
}
