//! Where shards and manifests go: rendezvous (highest-random-weight) hashing over the cluster
//! map, with a per-rack cap so that losing one failure domain costs a stripe at most `m`
//! shards. Pure and deterministic: the same map, stripe and down set give the same nodes on
//! every platform, whatever the order of the nodes in the map.
//!
//! Weights. A node's weight for a stripe is the first 8 bytes, read big-endian, of
//! `blake3(stripe_key || node_id)`, where `node_id` is the node's `u32` id big-endian and
//! `stripe_key` is
//!
//! ```text
//! "rackpoint/stripe/v1" 0x00 job 0x00 step(u64 BE) rank(u32 BE) object 0x00 stripe(u32 BE)
//! ```
//!
//! (names never hold NUL, so the encoding is injective). A manifest's replica set uses
//! `"rackpoint/manifest/v1" 0x00 job 0x00 step(u64 BE) rank(u32 BE)` instead. Nodes are ranked
//! by descending weight, ties broken by ascending id.
//!
//! Rack rule. A stripe's `k + m` shards go to the first nodes in rank order, skipping down
//! nodes and nodes whose rack already holds `cap` of the stripe's shards. `cap` is `m` when
//! the up nodes allow it (`sum over racks of min(up nodes in rack, m) >= k + m`), so one lost
//! rack never costs more than `m` shards; otherwise it is the smallest cap that still places
//! `k + m` shards (the widest spread; `ceil((k + m) / racks)` when racks are even).

use std::collections::BTreeMap;

use rackpoint_proto::cluster::ConfigError;
use rackpoint_proto::{ClusterMap, CodeParams, JobName, NodeId, Rank, Step, StripeId};

const STRIPE_DOMAIN: &[u8] = b"rackpoint/stripe/v1\0";
const MANIFEST_DOMAIN: &[u8] = b"rackpoint/manifest/v1\0";

/// The canonical encoding of a stripe hashed with each node id (see the module doc).
pub fn stripe_key(s: &StripeId) -> Vec<u8> {
    let mut k = checkpoint_key(STRIPE_DOMAIN, &s.job, s.step, s.rank);
    k.extend_from_slice(s.object.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&s.stripe.0.to_be_bytes());
    k
}

/// Why nodes could not be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Fewer nodes are up than the placement needs.
    #[error("need {need} distinct nodes but only {up} of {total} are up")]
    NotEnoughNodes {
        /// Nodes needed.
        need: usize,
        /// Nodes up.
        up: usize,
        /// Nodes in the map.
        total: usize,
    },
    /// The code is out of bounds.
    #[error(transparent)]
    BadCode(#[from] ConfigError),
}

/// A node with its weight for one key.
#[derive(Debug, Clone, Copy)]
struct Candidate<'m> {
    id: NodeId,
    rack: &'m str,
    weight: u64,
}

/// The first 8 bytes (big-endian) of `blake3(key || node_id BE)`, from a hasher that has
/// already absorbed `key`.
fn weight(keyed: &blake3::Hasher, id: NodeId) -> u64 {
    let mut h = keyed.clone();
    h.update(&id.0.to_be_bytes());
    let d = h.finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&d.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// The up nodes of `map` in rank order for `key` (duplicate ids kept once); decommissioned
/// nodes are never chosen.
fn ranked<'m>(
    map: &'m ClusterMap,
    key: &[u8],
    is_down: &dyn Fn(NodeId) -> bool,
) -> Vec<Candidate<'m>> {
    let mut keyed = blake3::Hasher::new();
    keyed.update(key);
    let mut c: Vec<Candidate<'m>> = map
        .nodes
        .iter()
        .filter(|n| !n.decommissioned && !is_down(n.id))
        .map(|n| Candidate { id: n.id, rack: &n.rack, weight: weight(&keyed, n.id) })
        .collect();
    c.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.id.cmp(&b.id)));
    c.dedup_by_key(|n| n.id);
    c
}

/// Up nodes per rack.
fn rack_sizes<'m>(up: &[Candidate<'m>]) -> BTreeMap<&'m str, usize> {
    let mut sizes = BTreeMap::new();
    for n in up {
        *sizes.entry(n.rack).or_insert(0) += 1;
    }
    sizes
}

/// The per-rack cap for `need` shards of a code with `m` parity shards (see the module doc).
/// Requires `need <= up nodes`, so some cap up to `need` always places them all.
fn rack_cap(sizes: &BTreeMap<&str, usize>, need: usize, m: usize) -> usize {
    let placeable = |cap: usize| sizes.values().map(|&n| n.min(cap)).sum::<usize>() >= need;
    if placeable(m) {
        return m;
    }
    (1..=need).find(|&cap| placeable(cap)).unwrap_or(need)
}

/// The most shards of one stripe a rack may hold, as [`place_stripe`] computes it over the
/// nodes that are not down: `m` when the racks allow it, otherwise the widest spread; `None`
/// when fewer than `k + m` nodes are up (a degraded placement's caps apply instead).
pub fn stripe_rack_cap(
    map: &ClusterMap,
    code: CodeParams,
    is_down: &dyn Fn(NodeId) -> bool,
) -> Option<usize> {
    let up = ranked(map, &[], is_down);
    (up.len() >= code.total()).then(|| rack_cap(&rack_sizes(&up), code.total(), code.m.into()))
}

fn not_enough(map: &ClusterMap, need: usize, up: usize) -> PlacementError {
    PlacementError::NotEnoughNodes { need, up, total: map.nodes.len() }
}

/// The `k + m` distinct nodes of this stripe, in shard-index order: the first nodes in the
/// stripe's rank order that are not down and keep the rack rule (see the module doc).
pub fn place_stripe(
    map: &ClusterMap,
    s: &StripeId,
    code: CodeParams,
    is_down: &dyn Fn(NodeId) -> bool,
) -> Result<Vec<NodeId>, PlacementError> {
    code.validate()?;
    let need = code.total();
    let up = ranked(map, &stripe_key(s), is_down);
    if up.len() < need {
        return Err(not_enough(map, need, up.len()));
    }
    let cap = rack_cap(&rack_sizes(&up), need, code.m.into());
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    let mut chosen = Vec::with_capacity(need);
    for n in &up {
        let in_rack = load.entry(n.rack).or_insert(0);
        if *in_rack < cap {
            *in_rack += 1;
            chosen.push(n.id);
            if chosen.len() == need {
                break;
            }
        }
    }
    debug_assert_eq!(chosen.len(), need, "the cap was chosen so that need nodes fit");
    Ok(chosen)
}

/// For a degraded write: the next node in this stripe's rank order that is not in `current`,
/// not down, and whose rack is under the stripe's cap; `None` if there is none.
///
/// `current` is the stripe's node list as it stands, including the node(s) being replaced
/// (so they are not chosen again). Nodes of `current` that `is_down` reports down do not
/// count toward their rack's load: their shards are the ones moving. The cap is computed as
/// in [`place_stripe`] over the up nodes.
pub fn replacement(
    map: &ClusterMap,
    s: &StripeId,
    code: CodeParams,
    current: &[NodeId],
    is_down: &dyn Fn(NodeId) -> bool,
) -> Option<NodeId> {
    code.validate().ok()?;
    let need = code.total();
    let up = ranked(map, &stripe_key(s), is_down);
    if up.len() < need {
        return None;
    }
    let cap = rack_cap(&rack_sizes(&up), need, code.m.into());
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for n in up.iter().filter(|n| current.contains(&n.id)) {
        *load.entry(n.rack).or_insert(0) += 1;
    }
    up.iter()
        .find(|n| !current.contains(&n.id) && load.get(n.rack).copied().unwrap_or(0) < cap)
        .map(|n| n.id)
}

/// Degraded placement, for when the stripe cannot have `k + m` distinct up nodes (say one of
/// six nodes died at 4 + 2): up nodes take more than one shard of the stripe, at most `m`
/// each, so the stripe still survives any single node failure (and a rack, when the racks
/// allow), and the save goes on instead of failing. `current[i]` pins shard `i` to a node it
/// is already on (`Some`) or asks for one (`None`); each `None` gets the first node in rank
/// order among the least loaded up nodes whose rack is under the cap. The manifest records
/// the result, and `redundancy` counts a doubled node's shards together (in nodes).
pub fn place_degraded(
    map: &ClusterMap,
    s: &StripeId,
    code: CodeParams,
    current: &[Option<NodeId>],
    is_down: &dyn Fn(NodeId) -> bool,
) -> Result<Vec<NodeId>, PlacementError> {
    code.validate()?;
    let (need, m) = (code.total(), usize::from(code.m));
    let up = ranked(map, &stripe_key(s), is_down);
    if current.len() != need || up.len() * m < need {
        return Err(not_enough(map, need.div_ceil(m), up.len()));
    }
    let mut rack_nodes: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &up {
        *rack_nodes.entry(n.rack).or_insert(0) += m;
    }
    let cap = rack_cap(&rack_nodes, need, m);
    let rack_of = |id: NodeId| up.iter().find(|n| n.id == id).map(|n| n.rack);
    let (mut node_load, mut rack_load) = (BTreeMap::new(), BTreeMap::new());
    for id in current.iter().flatten() {
        *node_load.entry(*id).or_insert(0usize) += 1;
        if let Some(rack) = rack_of(*id) {
            *rack_load.entry(rack).or_insert(0usize) += 1;
        }
    }
    let mut out = Vec::with_capacity(need);
    for slot in current {
        let id = match slot {
            Some(id) => *id,
            None => {
                let load = |n: &Candidate| node_load.get(&n.id).copied().unwrap_or(0);
                let fits = |n: &&Candidate| {
                    load(n) < m && rack_load.get(n.rack).copied().unwrap_or(0) < cap
                };
                let best = up
                    .iter()
                    .filter(fits)
                    .min_by_key(|n| load(n))
                    .ok_or_else(|| not_enough(map, need.div_ceil(m), up.len()))?;
                *node_load.entry(best.id).or_insert(0) += 1;
                *rack_load.entry(best.rack).or_insert(0) += 1;
                best.id
            }
        };
        out.push(id);
    }
    Ok(out)
}

/// A manifest's replica set: `copies` distinct up nodes, one per rack first (racks taken in
/// the order of their best node), then any, all in the rank order of `(job, step, rank)`.
pub fn place_manifest(
    map: &ClusterMap,
    job: &JobName,
    step: Step,
    rank: Rank,
    copies: usize,
    is_down: &dyn Fn(NodeId) -> bool,
) -> Result<Vec<NodeId>, PlacementError> {
    let up = ranked(map, &checkpoint_key(MANIFEST_DOMAIN, job, step, rank), is_down);
    if up.len() < copies {
        return Err(not_enough(map, copies, up.len()));
    }
    let mut racks_used: Vec<&str> = Vec::new();
    let mut chosen: Vec<NodeId> = Vec::with_capacity(copies);
    for n in &up {
        if chosen.len() < copies && !racks_used.contains(&n.rack) {
            racks_used.push(n.rack);
            chosen.push(n.id);
        }
    }
    for n in &up {
        if chosen.len() < copies && !chosen.contains(&n.id) {
            chosen.push(n.id);
        }
    }
    Ok(chosen)
}

fn checkpoint_key(domain: &[u8], job: &JobName, step: Step, rank: Rank) -> Vec<u8> {
    let mut k = Vec::with_capacity(domain.len() + job.as_str().len() + 1 + 8 + 4 + 64);
    k.extend_from_slice(domain);
    k.extend_from_slice(job.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&step.0.to_be_bytes());
    k.extend_from_slice(&rank.0.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::{BTreeSet, HashMap};
    use std::net::SocketAddr;

    use proptest::prelude::*;
    use rackpoint_proto::cluster::ClientTlsPaths;
    use rackpoint_proto::{NodeInfo, ObjectName, StripeIndex};
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    use super::*;

    /// A map with `nodes_per_rack[r]` nodes in rack `r`, ids 1.. in rack order.
    fn map(nodes_per_rack: &[usize]) -> ClusterMap {
        let mut nodes = Vec::new();
        for (r, &count) in nodes_per_rack.iter().enumerate() {
            for _ in 0..count {
                let id = nodes.len() as u32 + 1;
                let addr = SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16));
                nodes.push(NodeInfo {
                    id: NodeId(id),
                    addr,
                    rack: format!("rack-{r}"),
                    decommissioned: false,
                });
            }
        }
        ClusterMap {
            epoch: 0,
            code: CodeParams::new(4, 2, 1 << 20).expect("valid"),
            tls: ClientTlsPaths { ca: "ca.pem".into(), cert: "c.pem".into(), key: "c.key".into() },
            nodes,
        }
    }

    fn job() -> JobName {
        JobName::new("job").expect("valid")
    }

    fn object(i: u32) -> ObjectName {
        ObjectName::new(format!("layer.{i}.weight")).expect("valid")
    }

    fn rack_of(map: &ClusterMap, id: NodeId) -> &str {
        &map.node(id).expect("placed nodes are in the map").rack
    }

    fn max_per_rack(map: &ClusterMap, nodes: &[NodeId]) -> usize {
        let mut per: HashMap<&str, usize> = HashMap::new();
        for &n in nodes {
            *per.entry(rack_of(map, n)).or_default() += 1;
        }
        per.values().copied().max().unwrap_or(0)
    }

    /// The naive version, written plainly from the module doc: hash every node's whole
    /// key at once, sort, and pick greedily under the cap.
    mod naive {
        use super::*;

        pub fn order(map: &ClusterMap, key: &[u8], down: &BTreeSet<NodeId>) -> Vec<NodeInfo> {
            let mut nodes: Vec<NodeInfo> =
                map.nodes.iter().filter(|n| !down.contains(&n.id)).cloned().collect();
            let w = |n: &NodeInfo| {
                let mut input = key.to_vec();
                input.extend_from_slice(&n.id.0.to_be_bytes());
                let h = blake3::hash(&input);
                u64::from_be_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
            };
            nodes.sort_by_key(|n| (Reverse(w(n)), n.id));
            nodes
        }

        pub fn cap(up: &[NodeInfo], need: usize, m: usize) -> usize {
            let mut per_rack: HashMap<&str, usize> = HashMap::new();
            for n in up {
                *per_rack.entry(&n.rack).or_default() += 1;
            }
            let fits = |c: usize| per_rack.values().map(|&n| n.min(c)).sum::<usize>() >= need;
            if fits(m) {
                return m;
            }
            (1..=need).find(|&c| fits(c)).expect("need <= up nodes, so a cap of need fits")
        }

        pub fn place(
            map: &ClusterMap,
            key: &[u8],
            code: CodeParams,
            down: &BTreeSet<NodeId>,
        ) -> Option<Vec<NodeId>> {
            let up = order(map, key, down);
            let need = code.total();
            if up.len() < need {
                return None;
            }
            let cap = cap(&up, need, code.m.into());
            let mut chosen: Vec<NodeId> = Vec::new();
            for n in &up {
                let in_rack = chosen.iter().filter(|&&c| rack_of(map, c) == n.rack).count();
                if chosen.len() < need && in_rack < cap {
                    chosen.push(n.id);
                }
            }
            Some(chosen)
        }
    }

    fn cluster() -> impl Strategy<Value = ClusterMap> {
        proptest::collection::vec(1usize..6, 1..8).prop_map(|racks| map(&racks))
    }

    fn code() -> impl Strategy<Value = CodeParams> {
        (1u8..=8, 1u8..=4).prop_map(|(k, m)| CodeParams::new(k, m, 4096).expect("valid"))
    }

    fn down_set(map: &ClusterMap, mask: &[bool]) -> BTreeSet<NodeId> {
        map.nodes.iter().zip(mask.iter().cycle()).filter(|(_, &d)| d).map(|(n, _)| n.id).collect()
    }

    proptest! {
        #[test]
        fn placement_is_the_naive_rule_and_keeps_its_invariants(
            map in cluster(),
            code in code(),
            mask in proptest::collection::vec(proptest::bool::weighted(0.2), 1..16),
            step in any::<u64>(),
            rank in any::<u32>(),
            obj in 0u32..4,
            stripe in any::<u32>(),
        ) {
            let down = down_set(&map, &mask);
            let (job, object) = (job(), object(obj));
            let s = StripeId { job: job.clone(), step: Step(step), rank: Rank(rank), object: object.clone(), stripe: StripeIndex(stripe) };
            let got = place_stripe(&map, &s, code, &|n| down.contains(&n));
            let naive = naive::place(&map, &stripe_key(&s), code, &down);
            let up = map.nodes.len() - down.len();
            let Some(want) = naive else {
                prop_assert_eq!(got, Err(PlacementError::NotEnoughNodes { need: code.total(), up, total: map.nodes.len() }));
                return Ok(());
            };
            let got = got.expect("enough nodes are up");
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), code.total(), "distinct");
            prop_assert!(got.iter().all(|n| !down.contains(n)), "no down node");
            let up_nodes = naive::order(&map, &stripe_key(&s), &down);
            let racks_fit_m = {
                let mut per: HashMap<&str, usize> = HashMap::new();
                for n in &up_nodes { *per.entry(&n.rack).or_default() += 1; }
                per.values().map(|&n| n.min(code.m.into())).sum::<usize>() >= code.total()
            };
            if racks_fit_m {
                prop_assert!(max_per_rack(&map, &got) <= usize::from(code.m), "rack rule");
            } else {
                let cap = naive::cap(&up_nodes, code.total(), code.m.into());
                prop_assert_eq!(max_per_rack(&map, &got), cap, "widest spread");
            }
        }

        #[test]
        fn placement_ignores_the_order_of_the_map(
            map in cluster(),
            code in code(),
            seed in any::<u64>(),
            stripe in any::<u32>(),
        ) {
            let (job, object) = (job(), object(0));
            let s = StripeId { job: job.clone(), step: Step(9), rank: Rank(1), object: object.clone(), stripe: StripeIndex(stripe) };
            let mut shuffled = map.clone();
            shuffled.nodes.shuffle(&mut StdRng::seed_from_u64(seed));
            let a = place_stripe(&map, &s, code, &|_| false);
            prop_assert_eq!(&a, &place_stripe(&map, &s, code, &|_| false));
            prop_assert_eq!(a, place_stripe(&shuffled, &s, code, &|_| false));
        }

        #[test]
        fn replacement_is_the_next_node_that_keeps_the_rule(
            map in cluster(),
            code in code(),
            lost_mask in proptest::collection::vec(any::<bool>(), 1..8),
            stripe in any::<u32>(),
        ) {
            let (job, object) = (job(), object(1));
            let s = StripeId { job: job.clone(), step: Step(3), rank: Rank(0), object: object.clone(), stripe: StripeIndex(stripe) };
            let Ok(placed) = place_stripe(&map, &s, code, &|_| false) else { return Ok(()) };
            let down: BTreeSet<NodeId> = placed.iter().zip(lost_mask.iter().cycle())
                .filter(|(_, &l)| l).map(|(&n, _)| n).take(code.m.into()).collect();
            let got = replacement(&map, &s, code, &placed, &|n| down.contains(&n));
            let up = naive::order(&map, &stripe_key(&s), &down);
            if up.len() < code.total() {
                prop_assert_eq!(got, None);
                return Ok(());
            }
            let cap = naive::cap(&up, code.total(), code.m.into());
            let kept: Vec<NodeId> = placed.iter().copied().filter(|n| !down.contains(n)).collect();
            let want = up.iter().find(|n| {
                !placed.contains(&n.id)
                    && kept.iter().filter(|&&c| rack_of(&map, c) == n.rack).count() < cap
            }).map(|n| n.id);
            prop_assert_eq!(got, want);
            if let Some(r) = got {
                prop_assert!(!down.contains(&r) && !placed.contains(&r));
                let mut after = kept.clone();
                after.push(r);
                prop_assert!(max_per_rack(&map, &after) <= cap);
            }
        }

        #[test]
        fn manifest_replicas_span_racks_first(
            map in cluster(),
            copies in 1usize..8,
            mask in proptest::collection::vec(proptest::bool::weighted(0.2), 1..16),
            step in any::<u64>(),
        ) {
            let down = down_set(&map, &mask);
            let up = map.nodes.len() - down.len();
            let got = place_manifest(&map, &job(), Step(step), Rank(2), copies, &|n| down.contains(&n));
            if up < copies {
                prop_assert_eq!(got, Err(PlacementError::NotEnoughNodes { need: copies, up, total: map.nodes.len() }));
                return Ok(());
            }
            let got = got.expect("enough nodes are up");
            prop_assert_eq!(got.len(), copies);
            prop_assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), copies, "distinct");
            prop_assert!(got.iter().all(|n| !down.contains(n)));
            let racks_up: BTreeSet<&str> = map.nodes.iter().filter(|n| !down.contains(&n.id)).map(|n| n.rack.as_str()).collect();
            let racks_used: BTreeSet<&str> = got.iter().map(|&n| rack_of(&map, n)).collect();
            prop_assert_eq!(racks_used.len(), copies.min(racks_up.len()));
            prop_assert_eq!(Ok(got), place_manifest(&map, &job(), Step(step), Rank(2), copies, &|n| down.contains(&n)));
        }
    }

    /// Shards per node over 10,000 stripes of one object, each within 10% of even.
    fn assert_balanced(nodes_per_rack: &[usize], code: CodeParams) {
        let map = map(nodes_per_rack);
        let (job, object) = (job(), object(0));
        let mut load: HashMap<NodeId, usize> = HashMap::new();
        let stripes = 10_000u32;
        for stripe in 0..stripes {
            let s = StripeId {
                job: job.clone(),
                step: Step(100),
                rank: Rank(0),
                object: object.clone(),
                stripe: StripeIndex(stripe),
            };
            for n in place_stripe(&map, &s, code, &|_| false).expect("all nodes up") {
                *load.entry(n).or_default() += 1;
            }
        }
        let even = f64::from(stripes) * code.total() as f64 / map.nodes.len() as f64;
        assert_eq!(load.len(), map.nodes.len(), "every node gets shards");
        for (node, &count) in &load {
            let ratio = count as f64 / even;
            assert!(
                (0.9..=1.1).contains(&ratio),
                "node {node}: {count} shards, {ratio:.3} of even"
            );
        }
    }

    #[test]
    fn load_is_even_on_6_nodes_in_3_racks() {
        assert_balanced(&[2, 2, 2], CodeParams::new(4, 2, 1 << 20).expect("valid"));
    }

    #[test]
    fn load_is_even_on_12_nodes_in_4_racks() {
        assert_balanced(&[3, 3, 3, 3], CodeParams::new(4, 2, 1 << 20).expect("valid"));
        assert_balanced(&[3, 3, 3, 3], CodeParams::new(8, 3, 1 << 20).expect("valid"));
    }

    #[test]
    fn too_few_racks_spread_as_wide_as_possible() {
        let map = map(&[4, 4]);
        let (job, object) = (job(), object(0));
        let s = StripeId {
            job: job.clone(),
            step: Step(1),
            rank: Rank(0),
            object: object.clone(),
            stripe: StripeIndex(0),
        };
        let code = CodeParams::new(4, 2, 4096).expect("valid");
        let got = place_stripe(&map, &s, code, &|_| false).expect("8 nodes up");
        assert_eq!(max_per_rack(&map, &got), 3, "6 shards over 2 racks");
        let bad = CodeParams { k: 0, m: 2, shard_size_bytes: 4096 };
        assert!(matches!(place_stripe(&map, &s, bad, &|_| false), Err(PlacementError::BadCode(_))));
    }

    #[test]
    fn placement_is_pinned_across_platforms() {
        let map = map(&[2, 2, 2, 2]);
        let (job, object) = (job(), object(0));
        let s = StripeId {
            job: job.clone(),
            step: Step(42),
            rank: Rank(3),
            object: object.clone(),
            stripe: StripeIndex(7),
        };
        let code = CodeParams::new(4, 2, 4096).expect("valid");
        let got = place_stripe(&map, &s, code, &|_| false).expect("8 nodes up");
        assert_eq!(got, PINNED_PLACEMENT.map(NodeId).to_vec());
    }

    /// Computed once from the weight encoding; a change moves every stripe's placement.
    const PINNED_PLACEMENT: [u32; 6] = [3, 5, 7, 4, 2, 6];

    #[test]
    fn one_of_six_nodes_down_doubles_one_node_and_keeps_the_rack_rule() {
        let map = map(&[2, 2, 2]);
        let code = CodeParams::new(4, 2, 4096).expect("valid");
        let (job, object) = (job(), object(0));
        for stripe in 0..200 {
            let s = StripeId {
                job: job.clone(),
                step: Step(1),
                rank: Rank(0),
                object: object.clone(),
                stripe: StripeIndex(stripe),
            };
            let down = |n: NodeId| n == NodeId(4);
            assert!(
                place_stripe(&map, &s, code, &down).is_err(),
                "5 up nodes cannot hold 6 distinct shards"
            );
            let got =
                place_degraded(&map, &s, code, &[None; 6], &down).expect("degraded placement");
            assert!(!got.contains(&NodeId(4)));
            let mut per_node: HashMap<NodeId, usize> = HashMap::new();
            for n in &got {
                *per_node.entry(*n).or_default() += 1;
            }
            assert!(per_node.values().all(|&c| c <= 2), "at most m shards per node: {got:?}");
            assert_eq!(per_node.len(), 5, "every up node is used");
            assert!(max_per_rack(&map, &got) <= 2, "rack rule: {got:?}");
        }
    }

    proptest! {
        #[test]
        fn degraded_placement_pins_and_bounds(
            map in cluster(),
            code in code(),
            mask in proptest::collection::vec(proptest::bool::weighted(0.4), 1..16),
            pins in proptest::collection::vec(proptest::option::of(0usize..16), 32),
            stripe in any::<u32>(),
        ) {
            let down = down_set(&map, &mask);
            let (job, object) = (job(), object(0));
            let s = StripeId { job: job.clone(), step: Step(3), rank: Rank(1), object: object.clone(), stripe: StripeIndex(stripe) };
            let up: Vec<NodeId> = map.nodes.iter().map(|n| n.id).filter(|n| !down.contains(n)).collect();
            let m = usize::from(code.m);
            // Pin at most m shards per up node, as a real stripe would have them.
            let mut pinned: HashMap<NodeId, usize> = HashMap::new();
            let current: Vec<Option<NodeId>> = pins.iter().take(code.total()).map(|p| {
                let id = p.and_then(|i| up.get(i % up.len().max(1)).copied())?;
                let c = pinned.entry(id).or_default();
                (*c < m).then(|| { *c += 1; id })
            }).collect();
            let Ok(got) = place_degraded(&map, &s, code, &current, &|n| down.contains(&n)) else {
                return Ok(());
            };
            prop_assert_eq!(got.len(), code.total());
            for (slot, id) in current.iter().zip(&got) {
                if let Some(pin) = slot { prop_assert_eq!(pin, id, "pinned shards stay"); }
                prop_assert!(!down.contains(id), "no down node");
            }
            let mut per_node: HashMap<NodeId, usize> = HashMap::new();
            for n in &got { *per_node.entry(*n).or_default() += 1; }
            prop_assert!(per_node.values().all(|&c| c <= m), "at most m shards per node");
            prop_assert_eq!(place_degraded(&map, &s, code, &current, &|n| down.contains(&n)).ok(), Some(got), "deterministic");
        }
    }
}
