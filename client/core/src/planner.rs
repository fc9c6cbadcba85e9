//! The restore planner: a pure state machine that decides, for one stripe, which shards to
//! fetch next, when to hedge a lagging node with parity, and when the stripe can be decoded.
//!
//! It does no I/O and reads no clock: events come in (`on_arrived`, `on_failed`, `on_tick`)
//! with a `now`, fetch decisions come out. The QUIC restore driver and the tests drive the very
//! same code.

use std::time::{Duration, Instant};

use rackpoint_proto::{NodeId, ShardIndex};

use crate::hedge::recheck_after;

/// Why a shard could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardFailure {
    /// Its node is unreachable.
    NodeDown,
    /// The node does not have it.
    Missing,
    /// Its bytes failed their hash (at the node or here).
    Corrupt,
    /// Any other error, with its text.
    Other(String),
}

impl ShardFailure {
    /// Whether the node answered that the shard is gone (missing, or failing its hash): a
    /// loss that no node coming back undoes. A node down, or any other error, is not known
    /// to be one: the shard may well be intact where it is.
    pub fn is_loss(&self) -> bool {
        matches!(self, ShardFailure::Missing | ShardFailure::Corrupt)
    }
}

/// Whether a stripe of `shards` shards, `k` of them needed, is known lost: more than
/// `shards - k` (m) of its shards were answered missing or corrupt (`failures`), so that fewer
/// than `k` can ever be read, whatever nodes come back.
pub fn known_lost<'a>(
    shards: usize,
    k: usize,
    failures: impl IntoIterator<Item = &'a ShardFailure>,
) -> bool {
    let lost = failures.into_iter().filter(|f| f.is_loss()).count();
    shards.saturating_sub(lost) < k
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    InFlight { since: Instant },
    Got,
    Failed(ShardFailure),
}

/// Where a stripe stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Waiting for shards.
    Pending,
    /// At least `k` good shards are here: decode.
    Ready,
    /// Fewer than `k` shards can still arrive: the stripe is lost.
    Impossible,
}

/// Plans the fetches of one stripe.
#[derive(Debug, Clone)]
pub struct StripePlanner {
    k: usize,
    nodes: Vec<NodeId>,
    state: Vec<State>,
    hedge_after: Duration,
}

impl StripePlanner {
    /// A planner for a stripe of `k` data shards whose shard `i` is stored on `nodes[i]`.
    pub fn new(k: usize, nodes: Vec<NodeId>, hedge_after: Duration) -> Self {
        assert!(k >= 1 && k <= nodes.len(), "a stripe has k data shards among its k + m");
        let state = vec![State::Idle; nodes.len()];
        Self { k, nodes, state, hedge_after }
    }

    /// The first fetches: the data shards, with parity standing in for shards whose nodes are
    /// known to be down (so a dead node costs nothing here).
    pub fn start(&mut self, now: Instant, is_down: &dyn Fn(NodeId) -> bool) -> Vec<ShardIndex> {
        self.top_up(now, is_down)
    }

    /// Shard `i` arrived and passed its hash.
    pub fn on_arrived(&mut self, i: ShardIndex) {
        self.state[usize::from(i.0)] = State::Got;
    }

    /// Shard `i` failed; returns the fetches that replace it.
    pub fn on_failed(
        &mut self,
        i: ShardIndex,
        why: ShardFailure,
        now: Instant,
        is_down: &dyn Fn(NodeId) -> bool,
    ) -> Vec<ShardIndex> {
        self.state[usize::from(i.0)] = State::Failed(why);
        self.top_up(now, is_down)
    }

    /// Time passed: hedges every fetch that is older than the hedging threshold and whose node
    /// is now suspected (`is_down`) with another shard.
    pub fn on_tick(&mut self, now: Instant, is_down: &dyn Fn(NodeId) -> bool) -> Vec<ShardIndex> {
        self.top_up(now, is_down)
    }

    /// When to look again: the moment the next in-flight fetch turns late, or, while some
    /// are late already, [`recheck_after`] from `now` (to check whether their nodes stalled).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.state
            .iter()
            .filter_map(|s| match s {
                State::InFlight { since } => {
                    Some((*since + self.hedge_after).max(now + recheck_after(self.hedge_after)))
                }
                _ => None,
            })
            .min()
    }

    /// Nodes whose fetches are late at `now` (older than the hedging threshold).
    pub fn late_nodes(&self, now: Instant) -> Vec<NodeId> {
        self.state
            .iter()
            .zip(&self.nodes)
            .filter(
                |(s, _)| matches!(s, State::InFlight { since } if now >= *since + self.hedge_after),
            )
            .map(|(_, n)| *n)
            .collect()
    }

    /// Where the stripe stands.
    pub fn outcome(&self) -> Outcome {
        let got = self.count(|s| matches!(s, State::Got));
        if got >= self.k {
            return Outcome::Ready;
        }
        let possible = self.count(|s| !matches!(s, State::Failed(_)));
        if possible < self.k {
            Outcome::Impossible
        } else {
            Outcome::Pending
        }
    }

    /// Indexes of the shards that arrived.
    pub fn arrived(&self) -> impl Iterator<Item = ShardIndex> + '_ {
        self.state
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, State::Got))
            .map(|(i, _)| ShardIndex(i as u8))
    }

    /// Every failed shard with its node and reason.
    pub fn failures(&self) -> Vec<(ShardIndex, NodeId, ShardFailure)> {
        self.state
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                State::Failed(why) => Some((ShardIndex(i as u8), self.nodes[i], why.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether the stripe is known lost ([`known_lost`]): an `Impossible` stripe that is not
    /// is only unavailable, the shards it is short of on nodes that did not answer.
    pub fn is_lost(&self) -> bool {
        let failures = self.state.iter().filter_map(|s| match s {
            State::Failed(why) => Some(why),
            _ => None,
        });
        known_lost(self.nodes.len(), self.k, failures)
    }

    fn count(&self, f: impl Fn(&State) -> bool) -> usize {
        self.state.iter().filter(|s| f(s)).count()
    }

    /// Requests more shards until the good ones plus the fresh in-flight ones reach `k`.
    /// Shards are taken in index order (data first, so a healthy stripe needs no decoding),
    /// preferring nodes not known to be down; a down node is asked only as a last resort.
    fn top_up(&mut self, now: Instant, is_down: &dyn Fn(NodeId) -> bool) -> Vec<ShardIndex> {
        let got = self.count(|s| matches!(s, State::Got));
        // A fetch stays counted until it is late *and* its node is suspected: a late fetch on
        // a node that keeps answering is queued, not lost, and hedging it would add load.
        let fresh = self
            .state
            .iter()
            .zip(&self.nodes)
            .filter(|(s, n)| match s {
                State::InFlight { since } => now < *since + self.hedge_after || !is_down(**n),
                _ => false,
            })
            .count();
        let mut want = self.k.saturating_sub(got + fresh);
        let mut picked = Vec::new();
        for last_resort in [false, true] {
            for i in 0..self.state.len() {
                if want == 0 {
                    return picked;
                }
                if self.state[i] == State::Idle && is_down(self.nodes[i]) == last_resort {
                    self.state[i] = State::InFlight { since: now };
                    picked.push(ShardIndex(i as u8));
                    want -= 1;
                }
            }
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEDGE: Duration = Duration::from_millis(100);

    fn nodes(n: u32) -> Vec<NodeId> {
        (1..=n).map(NodeId).collect()
    }
    fn idx(v: &[u8]) -> Vec<ShardIndex> {
        v.iter().copied().map(ShardIndex).collect()
    }
    fn none_down(_: NodeId) -> bool {
        false
    }

    #[test]
    fn healthy_stripe_fetches_only_data_shards() {
        let t0 = Instant::now();
        let mut p = StripePlanner::new(4, nodes(6), HEDGE);
        assert_eq!(p.start(t0, &none_down), idx(&[0, 1, 2, 3]));
        for i in 0..4 {
            assert_eq!(p.outcome(), Outcome::Pending);
            p.on_arrived(ShardIndex(i));
        }
        assert_eq!(p.outcome(), Outcome::Ready);
        assert_eq!(p.arrived().collect::<Vec<_>>(), idx(&[0, 1, 2, 3]));
        assert_eq!(p.on_tick(t0 + HEDGE * 10, &none_down), vec![]);
    }

    #[test]
    fn known_down_node_is_replaced_by_parity_from_the_start() {
        let t0 = Instant::now();
        let mut p = StripePlanner::new(4, nodes(6), HEDGE);
        let down = |n: NodeId| n == NodeId(2);
        assert_eq!(p.start(t0, &down), idx(&[0, 2, 3, 4]));
    }

    #[test]
    fn a_failure_asks_for_parity() {
        let t0 = Instant::now();
        let mut p = StripePlanner::new(4, nodes(6), HEDGE);
        p.start(t0, &none_down);
        assert_eq!(p.on_failed(ShardIndex(1), ShardFailure::Corrupt, t0, &none_down), idx(&[4]));
        assert_eq!(p.on_failed(ShardIndex(4), ShardFailure::Missing, t0, &none_down), idx(&[5]));
        assert_eq!(p.on_failed(ShardIndex(5), ShardFailure::NodeDown, t0, &none_down), vec![]);
        assert_eq!(p.outcome(), Outcome::Impossible);
        assert_eq!(p.failures().len(), 3);
        assert!(!p.is_lost(), "two shards are known lost (m = 2); node 6 may come back");
    }

    #[test]
    fn only_answered_losses_beyond_m_make_a_stripe_lost() {
        let t0 = Instant::now();
        let mut p = StripePlanner::new(4, nodes(6), HEDGE);
        p.start(t0, &none_down);
        for (i, why) in [(0, ShardFailure::NodeDown), (1, ShardFailure::NodeDown)] {
            p.on_failed(ShardIndex(i), why, t0, &none_down);
        }
        p.on_failed(ShardIndex(4), ShardFailure::Other("busy".into()), t0, &none_down);
        assert_eq!(p.outcome(), Outcome::Impossible);
        assert!(!p.is_lost(), "nodes that did not answer may come back");
        let mut p = StripePlanner::new(4, nodes(6), HEDGE);
        p.start(t0, &none_down);
        for i in 0..3 {
            p.on_failed(ShardIndex(i), ShardFailure::Missing, t0, &none_down);
        }
        assert!(p.is_lost(), "three of six answered missing, m = 2");
        let missing = [ShardFailure::Missing, ShardFailure::Corrupt, ShardFailure::NodeDown];
        assert!(!known_lost(6, 4, &missing));
        assert!(known_lost(
            6,
            4,
            &[ShardFailure::Corrupt, ShardFailure::Corrupt, ShardFailure::Missing]
        ));
    }

    #[test]
    fn a_lagging_node_is_hedged_once_per_threshold() {
        let t0 = Instant::now();
        let mut p = StripePlanner::new(4, nodes(6), HEDGE);
        p.start(t0, &none_down);
        for i in [0, 1, 3] {
            p.on_arrived(ShardIndex(i));
        }
        assert_eq!(p.next_deadline(t0), Some(t0 + HEDGE));
        assert_eq!(p.late_nodes(t0 + HEDGE), vec![NodeId(3)]);
        assert_eq!(p.on_tick(t0 + HEDGE / 2, &none_down), vec![]);
        let late = t0 + HEDGE;
        assert_eq!(p.on_tick(late, &none_down), vec![], "late but its node answers others: queued");
        assert_eq!(p.next_deadline(late), Some(late + HEDGE / 2), "look again soon");
        let stalled = |n: NodeId| n == NodeId(3);
        assert_eq!(p.on_tick(late, &stalled), idx(&[4]), "its node stalled: hedge");
        assert_eq!(p.on_tick(late, &stalled), vec![], "the hedge is fresh");
        p.on_arrived(ShardIndex(4));
        assert_eq!(p.outcome(), Outcome::Ready);
    }

    proptest! {
        /// Whatever happens, a stripe never asks for the same shard twice, never has more than
        /// k fresh fetches plus arrivals, and ends Ready exactly when k shards could arrive.
        #[test]
        fn planner_invariants(k in 1usize..8, m in 1usize..6, events in proptest::collection::vec((any::<u8>(), 0u8..3), 0..40), down_mask in any::<u32>()) {
            let n = k + m;
            let is_down = |id: NodeId| down_mask & (1 << (id.0 % 32)) != 0;
            let t0 = Instant::now();
            let mut p = StripePlanner::new(k, nodes(n as u32), HEDGE);
            let mut asked: Vec<ShardIndex> = p.start(t0, &is_down);
            let mut now = t0;
            for (target, what) in events {
                let inflight: Vec<ShardIndex> = asked.iter().copied()
                    .filter(|i| matches!(p.state[usize::from(i.0)], State::InFlight { .. })).collect();
                let new = match (inflight.is_empty(), what) {
                    (true, _) | (_, 2) => { now += HEDGE; p.on_tick(now, &|_| true) }
                    (false, 0) => { p.on_arrived(inflight[usize::from(target) % inflight.len()]); vec![] }
                    (false, _) => p.on_failed(inflight[usize::from(target) % inflight.len()], ShardFailure::Missing, now, &is_down),
                };
                for i in &new {
                    prop_assert!(!asked.contains(i), "shard {:?} asked twice", i);
                }
                asked.extend(new);
                let got = p.arrived().count();
                let failed = p.failures().len();
                match p.outcome() {
                    Outcome::Ready => prop_assert!(got >= k),
                    Outcome::Impossible => prop_assert!(n - failed < k),
                    Outcome::Pending => prop_assert!(got < k && n - failed >= k),
                }
            }
        }
    }
}
