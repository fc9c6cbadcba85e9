//! The manifest commit, pure: every decision of storing a part's manifest, the save's last
//! step, in the style of the stripe-write machine (results in, decisions out). The driver does
//! the puts (the client in parallel, the simulator's fast mode as simulated requests).
//!
//! - **Copies.** The manifest needs `need = m + 1` copies, capped at the map's node count, on
//!   distinct nodes (distinct racks first: `place_manifest`).
//! - **Rounds.** Each round sends the copies still missing, all at once, to nodes that are not
//!   down, did not fail a put of this commit and do not hold a copy already; when every
//!   result of the round is in, the commit is judged. No backoff: a failed copy goes to
//!   another node in the next round.
//! - **Bounds.** After `CLIENT_MAX_ATTEMPTS` rounds short of `need`, or when too few nodes are
//!   left to place the missing copies, the commit gives up and the copies it stored are
//!   rolled back ([`CommitAction::RollBack`]), so no part is visible: a commit is atomic.
//!
//! Drive it with [`ManifestCommit::poll`] (what to do now) and [`ManifestCommit::on_result`]
//! (a put's outcome).

use rackpoint_proto::limits::CLIENT_MAX_ATTEMPTS;
use rackpoint_proto::{ClusterMap, JobName, NodeId, Rank, Step};

use crate::placement;

/// What the driver should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitAction {
    /// Put the manifest on these nodes, then report each outcome with
    /// [`ManifestCommit::on_result`].
    Send(Vec<NodeId>),
    /// Puts are outstanding: wait for an outcome.
    Wait,
    /// The manifest is committed on these nodes (`need` of them, in the order they stored it).
    Committed(Vec<NodeId>),
    /// The commit failed: take back the copies these nodes stored (possibly none).
    RollBack(Vec<NodeId>),
}

/// Commits one part's manifest; see the module doc.
#[derive(Debug, Clone)]
pub struct ManifestCommit {
    job: JobName,
    step: Step,
    rank: Rank,
    need: usize,
    stored: Vec<NodeId>,
    failed: Vec<NodeId>,
    in_flight: Vec<NodeId>,
    rounds: u32,
    gave_up: bool,
}

impl ManifestCommit {
    /// The commit of the manifest of part `(job, step, rank)` over `map` (whose code gives
    /// the copies needed).
    pub fn new(map: &ClusterMap, job: JobName, step: Step, rank: Rank) -> Self {
        Self {
            job,
            step,
            rank,
            need: copies_needed(map),
            stored: Vec::new(),
            failed: Vec::new(),
            in_flight: Vec::new(),
            rounds: 0,
            gave_up: false,
        }
    }

    /// Copies the commit needs.
    pub fn need(&self) -> usize {
        self.need
    }

    /// Nodes that stored a copy so far.
    pub fn stored(&self) -> &[NodeId] {
        &self.stored
    }

    /// Nodes whose put failed.
    pub fn failed(&self) -> &[NodeId] {
        &self.failed
    }

    /// Rounds sent so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The outcome of the put to `node`: `stored` if the node says the copy is durable
    /// (ignored unless a put to `node` is outstanding).
    pub fn on_result(&mut self, node: NodeId, stored: bool) {
        let Some(at) = self.in_flight.iter().position(|n| *n == node) else { return };
        self.in_flight.swap_remove(at);
        if stored {
            self.stored.push(node);
        } else {
            self.failed.push(node);
        }
    }

    /// What to do now; `is_down` is the live health view.
    pub fn poll(&mut self, map: &ClusterMap, is_down: &dyn Fn(NodeId) -> bool) -> CommitAction {
        if !self.in_flight.is_empty() {
            return CommitAction::Wait;
        }
        if self.stored.len() >= self.need {
            return CommitAction::Committed(self.stored.clone());
        }
        if self.gave_up || self.rounds >= CLIENT_MAX_ATTEMPTS {
            self.gave_up = true;
            return CommitAction::RollBack(self.stored.clone());
        }
        let (stored, failed) = (&self.stored, &self.failed);
        let avoid = |n: NodeId| is_down(n) || failed.contains(&n) || stored.contains(&n);
        let missing = self.need - self.stored.len();
        match placement::place_manifest(map, &self.job, self.step, self.rank, missing, &avoid) {
            Ok(targets) => {
                self.rounds += 1;
                self.in_flight.clone_from(&targets);
                CommitAction::Send(targets)
            }
            Err(_) => {
                self.gave_up = true;
                CommitAction::RollBack(self.stored.clone())
            }
        }
    }
}

/// Copies a committed manifest has: `m + 1`, or every node of a smaller map.
pub fn copies_needed(map: &ClusterMap) -> usize {
    (usize::from(map.code.m) + 1).min(map.nodes.len())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::test_map::map;

    fn commit(map: &ClusterMap) -> ManifestCommit {
        ManifestCommit::new(map, JobName::new("job").expect("valid"), Step(7), Rank(0))
    }

    fn none_down(_: NodeId) -> bool {
        false
    }

    fn sent(action: CommitAction) -> Vec<NodeId> {
        match action {
            CommitAction::Send(nodes) => nodes,
            other => panic!("expected puts, got {other:?}"),
        }
    }

    #[test]
    fn a_healthy_commit_takes_one_round_on_the_replica_set() {
        let map = map(6, 3);
        let mut c = commit(&map);
        assert_eq!(c.need(), 3, "m + 1");
        let job = JobName::new("job").expect("valid");
        let placed =
            placement::place_manifest(&map, &job, Step(7), Rank(0), 3, &none_down).expect("6 up");
        let targets = sent(c.poll(&map, &none_down));
        assert_eq!(targets, placed);
        assert_eq!(c.poll(&map, &none_down), CommitAction::Wait);
        for &n in &targets {
            c.on_result(n, true);
        }
        assert_eq!(c.poll(&map, &none_down), CommitAction::Committed(targets.clone()));
        assert_eq!(c.poll(&map, &none_down), CommitAction::Committed(targets), "it stays done");
        assert_eq!(c.rounds(), 1);
    }

    #[test]
    fn a_failed_copy_goes_elsewhere_next_round_and_never_back() {
        let map = map(6, 3);
        let mut c = commit(&map);
        let first = sent(c.poll(&map, &none_down));
        c.on_result(first[0], false);
        assert_eq!(c.poll(&map, &none_down), CommitAction::Wait, "the round is not over");
        c.on_result(first[1], true);
        c.on_result(first[2], true);
        let second = sent(c.poll(&map, &none_down));
        assert_eq!(second.len(), 1, "only the missing copy");
        assert!(!first.contains(&second[0]), "not a node that failed or holds a copy");
        c.on_result(second[0], true);
        let CommitAction::Committed(nodes) = c.poll(&map, &none_down) else { panic!("committed") };
        assert_eq!(nodes, vec![first[1], first[2], second[0]]);
        assert_eq!(c.failed(), &[first[0]]);
    }

    #[test]
    fn a_commit_gives_up_after_its_rounds_and_takes_back_what_it_stored() {
        let map = map(20, 5);
        let mut c = commit(&map);
        let first = sent(c.poll(&map, &none_down));
        c.on_result(first[0], true);
        for &n in &first[1..] {
            c.on_result(n, false);
        }
        for _ in 1..CLIENT_MAX_ATTEMPTS {
            for n in sent(c.poll(&map, &none_down)) {
                c.on_result(n, false);
            }
        }
        assert_eq!(c.poll(&map, &none_down), CommitAction::RollBack(vec![first[0]]));
        assert_eq!(c.rounds(), CLIENT_MAX_ATTEMPTS);
        assert_eq!(c.poll(&map, &none_down), CommitAction::RollBack(vec![first[0]]));
    }

    #[test]
    fn too_few_nodes_up_ends_the_commit_without_a_round() {
        let map = map(6, 3);
        let mut c = commit(&map);
        let down = |n: NodeId| n.0 <= 4;
        assert_eq!(c.poll(&map, &down), CommitAction::RollBack(Vec::new()));
        assert_eq!(c.rounds(), 0);
    }

    #[test]
    fn a_small_map_needs_every_node_and_down_nodes_are_skipped() {
        let two = map(2, 2);
        let mut c = commit(&two);
        assert_eq!(c.need(), 2, "m + 1 capped at the nodes");
        let targets = sent(c.poll(&two, &none_down));
        assert_eq!(targets.len(), 2);
        let six = map(6, 3);
        let down = |n: NodeId| n == NodeId(1) || n == NodeId(2);
        let mut c = commit(&six);
        let targets = sent(c.poll(&six, &down));
        assert!(targets.iter().all(|n| !down(*n)), "{targets:?}");
    }

    #[test]
    fn a_result_for_a_node_not_asked_is_ignored() {
        let map = map(6, 3);
        let mut c = commit(&map);
        let targets = sent(c.poll(&map, &none_down));
        let other = map.nodes.iter().map(|n| n.id).find(|n| !targets.contains(n)).expect("spare");
        c.on_result(other, true);
        assert!(c.stored().is_empty());
        c.on_result(targets[0], true);
        c.on_result(targets[0], true);
        assert_eq!(c.stored(), &[targets[0]], "one result per put");
    }

    proptest! {
        /// Whatever the map, the down nodes and the put outcomes: no node is sent a copy twice
        /// or while down; a commit ends within `CLIENT_MAX_ATTEMPTS` rounds; it commits on
        /// exactly `need` distinct nodes that all stored it, or rolls back exactly the nodes
        /// that stored a copy, and then only because the rounds ran out or too few nodes were
        /// left to place the missing copies.
        #[test]
        fn a_commit_is_all_or_nothing_and_bounded(
            nodes in 1u32..12,
            racks in 1u32..5,
            down in proptest::collection::btree_set(1u32..12, 0..6),
            answers in proptest::collection::vec(any::<bool>(), 1..24),
            reverse in any::<bool>(),
        ) {
            let map = map(nodes, racks);
            let is_down = |n: NodeId| down.contains(&n.0);
            let mut c = commit(&map);
            let need = c.need();
            prop_assert_eq!(need, 3.min(nodes as usize));
            let (mut asked, mut stored) = (Vec::new(), BTreeSet::new());
            let mut answers = answers.iter().cycle();
            let end = loop {
                prop_assert!(asked.len() <= map.nodes.len(), "more puts than nodes");
                match c.poll(&map, &is_down) {
                    CommitAction::Send(mut targets) => {
                        prop_assert!(!targets.is_empty());
                        prop_assert!(targets.len() <= need - stored.len());
                        for n in &targets {
                            prop_assert!(!asked.contains(n), "{} asked twice", n);
                            prop_assert!(!is_down(*n), "{} is down", n);
                        }
                        asked.extend(targets.iter().copied());
                        if reverse {
                            targets.reverse();
                        }
                        for n in targets {
                            let ok = *answers.next().expect("cycled");
                            if ok {
                                stored.insert(n);
                            }
                            c.on_result(n, ok);
                        }
                    }
                    CommitAction::Wait => prop_assert!(false, "nothing is in flight"),
                    end => break end,
                }
            };
            prop_assert!(c.rounds() <= CLIENT_MAX_ATTEMPTS);
            match end {
                CommitAction::Committed(nodes) => {
                    let distinct: BTreeSet<NodeId> = nodes.iter().copied().collect();
                    prop_assert_eq!(distinct.len(), nodes.len());
                    prop_assert_eq!(nodes.len(), need);
                    prop_assert_eq!(distinct, stored);
                }
                CommitAction::RollBack(nodes) => {
                    let back: BTreeSet<NodeId> = nodes.iter().copied().collect();
                    prop_assert_eq!(back, stored.clone());
                    prop_assert!(stored.len() < need);
                    let left = map
                        .nodes
                        .iter()
                        .filter(|n| !is_down(n.id) && !asked.contains(&n.id))
                        .count();
                    prop_assert!(
                        c.rounds() == CLIENT_MAX_ATTEMPTS || left < need - stored.len(),
                        "gave up with {} rounds and {} nodes left", c.rounds(), left
                    );
                }
                other => prop_assert!(false, "not an end: {:?}", other),
            }
        }
    }
}
