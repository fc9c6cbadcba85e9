//! The rebalance planner, pure: from a checkpoint's manifests (where each shard of each
//! stripe lies), the cluster map and which nodes are down, which shards to move where so that
//! stored shards spread over the current map as new saves would place them.
//!
//! Rules, per stripe:
//! - the target is the stripe's rendezvous placement over the nodes in service (in the map,
//!   not decommissioned; a node down for a moment still counts, so its absence moves nothing
//!   that would have to move back): `placement::place_stripe`, rack rule included;
//! - a shard stays when its node is in the target (the first shard on a node, when a degraded
//!   save doubled up); every other shard is misplaced and moves to a target node holding no
//!   shard of the stripe (the best-ranked first);
//! - a misplaced shard on a node that is down or gone from the map cannot be read: skipped
//!   (repair's job if the node stays away), and so is a move whose free target is down;
//! - every move keeps the stripe's shards on distinct nodes (the target holds none of them)
//!   and never fills a rack past the rack rule's cap: a move within a rack is taken first,
//!   one into another rack only while that rack is under the cap. When every misplaced shard
//!   can be read, some order always completes (a free target in a rack at the cap means a
//!   misplaced shard sits in that rack, and it moves there first), so a full plan leaves the
//!   stripe exactly on its placement;
//! - fewer than `k + m` nodes in service: the stripe has no placement, nothing moves;
//! - bounded: at most `max_moves` moves (capped by `REBALANCE_MAX_MOVES`), parts taken in
//!   (job, step, rank) order, objects and stripes in manifest order; the rest is counted as
//!   deferred for the next run. Every prefix of a stripe's moves keeps both rules, so a
//!   bound cutting through a stripe leaves it valid. Deterministic: no clock, no randomness.
//!
//! A move reuses the repair planner's [`ShardFix`]: its reason is `Decommissioned` off a
//! node leaving the map, `DoubledUp` off a node holding another shard of the stripe, and
//! `Rebalance` otherwise.

use std::collections::BTreeMap;

use rackpoint_proto::limits::REBALANCE_MAX_MOVES;
use rackpoint_proto::{ClusterMap, CodeParams, NodeId, ShardIndex, StripeId, StripeIndex};

use crate::manifest::{Manifest, StripeEntry};
use crate::placement;
use crate::repair_plan::{stripe_id, FixReason, ShardFix};

/// Why a shard that is off its placement does not move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// Its node is down or gone from the map: it cannot be read.
    SourceDown,
    /// The placement nodes left for it are down.
    TargetDown,
    /// Every placement node left for it is in a rack the rack rule has filled (with shards
    /// of the stripe that cannot move now).
    RackFull,
    /// Fewer than `k + m` nodes are in service: the stripe has no placement.
    NoPlacement,
}

impl SkipReason {
    /// Whether bringing a node back may let the shard move.
    pub fn waits_for_a_node(self) -> bool {
        matches!(self, SkipReason::SourceDown | SkipReason::TargetDown | SkipReason::RackFull)
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipReason::SourceDown => "its node is down (repair moves it if the node stays away)",
            SkipReason::TargetDown => "the node it would go to is down",
            SkipReason::RackFull => "its placement's racks are full of shards that cannot move now",
            SkipReason::NoPlacement => "fewer than k + m nodes are in service",
        })
    }
}

/// What to do with one stripe: its moves, in an order each prefix of which keeps the rules,
/// and the shards that stay off their placement, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StripeMoves {
    /// The moves, in the order to make them.
    pub moves: Vec<ShardFix>,
    /// Shards left off the placement (`None`: the whole stripe), with the reason.
    pub skipped: Vec<(Option<ShardIndex>, SkipReason)>,
}

/// The stripe's placement under `map` (see the module doc), ignoring which nodes are down.
pub fn target_of(map: &ClusterMap, id: &StripeId, code: CodeParams) -> Option<Vec<NodeId>> {
    let retired = |n: NodeId| map.node(n).is_none_or(|x| x.decommissioned);
    placement::place_stripe(map, id, code, &retired).ok()
}

/// Plans one stripe whose manifest entry is `entry` (see the module doc).
pub fn plan_stripe(
    map: &ClusterMap,
    id: &StripeId,
    code: CodeParams,
    entry: &StripeEntry,
    is_down: &dyn Fn(NodeId) -> bool,
) -> StripeMoves {
    let Some(target) = target_of(map, id, code) else {
        return StripeMoves { moves: Vec::new(), skipped: vec![(None, SkipReason::NoPlacement)] };
    };
    let retired = |n: NodeId| map.node(n).is_none_or(|x| x.decommissioned);
    let cap = placement::stripe_rack_cap(map, code, &retired).unwrap_or(code.total());
    let rack_of = |n: NodeId| map.node(n).map(|x| x.rack.as_str());
    let mut nodes: Vec<NodeId> = entry.shards.iter().map(|s| s.node).collect();
    let mut kept: Vec<NodeId> = Vec::with_capacity(nodes.len());
    let mut misplaced: Vec<usize> = Vec::new();
    for (i, &n) in nodes.iter().enumerate() {
        if target.contains(&n) && !kept.contains(&n) {
            kept.push(n);
        } else {
            misplaced.push(i);
        }
    }
    let mut out = StripeMoves::default();
    if misplaced.is_empty() {
        return out;
    }
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for &n in &nodes {
        if let Some(rack) = rack_of(n) {
            *load.entry(rack).or_insert(0) += 1;
        }
    }
    let unreadable = |n: NodeId| is_down(n) || map.node(n).is_none();
    let (mut movable, stuck): (Vec<usize>, Vec<usize>) =
        misplaced.into_iter().partition(|&i| !unreadable(nodes[i]));
    out.skipped.extend(stuck.iter().map(|&i| (Some(ShardIndex(i as u8)), SkipReason::SourceDown)));
    let free: Vec<NodeId> = target.iter().copied().filter(|n| !kept.contains(n)).collect();
    let mut free_up: Vec<NodeId> = free.iter().copied().filter(|&n| !is_down(n)).collect();
    while let Some((mi, fi)) = next_move(&nodes, &movable, &free_up, &load, cap, &rack_of) {
        let (i, to) = (movable.remove(mi), free_up.remove(fi));
        let from = nodes[i];
        let reason = if retired(from) {
            FixReason::Decommissioned
        } else if kept.contains(&from) {
            FixReason::DoubledUp
        } else {
            FixReason::Rebalance
        };
        if let Some(rack) = rack_of(from) {
            *load.entry(rack).or_insert(1) -= 1;
        }
        if let Some(rack) = rack_of(to) {
            *load.entry(rack).or_insert(0) += 1;
        }
        nodes[i] = to;
        out.moves.push(ShardFix { index: ShardIndex(i as u8), from, to, reason });
    }
    let why = if free_up.is_empty() { SkipReason::TargetDown } else { SkipReason::RackFull };
    out.skipped.extend(movable.iter().map(|&i| (Some(ShardIndex(i as u8)), why)));
    out.skipped.sort_by_key(|(i, _)| i.map(|i| i.0));
    out
}

/// The next move as (position in `movable`, position in `free`): a move within a rack
/// first, then one into a rack under `cap`; earliest shard, then best-ranked target.
fn next_move<'m>(
    nodes: &[NodeId],
    movable: &[usize],
    free: &[NodeId],
    load: &BTreeMap<&'m str, usize>,
    cap: usize,
    rack_of: &dyn Fn(NodeId) -> Option<&'m str>,
) -> Option<(usize, usize)> {
    let pairs = || {
        movable.iter().enumerate().flat_map(move |(mi, &i)| {
            free.iter().enumerate().map(move |(fi, &f)| (mi, fi, nodes[i], f))
        })
    };
    let same_rack =
        |from: NodeId, to: NodeId| rack_of(to).is_some() && rack_of(from) == rack_of(to);
    let under_cap =
        |to: NodeId| rack_of(to).is_none_or(|r| load.get(r).copied().unwrap_or(0) < cap);
    pairs()
        .find(|&(_, _, from, to)| same_rack(from, to))
        .or_else(|| pairs().find(|&(_, _, _, to)| under_cap(to)))
        .map(|(mi, fi, _, _)| (mi, fi))
}

/// One shard to move, in a plan over several parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMove {
    /// The part: its position in the manifests given to [`plan`].
    pub part: usize,
    /// The object's position in the part's manifest.
    pub object: usize,
    /// The stripe.
    pub stripe: StripeIndex,
    /// The shard, where it is and where it goes.
    pub fix: ShardFix,
}

/// A shard (or, without `index`, a whole stripe) left off its placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkippedShard {
    /// The part: its position in the manifests given to [`plan`].
    pub part: usize,
    /// The object's position in the part's manifest.
    pub object: usize,
    /// The stripe.
    pub stripe: StripeIndex,
    /// The shard, or `None` for the whole stripe.
    pub index: Option<ShardIndex>,
    /// Where the manifest says it is.
    pub node: Option<NodeId>,
    /// Why it stays.
    pub reason: SkipReason,
}

/// A rebalance plan over some parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The moves, grouped by part ((job, step, rank) order), then object and stripe.
    pub moves: Vec<ShardMove>,
    /// What stays off its placement, and why.
    pub skipped: Vec<SkippedShard>,
    /// Moves past the bound, left for the next plan.
    pub deferred: usize,
}

/// Plans the parts `manifests` (say, a checkpoint's), at most `max_moves` moves (capped by
/// `REBALANCE_MAX_MOVES`); see the module doc.
pub fn plan(
    map: &ClusterMap,
    manifests: &[Manifest],
    is_down: &dyn Fn(NodeId) -> bool,
    max_moves: usize,
) -> Plan {
    let budget = max_moves.min(REBALANCE_MAX_MOVES);
    let mut order: Vec<usize> = (0..manifests.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |m: &Manifest| (m.job.clone(), m.step, m.rank);
        key(&manifests[a]).cmp(&key(&manifests[b])).then(a.cmp(&b))
    });
    let mut out = Plan::default();
    for part in order {
        let m = &manifests[part];
        for (object, obj) in m.objects.iter().enumerate() {
            for (s, entry) in obj.stripes.iter().enumerate() {
                let stripe = StripeIndex(s as u32);
                let id = stripe_id(m, object, stripe);
                let planned = plan_stripe(map, &id, m.code.params, entry, is_down);
                for (index, reason) in planned.skipped {
                    let node =
                        index.and_then(|i| entry.shards.get(usize::from(i.0))).map(|e| e.node);
                    out.skipped.push(SkippedShard { part, object, stripe, index, node, reason });
                }
                for fix in planned.moves {
                    if out.moves.len() < budget {
                        out.moves.push(ShardMove { part, object, stripe, fix });
                    } else {
                        out.deferred += 1;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{CodeSpec, ObjectEntry, ShardEntry};
    use crate::test_map::map;
    use proptest::prelude::*;
    use rackpoint_proto::{Digest, JobName, ObjectName, Rank, Step};
    use std::collections::BTreeSet;

    fn code() -> CodeParams {
        CodeParams::new(4, 2, 4096).expect("valid")
    }

    /// A part of `stripes` stripes, each placed by `place(stripe id)`.
    fn manifest(step: u64, stripes: u32, place: &dyn Fn(&StripeId) -> Vec<NodeId>) -> Manifest {
        let name = ObjectName::new("weights").expect("valid");
        let job = JobName::new("job").expect("valid");
        let entries = (0..stripes)
            .map(|s| {
                let id = StripeId {
                    job: job.clone(),
                    step: Step(step),
                    rank: Rank(0),
                    object: name.clone(),
                    stripe: StripeIndex(s),
                };
                StripeEntry {
                    shards: place(&id)
                        .into_iter()
                        .map(|node| ShardEntry { node, hash: Digest::default() })
                        .collect(),
                }
            })
            .collect();
        Manifest {
            format_version: 1,
            job,
            step: Step(step),
            rank: Rank(0),
            world_size: 1,
            writer: "test".into(),
            code: CodeSpec::for_params(code()),
            objects: vec![ObjectEntry {
                name,
                len: u64::from(stripes) * 4 * 4096,
                hash: Digest::default(),
                stripes: entries,
            }],
            user_meta: Default::default(),
            prev: None,
        }
    }

    fn placed_on(m: &ClusterMap) -> impl Fn(&StripeId) -> Vec<NodeId> + '_ {
        move |id| placement::place_stripe(m, id, code(), &|_| false).expect("placed")
    }

    const UP: &dyn Fn(NodeId) -> bool = &|_| false;

    fn apply(m: &Manifest, moves: &[ShardMove]) -> Manifest {
        let placed: Vec<_> = moves.iter().map(|mv| (mv.object, mv.stripe, mv.fix)).collect();
        crate::repair_plan::with_moves(m, &placed)
    }

    fn rack_load(m: &ClusterMap, nodes: &[NodeId], rack: &str) -> usize {
        nodes.iter().filter(|&&n| m.node(n).is_some_and(|x| x.rack == rack)).count()
    }

    #[test]
    fn a_map_with_no_new_nodes_plans_nothing() {
        let six = map(6, 3);
        let parts = [manifest(1, 50, &placed_on(&six)), manifest(2, 20, &placed_on(&six))];
        assert_eq!(plan(&six, &parts, UP, usize::MAX), Plan::default());
    }

    #[test]
    fn a_seventh_node_takes_its_share_and_only_misplaced_shards_move() {
        let (six, seven) = (map(6, 3), map(7, 3));
        let parts = [manifest(1, 300, &placed_on(&six))];
        let p = plan(&seven, &parts, UP, usize::MAX);
        assert!(p.skipped.is_empty() && p.deferred == 0, "{p:?}");
        assert!(p.moves.iter().all(|mv| mv.fix.to == NodeId(7)), "only onto the new node");
        assert!(p.moves.iter().all(|mv| mv.fix.reason == FixReason::Rebalance));
        // Racks {1, 4, 7}, {2, 5}, {3, 6} hold 2 shards of each stripe: node 7 takes the
        // place of node 1 or 4 in about 2/3 of the stripes, and only theirs (same rack).
        let share = p.moves.len() as f64 / 300.0;
        assert!((0.55..=0.8).contains(&share), "{} of 300 stripes", p.moves.len());
        assert!(p.moves.iter().all(|mv| [NodeId(1), NodeId(4)].contains(&mv.fix.from)));
        let after = apply(&parts[0], &p.moves);
        for (s, e) in after.objects[0].stripes.iter().enumerate() {
            let id = stripe_id(&after, 0, StripeIndex(s as u32));
            let want: BTreeSet<NodeId> = placed_on(&seven)(&id).into_iter().collect();
            assert_eq!(e.shards.iter().map(|x| x.node).collect::<BTreeSet<_>>(), want);
        }
        assert_eq!(plan(&seven, std::slice::from_ref(&after), UP, usize::MAX), Plan::default());
    }

    #[test]
    fn the_bound_defers_the_rest_and_is_capped_by_the_limit() {
        let (six, seven) = (map(6, 3), map(7, 3));
        let parts = [manifest(1, 100, &placed_on(&six))];
        let all = plan(&seven, &parts, UP, usize::MAX);
        let some = plan(&seven, &parts, UP, 10);
        assert_eq!(some.moves.len(), 10);
        assert_eq!(some.deferred, all.moves.len() - 10);
        assert_eq!(some.moves[..], all.moves[..10], "a bounded plan is a prefix");
    }

    #[test]
    fn shards_on_a_down_node_are_skipped_and_down_targets_not_used() {
        let (six, seven) = (map(6, 3), map(7, 3));
        let parts = [manifest(1, 100, &placed_on(&six))];
        let down = |n: NodeId| n == NodeId(4);
        let p = plan(&seven, &parts, &down, usize::MAX);
        assert!(p.moves.iter().all(|mv| mv.fix.from != NodeId(4)), "nothing read from node 4");
        assert!(p.skipped.iter().all(|s| s.node == Some(NodeId(4))), "{:?}", p.skipped);
        assert!(p.skipped.iter().all(|s| s.reason == SkipReason::SourceDown));
        assert!(!p.skipped.is_empty(), "some stripe wanted a shard of node 4 on node 7");
        assert!(!p.moves.is_empty(), "node 1's shards still move");
        let to_down = plan(&seven, &parts, &|n| n == NodeId(7), usize::MAX);
        assert!(to_down.moves.is_empty());
        assert!(to_down.skipped.iter().all(|s| s.reason == SkipReason::TargetDown));
    }

    #[test]
    fn too_few_nodes_in_service_is_no_placement() {
        let mut five = map(6, 3);
        five.nodes[0].decommissioned = true;
        let parts = [manifest(1, 3, &placed_on(&map(6, 3)))];
        let p = plan(&five, &parts, UP, usize::MAX);
        assert!(p.moves.is_empty());
        assert_eq!(p.skipped.len(), 3);
        assert!(p.skipped.iter().all(|s| s.reason == SkipReason::NoPlacement && s.index.is_none()));
    }

    #[test]
    fn a_decommissioned_node_and_a_doubled_node_are_left() {
        let mut seven = map(7, 3);
        let parts = [manifest(1, 40, &placed_on(&seven))];
        seven.nodes[2].decommissioned = true;
        let p = plan(&seven, &parts, UP, usize::MAX);
        assert!(!p.moves.is_empty());
        for mv in &p.moves {
            assert_eq!((mv.fix.from, mv.fix.reason), (NodeId(3), FixReason::Decommissioned));
        }
        let doubled = [manifest(2, 1, &|id| {
            let mut n = placed_on(&seven)(id);
            n[5] = n[0];
            n
        })];
        let p = plan(&seven, &doubled, UP, usize::MAX);
        assert_eq!(p.moves.len(), 1, "{p:?}");
        assert_eq!(p.moves[0].fix.reason, FixReason::DoubledUp);
    }

    /// A map of `racks` racks of the given sizes, ids 1.., and the `new` last nodes removed.
    fn racked(sizes: &[usize]) -> ClusterMap {
        let mut m = map(sizes.iter().sum::<usize>() as u32, 1);
        let mut id = 0;
        for (r, &n) in sizes.iter().enumerate() {
            for _ in 0..n {
                m.nodes[id].rack = format!("rack-{r}");
                id += 1;
            }
        }
        m
    }

    fn states() -> impl Strategy<Value = (ClusterMap, ClusterMap, Vec<Manifest>, BTreeSet<NodeId>)>
    {
        (
            proptest::collection::vec(1usize..4, 2..5),
            proptest::collection::vec(any::<bool>(), 12),
            proptest::collection::vec(proptest::bool::weighted(0.1), 12),
            proptest::collection::vec(proptest::bool::weighted(0.15), 12),
            any::<u64>(),
            1u32..20,
        )
            .prop_filter_map(
                "enough nodes",
                |(sizes, keep, retire, down, seed, stripes)| {
                    let after = {
                        let mut m = racked(&sizes);
                        for (n, r) in m.nodes.iter_mut().zip(&retire) {
                            n.decommissioned = *r;
                        }
                        m
                    };
                    let mut before = racked(&sizes);
                    before
                        .nodes
                        .retain(|n| keep[(n.id.0 as usize - 1) % keep.len()] || n.id.0 <= 6);
                    (before.nodes.len() >= 6).then_some(())?;
                    let down: BTreeSet<NodeId> = after
                        .nodes
                        .iter()
                        .filter(|n| down[(n.id.0 as usize - 1) % down.len()])
                        .map(|n| n.id)
                        .collect();
                    // Placed under the old map, some stripes as a save with nodes down would.
                    let skew = |id: &StripeId| {
                        let odd = (u64::from(id.stripe.0) ^ seed) % 3 == 0;
                        let gone = |n: NodeId| odd && (u64::from(n.0) + seed) % 4 == 0;
                        placement::place_stripe(&before, id, code(), &gone)
                            .or_else(|_| placement::place_stripe(&before, id, code(), &|_| false))
                            .expect("six nodes")
                    };
                    let parts =
                        vec![manifest(1, stripes, &skew), manifest(2, stripes / 2 + 1, &skew)];
                    Some((before, after, parts, down))
                },
            )
    }

    /// Applies the plan move by move, checking each one against the stripe as it stands.
    fn apply_checked(
        after: &ClusterMap,
        parts: &[Manifest],
        p: &Plan,
        down: &BTreeSet<NodeId>,
    ) -> std::result::Result<Vec<Manifest>, TestCaseError> {
        let mut now: Vec<Manifest> = parts.to_vec();
        let cap = placement::stripe_rack_cap(after, code(), &|n| {
            after.node(n).is_none_or(|x| x.decommissioned)
        });
        for mv in &p.moves {
            let stripe = &mut now[mv.part].objects[mv.object].stripes[mv.stripe.0 as usize];
            let nodes: Vec<NodeId> = stripe.shards.iter().map(|s| s.node).collect();
            let f = mv.fix;
            prop_assert_eq!(nodes[usize::from(f.index.0)], f.from, "moves from where it is");
            prop_assert!(!nodes.contains(&f.to), "a target holds no shard of the stripe");
            prop_assert!(!down.contains(&f.to) && !down.contains(&f.from), "no down node");
            let to = after.node(f.to).expect("targets are in the map");
            prop_assert!(!to.decommissioned, "never onto a decommissioned node");
            let from_rack = after.node(f.from).map(|x| x.rack.as_str());
            if from_rack != Some(to.rack.as_str()) {
                let cap = cap.expect("a placement exists");
                prop_assert!(rack_load(after, &nodes, &to.rack) < cap, "rack rule kept");
            }
            stripe.shards[usize::from(f.index.0)].node = f.to;
        }
        Ok(now)
    }

    proptest! {
        #[test]
        fn moves_keep_the_rules_and_a_full_plan_reaches_the_placement(
            (before, after, parts, down) in states(),
        ) {
            let _ = before;
            let is_down = |n: NodeId| down.contains(&n);
            let p = plan(&after, &parts, &is_down, usize::MAX);
            prop_assert_eq!(&p, &plan(&after, &parts, &is_down, usize::MAX), "deterministic");
            let reversed: Vec<Manifest> = parts.iter().rev().cloned().collect();
            let r = plan(&after, &reversed, &is_down, usize::MAX);
            prop_assert_eq!(r.moves.len(), p.moves.len(), "the input order does not matter");
            let now = apply_checked(&after, &parts, &p, &down)?;
            for (m, old) in now.iter().zip(&parts) {
                for (o, obj) in m.objects.iter().enumerate() {
                    for (s, e) in obj.stripes.iter().enumerate() {
                        let id = stripe_id(m, o, StripeIndex(s as u32));
                        let Some(target) = target_of(&after, &id, code()) else { continue };
                        let off = |e: &StripeEntry| {
                            let set: BTreeSet<NodeId> = e.shards.iter().map(|x| x.node).collect();
                            code().total() - set.iter().filter(|n| target.contains(n)).count()
                        };
                        let was = &old.objects[o].stripes[s];
                        prop_assert!(off(e) <= off(was), "never further from the placement");
                        let readable = was.shards.iter().all(|x| !is_down(x.node) && after.node(x.node).is_some());
                        if down.is_empty() && readable {
                            prop_assert_eq!(off(e), 0, "a full plan reaches the placement");
                        }
                    }
                }
            }
            let again = plan(&after, &now, &is_down, usize::MAX);
            prop_assert!(again.moves.is_empty(), "a second plan moves nothing: {:?}", again.moves);
        }

        #[test]
        fn every_prefix_is_a_bounded_plan(
            (_before, after, parts, down) in states(),
            bound in 0usize..40,
        ) {
            let is_down = |n: NodeId| down.contains(&n);
            let all = plan(&after, &parts, &is_down, usize::MAX);
            let some = plan(&after, &parts, &is_down, bound);
            prop_assert!(some.moves.len() <= bound);
            prop_assert_eq!(&some.moves[..], &all.moves[..some.moves.len()]);
            prop_assert_eq!(some.moves.len() + some.deferred, all.moves.len());
            apply_checked(&after, &parts, &some, &down)?;
        }

        #[test]
        fn no_new_nodes_no_moves(sizes in proptest::collection::vec(1usize..4, 2..5), stripes in 1u32..30) {
            let m = racked(&sizes);
            prop_assume!(m.nodes.len() >= 6);
            let parts = [manifest(7, stripes, &placed_on(&m))];
            prop_assert_eq!(plan(&m, &parts, UP, usize::MAX), Plan::default());
        }
    }
}
