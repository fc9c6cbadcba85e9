//! The manifest: the record of one part (one rank's share of a checkpoint) that says where
//! every shard went, with its canonical byte form, validation of untrusted bytes, and the
//! per-rank chain (`prev`) that makes lost, reordered and rewritten manifests visible.
//!
//! Byte form: the magic `b"RPM1"` then the postcard encoding of [`Manifest`] (whose first
//! field is `format_version`, so a reader learns the version before the layout). Only the
//! canonical encoding is accepted: [`Manifest::from_bytes`] re-encodes what it decoded and
//! refuses any difference (overlong varints, trailing bytes), so a manifest's id,
//! `blake3(bytes)`, is one value per manifest. Counts (objects, metadata entries, shards of a
//! stripe) are checked as they are decoded, before their elements are allocated.

use std::collections::{BTreeMap, HashMap, HashSet};

use rackpoint_proto::cluster::ConfigError;
use rackpoint_proto::limits::{
    MAX_MANIFEST_BYTES, MAX_OBJECTS_PER_PART, MAX_USER_META_ENTRIES, MAX_USER_META_KEY_BYTES,
    MAX_USER_META_VALUE_BYTES, MAX_WORLD_SIZE, MAX_WRITER_BYTES,
};
use rackpoint_proto::{
    CodeParams, Digest, JobName, NodeId, ObjectName, Rank, ShardIndex, Step, StripeId, StripeIndex,
};
use serde::{Deserialize, Serialize};

use crate::codec::{ObjectLayout, CODEC_FIELD, CODEC_ID, CODEC_MATRIX};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT_VERSION: u16 = 1;
/// The first bytes of every encoded manifest.
pub const MANIFEST_MAGIC: [u8; 4] = *b"RPM1";

/// One part of a checkpoint: what was saved and where every shard went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`] when written.
    pub format_version: u16,
    /// The job.
    pub job: JobName,
    /// The checkpoint's step.
    pub step: Step,
    /// The rank that wrote this part.
    pub rank: Rank,
    /// Parts in the checkpoint (ranks `0..world_size`).
    pub world_size: u32,
    /// Who wrote it (host, process), for humans.
    pub writer: String,
    /// The erasure code of every stripe.
    pub code: CodeSpec,
    /// The objects, in the order the writer gave them; names are unique.
    #[serde(deserialize_with = "bounded::objects")]
    pub objects: Vec<ObjectEntry>,
    /// Small user metadata (for example the data loader's offset).
    #[serde(deserialize_with = "bounded::user_meta")]
    pub user_meta: BTreeMap<String, String>,
    /// The id of this rank's previous manifest of the job, if any.
    pub prev: Option<Digest>,
}

/// The erasure code, self-described so that a reader can tell whether it can decode it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeSpec {
    /// [`CODEC_ID`].
    pub codec: String,
    /// [`CODEC_FIELD`].
    pub field: String,
    /// [`CODEC_MATRIX`].
    pub matrix: String,
    /// `k`, `m` and the shard size.
    pub params: CodeParams,
}

impl CodeSpec {
    /// The spec of this build's codec for `params`.
    pub fn for_params(params: CodeParams) -> Self {
        Self {
            codec: CODEC_ID.to_owned(),
            field: CODEC_FIELD.to_owned(),
            matrix: CODEC_MATRIX.to_owned(),
            params,
        }
    }
}

/// One object of a part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Its name, unique in the part.
    pub name: ObjectName,
    /// Its length in bytes.
    pub len: u64,
    /// blake3 of the whole object.
    pub hash: Digest,
    /// Its stripes, exactly `ObjectLayout::stripe_count()` of them.
    pub stripes: Vec<StripeEntry>,
}

impl ObjectEntry {
    /// The entry of an object of no bytes (no stripes); a part's names and counts can be
    /// checked with these before anything is saved.
    pub fn empty(name: ObjectName) -> Self {
        Self { name, len: 0, hash: Digest::of(&[]), stripes: Vec::new() }
    }
}

/// One stripe of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeEntry {
    /// Exactly `k + m` shards, in shard-index order.
    #[serde(deserialize_with = "bounded::shards")]
    pub shards: Vec<ShardEntry>,
}

/// Where one shard went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// The node holding it.
    pub node: NodeId,
    /// blake3 of its bytes.
    pub hash: Digest,
}

/// Why manifest bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Longer than `MAX_MANIFEST_BYTES`.
    #[error("manifest of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// It does not start with [`MANIFEST_MAGIC`].
    #[error("not a manifest (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("manifest format version {got} is not supported (this build reads {want})")]
    UnsupportedVersion {
        /// Version in the bytes.
        got: u16,
        /// Version this build reads.
        want: u16,
    },
    /// The body did not decode (truncated, a bad name, ...).
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// It decoded but is not the canonical encoding of what it decoded to.
    #[error("manifest bytes are not in canonical form")]
    NonCanonical,
    /// `world_size` is outside `1..=MAX_WORLD_SIZE`.
    #[error("world size {0} is outside 1..={MAX_WORLD_SIZE}")]
    BadWorldSize(u32),
    /// `rank >= world_size`.
    #[error("rank {rank} is outside a world of {world_size}")]
    RankOutOfRange {
        /// The rank.
        rank: Rank,
        /// The world size.
        world_size: u32,
    },
    /// The code's parameters are out of bounds.
    #[error(transparent)]
    BadCode(#[from] ConfigError),
    /// The code is not one this build can decode.
    #[error("unknown codec {codec:?} / {field:?} / {matrix:?}")]
    UnknownCodec {
        /// Codec id in the manifest.
        codec: String,
        /// Field in the manifest.
        field: String,
        /// Matrix in the manifest.
        matrix: String,
    },
    /// More objects than `MAX_OBJECTS_PER_PART`.
    #[error("{count} objects is over the limit of {MAX_OBJECTS_PER_PART}")]
    TooManyObjects {
        /// Objects in the manifest.
        count: usize,
    },
    /// Two objects share a name.
    #[error("object {0} appears twice")]
    DuplicateObject(ObjectName),
    /// The object is too long for its code.
    #[error("object {object} of {len} bytes is too long for the code")]
    ObjectTooLarge {
        /// The object.
        object: ObjectName,
        /// Its length.
        len: u64,
    },
    /// The object's stripe list does not match its length.
    #[error("object {object} has {got} stripes; its length needs {want}")]
    StripeCountMismatch {
        /// The object.
        object: ObjectName,
        /// Stripes listed.
        got: usize,
        /// Stripes its length needs.
        want: u32,
    },
    /// A stripe does not list `k + m` shards.
    #[error("object {object} stripe {stripe} lists {got} shards; the code has {want}")]
    ShardCountMismatch {
        /// The object.
        object: ObjectName,
        /// The stripe.
        stripe: StripeIndex,
        /// Shards listed.
        got: usize,
        /// `k + m`.
        want: usize,
    },
    /// More user-metadata entries than `MAX_USER_META_ENTRIES`.
    #[error("{count} user metadata entries is over the limit of {MAX_USER_META_ENTRIES}")]
    TooManyUserMeta {
        /// Entries in the manifest.
        count: usize,
    },
    /// A user-metadata key is empty or longer than `MAX_USER_META_KEY_BYTES`.
    #[error("user metadata key of {len} bytes is outside 1..={MAX_USER_META_KEY_BYTES}")]
    BadUserMetaKey {
        /// The key's length.
        len: usize,
    },
    /// A user-metadata value is longer than `MAX_USER_META_VALUE_BYTES`.
    #[error("user metadata value of {len} bytes is over the limit of {MAX_USER_META_VALUE_BYTES}")]
    UserMetaValueTooLong {
        /// The value's length.
        len: usize,
    },
    /// The writer identity is longer than `MAX_WRITER_BYTES`.
    #[error("writer identity of {len} bytes is over the limit of {MAX_WRITER_BYTES}")]
    WriterTooLong {
        /// Its length.
        len: usize,
    },
}

/// How a manifest describes other content than another one of the same part (see
/// [`Manifest::same_content`]). Where shards live is not content: only a repair changes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentMismatch {
    /// A field of the part itself differs (job, step, rank, world size, writer, code,
    /// user metadata, `prev`, format version, or the number of objects).
    #[error("its {field} differs")]
    Part {
        /// The field.
        field: &'static str,
    },
    /// The object at `position` differs in its name, length, hash or number of stripes.
    #[error("object {position} ({object}) differs in its {field}")]
    Object {
        /// Its position in the part.
        position: usize,
        /// Its name in the first manifest.
        object: ObjectName,
        /// The field.
        field: &'static str,
    },
    /// A stripe lists another number of shards.
    #[error("object {object} stripe {stripe} lists another number of shards")]
    ShardCount {
        /// The object.
        object: ObjectName,
        /// The stripe.
        stripe: StripeIndex,
    },
    /// A shard's hash differs: other bytes.
    #[error("object {object} stripe {stripe} shard {index} has another hash")]
    ShardHash {
        /// The object.
        object: ObjectName,
        /// The stripe.
        stripe: StripeIndex,
        /// The shard.
        index: ShardIndex,
    },
}

/// Which checkpoint of a job a caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The newest complete, recoverable checkpoint.
    Latest,
    /// This step.
    Step(Step),
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Which::Latest => f.write_str("the latest complete checkpoint"),
            Which::Step(s) => write!(f, "step {s}"),
        }
    }
}

/// A stripe that lost more than `m` shards: where it is and which nodes took them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostStripe {
    /// The object.
    pub object: ObjectName,
    /// The stripe.
    pub stripe: StripeIndex,
    /// The stripe's nodes that are gone (a node holding two shards is listed once).
    pub nodes: Vec<NodeId>,
    /// Shards lost with them.
    pub lost: usize,
    /// Shards the stripe can lose (`m`).
    pub m: usize,
}

impl std::fmt::Display for LostStripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.to_string()).collect();
        write!(
            f,
            "object {} stripe {} lost {} shards (more than m = {}) on nodes {}",
            self.object,
            self.stripe,
            self.lost,
            self.m,
            nodes.join(", ")
        )
    }
}

/// Decoding with counts checked before elements are allocated. Without it, the stripes of a
/// hostile manifest (one byte each on the wire when they list no shards, 24 in memory) were
/// all decoded before validation saw them: for the largest manifest a node accepts (64 MiB),
/// one allocation of 2 GiB and 2.2 GB live at once (found by `rackpoint-fuzz`). A stripe must
/// now list 1 to `MAX_TOTAL_SHARDS` shards (so it costs at least 34 bytes of input), and the
/// objects and metadata entries are counted against their limits before they are decoded.
/// postcard keeps no message of a refusal, so the refused count's typed error (the one
/// `validate` gives) goes to `decode` through a thread-local slot.
mod bounded {
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::fmt;
    use std::marker::PhantomData;

    use rackpoint_proto::limits::{MAX_OBJECTS_PER_PART, MAX_TOTAL_SHARDS, MAX_USER_META_ENTRIES};
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    use super::{Manifest, ManifestError, ObjectEntry, ShardEntry};

    thread_local! {
        static REFUSED: Cell<Option<ManifestError>> = const { Cell::new(None) };
    }

    fn refuse<E: de::Error>(e: ManifestError) -> E {
        let message = e.to_string();
        REFUSED.set(Some(e));
        E::custom(message)
    }

    /// Decodes a manifest body; a refused count is reported as its typed error.
    pub(super) fn decode(body: &[u8]) -> Result<(Manifest, &[u8]), ManifestError> {
        REFUSED.set(None);
        postcard::take_from_bytes::<Manifest>(body)
            .map_err(|e| REFUSED.take().unwrap_or_else(|| ManifestError::Malformed(e.to_string())))
    }

    /// Elements preallocated for a declared count: at most 1 MiB of them, as serde does for
    /// a count it cannot trust yet.
    fn cautious<T>(declared: usize) -> usize {
        declared.min((1 << 20) / std::mem::size_of::<T>().max(1))
    }

    struct Seq<T> {
        min: usize,
        max: usize,
        refusal: fn(usize) -> ManifestError,
        element: PhantomData<T>,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Seq<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a sequence of {} to {} elements", self.min, self.max)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            if let Some(declared) = seq.size_hint() {
                if !(self.min..=self.max).contains(&declared) {
                    return Err(refuse((self.refusal)(declared)));
                }
            }
            let mut out = Vec::with_capacity(cautious::<T>(seq.size_hint().unwrap_or(0)));
            while let Some(element) = seq.next_element()? {
                if out.len() == self.max {
                    return Err(refuse((self.refusal)(self.max + 1)));
                }
                out.push(element);
            }
            if out.len() < self.min {
                return Err(refuse((self.refusal)(out.len())));
            }
            Ok(out)
        }
    }

    pub(super) fn objects<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ObjectEntry>, D::Error> {
        d.deserialize_seq(Seq {
            min: 0,
            max: MAX_OBJECTS_PER_PART,
            refusal: |count| ManifestError::TooManyObjects { count },
            element: PhantomData,
        })
    }

    pub(super) fn shards<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ShardEntry>, D::Error> {
        d.deserialize_seq(Seq {
            min: 1,
            max: MAX_TOTAL_SHARDS,
            refusal: |count| {
                ManifestError::Malformed(format!(
                    "a stripe lists {count} shards; a code has 2 to {MAX_TOTAL_SHARDS}"
                ))
            },
            element: PhantomData,
        })
    }

    struct Meta;

    impl<'de> Visitor<'de> for Meta {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a map of at most {MAX_USER_META_ENTRIES} entries")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            if let Some(count) = map.size_hint().filter(|n| *n > MAX_USER_META_ENTRIES) {
                return Err(refuse(ManifestError::TooManyUserMeta { count }));
            }
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry()? {
                out.insert(k, v);
                if out.len() > MAX_USER_META_ENTRIES {
                    return Err(refuse(ManifestError::TooManyUserMeta { count: out.len() }));
                }
            }
            Ok(out)
        }
    }

    pub(super) fn user_meta<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        d.deserialize_map(Meta)
    }
}

fn check_len(len: usize) -> Result<(), ManifestError> {
    if len > MAX_MANIFEST_BYTES as usize {
        return Err(ManifestError::TooLarge { len, max: MAX_MANIFEST_BYTES });
    }
    Ok(())
}

impl Manifest {
    /// The canonical bytes: [`MANIFEST_MAGIC`] then postcard. The same manifest always gives
    /// the same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_extend(self, MANIFEST_MAGIC.to_vec())
            .expect("postcard encodes every manifest into a Vec: all its sequences have lengths")
    }

    /// The canonical bytes, checked by the very rules [`Manifest::from_bytes`] applies to
    /// what it reads (bounds, consistency, encoded length): a writer commits only what every
    /// reader accepts.
    pub fn to_checked_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate()?;
        let bytes = self.to_bytes();
        check_len(bytes.len())?;
        Ok(bytes)
    }

    /// Decodes and validates untrusted bytes (see [`Manifest::validate`]). Never panics.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ManifestError> {
        check_len(b.len())?;
        let body = b.strip_prefix(&MANIFEST_MAGIC).ok_or(ManifestError::BadMagic)?;
        let (version, _) = postcard::take_from_bytes::<u16>(body)
            .map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if version != MANIFEST_FORMAT_VERSION {
            return Err(ManifestError::UnsupportedVersion {
                got: version,
                want: MANIFEST_FORMAT_VERSION,
            });
        }
        let (m, rest) = bounded::decode(body)?;
        if !rest.is_empty() || m.to_bytes() != b {
            return Err(ManifestError::NonCanonical);
        }
        m.validate()?;
        Ok(m)
    }

    /// Checks every bound and the consistency of the stripes with the code: world size and
    /// rank, code and codec, object count and unique names, stripes per object, shards per
    /// stripe, user metadata and writer lengths. The encoded length is checked by
    /// [`Manifest::from_bytes`].
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format_version != MANIFEST_FORMAT_VERSION {
            return Err(ManifestError::UnsupportedVersion {
                got: self.format_version,
                want: MANIFEST_FORMAT_VERSION,
            });
        }
        if !(1..=MAX_WORLD_SIZE).contains(&self.world_size) {
            return Err(ManifestError::BadWorldSize(self.world_size));
        }
        if self.rank.0 >= self.world_size {
            return Err(ManifestError::RankOutOfRange {
                rank: self.rank,
                world_size: self.world_size,
            });
        }
        if self.writer.len() > MAX_WRITER_BYTES {
            return Err(ManifestError::WriterTooLong { len: self.writer.len() });
        }
        self.validate_code()?;
        self.validate_user_meta()?;
        self.validate_objects()
    }

    fn validate_code(&self) -> Result<(), ManifestError> {
        let c = &self.code;
        c.params.validate()?;
        if c.codec != CODEC_ID || c.field != CODEC_FIELD || c.matrix != CODEC_MATRIX {
            return Err(ManifestError::UnknownCodec {
                codec: c.codec.clone(),
                field: c.field.clone(),
                matrix: c.matrix.clone(),
            });
        }
        Ok(())
    }

    fn validate_user_meta(&self) -> Result<(), ManifestError> {
        if self.user_meta.len() > MAX_USER_META_ENTRIES {
            return Err(ManifestError::TooManyUserMeta { count: self.user_meta.len() });
        }
        for (k, v) in &self.user_meta {
            if k.is_empty() || k.len() > MAX_USER_META_KEY_BYTES {
                return Err(ManifestError::BadUserMetaKey { len: k.len() });
            }
            if v.len() > MAX_USER_META_VALUE_BYTES {
                return Err(ManifestError::UserMetaValueTooLong { len: v.len() });
            }
        }
        Ok(())
    }

    fn validate_objects(&self) -> Result<(), ManifestError> {
        if self.objects.len() > MAX_OBJECTS_PER_PART {
            return Err(ManifestError::TooManyObjects { count: self.objects.len() });
        }
        let mut names = HashSet::with_capacity(self.objects.len());
        for o in &self.objects {
            if !names.insert(&o.name) {
                return Err(ManifestError::DuplicateObject(o.name.clone()));
            }
            self.validate_stripes(o)?;
        }
        Ok(())
    }

    fn validate_stripes(&self, o: &ObjectEntry) -> Result<(), ManifestError> {
        let params = self.code.params;
        let layout = ObjectLayout::try_new(params, o.len)
            .map_err(|_| ManifestError::ObjectTooLarge { object: o.name.clone(), len: o.len })?;
        let want = layout.stripe_count();
        if o.stripes.len() != want as usize {
            let got = o.stripes.len();
            return Err(ManifestError::StripeCountMismatch { object: o.name.clone(), got, want });
        }
        for (i, s) in o.stripes.iter().enumerate() {
            if s.shards.len() != params.total() {
                return Err(ManifestError::ShardCountMismatch {
                    object: o.name.clone(),
                    stripe: StripeIndex(i as u32),
                    got: s.shards.len(),
                    want: params.total(),
                });
            }
        }
        Ok(())
    }

    /// Whether `other` describes the same content as this manifest: the same part (job,
    /// step, rank, world size), code, objects (names, lengths, hashes, stripes and every
    /// shard's hash), user metadata, `prev`, writer and format version. Only where shards
    /// live (their nodes) may differ, which is all a repair changes; so a node accepts a
    /// rewrite of a manifest it holds, and a reader a higher revision, only when this holds.
    pub fn same_content(&self, other: &Manifest) -> Result<(), ContentMismatch> {
        // Destructured, so that a new field cannot be left out of the comparison.
        let Manifest {
            format_version,
            job,
            step,
            rank,
            world_size,
            writer,
            code,
            objects,
            user_meta,
            prev,
        } = self;
        let part =
            |same: bool, field| if same { Ok(()) } else { Err(ContentMismatch::Part { field }) };
        part(*format_version == other.format_version, "format version")?;
        part(*job == other.job, "job")?;
        part(*step == other.step, "step")?;
        part(*rank == other.rank, "rank")?;
        part(*world_size == other.world_size, "world size")?;
        part(*writer == other.writer, "writer")?;
        part(*code == other.code, "code")?;
        part(*user_meta == other.user_meta, "user metadata")?;
        part(*prev == other.prev, "prev")?;
        part(objects.len() == other.objects.len(), "number of objects")?;
        for (position, (a, b)) in objects.iter().zip(&other.objects).enumerate() {
            same_object_content(position, a, b)?;
        }
        Ok(())
    }

    /// The manifest's id: blake3 of its canonical bytes.
    pub fn id(&self) -> Digest {
        Digest::of(&self.to_bytes())
    }

    /// Object bytes in the part.
    pub fn total_bytes(&self) -> u64 {
        self.objects.iter().fold(0, |sum, o| sum.saturating_add(o.len))
    }

    /// The address of stripe `stripe` of `object` (one of this part's objects).
    pub fn stripe_id(&self, object: &ObjectName, stripe: StripeIndex) -> StripeId {
        StripeId {
            job: self.job.clone(),
            step: self.step,
            rank: self.rank,
            object: object.clone(),
            stripe,
        }
    }

    /// The first stripe that lost more than `m` shards when the nodes for which `lost` is
    /// true are gone, if any.
    pub fn lost_stripe(&self, lost: &dyn Fn(NodeId) -> bool) -> Option<LostStripe> {
        let m = usize::from(self.code.params.m);
        self.objects.iter().find_map(|o| {
            o.stripes.iter().enumerate().find_map(|(i, stripe)| {
                let gone: Vec<NodeId> =
                    stripe.shards.iter().map(|s| s.node).filter(|n| lost(*n)).collect();
                (gone.len() > m).then(|| {
                    let mut nodes = gone.clone();
                    nodes.sort();
                    nodes.dedup();
                    let (object, stripe) = (o.name.clone(), StripeIndex(i as u32));
                    LostStripe { object, stripe, nodes, lost: gone.len(), m }
                })
            })
        })
    }

    /// How many more shard losses every stripe survives when the nodes for which `lost`
    /// is true are gone: the minimum over stripes of `m - (shards on lost nodes)`, or `None`
    /// if some stripe already lost more than `m` shards. A part without stripes has `m`.
    pub fn remaining_redundancy(&self, lost: &dyn Fn(NodeId) -> bool) -> Option<usize> {
        let m = usize::from(self.code.params.m);
        let mut remaining = m;
        for stripe in self.objects.iter().flat_map(|o| &o.stripes) {
            let gone = stripe.shards.iter().filter(|s| lost(s.node)).count();
            remaining = remaining.min(m.checked_sub(gone)?);
        }
        Some(remaining)
    }
}

/// [`Manifest::same_content`] for the object at `position` of both manifests.
fn same_object_content(
    position: usize,
    a: &ObjectEntry,
    b: &ObjectEntry,
) -> Result<(), ContentMismatch> {
    let ObjectEntry { name, len, hash, stripes } = a;
    let object = |field| ContentMismatch::Object { position, object: name.clone(), field };
    if *name != b.name {
        return Err(object("name"));
    }
    if *len != b.len {
        return Err(object("length"));
    }
    if *hash != b.hash {
        return Err(object("hash"));
    }
    if stripes.len() != b.stripes.len() {
        return Err(object("number of stripes"));
    }
    for (s, (x, y)) in stripes.iter().zip(&b.stripes).enumerate() {
        let stripe = StripeIndex(s as u32);
        if x.shards.len() != y.shards.len() {
            return Err(ContentMismatch::ShardCount { object: name.clone(), stripe });
        }
        for (i, (p, q)) in x.shards.iter().zip(&y.shards).enumerate() {
            // The node is where the shard lives, not what it is.
            let ShardEntry { node: _, hash } = p;
            if *hash != q.hash {
                let index = ShardIndex(u8::try_from(i).unwrap_or(u8::MAX));
                return Err(ContentMismatch::ShardHash { object: name.clone(), stripe, index });
            }
        }
    }
    Ok(())
}

/// A problem in one rank's chain of manifests. Steps name the manifest the problem was found
/// at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainProblem {
    /// A manifest's bytes do not hash to the id its node listed for it: it was altered after
    /// it was written. (For linking, it still answers to both ids, so its successor is not
    /// blamed as well.)
    #[error("step {step}: manifest bytes hash to {actual}, not to the listed id {claimed}")]
    Tampered {
        /// The manifest's step.
        step: Step,
        /// The id the node listed.
        claimed: Digest,
        /// blake3 of its bytes.
        actual: Digest,
    },
    /// The manifest belongs to another job or rank than the chain's (the `(job, rank)` of
    /// the lowest step given); it is left out of the chain.
    #[error("step {step}: manifest of job {job} rank {rank} is not part of this chain")]
    Foreign {
        /// The manifest's step.
        step: Step,
        /// Its job.
        job: JobName,
        /// Its rank.
        rank: Rank,
    },
    /// Two different manifests claim the same step (a second writer for the rank).
    #[error("step {step}: two different manifests")]
    DuplicateStep {
        /// The step.
        step: Step,
    },
    /// The manifest's `prev` names no manifest in the list, though an older one is listed:
    /// something between `prev_step` and `step` was lost, deleted out of order, or rewritten.
    #[error("step {step}: its predecessor is missing (closest older manifest: step {prev_step})")]
    Gap {
        /// The manifest's step.
        step: Step,
        /// The step of the closest older manifest listed.
        prev_step: Step,
    },
    /// The manifest's `prev` names a listed manifest that is not its immediate predecessor:
    /// one of the same or a later step, or an older one that skips over the immediate
    /// predecessor (a fork).
    #[error("step {step}: links to the manifest of step {points_to}, not to its predecessor")]
    Reorder {
        /// The manifest's step.
        step: Step,
        /// The step of the manifest its `prev` names.
        points_to: Step,
    },
    /// The part's holders list manifests that describe different content: a rewrite that
    /// was not a repair's (a repair changes only where shards live). Found by a reader
    /// comparing the holders' versions (`listing::settle`), not by the chain rules.
    #[error("step {step}: its holders disagree on what the part holds: {detail}")]
    Disputed {
        /// The part's step.
        step: Step,
        /// Which versions differ, and how.
        detail: String,
    },
    /// The manifest names no predecessor though an older manifest is listed (the chain was
    /// restarted, hiding whatever came before).
    #[error("step {step}: names no predecessor though step {prev_step} is listed")]
    Unlinked {
        /// The manifest's step.
        step: Step,
        /// The step of the closest older manifest listed.
        prev_step: Step,
    },
}

/// Verifies one `(job, rank)`'s chain from manifests in any order (their ids are computed
/// from their bytes, so nothing can be tampered; see [`verify_chain_with_ids`]).
pub fn verify_chain(manifests: &[Manifest]) -> Vec<ChainProblem> {
    let with_ids: Vec<(Digest, Manifest)> = manifests.iter().map(|m| (m.id(), m.clone())).collect();
    verify_chain_with_ids(&with_ids)
}

/// Verifies one `(job, rank)`'s chain from `(id the node listed, manifest)` pairs in any
/// order. Rules, with manifests sorted by step:
/// - `Tampered` when a listed id is not the manifest's id (blake3 of its bytes);
/// - `Foreign` for a manifest of another job or rank than the lowest step's (left out);
/// - the same manifest listed twice (by two replicas) counts once; two different manifests
///   of one step are a `DuplicateStep`;
/// - the oldest step's `prev` may name anything not listed (older manifests were GC'd, or it
///   is the first) but not a listed manifest (`Reorder`);
/// - every later manifest's `prev` must name a manifest of the closest older listed step:
///   if it names none (`None`) that is `Unlinked`, if it names an unlisted id a `Gap`, and if
///   it names another listed manifest a `Reorder`.
pub fn verify_chain_with_ids(manifests: &[(Digest, Manifest)]) -> Vec<ChainProblem> {
    verify_chain_with_bases(manifests, &HashMap::new())
}

/// [`verify_chain_with_ids`] where some manifests were rewritten by a repair (their shards
/// moved): `bases` maps such a manifest's own id to the id of its part's revision 0, the
/// id the next manifest's `prev` names, so the chain runs through the rewrite.
pub fn verify_chain_with_bases(
    manifests: &[(Digest, Manifest)],
    bases: &HashMap<Digest, Digest>,
) -> Vec<ChainProblem> {
    let mut problems = Vec::new();
    let mut sorted: Vec<&(Digest, Manifest)> = manifests.iter().collect();
    sorted.sort_by_key(|(claimed, m)| (m.step, *claimed));
    let Some((_, first)) = sorted.first() else {
        return problems;
    };
    let (job, rank) = (first.job.clone(), first.rank);
    let mut links: Vec<&Manifest> = Vec::new();
    let mut by_id: HashMap<Digest, usize> = HashMap::new();
    for (claimed, m) in sorted {
        let actual = m.id();
        if *claimed != actual {
            problems.push(ChainProblem::Tampered { step: m.step, claimed: *claimed, actual });
        }
        if m.job != job || m.rank != rank {
            problems.push(ChainProblem::Foreign { step: m.step, job: m.job.clone(), rank: m.rank });
            continue;
        }
        let i = *by_id.entry(actual).or_insert_with(|| {
            links.push(m);
            links.len() - 1
        });
        by_id.entry(*claimed).or_insert(i);
        if let Some(base) = bases.get(&actual) {
            by_id.entry(*base).or_insert(i);
        }
    }
    problems.extend(link_problems(&links, &by_id));
    problems
}

/// Duplicate steps and broken `prev` links of distinct manifests sorted by step; `by_id`
/// maps every id a manifest answers to to its index.
fn link_problems(links: &[&Manifest], by_id: &HashMap<Digest, usize>) -> Vec<ChainProblem> {
    let mut problems = Vec::new();
    let (mut prev_step, mut current) = (None, None);
    for (i, m) in links.iter().enumerate() {
        let step = m.step;
        if current == Some(step) {
            if i < 2 || links[i - 2].step != step {
                problems.push(ChainProblem::DuplicateStep { step });
            }
        } else {
            (prev_step, current) = (current, Some(step));
        }
        let named = m.prev.and_then(|p| by_id.get(&p)).map(|&j| links[j].step);
        let problem = match (prev_step, m.prev, named) {
            (_, _, Some(target)) if Some(target) == prev_step => None,
            (_, _, Some(points_to)) => Some(ChainProblem::Reorder { step, points_to }),
            (None, _, None) => None,
            (Some(prev_step), None, None) => Some(ChainProblem::Unlinked { step, prev_step }),
            (Some(prev_step), Some(_), None) => Some(ChainProblem::Gap { step, prev_step }),
        };
        problems.extend(problem);
    }
    problems
}

/// Whether a checkpoint of `world_size` parts is complete given the ranks of the parts
/// present (from manifests that agree on `world_size`): every rank `0..world_size` is
/// present and none is outside it. Repeated ranks (replicas) are fine.
pub fn is_complete(world_size: u32, ranks_present: impl IntoIterator<Item = Rank>) -> bool {
    if !(1..=MAX_WORLD_SIZE).contains(&world_size) {
        return false;
    }
    let mut seen = vec![false; world_size as usize];
    for r in ranks_present {
        match seen.get_mut(r.0 as usize) {
            Some(slot) => *slot = true,
            None => return false,
        }
    }
    seen.iter().all(|&s| s)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn digest(rng: &mut StdRng) -> Digest {
        Digest(rng.gen())
    }

    /// A valid manifest whose shard entries come from `seed`.
    fn build(params: CodeParams, lens: &[u64], seed: u64) -> Manifest {
        let mut rng = StdRng::seed_from_u64(seed);
        let objects = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let stripes = (0..ObjectLayout::new(params, len).stripe_count())
                    .map(|_| StripeEntry {
                        shards: (0..params.total())
                            .map(|_| ShardEntry {
                                node: NodeId(rng.gen_range(1..10)),
                                hash: digest(&mut rng),
                            })
                            .collect(),
                    })
                    .collect();
                ObjectEntry {
                    name: ObjectName::new(format!("obj-{i}")).expect("valid"),
                    len,
                    hash: digest(&mut rng),
                    stripes,
                }
            })
            .collect();
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            job: JobName::new("llm-7b").expect("valid"),
            step: Step(rng.gen_range(0..1_000_000)),
            rank: Rank(1),
            world_size: 4,
            writer: "host-3/pid-4242".into(),
            code: CodeSpec::for_params(params),
            objects,
            user_meta: BTreeMap::from([("data_offset".into(), "123456".into())]),
            prev: Some(digest(&mut rng)),
        }
    }

    fn small_manifest() -> Manifest {
        build(CodeParams::new(4, 2, 64).expect("valid"), &[0, 1, 256, 700], 1)
    }

    fn manifest() -> impl Strategy<Value = Manifest> {
        (
            (1u8..=4, 1u8..=3, 64u32..=256),
            proptest::collection::vec(0u64..3000, 0..4),
            any::<u64>(),
            (1u32..=1000, any::<u32>(), any::<u64>()),
            ".{0,40}",
            proptest::collection::btree_map("[a-z_]{1,12}", ".{0,20}", 0..5),
            proptest::option::of(any::<[u8; 32]>()),
        )
            .prop_map(
                |((k, m, s), lens, seed, (world, rank, step), writer, meta, prev)| {
                    let mut man = build(CodeParams::new(k, m, s).expect("valid"), &lens, seed);
                    man.world_size = world;
                    man.rank = Rank(rank % world);
                    man.step = Step(step);
                    man.writer = writer;
                    man.user_meta = meta;
                    man.prev = prev.map(Digest);
                    man
                },
            )
    }

    proptest! {
        #[test]
        fn manifests_round_trip_through_canonical_bytes(m in manifest()) {
            let b = m.to_bytes();
            prop_assert_eq!(&b[..4], b"RPM1");
            let back = Manifest::from_bytes(&b).expect("valid manifest");
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.to_bytes(), b.clone());
            prop_assert_eq!(m.id(), Digest(*blake3::hash(&b).as_bytes()));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::from_bytes(&b);
            let mut with_magic = MANIFEST_MAGIC.to_vec();
            with_magic.push(1);
            with_magic.extend_from_slice(&b);
            let _ = Manifest::from_bytes(&with_magic);
        }

        #[test]
        fn mutated_bytes_never_panic_and_decode_only_canonically(
            m in manifest(),
            edits in proptest::collection::vec((0u8..4, any::<usize>(), any::<u8>()), 1..6),
        ) {
            let mut b = m.to_bytes();
            for (op, at, byte) in edits {
                let at = at % (b.len() + 1);
                match op {
                    0 if at < b.len() => b[at] ^= byte | 1,
                    1 => b.insert(at, byte),
                    2 if at < b.len() => { b.remove(at); }
                    _ => b.truncate(at),
                }
            }
            if let Ok(decoded) = Manifest::from_bytes(&b) {
                prop_assert_eq!(decoded.to_bytes(), b);
            }
        }
    }

    /// `m` with every shard on a node drawn from `seed` (what a repair may change).
    fn relocated(m: &Manifest, seed: u64) -> Manifest {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = m.clone();
        for shard in out.objects.iter_mut().flat_map(|o| &mut o.stripes).flat_map(|s| &mut s.shards)
        {
            shard.node = NodeId(rng.gen_range(1..20));
        }
        out
    }

    /// `m` with every shard on node 0: its content alone.
    fn content_of(m: &Manifest) -> Manifest {
        let mut out = m.clone();
        for shard in out.objects.iter_mut().flat_map(|o| &mut o.stripes).flat_map(|s| &mut s.shards)
        {
            shard.node = NodeId(0);
        }
        out
    }

    /// Changes the content of `m` by edit `edit` (`pick` chooses the object, stripe or
    /// shard); false when the edit does not apply (no object, stripe or shard to change).
    fn change_content(m: &mut Manifest, edit: u8, pick: usize) -> bool {
        let n = m.objects.len();
        let object = (n > 0).then(|| pick % n);
        match edit {
            0 => m.format_version = m.format_version.wrapping_add(1),
            1 => m.job = JobName::new(format!("{}x", m.job)).expect("valid"),
            2 => m.step = Step(m.step.0.wrapping_add(1)),
            3 => m.rank = Rank(m.rank.0.wrapping_add(1)),
            4 => m.world_size = m.world_size.wrapping_add(1),
            5 => m.writer.push('x'),
            6 => m.code.params.shard_size_bytes += 1,
            7 => {
                // 13 characters: longer than any key the strategy makes.
                m.user_meta.insert("_changed_meta".into(), String::new());
            }
            8 => {
                m.prev = match m.prev {
                    None => Some(Digest([0; 32])),
                    Some(d) if d == Digest([0; 32]) => None,
                    Some(Digest(mut d)) => {
                        d[0] ^= 1;
                        Some(Digest(d))
                    }
                }
            }
            9 => m.objects.push(ObjectEntry::empty(ObjectName::new("added").expect("valid"))),
            10..=17 => {
                let Some(o) = object else { return false };
                return change_object(m, o, edit, pick);
            }
            _ => return false,
        }
        true
    }

    fn change_object(m: &mut Manifest, o: usize, edit: u8, pick: usize) -> bool {
        if edit == 17 {
            if m.objects.len() < 2 {
                return false;
            }
            let n = m.objects.len();
            m.objects.swap(o, (o + 1) % n);
            return true;
        }
        let obj = &mut m.objects[o];
        match edit {
            10 => {
                m.objects.remove(o);
            }
            11 => obj.name = ObjectName::new("renamed").expect("valid"),
            12 => obj.len += 1,
            13 => obj.hash.0[pick % 32] ^= 1,
            14 => obj.stripes.push(StripeEntry { shards: Vec::new() }),
            15 | 16 => {
                let Some(stripe) = (!obj.stripes.is_empty()).then(|| pick % obj.stripes.len())
                else {
                    return false;
                };
                let shards = &mut obj.stripes[stripe].shards;
                if shards.is_empty() {
                    return false;
                }
                let i = pick % shards.len();
                if edit == 15 {
                    shards.remove(i);
                } else {
                    shards[i].hash.0[pick % 32] ^= 1;
                }
            }
            _ => return false,
        }
        true
    }

    proptest! {
        #[test]
        fn moving_shards_keeps_the_content(m in manifest(), seed in any::<u64>()) {
            let moved = relocated(&m, seed);
            prop_assert_eq!(m.same_content(&moved), Ok(()));
            prop_assert_eq!(moved.same_content(&m), Ok(()));
        }

        #[test]
        fn any_change_of_content_is_a_mismatch(
            m in manifest(),
            seed in any::<u64>(),
            edit in 0u8..18,
            pick in any::<usize>(),
        ) {
            let mut changed = relocated(&m, seed);
            prop_assume!(change_content(&mut changed, edit, pick));
            prop_assert!(m.same_content(&changed).is_err(), "edit {} passed", edit);
            prop_assert!(changed.same_content(&m).is_err(), "edit {} passed backwards", edit);
            // The rule is exactly: equal once every shard is put on the same node.
            prop_assert_eq!(
                m.same_content(&changed).is_ok(),
                content_of(&m) == content_of(&changed)
            );
        }
    }

    #[test]
    fn a_content_mismatch_names_what_differs() {
        let m = small_manifest();
        let mut other = relocated(&m, 9);
        other.objects[3].stripes[1].shards[4].hash.0[0] ^= 1;
        let err = m.same_content(&other).expect_err("a shard hash differs");
        let object = ObjectName::new("obj-3").expect("valid");
        let want =
            ContentMismatch::ShardHash { object, stripe: StripeIndex(1), index: ShardIndex(4) };
        assert_eq!(err, want);
        assert_eq!(err.to_string(), "object obj-3 stripe 1 shard 4 has another hash");
        let mut other = m.clone();
        other.objects[2].len += 1;
        let err = m.same_content(&other).expect_err("a length differs");
        assert_eq!(err.to_string(), "object 2 (obj-2) differs in its length");
        other = m.clone();
        other.user_meta.clear();
        assert_eq!(m.same_content(&other), Err(ContentMismatch::Part { field: "user metadata" }));
    }

    #[test]
    fn equal_manifests_have_equal_bytes() {
        let a = small_manifest();
        let mut b = small_manifest();
        b.user_meta.clear();
        b.user_meta.insert("z".into(), "1".into());
        b.user_meta.insert("data_offset".into(), "123456".into());
        b.user_meta.remove("z");
        assert_eq!(a.to_bytes(), b.to_bytes());
    }

    #[test]
    fn the_byte_format_is_pinned() {
        let mut m = small_manifest();
        m.step = Step(42);
        m.prev = Some(Digest([7; 32]));
        for (i, o) in m.objects.iter_mut().enumerate() {
            o.hash = Digest([i as u8; 32]);
            for shard in o.stripes.iter_mut().flat_map(|s| s.shards.iter_mut()) {
                *shard = ShardEntry { node: NodeId(300), hash: Digest([0xab; 32]) };
            }
        }
        assert_eq!(m.id().to_hex(), PINNED_MANIFEST_ID);
    }

    /// Computed once from format version 1; a change means stored manifests no longer read.
    const PINNED_MANIFEST_ID: &str =
        "1baf12a5117144c5272a47dbdc8bbd825a4c163a33d7c7788812a84b5b93f40c";

    #[test]
    fn non_canonical_encodings_are_refused() {
        let b = small_manifest().to_bytes();
        assert_eq!(b[4], 1, "format_version 1 is the byte after the magic");
        let mut overlong = b.clone();
        overlong.splice(4..5, [0x81, 0x00]);
        assert_eq!(Manifest::from_bytes(&overlong), Err(ManifestError::NonCanonical));
        let mut trailing = b.clone();
        trailing.push(0);
        assert_eq!(Manifest::from_bytes(&trailing), Err(ManifestError::NonCanonical));
    }

    /// The error `from_bytes` gives for `small_manifest()` changed by `edit`.
    fn refusal(edit: impl FnOnce(&mut Manifest)) -> ManifestError {
        let mut m = small_manifest();
        edit(&mut m);
        let err = Manifest::from_bytes(&m.to_bytes()).expect_err("the edit makes it invalid");
        assert_eq!(m.validate(), Err(err.clone()), "validate agrees with from_bytes");
        err
    }

    #[test]
    fn out_of_bounds_manifests_get_typed_errors() {
        assert_eq!(Manifest::from_bytes(b"RPM2\x01"), Err(ManifestError::BadMagic));
        assert_eq!(Manifest::from_bytes(b""), Err(ManifestError::BadMagic));
        assert!(matches!(Manifest::from_bytes(b"RPM1"), Err(ManifestError::Malformed(_))));
        assert!(matches!(
            Manifest::from_bytes(b"RPM1\x01\x03job"),
            Err(ManifestError::Malformed(_))
        ));
        let huge = vec![0; MAX_MANIFEST_BYTES as usize + 1];
        assert!(matches!(Manifest::from_bytes(&huge), Err(ManifestError::TooLarge { .. })));
        assert_eq!(
            refusal(|m| m.format_version = 2),
            ManifestError::UnsupportedVersion { got: 2, want: 1 }
        );
        assert_eq!(refusal(|m| m.world_size = 0), ManifestError::BadWorldSize(0));
        assert_eq!(
            refusal(|m| m.world_size = MAX_WORLD_SIZE + 1),
            ManifestError::BadWorldSize(MAX_WORLD_SIZE + 1)
        );
        assert_eq!(
            refusal(|m| m.rank = Rank(4)),
            ManifestError::RankOutOfRange { rank: Rank(4), world_size: 4 }
        );
        assert!(matches!(refusal(|m| m.code.params.k = 0), ManifestError::BadCode(_)));
        assert!(matches!(
            refusal(|m| m.code.codec = "other".into()),
            ManifestError::UnknownCodec { .. }
        ));
        assert!(matches!(
            refusal(|m| m.code.field = "gf(2^16)".into()),
            ManifestError::UnknownCodec { .. }
        ));
        assert_eq!(
            refusal(|m| m.writer = "w".repeat(MAX_WRITER_BYTES + 1)),
            ManifestError::WriterTooLong { len: MAX_WRITER_BYTES + 1 }
        );
        let dup = refusal(|m| m.objects[1].name = m.objects[0].name.clone());
        assert_eq!(dup, ManifestError::DuplicateObject(ObjectName::new("obj-0").expect("valid")));
        assert!(matches!(
            refusal(|m| m.objects[2].len = 257),
            ManifestError::StripeCountMismatch { got: 1, want: 2, .. }
        ));
        assert!(matches!(
            refusal(|m| {
                m.objects[3].stripes.pop();
            }),
            ManifestError::StripeCountMismatch { .. }
        ));
        assert!(matches!(
            refusal(|m| {
                m.objects[3].stripes[2].shards.pop();
            }),
            ManifestError::ShardCountMismatch { stripe: StripeIndex(2), got: 5, want: 6, .. }
        ));
        assert!(matches!(
            refusal(|m| m.objects[0].len = u64::MAX),
            ManifestError::ObjectTooLarge { .. }
        ));
        let too_many_meta = refusal(|m| {
            m.user_meta =
                (0..=MAX_USER_META_ENTRIES).map(|i| (format!("k{i}"), String::new())).collect()
        });
        assert_eq!(
            too_many_meta,
            ManifestError::TooManyUserMeta { count: MAX_USER_META_ENTRIES + 1 }
        );
        assert_eq!(
            refusal(|m| {
                m.user_meta.insert(String::new(), "v".into());
            }),
            ManifestError::BadUserMetaKey { len: 0 }
        );
        let long_key = "k".repeat(MAX_USER_META_KEY_BYTES + 1);
        assert_eq!(
            refusal(|m| {
                m.user_meta.insert(long_key, "v".into());
            }),
            ManifestError::BadUserMetaKey { len: MAX_USER_META_KEY_BYTES + 1 }
        );
        let long_value = "v".repeat(MAX_USER_META_VALUE_BYTES + 1);
        assert_eq!(
            refusal(|m| {
                m.user_meta.insert("k".into(), long_value);
            }),
            ManifestError::UserMetaValueTooLong { len: MAX_USER_META_VALUE_BYTES + 1 }
        );
    }

    #[test]
    fn too_many_objects_are_refused() {
        let mut m = small_manifest();
        m.objects = (0..=MAX_OBJECTS_PER_PART)
            .map(|i| ObjectEntry {
                name: ObjectName::new(format!("o{i}")).expect("valid"),
                len: 0,
                hash: Digest::default(),
                stripes: Vec::new(),
            })
            .collect();
        let count = MAX_OBJECTS_PER_PART + 1;
        assert_eq!(
            Manifest::from_bytes(&m.to_bytes()),
            Err(ManifestError::TooManyObjects { count })
        );
    }

    /// Found by the fuzz harness (`rackpoint-fuzz`, target `manifest`): stripes without
    /// shards cost one byte of input and 24 of memory each, all decoded before validation
    /// refused them. Shard counts are now checked as they are decoded (its regression test
    /// in `fuzz/tests/regressions.rs` measures the memory).
    #[test]
    fn shard_counts_are_checked_as_they_are_decoded() {
        let mut m = small_manifest();
        m.objects[3].stripes[0].shards.clear();
        let err = Manifest::from_bytes(&m.to_bytes()).expect_err("refused");
        assert!(
            matches!(err, ManifestError::Malformed(ref why) if why.contains("0 shards")),
            "{err}"
        );
        assert!(matches!(m.validate(), Err(ManifestError::ShardCountMismatch { got: 0, .. })));
        let too_many = rackpoint_proto::limits::MAX_TOTAL_SHARDS + 1;
        let entry = ShardEntry { node: NodeId(1), hash: Digest::default() };
        m.objects[3].stripes[0].shards = vec![entry; too_many];
        let err = Manifest::from_bytes(&m.to_bytes()).expect_err("refused");
        assert!(
            matches!(err, ManifestError::Malformed(ref why) if why.contains("33 shards")),
            "{err}"
        );
        m.objects[3].stripes = vec![StripeEntry { shards: Vec::new() }; 1 << 20];
        let err = Manifest::from_bytes(&m.to_bytes()).expect_err("refused");
        assert!(matches!(err, ManifestError::Malformed(_)), "{err}");
    }

    #[test]
    fn remaining_redundancy_counts_the_worst_stripe() {
        let mut m = small_manifest();
        assert_eq!(m.total_bytes(), 957);
        for s in m.objects.iter_mut().flat_map(|o| o.stripes.iter_mut()) {
            for (i, shard) in s.shards.iter_mut().enumerate() {
                shard.node = NodeId(i as u32 + 1);
            }
        }
        m.objects[3].stripes[1].shards[0].node = NodeId(5);
        assert_eq!(m.remaining_redundancy(&|_| false), Some(2));
        assert_eq!(m.remaining_redundancy(&|n| n == NodeId(1)), Some(1));
        assert_eq!(
            m.remaining_redundancy(&|n| n == NodeId(5)),
            Some(0),
            "stripe 1 of obj-3 has two shards there"
        );
        assert_eq!(m.remaining_redundancy(&|n| n == NodeId(5) || n == NodeId(6)), None);
        assert_eq!(m.remaining_redundancy(&|n| n.0 <= 2), Some(0));
        m.objects.clear();
        assert_eq!(m.remaining_redundancy(&|_| true), Some(2));
    }

    #[test]
    fn lost_stripe_names_the_first_stripe_beyond_m_and_its_nodes() {
        let mut m = small_manifest();
        for s in m.objects.iter_mut().flat_map(|o| o.stripes.iter_mut()) {
            for (i, shard) in s.shards.iter_mut().enumerate() {
                shard.node = NodeId(i as u32 + 1);
            }
        }
        m.objects[3].stripes[1].shards[0].node = NodeId(5);
        assert_eq!(m.lost_stripe(&|n| n == NodeId(5)), None, "two shards lost: m = 2 holds");
        let lost = m.lost_stripe(&|n| n == NodeId(5) || n == NodeId(6)).expect("a lost stripe");
        assert_eq!(lost.object.as_str(), "obj-3");
        assert_eq!(lost.stripe, StripeIndex(1));
        assert_eq!((lost.nodes, lost.lost, lost.m), (vec![NodeId(5), NodeId(6)], 3, 2));
        let lost = m.lost_stripe(&|n| n.0 <= 3).expect("every stripe is lost");
        assert_eq!((lost.object.as_str(), lost.stripe), ("obj-1", StripeIndex(0)), "the first");
        assert!(lost.to_string().contains("obj-1 stripe 0 lost 3 shards"), "{lost}");
    }

    #[test]
    fn a_writer_commits_only_what_readers_accept() {
        let m = small_manifest();
        assert_eq!(m.to_checked_bytes(), Ok(m.to_bytes()));
        let mut long_writer = m.clone();
        long_writer.writer = format!("rackpoint-client/0.1.0 {} pid 1", "h".repeat(300));
        let refused = long_writer.to_checked_bytes().expect_err("refused before commit");
        assert_eq!(Manifest::from_bytes(&long_writer.to_bytes()), Err(refused.clone()));
        assert!(matches!(refused, ManifestError::WriterTooLong { .. }));
    }

    /// A clean chain of `n` manifests of one rank, steps 10, 20, ...
    fn chain(n: u64) -> Vec<Manifest> {
        let mut out: Vec<Manifest> = Vec::new();
        for i in 1..=n {
            let mut m = small_manifest();
            m.step = Step(10 * i);
            m.prev = out.last().map(Manifest::id).or(Some(Digest([7; 32])));
            out.push(m);
        }
        out
    }

    #[test]
    fn a_clean_chain_in_any_order_has_no_problems() {
        let mut c = chain(5);
        assert_eq!(verify_chain(&c), vec![]);
        c.reverse();
        c.swap(1, 3);
        assert_eq!(verify_chain(&c), vec![]);
        let mut replicated = c.clone();
        replicated.extend(c.iter().cloned());
        assert_eq!(verify_chain(&replicated), vec![], "replicas of one manifest count once");
        assert_eq!(verify_chain(&[]), vec![]);
        assert_eq!(verify_chain(&c[..1]), vec![]);
    }

    #[test]
    fn a_missing_manifest_is_a_gap() {
        let mut c = chain(5);
        c.remove(2);
        assert_eq!(
            verify_chain(&c),
            vec![ChainProblem::Gap { step: Step(40), prev_step: Step(20) }]
        );
        let gc_d = &chain(5)[2..];
        assert_eq!(verify_chain(gc_d), vec![], "older manifests may be gone");
    }

    #[test]
    fn a_link_to_the_wrong_manifest_is_a_reorder() {
        let mut c = chain(4);
        c[3].prev = Some(c[1].id());
        assert_eq!(
            verify_chain(&c),
            vec![ChainProblem::Reorder { step: Step(40), points_to: Step(20) }]
        );
        let mut c = chain(4);
        c[0].prev = Some(c[2].id());
        let problems = verify_chain(&c);
        assert_eq!(problems[0], ChainProblem::Reorder { step: Step(10), points_to: Step(30) });
    }

    #[test]
    fn a_rewritten_manifest_is_tampered_and_its_successor_is_not_blamed() {
        let c = chain(3);
        let mut listed: Vec<(Digest, Manifest)> = c.iter().map(|m| (m.id(), m.clone())).collect();
        assert_eq!(verify_chain_with_ids(&listed), vec![]);
        let original = listed[1].1.id();
        listed[1].1.user_meta.insert("data_offset".into(), "0".into());
        let actual = listed[1].1.id();
        assert_eq!(
            verify_chain_with_ids(&listed),
            vec![ChainProblem::Tampered { step: Step(20), claimed: original, actual }]
        );
        listed[1].0 = actual;
        assert_eq!(
            verify_chain_with_ids(&listed),
            vec![ChainProblem::Gap { step: Step(30), prev_step: Step(20) }],
            "a rewrite whose listed id was updated too still breaks the next link"
        );
    }

    #[test]
    fn restarts_forks_and_strangers_are_reported() {
        let mut c = chain(3);
        c[2].prev = None;
        assert_eq!(
            verify_chain(&c),
            vec![ChainProblem::Unlinked { step: Step(30), prev_step: Step(20) }]
        );

        let mut c = chain(3);
        let mut second_writer = c[1].clone();
        second_writer.writer = "another host".into();
        c.push(second_writer);
        assert_eq!(verify_chain(&c), vec![ChainProblem::DuplicateStep { step: Step(20) }]);

        let mut c = chain(3);
        let mut other_rank = c[1].clone();
        other_rank.rank = Rank(2);
        other_rank.step = Step(25);
        c.push(other_rank);
        assert_eq!(
            verify_chain(&c),
            vec![ChainProblem::Foreign { step: Step(25), job: c[0].job.clone(), rank: Rank(2) }]
        );
    }

    #[test]
    fn completeness_needs_every_rank_of_the_world() {
        assert!(is_complete(3, [Rank(2), Rank(0), Rank(1)]));
        assert!(is_complete(3, [Rank(2), Rank(0), Rank(1), Rank(0)]), "replicas repeat ranks");
        assert!(!is_complete(3, [Rank(0), Rank(1)]));
        assert!(
            !is_complete(3, [Rank(0), Rank(1), Rank(2), Rank(3)]),
            "a rank outside the world disagrees"
        );
        assert!(!is_complete(0, []));
        assert!(is_complete(1, [Rank(0)]));
        assert!(!is_complete(MAX_WORLD_SIZE + 1, (0..=MAX_WORLD_SIZE).map(Rank)));
    }
}
