//! Fast mode's save driver: encodes every stripe with the real codec and lets the client's
//! own stripe-write machine (`StripeWrite`: placement, degraded doubling-up, moves after a
//! refusal, retries with backoff) decide every put against simulated nodes, a failed put
//! sorted by the client's rule (`PutFailure`); then commits the manifest as the client's
//! `ManifestCommit` decides (`m + 1` copies, bounded rounds, rollback when short). Stripes are
//! in flight all at once; every answered put feeds the hedging estimate, as in the client.

use std::time::Duration;

use rackpoint_client::codec::{Codec, ObjectLayout};
use rackpoint_client::hedge::RequestKind;
use rackpoint_client::manifest::Manifest;
use rackpoint_client::manifest_commit::{CommitAction, ManifestCommit};
use rackpoint_client::stripe_write::{Action, PutFailure, PutResult, StripeWrite};
use rackpoint_proto::{CodeParams, Digest, NodeId, Rank, Step, StripeId, StripeIndex};

use super::manifest::{empty_manifest, manifest_of};
use super::world::{instant, micros_of, Micros, NodeState};
use super::{Ev, Sim};

/// Bytes of a simulated manifest copy.
pub const MANIFEST_LEN: u32 = 4096;

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
    /// Whether the manifest commit reached its copies (`m + 1`, capped at the nodes).
    pub committed: bool,
    /// Its part's manifest, as the client's save builds it (see `fast::manifest`): where
    /// every shard is, with its hash. Its shard nodes are placeholders until the stripes are
    /// placed (`Saved::seal_manifest`).
    pub manifest: Manifest,
    /// The manifest's id, blake3 of its bytes: what nodes list for it (sealed once the
    /// stripes are placed).
    pub manifest_id: Digest,
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
    /// The manifest commit gave up short of its copies (and rolled back).
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

/// The stripes of `objects`, encoded with the real codec as a save encodes them, not placed
/// yet (`nodes` empty).
pub fn saved_stripes_of(code: CodeParams, objects: &[Vec<u8>]) -> Vec<SavedStripe> {
    let codec = Codec::new(code).expect("the scenario's code was validated");
    let mut stripes = Vec::new();
    for (o, bytes) in objects.iter().enumerate() {
        let layout = ObjectLayout::new(code, bytes.len() as u64);
        for s in 0..layout.stripe_count() {
            let r = layout.stripe_range(StripeIndex(s));
            let enc = codec
                .encode_stripe(&bytes[r.start as usize..r.end as usize])
                .expect("a stripe range is 1..=k*S bytes");
            stripes.push(SavedStripe {
                object: o,
                stripe: StripeIndex(s),
                layout,
                nodes: Vec::new(),
                hashes: enc.hashes,
                shards: enc.shards,
            });
        }
    }
    stripes
}

impl Sim<'_> {
    fn stripe_id(&self, step: u64, s: &SavedStripe) -> StripeId {
        StripeId {
            job: self.job.clone(),
            step: Step(step),
            rank: Rank(0),
            object: self.object_names[s.object].clone(),
            stripe: s.stripe,
        }
    }

    /// Saves `objects` as `step`, starting now; returns what was stored and why it did not
    /// commit, if it did not. A `KillClient` event ends it where it stands.
    pub fn save(&mut self, step: u64, objects: &[Vec<u8>]) -> (Saved, Option<SaveFailure>) {
        let code = self.code;
        let stripes = saved_stripes_of(code, objects);
        let part = (&self.job, step);
        let manifest = manifest_of(part, code, &self.object_names, objects, &stripes);
        let mut saved = Saved {
            step,
            stripes,
            manifest_nodes: Vec::new(),
            committed: false,
            manifest: manifest.clone().unwrap_or_else(|_| empty_manifest(part, code)),
            manifest_id: Digest::default(),
            ended_at: self.now,
            moved_shards: 0,
        };
        if let Err(e) = manifest {
            // Refused before anything is stored, as the client's save refuses such a part.
            return (saved, Some(SaveFailure::Placement(format!("the part's manifest: {e}"))));
        }
        let failure = self.drive_save(&mut saved);
        saved.ended_at = self.now;
        (saved, failure)
    }

    /// The stripe-write machine of a stripe; with nothing known down, a clone of the cell's
    /// cached one (its placement is the same in every trial).
    fn stripe_write(
        &mut self,
        step: u64,
        stripe: usize,
        s: &SavedStripe,
    ) -> Result<StripeWrite, SaveFailure> {
        let healthy = self.world.health.all_up();
        if healthy {
            if let Some(w) = self.placements.get(&(step, stripe)) {
                return Ok(w.clone());
            }
        }
        let health = &self.world.health;
        let down = |n: NodeId| health.is_down(n);
        let w = StripeWrite::new(
            &self.map,
            self.stripe_id(step, s),
            self.code,
            s.hashes.clone(),
            &down,
        )
        .map_err(|e| SaveFailure::Placement(e.to_string()))?;
        if healthy {
            self.placements.insert((step, stripe), w.clone());
        }
        Ok(w)
    }

    fn drive_save(&mut self, saved: &mut Saved) -> Option<SaveFailure> {
        let step = saved.step;
        let mut writes = Vec::with_capacity(saved.stripes.len());
        for i in 0..saved.stripes.len() {
            match self.stripe_write(step, i, &saved.stripes[i]) {
                Ok(w) => writes.push(w),
                Err(e) => return Some(e),
            }
        }
        let mut left = writes.len();
        let mut done = vec![false; writes.len()];
        for i in 0..writes.len() {
            if let Err(e) = self.poll_write(saved, &mut writes[i], i, &mut done[i], &mut left) {
                return Some(e);
            }
        }
        while left > 0 {
            let Some(ev) = self.next_event() else {
                return Some(SaveFailure::Placement("the save stalled: no event left".into()));
            };
            let i = match ev {
                Ev::KillClient => return Some(SaveFailure::ClientKilled),
                Ev::Put { stripe, index, node, epoch, sent } => {
                    match self.put_answer(saved, stripe, index, node, epoch, sent) {
                        Some(result) => {
                            writes[stripe].on_result(rackpoint_proto::ShardIndex(index), result)
                        }
                        None => continue,
                    }
                    stripe
                }
                Ev::Wake { stripe } => stripe,
                other => {
                    self.handle_other(other);
                    continue;
                }
            };
            if done[i] {
                continue;
            }
            if let Err(e) = self.poll_write(saved, &mut writes[i], i, &mut done[i], &mut left) {
                return Some(e);
            }
        }
        for (s, w) in saved.stripes.iter_mut().zip(&writes) {
            s.nodes = w.nodes().to_vec();
            saved.moved_shards += w.moved();
        }
        saved.seal_manifest();
        self.drive_commit(saved)
    }

    /// Does what the stripe's machine says now.
    fn poll_write(
        &mut self,
        saved: &Saved,
        write: &mut StripeWrite,
        stripe: usize,
        done: &mut bool,
        left: &mut usize,
    ) -> Result<(), SaveFailure> {
        let health = &self.world.health;
        let down = |n: NodeId| health.is_down(n);
        match write.poll(&self.map, instant(self.now), &down) {
            Action::Send(puts) => {
                for put in puts {
                    let len = saved.stripes[stripe].shards[usize::from(put.index.0)].len();
                    let (at, epoch) = self.world.send(put.node, self.now, len, true);
                    let sent = self.now;
                    self.queue.push(
                        at,
                        Ev::Put { stripe, index: put.index.0, node: put.node, epoch, sent },
                    );
                }
            }
            Action::Wait => {}
            Action::Sleep(at) => {
                let at = micros_of(at).max(self.now + 1);
                self.queue.push(at, Ev::Wake { stripe });
            }
            Action::Done => {
                *done = true;
                *left -= 1;
            }
            Action::Failed(f) => {
                return Err(SaveFailure::ShardWriteFailed { stripe, index: f.index.0 });
            }
        }
        Ok(())
    }

    /// A put's outcome as the machine takes it; `None` while its failure is still on its way.
    fn put_answer(
        &mut self,
        saved: &Saved,
        stripe: usize,
        index: u8,
        node: NodeId,
        epoch: u64,
        sent: Micros,
    ) -> Option<PutResult> {
        if !self.world.arrive(node, epoch) {
            let fail_at = self.world.failure_time(node, sent, self.now);
            if fail_at > self.now {
                self.queue.push(fail_at, Ev::Put { stripe, index, node, epoch: u64::MAX, sent });
                return None;
            }
            self.world.health.end(node, self.now, false);
            return Some(PutFailure::NodeDown.result(format!("node {node} did not answer")));
        }
        self.world.health.end(node, self.now, true);
        self.hedge.observe(RequestKind::ShardPut, Duration::from_micros(self.now - sent));
        let len = saved.stripes[stripe].shards[usize::from(index)].len() as u64;
        let n = self.world.nodes.get_mut(&node).expect("placed nodes exist");
        if n.free_bytes.is_some_and(|free| free < len) {
            return Some(PutFailure::DiskFull.result(format!("node {node}: disk full")));
        }
        if let Some(free) = n.free_bytes.as_mut() {
            *free -= len;
        }
        n.shards.insert((saved.step, stripe, index));
        Some(PutResult::Stored)
    }

    /// Commits the manifest as the client's `ManifestCommit` decides: each round's copies
    /// sent at once, the next round once all are answered. A `KillClient` event ends it where
    /// it stands: the copies already stored stay (and are listed), as no rollback runs.
    fn drive_commit(&mut self, saved: &mut Saved) -> Option<SaveFailure> {
        let mut commit =
            ManifestCommit::new(&self.map, self.job.clone(), Step(saved.step), Rank(0));
        loop {
            let health = &self.world.health;
            match commit.poll(&self.map, &|n| health.is_down(n)) {
                CommitAction::Send(targets) => {
                    for node in targets {
                        self.send_manifest(node);
                    }
                }
                CommitAction::Wait => {}
                CommitAction::Committed(nodes) => {
                    saved.manifest_nodes = nodes;
                    saved.committed = true;
                    return None;
                }
                CommitAction::RollBack(stored) => {
                    self.rollback(saved.step, &stored);
                    return Some(SaveFailure::CommitFailed {
                        stored: stored.len(),
                        need: commit.need(),
                    });
                }
            }
            let Some(ev) = self.next_event() else {
                let stored = commit.stored().to_vec();
                self.rollback(saved.step, &stored);
                return Some(SaveFailure::CommitFailed {
                    stored: stored.len(),
                    need: commit.need(),
                });
            };
            match ev {
                Ev::KillClient => {
                    saved.manifest_nodes = commit.stored().to_vec();
                    return Some(SaveFailure::ClientKilled);
                }
                Ev::Manifest { node, epoch, sent } => {
                    if !self.world.arrive(node, epoch) {
                        let fail_at = self.world.failure_time(node, sent, self.now);
                        if fail_at > self.now {
                            self.queue.push(fail_at, Ev::Manifest { node, epoch: u64::MAX, sent });
                            continue;
                        }
                        self.world.health.end(node, self.now, false);
                        commit.on_result(node, false);
                        continue;
                    }
                    self.world.health.end(node, self.now, true);
                    let before = commit.stored().len();
                    commit.on_result(node, true);
                    if commit.stored().len() > before {
                        if let Some(n) = self.world.nodes.get_mut(&node) {
                            n.manifests.insert(saved.step, saved.manifest_id);
                        }
                    }
                }
                other => self.handle_other(other),
            }
        }
    }

    /// A commit that gave up deletes the copies it stored (the client's `rollback`), so no
    /// part is visible.
    fn rollback(&mut self, step: u64, stored: &[NodeId]) {
        for node in stored {
            if let Some(n) = self.world.nodes.get_mut(node) {
                n.manifests.remove(&step);
            }
        }
    }

    fn send_manifest(&mut self, node: NodeId) {
        let (at, epoch) = self.world.send(node, self.now, MANIFEST_LEN as usize, true);
        let sent = self.now;
        self.queue.push(at, Ev::Manifest { node, epoch, sent });
    }

    /// Whether `node` is up in the world (for the oracle).
    pub fn node_up(&self, node: NodeId) -> bool {
        self.world.nodes.get(&node).is_some_and(|n| n.state == NodeState::Up)
    }
}
