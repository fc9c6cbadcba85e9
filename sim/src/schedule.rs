//! A trial's fault schedule resolved from its seed: which nodes each fault hits and when.
//! Real and fast mode share it, so a seed means the same faults in both.

use rackpoint_proto::NodeId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::scenario::{ClusterShape, Fault, FaultKind};

/// Faults of one trial with their nodes and times resolved from the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// The fault as scheduled.
    pub fault: Fault,
    /// Milliseconds into its phase.
    pub at_ms: u64,
    /// The nodes it hits (empty: the client, or every killed node for `restart`).
    pub nodes: Vec<NodeId>,
}

/// Resolves a fault schedule for one trial: times drawn in their ranges, random nodes drawn
/// without replacement (so two faults of a trial hit distinct nodes), racks drawn; `m` is
/// the scheme's parity count (for `count_m`).
pub fn resolve(faults: &[Fault], shape: ClusterShape, m: usize, rng: &mut StdRng) -> Vec<Action> {
    let mut pool: Vec<NodeId> = (1..=shape.nodes as u32).map(NodeId).collect();
    pool.shuffle(rng);
    faults
        .iter()
        .map(|f| {
            let at_ms = match f.at_ms_max {
                Some(hi) => rng.gen_range(f.at_ms..=hi),
                None => f.at_ms,
            };
            let nodes = match f.kind {
                FaultKind::KillClient => Vec::new(),
                FaultKind::Restart if f.nodes.is_empty() => Vec::new(),
                FaultKind::KillRack => {
                    let r = f.rack.unwrap_or_else(|| rng.gen_range(0..shape.racks));
                    (1..=shape.nodes as u32)
                        .map(NodeId)
                        .filter(|n| (n.0 as usize - 1) % shape.racks == r)
                        .collect()
                }
                _ if !f.nodes.is_empty() => f.nodes.iter().map(|&n| NodeId(n)).collect(),
                _ => {
                    let want = if f.count_m { m } else { f.count };
                    let take = want.min(pool.len());
                    let picked: Vec<NodeId> = pool.drain(..take).collect();
                    picked
                }
            };
            Action { fault: f.clone(), at_ms, nodes }
        })
        .collect()
}
