//! Crash points, each one for real: for every name in `rackpoint_proto::failpoint::ALL`, the
//! `rackpoint` CLI (client points) or one or more `rackpoint-store` processes (node points)
//! are killed with SIGKILL exactly there, what died is started again, and then:
//! - the job's earlier checkpoints restore byte-identical;
//! - the checkpoint being written is either listed complete and restores byte-identical, or
//!   is not listed and `get --latest` restores the previous one;
//! - every shard a listed manifest names is on its node with the manifest's digest (so a
//!   shard a node acknowledged before it died is still there);
//! - the interrupted `rm` or `gc` run again, `repair` and `gc` (orphans, zero grace) bring
//!   the job to exactly its expected steps, each verified healthy, with no shard on any node
//!   that no manifest names (per node and part, counted by the node's `ListParts`).
//!
//! A name in `ALL` without a case fails `every_crash_point_has_a_case`; a `failpoint::hit` of
//! a name not in `ALL` anywhere in the sources fails `every_crash_point_hit_is_listed`.
//! Two clusters run side by side: cases that only kill the client share one (in parallel, a
//! job each); cases that kill or restart nodes run one after another on the other.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{data, six_nodes, TestCluster};
use rackpoint_client::manifest::{Manifest, Which};
use rackpoint_client::transport::Transport;
use rackpoint_client::Client;
use rackpoint_proto::failpoint::{self, ALL};
use rackpoint_proto::{
    JobName, NodeId, Rank, Request, Response, ShardIndex, Step, StripeId, StripeIndex,
};
use serde_json::Value;

const SHARD: u32 = 16 * 1024;
/// Object bytes per checkpoint: four stripes of 64 KiB, the last one short.
const LEN: usize = 200_001;
/// Most time one CLI run or one node restart may take on the shared machine.
const BOUND: Duration = Duration::from_secs(120);
/// Client cases run at most this many at once.
const PARALLEL: usize = 3;

/// What a case interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `put J 2` over step 1.
    Put,
    /// `rm J --step 2` of steps 1 and 2.
    Rm,
    /// `gc J --keep 2` of steps 1, 2, 3 and an orphan part of step 4.
    Gc,
    /// `repair J --step 2`, step 2 saved while nodes 5 and 6 were down (shards doubled up).
    Repair,
}

/// Which nodes are armed with the case's point (node points).
#[derive(Debug, Clone, Copy)]
enum Nodes {
    /// Only the client is armed.
    None,
    /// Node 2 (it holds a shard of every stripe).
    Two,
    /// The first node of step 2's manifest placement.
    ManifestHolder,
    /// Every node, with this node point (the client with the case's point).
    All(&'static str),
}

#[derive(Debug, Clone, Copy)]
struct Case {
    point: &'static str,
    op: Op,
    nodes: Nodes,
}

/// One case per crash point.
fn cases() -> Vec<Case> {
    let client = |point, op| Case { point, op, nodes: Nodes::None };
    let node = |point, op, nodes| Case { point, op, nodes };
    vec![
        client("save.before_put", Op::Put),
        client("save.shard_acked", Op::Put),
        client("save.shards_done", Op::Put),
        client("save.manifest_stored", Op::Put),
        client("save.committed", Op::Put),
        // A commit fails when every node dies as it is about to store the manifest.
        node("save.rollback", Op::Put, Nodes::All("node.manifest_write.before")),
        client("repair.before_put", Op::Repair),
        client("repair.shards_written", Op::Repair),
        client("repair.manifest_stored", Op::Repair),
        client("repair.before_stale_delete", Op::Repair),
        client("rm.before_delete", Op::Rm),
        client("rm.node_deleted", Op::Rm),
        client("gc.before_delete", Op::Gc),
        client("gc.node_deleted", Op::Gc),
        client("gc.orphan_swept", Op::Gc),
        node("node.shard_put.before_write", Op::Put, Nodes::Two),
        node("node.shard_put.before_index", Op::Put, Nodes::Two),
        node("node.shard_put.before_ack", Op::Put, Nodes::Two),
        node("node.shard_put.after_ack", Op::Put, Nodes::Two),
        node("node.manifest_write.before", Op::Put, Nodes::ManifestHolder),
        node("node.manifest_write.after", Op::Put, Nodes::ManifestHolder),
        node("node.delete.before", Op::Rm, Nodes::Two),
        node("node.delete.before_segment", Op::Rm, Nodes::Two),
    ]
}

impl Case {
    fn job(&self) -> JobName {
        JobName::new(self.point.replace(['.', '_'], "-")).expect("a valid job name")
    }

    fn kills_nodes(&self) -> bool {
        !matches!(self.nodes, Nodes::None) || self.op == Op::Repair
    }

    /// Steps saved before the operation.
    fn before(&self) -> &'static [u64] {
        match self.op {
            Op::Put => &[1],
            Op::Rm | Op::Repair => &[1, 2],
            Op::Gc => &[1, 2, 3],
        }
    }

    /// Steps that must restore whatever happens, and the step the operation adds or removes
    /// (if any: it may be there or not).
    fn kept_and_touched(&self) -> (&'static [u64], Option<u64>) {
        match self.op {
            Op::Put => (&[1], Some(2)),
            Op::Rm => (&[1], Some(2)),
            Op::Gc => (&[2, 3], Some(1)),
            Op::Repair => (&[1, 2], None),
        }
    }

    /// The steps listed once the interrupted operation is finished.
    fn after(&self, touched_there: bool) -> BTreeSet<u64> {
        match self.op {
            Op::Put if touched_there => [1, 2].into(),
            Op::Put | Op::Rm => [1].into(),
            Op::Gc => [2, 3].into(),
            Op::Repair => [1, 2].into(),
        }
    }

    /// The operation's arguments.
    fn args(&self, bed: &Bed) -> Vec<String> {
        let job = self.job().to_string();
        match self.op {
            Op::Put => {
                let file = bed.input(&self.job(), 2);
                vec!["put".into(), job, "2".into(), file.display().to_string()]
            }
            Op::Rm => vec!["rm".into(), job, "--step".into(), "2".into()],
            Op::Gc => gc_args(&job, 2),
            Op::Repair => {
                vec![
                    "repair".into(),
                    job,
                    "--step".into(),
                    "2".into(),
                    "--read-limit-mib".into(),
                    "0".into(),
                ]
            }
        }
    }
}

fn gc_args(job: &str, keep: usize) -> Vec<String> {
    let keep = keep.to_string();
    ["gc", job, "--keep", &keep, "--orphan-grace-secs", "0"].map(String::from).to_vec()
}

/// A cluster, a runtime and a transport for looking at the nodes directly, and a folder.
struct Bed {
    tc: Mutex<TestCluster>,
    file: PathBuf,
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    transport: Transport,
    client: Client,
}

impl Bed {
    fn new() -> Bed {
        let tc = six_nodes(SHARD);
        let file = tc.cluster.cluster_file();
        let dir = tc.dir.path().to_owned();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let _in = rt.enter();
        let transport = Transport::new(tc.cluster.map(), tc.cluster.tls()).expect("transport");
        let client = Client::connect(&file).expect("client");
        drop(_in);
        Bed { tc: Mutex::new(tc), file, dir, rt, transport, client }
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, TestCluster> {
        self.tc.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bytes(job: &JobName, step: u64) -> Vec<u8> {
        let seed =
            job.as_str().bytes().fold(step, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b)));
        data(seed, LEN)
    }

    /// The file step `step` of `job` is saved from (written on first use).
    fn input(&self, job: &JobName, step: u64) -> PathBuf {
        let dir = self.dir.join("in").join(format!("{job}-{step}"));
        let file = dir.join("state.bin");
        if !file.exists() {
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(&file, Self::bytes(job, step)).expect("write input");
        }
        file
    }

    fn command(&self, args: &[String], point: Option<&str>) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rackpoint"));
        c.args(args)
            .env_remove("RUST_LOG")
            .env_remove(failpoint::ENV)
            .env("RACKPOINT_CLUSTER", &self.file)
            .stdin(Stdio::null());
        if let Some(point) = point {
            c.env(failpoint::ENV, point);
        }
        c
    }

    fn run(&self, args: &[String]) -> Output {
        self.command(args, None).output().expect("run rackpoint")
    }

    fn put(&self, job: &JobName, step: u64) {
        let file = self.input(job, step).display().to_string();
        let out = self.run(&["put".into(), job.to_string(), step.to_string(), file]);
        assert!(out.status.success(), "{job} put {step}: {}", text(&out.stderr));
    }

    /// The steps `ls` lists as complete (none for a job it does not know).
    fn listed(&self, job: &JobName) -> Result<BTreeSet<u64>, String> {
        let out = self.run(&["ls".into(), job.to_string(), "--json".into()]);
        if out.status.code() == Some(1) {
            return Ok(BTreeSet::new()); // no such job
        }
        let doc: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("ls --json: {e}: {} {}", text(&out.stdout), text(&out.stderr)))?;
        if !out.status.success() {
            return Err(format!("ls failed: {doc} {}", text(&out.stderr)));
        }
        let list = doc["checkpoints"].as_array().ok_or_else(|| format!("ls: {doc}"))?;
        Ok(list
            .iter()
            .filter(|c| c["complete"] == Value::Bool(true))
            .filter_map(|c| c["step"].as_u64())
            .collect())
    }

    /// `get` of `step` (or `--latest`) into a fresh folder: the restored bytes.
    fn get(&self, job: &JobName, step: Option<u64>) -> Result<Vec<u8>, String> {
        let out = tempfile::tempdir_in(&self.dir).map_err(|e| e.to_string())?;
        let mut args =
            vec!["get".into(), job.to_string(), "--out".into(), out.path().display().to_string()];
        match step {
            Some(s) => args.extend(["--step".into(), s.to_string()]),
            None => args.push("--latest".into()),
        }
        let run = self.run(&args);
        if !run.status.success() {
            return Err(format!("get {step:?}: {:?} {}", run.status.code(), text(&run.stderr)));
        }
        std::fs::read(out.path().join("state.bin")).map_err(|e| format!("get {step:?}: {e}"))
    }

    fn restores(&self, job: &JobName, step: u64) -> Result<(), String> {
        let got = self.get(job, Some(step))?;
        if got != Self::bytes(job, step) {
            return Err(format!(
                "step {step} restored {} bytes that differ from what was saved",
                got.len()
            ));
        }
        Ok(())
    }

    fn manifest(&self, job: &JobName, step: u64) -> Result<Manifest, String> {
        // A fresh client: none of its connections is to a node process that has since died.
        let client = {
            let _in = self.rt.enter();
            Client::connect(&self.file).map_err(|e| e.to_string())?
        };
        let m = self.rt.block_on(async {
            let m = client.manifest(job, Which::Step(Step(step)), Rank(0)).await;
            client.close().await;
            m
        });
        m.map_err(|e| format!("manifest of step {step}: {e}"))
    }

    /// One request to a node; a connection to a process of the node that has since died
    /// fails once (the new one resets it), so a node failure is tried again on a new one.
    fn call(&self, node: NodeId, req: &Request) -> Result<Response, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match self.rt.block_on(self.transport.call(node, req, Bytes::new())) {
                Ok(reply) => return Ok(reply.response),
                Err(e) if e.is_node_failure() => {
                    self.transport.forget(node);
                    last = e.to_string();
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(last)
    }

    /// Every shard the manifest of `step` names is on its node with its digest.
    fn shards_present(&self, job: &JobName, step: u64) -> Result<(), String> {
        let m = self.manifest(job, step)?;
        let mut missing = Vec::new();
        for object in &m.objects {
            for (s, stripe) in object.stripes.iter().enumerate() {
                let id = StripeId {
                    job: job.clone(),
                    step: Step(step),
                    rank: Rank(0),
                    object: object.name.clone(),
                    stripe: StripeIndex(s as u32),
                };
                for (i, shard) in stripe.shards.iter().enumerate() {
                    let req = Request::VerifyShard { key: id.shard(ShardIndex(i as u8)) };
                    match self.call(shard.node, &req) {
                        Ok(Response::ShardVerified { hash, .. }) if hash == shard.hash => {}
                        other => missing
                            .push(format!("stripe {s} shard {i} on {}: {other:?}", shard.node)),
                    }
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("step {step}: shards named by its manifest are not there: {missing:?}"))
        }
    }

    /// Shards per (step, node) on the nodes (`ListParts`, rank 0 only: the tests write no other).
    fn stored(&self, job: &JobName) -> Result<BTreeMap<(u64, NodeId), u64>, String> {
        let mut all = BTreeMap::new();
        let nodes: Vec<NodeId> = self.client.map().nodes.iter().map(|n| n.id).collect();
        for node in nodes {
            let req = Request::ListParts { job: job.clone(), after: None, limit: 1000 };
            match self.call(node, &req) {
                Ok(Response::Parts { entries, more: false }) => {
                    for p in entries {
                        all.insert((p.step.0, node), p.shards);
                    }
                }
                other => return Err(format!("ListParts on {node}: {other:?}")),
            }
        }
        Ok(all)
    }

    /// The shards `steps`' manifests name, per (step, node).
    fn named(
        &self,
        job: &JobName,
        steps: &BTreeSet<u64>,
    ) -> Result<BTreeMap<(u64, NodeId), u64>, String> {
        let mut all = BTreeMap::new();
        for &step in steps {
            let m = self.manifest(job, step)?;
            for shard in m.objects.iter().flat_map(|o| &o.stripes).flat_map(|s| &s.shards) {
                *all.entry((step, shard.node)).or_insert(0) += 1;
            }
        }
        Ok(all)
    }

    fn verify(&self, job: &JobName, step: u64) -> Result<(), String> {
        let out = self.run(&["verify".into(), job.to_string(), "--step".into(), step.to_string()]);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "verify {step}: {:?} {} {}",
                out.status.code(),
                text(&out.stdout),
                text(&out.stderr)
            ))
        }
    }

    /// Runs `args` with the client armed with `point` (if any), while watching `armed`
    /// nodes: one that dies is started again unarmed at once (as a supervisor would). Returns
    /// the CLI's exit status and how each armed node that died ended.
    fn run_watched(
        &self,
        args: &[String],
        point: Option<&str>,
        armed: &[NodeId],
    ) -> (ExitStatus, String, Vec<(NodeId, ExitStatus)>) {
        let mut child = self
            .command(args, point)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rackpoint");
        let stderr = child.stderr.take().expect("piped");
        let reader =
            std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        let mut died = Vec::new();
        let started = Instant::now();
        let status = loop {
            let done = child.try_wait().expect("try_wait");
            self.restart_dead(armed, &mut died);
            if let Some(status) = done {
                break status;
            }
            assert!(started.elapsed() < BOUND, "{args:?} did not end within {BOUND:?}");
            // Polls process states (not a synchronization by sleep: the condition is read).
            std::thread::sleep(Duration::from_millis(10));
        };
        self.restart_dead(armed, &mut died);
        (status, reader.join().unwrap_or_default(), died)
    }

    fn restart_dead(&self, armed: &[NodeId], died: &mut Vec<(NodeId, ExitStatus)>) {
        let mut tc = self.cluster();
        for &id in armed {
            if let Some(status) = tc.cluster.exit_status(id) {
                died.push((id, status));
                tc.cluster.set_node_env(id, failpoint::ENV, None);
                tc.cluster.restart(id).expect("restart a node that died");
            }
        }
    }

    /// Starts `ids` again with `point` armed (or none).
    fn rearm(&self, ids: &[NodeId], point: Option<&str>) {
        let mut tc = self.cluster();
        for &id in ids {
            tc.cluster.set_node_env(id, failpoint::ENV, point);
            if tc.cluster.is_running(id) {
                tc.cluster.kill(id).expect("kill");
            }
            tc.cluster.restart(id).expect("restart");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn killed(status: &ExitStatus) -> bool {
    status.signal() == Some(nix::sys::signal::Signal::SIGKILL as i32)
}

/// Steps before the operation (repair cases: see `repair_setup`).
fn setup(bed: &Bed, case: &Case) {
    let job = case.job();
    if case.op == Op::Repair {
        return;
    }
    for &step in case.before() {
        bed.put(&job, step);
    }
    if case.op == Op::Gc {
        // An orphan: a save of step 4 killed after its shards, before its manifest.
        let file = bed.input(&job, 4).display().to_string();
        let args = ["put".into(), job.to_string(), "4".into(), file];
        let (status, err, _) = bed.run_watched(&args, Some("save.shards_done"), &[]);
        assert!(killed(&status), "the orphan's save was killed: {status:?} {err}");
    }
}

/// Repair cases: step 1 saved with every node up, step 2 while nodes 5 and 6 are down (its
/// stripes double up on the others), then the nodes are back: repair moves shards.
fn repair_setup(bed: &Bed, cases: &[Case]) {
    for case in cases {
        bed.put(&case.job(), 1);
    }
    let down = [NodeId(5), NodeId(6)];
    {
        let mut tc = bed.cluster();
        for id in down {
            tc.cluster.kill(id).expect("kill");
        }
    }
    std::thread::scope(|s| {
        for case in cases {
            s.spawn(move || bed.put(&case.job(), 2));
        }
    });
    let mut tc = bed.cluster();
    for id in down {
        tc.cluster.restart(id).expect("restart");
    }
}

/// Runs one case: the operation with its point armed, then every check. Returns what failed
/// (empty: the case passed) and what the case noticed about deletes (see the module doc).
fn run_case(bed: &Bed, case: &Case) -> Vec<String> {
    let job = case.job();
    let mut failed = Vec::new();
    let mut check = |what: &str, r: Result<(), String>| {
        if let Err(e) = r {
            failed.push(format!("{what}: {e}"));
        }
    };
    // Arm.
    let armed: Vec<NodeId> = match case.nodes {
        Nodes::None => Vec::new(),
        Nodes::Two => vec![NodeId(2)],
        Nodes::ManifestHolder => {
            let map = bed.client.map();
            let holders = rackpoint_client::placement::place_manifest(
                &map,
                &job,
                Step(2),
                Rank(0),
                3,
                &|_| false,
            )
            .expect("placement");
            vec![holders[0]]
        }
        Nodes::All(_) => bed.client.map().nodes.iter().map(|n| n.id).collect(),
    };
    let (client_point, node_point) = match case.nodes {
        Nodes::None => (Some(case.point), None),
        Nodes::All(node_point) => (Some(case.point), Some(node_point)),
        Nodes::Two | Nodes::ManifestHolder => (None, Some(case.point)),
    };
    if let Some(p) = node_point {
        bed.rearm(&armed, Some(p));
    }
    let (status, stderr, died) = bed.run_watched(&case.args(bed), client_point, &armed);
    // The point fired: the armed process died by SIGKILL.
    if client_point.is_some() && !killed(&status) {
        check("the client was killed at the point", Err(format!("{status:?}: {stderr}")));
    }
    if node_point.is_some() {
        let still: Vec<NodeId> =
            armed.iter().copied().filter(|id| !died.iter().any(|(d, _)| d == id)).collect();
        if !still.is_empty() {
            bed.rearm(&still, None);
        }
        let fired = died.iter().filter(|(_, s)| killed(s)).count();
        let want = if matches!(case.nodes, Nodes::All(_)) { 1 } else { armed.len() };
        if fired < want || died.iter().any(|(_, s)| !killed(s)) {
            check(
                "the node was killed at the point",
                Err(format!("{died:?}; client {status:?}: {stderr}")),
            );
        }
    }
    // Right after the crash: what was there stays, the touched step is all or nothing.
    let (kept, touched) = case.kept_and_touched();
    for &step in kept {
        check("an earlier checkpoint restores", bed.restores(&job, step));
    }
    let listed = bed.listed(&job).unwrap_or_else(|e| {
        check("ls", Err(e));
        BTreeSet::new()
    });
    let deletes = matches!(case.op, Op::Rm | Op::Gc);
    let touched_there = touched.is_some_and(|t| listed.contains(&t));
    if let Some(t) = touched {
        if touched_there {
            // A delete marks the step first: a half-deleted step is never listed complete.
            let r = bed.restores(&job, t).and_then(|()| bed.shards_present(&job, t));
            check("the touched step, listed complete, restores", r);
        }
        let latest = listed.iter().max().copied();
        let got = bed.get(&job, None);
        if let Some(l) = latest {
            let ok = got.as_ref().is_ok_and(|b| *b == Bed::bytes(&job, l));
            check(
                "get --latest restores the newest listed",
                if ok { Ok(()) } else { Err(format!("{l}: {:?}", got.err())) },
            );
        }
    }
    for &step in listed.iter().filter(|s| !deletes || Some(**s) != touched) {
        check("acknowledged shards are where the manifest says", bed.shards_present(&job, step));
    }
    // Finish what was interrupted, then repair and collect.
    if deletes {
        let out = bed.run(&case.args(bed));
        let done = out.status.success()
            || (case.op == Op::Rm
                && out.status.code() == Some(1)
                && text(&out.stderr).contains("no"));
        check(
            "the interrupted delete runs again",
            if done { Ok(()) } else { Err(text(&out.stderr)) },
        );
    }
    let repair = bed.run(&[
        "repair".into(),
        job.to_string(),
        "--all".into(),
        "--read-limit-mib".into(),
        "0".into(),
    ]);
    check(
        "repair",
        if repair.status.success() {
            Ok(())
        } else {
            Err(format!("{} {}", text(&repair.stdout), text(&repair.stderr)))
        },
    );
    let gc = bed.run(&gc_args(job.as_str(), 0));
    check(
        "gc",
        if gc.status.success() {
            Ok(())
        } else {
            Err(format!("{} {}", text(&gc.stdout), text(&gc.stderr)))
        },
    );
    // Converged: exactly the expected steps, healthy, and nothing stored that no manifest names.
    let want = case.after(touched_there && !deletes);
    match bed.listed(&job) {
        Ok(now) if now == want => {}
        other => check("the steps listed at the end", Err(format!("{other:?}, expected {want:?}"))),
    }
    for &step in &want {
        check("healthy at the end", bed.verify(&job, step));
        check("restores at the end", bed.restores(&job, step));
    }
    match (bed.stored(&job), bed.named(&job, &want)) {
        (Ok(stored), Ok(named)) if stored == named => {}
        (stored, named) => check(
            "no shard stored that no manifest names",
            Err(format!("stored {stored:?}, named by the manifests {named:?}")),
        ),
    }
    failed
}

#[test]
fn every_crash_point_has_a_case() {
    let covered: BTreeSet<&str> = cases().iter().map(|c| c.point).collect();
    let listed: BTreeSet<&str> = ALL.iter().map(|(n, _)| *n).collect();
    let missing: Vec<_> = listed.difference(&covered).collect();
    let unknown: Vec<_> = covered.difference(&listed).collect();
    assert!(missing.is_empty(), "crash points without a case: {missing:?}");
    assert!(unknown.is_empty(), "cases of points not in failpoint::ALL: {unknown:?}");
    assert_eq!(cases().len(), covered.len(), "one case per point");
    // And the table in ARCHITECTURE.md says what each one means.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace");
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    for (name, what) in ALL {
        assert!(doc.contains(&format!("| `{name}` | {what} |")), "ARCHITECTURE.md's row of {name}");
    }
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir()
            && !path.ends_with("target")
            && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_crash_point_hit_is_listed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace");
    let mut files = Vec::new();
    sources(root, &mut files);
    let listed: BTreeSet<&str> = ALL.iter().map(|(n, _)| *n).collect();
    let needle = concat!("failpoint", "::hit(");
    let mut hits = BTreeSet::new();
    let mut unlisted = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("read source");
        for (at, _) in source.match_indices(needle) {
            let rest = &source[at + needle.len()..];
            let name = rest.strip_prefix('"').and_then(|r| r.split_once('"')).map(|(n, _)| n);
            match name {
                Some(n) if listed.contains(n) => {
                    hits.insert(n.to_owned());
                }
                // The definition itself (`fn hit(name: &str)`) and calls with a variable.
                None if file.ends_with("proto/src/failpoint.rs") || rest.starts_with("name") => {}
                _ => unlisted.push(format!("{}: {}", file.display(), &rest[..rest.len().min(60)])),
            }
        }
    }
    assert!(unlisted.is_empty(), "crash points hit but not in failpoint::ALL: {unlisted:?}");
    let never: Vec<&&str> = listed.iter().filter(|n| !hits.contains(**n)).collect();
    assert!(never.is_empty(), "crash points in ALL that no source hits: {never:?}");
}

#[test]
fn every_crash_point_leaves_a_consistent_store() {
    let all = cases();
    let (quiet, noisy): (Vec<Case>, Vec<Case>) = all.iter().partition(|c| !c.kills_nodes());
    let started = Instant::now();
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        // Client-only cases: one cluster, a job each, a few at a time.
        s.spawn(|| {
            let bed = Bed::new();
            for chunk in quiet.chunks(PARALLEL) {
                std::thread::scope(|s| {
                    for case in chunk {
                        let (bed, failures) = (&bed, &failures);
                        s.spawn(move || {
                            setup(bed, case);
                            let f = run_case(bed, case);
                            failures
                                .lock()
                                .expect("lock")
                                .extend(f.into_iter().map(|e| format!("{}: {e}", case.point)));
                        });
                    }
                });
            }
        });
        // Cases that kill or restart nodes: the other cluster, one after another (the
        // repair cases, whose client alone dies, side by side).
        s.spawn(|| {
            let bed = Bed::new();
            let (repairs, nodes): (Vec<Case>, Vec<Case>) =
                noisy.iter().partition(|c| c.op == Op::Repair);
            repair_setup(&bed, &repairs);
            std::thread::scope(|s| {
                for case in &repairs {
                    let (bed, failures) = (&bed, &failures);
                    s.spawn(move || {
                        let f = run_case(bed, case);
                        failures
                            .lock()
                            .expect("lock")
                            .extend(f.into_iter().map(|e| format!("{}: {e}", case.point)));
                    });
                }
            });
            for case in &nodes {
                setup(&bed, case);
                let f = run_case(&bed, case);
                failures
                    .lock()
                    .expect("lock")
                    .extend(f.into_iter().map(|e| format!("{}: {e}", case.point)));
            }
        });
    });
    let failures = failures.into_inner().expect("lock");
    eprintln!("{} crash points in {:.1} s", all.len(), started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
