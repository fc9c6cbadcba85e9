//! Rebalance against real `rackpoint-store` processes and the real `rackpoint` CLI. Seven
//! nodes run from the start; checkpoints are saved by clients whose map (`six.toml`) lists
//! only six of them, so node 7 holds nothing, and it joins the map when `rebalance` is handed
//! `cluster.toml`, which lists all seven: what adding a node amounts to for the data (making
//! its folder and certificate is `cluster add-node`'s part). Checked: shards move onto node 7
//! and nowhere else, every stripe ends exactly on its placement under the new map, no shard
//! is leaked or lost (shard counts on every node before and after), `verify` is healthy and
//! every checkpoint restores byte-exact, a second run moves nothing, a dry run and a
//! credential without admin move nothing, a node down is skipped and said, and a rebalance
//! killed at each of its crash points leaves every checkpoint restorable and a rerun (then
//! `gc` of the extra copies) finishes the job.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{data, doc, job, rackpoint, rackpoint_bin, request, s, text};
use rackpoint_client::cluster_dir::{self, InitOptions};
use rackpoint_client::gc::GcOptions;
use rackpoint_client::local_cluster::{find_store_binary, LocalCluster};
use rackpoint_client::placement;
use rackpoint_client::repair_plan::stripe_id;
use rackpoint_client::restore::Which;
use rackpoint_client::Client;
use rackpoint_proto::access::{Access, Grant, JobPattern};
use rackpoint_proto::{ClusterMap, JobName, NodeId, Rank, Step, StripeIndex};

const SHARD: u32 = 64 * 1024;
const NEW: NodeId = NodeId(7);

/// Seven running nodes, and the six-node map the checkpoints were saved under.
struct Grown {
    cluster: LocalCluster,
    six: ClusterMap,
    dir: tempfile::TempDir,
}

impl Grown {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = InitOptions {
            k: 4,
            m: 2,
            shard_size_bytes: SHARD,
            racks: 3,
            node_min_orphan_grace_ms: 0,
            ..InitOptions::new(7)
        };
        let bin = find_store_binary().expect("rackpoint-store is built");
        let cluster = LocalCluster::start(dir.path(), &opts, &bin).expect("cluster starts");
        let mut six = cluster.map().clone();
        six.nodes.retain(|n| n.id != NEW);
        std::fs::write(dir.path().join("six.toml"), six.to_toml()).expect("six.toml");
        Grown { cluster, six, dir }
    }

    fn seven_file(&self) -> PathBuf {
        self.cluster.cluster_file()
    }

    fn six_file(&self) -> PathBuf {
        self.dir.path().join("six.toml")
    }

    fn client7(&self) -> Client {
        Client::connect(&self.seven_file()).expect("client")
    }
}

/// A checkpoint part: job, step, rank, world size and its objects.
type Part = (JobName, u64, u32, u32, Vec<(String, Vec<u8>)>);

/// Saves a few checkpoints of two jobs on the six-node map.
async fn save_some(g: &Grown) -> Vec<Part> {
    let c6 = Client::connect(&g.six_file()).expect("client on six nodes");
    let mut parts = Vec::new();
    for step in 1..=3u64 {
        let objs = vec![
            ("weights.bin".to_owned(), data(step, 1024 * 1024 + 333)),
            ("optim/state.bin".to_owned(), data(step + 100, 5 * SHARD as usize + 7)),
        ];
        parts.push((job("alpha"), step, 0, 1, objs));
    }
    for rank in 0..2u32 {
        let objs = vec![("shard.bin".to_owned(), data(1000 + u64::from(rank), 700 * 1024))];
        parts.push((job("beta"), 5, rank, 2, objs));
    }
    for (job, step, rank, world, objs) in &parts {
        let refs: Vec<(&str, &[u8])> =
            objs.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        c6.save(request(job, *step, *rank, *world, &refs)).await.expect("save on six nodes");
    }
    c6.close().await;
    parts
}

/// Shards stored on each node (`None` for a node that did not answer).
async fn shards_per_node(c: &Client) -> Vec<(NodeId, Option<u64>)> {
    c.status().await.into_iter().map(|s| (s.node.id, s.stats.ok().map(|x| x.shards))).collect()
}

fn on(counts: &[(NodeId, Option<u64>)], node: NodeId) -> u64 {
    counts.iter().find(|(n, _)| *n == node).and_then(|(_, c)| *c).expect("node answered")
}

fn total(counts: &[(NodeId, Option<u64>)]) -> u64 {
    counts.iter().map(|(_, c)| c.expect("every node answered")).sum()
}

async fn assert_all_restore(c: &Client, parts: &[Part]) {
    for (job, step, rank, _, objs) in parts {
        let (_, restored) =
            c.restore(job, Which::Step(Step(*step)), Rank(*rank)).await.expect("restore");
        assert_eq!(restored.len(), objs.len());
        for (r, (name, bytes)) in restored.iter().zip(objs) {
            assert_eq!(r.name.as_str(), name);
            assert!(r.bytes == *bytes, "{job} step {step} rank {rank} {name} differs");
        }
    }
}

/// Every stripe of every part lies exactly on its placement under `map`.
async fn assert_on_placement(c: &Client, map: &ClusterMap, parts: &[Part]) {
    for (job, step, rank, _, _) in parts {
        let m = c.manifest(job, Which::Step(Step(*step)), Rank(*rank)).await.expect("manifest");
        for (o, obj) in m.objects.iter().enumerate() {
            for (si, stripe) in obj.stripes.iter().enumerate() {
                let id = stripe_id(&m, o, StripeIndex(si as u32));
                let want: BTreeSet<NodeId> =
                    placement::place_stripe(map, &id, map.code, &|_| false)
                        .expect("placed")
                        .into_iter()
                        .collect();
                let got: BTreeSet<NodeId> = stripe.shards.iter().map(|x| x.node).collect();
                assert_eq!(got, want, "{id} is not on its placement");
            }
        }
    }
}

async fn assert_healthy(c: &Client, parts: &[Part]) {
    let steps: BTreeSet<(JobName, u64)> = parts.iter().map(|p| (p.0.clone(), p.1)).collect();
    for (job, step) in steps {
        let v = c.verify(&job, Step(step)).await.expect("verify");
        assert!(v.is_healthy(), "{job} step {step}: {v:?}");
    }
}

fn rebalance(cluster: &Path, args: &[&str]) -> Output {
    let mut all = vec!["rebalance", "--json"];
    all.extend_from_slice(args);
    rackpoint(cluster, &all)
}

fn u(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_moves_shards_onto_the_new_node_only_once_and_leaks_none() {
    let g = Grown::start();
    let parts = save_some(&g).await;
    let c = g.client7();
    let before = shards_per_node(&c).await;
    assert_eq!(on(&before, NEW), 0, "node 7 starts empty");
    assert_on_placement(&c, &g.six, &parts).await;

    // A dry run says what would move and moves nothing.
    let out = rebalance(&g.seven_file(), &["--all-jobs", "--dry-run"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let dry = doc(&out);
    let planned = u(&dry, "planned");
    assert!(planned > 0, "{dry}");
    assert_eq!(u(&dry, "moved"), 0);
    assert_eq!(shards_per_node(&c).await, before, "a dry run moves nothing");

    // An identity with write access to every job, but not admin: refused, nothing moved.
    let (id, _) = cluster_dir::issue_client(
        g.dir.path(),
        "trainer",
        &Grant::new(Access::Write, vec![JobPattern::All]).expect("grant"),
        1,
        &g.dir.path().join("ids"),
    )
    .expect("issue");
    let out = rackpoint_bin()
        .args(["rebalance", "--all-jobs", "--cert", s(&id.cert), "--key", s(&id.key)])
        .env("RACKPOINT_CLUSTER", g.seven_file())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(5), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("permission denied"), "{}", text(&out.stderr));
    assert_eq!(shards_per_node(&c).await, before, "a refused rebalance moves nothing");

    // The rebalance: exactly the planned moves, all onto node 7, old copies deleted.
    let out = rebalance(&g.seven_file(), &["--all-jobs", "--rate", "0"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let done = doc(&out);
    assert_eq!(u(&done, "moved"), planned, "{done}");
    assert_eq!(u(&done, "stale_copies_deleted"), planned, "{done}");
    assert_eq!(u(&done, "skipped_total"), 0, "{done}");
    let flows = done["flows"].as_array().expect("flows");
    assert!(flows.iter().all(|f| f["to"] == 7), "only onto the new node: {done}");
    assert_eq!(flows.iter().map(|f| u(f, "shards")).sum::<u64>(), planned);
    let after = shards_per_node(&c).await;
    assert_eq!(on(&after, NEW), planned, "node 7 holds what moved");
    assert_eq!(total(&after), total(&before), "no shard leaked or lost");
    for (node, count) in &after {
        if *node != NEW {
            let moved_off: u64 =
                flows.iter().filter(|f| f["from"] == node.0).map(|f| u(f, "shards")).sum();
            assert_eq!(count.expect("answered"), on(&before, *node) - moved_off, "node {node}");
        }
    }
    assert_on_placement(&c, g.cluster.map(), &parts).await;
    assert_healthy(&c, &parts).await;
    assert_all_restore(&c, &parts).await;

    // A second run has nothing to do.
    let out = rebalance(&g.seven_file(), &["--all-jobs"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = doc(&out);
    assert_eq!((u(&again, "planned"), u(&again, "moved")), (0, 0), "{again}");
    assert_eq!(shards_per_node(&c).await, after);

    // Checkpoints saved under the six-node map restore through it too, and the human
    // output says what moved.
    let c6 = Client::connect(&g.six_file()).expect("client");
    assert_all_restore(&c6, &parts).await;
    let out = rackpoint(&g.seven_file(), &["rebalance", "alpha", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("would move 0 shards"), "{}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_moves_bounds_a_run_and_the_next_run_goes_on() {
    let g = Grown::start();
    let parts = save_some(&g).await;
    let c = g.client7();
    let before = shards_per_node(&c).await;
    let out = rebalance(&g.seven_file(), &["--all-jobs", "--max-moves", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = doc(&out);
    assert_eq!(u(&first, "moved"), 3, "{first}");
    let deferred = u(&first, "deferred");
    assert!(deferred > 0, "{first}");
    assert_all_restore(&c, &parts).await;
    let out = rebalance(&g.seven_file(), &["--all-jobs"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(u(&doc(&out), "moved"), deferred);
    let after = shards_per_node(&c).await;
    assert_eq!(total(&after), total(&before));
    assert_on_placement(&c, g.cluster.map(), &parts).await;
    let out = rackpoint(&g.seven_file(), &["rebalance", "--all-jobs", "--max-moves", "2000000"]);
    assert_eq!(out.status.code(), Some(2), "over the limit is a usage error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_is_skipped_and_said_and_a_later_run_finishes() {
    let mut g = Grown::start();
    let parts = save_some(&g).await;
    let before = shards_per_node(&g.client7()).await;
    // Racks {1, 4, 7}, {2, 5}, {3, 6}: node 7 takes shards of nodes 1 and 4 only.
    let down = NodeId(4);
    g.cluster.kill(down).expect("kill");

    let out = rebalance(&g.seven_file(), &["--all-jobs"]);
    assert_eq!(out.status.code(), Some(4), "{}{}", text(&out.stdout), text(&out.stderr));
    let first = doc(&out);
    assert!(u(&first, "moved") > 0, "what other nodes hold moved: {first}");
    assert!(u(&first, "skipped_total") > 0, "{first}");
    for kind in first["skipped"].as_object().expect("skipped").keys() {
        assert!(["source_down", "unreadable"].contains(&kind.as_str()), "{first}");
    }
    for skip in first["skips"].as_array().expect("skips") {
        assert_eq!(skip["node"], down.0, "only node 4's shards are skipped: {skip}");
    }
    let human = rackpoint(&g.seven_file(), &["rebalance", "--all-jobs"]);
    assert_eq!(human.status.code(), Some(4));
    assert!(text(&human.stdout).contains("skipped"), "{}", text(&human.stdout));
    assert!(text(&human.stdout).contains("on node 4"), "{}", text(&human.stdout));
    assert_all_restore(&g.client7(), &parts).await;

    g.cluster.restart(down).expect("restart");
    let out = rebalance(&g.seven_file(), &["--all-jobs"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let c = g.client7();
    assert_eq!(total(&shards_per_node(&c).await), total(&before), "no shard leaked or lost");
    assert_on_placement(&c, g.cluster.map(), &parts).await;
    assert_healthy(&c, &parts).await;
    assert_all_restore(&c, &parts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_rebalance_leaves_every_checkpoint_restorable_and_a_rerun_finishes() {
    let g = Grown::start();
    let parts = save_some(&g).await;
    let before = total(&shards_per_node(&g.client7()).await);
    // Each run dies (SIGKILL, from the crash point) further along: mid-copy, with one copy
    // of a new manifest revision stored, and with a revision committed but the old copies
    // not deleted yet.
    for point in ["repair.before_put@4", "repair.manifest_stored@2", "repair.before_stale_delete@2"]
    {
        let out = rackpoint_bin()
            .args(["rebalance", "--all-jobs", "--in-flight", "4"])
            .env("RACKPOINT_CLUSTER", g.seven_file())
            .env(rackpoint_proto::failpoint::ENV, point)
            .output()
            .expect("run");
        assert_eq!(out.status.signal(), Some(9), "{point}: {}", text(&out.stderr));
        let c = g.client7();
        assert_all_restore(&c, &parts).await;
        assert_all_restore(&Client::connect(&g.six_file()).expect("client"), &parts).await;
    }
    let out = rebalance(&g.seven_file(), &["--all-jobs"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let out = rebalance(&g.seven_file(), &["--all-jobs"]);
    assert_eq!(u(&doc(&out), "planned"), 0, "the rerun finished the job");
    let c = g.client7();
    assert_on_placement(&c, g.cluster.map(), &parts).await;
    assert_healthy(&c, &parts).await;
    assert_all_restore(&c, &parts).await;
    // The killed runs left extra copies at most (never fewer shards); gc collects them.
    assert!(total(&shards_per_node(&c).await) >= before);
    for j in ["alpha", "beta"] {
        let options = GcOptions { keep: 0, orphan_grace_ms: 0, force: false };
        c.gc(&job(j), options).await.expect("gc");
    }
    assert_eq!(total(&shards_per_node(&c).await), before, "no shard leaked or lost");
    assert_all_restore(&c, &parts).await;
}

/// User + system seconds of this process's reaped children (`/proc/self/stat` fields 16
/// and 17, in 100 Hz ticks).
fn reaped_children_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let rest: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..].split_whitespace().collect();
    let ticks = |field: usize| rest[field - 3].parse::<u64>().expect("ticks") as f64;
    (ticks(16) + ticks(17)) / 100.0
}

/// The figure for the note (run by hand: `cargo test --release --workspace --test rebalance
/// -- --ignored --nocapture`): the rate of an unthrottled rebalance on this machine's
/// loopback cluster (median of 3 fresh clusters), the CPU seconds per GiB moved of the
/// rebalancing process, and a `--rate` cap against the rate measured under it. Prints;
/// asserts nothing about time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand"]
async fn figure_rebalance_rate_and_cpu() {
    const DATA_MIB: usize = 1024;
    let mut rates = Vec::new();
    let mut cpu_per_gib = Vec::new();
    for (run, cap) in [(0, None), (1, None), (2, None), (3, Some(32u64))] {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = InitOptions { racks: 3, ..InitOptions::new(7) };
        let bin = find_store_binary().expect("rackpoint-store is built");
        let cluster = LocalCluster::start(dir.path(), &opts, &bin).expect("cluster starts");
        let mut six = cluster.map().clone();
        six.nodes.retain(|n| n.id != NEW);
        let c6 = Client::with_map(six, cluster.tls()).expect("client");
        let bytes = data(run, DATA_MIB << 20);
        c6.save(request(&job("figure"), 1, 0, 1, &[("model.bin", bytes.as_slice())]))
            .await
            .expect("save");
        c6.close().await;
        let cpu0 = reaped_children_cpu_s();
        let rate = cap.map_or("0".to_owned(), |c| c.to_string());
        let out = rebalance(&cluster.cluster_file(), &["--all-jobs", "--rate", &rate]);
        let cpu = reaped_children_cpu_s() - cpu0;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let d = doc(&out);
        let (moved, secs) = (u(&d, "bytes_moved") as f64, d["elapsed_s"].as_f64().expect("s"));
        let mib_s = moved / f64::from(1u32 << 20) / secs;
        let gib = moved / f64::from(1u32 << 30);
        println!(
            "run {run}: cap {cap:?} MiB/s: moved {:.1} MiB in {secs:.2} s = {mib_s:.1} MiB/s; CLI CPU {cpu:.2} s = {:.2} s/GiB",
            moved / f64::from(1u32 << 20),
            cpu / gib
        );
        if cap.is_none() {
            rates.push(mib_s);
            cpu_per_gib.push(cpu / gib);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "unthrottled: median {:.1} MiB/s, median {:.2} CPU s/GiB",
        median(&mut rates),
        median(&mut cpu_per_gib)
    );
}
