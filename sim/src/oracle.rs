//! The oracle: from where every shard of a checkpoint went and which nodes and shards the
//! faults took, whether a restore must succeed. A trial passes when the restore agrees with
//! it: the exact bytes when every stripe keeps `k` good shards and some manifest replica is
//! reachable, a clean refusal (`NotEnoughShards`, no visible manifest) otherwise, and never
//! wrong bytes.

use std::collections::BTreeSet;

use rackpoint_proto::NodeId;
use serde::Serialize;

/// Where one stripe's shards are: `nodes[i]` holds shard `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeNodes {
    /// Node per shard index.
    pub nodes: Vec<NodeId>,
}

/// What the faults took at restore time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Damage {
    /// Nodes that cannot answer (killed, frozen, partitioned).
    pub unavailable: BTreeSet<NodeId>,
    /// Shards whose stored bytes are corrupt: `(stripe number in checkpoint order, index)`.
    pub corrupt: BTreeSet<(usize, u8)>,
}

/// The oracle's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Expectation {
    /// Every stripe keeps `k` good shards and a manifest replica is reachable.
    pub recoverable: bool,
    /// Good shards of the weakest stripe.
    pub weakest_good: usize,
    /// Most shards one stripe lost.
    pub most_lost: usize,
}

/// Judges a checkpoint of `stripes` (all objects' stripes, in order) under code `k`, with
/// its manifest on `manifest_nodes`.
pub fn expect(
    k: usize,
    stripes: &[StripeNodes],
    manifest_nodes: &[NodeId],
    damage: &Damage,
) -> Expectation {
    let mut weakest_good = usize::MAX;
    let mut most_lost = 0;
    for (s, stripe) in stripes.iter().enumerate() {
        let good = stripe
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| {
                !damage.unavailable.contains(n) && !damage.corrupt.contains(&(s, *i as u8))
            })
            .count();
        weakest_good = weakest_good.min(good);
        most_lost = most_lost.max(stripe.nodes.len() - good);
    }
    if stripes.is_empty() {
        weakest_good = k;
    }
    let manifest_reachable = manifest_nodes.iter().any(|n| !damage.unavailable.contains(n));
    Expectation { recoverable: weakest_good >= k && manifest_reachable, weakest_good, most_lost }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripe(ids: &[u32]) -> StripeNodes {
        StripeNodes { nodes: ids.iter().map(|&i| NodeId(i)).collect() }
    }

    #[test]
    fn m_losses_are_recoverable_and_m_plus_one_are_not() {
        let stripes = [stripe(&[1, 2, 3, 4, 5, 6]), stripe(&[2, 3, 4, 5, 6, 1])];
        let manifest = [NodeId(1), NodeId(3), NodeId(5)];
        let mut d = Damage::default();
        d.unavailable.extend([NodeId(1), NodeId(2)]);
        let e = expect(4, &stripes, &manifest, &d);
        assert!(e.recoverable && e.weakest_good == 4 && e.most_lost == 2);
        d.corrupt.insert((1, 2)); // shard 2 of stripe 1 is on node 4
        let e = expect(4, &stripes, &manifest, &d);
        assert!(!e.recoverable && e.weakest_good == 3 && e.most_lost == 3);
    }

    #[test]
    fn no_reachable_manifest_is_not_recoverable() {
        let stripes = [stripe(&[1, 2, 3])];
        let mut d = Damage::default();
        d.unavailable.insert(NodeId(7));
        assert!(!expect(1, &stripes, &[NodeId(7)], &d).recoverable);
        assert!(expect(1, &stripes, &[NodeId(7), NodeId(2)], &d).recoverable);
    }
}
