//! The manifest parser: `Manifest::from_bytes` on hostile bytes, and `validate` (through
//! `to_checked_bytes`) on hostile manifests. Properties: accepted bytes are the canonical
//! encoding of what they decode to, valid, and hash to the manifest's id; and the writer's
//! rules are the reader's (whatever a raw decode of the bytes gives, `to_checked_bytes`
//! accepts it exactly when `from_bytes` accepts its encoding, and gives it back unchanged).
//! Mutations work on bytes, or on the decoded manifest (counts, lengths, names, code,
//! metadata) which is then encoded again.

use std::collections::BTreeMap;

use rackpoint_core::codec::ObjectLayout;
use rackpoint_core::manifest::{
    is_complete, verify_chain, Manifest, ManifestError, ShardEntry, StripeEntry, MANIFEST_MAGIC,
};
use rackpoint_proto::limits::{MAX_JOB_NAME_BYTES, MAX_OBJECT_NAME_BYTES};
use rackpoint_proto::{Digest, JobName, NodeId, ObjectName, Rank, Step};

use crate::mutate::Mutator;
use crate::runner::{Signature, Target};

/// Manifest bytes.
#[derive(Debug, Default)]
pub struct ManifestTarget {
    accepted: u64,
    decodable: u64,
}

fn error_kind(e: &ManifestError) -> String {
    match e {
        ManifestError::Malformed(why) => {
            why.chars().filter(|c| !c.is_ascii_digit()).take(80).collect()
        }
        other => format!("{other:?}").chars().take_while(|c| c.is_alphanumeric()).collect(),
    }
}

/// What a manifest that was accepted must satisfy (and some use of it).
fn check_accepted(m: &Manifest, input: &[u8]) -> Result<(), String> {
    if m.to_bytes() != input {
        return Err("from_bytes accepted bytes that are not the canonical encoding".into());
    }
    m.validate().map_err(|e| format!("from_bytes accepted a manifest validate refuses: {e}"))?;
    match m.to_checked_bytes() {
        Ok(b) if b == input => {}
        Ok(_) => return Err("to_checked_bytes differs from the bytes read".into()),
        Err(e) => return Err(format!("from_bytes accepted what to_checked_bytes refuses: {e}")),
    }
    if m.id() != Digest::of(input) {
        return Err("the id is not the blake3 of the bytes".into());
    }
    // What readers do with an accepted manifest must not panic either.
    let _ = m.total_bytes();
    let _ = m.lost_stripe(&|n: NodeId| n.0.is_multiple_of(3));
    let _ = m.remaining_redundancy(&|n: NodeId| n.0 % 2 == 1);
    let _ = verify_chain(&[m.clone(), m.clone()]);
    let _ = is_complete(m.world_size, [m.rank]);
    for o in &m.objects {
        let layout = ObjectLayout::new(m.code.params, o.len);
        for s in 0..layout.stripe_count().min(4) {
            let _ = layout.shard_len(rackpoint_proto::StripeIndex(s));
        }
    }
    Ok(())
}

/// The writer's rules are the reader's, for any manifest a raw decode can produce.
fn check_writer_is_reader(m: &Manifest) -> Result<(), String> {
    match (m.to_checked_bytes(), Manifest::from_bytes(&m.to_bytes())) {
        (Ok(_), Ok(back)) if back == *m => Ok(()),
        (Ok(_), Ok(_)) => Err("a manifest read back differs from the one written".into()),
        (Ok(_), Err(e)) => Err(format!("the writer accepts a manifest the reader refuses: {e}")),
        (Err(e), Ok(_)) => Err(format!("the reader accepts a manifest the writer refuses: {e}")),
        (Err(_), Err(_)) => Ok(()),
    }
}

/// The body decoded without any check (as a lenient reader would).
fn raw_decode(input: &[u8]) -> Option<Manifest> {
    let body = input.strip_prefix(&MANIFEST_MAGIC)?;
    postcard::take_from_bytes::<Manifest>(body).ok().map(|(m, _)| m)
}

impl Target for ManifestTarget {
    fn name(&self) -> &'static str {
        "manifest"
    }

    fn run(&mut self, input: &[u8]) -> Result<Signature, String> {
        let mut sig = Signature::default();
        match Manifest::from_bytes(input) {
            Ok(m) => {
                sig.add(("ok", m.objects.len().min(4), m.user_meta.len().min(2)));
                check_accepted(&m, input)?;
                self.accepted += 1;
            }
            Err(e) => sig.add(error_kind(&e)),
        }
        if let Some(raw) = raw_decode(input) {
            sig.add("raw");
            self.decodable += 1;
            // Which rule a decodable manifest breaks, as a feature of its own.
            sig.feature(raw.validate().err().map(|e| error_kind(&e)));
            check_writer_is_reader(&raw)?;
        }
        Ok(sig)
    }

    fn mutate(&mut self, mu: &mut Mutator, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
        match raw_decode(input) {
            Some(mut m) if !mu.rng.one_in(3) => {
                let rounds = 1 + mu.rng.below(3);
                for _ in 0..rounds {
                    mutate_manifest(&mut m, mu, pool);
                }
                *input = m.to_bytes();
                if mu.rng.one_in(4) {
                    mu.bytes(input, pool);
                }
            }
            _ => {
                mu.bytes(input, pool);
                // Mostly keep the magic, so that the decoder gets past it.
                if !mu.rng.one_in(4) && input.len() >= 4 {
                    input[..4].copy_from_slice(&MANIFEST_MAGIC);
                }
            }
        }
        input.truncate(mu.max_len);
    }

    fn default_max_len(&self) -> usize {
        1 << 20
    }

    fn depth(&self) -> String {
        format!(
            "accepted by from_bytes: {}; decodable, then judged by validate: {}",
            self.accepted, self.decodable
        )
    }
}

fn any_u8(mu: &mut Mutator) -> u8 {
    *mu.rng.pick(&[0, 1, 2, 3, 16, 31, 32, 33, 127, 128, 255])
}

fn name(mu: &mut Mutator, max: usize) -> String {
    let len = match mu.rng.below(4) {
        0 => max,
        1 => max + 1,
        _ => mu.rng.log_len(max),
    };
    let c = *mu.rng.pick(&['a', 'Z', '9', '.', '-', 'é', '/', '\0']);
    std::iter::repeat_n(c, len).collect()
}

/// One change to a decoded manifest, kept within `mu.max_len` encoded bytes where it adds.
fn mutate_manifest(m: &mut Manifest, mu: &mut Mutator, pool: &[Vec<u8>]) {
    let room = mu.max_len.saturating_sub(m.to_bytes().len());
    let n_obj = m.objects.len();
    match mu.rng.below(16) {
        0 => m.format_version = mu.interesting(1) as u16,
        1 => m.world_size = mu.interesting(u64::from(m.world_size)) as u32,
        2 => m.rank = Rank(mu.interesting(u64::from(m.rank.0)) as u32),
        3 => m.writer = name(mu, 256),
        4 => {
            let p = &mut m.code.params;
            match mu.rng.below(3) {
                0 => p.k = any_u8(mu),
                1 => p.m = any_u8(mu),
                _ => p.shard_size_bytes = mu.interesting(u64::from(p.shard_size_bytes)) as u32,
            }
        }
        5 => {
            let s = name(mu, 16);
            match mu.rng.below(3) {
                0 => m.code.codec = s,
                1 => m.code.field = s,
                _ => m.code.matrix = s,
            }
        }
        6 if n_obj > 0 => {
            // An object twice, or one gone, or two swapped.
            let i = mu.rng.below(n_obj);
            match mu.rng.below(3) {
                0 => {
                    let o = m.objects[i].clone();
                    m.objects.insert(mu.rng.below(n_obj + 1), o);
                }
                1 => {
                    m.objects.remove(i);
                }
                _ => m.objects.swap(i, mu.rng.below(n_obj)),
            }
        }
        7 if n_obj > 0 => {
            let i = mu.rng.below(n_obj);
            let stripe = m.code.params.stripe_bytes();
            let max = ObjectLayout::max_len(m.code.params);
            let len = m.objects[i].len;
            m.objects[i].len = match mu.rng.below(5) {
                0 => len.wrapping_add(stripe),
                1 => len.saturating_sub(1),
                2 => max.wrapping_add(mu.rng.below(3) as u64).wrapping_sub(1),
                _ => mu.interesting(len),
            };
        }
        8 if n_obj > 0 => {
            // Many stripes: one stripe copied, or stripes without shards.
            let o = &mut m.objects[mu.rng.below(n_obj)];
            let empty = mu.rng.one_in(2);
            let model = match o.stripes.first() {
                Some(s) if !empty => s.clone(),
                _ => StripeEntry { shards: Vec::new() },
            };
            let each = 1 + 34 * model.shards.len();
            let n = mu.rng.log_len((room / each).max(1));
            o.stripes.extend(std::iter::repeat_n(model, n));
        }
        9 if n_obj > 0 => {
            let o = &mut m.objects[mu.rng.below(n_obj)];
            if let Some(s) = o.stripes.first_mut() {
                match mu.rng.below(3) {
                    0 => s.shards.clear(),
                    1 => {
                        s.shards.pop();
                    }
                    _ => {
                        let n = mu.rng.log_len((room / 34).max(1));
                        let e = ShardEntry {
                            node: NodeId(mu.rng.below(10) as u32),
                            hash: Digest::default(),
                        };
                        s.shards.extend(std::iter::repeat_n(e, n));
                    }
                }
            }
        }
        10 => {
            // Metadata: many entries, a long key or value, an empty key.
            match mu.rng.below(4) {
                0 => {
                    let n = mu.rng.log_len((room / 8).max(1));
                    let base = m.user_meta.len();
                    m.user_meta.extend((base..base + n).map(|i| (format!("{i:x}"), String::new())));
                }
                1 => {
                    m.user_meta.insert(name(mu, 128), "v".into());
                }
                2 => {
                    m.user_meta.insert("k".into(), name(mu, 4096));
                }
                _ => {
                    m.user_meta.insert(String::new(), String::new());
                }
            }
        }
        11 => m.prev = if m.prev.is_some() { None } else { Some(Digest([7; 32])) },
        12 if n_obj > 0 => {
            let i = mu.rng.below(n_obj);
            let other = m.objects[mu.rng.below(n_obj)].name.clone();
            m.objects[i].name = if mu.rng.one_in(2) {
                other
            } else {
                ObjectName::new(name(mu, MAX_OBJECT_NAME_BYTES)).unwrap_or(other)
            };
        }
        13 => {
            if let Ok(j) = JobName::new(name(mu, MAX_JOB_NAME_BYTES)) {
                m.job = j;
            }
        }
        14 => m.step = Step(mu.interesting(m.step.0)),
        _ => {
            // Objects of another manifest of the pool.
            let other = if pool.is_empty() {
                None
            } else {
                let bytes: &Vec<u8> = mu.rng.pick(pool);
                raw_decode(bytes)
            };
            if let Some(other) = other {
                m.objects.extend(other.objects.into_iter().take(4));
            } else {
                m.user_meta = BTreeMap::new();
            }
        }
    }
}
