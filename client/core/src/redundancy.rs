//! Redundancy in the unit users think in: how many more *node* failures (and *rack* failures)
//! a stripe, a part or a checkpoint survives, computed from where its good shards really are,
//! never from a count of shards.
//!
//! - **A stripe** with its good shards on some nodes survives `f` node failures, where `f` is
//!   the largest number such that taking away the `f` nodes that hold the most of its good
//!   shards still leaves `k` good shards; the same over racks (a node's rack is the map's; a
//!   node not in the map is a rack of its own). Fewer than `k` good shards: `None`, it cannot
//!   be read now. With each of `k + m` good shards on its own node in its own rack, both are
//!   `m`; two shards of the stripe on one node lower the node figure.
//! - **A part** survives the minimum over its stripes, and no more than its manifest's copies
//!   allow: a manifest on `r` reachable nodes (in `q` racks) survives at most `r - 1` node
//!   failures (`q - 1` rack failures); with no copy it cannot be read.
//! - **Degraded placement**: a stripe with more than one shard on a node
//!   ([`crowded_node`]), which a save makes when fewer than `k + m` nodes are up and which
//!   repair spreads out once they are back.
//!
//! What counts as good is the caller's measurement: `verify` re-hashes each shard where it
//! lies; `ls` takes a node's shard count of the part (`ListParts`) against the manifest's.

use std::collections::BTreeMap;

use rackpoint_proto::{ClusterMap, NodeId};

use crate::manifest::{Manifest, StripeEntry};

/// How many more failures something survives, in nodes and in racks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Survives {
    /// Any this many nodes may fail and it can still be read.
    pub nodes: usize,
    /// Any this many racks may fail and it can still be read.
    pub racks: usize,
}

impl Survives {
    /// The weaker of the two, figure by figure.
    pub fn min(self, other: Survives) -> Survives {
        Survives { nodes: self.nodes.min(other.nodes), racks: self.racks.min(other.racks) }
    }

    /// The weaker of `a` and `b`, where `None` (cannot be read now) is weakest.
    pub fn min_opt(a: Option<Survives>, b: Option<Survives>) -> Option<Survives> {
        Some(a?.min(b?))
    }
}

/// A failure domain: a rack by name, or a node not in the map (its own rack).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Rack<'m> {
    Named(&'m str),
    Unmapped(NodeId),
}

fn rack_of(map: &ClusterMap, node: NodeId) -> Rack<'_> {
    map.node(node).map_or(Rack::Unmapped(node), |n| Rack::Named(n.rack.as_str()))
}

/// The most domains that may fail, worst ones first, leaving at least `k` of the good shards:
/// `counts` holds the good shards of each domain. `None` when fewer than `k` are good.
fn domain_failures(k: usize, mut counts: Vec<usize>) -> Option<usize> {
    let mut left: usize = counts.iter().sum();
    if left < k {
        return None;
    }
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let mut failures = 0;
    for c in counts {
        if left - c < k {
            break;
        }
        left -= c;
        failures += 1;
    }
    Some(failures)
}

/// What one stripe survives: `good` names the node of each good shard (a node once per good
/// shard it holds). `None` when fewer than `k` shards are good.
pub fn stripe(map: &ClusterMap, k: usize, good: &[NodeId]) -> Option<Survives> {
    let mut per_node: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut per_rack: BTreeMap<Rack<'_>, usize> = BTreeMap::new();
    for &n in good {
        *per_node.entry(n).or_default() += 1;
        *per_rack.entry(rack_of(map, n)).or_default() += 1;
    }
    Some(Survives {
        nodes: domain_failures(k, per_node.into_values().collect())?,
        racks: domain_failures(k, per_rack.into_values().collect())?,
    })
}

/// What a manifest held by `holders` (the reachable nodes that list it) survives: one copy
/// must be left. `None` with no copy.
pub fn manifest_copies(map: &ClusterMap, holders: &[NodeId]) -> Option<Survives> {
    let mut nodes = holders.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let mut racks: Vec<Rack<'_>> = nodes.iter().map(|&n| rack_of(map, n)).collect();
    racks.sort_unstable();
    racks.dedup();
    Some(Survives { nodes: nodes.len().checked_sub(1)?, racks: racks.len().checked_sub(1)? })
}

/// What part `m` survives when a shard is good exactly when `good(object, stripe, shard
/// index, node)` says so, and its manifest is held by `holders`: the minimum over its stripes
/// and its manifest copies (a part without stripes: its copies alone, at most `m`).
pub fn part(
    map: &ClusterMap,
    m: &Manifest,
    holders: &[NodeId],
    good: &dyn Fn(usize, usize, usize, NodeId) -> bool,
) -> Option<Survives> {
    let k = usize::from(m.code.params.k);
    let full = usize::from(m.code.params.m);
    let mut worst = manifest_copies(map, holders)?.min(Survives { nodes: full, racks: full });
    for (o, obj) in m.objects.iter().enumerate() {
        for (s, entry) in obj.stripes.iter().enumerate() {
            let nodes: Vec<NodeId> = entry
                .shards
                .iter()
                .enumerate()
                .filter(|(i, sh)| good(o, s, *i, sh.node))
                .map(|(_, sh)| sh.node)
                .collect();
            worst = worst.min(stripe(map, k, &nodes)?);
        }
    }
    Some(worst)
}

/// The shards part `m` places on each node (what a node's `ListParts` count of the part
/// should be).
pub fn shards_per_node(m: &Manifest) -> BTreeMap<NodeId, u64> {
    let mut per: BTreeMap<NodeId, u64> = BTreeMap::new();
    for shard in m.objects.iter().flat_map(|o| &o.stripes).flat_map(|s| &s.shards) {
        *per.entry(shard.node).or_default() += 1;
    }
    per
}

/// What part `m` survives judged by shard presence alone, as `ls` measures it: `held(node)`
/// is the node's count of the part's shards (`None`: the node did not answer). A node that
/// holds fewer shards of the part than the manifest places there counts as holding none of
/// them (which are missing is not known without `verify`); content is not checked.
pub fn part_by_presence(
    map: &ClusterMap,
    m: &Manifest,
    holders: &[NodeId],
    held: &dyn Fn(NodeId) -> Option<u64>,
) -> Option<Survives> {
    let want = shards_per_node(m);
    let present: BTreeMap<NodeId, bool> =
        want.iter().map(|(&n, &w)| (n, held(n).is_some_and(|h| h >= w))).collect();
    part(map, m, holders, &|_, _, _, n| present.get(&n).copied().unwrap_or(false))
}

/// The node holding the most shards of a stripe, when it holds more than one: `(node,
/// shards)`, the lowest such node id on a tie. `None` when every shard has its own node.
pub fn crowded_node(entry: &StripeEntry) -> Option<(NodeId, usize)> {
    let mut per: BTreeMap<NodeId, usize> = BTreeMap::new();
    for s in &entry.shards {
        *per.entry(s.node).or_default() += 1;
    }
    let (node, most) =
        per.into_iter().fold((NodeId(0), 0), |best, (n, c)| if c > best.1 { (n, c) } else { best });
    (most > 1).then_some((node, most))
}

/// Stripes of part `m` with more than one shard on a node (degraded placement).
pub fn doubled_stripes(m: &Manifest) -> u64 {
    m.objects.iter().flat_map(|o| &o.stripes).filter(|s| crowded_node(s).is_some()).count() as u64
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use proptest::prelude::*;
    use rackpoint_proto::cluster::ClientTlsPaths;
    use rackpoint_proto::{CodeParams, Digest, JobName, NodeInfo, ObjectName, Rank, Step};

    use super::*;
    use crate::manifest::{CodeSpec, ObjectEntry, ShardEntry};

    /// `nodes` nodes, ids 1.., node `i` in rack `(i - 1) % racks`.
    fn map(nodes: u32, racks: u32) -> ClusterMap {
        ClusterMap {
            epoch: 0,
            code: CodeParams::new(4, 2, 4096).expect("valid"),
            tls: ClientTlsPaths { ca: "ca.pem".into(), cert: "c.pem".into(), key: "c.key".into() },
            nodes: (1..=nodes)
                .map(|id| NodeInfo {
                    id: NodeId(id),
                    addr: SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16)),
                    rack: format!("rack-{}", (id - 1) % racks),
                    decommissioned: false,
                })
                .collect(),
        }
    }

    /// A one-object part whose stripes are `stripes`.
    fn manifest_with(stripes: &[StripeEntry]) -> Manifest {
        let name = ObjectName::new("weights.bin").expect("valid");
        Manifest {
            format_version: crate::manifest::MANIFEST_FORMAT_VERSION,
            job: JobName::new("job").expect("valid"),
            step: Step(1),
            rank: Rank(0),
            world_size: 1,
            writer: "test".into(),
            code: CodeSpec::for_params(CodeParams::new(4, 2, 4096).expect("valid")),
            objects: vec![ObjectEntry {
                name,
                len: 4096 * 4 * stripes.len() as u64,
                hash: Digest([0; 32]),
                stripes: stripes.to_vec(),
            }],
            user_meta: Default::default(),
            prev: None,
        }
    }

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().copied().map(NodeId).collect()
    }

    fn entry(nodes: &[u32]) -> StripeEntry {
        StripeEntry {
            shards: nodes
                .iter()
                .map(|&n| ShardEntry { node: NodeId(n), hash: Digest([n as u8; 32]) })
                .collect(),
        }
    }

    #[test]
    fn six_shards_on_six_nodes_in_three_racks_survive_two_nodes_and_one_rack() {
        let map = map(6, 3);
        let got = stripe(&map, 4, &ids(&[1, 2, 3, 4, 5, 6]));
        assert_eq!(got, Some(Survives { nodes: 2, racks: 1 }));
        assert_eq!(stripe(&map, 4, &ids(&[1, 2, 3, 4, 5])), Some(Survives { nodes: 1, racks: 0 }));
        assert_eq!(stripe(&map, 4, &ids(&[1, 2, 3])), None, "fewer than k good");
    }

    #[test]
    fn a_save_with_three_of_six_nodes_down_survives_one_node_not_two() {
        // Two shards of the stripe on each of three nodes: six good shards, one node's loss
        // leaves four, a second leaves two.
        let map = map(6, 3);
        let got = stripe(&map, 4, &ids(&[1, 1, 2, 2, 3, 3]));
        assert_eq!(got, Some(Survives { nodes: 1, racks: 1 }));
        assert_eq!(crowded_node(&entry(&[1, 1, 2, 2, 3, 3])), Some((NodeId(1), 2)));
        assert_eq!(crowded_node(&entry(&[1, 2, 3, 4, 5, 6])), None);
        assert_eq!(crowded_node(&entry(&[1, 2, 5, 4, 5, 6])), Some((NodeId(5), 2)));
    }

    #[test]
    fn manifest_copies_bound_the_part() {
        let map = map(6, 3);
        assert_eq!(manifest_copies(&map, &[]), None);
        assert_eq!(manifest_copies(&map, &ids(&[2])), Some(Survives { nodes: 0, racks: 0 }));
        assert_eq!(
            manifest_copies(&map, &ids(&[1, 2, 4])),
            Some(Survives { nodes: 2, racks: 1 }),
            "nodes 1 and 4 share rack 0"
        );
        let mut m = manifest_with(&[entry(&[1, 2, 3, 4, 5, 6])]);
        let all_good = |_: usize, _: usize, _: usize, _: NodeId| true;
        assert_eq!(
            part(&map, &m, &ids(&[1, 2, 3]), &all_good),
            Some(Survives { nodes: 2, racks: 1 })
        );
        assert_eq!(
            part(&map, &m, &ids(&[1, 2]), &all_good),
            Some(Survives { nodes: 1, racks: 1 }),
            "two copies of the manifest: one node failure"
        );
        assert_eq!(part(&map, &m, &[], &all_good), None, "no copy: not readable");
        m.objects.clear();
        assert_eq!(
            part(&map, &m, &ids(&[1, 2, 3, 4]), &all_good),
            Some(Survives { nodes: 2, racks: 2 }),
            "without stripes: at most m"
        );
    }

    #[test]
    fn presence_counts_a_short_node_as_holding_none_of_the_part() {
        let map = map(6, 3);
        let m = manifest_with(&[entry(&[1, 2, 3, 4, 5, 6]), entry(&[2, 3, 4, 5, 6, 1])]);
        assert_eq!(shards_per_node(&m).get(&NodeId(3)), Some(&2));
        let holders = ids(&[1, 2, 3]);
        let full = |_: NodeId| Some(2);
        assert_eq!(
            part_by_presence(&map, &m, &holders, &full),
            Some(Survives { nodes: 2, racks: 1 })
        );
        let wiped = |n: NodeId| Some(if n == NodeId(3) { 0 } else { 2 });
        assert_eq!(
            part_by_presence(&map, &m, &holders, &wiped),
            Some(Survives { nodes: 1, racks: 0 })
        );
        let one_short = |n: NodeId| Some(if n == NodeId(3) { 1 } else { 2 });
        assert_eq!(part_by_presence(&map, &m, &holders, &one_short).map(|s| s.nodes), Some(1));
        let silent = |n: NodeId| (n.0 > 3).then_some(2);
        assert_eq!(part_by_presence(&map, &m, &holders, &silent), None, "3 of 6 silent");
        assert_eq!(doubled_stripes(&m), 0);
    }

    /// The stripe's figures, by brute force: every set of `f` nodes (racks) is tried.
    fn brute(k: usize, good: &[u32], domain: &dyn Fn(u32) -> u32) -> Option<usize> {
        let mut domains: Vec<u32> = good.iter().map(|&n| domain(n)).collect();
        domains.sort_unstable();
        domains.dedup();
        if good.len() < k {
            return None;
        }
        let survives_all = |f: usize| {
            (0u32..1 << domains.len()).filter(|set| set.count_ones() as usize == f).all(|set| {
                let gone = |d: u32| {
                    domains.iter().position(|&x| x == d).is_some_and(|i| set & (1 << i) != 0)
                };
                good.iter().filter(|&&n| !gone(domain(n))).count() >= k
            })
        };
        Some((0..=domains.len()).take_while(|&f| survives_all(f)).count().saturating_sub(1))
    }

    proptest! {
        #[test]
        fn the_stripe_figure_is_the_brute_force_worst_case(
            good in proptest::collection::vec(1u32..=8, 0..10),
            k in 1usize..6,
            racks in 1u32..4,
        ) {
            let map = map(8, racks);
            let got = stripe(&map, k, &ids(&good));
            prop_assert_eq!(got.map(|s| s.nodes), brute(k, &good, &|n| n));
            prop_assert_eq!(got.map(|s| s.racks), brute(k, &good, &|n| (n - 1) % racks));
        }

        #[test]
        fn removing_a_good_shard_never_raises_the_figure(
            good in proptest::collection::vec(1u32..=8, 1..10),
            drop in any::<prop::sample::Index>(),
            k in 1usize..6,
        ) {
            let map = map(8, 3);
            let before = stripe(&map, k, &ids(&good));
            let mut fewer = good.clone();
            fewer.remove(drop.index(good.len()));
            let after = stripe(&map, k, &ids(&fewer));
            match (before, after) {
                (_, None) => {}
                (None, Some(a)) => prop_assert!(false, "{a:?} from an unreadable stripe"),
                (Some(b), Some(a)) => prop_assert!(a.nodes <= b.nodes && a.racks <= b.racks),
            }
        }

        #[test]
        fn k_plus_m_shards_each_on_its_own_node_and_rack_survive_m(k in 1usize..8, m in 1usize..5) {
            let n = (k + m) as u32;
            let map = map(n, n);
            let good: Vec<u32> = (1..=n).collect();
            prop_assert_eq!(stripe(&map, k, &ids(&good)), Some(Survives { nodes: m, racks: m }));
        }

        #[test]
        fn two_shards_of_a_stripe_on_one_node_lower_the_node_figure(
            k in 1usize..8,
            m in 1usize..5,
            twin in any::<prop::sample::Index>(),
        ) {
            let n = (k + m) as u32;
            let map = map(n, n);
            let mut good: Vec<u32> = (1..=n).collect();
            // The last shard goes to another node of the stripe instead of its own.
            let last = good.len() - 1;
            good[last] = good[twin.index(last)];
            let got = stripe(&map, k, &ids(&good)).expect("k + m good shards");
            prop_assert!(got.nodes < m, "{got:?}");
            prop_assert_eq!(got.nodes, m - 1);
        }
    }
}
