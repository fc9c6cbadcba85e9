//! The simulated world of fast mode: a clock that is a number, an ordered event queue, nodes
//! with their disks and links, and the client's health view of them. Nothing here reads a
//! clock or the operating system: the same seed makes the same world.
//!
//! Model. A request to an up node waits for the node (one request served at a time, so a
//! busy node queues), takes a fixed service time plus its bytes over the node's bandwidth,
//! and one round trip (plus any added delay, plus a retransmission timeout per lost
//! datagram). A request to a node that is dead fails after the connect timeout; to a frozen
//! or partitioned node, after the request timeout. A node whose state changes while a
//! request is in flight loses that request. Heartbeats (every `HEARTBEAT_INTERVAL_MS`, each
//! waiting `HEARTBEAT_TIMEOUT_MS`) mark an unavailable node down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rackpoint_client::health_view::{HealthView, RequestEnd};
use rackpoint_proto::limits::{
    CLIENT_CONNECT_TIMEOUT_MS, CLIENT_REQUEST_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_TIMEOUT_MS,
};
use rackpoint_proto::{Digest, NodeId};
use rand::rngs::StdRng;
use rand::Rng;

/// Simulated time, in microseconds since the trial began.
pub type Micros = u64;

/// Round trip between the client and a node.
pub const LINK_RTT_US: Micros = 100;
/// Fixed cost of a shard put at a node (a synced write).
pub const PUT_SERVICE_US: Micros = 1_000;
/// Fixed cost of a shard get at a node.
pub const GET_SERVICE_US: Micros = 100;
/// Bytes per second one node moves (disk and network together).
pub const NODE_BYTES_PER_SEC: u64 = 1_000_000_000;
/// Added time per lost datagram (a QUIC retransmission after a probe timeout).
pub const LOSS_PENALTY_US: Micros = 10_000;

/// The planner takes `std::time::Instant`s, which cannot be made from a number: every
/// simulated instant is this one fixed origin plus simulated time. The origin is taken once
/// per process and never otherwise looked at; no simulated decision or report depends on it.
pub fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// A simulated time as the `Instant` the client's state machines take.
pub fn instant(t: Micros) -> Instant {
    origin() + Duration::from_micros(t)
}

/// A planner or machine instant back as simulated time.
pub fn micros_of(i: Instant) -> Micros {
    u64::try_from(i.saturating_duration_since(origin()).as_micros()).unwrap_or(u64::MAX)
}

/// What a node is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Serving.
    Up,
    /// Killed (its disk keeps what it had).
    Dead,
    /// SIGSTOP: connections stay, nothing is answered.
    Frozen,
    /// Cut off by the network.
    Partitioned,
}

/// How a stored shard went bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rot {
    /// Bit rot the node finds when it re-hashes on read (it answers "corrupt").
    Detected,
    /// Bad bytes the node serves as good (a node bug, a lying disk): the client's own hash
    /// check must catch them.
    Silent,
}

/// A shard's place: `(step, stripe number in the checkpoint, shard index)`.
pub type ShardPlace = (u64, usize, u8);

/// One simulated storage node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// What it is doing.
    pub state: NodeState,
    /// Bumped on every state change; a request sent in another epoch is lost.
    pub epoch: u64,
    /// When it last became unavailable, if it is.
    pub unavailable_since: Option<Micros>,
    /// Added one-way delay of its link.
    pub delay_us: Micros,
    /// Probability that a datagram to or from it is lost.
    pub loss: f64,
    /// Service-time multiplier (a straggler's `(run + stop) / run`).
    pub slow: f64,
    /// Bytes its disk may still take (`None`: unbounded).
    pub free_bytes: Option<u64>,
    /// When it is next idle.
    pub busy_until: Micros,
    /// Shards it holds.
    pub shards: BTreeSet<ShardPlace>,
    /// Shards whose bytes are bad.
    pub rotten: BTreeMap<ShardPlace, Rot>,
    /// Manifest copies it holds: step to manifest id (what it answers a listing with).
    pub manifests: BTreeMap<u64, Digest>,
}

/// How a simulated request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Served.
    Ok,
    /// A put the node refused (disk full).
    Refused,
    /// A get of a shard the node found corrupt.
    Corrupt,
    /// A get of a shard the node does not have.
    Missing,
    /// The node did not answer (dead, frozen, partitioned, or it changed state meanwhile).
    NodeFailed,
}

/// The client's health view (the client's own pure `HealthView`, whose rules decide), fed
/// simulated times.
#[derive(Debug, Clone, Default)]
pub struct Health {
    view: HealthView,
}

impl Health {
    /// A request to `node` starts at `now`.
    pub fn begin(&mut self, node: NodeId, now: Micros) {
        self.view.begin(node, instant(now));
    }

    /// A request to `node` ended at `now`: `answered` when the node said anything; otherwise
    /// it did not answer at all, a node-level failure (a simulated node never refuses at the
    /// node level otherwise). What that does to the node is the view's rule.
    pub fn end(&mut self, node: NodeId, now: Micros, answered: bool) {
        let how = if answered { RequestEnd::Answered } else { RequestEnd::NodeFailure };
        self.view.end(node, how, instant(now));
    }

    /// Whether `node` is believed down.
    pub fn is_down(&self, node: NodeId) -> bool {
        self.view.is_down(node)
    }

    /// Marks `node` down at `now` (a failed heartbeat, a stall).
    pub fn mark_down(&mut self, node: NodeId, now: Micros) {
        self.view.mark_down(node, instant(now));
    }

    /// Whether nothing is believed down.
    pub fn all_up(&self) -> bool {
        self.view.down_nodes().is_empty()
    }

    /// Nodes believed down.
    pub fn down_count(&self) -> usize {
        self.view.down_nodes().len()
    }

    /// The core view itself, for the rules that fast mode drives directly with an
    /// [`instant`] (stall suspicion: `HealthView::suspect_stalled`).
    pub fn view_mut(&mut self) -> &mut HealthView {
        &mut self.view
    }
}

/// The nodes, the health view and the seeded randomness of one trial.
#[derive(Debug)]
pub struct World {
    /// Every node by id.
    pub nodes: BTreeMap<NodeId, Node>,
    /// The client's view.
    pub health: Health,
    /// Where the first heartbeat falls in its interval.
    pub heartbeat_phase_us: Micros,
    /// The trial's randomness (losses).
    pub rng: StdRng,
    /// Simulated bytes per stored byte (fast mode encodes shrunken shards; see
    /// `fast::FAST_SHARD_BYTES`).
    pub byte_scale: u64,
    /// Nodes not up (so heartbeats look at these, not at a thousand up nodes per event).
    unavailable: BTreeSet<NodeId>,
}

impl World {
    /// `count` up nodes with ids `1..=count`.
    pub fn new(count: usize, mut rng: StdRng) -> Self {
        let nodes = (1..=count as u32)
            .map(|i| {
                let id = NodeId(i);
                let node = Node {
                    id,
                    state: NodeState::Up,
                    epoch: 0,
                    unavailable_since: None,
                    delay_us: 0,
                    loss: 0.0,
                    slow: 1.0,
                    free_bytes: None,
                    busy_until: 0,
                    shards: BTreeSet::new(),
                    rotten: BTreeMap::new(),
                    manifests: BTreeMap::new(),
                };
                (id, node)
            })
            .collect();
        let heartbeat_phase_us = rng.gen_range(0..HEARTBEAT_INTERVAL_MS * 1000);
        Self {
            nodes,
            health: Health::default(),
            heartbeat_phase_us,
            rng,
            byte_scale: 1,
            unavailable: BTreeSet::new(),
        }
    }

    /// Changes `id`'s state at `now`.
    pub fn set_state(&mut self, id: NodeId, state: NodeState, now: Micros) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.state != state {
                n.state = state;
                n.epoch += 1;
                n.unavailable_since = (state != NodeState::Up).then_some(now);
                if state == NodeState::Up {
                    self.unavailable.remove(&id);
                } else {
                    self.unavailable.insert(id);
                }
            }
        }
    }

    /// When the heartbeats mark a node that became unavailable at `since` down.
    pub fn heartbeat_detects_at(&self, since: Micros) -> Micros {
        let interval = HEARTBEAT_INTERVAL_MS * 1000;
        let next_beat = if since <= self.heartbeat_phase_us {
            self.heartbeat_phase_us
        } else {
            self.heartbeat_phase_us
                + (since - self.heartbeat_phase_us).div_ceil(interval) * interval
        };
        next_beat + HEARTBEAT_TIMEOUT_MS * 1000
    }

    /// Marks down every unavailable node whose heartbeat has failed by `now`.
    pub fn run_heartbeats(&mut self, now: Micros) {
        let detected: Vec<(NodeId, Micros)> = self
            .unavailable
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .filter_map(|n| n.unavailable_since.map(|s| (n.id, self.heartbeat_detects_at(s))))
            .filter(|(_, at)| *at <= now)
            .collect();
        for (id, at) in detected {
            self.health.mark_down(id, at);
        }
    }

    /// Sends a request of `bytes` to `id` at `now`: returns when it ends and how, as seen at
    /// send time, with the node's epoch (to check again on arrival).
    pub fn send(&mut self, id: NodeId, now: Micros, bytes: usize, put: bool) -> (Micros, u64) {
        self.health.begin(id, now);
        let Some(n) = self.nodes.get_mut(&id) else { return (now, u64::MAX) };
        let timeout = match n.state {
            NodeState::Up => None,
            NodeState::Dead => Some(CLIENT_CONNECT_TIMEOUT_MS * 1000),
            NodeState::Frozen | NodeState::Partitioned => Some(CLIENT_REQUEST_TIMEOUT_MS * 1000),
        };
        if let Some(t) = timeout {
            return (now + t, n.epoch);
        }
        let base = if put { PUT_SERVICE_US } else { GET_SERVICE_US };
        let transfer = bytes as u64 * self.byte_scale * 1_000_000 / NODE_BYTES_PER_SEC;
        let service = ((base + transfer) as f64 * n.slow) as Micros;
        let start = now.max(n.busy_until);
        n.busy_until = start + service;
        let mut network = LINK_RTT_US + 2 * n.delay_us;
        // Each direction's datagrams: a loss costs one retransmission timeout, repeatedly.
        let loss = n.loss;
        let mut losses = 0;
        while loss > 0.0 && losses < 64 && self.rng.gen_bool(loss.min(0.99)) {
            losses += 1;
        }
        network += losses * LOSS_PENALTY_US;
        (start + service + network, n.epoch)
    }

    /// How a request sent in `epoch` ends now; `timeout_at` is when it fails if the node
    /// stopped answering (already passed: it fails now).
    pub fn arrive(&self, id: NodeId, epoch: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.state == NodeState::Up && n.epoch == epoch)
    }

    /// When a request that found its node gone fails: the timeout for the node's state,
    /// counted from `sent`, or `now` if that is past.
    pub fn failure_time(&self, id: NodeId, sent: Micros, now: Micros) -> Micros {
        let t = match self.nodes.get(&id).map(|n| n.state) {
            Some(NodeState::Dead) => CLIENT_CONNECT_TIMEOUT_MS,
            _ => CLIENT_REQUEST_TIMEOUT_MS,
        } * 1000;
        (sent + t).max(now)
    }
}

/// Ordered simulated events: earliest first, ties in insertion order.
#[derive(Debug)]
pub struct Queue<E> {
    events: BTreeMap<(Micros, u64), E>,
    seq: u64,
    popped: u64,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Self { events: BTreeMap::new(), seq: 0, popped: 0 }
    }
}

impl<E> Queue<E> {
    /// Schedules `e` at `at`.
    pub fn push(&mut self, at: Micros, e: E) {
        self.events.insert((at, self.seq), e);
        self.seq += 1;
    }

    /// The next event and its time.
    pub fn pop(&mut self) -> Option<(Micros, E)> {
        let ((at, _), e) = self.events.pop_first()?;
        self.popped += 1;
        Some((at, e))
    }

    /// Events popped so far (to bound a trial).
    pub fn popped(&self) -> u64 {
        self.popped
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_busy_node_queues_and_a_dead_one_times_out() {
        let mut w = World::new(2, StdRng::seed_from_u64(1));
        let (a, _) = w.send(NodeId(1), 0, 1_000_000, false);
        let (b, _) = w.send(NodeId(1), 0, 1_000_000, false);
        assert_eq!(a, GET_SERVICE_US + 1000 + LINK_RTT_US);
        assert_eq!(b, 2 * (GET_SERVICE_US + 1000) + LINK_RTT_US, "the second waits for the first");
        w.set_state(NodeId(2), NodeState::Dead, 5);
        let (t, epoch) = w.send(NodeId(2), 10, 10, false);
        assert_eq!(t, 10 + CLIENT_CONNECT_TIMEOUT_MS * 1000);
        assert!(!w.arrive(NodeId(2), epoch));
    }

    #[test]
    fn heartbeats_detect_within_an_interval_plus_a_timeout() {
        let w = World::new(1, StdRng::seed_from_u64(3));
        for since in [0, 1, 999_999, 5_000_000] {
            let at = w.heartbeat_detects_at(since);
            assert!(at >= since + HEARTBEAT_TIMEOUT_MS * 1000);
            assert!(at <= since + (HEARTBEAT_INTERVAL_MS + HEARTBEAT_TIMEOUT_MS) * 1000);
        }
    }

    #[test]
    fn the_queue_is_ordered_by_time_then_insertion() {
        let mut q = Queue::default();
        q.push(5, 'a');
        q.push(1, 'b');
        q.push(5, 'c');
        let order: Vec<char> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, ['b', 'a', 'c']);
    }
}
