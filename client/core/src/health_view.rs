//! The health view, pure: which nodes are believed down, and which have stalled (requests
//! outstanding, none answered for a while). Every call takes `now`; nothing here reads a
//! clock, so the client (`health`, behind a lock, with the real clock) and the simulator's
//! fast mode (with its own clock) drive the same rules:
//!
//! - a request ends one of three ways ([`RequestEnd`]): a node-level failure marks the node
//!   down at once (a dead node costs one timeout, not one per shard); any answer, of any
//!   kind, brings it back; a request the caller abandoned changes neither;
//! - a node is *stalled* when it has requests outstanding and has answered none for a whole
//!   window (its last answer, or the moment its first outstanding request began, is older
//!   than the window): stopped or partitioned, unlike a busy node that still answers;
//! - stall suspicion ([`HealthView::suspect_stalled`]): a node a restore has a late fetch on
//!   and that stalled for a whole hedging threshold is marked down, so every stripe plans
//!   around it until it answers again.

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

/// How a request to a node ended, as the health rules take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestEnd {
    /// The node replied, with data or with an error of its own: progress, and it is up.
    Answered,
    /// A node-level failure (no connection, no answer in time, the connection lost, the node
    /// shutting down): it is down from now on.
    NodeFailure,
    /// The caller stopped waiting (a fetch no longer needed): neither progress nor failure.
    Abandoned,
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

    /// A request to `id` ended at `now`, as `how` says (see [`RequestEnd`]).
    pub fn end(&mut self, id: NodeId, how: RequestEnd, now: Instant) -> Change {
        let s = self.nodes.entry(id).or_default();
        s.outstanding = s.outstanding.saturating_sub(1);
        match how {
            RequestEnd::Answered => {
                s.progress_at = Some(now);
                bring_up(s)
            }
            RequestEnd::NodeFailure => self.mark_down(id, now),
            RequestEnd::Abandoned => Change::None,
        }
    }

    /// Stall suspicion at `now`: of the `late` nodes (those a restore planner has a fetch
    /// outstanding on for longer than the hedging threshold `hedge_after`), marks down each
    /// that is stalled for the whole threshold; returns the nodes this took down.
    pub fn suspect_stalled(
        &mut self,
        late: impl IntoIterator<Item = NodeId>,
        now: Instant,
        hedge_after: Duration,
    ) -> Vec<NodeId> {
        late.into_iter()
            .filter(|&n| {
                self.is_stalled(n, now, hedge_after) && self.mark_down(n, now) == Change::WentDown
            })
            .collect()
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
        assert_eq!(h.end(id, RequestEnd::Answered, t0 + WINDOW), Change::None);
        assert!(!h.is_stalled(id, t0 + WINDOW, WINDOW), "an answer restarts the window");
        assert!(h.is_stalled(id, t0 + WINDOW * 2, WINDOW), "one still outstanding");
        h.mark_down(id, t0 + WINDOW * 2);
        assert_eq!(h.end(id, RequestEnd::Abandoned, t0 + WINDOW * 3), Change::None);
        assert!(h.is_down(id), "an abandoned request is no answer");
        h.begin(id, t0 + WINDOW * 3);
        assert_eq!(h.end(id, RequestEnd::Answered, t0 + WINDOW * 3), Change::BackUp);
        assert!(!h.is_stalled(id, t0 + WINDOW * 10, WINDOW), "nothing outstanding");
    }

    #[test]
    fn a_node_level_failure_marks_the_node_down_once() {
        let (mut h, t0) = (HealthView::default(), Instant::now());
        let id = NodeId(2);
        h.begin(id, t0);
        h.begin(id, t0);
        assert_eq!(h.end(id, RequestEnd::NodeFailure, t0 + WINDOW), Change::WentDown);
        assert_eq!(h.down_since(id), Some(t0 + WINDOW));
        assert_eq!(h.end(id, RequestEnd::NodeFailure, t0 + WINDOW * 2), Change::None);
        assert_eq!(h.outstanding(id), 0, "both requests ended");
        assert_eq!(h.down_since(id), Some(t0 + WINDOW), "down since the first failure");
    }

    #[test]
    fn only_late_nodes_stalled_for_the_whole_threshold_are_suspected() {
        let (mut h, t0) = (HealthView::default(), Instant::now());
        let (stalled, busy, idle, down) = (NodeId(1), NodeId(2), NodeId(3), NodeId(4));
        for n in [stalled, busy, down] {
            h.begin(n, t0);
            h.begin(n, t0);
        }
        h.end(busy, RequestEnd::Answered, t0 + WINDOW / 2);
        h.mark_down(down, t0);
        let late = [stalled, busy, idle, down];
        assert!(h.suspect_stalled(late, t0 + WINDOW / 2, WINDOW).is_empty(), "not yet");
        assert_eq!(h.suspect_stalled(late, t0 + WINDOW, WINDOW), vec![stalled]);
        assert!(h.is_down(stalled));
        assert!(!h.is_down(busy), "it answered within the threshold");
        assert!(!h.is_down(idle), "nothing outstanding");
        assert!(h.suspect_stalled([stalled], t0 + WINDOW * 2, WINDOW).is_empty(), "already");
        assert!(h.suspect_stalled([NodeId(9)], t0 + WINDOW * 9, WINDOW).is_empty(), "never asked");
    }

    proptest! {
        /// Outstanding counts never underflow and match begins minus ends; a node is down
        /// exactly when its last up/down event was a failure (a mark or a node-level end; an
        /// abandoned request is neither); a node with nothing
        /// outstanding is never stalled.
        #[test]
        fn the_view_follows_its_events(events in proptest::collection::vec((0u32..4, 0u8..6, 0u64..300), 0..80)) {
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
                    1 => {
                        h.end(id, RequestEnd::Answered, now);
                        outstanding[i] = outstanding[i].saturating_sub(1);
                        down[i] = false;
                    }
                    2 => {
                        h.end(id, RequestEnd::Abandoned, now);
                        outstanding[i] = outstanding[i].saturating_sub(1);
                    }
                    3 => { h.mark_down(id, now); down[i] = true; }
                    4 => { h.mark_up(id); down[i] = false; }
                    _ => {
                        h.end(id, RequestEnd::NodeFailure, now);
                        outstanding[i] = outstanding[i].saturating_sub(1);
                        down[i] = true;
                    }
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
