//! `rackpoint-fuzz corpus`: makes the seed corpus. Manifests come from real saves by the
//! client on a local cluster (code 4 + 2, 64-byte shards, so they stay small): objects of
//! several sizes and an empty one, user metadata, a chain of steps, two ranks, and a save
//! with a node down (shards moved). Request frames of every kind use those saves' names and
//! manifests (and the cluster's map, signed by a CA made here); response frames of every kind are the replies of a real handler serving them;
//! the handler's seeds are request sequences (every kind in turn, one stripe, manifests,
//! orphans).

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rackpoint_client::certs::ClusterCa;
use rackpoint_client::cluster_dir::InitOptions;
use rackpoint_client::local_cluster::{find_store_binary, seeded_bytes, LocalCluster};
use rackpoint_client::manifest::{Manifest, Which};
use rackpoint_client::save::{ObjectData, ObjectSource, SaveRequest};
use rackpoint_client::Client;
use rackpoint_fuzz::targets::handler::call_handler;
use rackpoint_proto::wire::encode_frame;
use rackpoint_proto::{
    Digest, JobName, ManifestKey, NodeId, ObjectName, Rank, Request, Response, ShardIndex,
    ShardKey, Step, StripeIndex,
};
use rackpoint_store::handler::{Handler, InflightBudget, MapKeeper, NodeIdentity};
use rackpoint_store::{Engine, EngineOptions};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// One part to save: step, rank, world size, objects (name, length), metadata.
struct Part {
    name: &'static str,
    step: u64,
    rank: u32,
    world_size: u32,
    objects: &'static [(&'static str, usize)],
    meta: &'static [(&'static str, &'static str)],
}

const PARTS: [Part; 4] = [
    Part {
        name: "two-objects-one-empty",
        step: 100,
        rank: 0,
        world_size: 1,
        objects: &[("model.weights", 700), ("optim.state", 0)],
        meta: &[("data_offset", "12345")],
    },
    Part {
        name: "chained-next-step",
        step: 200,
        rank: 0,
        world_size: 1,
        objects: &[("model.weights", 1000)],
        meta: &[],
    },
    Part {
        name: "rank-1-of-2",
        step: 300,
        rank: 1,
        world_size: 2,
        objects: &[("layer.0", 1), ("layer.1", 255), ("layer.2", 257), ("rng.bin", 7)],
        meta: &[("epoch", "3"), ("loader", "offset=991;shuffle=7"), ("note", "é ✓")],
    },
    Part {
        name: "degraded-node-down",
        step: 400,
        rank: 0,
        world_size: 1,
        objects: &[("model.weights", 2048)],
        meta: &[],
    },
];

fn job() -> JobName {
    JobName::new("fuzz-job").expect("valid")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)?;
    Ok(())
}

/// Saves the parts on a local cluster and returns their manifests (name, manifest).
async fn saved_manifests(cluster: &mut LocalCluster) -> Result<Vec<(&'static str, Manifest)>> {
    let client = Client::connect(&cluster.cluster_file())?;
    let mut out = Vec::new();
    for (i, part) in PARTS.iter().enumerate() {
        if part.name == "degraded-node-down" {
            cluster.kill(NodeId(6))?;
        }
        let objects = part
            .objects
            .iter()
            .enumerate()
            .map(|(j, (name, len))| ObjectData {
                name: ObjectName::new(*name).expect("valid"),
                source: ObjectSource::Memory(Bytes::from(seeded_bytes((i * 16 + j) as u64, *len))),
            })
            .collect();
        let user_meta: BTreeMap<String, String> =
            part.meta.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let req = SaveRequest {
            job: job(),
            step: Step(part.step),
            rank: Rank(part.rank),
            world_size: part.world_size,
            objects,
            user_meta,
        };
        client.save(req).await?;
        let m = client.manifest(&job(), Which::Step(Step(part.step)), Rank(part.rank)).await?;
        out.push((part.name, m));
    }
    Ok(out)
}

fn frame(request: &Request, payload: &[u8]) -> Vec<u8> {
    let mut f = encode_frame(request, payload.len() as u32).expect("a request encodes");
    f.extend_from_slice(payload);
    f
}

/// A shard key and a 64-byte payload with its hash, for shard `index` of `m`'s first stripe.
fn shard(m: &Manifest, index: u8) -> (ShardKey, Vec<u8>, Digest) {
    let object = m.objects.first().expect("an object").name.clone();
    let key = ShardKey {
        job: m.job.clone(),
        step: m.step,
        rank: m.rank,
        object,
        stripe: StripeIndex(0),
        index: ShardIndex(index),
    };
    let bytes = seeded_bytes(u64::from(index) + 1000, 64);
    let hash = Digest::of(&bytes);
    (key, bytes, hash)
}

fn part_key(m: &Manifest) -> ManifestKey {
    ManifestKey { job: m.job.clone(), step: m.step, rank: m.rank }
}

/// Every request kind once, in an order where each finds what it needs (tag order is the
/// order of `Request::KINDS`; the session's order differs).
fn all_kinds(m: &Manifest, bytes: &[u8], signed_map: &[u8]) -> Vec<(Request, Vec<u8>)> {
    let (k0, b0, h0) = shard(m, 0);
    let (k1, b1, h1) = shard(m, 1);
    let key = part_key(m);
    let hash = Digest::of(bytes);
    vec![
        (Request::Hello, vec![]),
        (Request::PutShard { key: k0.clone(), hash: h0 }, b0),
        (Request::PutShard { key: k1.clone(), hash: h1 }, b1),
        (Request::GetShard { key: k0.clone() }, vec![]),
        (Request::VerifyShard { key: k0.clone() }, vec![]),
        (Request::PutManifest { key: key.clone(), world_size: m.world_size, hash }, bytes.to_vec()),
        (Request::GetManifest { key: key.clone() }, vec![]),
        (Request::ListManifests { job: m.job.clone(), after: None, limit: 100 }, vec![]),
        (
            Request::ReplaceManifest {
                key: key.clone(),
                world_size: m.world_size,
                hash,
                revision: 1,
                base: hash,
            },
            bytes.to_vec(),
        ),
        (Request::ListParts { job: m.job.clone(), after: None, limit: 100 }, vec![]),
        (Request::Stats, vec![]),
        (Request::ListJobs { after: None, limit: 100 }, vec![]),
        (Request::PutClusterMap { epoch: 0 }, signed_map.to_vec()),
        (Request::GetClusterMap, vec![]),
        (Request::DeleteShard { key: k1, hash: h1 }, vec![]),
        (Request::DeleteManifest { key: key.clone(), hash: Some(hash) }, vec![]),
        (Request::DeleteOrphanShards { key, min_age_ms: 0 }, vec![]),
        (Request::MarkDeleting { job: m.job.clone(), step: m.step }, vec![]),
        (Request::DeleteCheckpoint { job: m.job.clone(), step: m.step }, vec![]),
        (Request::ClearDeleting { job: m.job.clone(), step: m.step }, vec![]),
        (Request::GetShard { key: k0 }, vec![]),
    ]
}

fn kebab(kind: &str) -> String {
    let mut out = String::new();
    for (i, c) in kind.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Serves `session` on a fresh in-process handler (taking maps `ca` signed) and returns the
/// reply frames.
fn replies(session: &[(Request, Vec<u8>)], ca: &ClusterCa) -> Result<Vec<(Response, Vec<u8>)>> {
    let dir = tempfile::tempdir()?;
    let engine = Arc::new(Engine::open(dir.path(), EngineOptions::default())?);
    let identity = NodeIdentity { node_id: NodeId(1), rack: "rack-a".into() };
    let maps = Arc::new(MapKeeper::open(&engine, vec![ca.cert_der()?])?);
    let handler = Handler::new(engine, Arc::default(), identity, InflightBudget::default())
        .with_cluster_maps(maps);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut out = Vec::new();
    for (request, payload) in session {
        let reply = runtime.block_on(call_handler(
            &handler,
            request.clone(),
            Bytes::copy_from_slice(payload),
        ));
        let mut f = encode_frame(&reply.response, reply.payload.len() as u32)?;
        f.extend_from_slice(&reply.payload);
        out.push((reply.response, f));
    }
    Ok(out)
}

/// Writes the corpus into `out` (`frame/`, `manifest/`, `handler/`).
pub fn corpus(out: &Path) -> Result<()> {
    let bin = find_store_binary()?;
    let dir = tempfile::tempdir()?;
    let opts = InitOptions { k: 4, m: 2, shard_size_bytes: 64, ..InitOptions::new(6) };
    let mut cluster = LocalCluster::start(dir.path(), &opts, &bin)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let manifests = runtime.block_on(saved_manifests(&mut cluster));
    let map_layout = cluster.map().layout();
    cluster.terminate_all()?;
    let manifests = manifests?;

    for (name, m) in &manifests {
        write(&out.join("manifest"), &format!("{name}.bin"), &m.to_bytes())?;
    }
    let (_, first) = &manifests[0];
    let first_bytes = first.to_bytes();
    let ca = ClusterCa::generate()?;
    let signed_map = ca.sign_layout(&map_layout)?;
    let session = all_kinds(first, &first_bytes, &signed_map);

    // One frame per request kind, in tag order.
    for (i, kind) in Request::KINDS.iter().enumerate() {
        let (request, payload) = session
            .iter()
            .find(|(r, _)| rackpoint_proto::wire::Message::kind(r) == *kind)
            .expect("the session has every kind");
        write(
            &out.join("frame"),
            &format!("request-{i:02}-{}.bin", kebab(kind)),
            &frame(request, payload),
        )?;
    }
    // One frame per response kind: the first reply of each kind to the session.
    let mut seen = Vec::new();
    for (response, f) in replies(&session, &ca)? {
        let kind = rackpoint_proto::wire::Message::kind(&response);
        if !seen.contains(&kind) {
            seen.push(kind);
            write(&out.join("frame"), &format!("response-{}.bin", kebab(kind)), &f)?;
        }
    }

    // Request sequences for the handler.
    let join = |reqs: &[(Request, Vec<u8>)]| -> Vec<u8> {
        reqs.iter().flat_map(|(r, p)| frame(r, p)).collect()
    };
    write(&out.join("handler"), "session-every-kind.bin", &join(&session))?;
    let (_, other) = &manifests[2];
    let stripe: Vec<(Request, Vec<u8>)> = (0..6)
        .map(|i| shard(other, i))
        .flat_map(|(key, bytes, hash)| {
            [
                (Request::PutShard { key: key.clone(), hash }, bytes),
                (Request::VerifyShard { key: key.clone() }, vec![]),
                (Request::GetShard { key }, vec![]),
            ]
        })
        .chain([(Request::ListParts { job: job(), after: None, limit: 2 }, vec![])])
        .collect();
    write(&out.join("handler"), "one-stripe.bin", &join(&stripe))?;
    let mut puts: Vec<(Request, Vec<u8>)> = manifests
        .iter()
        .map(|(_, m)| {
            let b = m.to_bytes();
            let r = Request::PutManifest {
                key: part_key(m),
                world_size: m.world_size,
                hash: Digest::of(&b),
            };
            (r, b)
        })
        .collect();
    let (_, last) = &manifests[3];
    let after = Some((first.step, first.rank));
    puts.extend([
        (Request::ListManifests { job: job(), after, limit: 2 }, vec![]),
        (Request::DeleteManifest { key: part_key(last), hash: None }, vec![]),
        (Request::GetManifest { key: part_key(last) }, vec![]),
        (Request::ListManifests { job: job(), after: None, limit: 1 }, vec![]),
    ]);
    write(&out.join("handler"), "manifests.bin", &join(&puts))?;
    let orphans: Vec<(Request, Vec<u8>)> = (0..3)
        .map(|i| shard(last, i))
        .map(|(key, bytes, hash)| (Request::PutShard { key, hash }, bytes))
        .chain([
            (Request::ListParts { job: job(), after: None, limit: 10 }, vec![]),
            (Request::DeleteOrphanShards { key: part_key(last), min_age_ms: 0 }, vec![]),
            (Request::Stats, vec![]),
        ])
        .collect();
    write(&out.join("handler"), "orphans.bin", &join(&orphans))?;
    Ok(())
}
