//! The `scrub` scenario: what the nodes' background scrubber costs at each byte rate, so the
//! default rate can be chosen from a measurement. One checkpoint is saved on a 6-node
//! cluster with the scrubber off; then, per rate, every node is restarted with that rate (and
//! no start delay), the page cache is dropped, and the nodes are watched for a fixed window:
//! the bytes they re-hashed (from `Stats`) against the CPU they used (from /proc).

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context};
use rackpoint_benches::proc_stats::{children_named, own_pid};
use rackpoint_benches::{median, Table};
use rackpoint_client::local_cluster::LocalCluster;
use rackpoint_client::Client;
use rackpoint_proto::{JobName, NodeId, NodeStats};

use crate::cost::Meter;
use crate::{note_cache_drop, save_request, two_objects, Env, MIB, STORE_COMM};

/// Scrub rates measured, MiB/s per node (the last is high enough that the tranquilizer,
/// not the byte rate, bounds the scrubber).
const RATES_MIB: [u64; 4] = [16, 64, 256, 4096];
/// How long the nodes are watched at each rate.
const WINDOW: Duration = Duration::from_secs(8);
/// Node size for the "full pass" column: a 4 TiB node.
const NODE_BYTES: f64 = 4.0 * (1u64 << 40) as f64;

/// Restarts every node of `cluster` with the scrubber at `bytes_per_sec` (0: off).
pub fn restart_with_scrub_rate(
    cluster: &mut LocalCluster,
    bytes_per_sec: u64,
) -> anyhow::Result<()> {
    let ids: Vec<NodeId> = cluster.map().nodes.iter().map(|n| n.id).collect();
    for id in ids {
        cluster.terminate(id)?;
        cluster.edit_node_config(id, |c| {
            c.scrub_bytes_per_sec = bytes_per_sec;
            c.scrub_start_jitter_ms = 0;
        })?;
        cluster.restart(id)?;
    }
    Ok(())
}

/// Bytes scrubbed so far over all nodes: shards re-hashed times each node's mean shard size.
fn scrubbed_bytes(stats: &[NodeStats]) -> f64 {
    stats
        .iter()
        .map(|s| {
            let mean = if s.shards == 0 { 0.0 } else { s.shard_bytes as f64 / s.shards as f64 };
            s.scrubbed_shards as f64 * mean
        })
        .sum()
}

fn stats(env: &Env, cluster_file: &Path) -> anyhow::Result<Vec<NodeStats>> {
    let _guard = env.rt.enter();
    let client = Client::connect(cluster_file)?;
    let all = env.rt.block_on(client.status());
    let stats: Vec<NodeStats> = all.into_iter().filter_map(|s| s.stats.ok()).collect();
    ensure!(stats.len() == 6, "{} of 6 nodes answered Stats", stats.len());
    Ok(stats)
}

pub fn run(env: &Env) -> anyhow::Result<()> {
    let objects = two_objects(env.size)?;
    let job = JobName::new("harness-scrub")?;
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); RATES_MIB.len()];
    let mut notes = Vec::new();
    for run in 0..env.runs {
        let dir = env.fresh_dir()?;
        let mut cluster = env.start_cluster(&dir.path().join("cluster"), 6, 3)?;
        restart_with_scrub_rate(&mut cluster, 0)?;
        {
            let _guard = env.rt.enter();
            let client = Client::connect(&cluster.cluster_file())?;
            env.rt.block_on(client.save(save_request(&job, &objects))).context("save")?;
        }
        for (i, rate) in RATES_MIB.iter().enumerate() {
            restart_with_scrub_rate(&mut cluster, rate * MIB as u64)?;
            note_cache_drop(&mut notes, "before each scrub window");
            let nodes = children_named(own_pid(), STORE_COMM)?;
            ensure!(nodes.len() == 6, "found {} node processes, 6 started", nodes.len());
            let before = scrubbed_bytes(&stats(env, &cluster.cluster_file())?);
            let meter = Meter::start(&nodes);
            std::thread::sleep(WINDOW);
            let cost = meter.stop();
            let after = scrubbed_bytes(&stats(env, &cluster.cluster_file())?);
            samples[i].push((after - before, cost.peers_s));
        }
        eprintln!("run {} of {} done", run + 1, env.runs);
    }
    let mut table = Table::new(&[
        "scrub rate asked, MiB/s per node",
        "MiB/s re-hashed per node (median)",
        "node core-s per GiB re-hashed",
        "share of one core per node",
        "hours per pass of a 4 TiB node",
    ]);
    let secs = WINDOW.as_secs_f64();
    for (rate, runs) in RATES_MIB.iter().zip(&samples) {
        let per_node: Vec<f64> = runs.iter().map(|(b, _)| b / 6.0 / secs / MIB as f64).collect();
        let per_gib: Vec<f64> = runs
            .iter()
            .filter(|(b, _)| *b > 0.0)
            .map(|(b, c)| c / (b / (1u64 << 30) as f64))
            .collect();
        let share: Vec<f64> = runs.iter().map(|(_, c)| c / 6.0 / secs).collect();
        let achieved = median(&per_node).unwrap_or(f64::NAN);
        table.row(vec![
            rate.to_string(),
            format!("{achieved:.1}"),
            median(&per_gib).map_or("-".into(), |c| format!("{c:.2}")),
            median(&share).map_or("-".into(), |s| format!("{:.1}%", s * 100.0)),
            format!("{:.1}", NODE_BYTES / (achieved * MIB as f64) / 3600.0),
        ]);
    }
    println!(
        "\nscrub: {} MiB saved on a fresh 6-node 3-rack cluster per run (4+2, 1 MiB shards); \
         each rate watched for {:?} after every node restarted with it (no start delay, page \
         cache dropped first); node CPU includes each node's idle work (heartbeats)",
        env.size / MIB,
        WINDOW
    );
    print!("{}", table.render());
    for n in notes.iter().take(1) {
        println!("{n}");
    }
    Ok(())
}
