//! The stripe-write machine, pure: every decision of storing one stripe's `k + m` shards,
//! in the style of the restore planner (events in, decisions out, time a parameter).
//!
//! - **Placement order.** The shards go to the stripe's placement (`place_stripe`); when
//!   fewer than `k + m` nodes are up, to its degraded placement (`place_degraded`: nodes
//!   double up, at most `m` shards each), so a save goes on with a node down.
//! - **Rounds.** Every shard still to store is sent at once; when all of a round's results
//!   are in, the round is judged. A shard whose node *refused* it (node-level failure, disk
//!   full, shutting down, other bytes already stored under its key) moves to a replacement:
//!   the next node in placement order outside the stripe, else a stripe node that can take
//!   one more shard. A node that refused a shard of this stripe is never chosen again for
//!   it, so a shard cannot bounce between two full nodes. A shard that *failed* otherwise is
//!   retried on the same node after a backoff of `CLIENT_RETRY_BASE_MS << round`.
//! - **Bounds.** After `CLIENT_MAX_ATTEMPTS` rounds with a failure, or when a refused shard
//!   has nowhere to go, the stripe fails with the shard, the rounds and the last reason.
//! - **Done.** When every shard is stored, [`StripeWrite::entry`] is the manifest's record
//!   of where each shard went.
//!
//! Drive it with [`StripeWrite::poll`] (what to do now) and [`StripeWrite::on_result`] (a
//! put's outcome). The client's save pipeline and the simulator's fast mode are both drivers.

use std::time::{Duration, Instant};

use rackpoint_proto::limits::{CLIENT_MAX_ATTEMPTS, CLIENT_RETRY_BASE_MS};
use rackpoint_proto::{ClusterMap, CodeParams, Digest, NodeId, ShardIndex, StripeId};

use crate::manifest::{ShardEntry, StripeEntry};
use crate::placement::{self, PlacementError};

/// The outcome of one put, as the machine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutResult {
    /// The node says the shard is durable.
    Stored,
    /// The node cannot take the shard (unreachable, disk full, shutting down, other bytes
    /// under its key): move it.
    Refused(String),
    /// The put failed otherwise: retry it on the same node after a backoff.
    Failed(String),
}

/// Why a put did not store its shard, as far as the save's decision goes. Drivers map their
/// own errors to it; [`PutFailure::result`] is the one rule of which failures move a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutFailure {
    /// A node-level failure: no connection, no answer in time, the connection lost.
    NodeDown,
    /// The node says it is shutting down.
    ShuttingDown,
    /// The node's disk is full.
    DiskFull,
    /// The node holds other bytes under the shard's key (say, orphans of a crashed earlier
    /// attempt of this uncommitted step) and never replaces them.
    Conflict,
    /// Anything else (an internal error, a hash mismatch in transit, a broken reply), which
    /// may not happen again.
    Other,
}

impl PutFailure {
    /// Whether the shard goes to another node, because a retry on this one would fail the
    /// same way (every kind but [`PutFailure::Other`], which is retried in place).
    pub fn moves_shard(self) -> bool {
        !matches!(self, PutFailure::Other)
    }

    /// The machine's result for a put that failed this way, for the reason `why`.
    pub fn result(self, why: String) -> PutResult {
        if self.moves_shard() {
            PutResult::Refused(why)
        } else {
            PutResult::Failed(why)
        }
    }
}

/// One put to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Put {
    /// The shard.
    pub index: ShardIndex,
    /// Where it goes.
    pub node: NodeId,
    /// The node that refused it, when this put is a move (a degraded write).
    pub moved_from: Option<NodeId>,
}

/// Why a stripe could not be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    /// The shard that could not be stored.
    pub index: ShardIndex,
    /// Rounds made.
    pub attempts: u32,
    /// The last reason.
    pub last: String,
}

/// What the driver should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these puts, then report each outcome with [`StripeWrite::on_result`].
    Send(Vec<Put>),
    /// Puts are outstanding: wait for an outcome.
    Wait,
    /// Back off: poll again at this instant.
    Sleep(Instant),
    /// Every shard is stored: see [`StripeWrite::entry`].
    Done,
    /// The stripe cannot be stored.
    Failed(WriteFailure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shard {
    ToSend,
    InFlight,
    Stored,
    Refused(String),
    Failed(String),
}

/// The backoff before retry round `round + 1` (the first round is 0).
pub fn backoff(round: u32) -> Duration {
    Duration::from_millis(CLIENT_RETRY_BASE_MS << round.min(16))
}

/// Stores one stripe; see the module doc.
#[derive(Debug, Clone)]
pub struct StripeWrite {
    id: StripeId,
    code: CodeParams,
    hashes: Vec<Digest>,
    first: Vec<NodeId>,
    nodes: Vec<NodeId>,
    state: Vec<Shard>,
    moved_from: Vec<Option<NodeId>>,
    rounds: u32,
    refused: Vec<NodeId>,
    retry_at: Option<Instant>,
    failure: Option<WriteFailure>,
}

impl StripeWrite {
    /// A write of stripe `id` whose shard `i` hashes to `hashes[i]` (`k + m` of them), placed
    /// over the nodes of `map` that `is_down` does not report down.
    pub fn new(
        map: &ClusterMap,
        id: StripeId,
        code: CodeParams,
        hashes: Vec<Digest>,
        is_down: &dyn Fn(NodeId) -> bool,
    ) -> Result<Self, PlacementError> {
        assert_eq!(hashes.len(), code.total(), "one hash per shard of the stripe");
        let first = match placement::place_stripe(map, &id, code, is_down) {
            Ok(nodes) => nodes,
            Err(_) => {
                placement::place_degraded(map, &id, code, &vec![None; code.total()], is_down)?
            }
        };
        let n = first.len();
        Ok(Self {
            id,
            code,
            hashes,
            nodes: first.clone(),
            first,
            state: vec![Shard::ToSend; n],
            moved_from: vec![None; n],
            rounds: 0,
            refused: Vec::new(),
            retry_at: None,
            failure: None,
        })
    }

    /// The stripe being written.
    pub fn id(&self) -> &StripeId {
        &self.id
    }

    /// Each shard's node as things stand.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The outcome of the put of shard `i` (ignored unless that put is outstanding).
    pub fn on_result(&mut self, i: ShardIndex, result: PutResult) {
        let Some(s) = self.state.get_mut(usize::from(i.0)) else { return };
        if *s == Shard::InFlight {
            *s = match result {
                PutResult::Stored => Shard::Stored,
                PutResult::Refused(why) => Shard::Refused(why),
                PutResult::Failed(why) => Shard::Failed(why),
            };
        }
    }

    /// What to do at `now`. `map` and `is_down` (the live health view) choose replacements.
    pub fn poll(
        &mut self,
        map: &ClusterMap,
        now: Instant,
        is_down: &dyn Fn(NodeId) -> bool,
    ) -> Action {
        if self.failure.is_none() && self.state.contains(&Shard::InFlight) {
            return Action::Wait;
        }
        if self.failure.is_none() && self.state.iter().any(Shard::is_failed) {
            self.end_round(map, now, is_down);
        }
        if let Some(f) = &self.failure {
            return Action::Failed(f.clone());
        }
        if let Some(at) = self.retry_at.filter(|at| now < *at) {
            return Action::Sleep(at);
        }
        self.retry_at = None;
        let puts = self.send_all();
        if puts.is_empty() {
            Action::Done
        } else {
            Action::Send(puts)
        }
    }

    /// Where every shard went, once all are stored.
    pub fn entry(&self) -> Option<StripeEntry> {
        self.state.iter().all(|s| *s == Shard::Stored).then(|| StripeEntry {
            shards: self
                .nodes
                .iter()
                .zip(&self.hashes)
                .map(|(&node, &hash)| ShardEntry { node, hash })
                .collect(),
        })
    }

    /// Shards that went to a node other than their first placement.
    pub fn moved(&self) -> u64 {
        self.nodes.iter().zip(&self.first).filter(|(a, b)| a != b).count() as u64
    }

    fn send_all(&mut self) -> Vec<Put> {
        let mut puts = Vec::new();
        for (i, s) in self.state.iter_mut().enumerate() {
            if *s == Shard::ToSend {
                *s = Shard::InFlight;
                let moved_from = self.moved_from[i].take();
                puts.push(Put { index: ShardIndex(i as u8), node: self.nodes[i], moved_from });
            }
        }
        puts
    }

    /// Judges a finished round with failures: fail, move the refused shards, or back off.
    fn end_round(&mut self, map: &ClusterMap, now: Instant, is_down: &dyn Fn(NodeId) -> bool) {
        self.rounds += 1;
        let failed: Vec<usize> =
            (0..self.state.len()).filter(|&i| self.state[i].is_failed()).collect();
        if self.rounds >= CLIENT_MAX_ATTEMPTS {
            let i = failed[0];
            self.fail(i, self.state[i].reason().to_string());
            return;
        }
        // Every refuser of the round first, so no shard moves onto a node that just refused
        // another shard of the stripe.
        for &i in &failed {
            if matches!(self.state[i], Shard::Refused(_)) && !self.refused.contains(&self.nodes[i])
            {
                self.refused.push(self.nodes[i]);
            }
        }
        let mut back_off = false;
        for i in failed {
            if let Shard::Refused(why) = std::mem::replace(&mut self.state[i], Shard::ToSend) {
                if !self.move_shard(map, i, is_down) {
                    self.fail(i, format!("{why}; no other node can take it"));
                    return;
                }
            } else {
                back_off = true;
            }
        }
        if back_off {
            self.retry_at = Some(now + backoff(self.rounds));
        }
    }

    /// Moves refused shard `i` to a replacement; false if no node can take it.
    fn move_shard(&mut self, map: &ClusterMap, i: usize, is_down: &dyn Fn(NodeId) -> bool) -> bool {
        let from = self.nodes[i];
        let refused = &self.refused;
        let avoid = |n: NodeId| refused.contains(&n) || is_down(n);
        let Some(to) = replacement(map, &self.id, self.code, &self.nodes, i, &avoid) else {
            return false;
        };
        self.nodes[i] = to;
        self.moved_from[i] = Some(from);
        true
    }

    fn fail(&mut self, i: usize, last: String) {
        let index = ShardIndex(i as u8);
        self.failure = Some(WriteFailure { index, attempts: self.rounds, last });
    }
}

impl Shard {
    fn is_failed(&self) -> bool {
        matches!(self, Shard::Refused(_) | Shard::Failed(_))
    }

    fn reason(&self) -> &str {
        match self {
            Shard::Refused(why) | Shard::Failed(why) => why,
            _ => "",
        }
    }
}

/// The node shard `i` moves to: the next node in placement order outside the stripe, or, when
/// none is left, a node of the stripe that can take one more shard (`place_degraded`).
fn replacement(
    map: &ClusterMap,
    id: &StripeId,
    code: CodeParams,
    nodes: &[NodeId],
    i: usize,
    is_down: &dyn Fn(NodeId) -> bool,
) -> Option<NodeId> {
    placement::replacement(map, id, code, nodes, is_down).or_else(|| {
        let pinned: Vec<Option<NodeId>> =
            nodes.iter().enumerate().map(|(j, n)| (j != i).then_some(*n)).collect();
        placement::place_degraded(map, id, code, &pinned, is_down).ok().map(|p| p[i])
    })
}

#[cfg(test)]
mod tests;
