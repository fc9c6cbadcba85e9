//! The listing quorum, pure: merges the manifest lists of a job's nodes and decides when a
//! listing is complete enough to use.
//!
//! Every manifest is stored on m + 1 nodes, so once all but m nodes have *answered*, every
//! committed part has been seen at least once. From that moment the nodes still silent get a
//! grace period (one hedging threshold); after it they are left out, and the driver suspects
//! them (marks them down). A node that replied with an error counts as replied, not answered.
//! Replicas that disagree on a part's manifest id are reported, and every version is kept:
//! the entry names the highest revision (a repair rewrote it: `ManifestEntry::revision`;
//! among copies of one revision the first id seen), and `others` the rest. A reader that
//! finds `others` fetches one manifest of each version and [`settle`]s which to trust: a
//! higher revision only counts when it describes the same content (one node's word never
//! overrides what the other holders agree on).
//!
//! Drive it with [`ListingQuorum::on_answer`] (and [`ListingQuorum::on_marks`] with the
//! steps the node holds deletion marks for) and [`ListingQuorum::on_error`], and ask
//! [`ListingQuorum::poll`] whether to wait on (and until when) or stop;
//! [`ListingQuorum::finish`] then gives the [`JobListing`]: the parts, the steps being
//! deleted (merged from every node that answered) and the nodes that did not answer, whose
//! manifests the listing may lack.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rackpoint_proto::{Digest, ManifestEntry, NodeId, Rank, Step};

use crate::manifest::Manifest;

/// One part as the nodes list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEntry {
    /// Parts in its checkpoint.
    pub world_size: u32,
    /// Its manifest id.
    pub hash: Digest,
    /// Nodes that hold that manifest.
    pub nodes: Vec<NodeId>,
    /// The manifest's revision (0 until a repair moved some of its shards).
    pub revision: u32,
    /// The id of the part's revision 0: what the next manifest's `prev` names.
    pub base: Digest,
    /// The other versions of the part that some holders list (a revision that a repair did
    /// not bring to every holder, or a manifest that disagrees), in the order first seen.
    /// Empty when every holder lists the same one, the common case: nothing more to fetch.
    pub others: Vec<PartVersion>,
    /// Set by [`settle`] when the versions describe different content.
    pub dispute: Option<Dispute>,
}

/// One version of a part as its holders list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartVersion {
    /// Parts in its checkpoint, as listed.
    pub world_size: u32,
    /// Its manifest id.
    pub hash: Digest,
    /// Nodes that list it.
    pub nodes: Vec<NodeId>,
    /// Its revision.
    pub revision: u32,
    /// The chain id it names.
    pub base: Digest,
}

impl PartVersion {
    /// Whether `other` is the same record (id, revision, chain id and world size).
    fn same_record(&self, other: &PartVersion) -> bool {
        (self.hash, self.revision, self.base, self.world_size)
            == (other.hash, other.revision, other.base, other.world_size)
    }
}

/// The holders of a part list manifests that describe different content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute {
    /// Which versions differ from the one trusted (or, unsettled, every version), and how.
    pub detail: String,
    /// Whether a strict majority of the part's holders list one content, which the entry
    /// now names; if not, nothing of the part may be read.
    pub settled: bool,
}

impl PartEntry {
    /// The entry of one version, with no others.
    pub fn of(version: PartVersion) -> Self {
        let PartVersion { world_size, hash, nodes, revision, base } = version;
        Self { world_size, hash, nodes, revision, base, others: Vec::new(), dispute: None }
    }

    /// The version the entry names.
    pub fn version(&self) -> PartVersion {
        PartVersion {
            world_size: self.world_size,
            hash: self.hash,
            nodes: self.nodes.clone(),
            revision: self.revision,
            base: self.base,
        }
    }

    /// Every node that lists any version of the part.
    pub fn holders(&self) -> Vec<NodeId> {
        self.nodes.iter().chain(self.others.iter().flat_map(|v| &v.nodes)).copied().collect()
    }

    /// Every version listed: the entry's first, then `others`.
    pub fn versions(&self) -> Vec<PartVersion> {
        std::iter::once(self.version()).chain(self.others.iter().cloned()).collect()
    }

    /// Makes the entry name `version` (its `others` and `dispute` stay).
    fn name(&mut self, version: PartVersion) {
        let PartVersion { world_size, hash, nodes, revision, base } = version;
        (self.world_size, self.hash, self.nodes) = (world_size, hash, nodes);
        (self.revision, self.base) = (revision, base);
    }
}

/// Every part of a job, by (step, rank).
pub type Listing = BTreeMap<(Step, Rank), PartEntry>;

/// A finished listing of a job: what the nodes that answered list, and what it could not see.
/// Dereferences to its parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobListing {
    /// Every part listed.
    pub parts: Listing,
    /// Steps some node that answered holds a deletion mark for, with those nodes: a delete of
    /// the step has begun and is not known finished everywhere (see `deletion`).
    pub deleting: BTreeMap<Step, Vec<NodeId>>,
    /// Nodes of the map that did not answer with a list (silent or failed), in map order:
    /// parts (and marks) held only by them are missing from this listing.
    pub unseen: Vec<NodeId>,
}

impl JobListing {
    /// Whether `step` is being deleted (some node that answered holds its mark).
    pub fn is_deleting(&self, step: Step) -> bool {
        self.deleting.contains_key(&step)
    }
}

impl std::ops::Deref for JobListing {
    type Target = Listing;

    fn deref(&self) -> &Listing {
        &self.parts
    }
}

/// Where a listing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumState {
    /// Wait for more answers; with `Some`, stop waiting at that instant.
    Waiting(Option<Instant>),
    /// Every node replied, or the grace after the quorum ran out.
    Done,
}

/// A node's copy of a part that disagrees with the id seen first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// The node.
    pub node: NodeId,
    /// The part's step.
    pub step: Step,
    /// The part's rank.
    pub rank: Rank,
}

/// One listing of one job over a set of nodes; see the module doc.
#[derive(Debug, Clone)]
pub struct ListingQuorum {
    nodes: Vec<NodeId>,
    /// `nodes` as a set, and the nodes that replied: sets, so that a listing over a
    /// thousand nodes costs `n log n`, not `n^2` per poll.
    members: BTreeSet<NodeId>,
    enough: usize,
    listing: Listing,
    answered: Vec<NodeId>,
    replied: BTreeSet<NodeId>,
    grace_until: Option<Instant>,
    deleting: BTreeMap<Step, Vec<NodeId>>,
}

impl ListingQuorum {
    /// A listing over `nodes` of a code with `m` parity shards: all but `m` must answer
    /// (at least one).
    pub fn new(nodes: Vec<NodeId>, m: usize) -> Self {
        let enough = nodes.len().saturating_sub(m).max(1);
        let members: BTreeSet<NodeId> = nodes.iter().copied().collect();
        let (answered, replied) = (Vec::new(), BTreeSet::new());
        let listing = Listing::new();
        let deleting = BTreeMap::new();
        Self { nodes, members, enough, listing, answered, replied, grace_until: None, deleting }
    }

    /// Node `node` holds deletion marks for `steps`. Call it with the marks of the node's
    /// answer, before [`ListingQuorum::on_answer`]; marks of a node outside the set, or of a
    /// node that replied already, are ignored.
    pub fn on_marks(&mut self, node: NodeId, steps: &[Step]) {
        if !self.members.contains(&node) || self.replied.contains(&node) {
            return;
        }
        for step in steps {
            let holders = self.deleting.entry(*step).or_default();
            if !holders.contains(&node) {
                holders.push(node);
            }
        }
    }

    /// Node `node` listed `entries` at `now`; `grace` is how long stragglers get once the
    /// quorum is reached. Returns the entries that conflict with copies seen before.
    pub fn on_answer(
        &mut self,
        node: NodeId,
        entries: Vec<ManifestEntry>,
        now: Instant,
        grace: Duration,
    ) -> Vec<Conflict> {
        if !self.first_reply(node) {
            return Vec::new();
        }
        self.answered.push(node);
        if self.answered.len() >= self.enough && self.grace_until.is_none() {
            self.grace_until = Some(now + grace);
        }
        entries.into_iter().filter_map(|e| self.merge(node, e)).collect()
    }

    /// Node `node` replied with an error (or its call failed).
    pub fn on_error(&mut self, node: NodeId) {
        self.first_reply(node);
    }

    /// Whether to wait on, at `now`.
    pub fn poll(&self, now: Instant) -> QuorumState {
        let all_replied = self.replied.len() == self.members.len();
        match self.grace_until {
            _ if all_replied => QuorumState::Done,
            Some(until) if now >= until => QuorumState::Done,
            until => QuorumState::Waiting(until),
        }
    }

    /// Nodes that have not replied at all (to suspect once the listing is done).
    pub fn silent(&self) -> Vec<NodeId> {
        self.nodes.iter().copied().filter(|n| !self.replied.contains(n)).collect()
    }

    /// Nodes that answered with a list.
    pub fn answered(&self) -> &[NodeId] {
        &self.answered
    }

    /// Nodes that did not answer with a list: silent, or replied with an error.
    pub fn unseen(&self) -> Vec<NodeId> {
        let answered: BTreeSet<NodeId> = self.answered.iter().copied().collect();
        self.nodes.iter().copied().filter(|n| !answered.contains(n)).collect()
    }

    /// The merged listing.
    pub fn into_listing(self) -> Listing {
        self.listing
    }

    /// The merged listing, the steps being deleted and the nodes not seen.
    pub fn finish(self) -> JobListing {
        let unseen = self.unseen();
        JobListing { parts: self.listing, deleting: self.deleting, unseen }
    }

    /// Records `node`'s reply; false if it had replied already (or is not in the set).
    fn first_reply(&mut self, node: NodeId) -> bool {
        self.members.contains(&node) && self.replied.insert(node)
    }

    fn merge(&mut self, node: NodeId, e: ManifestEntry) -> Option<Conflict> {
        let listed = PartVersion {
            world_size: e.world_size,
            hash: e.hash,
            nodes: vec![node],
            revision: e.revision,
            base: e.base,
        };
        let part = match self.listing.entry((e.step, e.rank)) {
            Entry::Vacant(v) => {
                v.insert(PartEntry::of(listed));
                return None;
            }
            Entry::Occupied(o) => o.into_mut(),
        };
        if part.version().same_record(&listed) {
            if !part.nodes.contains(&node) {
                part.nodes.push(node);
            }
            return None;
        }
        let known = part.others.iter().position(|v| v.same_record(&listed));
        if listed.revision > part.revision {
            // A repair's rewrite supersedes the copies seen so far (if a reader finds it
            // describes the same content): the entry names it, the old version joins others.
            let mut newer = match known {
                Some(i) => part.others.remove(i),
                None => PartVersion { nodes: Vec::new(), ..listed },
            };
            if !newer.nodes.contains(&node) {
                newer.nodes.push(node);
            }
            let older = part.version();
            part.name(newer);
            part.others.push(older);
            return None;
        }
        match known {
            Some(i) if !part.others[i].nodes.contains(&node) => part.others[i].nodes.push(node),
            Some(_) => {}
            None => part.others.push(listed),
        }
        Some(Conflict { node, step: e.step, rank: e.rank })
    }
}

/// What a reader fetched for one version of a part: its manifest (already checked against
/// the version's id and the part's job, step and rank), or why none could be read.
pub type Fetched = Result<Manifest, String>;

/// Decides which version of a part to trust, once a reader fetched one manifest of each
/// version (`fetched[0]` for the entry's, then one per `others` entry, in order).
///
/// Versions are grouped by what they describe: the same content ([`Manifest::same_content`]:
/// only where shards live may differ), chain id and world size. The group listed by a
/// strict majority of the part's holders (every node that listed any version, readable or
/// not) is trusted, and the entry names its highest revision (a repair's rewrite, which
/// moved shards); when that group holds every readable version there is no dispute. Without
/// such a majority the entry keeps its version but is marked unsettled: nothing of the part
/// may be read. So one node's word, whatever revision it claims, never overrides content that
/// the other holders agree on, and never yields other bytes.
pub fn settle(part: &PartEntry, fetched: &[Fetched]) -> PartEntry {
    let versions = part.versions();
    let holders: usize = versions.iter().map(|v| v.nodes.len()).sum();
    // Groups of version indexes with one content; a version whose manifest does not match its
    // listed world size belongs to none (it disagrees with its own record).
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let Some(Ok(m)) = fetched.get(i) else { continue };
        if m.world_size != v.world_size {
            continue;
        }
        let same = |j: &usize| {
            let (w, n) = (&versions[*j], &fetched[*j]);
            (w.base, w.world_size) == (v.base, v.world_size)
                && n.as_ref().is_ok_and(|n| n.same_content(m).is_ok())
        };
        match groups.iter_mut().find(|g| g.first().is_some_and(same)) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    let held = |g: &Vec<usize>| g.iter().map(|&i| versions[i].nodes.len()).sum::<usize>();
    let winner = groups.iter().find(|g| 2 * held(g) > holders);
    let mut out = part.clone();
    let Some(winner) = winner else {
        let detail = format!(
            "no content is listed by a majority of its {holders} holders: {}",
            describe_all(&versions, fetched)
        );
        out.dispute = Some(Dispute { detail, settled: false });
        return out;
    };
    // The newest revision of the trusted content; among equals the most held, then the first.
    let best = winner
        .iter()
        .copied()
        .max_by_key(|&i| (versions[i].revision, versions[i].nodes.len(), std::cmp::Reverse(i)))
        .unwrap_or(0);
    out.name(versions[best].clone());
    out.others =
        versions.iter().enumerate().filter(|(i, _)| *i != best).map(|(_, v)| v.clone()).collect();
    let trusted = (&versions[best], fetched.get(best));
    let differing: Vec<String> = (0..versions.len())
        .filter(|i| !winner.contains(i) && fetched.get(*i).is_some_and(Result::is_ok))
        .map(|i| describe(&versions[i], fetched.get(i), trusted))
        .collect();
    out.dispute = (!differing.is_empty()).then(|| Dispute {
        detail: format!(
            "{} of its {holders} holders list its content (read at revision {}, id {}); {}",
            held(winner),
            versions[best].revision,
            versions[best].hash,
            differing.join("; ")
        ),
        settled: true,
    });
    out
}

/// "node 4 lists" or "nodes 1, 2 list".
fn nodes_list(nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    match nodes.len() {
        1 => format!("node {} lists", names.join(", ")),
        _ => format!("nodes {} list", names.join(", ")),
    }
}

/// How version `v` (fetched as `got`, readable) differs from the trusted version.
fn describe(
    v: &PartVersion,
    got: Option<&Fetched>,
    (trusted, fetched): (&PartVersion, Option<&Fetched>),
) -> String {
    let how = match (got, fetched) {
        (Some(Ok(m)), _) if m.world_size != v.world_size => format!(
            "says world size {} in its record but {} in its manifest",
            v.world_size, m.world_size
        ),
        (Some(Ok(m)), Some(Ok(t))) => match t.same_content(m) {
            Err(e) => format!("describes other content: {e}"),
            Ok(()) if v.base != trusted.base => format!("names another chain id ({})", v.base),
            Ok(()) => format!("says world size {}", v.world_size),
        },
        _ => "could not be compared".to_owned(),
    };
    format!("{} revision {} (id {}), which {how}", nodes_list(&v.nodes), v.revision, v.hash)
}

/// Every version, for an unsettled dispute.
fn describe_all(versions: &[PartVersion], fetched: &[Fetched]) -> String {
    let each: Vec<String> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let state = match fetched.get(i) {
                Some(Ok(_)) => String::new(),
                Some(Err(e)) => format!(" (could not be read: {e})"),
                None => " (not fetched)".to_owned(),
            };
            format!("{} revision {} (id {}){state}", nodes_list(&v.nodes), v.revision, v.hash)
        })
        .collect();
    each.join("; ")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GRACE: Duration = Duration::from_millis(250);

    fn entry(step: u64, rank: u32, hash: u8) -> ManifestEntry {
        ManifestEntry {
            step: Step(step),
            rank: Rank(rank),
            world_size: 1,
            len: 1,
            hash: Digest([hash; 32]),
            revision: 0,
            base: Digest([hash; 32]),
        }
    }

    fn six() -> Vec<NodeId> {
        (1..=6).map(NodeId).collect()
    }

    #[test]
    fn all_but_m_answers_start_a_grace_then_the_silent_are_left_out() {
        let (mut q, t0) = (ListingQuorum::new(six(), 2), Instant::now());
        assert_eq!(q.poll(t0), QuorumState::Waiting(None), "no deadline before the quorum");
        for n in 1..=3 {
            q.on_answer(NodeId(n), vec![entry(5, 0, 1)], t0, GRACE);
        }
        q.on_error(NodeId(4));
        assert_eq!(q.poll(t0), QuorumState::Waiting(None), "an error is not an answer");
        let t1 = t0 + Duration::from_millis(10);
        q.on_answer(NodeId(5), vec![], t1, GRACE);
        assert_eq!(q.poll(t1), QuorumState::Waiting(Some(t1 + GRACE)));
        assert_eq!(q.poll(t1 + GRACE), QuorumState::Done);
        assert_eq!(q.silent(), vec![NodeId(6)]);
        assert_eq!(q.answered(), &[NodeId(1), NodeId(2), NodeId(3), NodeId(5)]);
        let listing = q.into_listing();
        assert_eq!(listing[&(Step(5), Rank(0))].nodes, vec![NodeId(1), NodeId(2), NodeId(3)]);
    }

    #[test]
    fn every_reply_in_ends_the_listing_at_once() {
        let (mut q, t0) = (ListingQuorum::new(six(), 2), Instant::now());
        for n in 1..=6 {
            q.on_error(NodeId(n));
        }
        assert_eq!(q.poll(t0), QuorumState::Done);
        assert!(q.answered().is_empty() && q.silent().is_empty());
    }

    #[test]
    fn a_disagreeing_copy_is_reported_and_the_first_kept() {
        let (mut q, t0) = (ListingQuorum::new(six(), 2), Instant::now());
        assert!(q.on_answer(NodeId(1), vec![entry(1, 0, 7)], t0, GRACE).is_empty());
        let conflicts = q.on_answer(NodeId(2), vec![entry(1, 0, 8), entry(2, 0, 9)], t0, GRACE);
        assert_eq!(conflicts, vec![Conflict { node: NodeId(2), step: Step(1), rank: Rank(0) }]);
        assert!(q.on_answer(NodeId(2), vec![entry(1, 0, 7)], t0, GRACE).is_empty(), "once a node");
        let listing = q.into_listing();
        assert_eq!(listing[&(Step(1), Rank(0))].hash, Digest([7; 32]));
        assert_eq!(listing[&(Step(1), Rank(0))].nodes, vec![NodeId(1)]);
        assert_eq!(listing[&(Step(2), Rank(0))].nodes, vec![NodeId(2)]);
    }

    #[test]
    fn a_higher_revision_wins_whatever_the_order() {
        let repaired = ManifestEntry { revision: 1, hash: Digest([9; 32]), ..entry(1, 0, 7) };
        for first_the_repaired in [false, true] {
            let (mut q, t0) = (ListingQuorum::new(six(), 2), Instant::now());
            let (a, b) = if first_the_repaired {
                (repaired.clone(), entry(1, 0, 7))
            } else {
                (entry(1, 0, 7), repaired.clone())
            };
            q.on_answer(NodeId(1), vec![a], t0, GRACE);
            q.on_answer(NodeId(2), vec![b], t0, GRACE);
            q.on_answer(NodeId(3), vec![repaired.clone()], t0, GRACE);
            let part = &q.into_listing()[&(Step(1), Rank(0))];
            assert_eq!(
                (part.revision, part.hash, part.base),
                (1, Digest([9; 32]), Digest([7; 32]))
            );
            let holders =
                if first_the_repaired { [NodeId(1), NodeId(3)] } else { [NodeId(2), NodeId(3)] };
            assert_eq!(part.nodes, holders);
        }
    }

    fn rev(step: u64, hash: u8, revision: u32, base: u8) -> ManifestEntry {
        ManifestEntry { revision, base: Digest([base; 32]), ..entry(step, 0, hash) }
    }

    #[test]
    fn every_version_is_kept_and_the_highest_revision_named() {
        let (mut q, t0) = (ListingQuorum::new(six(), 2), Instant::now());
        q.on_answer(NodeId(1), vec![entry(1, 0, 7)], t0, GRACE);
        q.on_answer(NodeId(2), vec![rev(1, 8, 1, 7)], t0, GRACE);
        let conflicts = q.on_answer(NodeId(3), vec![entry(1, 0, 7)], t0, GRACE);
        assert_eq!(conflicts.len(), 1, "an older copy is reported");
        q.on_answer(NodeId(4), vec![rev(1, 9, 5, 7)], t0, GRACE);
        q.on_answer(NodeId(5), vec![entry(1, 0, 7)], t0, GRACE);
        let part = &q.into_listing()[&(Step(1), Rank(0))];
        assert_eq!(
            (part.revision, part.hash, part.nodes.clone()),
            (5, Digest([9; 32]), vec![NodeId(4)])
        );
        let others: Vec<(u32, Digest, Vec<NodeId>)> =
            part.others.iter().map(|v| (v.revision, v.hash, v.nodes.clone())).collect();
        assert_eq!(
            others,
            [
                (0, Digest([7; 32]), vec![NodeId(1), NodeId(3), NodeId(5)]),
                (1, Digest([8; 32]), vec![NodeId(2)])
            ]
        );
        assert_eq!(part.dispute, None, "nothing compared yet");
    }

    /// A valid manifest of step 1 rank 0 whose one object has hash `content`, with its
    /// shards on nodes drawn from `placement`.
    fn manifest(content: u8, placement: u32) -> Manifest {
        use crate::manifest::{CodeSpec, ObjectEntry, ShardEntry, StripeEntry};
        let params = rackpoint_proto::CodeParams::new(2, 1, 64).expect("valid");
        let shards = (0..3)
            .map(|i| ShardEntry { node: NodeId(placement + i), hash: Digest([content; 32]) })
            .collect();
        Manifest {
            format_version: crate::manifest::MANIFEST_FORMAT_VERSION,
            job: rackpoint_proto::JobName::new("job").expect("valid"),
            step: Step(1),
            rank: Rank(0),
            world_size: 1,
            writer: "w".into(),
            code: CodeSpec::for_params(params),
            objects: vec![ObjectEntry {
                name: rackpoint_proto::ObjectName::new("o").expect("valid"),
                len: 100,
                hash: Digest([content; 32]),
                stripes: vec![StripeEntry { shards }],
            }],
            user_meta: BTreeMap::new(),
            prev: None,
        }
    }

    /// A part listed as `(hash, revision, nodes)` versions (chain id 7, world size 1); the
    /// first is the entry's.
    fn part(versions: &[(u8, u32, &[u32])]) -> PartEntry {
        let version = |&(hash, revision, nodes): &(u8, u32, &[u32])| PartVersion {
            world_size: 1,
            hash: Digest([hash; 32]),
            nodes: nodes.iter().copied().map(NodeId).collect(),
            revision,
            base: Digest([7; 32]),
        };
        let mut p = PartEntry::of(version(&versions[0]));
        p.others = versions[1..].iter().map(version).collect();
        p
    }

    #[test]
    fn a_repairs_rewrite_of_the_same_content_is_read_without_dispute() {
        let p = part(&[(8, 1, &[2, 4, 5]), (7, 0, &[1])]);
        let settled = settle(&p, &[Ok(manifest(1, 10)), Ok(manifest(1, 20))]);
        assert_eq!((settled.revision, settled.hash), (1, Digest([8; 32])));
        assert_eq!(settled.dispute, None);
        assert_eq!(settled.others, p.others);
    }

    #[test]
    fn one_nodes_higher_revision_of_other_content_never_wins() {
        // Node 4 claims revision 5 of other content; nodes 1-3 hold the committed one.
        let p = part(&[(9, 5, &[4]), (7, 0, &[1, 2, 3])]);
        let settled = settle(&p, &[Ok(manifest(2, 10)), Ok(manifest(1, 20))]);
        assert_eq!((settled.revision, settled.hash), (0, Digest([7; 32])));
        assert_eq!(settled.nodes, [NodeId(1), NodeId(2), NodeId(3)]);
        let dispute = settled.dispute.expect("the holders disagree");
        assert!(dispute.settled);
        assert!(
            dispute.detail.contains("node 4 lists revision 5")
                && dispute
                    .detail
                    .contains("describes other content: object 0 (o) differs in its hash"),
            "{}",
            dispute.detail
        );
        assert_eq!(settled.others.len(), 1);
        assert_eq!(settled.others[0].nodes, [NodeId(4)]);
    }

    #[test]
    fn without_a_majority_nothing_is_trusted() {
        let p = part(&[(9, 5, &[4, 5]), (7, 0, &[1, 2])]);
        let settled = settle(&p, &[Ok(manifest(2, 10)), Ok(manifest(1, 20))]);
        let dispute = settled.dispute.expect("a dispute");
        assert!(!dispute.settled, "2 against 2");
        assert!(dispute.detail.contains("majority of its 4 holders"), "{}", dispute.detail);
        // An unreadable version's holders count too: 2 of 4 is no majority.
        let p = part(&[(9, 5, &[4, 5]), (7, 0, &[1]), (8, 1, &[2])]);
        let fetched = [Ok(manifest(2, 10)), Ok(manifest(1, 20)), Err("node down".into())];
        assert!(!settle(&p, &fetched).dispute.expect("a dispute").settled);
        let p = part(&[(9, 5, &[4, 5]), (7, 0, &[1])]);
        let settled = settle(&p, &[Ok(manifest(2, 10)), Ok(manifest(1, 20))]);
        assert_eq!(settled.hash, Digest([9; 32]), "2 of 3 is a majority, whatever its revision");
        assert!(settled.dispute.expect("the minority is reported").settled);
    }

    #[test]
    fn a_manifest_that_contradicts_its_record_is_disputed() {
        let p = part(&[(8, 1, &[2]), (7, 0, &[1, 3])]);
        let mut wrong = manifest(1, 10);
        wrong.world_size = 2;
        let settled = settle(&p, &[Ok(wrong), Ok(manifest(1, 20))]);
        assert_eq!(settled.hash, Digest([7; 32]));
        let dispute = settled.dispute.expect("a dispute");
        assert!(dispute.detail.contains("world size 1 in its record but 2"), "{}", dispute.detail);
        let mut other_chain = part(&[(8, 1, &[2]), (7, 0, &[1, 3])]);
        other_chain.base = Digest([6; 32]);
        let settled = settle(&other_chain, &[Ok(manifest(1, 10)), Ok(manifest(1, 20))]);
        assert!(settled.dispute.expect("a dispute").detail.contains("another chain id"));
    }

    #[test]
    fn marks_are_merged_from_every_node_that_answered_and_the_unseen_are_named() {
        let (mut q, t0) = (ListingQuorum::new(six(), 2), Instant::now());
        q.on_marks(NodeId(1), &[Step(4)]);
        q.on_answer(NodeId(1), vec![entry(4, 0, 1)], t0, GRACE);
        q.on_marks(NodeId(2), &[Step(4), Step(5)]);
        q.on_answer(NodeId(2), vec![], t0, GRACE);
        q.on_error(NodeId(3));
        q.on_marks(NodeId(3), &[Step(9)]);
        q.on_marks(NodeId(7), &[Step(9)]);
        q.on_marks(NodeId(4), &[]);
        q.on_answer(NodeId(4), vec![], t0, GRACE);
        assert_eq!(q.unseen(), [NodeId(3), NodeId(5), NodeId(6)]);
        let l = q.finish();
        assert_eq!(l.unseen, [NodeId(3), NodeId(5), NodeId(6)], "an error is not seen");
        assert_eq!(
            l.deleting,
            BTreeMap::from([(Step(4), vec![NodeId(1), NodeId(2)]), (Step(5), vec![NodeId(2)])]),
            "a node that failed or is not in the map marks nothing"
        );
        assert!(l.is_deleting(Step(5)) && !l.is_deleting(Step(9)));
        assert_eq!(l.len(), 1, "the parts, through Deref");
    }

    #[test]
    fn a_single_node_cluster_needs_its_one_answer() {
        let (mut q, t0) = (ListingQuorum::new(vec![NodeId(1)], 2), Instant::now());
        assert_eq!(q.poll(t0), QuorumState::Waiting(None));
        q.on_answer(NodeId(1), vec![], t0, GRACE);
        assert_eq!(q.poll(t0), QuorumState::Done);
    }

    proptest! {
        /// Whatever versions the holders list (content 0 is the committed one), a settled
        /// entry names content that a strict majority of the holders list, at its highest
        /// revision; a part whose versions all describe one content has no dispute; and any
        /// readable version of other content is reported.
        #[test]
        fn settling_trusts_only_a_majority(
            versions in proptest::collection::vec((0u8..3, 0u32..4, 1usize..4, any::<bool>()), 1..5),
        ) {
            let mut next = 1u32;
            let listed: Vec<(u8, u32, Vec<u32>)> = versions
                .iter()
                .enumerate()
                .map(|(i, &(_, revision, holders, _))| {
                    let nodes = (next..next + holders as u32).collect();
                    next += holders as u32;
                    (i as u8, revision, nodes)
                })
                .collect();
            let refs: Vec<(u8, u32, &[u32])> =
                listed.iter().map(|(h, r, n)| (*h, *r, n.as_slice())).collect();
            let p = part(&refs);
            let fetched: Vec<Fetched> = versions
                .iter()
                .enumerate()
                .map(|(i, &(content, _, _, readable))| {
                    if readable { Ok(manifest(content, i as u32 * 10)) } else { Err("down".into()) }
                })
                .collect();
            let settled = settle(&p, &fetched);
            let holders: usize = versions.iter().map(|v| v.2).sum();
            let content_of = |hash: Digest| versions[usize::from(hash.0[0])].0;
            let readable: Vec<&(u8, u32, usize, bool)> = versions.iter().filter(|v| v.3).collect();
            match &settled.dispute {
                Some(Dispute { settled: false, .. }) => {}
                _ => {
                    let chosen = content_of(settled.hash);
                    let i = usize::from(settled.hash.0[0]);
                    prop_assert!(versions[i].3, "a readable version is named");
                    let held: usize = readable.iter().filter(|v| v.0 == chosen).map(|v| v.2).sum();
                    prop_assert!(2 * held > holders, "{held} of {holders}");
                    let top = readable.iter().filter(|v| v.0 == chosen).map(|v| v.1).max();
                    prop_assert_eq!(Some(settled.revision), top);
                    let others = readable.iter().any(|v| v.0 != chosen);
                    prop_assert_eq!(settled.dispute.is_some(), others);
                }
            }
            if readable.iter().all(|v| v.0 == readable[0].0) && settled.dispute.is_some() {
                prop_assert!(!settled.dispute.as_ref().is_some_and(|d| d.settled));
            }
        }

        /// Whatever the order of replies: the listing is done once every node replied; before
        /// the quorum there is no deadline; every part seen is listed with only the nodes
        /// that hold its first id; silent plus replied is the node set.
        #[test]
        fn the_quorum_keeps_its_rules(
            m in 0usize..4,
            replies in proptest::collection::vec((1u32..=8, any::<bool>(), 0u64..3, 0u8..2, 0u64..100), 0..40),
        ) {
            let nodes: Vec<NodeId> = (1..=8).map(NodeId).collect();
            let (mut q, mut now) = (ListingQuorum::new(nodes.clone(), m), Instant::now());
            let mut answered: Vec<NodeId> = Vec::new();
            for (node, ok, step, hash, dt) in replies {
                now += Duration::from_millis(dt);
                let id = NodeId(node);
                let first = q.silent().contains(&id);
                if ok {
                    q.on_answer(id, vec![entry(step, 0, hash)], now, GRACE);
                    if first { answered.push(id); }
                } else {
                    q.on_error(id);
                }
                prop_assert_eq!(q.answered(), answered.as_slice());
                if answered.len() < (8 - m).max(1) && !q.silent().is_empty() {
                    prop_assert_eq!(q.poll(now), QuorumState::Waiting(None));
                }
                if q.silent().is_empty() {
                    prop_assert_eq!(q.poll(now), QuorumState::Done);
                }
            }
            let silent = q.silent();
            let listing = q.into_listing();
            for part in listing.values() {
                prop_assert!(!part.nodes.is_empty());
                prop_assert!(part.nodes.iter().all(|n| answered.contains(n) && !silent.contains(n)));
            }
        }
    }
}
