//! Priority saves (a preempted node's SIGTERM window) against real `rackpoint-store`
//! processes (6 nodes, 3 racks, k = 4, m = 2): a save with a deadline commits a normal
//! checkpoint that `latest` picks; it does not wait out a node frozen with SIGSTOP (its shards
//! move); with nodes too slow for the deadline it fails with `DeadlineExceeded` and commits
//! nothing (`latest` is still the previous step); and a `save_async` upload in flight yields
//! to it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, data, job, request, six_nodes};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rackpoint_client::restore::Which;
use rackpoint_client::{Client, ClientError};
use rackpoint_proto::{JobName, NodeId, ObjectName, Rank, Step};

const SHARD: u32 = 256 * 1024;

async fn restored(c: &Client, job: &JobName, step: u64) -> Vec<u8> {
    let (_, objects) = c.restore(job, Which::Step(Step(step)), Rank(0)).await.expect("restore");
    assert_eq!(objects.len(), 1);
    objects.into_iter().next().expect("one object").bytes
}

async fn latest_step(c: &Client, job: &JobName) -> u64 {
    c.latest(job).await.expect("latest").step.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_save_commits_a_normal_checkpoint_that_latest_picks() {
    let tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("priority-ok");
    let before = data(1, 3 * 1024 * 1024);
    c.save(request(&job, 1, 0, 1, &[("state", &before)])).await.expect("periodic save");
    let now = data(2, 5 * 1024 * 1024 + 17);
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = c
        .priority_save(request(&job, 2, 0, 1, &[("state", &now)]), deadline)
        .await
        .expect("the priority save commits");
    let left = report.deadline_left.expect("a priority save reports the time left");
    assert!(left <= Duration::from_secs(60));
    assert_eq!(report.bytes, now.len() as u64);
    assert_eq!(report.yielded, 0);
    assert_eq!(latest_step(&c, &job).await, 2, "the emergency checkpoint is the latest");
    assert!(restored(&c, &job, 2).await == now);
    let verify = c.verify(&job, Step(2)).await.expect("verify");
    assert!(verify.is_healthy(), "{verify:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_save_does_not_wait_out_a_frozen_node() {
    let mut tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("priority-frozen");
    let state = data(3, 64 * 1024 * 1024);
    // Node 4 freezes (SIGSTOP) once the first stripe is stored, with puts to it in flight.
    let pid = Pid::from_raw(tc.cluster.pid(NodeId(4)).expect("node 4 runs") as i32);
    let frozen = Arc::new(AtomicBool::new(false));
    let freeze = frozen.clone();
    c.set_progress(Some(Arc::new(move |_| {
        if !freeze.swap(true, Ordering::SeqCst) {
            kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        }
    })));
    // The deadline is shorter than a request's timeout: waiting one out would miss it.
    let budget = Duration::from_millis(rackpoint_proto::limits::CLIENT_REQUEST_TIMEOUT_MS - 2_000);
    let result = c
        .priority_save(request(&job, 7, 0, 1, &[("state", &state)]), Instant::now() + budget)
        .await;
    c.set_progress(None);
    assert!(frozen.load(Ordering::SeqCst));
    tc.cluster.resume(NodeId(4)).expect("SIGCONT");
    let report = result.expect("committed without node 4");
    assert!(report.moved_shards > 0, "puts in flight to node 4 were abandoned and moved");
    assert!(report.doubled_stripes > 0, "five nodes for six shards: a degraded placement");
    assert!(!report.manifest_nodes.contains(&NodeId(4)));
    assert_eq!(latest_step(&c, &job).await, 7);
    assert!(restored(&c, &job, 7).await == state);
}

/// Stops and continues every node in turn (SIGSTOP for `stop`, SIGCONT for `run`) until
/// `done`: nodes that answer, slowly. Leaves every node running.
fn slow_down(pids: Vec<u32>, done: Arc<AtomicBool>, stop: Duration, run: Duration) {
    let signal = |s| {
        for &p in &pids {
            let _ = kill(Pid::from_raw(p as i32), s);
        }
    };
    while !done.load(Ordering::Relaxed) {
        signal(Signal::SIGSTOP);
        std::thread::sleep(stop);
        signal(Signal::SIGCONT);
        std::thread::sleep(run);
    }
    signal(Signal::SIGCONT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_too_short_for_the_data_commits_nothing() {
    let tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("priority-late");
    let before = data(4, 2 * 1024 * 1024);
    c.save(request(&job, 1, 0, 1, &[("state", &before)])).await.expect("periodic save");
    // Every node runs a fifth of the time (stops shorter than the hedging floor, so
    // none is taken for stalled): 128 MiB cannot be stored within 1.5 s.
    let pids: Vec<u32> =
        tc.cluster.map().nodes.iter().filter_map(|n| tc.cluster.pid(n.id)).collect();
    assert_eq!(pids.len(), 6);
    let done = Arc::new(AtomicBool::new(false));
    let slow = {
        let done = done.clone();
        std::thread::spawn(move || {
            slow_down(pids, done, Duration::from_millis(60), Duration::from_millis(15))
        })
    };
    let big = data(5, 128 * 1024 * 1024);
    let budget = Duration::from_millis(1_500);
    let result =
        c.priority_save(request(&job, 2, 0, 1, &[("state", &big)]), Instant::now() + budget).await;
    done.store(true, Ordering::Relaxed);
    slow.join().expect("the slowing thread");
    match result {
        Err(ClientError::DeadlineExceeded { job: j, step, rank, budget_ms, stored, reason }) => {
            assert_eq!((j, step, rank), (job.clone(), Step(2), Rank(0)));
            assert!(budget_ms <= 1_500);
            assert!(stored < big.len() as u64, "{stored}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected DeadlineExceeded, got {:?}", other.map(|r| r.bytes)),
    }
    assert_eq!(latest_step(&c, &job).await, 1, "the previous checkpoint is still the latest");
    let list = c.list(&job).await.expect("list");
    assert!(list.unseen_nodes.is_empty());
    let steps: Vec<u64> = list.checkpoints.iter().map(|s| s.step.0).collect();
    assert_eq!(steps, vec![1], "no manifest of step 2 is left on any node");
    assert!(restored(&c, &job, 1).await == before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_async_upload_yields_to_a_priority_save() {
    let tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("priority-first");
    let big = data(6, 192 * 1024 * 1024);
    let handle = c
        .save_async(
            request(&job, 1, 0, 1, &[]),
            &[(ObjectName::new("state").expect("valid"), big.as_slice())],
        )
        .await
        .expect("save_async copies and starts");
    let urgent = data(7, 16 * 1024 * 1024);
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = c
        .priority_save(request(&job, 2, 0, 1, &[("state", &urgent)]), deadline)
        .await
        .expect("the priority save commits");
    assert!(!handle.is_finished(), "the background upload is still going");
    assert_eq!(report.yielded, 0);
    let background = handle.wait().await.expect("the background save finishes afterwards");
    assert!(background.yielded > 0, "it gave way: {} yields", background.yielded);
    assert_eq!(latest_step(&c, &job).await, 2);
    assert!(restored(&c, &job, 2).await == urgent);
    assert!(restored(&c, &job, 1).await == big, "the paused upload resumed intact");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The figure for the note (`cargo test --release --workspace --test preempt -- --ignored
/// --nocapture`): a 256 MiB state saved by an ordinary and by a priority save (1 MiB shards,
/// alternating, median of 3).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn figure_priority_save_of_256_mib() {
    let tc = six_nodes(1024 * 1024);
    let c = client(&tc);
    let job = job("priority-figure");
    let state = data(8, 256 * 1024 * 1024);
    let (mut ordinary, mut priority) = (Vec::new(), Vec::new());
    for round in 0..3u64 {
        let req = request(&job, 10 * round + 1, 0, 1, &[("state", &state)]);
        ordinary.push(c.save(req).await.expect("save").elapsed.as_secs_f64());
        let req = request(&job, 10 * round + 2, 0, 1, &[("state", &state)]);
        let deadline = Instant::now() + Duration::from_secs(120);
        priority.push(c.priority_save(req, deadline).await.expect("save").elapsed.as_secs_f64());
    }
    println!(
        "256 MiB: ordinary save {:.2} s, priority save {:.2} s (medians of 3; runs {ordinary:?} / {priority:?})",
        median(ordinary.clone()),
        median(priority.clone())
    );
    // The same priority save while a 512 MiB save_async upload runs (it yields).
    let background = data(9, 512 * 1024 * 1024);
    let name = ObjectName::new("state").expect("valid");
    let (mut beside, mut shared) = (Vec::new(), Vec::new());
    for round in 0..3u64 {
        // An ordinary save beside it shares the bandwidth instead.
        let handle = c
            .save_async(request(&job, 10 * round + 5, 0, 1, &[]), &[(name.clone(), &background)])
            .await
            .expect("save_async");
        let req = request(&job, 10 * round + 6, 0, 1, &[("state", &state)]);
        shared.push(c.save(req).await.expect("save").elapsed.as_secs_f64());
        handle.wait().await.expect("background");
        let handle = c
            .save_async(request(&job, 10 * round + 3, 0, 1, &[]), &[(name.clone(), &background)])
            .await
            .expect("save_async");
        let req = request(&job, 10 * round + 4, 0, 1, &[("state", &state)]);
        let deadline = Instant::now() + Duration::from_secs(120);
        beside.push(c.priority_save(req, deadline).await.expect("save").elapsed.as_secs_f64());
        let yielded = handle.wait().await.expect("background").yielded;
        println!("  round {round}: the upload yielded {yielded} times");
    }
    println!(
        "256 MiB priority save beside a 512 MiB save_async upload: {:.2} s (median of 3; runs {beside:?})",
        median(beside.clone())
    );
    println!(
        "256 MiB ordinary save beside a 512 MiB save_async upload: {:.2} s (median of 3; runs {shared:?})",
        median(shared.clone())
    );
}
