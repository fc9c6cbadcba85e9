//! The metrics text against the node's `Stats` after real requests through the handler, the
//! HTTP listener's bounds, and two measurements (cost per recorded request, one scrape of
//! 1,000 jobs) for the README.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rackpoint_proto::access::Grant;
use rackpoint_proto::{
    Digest, NodeId, NodeStats, ObjectName, Rank, Request, Response, ShardIndex, ShardKey, Step,
    StripeIndex,
};

use super::*;
use crate::engine::{Engine, EngineOptions};
use crate::handler::{InflightBudget, NodeIdentity};
use crate::identity::Caller;
use crate::service::DrainTracker;
use crate::stats::NodeCounters;

struct Fixture {
    _dir: tempfile::TempDir,
    handler: Handler,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(Engine::open(dir.path(), EngineOptions::default()).expect("opens"));
    let identity = NodeIdentity { node_id: NodeId(9), rack: "r".into() };
    let handler = Handler::new(
        engine,
        Arc::new(NodeCounters::default()),
        identity,
        InflightBudget::default(),
    );
    Fixture { _dir: dir, handler }
}

fn admin() -> Caller {
    Caller::in_process("metrics-test", Grant::admin())
}

fn key(job: &str, stripe: u32) -> ShardKey {
    ShardKey {
        job: JobName::new(job).expect("valid"),
        step: Step(1),
        rank: Rank(0),
        object: ObjectName::new("o").expect("valid"),
        stripe: StripeIndex(stripe),
        index: ShardIndex(0),
    }
}

async fn put(h: &Handler, key: ShardKey, bytes: &[u8]) {
    let hash = Digest::of(bytes);
    let reply =
        h.handle(&admin(), Request::PutShard { key, hash }, Bytes::copy_from_slice(bytes)).await;
    assert!(reply.is_ok(), "{:?}", reply.response);
}

async fn stats(h: &Handler) -> NodeStats {
    match h.handle(&admin(), Request::Stats, Bytes::new()).await.response {
        Response::Stats(s) => *s,
        other => panic!("expected stats, got {other:?}"),
    }
}

/// Every line of an OpenMetrics text: comments of three kinds, samples `name{labels} value`
/// with a number, and `# EOF` last.
fn check_format(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(["HELP ", "TYPE ", "UNIT "].iter().any(|p| comment.starts_with(p)), "{line}");
            continue;
        }
        let (name, value) = line.rsplit_once(' ').expect("a sample");
        assert!(name.starts_with("rackpoint_"), "{line}");
        assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{line}");
    }
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = series(name, labels);
    sample(text, &s).unwrap_or_else(|| panic!("no {s} in\n{text}"))
}

#[tokio::test]
async fn the_text_matches_stats_after_real_requests() {
    let f = fixture();
    let h = &f.handler;
    put(h, key("big-job", 0), &[7u8; 3000]).await;
    put(h, key("big-job", 1), &[8u8; 3000]).await;
    put(h, key("small-job", 0), b"tiny").await;
    let got = h.handle(&admin(), Request::GetShard { key: key("big-job", 0) }, Bytes::new()).await;
    assert!(got.is_ok());
    let missing = h.handle(&admin(), Request::GetShard { key: key("none", 0) }, Bytes::new()).await;
    assert!(!missing.is_ok());
    let stats = stats(h).await;
    let text = render(&registry(h.clone()));
    check_format(&text);

    assert_eq!(value(&text, "rackpoint_shards", &[]), stats.shards as f64);
    assert_eq!(stats.shards, 3);
    assert_eq!(value(&text, "rackpoint_shard_bytes", &[]), stats.shard_bytes as f64);
    assert_eq!(value(&text, "rackpoint_manifests", &[]), stats.manifests as f64);
    for c in &stats.requests {
        let kind = c.kind.as_str();
        let served =
            value(&text, "rackpoint_requests_total", &[("kind", kind), ("outcome", "served")]);
        let failed =
            value(&text, "rackpoint_requests_total", &[("kind", kind), ("outcome", "failed")]);
        // The Stats request itself was counted after its snapshot: the scrape sees it.
        let stats_self = u64::from(kind == "Stats");
        assert_eq!((served, failed), ((c.served + stats_self) as f64, c.failed as f64), "{kind}");
        let count = value(&text, "rackpoint_request_duration_seconds_count", &[("kind", kind)]);
        assert_eq!(count, (c.served + c.failed + stats_self) as f64, "{kind}");
    }
    let get_inf = value(
        &text,
        "rackpoint_request_duration_seconds_bucket",
        &[("le", "+Inf"), ("kind", "GetShard")],
    );
    assert_eq!(get_inf, 2.0, "the +Inf bucket counts every request");
    assert_eq!(value(&text, "rackpoint_job_shards", &[("job_name", "big-job")]), 2.0);
    assert_eq!(value(&text, "rackpoint_job_shard_bytes", &[("job_name", "big-job")]), 6000.0);
    assert_eq!(value(&text, "rackpoint_job_shard_bytes", &[("job_name", "small-job")]), 4.0);
    assert_eq!(value(&text, "rackpoint_jobs", &[]), 2.0);
    assert_eq!(value(&text, "rackpoint_corrupt_shards_found_total", &[]), 0.0);
    assert_eq!(value(&text, "rackpoint_started_empty", &[]), 0.0);
    assert!(value(&text, "rackpoint_disk_free_bytes", &[]) > 0.0);
    // The shard read above is a reply not sent yet: its bytes hold the in-flight budget.
    assert_eq!(stats.inflight_bytes, 3000);
    assert_eq!(value(&text, "rackpoint_inflight_bytes", &[]), 3000.0);
    drop(got);
    let text = render(&registry(h.clone()));
    assert_eq!(value(&text, "rackpoint_inflight_bytes", &[]), 0.0);
    let build = [
        ("version", env!("CARGO_PKG_VERSION")),
        ("node", "9"),
        ("wire_min", "1"),
        ("wire_max", &rackpoint_proto::limits::WIRE_VERSION.to_string()),
    ];
    assert_eq!(value(&text, "rackpoint_build_info", &build), 1.0);
}

#[test]
fn per_job_series_are_the_top_jobs_and_the_rest_summed() {
    let usage = |b: u64| JobUsage { shards: 1, shard_bytes: b };
    let jobs: Vec<(JobName, JobUsage)> = (0..50u64)
        .map(|i| (JobName::new(format!("job-{i:02}")).expect("valid"), usage(i * 10)))
        .collect();
    let top = top_jobs(jobs, 3);
    let names: Vec<&str> = top.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["job-49", "job-48", "job-47", OTHER_JOBS]);
    let rest: u64 = (0..47u64).map(|i| i * 10).sum();
    assert_eq!(top[3].1, JobUsage { shards: 47, shard_bytes: rest });
    assert!(JobName::new(OTHER_JOBS).is_err(), "(other) is no job's name");
    let few = top_jobs(vec![(JobName::new("a").expect("valid"), usage(1))], 3);
    assert_eq!(few.len(), 1, "no (other) when every job is named");
}

/// Sends `request` to the listener and reads the whole reply (the server closes after one).
fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    // The server may answer and close before reading all of an oversized request.
    let _ = stream.write_all(request);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_serves_get_metrics_only_and_survives_bad_requests() {
    let f = fixture();
    put(&f.handler, key("j", 0), b"bytes").await;
    let listener = bind(([127, 0, 0, 1], 0).into()).await.expect("binds");
    let addr = listener.local_addr().expect("bound");
    let (stop, stop_rx) = watch::channel(false);
    let tracker = DrainTracker::new();
    let registry = Arc::new(registry(f.handler.clone()));
    let server = tokio::spawn(serve(listener, registry, stop_rx, tracker.guard()));
    let replies = tokio::task::spawn_blocking(move || {
        let oversized = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(METRICS_MAX_REQUEST_HEAD_BYTES * 2)
        );
        [
            http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            http(addr, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"),
            http(addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            http(addr, b"\x00\x01garbage that is no HTTP\r\n\r\n"),
            http(addr, oversized.as_bytes()),
            http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        ]
    })
    .await
    .expect("no panic");
    let status = |r: &str| r.lines().next().unwrap_or("").to_owned();
    assert_eq!(status(&replies[0]), "HTTP/1.1 200 OK", "{}", replies[0]);
    assert!(replies[0].contains(CONTENT_TYPE), "{}", replies[0]);
    let body = replies[0].split_once("\r\n\r\n").expect("a body").1;
    check_format(body);
    assert_eq!(sample(body, "rackpoint_shards"), Some(1.0));
    assert_eq!(status(&replies[1]), "HTTP/1.1 404 Not Found");
    assert_eq!(status(&replies[2]), "HTTP/1.1 404 Not Found");
    assert!(status(&replies[3]).starts_with("HTTP/1.1 400"), "{}", replies[3]);
    assert!(status(&replies[4]).starts_with("HTTP/1.1 431"), "{}", replies[4]);
    assert_eq!(status(&replies[5]), "HTTP/1.1 200 OK", "still serving after bad requests");
    stop.send_replace(true);
    server.await.expect("the server stops");
    tokio::time::timeout(Duration::from_secs(30), tracker.wait()).await.expect("drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_scraper_is_dropped_and_others_are_served_meanwhile() {
    let f = fixture();
    let listener = bind(([127, 0, 0, 1], 0).into()).await.expect("binds");
    let addr = listener.local_addr().expect("bound");
    let (_stop, stop_rx) = watch::channel(false);
    let registry = Arc::new(registry(f.handler.clone()));
    tokio::spawn(serve(listener, registry, stop_rx, DrainTracker::new().guard()));
    let (silent_closed_after, served) = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut silent = std::net::TcpStream::connect(addr).expect("connects");
        silent.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let served = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut rest = Vec::new();
        let _ = silent.read_to_end(&mut rest);
        (started.elapsed(), served)
    })
    .await
    .expect("no panic");
    assert!(served.starts_with("HTTP/1.1 200 OK"), "{served}");
    // Closed by the head timeout: a scraper that never sends holds its slot for that long.
    assert!(silent_closed_after < Duration::from_millis(METRICS_CONNECTION_TIMEOUT_MS + 5_000));
}

/// User plus system CPU time of this process, from /proc (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after_name = stat.rsplit_once(')').expect("a name in parentheses").1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); after the name, field 3 is index 0.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// The metrics' cost per request on the node: one `record_request` (counters and latency
/// histogram) and the bytes in and out, in CPU ns, median of 5 runs; and one scrape's time and
/// size with 1,000 jobs' counters. Run with `cargo test --release --workspace --lib --
/// --ignored --nocapture metrics_cost`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn metrics_cost() {
    const CALLS: u32 = 20_000_000;
    let counters = NodeCounters::default();
    let mut per_call = Vec::new();
    for run in 0..5 {
        let before = cpu_time();
        for i in 0..CALLS {
            let kind = Request::KINDS[(i as usize + run) % Request::KINDS.len()];
            counters.record_bytes_in(u64::from(i & 0xfff));
            counters.record_request(kind, i % 97 != 0, Duration::from_micros(u64::from(i % 5000)));
            counters.record_bytes_out(64);
        }
        per_call.push((cpu_time() - before).as_nanos() as f64 / f64::from(CALLS));
    }
    per_call.sort_by(f64::total_cmp);
    println!(
        "metrics cost per request: {:.1} CPU ns (median of 5; runs {per_call:.1?})",
        per_call[2]
    );

    let f = fixture();
    for j in 0..1000u32 {
        put(&f.handler, key(&format!("job-{j:04}"), 0), &j.to_be_bytes()).await;
    }
    let registry = registry(f.handler.clone());
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..9 {
        let started = Instant::now();
        size = render(&registry).len();
        times.push(started.elapsed());
    }
    times.sort();
    println!("one scrape with 1000 jobs: {:?} (median of 9), {size} bytes", times[4]);
}
