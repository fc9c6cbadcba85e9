//! The repair planner, pure: from what a survey found about each shard of a stripe (healthy,
//! missing, corrupt, unreachable) and the cluster map (decommissioned nodes) it decides which
//! shards to rewrite, where, and which shards to read to rebuild them.
//!
//! Rules, per stripe:
//! - a shard that is missing or corrupt on a node that is up and in service is rewritten in
//!   place (the manifest does not change: a wiped or rotted disk gets its own shards back);
//! - a shard on a node that is down, gone from the map or decommissioned moves to a healthy
//!   node chosen by placement (the stripe's rendezvous order and rack rule, as a degraded
//!   save would choose), and so does a shard doubled up on a node that holds another shard
//!   of the stripe when there are enough nodes in service for every shard to have its own,
//!   and a shard whose rack holds more of the stripe than the rack rule allows (a save made
//!   while racks were down) once the racks in service allow the rule again;
//! - a shard the survey could not judge (its node answered, but with an error such as
//!   `Busy`) is left where it is and not read: the stripe is reported not fully checked, so a
//!   busy node never has its shards moved off it;
//! - with fewer than `k` healthy shards the stripe is unrecoverable (reported, not touched);
//! - sources: only the shards being moved when all of them are healthy (a copy), otherwise
//!   `k` healthy shards, picked by the driver to spread reads over nodes.

use rackpoint_proto::{ClusterMap, CodeParams, NodeId, ShardIndex, StripeId, StripeIndex};

use crate::manifest::{Manifest, StripeEntry};
use crate::placement;

/// What the survey found about one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardState {
    /// The node re-hashed it and the digest is the manifest's.
    Healthy,
    /// The node does not have it.
    Missing,
    /// The node has other bytes than the manifest names (rot, or another version).
    Corrupt,
    /// The node did not answer.
    Unreachable,
    /// The node answered with an error (busy, say): nothing is known about the shard.
    Unknown,
}

/// Why a shard is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FixReason {
    /// It was missing.
    Missing,
    /// Its bytes were wrong.
    Corrupt,
    /// Its node did not answer.
    Unreachable,
    /// Its node is decommissioned or no longer in the map.
    Decommissioned,
    /// Its node held another shard of the stripe.
    DoubledUp,
    /// Its rack held more shards of the stripe than the rack rule allows.
    RackCrowded,
    /// Its node is not in the stripe's placement under the current map (a rebalance onto
    /// new nodes; the core's `rebalance` plans it, never the repair planner).
    Rebalance,
}

/// One shard to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardFix {
    /// The shard.
    pub index: ShardIndex,
    /// Where the manifest says it is.
    pub from: NodeId,
    /// Where it goes (equal to `from` for a rewrite in place).
    pub to: NodeId,
    /// Why.
    pub reason: FixReason,
}

/// What to do with one stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripePlan {
    /// Nothing: every shard is healthy where it should be.
    Healthy,
    /// Rewrite these shards.
    Fix {
        /// The shards to write, in index order.
        fixes: Vec<ShardFix>,
        /// Shards that may be read: the moved shards themselves when they are all healthy
        /// (`copy`), otherwise every healthy shard (the driver reads `k` of them).
        sources: Vec<ShardIndex>,
        /// Whether `sources` are exactly the shards to write (no decoding needed).
        copy: bool,
        /// Shards that needed a new node but found none (the stripe stays short of full
        /// redundancy and is reported).
        unplaced: usize,
    },
    /// Some shards need a new node but no node in service can take them.
    NoRoom {
        /// Shards that could not be placed.
        shards: usize,
    },
    /// Fewer than `k` shards known healthy, but some could not be judged: nothing is done
    /// until a later survey can tell.
    Unsurveyed {
        /// Shards that could not be judged.
        unknown: usize,
    },
    /// Fewer than `k` healthy shards: nothing can rebuild it.
    Unrecoverable {
        /// Shards needed.
        need: usize,
        /// Healthy shards.
        got: usize,
    },
}

impl StripePlan {
    /// Whether the plan moves some shard to another node (the manifest must change).
    pub fn moves(&self) -> bool {
        matches!(self, StripePlan::Fix { fixes, .. } if fixes.iter().any(|f| f.to != f.from))
    }
}

/// Whether `node` may receive shards: in the map, not decommissioned, not down.
pub fn in_service(map: &ClusterMap, node: NodeId, is_down: &dyn Fn(NodeId) -> bool) -> bool {
    map.node(node).is_some_and(|n| !n.decommissioned) && !is_down(node)
}

/// Plans the repair of one stripe whose manifest entry is `entry` and whose survey found
/// `states` (one per shard, in index order; `states.len()` is `k + m`).
pub fn plan_stripe(
    map: &ClusterMap,
    id: &StripeId,
    code: CodeParams,
    entry: &StripeEntry,
    states: &[ShardState],
    is_down: &dyn Fn(NodeId) -> bool,
) -> StripePlan {
    let usable = |n: NodeId| in_service(map, n, is_down);
    let nodes: Vec<NodeId> = entry.shards.iter().map(|s| s.node).collect();
    let healthy: Vec<bool> = states.iter().map(|s| *s == ShardState::Healthy).collect();
    let got = healthy.iter().filter(|&&h| h).count();
    let enough_nodes = map.nodes.iter().filter(|n| usable(n.id)).count() >= code.total();
    let retired = |n: NodeId| map.node(n).is_none_or(|x| x.decommissioned);
    let mut reasons: Vec<Option<FixReason>> = (0..nodes.len())
        .map(|i| reason(i, &nodes, states, enough_nodes, &usable, &retired))
        .collect();
    if enough_nodes {
        mark_rack_crowding(map, code, &nodes, states, &mut reasons, &|n| !usable(n));
    }
    if reasons.iter().all(Option::is_none) {
        return StripePlan::Healthy;
    }
    if got < usize::from(code.k) {
        let unknown = states.iter().filter(|s| **s == ShardState::Unknown).count();
        if unknown > 0 {
            return StripePlan::Unsurveyed { unknown };
        }
        return StripePlan::Unrecoverable { need: code.k.into(), got };
    }
    let targets = choose_targets(map, id, code, &nodes, &reasons, enough_nodes, is_down);
    let fixes: Vec<ShardFix> = reasons
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let to = targets[i]?;
            Some(ShardFix { index: ShardIndex(i as u8), from: nodes[i], to, reason: (*r)? })
        })
        .collect();
    let unplaced = reasons.iter().flatten().count() - fixes.len();
    if fixes.is_empty() {
        return StripePlan::NoRoom { shards: unplaced };
    }
    let copy = fixes.iter().all(|f| healthy[usize::from(f.index.0)]);
    let sources = if copy {
        fixes.iter().map(|f| f.index).collect()
    } else {
        (0..nodes.len()).filter(|&i| healthy[i]).map(|i| ShardIndex(i as u8)).collect()
    };
    StripePlan::Fix { fixes, sources, copy, unplaced }
}

/// Marks the shards that put their rack over the stripe's rack cap (in index order, the
/// ones past the cap) as [`FixReason::RackCrowded`], unless they move for another reason.
/// Shards left where they are count toward their rack; shards moving anyway do not.
fn mark_rack_crowding(
    map: &ClusterMap,
    code: CodeParams,
    nodes: &[NodeId],
    states: &[ShardState],
    reasons: &mut [Option<FixReason>],
    unusable: &dyn Fn(NodeId) -> bool,
) {
    let Some(cap) = placement::stripe_rack_cap(map, code, unusable) else { return };
    let mut load: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (i, &node) in nodes.iter().enumerate() {
        let stays = matches!(reasons[i], None | Some(FixReason::Missing | FixReason::Corrupt));
        let Some(rack) = map.node(node).map(|n| n.rack.as_str()) else { continue };
        if !stays || states[i] == ShardState::Unknown {
            continue;
        }
        let held = load.entry(rack).or_insert(0);
        if *held < cap {
            *held += 1;
        } else {
            reasons[i] = Some(FixReason::RackCrowded);
        }
    }
}

/// Why shard `i` needs a rewrite, if it does.
fn reason(
    i: usize,
    nodes: &[NodeId],
    states: &[ShardState],
    enough_nodes: bool,
    usable: &dyn Fn(NodeId) -> bool,
    retired: &dyn Fn(NodeId) -> bool,
) -> Option<FixReason> {
    let doubled = enough_nodes && nodes[..i].contains(&nodes[i]);
    match states[i] {
        // Not judged: it stays, unless its node is leaving the cluster (then it is rebuilt).
        ShardState::Unknown if retired(nodes[i]) => Some(FixReason::Decommissioned),
        ShardState::Unknown => None,
        ShardState::Unreachable => Some(FixReason::Unreachable),
        ShardState::Missing | ShardState::Corrupt if doubled || !usable(nodes[i]) => {
            Some(if doubled { FixReason::DoubledUp } else { FixReason::Decommissioned })
        }
        ShardState::Missing => Some(FixReason::Missing),
        ShardState::Corrupt => Some(FixReason::Corrupt),
        ShardState::Healthy if !usable(nodes[i]) => Some(FixReason::Decommissioned),
        ShardState::Healthy if doubled => Some(FixReason::DoubledUp),
        ShardState::Healthy => None,
    }
}

/// The node each shard needing a fix goes to (`None`: no fix, or nowhere to go). Rewrites in
/// place stay; moves take the stripe's next placement node outside it, or (with fewer nodes
/// in service than `k + m`) its degraded placement, which doubles up at most `m` a node.
fn choose_targets(
    map: &ClusterMap,
    id: &StripeId,
    code: CodeParams,
    nodes: &[NodeId],
    reasons: &[Option<FixReason>],
    enough_nodes: bool,
    is_down: &dyn Fn(NodeId) -> bool,
) -> Vec<Option<NodeId>> {
    let in_place =
        |r: &Option<FixReason>| matches!(r, Some(FixReason::Missing | FixReason::Corrupt));
    let moving = |r: &Option<FixReason>| r.is_some() && !in_place(r);
    let unusable = |n: NodeId| !in_service(map, n, is_down);
    let mut targets: Vec<Option<NodeId>> =
        reasons.iter().zip(nodes).map(|(r, &n)| in_place(r).then_some(n)).collect();
    if enough_nodes {
        let mut current = nodes.to_vec();
        for (i, _) in reasons.iter().enumerate().filter(|(_, r)| moving(r)) {
            if let Some(to) = placement::replacement(map, id, code, &current, &unusable) {
                current[i] = to;
                targets[i] = Some(to);
            }
        }
        return targets;
    }
    let pins: Vec<Option<NodeId>> =
        reasons.iter().zip(nodes).map(|(r, &n)| (!moving(r)).then_some(n)).collect();
    if let Ok(placed) = placement::place_degraded(map, id, code, &pins, &unusable) {
        for (i, _) in reasons.iter().enumerate().filter(|(_, r)| moving(r)) {
            targets[i] = Some(placed[i]);
        }
    }
    targets
}

/// The address of stripe `stripe` of object `object` (its position) of a manifest.
pub fn stripe_id(m: &Manifest, object: usize, stripe: StripeIndex) -> StripeId {
    StripeId {
        job: m.job.clone(),
        step: m.step,
        rank: m.rank,
        object: m.objects[object].name.clone(),
        stripe,
    }
}

/// A fix at its place in a manifest: (object position, stripe, fix).
pub type PlacedFix = (usize, StripeIndex, ShardFix);

/// The manifest naming each moved shard on its new node: the next revision of a part whose
/// shards a repair or a rebalance moved (only where shards live changes).
pub fn with_moves(m: &Manifest, moved: &[PlacedFix]) -> Manifest {
    let mut new = m.clone();
    for (o, s, fix) in moved {
        new.objects[*o].stripes[s.0 as usize].shards[usize::from(fix.index.0)].node = fix.to;
    }
    new
}

/// The `k` sources to read among `candidates` (healthy shards): the least-read nodes first
/// (`read_from(node)` is what has been read from it so far), data shards before parity on a
/// tie (a stripe whose data shards are all read decodes by copying), one shard a node when
/// possible.
pub fn pick_sources(
    candidates: &[ShardIndex],
    k: usize,
    node_of: &dyn Fn(ShardIndex) -> NodeId,
    read_from: &dyn Fn(NodeId) -> u64,
) -> Vec<ShardIndex> {
    let mut ordered = candidates.to_vec();
    ordered.sort_by_key(|&i| (read_from(node_of(i)), i.0));
    let mut picked: Vec<ShardIndex> = Vec::with_capacity(k);
    let mut used: Vec<NodeId> = Vec::with_capacity(k);
    for &i in &ordered {
        if picked.len() < k && !used.contains(&node_of(i)) {
            picked.push(i);
            used.push(node_of(i));
        }
    }
    for &i in &ordered {
        if picked.len() < k && !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked.sort_by_key(|i| i.0);
    picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ShardEntry;
    use proptest::prelude::*;
    use rackpoint_proto::{Digest, JobName, ObjectName, Rank, Step};
    use std::collections::BTreeMap;

    use crate::test_map::map;

    fn stripe(n: u32) -> StripeId {
        StripeId {
            job: JobName::new("job").expect("valid"),
            step: Step(1),
            rank: Rank(0),
            object: ObjectName::new("o").expect("valid"),
            stripe: StripeIndex(n),
        }
    }

    fn entry(map: &ClusterMap, id: &StripeId) -> StripeEntry {
        let nodes = placement::place_stripe(map, id, map.code, &|_| false).expect("placed");
        StripeEntry {
            shards: nodes
                .into_iter()
                .map(|node| ShardEntry { node, hash: Digest::default() })
                .collect(),
        }
    }

    const UP: &dyn Fn(NodeId) -> bool = &|_| false;

    #[test]
    fn a_healthy_stripe_needs_nothing() {
        let m = map(8, 4);
        let e = entry(&m, &stripe(0));
        let plan = plan_stripe(&m, &stripe(0), m.code, &e, &[ShardState::Healthy; 6], UP);
        assert_eq!(plan, StripePlan::Healthy);
    }

    #[test]
    fn lost_shards_on_nodes_in_service_are_rewritten_in_place() {
        let m = map(8, 4);
        let e = entry(&m, &stripe(1));
        let mut states = [ShardState::Healthy; 6];
        states[0] = ShardState::Missing;
        states[4] = ShardState::Corrupt;
        let StripePlan::Fix { fixes, sources, copy, .. } =
            plan_stripe(&m, &stripe(1), m.code, &e, &states, UP)
        else {
            panic!("expected a fix")
        };
        assert!(fixes.iter().all(|f| f.to == f.from), "{fixes:?}");
        assert_eq!(
            fixes.iter().map(|f| f.reason).collect::<Vec<_>>(),
            [FixReason::Missing, FixReason::Corrupt]
        );
        assert!(!copy);
        assert_eq!(sources.len(), 4, "every healthy shard may be read");
    }

    #[test]
    fn shards_of_a_down_or_decommissioned_node_move_off_it() {
        let mut m = map(8, 4);
        let e = entry(&m, &stripe(2));
        let (down, retired) = (e.shards[1].node, e.shards[3].node);
        m.nodes.iter_mut().find(|n| n.id == retired).expect("in the map").decommissioned = true;
        let mut states = [ShardState::Healthy; 6];
        states[1] = ShardState::Unreachable;
        let is_down = move |n: NodeId| n == down;
        let plan = plan_stripe(&m, &stripe(2), m.code, &e, &states, &is_down);
        assert!(plan.moves());
        let StripePlan::Fix { fixes, copy, .. } = plan else { panic!("expected a fix") };
        let stripe_nodes: Vec<NodeId> = e.shards.iter().map(|s| s.node).collect();
        assert_eq!(fixes.len(), 2);
        for f in &fixes {
            assert!(f.to != down && f.to != retired && !stripe_nodes.contains(&f.to), "{f:?}");
        }
        assert_ne!(fixes[0].to, fixes[1].to);
        assert!(!copy, "the unreachable shard must be rebuilt");
    }

    #[test]
    fn a_decommissioned_node_alone_is_a_copy() {
        let mut m = map(8, 4);
        let e = entry(&m, &stripe(3));
        let retired = e.shards[5].node;
        m.nodes.iter_mut().find(|n| n.id == retired).expect("in the map").decommissioned = true;
        let plan = plan_stripe(&m, &stripe(3), m.code, &e, &[ShardState::Healthy; 6], UP);
        let StripePlan::Fix { fixes, sources, copy, .. } = plan else { panic!("expected a fix") };
        assert!(copy);
        assert_eq!(sources, [ShardIndex(5)]);
        assert_eq!(fixes[0].reason, FixReason::Decommissioned);
    }

    #[test]
    fn doubled_up_shards_spread_out_once_nodes_allow_it() {
        let m = map(6, 3);
        let id = stripe(4);
        let mut e = entry(&m, &id);
        let twice = e.shards[0].node;
        e.shards[2].node = twice;
        let plan = plan_stripe(&m, &id, m.code, &e, &[ShardState::Healthy; 6], UP);
        let StripePlan::Fix { fixes, copy, .. } = plan else { panic!("expected a fix") };
        assert_eq!(fixes.len(), 1);
        assert_eq!(
            (fixes[0].index, fixes[0].reason, copy),
            (ShardIndex(2), FixReason::DoubledUp, true)
        );
        let mut after: Vec<NodeId> = e.shards.iter().map(|s| s.node).collect();
        after[2] = fixes[0].to;
        after.sort();
        after.dedup();
        assert_eq!(after.len(), 6, "every shard on its own node");
    }

    #[test]
    fn with_too_few_nodes_a_lost_shard_doubles_up_at_most_m_a_node() {
        let m = map(6, 3);
        let id = stripe(5);
        let e = entry(&m, &id);
        let down = e.shards[0].node;
        let mut states = [ShardState::Healthy; 6];
        states[0] = ShardState::Unreachable;
        let is_down = move |n: NodeId| n == down;
        let StripePlan::Fix { fixes, .. } = plan_stripe(&m, &id, m.code, &e, &states, &is_down)
        else {
            panic!("expected a fix")
        };
        assert_eq!(fixes.len(), 1);
        assert_ne!(fixes[0].to, down);
        let on_target = e.shards.iter().filter(|s| s.node == fixes[0].to).count() + 1;
        assert!(on_target <= 2, "at most m shards a node");
    }

    #[test]
    fn a_shard_the_survey_could_not_judge_stays_put_and_is_not_read() {
        let m = map(8, 4);
        let e = entry(&m, &stripe(7));
        let mut states = [ShardState::Healthy; 6];
        states[1] = ShardState::Unknown;
        assert_eq!(plan_stripe(&m, &stripe(7), m.code, &e, &states, UP), StripePlan::Healthy);
        states[4] = ShardState::Missing;
        let StripePlan::Fix { fixes, sources, .. } =
            plan_stripe(&m, &stripe(7), m.code, &e, &states, UP)
        else {
            panic!("expected a fix")
        };
        assert_eq!(fixes.iter().map(|f| f.index).collect::<Vec<_>>(), [ShardIndex(4)]);
        assert!(!sources.contains(&ShardIndex(1)), "an unjudged shard is not a source");
        let mut few = [ShardState::Missing; 6];
        few[0] = ShardState::Healthy;
        few[2] = ShardState::Unknown;
        assert_eq!(
            plan_stripe(&m, &stripe(7), m.code, &e, &few, UP),
            StripePlan::Unsurveyed { unknown: 1 },
            "not unrecoverable: the unjudged shard may be fine"
        );
    }

    #[test]
    fn a_rack_over_the_rule_gives_up_its_extra_shards_once_the_racks_allow() {
        let m = map(9, 3);
        let id = stripe(8);
        let mut e = entry(&m, &id);
        // Put shards 0, 1 and 2 in one rack (as a save made while other racks were down
        // might have): three nodes of rack-0 are 3, 6 and 9.
        for (i, node) in [3, 6, 9].into_iter().enumerate() {
            if let Some(j) = e.shards.iter().position(|s| s.node == NodeId(node)) {
                e.shards.swap(i, j);
            }
            e.shards[i].node = NodeId(node);
        }
        let plan = plan_stripe(&m, &id, m.code, &e, &[ShardState::Healthy; 6], UP);
        let StripePlan::Fix { fixes, copy, unplaced, .. } = plan else { panic!("expected a fix") };
        assert!(copy && unplaced == 0);
        assert!(fixes.iter().all(|f| f.reason == FixReason::RackCrowded), "{fixes:?}");
        let mut after: Vec<NodeId> = e.shards.iter().map(|s| s.node).collect();
        for f in &fixes {
            after[usize::from(f.index.0)] = f.to;
        }
        assert!(racks_within(&m, &after, 2), "{after:?}");
    }

    /// Whether no rack holds more than `cap` of `nodes`.
    fn racks_within(m: &ClusterMap, nodes: &[NodeId], cap: usize) -> bool {
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        for n in nodes {
            *load.entry(m.node(*n).map(|x| x.rack.as_str()).unwrap_or("")).or_insert(0) += 1;
        }
        load.values().all(|&l| l <= cap)
    }

    #[test]
    fn fewer_than_k_healthy_shards_is_unrecoverable() {
        let m = map(8, 4);
        let e = entry(&m, &stripe(6));
        let mut states = [ShardState::Missing; 6];
        states[0] = ShardState::Healthy;
        states[5] = ShardState::Healthy;
        states[3] = ShardState::Healthy;
        let plan = plan_stripe(&m, &stripe(6), m.code, &e, &states, UP);
        assert_eq!(plan, StripePlan::Unrecoverable { need: 4, got: 3 });
    }

    #[test]
    fn sources_spread_over_the_least_read_nodes() {
        let nodes = [1, 2, 3, 4, 5, 6].map(NodeId);
        let node_of = |i: ShardIndex| nodes[usize::from(i.0)];
        let read: BTreeMap<NodeId, u64> = [(NodeId(1), 100), (NodeId(2), 100)].into();
        let read_from = |n: NodeId| read.get(&n).copied().unwrap_or(0);
        let all: Vec<ShardIndex> = (0..6).map(ShardIndex).collect();
        let picked = pick_sources(&all, 4, &node_of, &read_from);
        assert_eq!(picked, [2, 3, 4, 5].map(ShardIndex));
        let unread = pick_sources(&all, 4, &node_of, &|_| 0);
        assert_eq!(unread, [0, 1, 2, 3].map(ShardIndex), "data shards first on a tie");
        let doubled = |i: ShardIndex| NodeId(u32::from(i.0) / 2);
        let spread = pick_sources(&all, 3, &doubled, &|_| 0);
        assert_eq!(spread, [0, 2, 4].map(ShardIndex), "one shard a node first");
    }

    fn state() -> impl Strategy<Value = ShardState> {
        prop_oneof![
            4 => Just(ShardState::Healthy),
            1 => Just(ShardState::Missing),
            1 => Just(ShardState::Corrupt),
            1 => Just(ShardState::Unreachable),
            1 => Just(ShardState::Unknown),
        ]
    }

    proptest! {
        /// Whatever the survey found: an unrecoverable plan only below k healthy shards; a
        /// fix writes only to nodes in service, never moves a shard onto a node of the
        /// stripe when there are enough nodes, and leaves every shard on a node in service.
        #[test]
        fn plans_put_shards_only_on_nodes_in_service(
            nodes in 6u32..12,
            racks in 2u32..5,
            n in any::<u32>(),
            states in proptest::collection::vec(state(), 6),
            retired in proptest::option::of(1u32..12),
        ) {
            let mut m = map(nodes, racks);
            if let Some(r) = retired {
                if let Some(node) = m.nodes.iter_mut().find(|x| x.id == NodeId(r)) {
                    node.decommissioned = true;
                }
            }
            let id = stripe(n);
            let e = entry(&map(nodes, racks), &id);
            let unreachable: Vec<NodeId> = e.shards.iter().zip(&states)
                .filter(|(_, s)| **s == ShardState::Unreachable).map(|(s, _)| s.node).collect();
            let is_down = |x: NodeId| unreachable.contains(&x);
            let healthy = states.iter().filter(|s| **s == ShardState::Healthy).count();
            let unknown = states.iter().filter(|s| **s == ShardState::Unknown).count();
            match plan_stripe(&m, &id, m.code, &e, &states, &is_down) {
                StripePlan::Unrecoverable { got, .. } => prop_assert!(got < 4 && got == healthy && unknown == 0),
                StripePlan::Unsurveyed { unknown: u } => prop_assert!(healthy < 4 && u == unknown && u > 0),
                StripePlan::Healthy => prop_assert!(states.iter().all(|s| matches!(s, ShardState::Healthy | ShardState::Unknown))),
                StripePlan::NoRoom { shards } => prop_assert!(shards > 0),
                StripePlan::Fix { fixes, sources, copy, unplaced } => {
                    prop_assert!(healthy >= 4);
                    let mut after: Vec<NodeId> = e.shards.iter().map(|s| s.node).collect();
                    for f in &fixes {
                        prop_assert!(in_service(&m, f.to, &is_down), "{f:?}");
                        let judged = states[usize::from(f.index.0)] != ShardState::Unknown;
                        prop_assert!(judged || f.reason == FixReason::Decommissioned, "{f:?}");
                        prop_assert!(!sources.contains(&f.index) || states[usize::from(f.index.0)] == ShardState::Healthy);
                        after[usize::from(f.index.0)] = f.to;
                    }
                    prop_assert!(sources.iter().all(|i| states[usize::from(i.0)] == ShardState::Healthy));
                    // The rack rule holds afterwards, for the shards whose place is known,
                    // whenever the racks in service allow it and every fix found a node.
                    let unusable = |x: NodeId| !in_service(&m, x, &is_down);
                    if let (Some(cap), 0, 0) = (placement::stripe_rack_cap(&m, m.code, &unusable), unplaced, unknown) {
                        prop_assert!(racks_within(&m, &after, cap), "{:?} over cap {}", after, cap);
                    }
                    let in_service_nodes = m.nodes.iter().filter(|x| in_service(&m, x.id, &is_down)).count();
                    if in_service_nodes >= 6 {
                        let mut distinct = after.clone();
                        distinct.sort();
                        distinct.dedup();
                        prop_assert_eq!(distinct.len(), 6, "{:?}", after);
                        prop_assert!(after.iter().all(|&x| in_service(&m, x, &is_down)));
                    }
                    if copy {
                        prop_assert!(sources.iter().all(|i| states[usize::from(i.0)] == ShardState::Healthy));
                    } else {
                        prop_assert!(sources.len() >= 4);
                    }
                }
            }
        }
    }
}
