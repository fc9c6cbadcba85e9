//! Fast mode's restore driver, shaped like the client's `fetch_stripe`: each stripe is driven
//! by the client's own `StripePlanner` (data shards first, parity for failed, down or stalled
//! nodes) and decoded with the real codec, which checks every shard's hash; a corrupt shard
//! found there is failed back into the planner. Every stripe's bytes are compared with the
//! original. Stripes are in flight all at once; nodes queue their requests. Which checkpoint
//! to restore is the core's `CheckpointChoice`, over the saves' real manifests.

use std::time::Duration;

use rackpoint_client::checkpoint_choice::{
    why_none, CheckpointChoice, Decision, NodeList, PassedOverList, WhyNone,
};
use rackpoint_client::codec::{Codec, CodecError};
use rackpoint_client::hedge::RequestKind;
use rackpoint_client::listing::{JobListing, ListingQuorum, QuorumState};
use rackpoint_client::planner::{Outcome as Plan, ShardFailure, StripePlanner};
use rackpoint_proto::{ManifestEntry, NodeId, Rank, ShardIndex, Step};

use super::save::{Saved, MANIFEST_LEN};
use super::world::{instant, micros_of, Micros, Rot};
use super::{Ev, Sim};
use crate::report::Outcome;

/// What a simulated restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// How it ended.
    pub outcome: Outcome,
    /// Microseconds from start to the last stripe (or the failure).
    pub elapsed_us: Micros,
    /// Shard bytes that arrived.
    pub bytes_read: u64,
    /// Stripes rebuilt from parity.
    pub degraded: u64,
}

struct StripeRun {
    planner: StripePlanner,
    shards: Vec<Option<Vec<u8>>>,
    done: bool,
    next_tick: Option<Micros>,
}

/// Which checkpoint a restore asks for (the client's `Which`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The newest complete checkpoint whose stripes the down nodes leave recoverable.
    Latest,
    /// This step.
    Step(u64),
}

/// Bytes of a listing reply per entry (a `ManifestEntry` on the wire, roughly).
const LIST_ENTRY_BYTES: usize = 96;

impl Sim<'_> {
    /// Restores as the client does: lists the job's manifests from every node through the
    /// client's own listing quorum, picks the checkpoint (`want`) among the trial's saves
    /// `candidates` (each with its original objects), fetches its manifest from the
    /// replicas the listing named, then restores its stripes. Returns what happened and
    /// which candidate was restored.
    pub fn restore(
        &mut self,
        candidates: &[(&Saved, &[Vec<u8>])],
        want: Want,
    ) -> (Restored, Option<usize>) {
        let start = self.now;
        let mut out =
            Restored { outcome: Outcome::Restored, elapsed_us: 0, bytes_read: 0, degraded: 0 };
        let picked = self.list().and_then(|listing| self.choose(&listing, candidates, want));
        let pick = match picked {
            Ok(i) => i,
            Err(o) => {
                out.outcome = o;
                out.elapsed_us = self.now - start;
                return (out, None);
            }
        };
        let (saved, originals) = candidates[pick];
        let restored = self.restore_stripes(saved, originals, start);
        (restored, Some(pick))
    }

    /// Lists every node's manifests of the job, driving the client's `ListingQuorum`: once
    /// all but m nodes answered, the silent ones get one hedging threshold, then are left
    /// out and suspected (marked down), as the client's catalog does.
    fn list(&mut self) -> Result<JobListing, Outcome> {
        let ids: Vec<NodeId> = self.map.nodes.iter().map(|n| n.id).collect();
        let mut quorum = ListingQuorum::new(ids.clone(), usize::from(self.code.m));
        for &node in &ids {
            let (at, epoch) = self.world.send(node, self.now, LIST_ENTRY_BYTES, false);
            let sent = self.now;
            self.queue.push(at, Ev::List { node, epoch, sent });
        }
        let mut grace_set = false;
        loop {
            match quorum.poll(instant(self.now)) {
                QuorumState::Done => break,
                QuorumState::Waiting(Some(until)) if !grace_set => {
                    grace_set = true;
                    self.queue.push(micros_of(until).max(self.now), Ev::ListGrace);
                }
                QuorumState::Waiting(_) => {}
            }
            let Some(ev) = self.next_event() else { break };
            match ev {
                Ev::List { node, epoch, sent } => {
                    if self.world.arrive(node, epoch) {
                        self.world.health.end(node, self.now, true);
                        let entries = self.world.nodes[&node]
                            .manifests
                            .iter()
                            .map(|(&step, &hash)| ManifestEntry {
                                step: Step(step),
                                rank: Rank(0),
                                world_size: 1,
                                len: MANIFEST_LEN,
                                hash,
                                revision: 0,
                                base: hash,
                            })
                            .collect();
                        let grace = self.hedge.threshold();
                        // Every copy of a part has one id here: no conflict can arise.
                        let _ = quorum.on_answer(node, entries, instant(self.now), grace);
                        continue;
                    }
                    let fail_at = self.world.failure_time(node, sent, self.now);
                    if fail_at > self.now {
                        self.queue.push(fail_at, Ev::List { node, epoch: u64::MAX, sent });
                    } else {
                        self.world.health.end(node, self.now, false);
                        quorum.on_error(node);
                    }
                }
                Ev::ListGrace => {}
                other => self.handle_other(other),
            }
        }
        for n in quorum.silent() {
            self.world.health.mark_down(n, self.now);
        }
        if quorum.answered().is_empty() {
            return Err(Outcome::Error("no node answered the listing".into()));
        }
        Ok(quorum.finish())
    }

    /// Chooses the checkpoint from the listing as the client's catalog does, by driving the
    /// core's [`CheckpointChoice`] (for `Latest`: newest complete step first, passing over
    /// steps being deleted, incomplete ones, one whose manifest cannot be fetched, and one
    /// with a stripe beyond m on nodes known down): each manifest it asks for is fetched from
    /// the replicas the listing named, and is the real manifest of the trial's save the
    /// listed id names. Returns the candidate chosen, or why none (a clean `NotFound`).
    fn choose(
        &mut self,
        listing: &JobListing,
        candidates: &[(&Saved, &[Vec<u8>])],
        want: Want,
    ) -> Result<usize, Outcome> {
        let mut choice = match want {
            Want::Latest => CheckpointChoice::latest(listing),
            Want::Step(s) => CheckpointChoice::step(listing, Step(s)),
        };
        let mut read = None;
        loop {
            match choice.decide() {
                Decision::Read { step, rank, part } => {
                    let Some(i) = candidates.iter().position(|(s, _)| s.manifest_id == part.hash)
                    else {
                        let e = format!("step {step}'s listed manifest was never saved");
                        return Err(Outcome::Error(e));
                    };
                    let saved = candidates[i].0;
                    let fetched = self.fetch_manifest(saved, &part.nodes);
                    let fetched = fetched.map(|()| saved.manifest.clone()).map_err(|o| match o {
                        Outcome::NotFound(e) => e,
                        other => format!("{other:?}"),
                    });
                    read = Some(i);
                    let health = &self.world.health;
                    choice.on_manifest((step, rank), fetched, &|n: NodeId| health.is_down(n));
                }
                Decision::Restore(chosen) => {
                    return read
                        .filter(|&i| candidates[i].0.step == chosen.step.0)
                        .ok_or_else(|| Outcome::Error("a step chosen unread".into()));
                }
                Decision::Nothing(passed_over) => {
                    let health = &self.world.health;
                    let down: Vec<NodeId> = self
                        .map
                        .nodes
                        .iter()
                        .map(|n| n.id)
                        .filter(|n| health.is_down(*n))
                        .collect();
                    let passed = PassedOverList(passed_over.clone());
                    let why = match why_none(&passed_over, &down, usize::from(self.code.m)) {
                        WhyNone::Unavailable { nodes } => {
                            format!("unavailable: nodes {} do not answer{passed}", NodeList(nodes))
                        }
                        WhyNone::NoSuchJob => match want {
                            Want::Step(s) => format!("step {s} is not listed"),
                            Want::Latest => "no checkpoint is listed".into(),
                        },
                        WhyNone::NoCheckpoint => format!("no checkpoint to restore{passed}"),
                    };
                    return Err(Outcome::NotFound(why));
                }
            }
        }
    }

    /// Restores the stripes of `saved` (whose objects were `originals`), from `start`.
    fn restore_stripes(&mut self, saved: &Saved, originals: &[Vec<u8>], start: Micros) -> Restored {
        let mut out =
            Restored { outcome: Outcome::Restored, elapsed_us: 0, bytes_read: 0, degraded: 0 };
        let hedge = self.hedge.threshold();
        let k = usize::from(self.code.k);
        let mut runs: Vec<StripeRun> = saved
            .stripes
            .iter()
            .map(|s| StripeRun {
                planner: StripePlanner::new(k, s.nodes.clone(), hedge),
                shards: vec![None; s.nodes.len()],
                done: false,
                next_tick: None,
            })
            .collect();
        for (i, run) in runs.iter_mut().enumerate() {
            let health = &self.world.health;
            let down = |n: NodeId| health.is_down(n);
            let first = run.planner.start(instant(self.now), &down);
            self.send_gets(saved, i, &first);
            self.schedule_tick(run, i);
        }
        let codec = Codec::new(self.code).expect("validated code");
        let mut left = runs.len();
        while left > 0 {
            let Some(ev) = self.next_event() else {
                out.outcome = Outcome::Error("restore stalled: no event left".into());
                break;
            };
            let i = match ev {
                Ev::Get { stripe, index, node, epoch, sent } => {
                    self.get_arrived(
                        saved,
                        &mut runs[stripe],
                        stripe,
                        index,
                        node,
                        epoch,
                        sent,
                        &mut out,
                    );
                    stripe
                }
                Ev::Tick { stripe } => {
                    self.tick(saved, &mut runs[stripe], stripe, hedge);
                    stripe
                }
                other => {
                    self.handle_other(other);
                    continue;
                }
            };
            if runs[i].done {
                continue;
            }
            match self.settle(saved, &mut runs[i], i, &codec, originals, &mut out) {
                Some(Ok(())) => {
                    runs[i].done = true;
                    left -= 1;
                }
                Some(Err(o)) => {
                    out.outcome = o;
                    break;
                }
                None => self.schedule_tick(&mut runs[i], i),
            }
        }
        out.elapsed_us = self.now - start;
        out
    }

    /// Asks every manifest replica the listing named at once and waits for the first good
    /// answer.
    fn fetch_manifest(&mut self, saved: &Saved, replicas: &[NodeId]) -> Result<(), Outcome> {
        let mut waiting = 0;
        for &node in replicas {
            let (at, epoch) = self.world.send(node, self.now, MANIFEST_LEN as usize, false);
            let sent = self.now;
            self.queue.push(at, Ev::Manifest { node, epoch, sent });
            waiting += 1;
        }
        while waiting > 0 {
            let Some(ev) = self.next_event() else { break };
            match ev {
                Ev::Manifest { node, epoch, sent } => {
                    if self.world.arrive(node, epoch) {
                        // The other replicas' answers are not waited for; they arrive as
                        // stray events later and are dropped.
                        self.world.health.end(node, self.now, true);
                        return Ok(());
                    }
                    let fail_at = self.world.failure_time(node, sent, self.now);
                    if fail_at > self.now {
                        self.queue.push(fail_at, Ev::Manifest { node, epoch: u64::MAX, sent });
                    } else {
                        self.world.health.end(node, self.now, false);
                        waiting -= 1;
                    }
                }
                other => self.handle_other(other),
            }
        }
        Err(Outcome::NotFound(format!("no manifest replica of step {} answered", saved.step)))
    }

    fn send_gets(&mut self, saved: &Saved, stripe: usize, picks: &[ShardIndex]) {
        for &i in picks {
            let s = &saved.stripes[stripe];
            let node = s.nodes[usize::from(i.0)];
            let (at, epoch) =
                self.world.send(node, self.now, s.shards[usize::from(i.0)].len(), false);
            let sent = self.now;
            self.queue.push(at, Ev::Get { stripe, index: i.0, node, epoch, sent });
        }
    }

    fn schedule_tick(&mut self, run: &mut StripeRun, stripe: usize) {
        let Some(deadline) = run.planner.next_deadline(instant(self.now)) else { return };
        let at = micros_of(deadline).max(self.now + 1);
        if run.next_tick.is_none_or(|t| at < t || t <= self.now) {
            run.next_tick = Some(at);
            self.queue.push(at, Ev::Tick { stripe });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn get_arrived(
        &mut self,
        saved: &Saved,
        run: &mut StripeRun,
        stripe: usize,
        index: u8,
        node: NodeId,
        epoch: u64,
        sent: Micros,
        out: &mut Restored,
    ) {
        let i = ShardIndex(index);
        if !self.world.arrive(node, epoch) {
            let fail_at = self.world.failure_time(node, sent, self.now);
            if fail_at > self.now {
                self.queue.push(fail_at, Ev::Get { stripe, index, node, epoch: u64::MAX, sent });
                return;
            }
            self.world.health.end(node, self.now, false);
            if !run.done {
                let health = &self.world.health;
                let down = |n: NodeId| health.is_down(n);
                let more =
                    run.planner.on_failed(i, ShardFailure::NodeDown, instant(self.now), &down);
                self.send_gets(saved, stripe, &more);
            }
            return;
        }
        self.world.health.end(node, self.now, true);
        if run.done {
            return;
        }
        let place = (saved.step, stripe, index);
        let n = &self.world.nodes[&node];
        let answer = if !n.shards.contains(&place) {
            Err(ShardFailure::Missing)
        } else {
            match n.rotten.get(&place) {
                Some(Rot::Detected) => Err(ShardFailure::Corrupt),
                Some(Rot::Silent) => {
                    let mut bytes = saved.stripes[stripe].shards[usize::from(index)].clone();
                    let mid = bytes.len() / 2;
                    bytes[mid] ^= 0x5a;
                    Ok(bytes)
                }
                None => Ok(saved.stripes[stripe].shards[usize::from(index)].clone()),
            }
        };
        // The node answered (bytes, missing or corrupt): its latency counts, as in the client.
        self.hedge.observe(RequestKind::ShardGet, Duration::from_micros(self.now - sent));
        match answer {
            Ok(bytes) => {
                out.bytes_read += bytes.len() as u64 * self.world.byte_scale;
                run.shards[usize::from(index)] = Some(bytes);
                run.planner.on_arrived(i);
            }
            Err(why) => {
                let health = &self.world.health;
                let down = |n: NodeId| health.is_down(n);
                let more = run.planner.on_failed(i, why, instant(self.now), &down);
                self.send_gets(saved, stripe, &more);
            }
        }
    }

    /// A planner deadline: suspect nodes that stalled a whole threshold, then hedge.
    fn tick(&mut self, saved: &Saved, run: &mut StripeRun, stripe: usize, hedge: Duration) {
        run.next_tick = None;
        if run.done {
            return;
        }
        let now = instant(self.now);
        self.world.health.view_mut().suspect_stalled(run.planner.late_nodes(now), now, hedge);
        let health = &self.world.health;
        let down = |n: NodeId| health.is_down(n);
        let more = run.planner.on_tick(now, &down);
        self.send_gets(saved, stripe, &more);
    }

    /// Decodes a stripe that has `k` shards, or reports it lost; `None` while pending.
    fn settle(
        &mut self,
        saved: &Saved,
        run: &mut StripeRun,
        stripe: usize,
        codec: &Codec,
        originals: &[Vec<u8>],
        out: &mut Restored,
    ) -> Option<Result<(), Outcome>> {
        loop {
            match run.planner.outcome() {
                Plan::Pending => return None,
                Plan::Impossible => {
                    let failures = run.planner.failures();
                    return Some(Err(Outcome::NotEnoughShards(format!(
                        "stripe {stripe}: {} of {} good shards ({failures:?})",
                        run.planner.arrived().count(),
                        self.code.k
                    ))));
                }
                Plan::Ready => {}
            }
            let s = &saved.stripes[stripe];
            match codec.decode_stripe(&s.layout, s.stripe, run.shards.clone(), &s.hashes) {
                Ok(bytes) => {
                    let r = s.layout.stripe_range(s.stripe);
                    let want = &originals[s.object][r.start as usize..r.end as usize];
                    if run.shards[..usize::from(self.code.k)].iter().any(Option::is_none) {
                        out.degraded += 1;
                    }
                    return Some(if bytes == want {
                        Ok(())
                    } else {
                        Err(Outcome::WrongBytes(format!("stripe {stripe} decoded to other bytes")))
                    });
                }
                Err(CodecError::NotEnoughShards { corrupt, .. }) if !corrupt.is_empty() => {
                    let health = &self.world.health;
                    let down = |n: NodeId| health.is_down(n);
                    let mut more = Vec::new();
                    for c in corrupt {
                        run.shards[usize::from(c.0)] = None;
                        more.extend(run.planner.on_failed(
                            c,
                            ShardFailure::Corrupt,
                            instant(self.now),
                            &down,
                        ));
                    }
                    self.send_gets(saved, stripe, &more);
                }
                Err(e) => return Some(Err(Outcome::Error(format!("stripe {stripe}: {e}")))),
            }
        }
    }
}
