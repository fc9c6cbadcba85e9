//! The stripe-write machine driven by hand and by proptest, on a map of 6 nodes in 3 racks
//! (k = 4, m = 2) unless a test says otherwise.

use std::collections::HashMap;

use proptest::prelude::*;
use rackpoint_proto::{JobName, ObjectName, Rank, Step, StripeIndex};

use super::*;

use crate::test_map::map;

fn id(stripe: u32) -> StripeId {
    StripeId {
        job: JobName::new("job").expect("valid"),
        step: Step(7),
        rank: Rank(0),
        object: ObjectName::new("weights").expect("valid"),
        stripe: StripeIndex(stripe),
    }
}

fn hashes(n: usize) -> Vec<Digest> {
    (0..n).map(|i| Digest::of(&[i as u8])).collect()
}

fn none_down(_: NodeId) -> bool {
    false
}

fn write(map: &ClusterMap, stripe: u32, is_down: &dyn Fn(NodeId) -> bool) -> StripeWrite {
    StripeWrite::new(map, id(stripe), map.code, hashes(map.code.total()), is_down)
        .expect("placeable")
}

fn sent(action: Action) -> Vec<Put> {
    match action {
        Action::Send(puts) => puts,
        other => panic!("expected puts, got {other:?}"),
    }
}

#[test]
fn every_failure_but_other_moves_the_shard() {
    for kind in
        [PutFailure::NodeDown, PutFailure::ShuttingDown, PutFailure::DiskFull, PutFailure::Conflict]
    {
        assert!(kind.moves_shard(), "{kind:?}");
        assert_eq!(kind.result("why".into()), PutResult::Refused("why".into()));
    }
    assert!(!PutFailure::Other.moves_shard());
    assert_eq!(PutFailure::Other.result("why".into()), PutResult::Failed("why".into()));
}

#[test]
fn a_healthy_stripe_goes_to_its_placement_in_one_round() {
    let (map, t0) = (map(6, 3), Instant::now());
    let mut w = write(&map, 0, &none_down);
    let placed = placement::place_stripe(&map, &id(0), map.code, &none_down).expect("6 up");
    let puts = sent(w.poll(&map, t0, &none_down));
    assert_eq!(puts.iter().map(|p| p.node).collect::<Vec<_>>(), placed);
    assert!(puts.iter().enumerate().all(|(i, p)| p.index == ShardIndex(i as u8)));
    assert_eq!(w.poll(&map, t0, &none_down), Action::Wait);
    assert_eq!(w.entry(), None, "not before every shard is stored");
    for p in &puts {
        w.on_result(p.index, PutResult::Stored);
    }
    assert_eq!(w.poll(&map, t0, &none_down), Action::Done);
    let entry = w.entry().expect("done");
    assert_eq!(entry.shards.iter().map(|s| s.node).collect::<Vec<_>>(), placed);
    assert_eq!(entry.shards.iter().map(|s| s.hash).collect::<Vec<_>>(), hashes(6));
    assert_eq!(w.moved(), 0);
}

#[test]
fn a_refused_shard_moves_at_once_and_never_back() {
    let (map, t0) = (map(8, 4), Instant::now());
    let mut w = write(&map, 3, &none_down);
    let puts = sent(w.poll(&map, t0, &none_down));
    let refuser = puts[2].node;
    for p in &puts {
        let r = if p.index == ShardIndex(2) {
            PutResult::Refused("disk full".into())
        } else {
            PutResult::Stored
        };
        w.on_result(p.index, r);
    }
    let moved = sent(w.poll(&map, t0, &none_down));
    assert_eq!(moved.len(), 1, "no backoff for a move, only the refused shard");
    assert_eq!((moved[0].index, moved[0].moved_from), (ShardIndex(2), Some(refuser)));
    assert!(!puts.iter().any(|p| p.node == moved[0].node), "a node outside the stripe");
    w.on_result(ShardIndex(2), PutResult::Refused("disk full".into()));
    let again = sent(w.poll(&map, t0, &none_down));
    assert!(
        again[0].node != refuser && again[0].node != moved[0].node,
        "refusers are never retaken"
    );
    w.on_result(ShardIndex(2), PutResult::Stored);
    assert_eq!(w.poll(&map, t0, &none_down), Action::Done);
    assert_eq!(w.moved(), 1);
}

#[test]
fn other_failures_retry_on_the_same_node_after_a_doubling_backoff() {
    let (map, mut now) = (map(6, 3), Instant::now());
    let mut w = write(&map, 1, &none_down);
    let mut puts = sent(w.poll(&map, now, &none_down));
    let busy_node = puts[4].node;
    for round in 1..CLIENT_MAX_ATTEMPTS {
        for p in &puts {
            let busy = p.index == ShardIndex(4);
            w.on_result(
                p.index,
                if busy { PutResult::Failed("busy".into()) } else { PutResult::Stored },
            );
        }
        let wake = now + backoff(round);
        assert_eq!(w.poll(&map, now, &none_down), Action::Sleep(wake));
        assert_eq!(w.poll(&map, wake - Duration::from_millis(1), &none_down), Action::Sleep(wake));
        now = wake;
        puts = sent(w.poll(&map, now, &none_down));
        assert_eq!(puts, vec![Put { index: ShardIndex(4), node: busy_node, moved_from: None }]);
    }
    w.on_result(ShardIndex(4), PutResult::Failed("busy".into()));
    let failure =
        WriteFailure { index: ShardIndex(4), attempts: CLIENT_MAX_ATTEMPTS, last: "busy".into() };
    assert_eq!(w.poll(&map, now, &none_down), Action::Failed(failure.clone()));
    assert_eq!(w.poll(&map, now, &none_down), Action::Failed(failure), "and stays failed");
    assert_eq!(backoff(1), Duration::from_millis(CLIENT_RETRY_BASE_MS * 2));
}

#[test]
fn with_a_node_down_of_six_shards_double_up_at_most_m_a_node() {
    let (map, t0) = (map(6, 3), Instant::now());
    let down = |n: NodeId| n == NodeId(4);
    for stripe in 0..50 {
        let mut w = write(&map, stripe, &down);
        let puts = sent(w.poll(&map, t0, &down));
        let mut per_node: HashMap<NodeId, usize> = HashMap::new();
        for p in &puts {
            *per_node.entry(p.node).or_default() += 1;
        }
        assert!(!per_node.contains_key(&NodeId(4)));
        assert!(per_node.values().all(|&c| c <= 2), "at most m a node: {puts:?}");
    }
}

#[test]
fn a_refused_shard_with_nowhere_to_go_fails_the_stripe() {
    let (map, t0) = (map(3, 3), Instant::now());
    let mut w = write(&map, 0, &none_down);
    let puts = sent(w.poll(&map, t0, &none_down));
    for p in &puts {
        w.on_result(p.index, PutResult::Refused(format!("node {} is full", p.node)));
    }
    match w.poll(&map, t0, &none_down) {
        Action::Failed(f) => {
            assert_eq!((f.index, f.attempts), (ShardIndex(0), 1));
            assert!(f.last.ends_with("no other node can take it"), "{}", f.last);
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn too_few_nodes_for_even_a_degraded_placement_is_a_placement_error() {
    let map = map(6, 3);
    let down = |n: NodeId| n.0 <= 4;
    let err = StripeWrite::new(&map, id(0), map.code, hashes(6), &down).expect_err("2 nodes up");
    assert!(matches!(err, PlacementError::NotEnoughNodes { up: 2, .. }), "{err:?}");
}

proptest! {
    /// Whatever the nodes answer: a shard is never sent to a node that refused it for this
    /// stripe, never to a node down at the time, no node holds more than m shards, every
    /// put reported is answered once, and the write ends Done (every shard stored, the
    /// entry matching) or Failed within `CLIENT_MAX_ATTEMPTS` rounds.
    #[test]
    fn the_write_keeps_its_rules(
        nodes in 4u32..12,
        racks in 1u32..5,
        stripe in any::<u32>(),
        down_mask in any::<u16>(),
        answers in proptest::collection::vec(0u8..6, 0..200),
    ) {
        let map = map(nodes, racks);
        let is_down = |n: NodeId| down_mask & (1 << (n.0 % 16)) != 0;
        let Ok(mut w) = StripeWrite::new(&map, id(stripe), map.code, hashes(6), &is_down) else {
            return Ok(());
        };
        let mut now = Instant::now();
        let mut refused: Vec<(ShardIndex, NodeId)> = Vec::new();
        let mut answers = answers.into_iter();
        for _ in 0..1000 {
            match w.poll(&map, now, &is_down) {
                Action::Send(puts) => {
                    for p in &puts {
                        prop_assert!(!refused.contains(&(p.index, p.node)), "retook a refuser");
                        if p.moved_from.is_some() {
                            prop_assert!(refused.iter().all(|(_, n)| *n != p.node), "a move never goes to a refuser");
                            prop_assert!(!is_down(p.node), "nor to a down node");
                        }
                    }
                    let mut per_node: HashMap<NodeId, usize> = HashMap::new();
                    for n in w.nodes() {
                        *per_node.entry(*n).or_default() += 1;
                    }
                    prop_assert!(per_node.values().all(|&c| c <= 2), "{:?}", w.nodes());
                    for p in puts {
                        let r = match answers.next().unwrap_or(0) {
                            0..=3 => PutResult::Stored,
                            4 => { refused.push((p.index, p.node)); PutResult::Refused("full".into()) }
                            _ => PutResult::Failed("busy".into()),
                        };
                        w.on_result(p.index, r);
                    }
                }
                Action::Sleep(at) => { prop_assert!(at > now); now = at; }
                Action::Wait => prop_assert!(false, "every put was answered"),
                Action::Done => {
                    let entry = w.entry().expect("done means stored");
                    prop_assert_eq!(entry.shards.len(), 6);
                    prop_assert_eq!(entry.shards.iter().map(|s| s.node).collect::<Vec<_>>(), w.nodes().to_vec());
                    return Ok(());
                }
                Action::Failed(f) => {
                    prop_assert!(f.attempts <= CLIENT_MAX_ATTEMPTS);
                    prop_assert!(w.entry().is_none());
                    return Ok(());
                }
            }
        }
        prop_assert!(false, "the write did not end");
    }
}
