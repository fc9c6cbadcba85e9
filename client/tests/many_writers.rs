//! Many writers against real `rackpoint-store` processes (6 nodes in 3 racks, k = 4, m = 2):
//! 32 clients, each with its own identity and QUIC connections, save and restore their own
//! jobs for a fixed number of rounds while two nodes are killed with SIGKILL and restarted,
//! each when the saves reach a set count (never after a sleep). Every restore must be
//! byte-identical (blake3) to what was saved; a save either commits or fails with a typed
//! error of node loss; every acknowledged save restores once the nodes are back (and a failed
//! one restores its own bytes or nothing); and every node process's peak resident memory
//! (`VmHWM`) stays under a bound derived from the node's in-flight budget. The figures are
//! printed (run with `--nocapture`).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{data, job, request, six_nodes};
use rackpoint_client::cluster_dir::{issue_client, IdentityFiles};
use rackpoint_client::local_cluster::LocalCluster;
use rackpoint_client::restore::Which;
use rackpoint_client::{Client, ClientError, ClientOptions};
use rackpoint_proto::access::{Access, Grant};
use rackpoint_proto::limits::NODE_MAX_INFLIGHT_BYTES;
use rackpoint_proto::{JobName, NodeId, Rank, Step};
use tokio::sync::watch;

/// Concurrent clients, each saving and restoring its own job.
const CLIENTS: usize = 32;
/// Save + restore rounds each client does (one step per round).
const ROUNDS: u64 = 5;
/// Save attempts of the whole run.
const TOTAL_SAVES: usize = CLIENTS * ROUNDS as usize;
const SHARD: u32 = 64 * 1024;
/// The two nodes killed and restarted (racks 2 and 1: nodes are placed in racks in turn).
const VICTIMS: [NodeId; 2] = [NodeId(2), NodeId(4)];
/// What a node may hold besides request payloads (its in-flight budget): RocksDB's write
/// buffers (3 × 64 MiB for shards, the index's), block cache and table readers, the tokio
/// runtime, QUIC and TLS state of every connection, and the binary itself. Generous: the
/// measured peaks are printed next to it.
const NODE_FIXED_ALLOWANCE_BYTES: u64 = 512 * 1024 * 1024;
/// Errors a save may fail with while nodes die and come back: nothing else is acceptable.
const SAVE_FAILURES_OF_NODE_LOSS: &[&str] =
    &["ShardWriteFailed", "CommitFailed", "Placement", "Transport", "Unavailable"];

/// The two objects of client `client`'s step `step`: lengths vary by round, neither a
/// multiple of the stripe.
fn objects(client: usize, step: u64) -> Vec<(String, Vec<u8>)> {
    let seed = (client as u64) << 16 | step;
    let weights = 512 * 1024 + (seed as usize * 7919) % (768 * 1024) + 13;
    vec![
        ("weights.bin".into(), data(seed * 2, weights)),
        ("optim.bin".into(), data(seed * 2 + 1, 3 * SHARD as usize + 17)),
    ]
}

fn digests(objs: &[(String, Vec<u8>)]) -> Vec<(String, blake3::Hash)> {
    objs.iter().map(|(n, b)| (n.clone(), blake3::hash(b))).collect()
}

/// The name of an error's variant, for counting failures by kind.
fn kind(e: &ClientError) -> &'static str {
    match e {
        ClientError::Cluster(_) => "Cluster",
        ClientError::Tls(_) => "Tls",
        ClientError::Transport(_) => "Transport",
        ClientError::Placement(_) => "Placement",
        ClientError::Codec(_) => "Codec",
        ClientError::Manifest(_) => "Manifest",
        ClientError::InvalidInput(_) => "InvalidInput",
        ClientError::NotEnoughShards { .. } => "NotEnoughShards",
        ClientError::ShardsUnavailable { .. } => "ShardsUnavailable",
        ClientError::Unavailable { .. } => "Unavailable",
        ClientError::NoSuchJob { .. } => "NoSuchJob",
        ClientError::ShardWriteFailed { .. } => "ShardWriteFailed",
        ClientError::CommitFailed { .. } => "CommitFailed",
        ClientError::ManifestNotFound { .. } => "ManifestNotFound",
        ClientError::ManifestDisputed { .. } => "ManifestDisputed",
        ClientError::AlreadyExists { .. } => "AlreadyExists",
        ClientError::NoCheckpoint { .. } => "NoCheckpoint",
        ClientError::NoNodeAnswered(_) => "NoNodeAnswered",
        ClientError::ObjectHashMismatch { .. } => "ObjectHashMismatch",
        ClientError::PermissionDenied { .. } => "PermissionDenied",
        ClientError::QuotaExceeded { .. } => "QuotaExceeded",
        _ => "Other",
    }
}

/// Save attempts made and clients finished, watched by the controller.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    saves: usize,
    finished: usize,
}

/// Counts a client as finished when its task ends, however it ends (so that the controller
/// never waits for progress that cannot come).
struct Finished(watch::Sender<Progress>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.send_modify(|p| p.finished += 1);
    }
}

/// What one client did.
#[derive(Default)]
struct Log {
    /// Acknowledged saves: step and object digests.
    acked: Vec<(u64, Vec<(String, blake3::Hash)>)>,
    /// Failed saves: step and the digests of the bytes given.
    failed: Vec<(u64, Vec<(String, blake3::Hash)>)>,
    save_failures: BTreeMap<&'static str, Vec<String>>,
    restores_ok: u64,
    restore_failures: BTreeMap<&'static str, Vec<String>>,
    /// Restores that returned bytes other than those saved (must stay empty).
    wrong: Vec<String>,
    saved_bytes: u64,
    restored_bytes: u64,
}

/// Restores `step` of `job` and compares it with `want`; true if it restored.
async fn restore_and_check(
    c: &Client,
    job: &JobName,
    step: u64,
    want: &[(String, blake3::Hash)],
    log: &mut Log,
) -> bool {
    match c.restore(job, Which::Step(Step(step)), Rank(0)).await {
        Ok((report, restored)) => {
            let got: Vec<(String, blake3::Hash)> = restored
                .iter()
                .map(|o| (o.name.as_str().to_string(), blake3::hash(&o.bytes)))
                .collect();
            if got != want {
                log.wrong.push(format!("{job} step {step}: restored {got:?}, saved {want:?}"));
            }
            log.restores_ok += 1;
            log.restored_bytes += report.bytes;
            true
        }
        Err(e) => {
            log.restore_failures.entry(kind(&e)).or_default().push(format!("{job} {step}: {e}"));
            false
        }
    }
}

/// Client `i`: `ROUNDS` rounds of saving step `round` of job `mw-i`, then restoring that step
/// and an older acknowledged one.
async fn writer(i: usize, c: Client, progress: watch::Sender<Progress>) -> Log {
    let _finished = Finished(progress.clone());
    let job = job(&format!("mw-{i:02}"));
    let mut log = Log::default();
    for step in 1..=ROUNDS {
        let objs = objects(i, step);
        let want = digests(&objs);
        let refs: Vec<(&str, &[u8])> = objs.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
        let saved = c.save(request(&job, step, 0, 1, &refs)).await;
        drop(objs);
        progress.send_modify(|p| p.saves += 1);
        match saved {
            Ok(report) => {
                log.saved_bytes += report.bytes;
                log.acked.push((step, want.clone()));
                restore_and_check(&c, &job, step, &want, &mut log).await;
            }
            Err(e) => {
                log.save_failures.entry(kind(&e)).or_default().push(format!("{job} {step}: {e}"));
                log.failed.push((step, want));
            }
        }
        // An older acknowledged step, chosen by the round (saved before or during an outage).
        if log.acked.len() > 1 {
            let (old, want) = log.acked[(step as usize * 3 + i) % (log.acked.len() - 1)].clone();
            restore_and_check(&c, &job, old, &want, &mut log).await;
        }
    }
    log
}

/// Peak (`VmHWM`) and current (`VmRSS`) resident bytes of a process, from /proc.
fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// The highest `VmHWM` and `VmRSS` seen of each node, over all its processes.
#[derive(Default)]
struct Memory {
    peak: BTreeMap<NodeId, (u64, u64)>,
    samples: u64,
}

impl Memory {
    fn sample(&mut self, cluster: &LocalCluster) {
        for n in &cluster.map().nodes {
            let Some((hwm, rss)) = cluster.pid(n.id).and_then(memory_of) else { continue };
            let peak = self.peak.entry(n.id).or_default();
            *peak = (peak.0.max(hwm), peak.1.max(rss));
            self.samples += 1;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Kill(NodeId),
    Restart(NodeId),
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_writers_while_two_nodes_die_and_return() {
    let mut tc = six_nodes(SHARD);
    let cluster_file = tc.cluster.cluster_file();
    let ids = tc.dir.path().join("identities");
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let name = format!("mw-{i:02}");
        let grant = Grant::new(Access::Write, Grant::parse_patterns(&name).expect("pattern"))
            .expect("grant");
        let (files, _): (IdentityFiles, _) =
            issue_client(tc.dir.path(), &format!("writer-{i:02}"), &grant, 1, &ids)
                .expect("identity");
        clients.push(
            Client::connect_as(&cluster_file, Some(&files), ClientOptions::default())
                .expect("client connects"),
        );
    }

    let (progress, mut watched) = watch::channel(Progress::default());
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(writer(i, c, progress.clone())))
        .collect();
    drop(progress);

    // Phases: all up, one down, two down, one down, all up again.
    let schedule = [
        (TOTAL_SAVES / 6, Event::Kill(VICTIMS[0])),
        (TOTAL_SAVES / 3, Event::Kill(VICTIMS[1])),
        (TOTAL_SAVES / 2, Event::Restart(VICTIMS[0])),
        (2 * TOTAL_SAVES / 3, Event::Restart(VICTIMS[1])),
    ];
    let mut memory = Memory::default();
    let mut events = Vec::new();
    for (at, event) in schedule {
        let seen = loop {
            memory.sample(&tc.cluster);
            let p = *watched.borrow_and_update();
            if p.saves >= at || p.finished == CLIENTS || watched.changed().await.is_err() {
                break p;
            }
        };
        match event {
            Event::Kill(id) => {
                tc.cluster.kill(id).expect("kill");
            }
            Event::Restart(id) => {
                tokio::task::block_in_place(|| tc.cluster.restart(id)).expect("restart");
            }
        }
        events.push((event, seen, start.elapsed()));
    }
    while watched.borrow_and_update().finished < CLIENTS {
        memory.sample(&tc.cluster);
        if watched.changed().await.is_err() {
            break;
        }
    }
    let mut logs = Vec::with_capacity(CLIENTS);
    for t in tasks {
        logs.push(t.await.expect("writer task"));
    }
    let run_time = start.elapsed();
    memory.sample(&tc.cluster);

    // Every node back: each acknowledged save restores, byte-identical; a failed save
    // restores the bytes it was given, or nothing.
    let sweep_start = Instant::now();
    let admin = common::client(&tc);
    let mut sweep = Log::default();
    let mut probe = Log::default();
    for (i, log) in logs.iter().enumerate() {
        let job = job(&format!("mw-{i:02}"));
        for (step, want) in &log.acked {
            restore_and_check(&admin, &job, *step, want, &mut sweep).await;
        }
        for (step, want) in &log.failed {
            restore_and_check(&admin, &job, *step, want, &mut probe).await;
        }
    }
    let sweep_time = sweep_start.elapsed();
    memory.sample(&tc.cluster);

    // The figures.
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    let mut save_failures: BTreeMap<&str, usize> = BTreeMap::new();
    let mut restore_failures: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &logs {
        for (k, v) in &l.save_failures {
            *save_failures.entry(k).or_default() += v.len();
        }
        for (k, v) in &l.restore_failures {
            *restore_failures.entry(k).or_default() += v.len();
        }
    }
    let restores: u64 = logs.iter().map(|l| l.restores_ok).sum();
    let saved: u64 = logs.iter().map(|l| l.saved_bytes).sum();
    let restored: u64 = logs.iter().map(|l| l.restored_bytes).sum();
    let bound = NODE_MAX_INFLIGHT_BYTES + NODE_FIXED_ALLOWANCE_BYTES;
    let (peak_hwm, peak_rss) =
        memory.peak.values().fold((0, 0), |(h, r), (ph, pr)| (h.max(*ph), r.max(*pr)));
    println!("many writers: {CLIENTS} clients x {ROUNDS} rounds, 6 nodes (k = 4, m = 2), nodes {} and {} killed and restarted", VICTIMS[0], VICTIMS[1]);
    for (event, p, at) in &events {
        println!(
            "  {event:?} after {} saves ({} clients done) at {:.1} s",
            p.saves,
            p.finished,
            at.as_secs_f64()
        );
    }
    println!("  saves: {acked} committed of {TOTAL_SAVES}; failed by kind: {save_failures:?}");
    println!("  restores during the run: {restores} identical, 0 wrong; failed by kind: {restore_failures:?}");
    for l in &logs {
        for (k, v) in l.save_failures.iter().chain(&l.restore_failures) {
            println!("    {k}: {}", v[0]);
        }
    }
    println!(
        "  bytes: {:.1} MiB saved, {:.1} MiB restored during the run; run {:.1} s ({:.1} MiB/s saved)",
        mib(saved),
        mib(restored),
        run_time.as_secs_f64(),
        mib(saved) / run_time.as_secs_f64()
    );
    println!(
        "  after the restarts: {} acknowledged saves restored identical, {} of {} failed saves restored their own bytes (the others: {:?}), in {:.1} s",
        sweep.restores_ok,
        probe.restores_ok,
        TOTAL_SAVES - acked,
        probe.restore_failures.iter().map(|(k, v)| (*k, v.len())).collect::<BTreeMap<_, _>>(),
        sweep_time.as_secs_f64()
    );
    println!(
        "  node memory: peak VmHWM {:.0} MiB, peak VmRSS {:.0} MiB (bound {:.0} MiB = in-flight budget {:.0} + {:.0}; {} samples); per node VmHWM MiB: {}",
        mib(peak_hwm),
        mib(peak_rss),
        mib(bound),
        mib(NODE_MAX_INFLIGHT_BYTES),
        mib(NODE_FIXED_ALLOWANCE_BYTES),
        memory.samples,
        memory.peak.iter().map(|(n, (h, _))| format!("{n}: {:.0}", mib(*h))).collect::<Vec<_>>().join(", ")
    );
    println!("  wall time: {:.1} s", start.elapsed().as_secs_f64());

    // Never other bytes.
    let wrong: Vec<&String> = logs.iter().chain([&sweep, &probe]).flat_map(|l| &l.wrong).collect();
    assert!(wrong.is_empty(), "restores returned other bytes: {wrong:#?}");
    // Failed saves failed for node loss, and nothing was lost.
    for l in &logs {
        for (k, v) in &l.save_failures {
            assert!(SAVE_FAILURES_OF_NODE_LOSS.contains(k), "a save failed with {k}: {v:#?}");
        }
        assert!(
            !l.restore_failures.contains_key("NotEnoughShards"),
            "an acknowledged save was lost: {:#?}",
            l.restore_failures
        );
    }
    let sweep_failures: Vec<&String> = sweep.restore_failures.values().flatten().collect();
    assert!(
        sweep_failures.is_empty(),
        "with every node back, every acknowledged save restores: {sweep_failures:#?}"
    );
    assert_eq!(sweep.restores_ok as usize, acked);
    // A save that failed is absent, or (its manifest reached some nodes) its own bytes.
    for (k, v) in &probe.restore_failures {
        assert!(
            ["ManifestNotFound", "NoSuchJob"].contains(k),
            "a failed save's step restores neither its bytes nor nothing: {v:#?}"
        );
    }
    // The run did what it claims: most saves committed, restores ran, and every kill and
    // restart came while clients were still saving.
    assert!(acked >= TOTAL_SAVES / 2, "only {acked} of {TOTAL_SAVES} saves committed");
    assert!(restores >= acked as u64, "{restores} restores for {acked} saves");
    for (event, p, _) in &events {
        assert!(p.finished < CLIENTS && p.saves < TOTAL_SAVES, "{event:?} came after the run");
    }
    // Memory bounded, on every node, over every process it ran as.
    assert_eq!(memory.peak.len(), 6, "every node was sampled");
    for (node, (hwm, _)) in &memory.peak {
        assert!(
            *hwm < bound,
            "node {node} peaked at {:.0} MiB resident, over {:.0} MiB",
            mib(*hwm),
            mib(bound)
        );
    }
    // Stale results cannot pass: the run took time and moved bytes.
    assert!(saved > 0 && run_time > Duration::ZERO);
}
