//! Fast mode's save driver: encodes every stripe with the real codec, places it with the real
//! placement (`place_stripe`, `replacement` after a failure or refusal, `place_degraded`
//! when too few nodes are up), puts the shards to simulated nodes, and commits the manifest
//! on `m + 1` nodes chosen by `place_manifest`. Stripes are in flight all at once.

use std::collections::BTreeSet;

use rackpoint_client::codec::{Codec, ObjectLayout};
use rackpoint_client::placement::{self, StripeRef};
use rackpoint_proto::{Digest, NodeId, Rank, Step, StripeIndex};

use super::world::{Answer, Micros, NodeState};
use super::{Ev, Sim};

/// Bytes of a simulated manifest copy.
const MANIFEST_BYTES: usize = 4096;

/// One stripe as saved.
#[derive(Debug, Clone)]
pub struct SavedStripe {
    /// Index of its object.
    pub object: usize,
    /// Its index in the object.
    pub stripe: StripeIndex,
    /// Its object's layout.
    pub layout: ObjectLayout,
    /// Node per shard (where each really went).
    pub nodes: Vec<NodeId>,
    /// Hash per shard.
    pub hashes: Vec<Digest>,
    /// The shard bytes.
    pub shards: Vec<Vec<u8>>,
    acked: Vec<bool>,
    refused: BTreeSet<NodeId>,
    attempts: Vec<u32>,
}

/// A saved (or half-saved) checkpoint.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Its step.
    pub step: u64,
    /// Every stripe of every object, in order.
    pub stripes: Vec<SavedStripe>,
    /// Nodes holding its manifest.
    pub manifest_nodes: Vec<NodeId>,
    /// Whether the manifest reached `m + 1` nodes.
    pub committed: bool,
    /// When the save ended (committed, failed or killed).
    pub ended_at: Micros,
    /// Shards that moved off their first node.
    pub moved_shards: u64,
}

/// Why a simulated save did not commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveFailure {
    /// No nodes could be placed.
    Placement(String),
    /// A shard found no node that took it.
    ShardWriteFailed {
        /// Stripe number in the checkpoint.
        stripe: usize,
        /// The shard.
        index: u8,
    },
    /// The manifest reached fewer than `m + 1` nodes.
    CommitFailed {
        /// Copies stored.
        stored: usize,
        /// Copies needed.
        need: usize,
    },
    /// The client was killed first.
    ClientKilled,
}

impl std::fmt::Display for SaveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaveFailure::Placement(e) => write!(f, "placement: {e}"),
            SaveFailure::ShardWriteFailed { stripe, index } => {
                write!(f, "stripe {stripe} shard {index}: no node took it")
            }
            SaveFailure::CommitFailed { stored, need } => {
                write!(f, "manifest stored on {stored} of {need} nodes")
            }
            SaveFailure::ClientKilled => f.write_str("client killed mid-save"),
        }
    }
}

impl Sim<'_> {
    fn stripe_ref<'a>(&'a self, step: u64, s: &SavedStripe) -> StripeRef<'a> {
        StripeRef {
            job: &self.job,
            step: Step(step),
            rank: Rank(0),
            object: &self.object_names[s.object],
            stripe: s.stripe,
        }
    }

    /// Saves `objects` as `step`, starting now; returns what was stored and whether it
    /// committed. A `KillClient` event ends it where it stands.
    pub fn save(&mut self, step: u64, objects: &[Vec<u8>]) -> (Saved, Option<SaveFailure>) {
        let code = self.code;
        let codec = Codec::new(code).expect("the scenario's code was validated");
        let mut stripes = Vec::new();
        for (o, bytes) in objects.iter().enumerate() {
            let layout = ObjectLayout::new(code, bytes.len() as u64);
            for s in 0..layout.stripe_count() {
                let r = layout.stripe_range(StripeIndex(s));
                let enc = codec
                    .encode_stripe(&bytes[r.start as usize..r.end as usize])
                    .expect("a stripe range is 1..=k*S bytes");
                let n = enc.shards.len();
                stripes.push(SavedStripe {
                    object: o,
                    stripe: StripeIndex(s),
                    layout,
                    nodes: Vec::new(),
                    hashes: enc.hashes,
                    shards: enc.shards,
                    acked: vec![false; n],
                    refused: BTreeSet::new(),
                    attempts: vec![0; n],
                });
            }
        }
        let mut saved = Saved {
            step,
            stripes,
            manifest_nodes: Vec::new(),
            committed: false,
            ended_at: self.now,
            moved_shards: 0,
        };
        let failure = self.drive_save(&mut saved);
        saved.ended_at = self.now;
        (saved, failure)
    }

    fn initial_nodes(
        &mut self,
        step: u64,
        stripe: usize,
        s: &SavedStripe,
    ) -> Result<Vec<NodeId>, SaveFailure> {
        // Placement is a pure function of the map, the stripe and the down set: with nothing
        // known down it is the same in every trial of a cell, so it is computed once.
        let healthy = self.world.health.down.is_empty();
        if healthy {
            if let Some(nodes) = self.placements.get(&(step, stripe)) {
                return Ok(nodes.clone());
            }
        }
        let down = |n: NodeId| self.world.health.down.contains_key(&n);
        let r = self.stripe_ref(step, s);
        let nodes = placement::place_stripe(&self.map, &r, self.code, &down)
            .or_else(|_| {
                placement::place_degraded(
                    &self.map,
                    &r,
                    self.code,
                    &vec![None; self.code.total()],
                    &down,
                )
            })
            .map_err(|e| SaveFailure::Placement(e.to_string()))?;
        if healthy {
            self.placements.insert((step, stripe), nodes.clone());
        }
        Ok(nodes)
    }

    fn drive_save(&mut self, saved: &mut Saved) -> Option<SaveFailure> {
        let step = saved.step;
        for i in 0..saved.stripes.len() {
            let nodes = match self.initial_nodes(step, i, &saved.stripes[i]) {
                Ok(n) => n,
                Err(e) => return Some(e),
            };
            saved.stripes[i].nodes = nodes;
            for idx in 0..saved.stripes[i].nodes.len() {
                self.send_put(saved, i, idx as u8);
            }
        }
        let mut pending: usize = saved.stripes.iter().map(|s| s.acked.len()).sum();
        while pending > 0 {
            let Some(ev) = self.next_event() else {
                return Some(SaveFailure::ShardWriteFailed { stripe: 0, index: 0 });
            };
            match ev {
                Ev::KillClient => return Some(SaveFailure::ClientKilled),
                Ev::Put { stripe, index, node, epoch, sent } => {
                    match self.put_answer(saved, stripe, index, node, epoch, sent) {
                        Some(Answer::Ok) => pending -= 1,
                        Some(_) => {
                            if let Err(e) = self.move_shard(saved, stripe, index) {
                                return Some(e);
                            }
                        }
                        None => {}
                    }
                }
                other => self.handle_other(other),
            }
        }
        self.commit(saved)
    }

    fn send_put(&mut self, saved: &mut Saved, stripe: usize, index: u8) {
        let s = &mut saved.stripes[stripe];
        let node = s.nodes[usize::from(index)];
        s.attempts[usize::from(index)] += 1;
        let len = s.shards[usize::from(index)].len();
        let (at, epoch) = self.world.send(node, self.now, len, true);
        let sent = self.now;
        self.queue.push(at, Ev::Put { stripe, index, node, epoch, sent });
    }

    /// Handles a put's arrival; `None` while its failure is still on its way.
    fn put_answer(
        &mut self,
        saved: &mut Saved,
        stripe: usize,
        index: u8,
        node: NodeId,
        epoch: u64,
        sent: Micros,
    ) -> Option<Answer> {
        if !self.world.arrive(node, epoch) {
            let fail_at = self.world.failure_time(node, sent, self.now);
            if fail_at > self.now {
                self.queue.push(fail_at, Ev::Put { stripe, index, node, epoch: u64::MAX, sent });
                return None;
            }
            self.world.health.end(node, self.now, false);
            return Some(Answer::NodeFailed);
        }
        self.world.health.end(node, self.now, true);
        let step = saved.step;
        let s = &mut saved.stripes[stripe];
        let len = s.shards[usize::from(index)].len() as u64;
        let n = self.world.nodes.get_mut(&node).expect("placed nodes exist");
        if n.free_bytes.is_some_and(|free| free < len) {
            s.refused.insert(node);
            return Some(Answer::Refused);
        }
        if let Some(free) = n.free_bytes.as_mut() {
            *free -= len;
        }
        n.shards.insert((step, stripe, index));
        s.acked[usize::from(index)] = true;
        Some(Answer::Ok)
    }

    /// Moves a shard whose node failed or refused to the next node in placement order.
    fn move_shard(
        &mut self,
        saved: &mut Saved,
        stripe: usize,
        index: u8,
    ) -> Result<(), SaveFailure> {
        let step = saved.step;
        let s = &saved.stripes[stripe];
        if s.attempts[usize::from(index)] as usize > self.map.nodes.len() {
            return Err(SaveFailure::ShardWriteFailed { stripe, index });
        }
        let refused = s.refused.clone();
        let health = &self.world.health;
        let down = |n: NodeId| health.down.contains_key(&n) || refused.contains(&n);
        let r = self.stripe_ref(step, s);
        let next =
            placement::replacement(&self.map, &r, self.code, &s.nodes, &down).or_else(|| {
                let current: Vec<Option<NodeId>> = s
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (i != usize::from(index) && !down(*n)).then_some(*n))
                    .collect();
                placement::place_degraded(&self.map, &r, self.code, &current, &down)
                    .ok()
                    .map(|nodes| nodes[usize::from(index)])
            });
        let Some(next) = next else { return Err(SaveFailure::ShardWriteFailed { stripe, index }) };
        saved.stripes[stripe].nodes[usize::from(index)] = next;
        saved.moved_shards += 1;
        self.send_put(saved, stripe, index);
        Ok(())
    }

    /// Stores the manifest on `m + 1` nodes (replacing failed ones in the replica order).
    fn commit(&mut self, saved: &mut Saved) -> Option<SaveFailure> {
        let need = usize::from(self.code.m) + 1;
        let down = |n: NodeId| self.world.health.down.contains_key(&n);
        let order = placement::place_manifest(
            &self.map,
            &self.job,
            Step(saved.step),
            Rank(0),
            self.map.nodes.len() - self.world.health.down.len(),
            &down,
        )
        .unwrap_or_default();
        let mut candidates = order.into_iter();
        let mut stored = Vec::new();
        let mut in_flight = 0;
        for node in candidates.by_ref().take(need) {
            self.send_manifest(node);
            in_flight += 1;
        }
        while stored.len() < need {
            if in_flight == 0 {
                match candidates.next() {
                    Some(node) => {
                        self.send_manifest(node);
                        in_flight += 1;
                        continue;
                    }
                    None => return Some(SaveFailure::CommitFailed { stored: stored.len(), need }),
                }
            }
            let Some(ev) = self.next_event() else {
                return Some(SaveFailure::CommitFailed { stored: stored.len(), need });
            };
            match ev {
                Ev::KillClient => return Some(SaveFailure::ClientKilled),
                Ev::Manifest { node, epoch, sent } => {
                    if !self.world.arrive(node, epoch) {
                        let fail_at = self.world.failure_time(node, sent, self.now);
                        if fail_at > self.now {
                            self.queue.push(fail_at, Ev::Manifest { node, epoch: u64::MAX, sent });
                            continue;
                        }
                        self.world.health.end(node, self.now, false);
                        in_flight -= 1;
                        if let Some(next) = candidates.next() {
                            self.send_manifest(next);
                            in_flight += 1;
                        }
                        continue;
                    }
                    self.world.health.end(node, self.now, true);
                    in_flight -= 1;
                    stored.push(node);
                }
                other => self.handle_other(other),
            }
        }
        saved.manifest_nodes = stored;
        saved.committed = true;
        None
    }

    fn send_manifest(&mut self, node: NodeId) {
        let (at, epoch) = self.world.send(node, self.now, MANIFEST_BYTES, true);
        let sent = self.now;
        self.queue.push(at, Ev::Manifest { node, epoch, sent });
    }

    /// Whether `node` is up in the world (for the oracle).
    pub fn node_up(&self, node: NodeId) -> bool {
        self.world.nodes.get(&node).is_some_and(|n| n.state == NodeState::Up)
    }
}
