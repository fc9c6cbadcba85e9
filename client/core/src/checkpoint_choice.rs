//! Which checkpoint to restore, pure: from a settled [`JobListing`] and the manifests the
//! machine asks for one at a time, the newest checkpoint that may be restored now, or why
//! there is none.
//!
//! Rules, for the newest checkpoint (`latest`, `resume`), newest step first:
//! - a step being deleted (a node that answered holds its deletion mark) is passed over;
//! - an incomplete step (not every rank `0..world_size` listed, [`step_is_complete`]) is
//!   passed over;
//! - each part's manifest is read in rank order; a part whose manifest cannot be read passes
//!   the step over, and so does one with a stripe that has more than `m` shards on nodes that
//!   do not answer ([`Manifest::lost_stripe`]): unavailable, perhaps not lost;
//! - the first step left is taken, with every part's manifest.
//!
//! For a named step ([`CheckpointChoice::step`]) only the deletion rule applies: its parts
//! are read as listed, and a stripe short of shards is for the restore to find.
//!
//! Drive it with [`CheckpointChoice::decide`]; answer each [`Decision::Read`] with
//! [`CheckpointChoice::on_manifest`]. When nothing is left, [`why_none`] tells an outage
//! (nodes that may hold it do not answer) from a job with no checkpoint to restore.

use std::collections::{BTreeMap, VecDeque};

use rackpoint_proto::{NodeId, Rank, Step};

use crate::listing::{JobListing, Listing, PartEntry};
use crate::manifest::{self, LostStripe, Manifest};

/// Nodes, for reports; prints as "4, 5, 6".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeList(pub Vec<NodeId>);

impl std::fmt::Display for NodeList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.0.iter().map(|n| n.to_string()).collect();
        f.write_str(&nodes.join(", "))
    }
}

/// A newer checkpoint that was passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedOver {
    /// Its step.
    pub step: Step,
    /// Why it was not taken.
    pub why: PassOverReason,
}

/// Why a checkpoint was passed over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassOverReason {
    /// Not every rank committed its part.
    #[error("{parts} of {world_size} parts committed")]
    Incomplete {
        /// Parts committed.
        parts: usize,
        /// Parts the checkpoint has.
        world_size: u32,
    },
    /// No replica of a part's manifest could be read.
    #[error("rank {rank}: manifest unreadable: {error}")]
    ManifestUnreadable {
        /// The part.
        rank: Rank,
        /// Why, with what each replica said.
        error: String,
    },
    /// A stripe has more than m shards on nodes that do not answer (down, not known lost).
    #[error("rank {rank}: object {} stripe {} has {} shards on nodes that do not answer ({}), more than m = {}", stripe.object, stripe.stripe, stripe.lost, NodeList(stripe.nodes.clone()), stripe.m)]
    Unavailable {
        /// The part.
        rank: Rank,
        /// The stripe, and its nodes that do not answer.
        stripe: LostStripe,
    },
    /// A delete of it has begun and is not finished (nodes hold its deletion mark).
    #[error("being deleted (marked on node(s) {nodes})")]
    BeingDeleted {
        /// The nodes that answered holding its mark.
        nodes: NodeList,
    },
}

impl std::fmt::Display for PassedOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {}: {}", self.step, self.why)
    }
}

/// Checkpoints passed over, newest first; prints as one line (empty when none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PassedOverList(pub Vec<PassedOver>);

impl std::fmt::Display for PassedOverList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        let all: Vec<String> = self.0.iter().map(|p| p.to_string()).collect();
        write!(f, " (passed over: {})", all.join("; "))
    }
}

/// The parts of every step of a listing, by step, each in rank order.
pub fn by_step(listing: &Listing) -> BTreeMap<Step, Vec<(Rank, PartEntry)>> {
    let mut steps: BTreeMap<Step, Vec<(Rank, PartEntry)>> = BTreeMap::new();
    for ((step, rank), part) in listing {
        steps.entry(*step).or_default().push((*rank, part.clone()));
    }
    steps
}

/// The parts a step has, as its parts list it: the largest `world_size` listed (a part that
/// names fewer does not make the step complete sooner).
pub fn world_size(parts: &[(Rank, PartEntry)]) -> u32 {
    parts.iter().map(|(_, p)| p.world_size).max().unwrap_or(0)
}

/// Whether a step's listed parts make a complete checkpoint: every rank `0..world_size`
/// (see [`world_size`]) is listed and none is outside it. What `list`, `latest` and the
/// retention rule call complete.
pub fn step_is_complete(parts: &[(Rank, PartEntry)]) -> bool {
    manifest::is_complete(world_size(parts), parts.iter().map(|(r, _)| *r))
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Read this part's manifest (from the replicas `part` names) and answer with
    /// [`CheckpointChoice::on_manifest`].
    Read {
        /// Its step.
        step: Step,
        /// Its rank.
        rank: Rank,
        /// Its listing entry.
        part: PartEntry,
    },
    /// Restore this checkpoint.
    Restore(Chosen),
    /// No checkpoint may be restored; the ones passed over, newest first (see [`why_none`]).
    Nothing(Vec<PassedOver>),
}

/// The checkpoint taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// Its step.
    pub step: Step,
    /// Its parts' manifests, in rank order.
    pub parts: Vec<Manifest>,
    /// The newer checkpoints passed over, newest first, and why.
    pub passed_over: Vec<PassedOver>,
}

/// The step whose parts are being read.
#[derive(Debug, Clone)]
struct Reading {
    step: Step,
    unread: VecDeque<(Rank, PartEntry)>,
    read: Vec<Manifest>,
}

/// One choice of a checkpoint; see the module doc.
#[derive(Debug, Clone)]
pub struct CheckpointChoice {
    /// Steps not judged yet, oldest first (taken from the back).
    steps: Vec<(Step, Vec<(Rank, PartEntry)>)>,
    deleting: BTreeMap<Step, Vec<NodeId>>,
    /// Whether the completeness and lost-stripe rules apply (the newest checkpoint).
    newest: bool,
    reading: Option<Reading>,
    passed_over: Vec<PassedOver>,
}

impl CheckpointChoice {
    /// The newest checkpoint of `listing` that may be restored (`latest`, `resume`).
    pub fn latest(listing: &JobListing) -> Self {
        Self::over(listing, by_step(listing).into_iter().collect(), true)
    }

    /// Checkpoint `step` of `listing`, if it is listed and not being deleted.
    pub fn step(listing: &JobListing, step: Step) -> Self {
        let steps = by_step(listing).into_iter().filter(|(s, _)| *s == step).collect();
        Self::over(listing, steps, false)
    }

    fn over(
        listing: &JobListing,
        steps: Vec<(Step, Vec<(Rank, PartEntry)>)>,
        newest: bool,
    ) -> Self {
        let deleting = listing.deleting.clone();
        Self { steps, deleting, newest, reading: None, passed_over: Vec::new() }
    }

    /// What to do next.
    pub fn decide(&mut self) -> Decision {
        loop {
            if let Some(reading) = &mut self.reading {
                if let Some((rank, part)) = reading.unread.front() {
                    let (step, rank, part) = (reading.step, *rank, part.clone());
                    return Decision::Read { step, rank, part };
                }
                let Reading { step, read, .. } = self.reading.take().expect("reading");
                let passed_over = std::mem::take(&mut self.passed_over);
                return Decision::Restore(Chosen { step, parts: read, passed_over });
            }
            let Some((step, parts)) = self.steps.pop() else {
                return Decision::Nothing(std::mem::take(&mut self.passed_over));
            };
            if let Some(nodes) = self.deleting.get(&step) {
                let why = PassOverReason::BeingDeleted { nodes: NodeList(nodes.clone()) };
                self.passed_over.push(PassedOver { step, why });
                continue;
            }
            if self.newest && !step_is_complete(&parts) {
                let why = PassOverReason::Incomplete {
                    parts: parts.len(),
                    world_size: world_size(&parts),
                };
                self.passed_over.push(PassedOver { step, why });
                continue;
            }
            let unread = parts.into_iter().collect();
            self.reading = Some(Reading { step, unread, read: Vec::new() });
        }
    }

    /// The manifest of part `(step, rank)` the last [`Decision::Read`] asked for, or why it
    /// could not be read; `is_down` names the nodes that do not answer. An answer for
    /// another part is ignored.
    pub fn on_manifest(
        &mut self,
        (step, rank): (Step, Rank),
        manifest: Result<Manifest, String>,
        is_down: &dyn Fn(NodeId) -> bool,
    ) {
        let Some(reading) = &mut self.reading else { return };
        if reading.step != step || reading.unread.front().map(|(r, _)| *r) != Some(rank) {
            return;
        }
        reading.unread.pop_front();
        let why = match manifest {
            Err(error) => PassOverReason::ManifestUnreadable { rank, error },
            Ok(m) => match m.lost_stripe(is_down).filter(|_| self.newest) {
                Some(stripe) => PassOverReason::Unavailable { rank, stripe },
                None => {
                    reading.read.push(m);
                    return;
                }
            },
        };
        self.reading = None;
        self.passed_over.push(PassedOver { step, why });
    }
}

/// Why no checkpoint was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhyNone {
    /// One may be on nodes that do not answer: these (sorted), with those passed over.
    Unavailable {
        /// The nodes to bring back.
        nodes: Vec<NodeId>,
    },
    /// Nothing of the job is listed, and the listing saw every committed part.
    NoSuchJob,
    /// Steps are listed, but none may be restored (each passed over for good reason).
    NoCheckpoint,
}

/// Why nothing was taken after passing over `passed_over` (newest first), with `down` the
/// nodes believed down and `m` the code's parity count: unavailable if one was passed over
/// for nodes that do not answer, or a manifest could not be read while some node is down, or
/// more than `m` nodes are down (every copy of a part's manifest may be on them); else no
/// such job if nothing was passed over; else no complete checkpoint.
pub fn why_none(passed_over: &[PassedOver], down: &[NodeId], m: usize) -> WhyNone {
    let mut nodes = down.to_vec();
    let mut blocked = nodes.len() > m;
    for p in passed_over {
        match &p.why {
            PassOverReason::Unavailable { stripe, .. } => {
                blocked = true;
                nodes.extend(&stripe.nodes);
            }
            PassOverReason::ManifestUnreadable { .. } => blocked |= !down.is_empty(),
            PassOverReason::Incomplete { .. } | PassOverReason::BeingDeleted { .. } => {}
        }
    }
    nodes.sort();
    nodes.dedup();
    if blocked {
        WhyNone::Unavailable { nodes }
    } else if passed_over.is_empty() {
        WhyNone::NoSuchJob
    } else {
        WhyNone::NoCheckpoint
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use rackpoint_proto::{CodeParams, Digest, JobName, ObjectName};

    use super::*;
    use crate::manifest::{CodeSpec, ObjectEntry, ShardEntry, StripeEntry};

    /// A part's manifest: one object of one stripe of a (2, 1) code on `nodes`.
    fn manifest(step: Step, rank: Rank, world_size: u32, nodes: [u32; 3]) -> Manifest {
        let shards = nodes.map(|n| ShardEntry { node: NodeId(n), hash: Digest::default() });
        Manifest {
            format_version: manifest::MANIFEST_FORMAT_VERSION,
            job: JobName::new("job").expect("valid"),
            step,
            rank,
            world_size,
            writer: "test".into(),
            code: CodeSpec::for_params(CodeParams::new(2, 1, 64).expect("valid")),
            objects: vec![ObjectEntry {
                name: ObjectName::new("o").expect("valid"),
                len: 100,
                hash: Digest::default(),
                stripes: vec![StripeEntry { shards: shards.to_vec() }],
            }],
            user_meta: BTreeMap::new(),
            prev: None,
        }
    }

    fn entry(world_size: u32) -> PartEntry {
        PartEntry {
            world_size,
            hash: Digest::default(),
            nodes: vec![NodeId(1), NodeId(2)],
            revision: 0,
            base: Digest::default(),
            others: Vec::new(),
            dispute: None,
        }
    }

    /// A listing of `(step, rank, world_size)` parts, with `deleting` steps marked on node 9.
    fn listing(parts: &[(u64, u32, u32)], deleting: &[u64]) -> JobListing {
        JobListing {
            parts: parts.iter().map(|&(s, r, w)| ((Step(s), Rank(r)), entry(w))).collect(),
            deleting: deleting.iter().map(|&s| (Step(s), vec![NodeId(9)])).collect(),
            unseen: Vec::new(),
        }
    }

    /// Drives `choice` to its end, reading manifests with `read`.
    fn drive(
        mut choice: CheckpointChoice,
        read: &dyn Fn(Step, Rank, u32) -> Result<Manifest, String>,
        is_down: &dyn Fn(NodeId) -> bool,
    ) -> (Decision, usize) {
        let mut reads = 0;
        loop {
            match choice.decide() {
                Decision::Read { step, rank, part } => {
                    reads += 1;
                    choice.on_manifest((step, rank), read(step, rank, part.world_size), is_down);
                }
                done => return (done, reads),
            }
        }
    }

    fn on(nodes: [u32; 3]) -> impl Fn(Step, Rank, u32) -> Result<Manifest, String> {
        move |s, r, w| Ok(manifest(s, r, w, nodes))
    }

    const UP: &dyn Fn(NodeId) -> bool = &|_| false;

    #[test]
    fn the_newest_complete_step_is_taken_past_incomplete_and_deleted_ones() {
        // 10 and 20 complete, 30 missing rank 1, 40 complete but being deleted.
        let l = listing(
            &[(10, 0, 2), (10, 1, 2), (20, 0, 2), (20, 1, 2), (30, 0, 2), (40, 0, 1)],
            &[40],
        );
        let (d, reads) = drive(CheckpointChoice::latest(&l), &on([1, 2, 3]), UP);
        let Decision::Restore(c) = d else { panic!("expected a restore: {d:?}") };
        assert_eq!(c.step, Step(20));
        assert_eq!(c.parts.iter().map(|m| m.rank).collect::<Vec<_>>(), [Rank(0), Rank(1)]);
        assert_eq!(reads, 2, "only the taken step's manifests are read");
        let why: Vec<(Step, &PassOverReason)> =
            c.passed_over.iter().map(|p| (p.step, &p.why)).collect();
        assert!(matches!(why[0], (Step(40), PassOverReason::BeingDeleted { .. })), "{why:?}");
        assert_eq!(
            why[1],
            (Step(30), &PassOverReason::Incomplete { parts: 1, world_size: 2 }),
            "newest first"
        );
    }

    #[test]
    fn a_step_with_a_stripe_on_too_many_nodes_down_or_an_unreadable_manifest_is_passed_over() {
        let l = listing(&[(10, 0, 1), (20, 0, 1), (30, 0, 1)], &[]);
        // Step 30's stripe is on nodes 4, 5, 6; two of them down is more than m = 1.
        let read = |s: Step, r, w| match s.0 {
            30 => Ok(manifest(s, r, w, [4, 5, 6])),
            20 => Err("no replica answered".to_owned()),
            _ => Ok(manifest(s, r, w, [1, 2, 3])),
        };
        let down = |n: NodeId| n == NodeId(4) || n == NodeId(6);
        let (d, _) = drive(CheckpointChoice::latest(&l), &read, &down);
        let Decision::Restore(c) = d else { panic!("expected a restore: {d:?}") };
        assert_eq!(c.step, Step(10));
        let PassOverReason::Unavailable { rank, stripe } = &c.passed_over[0].why else {
            panic!("{:?}", c.passed_over)
        };
        assert_eq!(
            (*rank, stripe.nodes.clone(), stripe.lost),
            (Rank(0), vec![NodeId(4), NodeId(6)], 2)
        );
        assert!(matches!(c.passed_over[1].why, PassOverReason::ManifestUnreadable { .. }));
        // One node down of three is within m: step 30 is taken.
        let (d, _) = drive(CheckpointChoice::latest(&l), &read, &|n| n == NodeId(4));
        assert!(matches!(d, Decision::Restore(Chosen { step: Step(30), .. })), "{d:?}");
    }

    #[test]
    fn a_named_step_is_read_as_listed_unless_being_deleted() {
        let l = listing(&[(10, 0, 2), (20, 0, 1)], &[20]);
        let all_down: &dyn Fn(NodeId) -> bool = &|_| true;
        let (d, _) = drive(CheckpointChoice::step(&l, Step(10)), &on([1, 2, 3]), all_down);
        assert!(
            matches!(&d, Decision::Restore(c) if c.step == Step(10) && c.parts.len() == 1),
            "no completeness or lost-stripe rule for a named step: {d:?}"
        );
        let (d, _) = drive(CheckpointChoice::step(&l, Step(20)), &on([1, 2, 3]), UP);
        let Decision::Nothing(p) = d else { panic!("{d:?}") };
        assert!(matches!(p[0].why, PassOverReason::BeingDeleted { .. }));
        let (d, reads) = drive(CheckpointChoice::step(&l, Step(30)), &on([1, 2, 3]), UP);
        assert_eq!((d, reads), (Decision::Nothing(Vec::new()), 0), "not listed");
    }

    #[test]
    fn an_answer_for_another_part_is_ignored() {
        let l = listing(&[(10, 0, 1)], &[]);
        let mut c = CheckpointChoice::latest(&l);
        assert!(matches!(c.decide(), Decision::Read { step: Step(10), rank: Rank(0), .. }));
        c.on_manifest((Step(11), Rank(0)), Err("stray".into()), UP);
        c.on_manifest((Step(10), Rank(0)), Ok(manifest(Step(10), Rank(0), 1, [1, 2, 3])), UP);
        assert!(matches!(c.decide(), Decision::Restore(Chosen { step: Step(10), .. })));
    }

    #[test]
    fn why_none_tells_an_outage_from_no_checkpoint() {
        let incomplete = PassedOver {
            step: Step(5),
            why: PassOverReason::Incomplete { parts: 1, world_size: 2 },
        };
        let unreadable = PassedOver {
            step: Step(6),
            why: PassOverReason::ManifestUnreadable { rank: Rank(0), error: "x".into() },
        };
        assert_eq!(why_none(&[], &[], 1), WhyNone::NoSuchJob);
        assert_eq!(why_none(std::slice::from_ref(&incomplete), &[], 1), WhyNone::NoCheckpoint);
        let two_down = [NodeId(3), NodeId(2)];
        assert_eq!(
            why_none(&[], &two_down, 1),
            WhyNone::Unavailable { nodes: vec![NodeId(2), NodeId(3)] },
            "more than m down: the job may be on them"
        );
        assert_eq!(why_none(std::slice::from_ref(&unreadable), &[], 1), WhyNone::NoCheckpoint);
        assert_eq!(
            why_none(&[unreadable], &[NodeId(7)], 1),
            WhyNone::Unavailable { nodes: vec![NodeId(7)] }
        );
    }

    proptest! {
        /// Whatever the listing, the nodes down and the manifests readable: the step taken is
        /// the newest one that is listed complete, not being deleted, whose every manifest
        /// was read and has no stripe beyond m on nodes down; every newer step is passed over
        /// (newest first), and only the steps judged have manifests read.
        #[test]
        fn latest_takes_the_newest_step_every_rule_allows(
            parts in proptest::collection::vec((1u64..8, 0u32..3, 1u32..4), 0..20),
            deleting in proptest::collection::btree_set(1u64..8, 0..3),
            unreadable in proptest::collection::btree_set((1u64..8, 0u32..3), 0..4),
            placed in proptest::collection::vec(proptest::array::uniform3(1u32..7), 8),
            down in proptest::collection::btree_set(1u32..7, 0..4),
        ) {
            let deleting: Vec<u64> = deleting.into_iter().collect();
            let l = listing(&parts, &deleting);
            let is_down = |n: NodeId| down.contains(&n.0);
            let read = |s: Step, r: Rank, w| {
                if unreadable.contains(&(s.0, r.0)) {
                    return Err("unreadable".to_owned());
                }
                Ok(manifest(s, r, w, placed[s.0 as usize]))
            };
            let restorable = |s: u64, ps: &[(Rank, PartEntry)]| {
                !deleting.contains(&s)
                    && step_is_complete(ps)
                    && ps.iter().all(|(r, _)| !unreadable.contains(&(s, r.0)))
                    && placed[s as usize].iter().filter(|n| down.contains(*n)).count() <= 1
            };
            let steps = by_step(&l);
            let want = steps.iter().rev().find(|(s, ps)| restorable(s.0, ps)).map(|(s, _)| *s);
            let newer = steps.keys().filter(|s| want.is_none_or(|w| **s > w)).count();
            let (d, _) = drive(CheckpointChoice::latest(&l), &read, &is_down);
            let passed = match d {
                Decision::Restore(c) => {
                    prop_assert_eq!(Some(c.step), want);
                    let w = world_size(&steps[&c.step]);
                    prop_assert_eq!(c.parts.len(), w as usize);
                    prop_assert!(c.parts.iter().enumerate().all(|(i, m)| m.rank == Rank(i as u32)));
                    c.passed_over
                }
                Decision::Nothing(p) => {
                    prop_assert_eq!(want, None);
                    p
                }
                Decision::Read { .. } => unreachable!("drive runs to the end"),
            };
            prop_assert_eq!(passed.len(), newer);
            let order: Vec<Step> = passed.iter().map(|p| p.step).collect();
            let mut sorted = order.clone();
            sorted.sort_by(|a, b| b.cmp(a));
            prop_assert_eq!(order, sorted);
            let distinct: BTreeSet<Step> = passed.iter().map(|p| p.step).collect();
            prop_assert_eq!(distinct.len(), passed.len());
        }
    }
}
