//! `rackpoint demo`: the main job on an embedded default. Starts a 6-node, 3-rack cluster of
//! real `rackpoint-store` processes on loopback, saves a seeded checkpoint (k = 4, m = 2),
//! kills two nodes in different racks with SIGKILL, restores, and checks every byte.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use rackpoint_client::cluster_dir::{self, InitOptions};
use rackpoint_client::local_cluster::{find_store_binary, seeded_bytes, LocalCluster};
use rackpoint_client::restore::Which;
use rackpoint_client::save::{ObjectData, ObjectSource, SaveRequest};
use rackpoint_client::{Client, ClientOptions};
use rackpoint_proto::access::{Access, Grant, JobPattern};
use rackpoint_proto::{JobName, NodeId, ObjectName, Rank, Step};

/// Options of `rackpoint demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Checkpoint size in MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: u64,
    /// Folder for the cluster (default: a temp dir removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of the checkpoint's bytes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-9)
}

/// Runs the demo; returns an error (and a non-zero exit) if any byte differs.
pub async fn run(args: DemoArgs, json: bool) -> anyhow::Result<()> {
    // With --json the lines below go to stderr and one document to stdout at the end.
    macro_rules! say {
        ($($arg:tt)*) => {
            if json { eprintln!($($arg)*) } else { println!($($arg)*) }
        };
    }
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a temp dir")?;
            tmp.path().to_path_buf()
        }
    };
    let mut opts = InitOptions::new(6);
    opts.racks = 3;
    let bin = find_store_binary()?;
    let mut cluster = LocalCluster::start(&dir, &opts, &bin)?;
    eprintln!("started 6 rackpoint-store processes in 3 racks under {} (k=4, m=2)", dir.display());
    // The training job gets its own identity: write access to its job only, as
    // `rackpoint cluster cert` issues it; the operator's admin identity stays unused.
    let grant = Grant::new(Access::Write, vec![JobPattern::parse("demo-job")?])?;
    let (identity, issued) =
        cluster_dir::issue_client(&dir, "demo-trainer", &grant, 1, &dir.join("identities"))?;
    eprintln!("issued identity \"demo-trainer\" ({grant}, serial {})", issued.serial);
    let client =
        Client::connect_as(&cluster.cluster_file(), Some(&identity), ClientOptions::default())?;

    let total = args.size_mib * 1024 * 1024;
    let parts = [
        ("model.safetensors", total / 2 + 12_345),
        ("optimizer.bin", total / 2 - 12_345 - 7),
        ("rng.bin", 7),
    ];
    let objects: Vec<(ObjectName, Bytes)> = parts
        .iter()
        .enumerate()
        .map(|(i, (name, len))| {
            Ok((
                ObjectName::new(*name)?,
                Bytes::from(seeded_bytes(args.seed + i as u64, *len as usize)),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let job = JobName::new("demo-job")?;
    let request = SaveRequest {
        job: job.clone(),
        step: Step(1000),
        rank: Rank(0),
        world_size: 1,
        objects: objects
            .iter()
            .map(|(n, b)| ObjectData { name: n.clone(), source: ObjectSource::Memory(b.clone()) })
            .collect(),
        user_meta: [("data_offset".to_string(), "1000000".to_string())].into(),
    };
    let saved = client.save(request).await.context("save")?;
    say!(
        "saved    {} MiB in {:.2} s ({:.0} MiB/s), {} shards, manifest {} on nodes {:?}",
        saved.bytes >> 20,
        saved.elapsed.as_secs_f64(),
        mib_per_s(saved.bytes, saved.elapsed.as_secs_f64()),
        saved.shards,
        &saved.manifest_id.to_hex()[..16],
        saved.manifest_nodes.iter().map(|n| n.0).collect::<Vec<_>>()
    );

    let (healthy, _) =
        client.restore(&job, Which::Latest, Rank(0)).await.context("healthy restore")?;
    say!(
        "restored {} MiB in {:.2} s ({:.0} MiB/s) with every node up, {} stripes decoded",
        healthy.bytes >> 20,
        healthy.elapsed.as_secs_f64(),
        mib_per_s(healthy.bytes, healthy.elapsed.as_secs_f64()),
        healthy.degraded_stripes
    );

    let victims = [NodeId(1), NodeId(2)];
    for v in victims {
        cluster.kill(v)?;
    }
    say!(
        "killed nodes {} and {} (racks {} and {}) with SIGKILL",
        victims[0],
        victims[1],
        rack_of(&cluster, victims[0]),
        rack_of(&cluster, victims[1])
    );

    let started = Instant::now();
    let (degraded, restored) = client
        .restore(&job, Which::Latest, Rank(0))
        .await
        .context("restore with 2 nodes killed")?;
    let secs = started.elapsed().as_secs_f64();
    say!("restored {} MiB in {:.2} s ({:.0} MiB/s) with 2 nodes dead, {} stripes rebuilt from parity",
        degraded.bytes >> 20, secs, mib_per_s(degraded.bytes, secs), degraded.degraded_stripes);
    for ((name, original), got) in objects.iter().zip(&restored) {
        if got.name != *name || got.bytes.as_slice() != original.as_ref() {
            bail!("object {name} differs after restore");
        }
        say!(
            "verified {name}: {} bytes identical (blake3 {})",
            original.len(),
            &blake3::hash(original).to_hex()[..16]
        );
    }
    let report = client.verify(&job, Step(1000)).await.context("verify")?;
    say!(
        "verify   {} shards good, {} unreachable, the checkpoint survives {} more node failure(s)",
        report.shards_ok,
        report.bad_shards.len(),
        report.survives_more_failures.map_or("no".into(), |n| n.to_string())
    );
    say!("demo passed: every byte restored with 2 of 6 nodes killed");
    if json {
        crate::json::print(&crate::json_ops::DemoDoc {
            command: "demo",
            ok: true,
            bytes: saved.bytes,
            save_s: saved.elapsed.as_secs_f64(),
            restore_s: healthy.elapsed.as_secs_f64(),
            killed_nodes: victims.iter().map(|n| n.0).collect(),
            degraded_restore_s: secs,
            degraded_stripes: degraded.degraded_stripes,
            identical: true,
            survives_more_failures: report.survives_more_failures,
        });
    }
    Ok(())
}

fn rack_of(cluster: &LocalCluster, id: NodeId) -> String {
    cluster.map().node(id).map_or_else(|| "?".into(), |n| n.rack.clone())
}
