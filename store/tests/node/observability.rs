//! Issue 18, item 3, with a real node process: the metrics endpoint on an OS-chosen port
//! (learnt from the node's JSON log line), its counters moving with real puts and gets and
//! agreeing with `Stats`, bad HTTP requests refused while the node goes on serving, request
//! ids from the client in the node's JSON log, and a node started on an emptied data folder
//! that held shards saying so.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rackpoint_client::local_cluster::LocalCluster;
use rackpoint_client::transport::next_request_id;
use rackpoint_proto::limits::{CLIENT_REQUEST_TIMEOUT_MS, METRICS_MAX_REQUEST_HEAD_BYTES};
use rackpoint_proto::logs::LOG_FORMAT_ENV;
use rackpoint_proto::Request;
use rackpoint_store::metrics::{sample, series};
use serde_json::Value;

use crate::common::*;

/// The JSON lines of node `ONE`'s log (its stderr), from every start so far.
fn log_lines(cluster: &LocalCluster) -> Vec<Value> {
    let text = std::fs::read_to_string(cluster.node_dir(ONE).join("node.log")).expect("node.log");
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

/// The metrics address the node's latest start logged (before its `listening` line, so it is
/// there once the node is ready).
fn metrics_addr(cluster: &LocalCluster) -> SocketAddr {
    let lines = log_lines(cluster);
    let line = lines
        .iter()
        .rev()
        .find(|l| message(l) == "metrics endpoint serving")
        .expect("the node logged its metrics address");
    line["fields"]["metrics_addr"].as_str().expect("an address").parse().expect("ip:port")
}

/// Sends `request` over TCP and reads the whole reply (the endpoint closes after one).
fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let _ = stream.write_all(request);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// One scrape's body.
fn scrape(addr: SocketAddr) -> String {
    let reply = http(addr, b"GET /metrics HTTP/1.1\r\nHost: node\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    reply.split_once("\r\n\r\n").expect("a body").1.to_owned()
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    let s = series(name, labels);
    sample(text, &s).unwrap_or_else(|| panic!("no {s} in\n{text}")) as u64
}

fn requests(text: &str, kind: &str, outcome: &str) -> u64 {
    value(text, "rackpoint_requests_total", &[("kind", kind), ("outcome", outcome)])
}

#[test]
fn a_node_serves_metrics_that_move_with_real_requests_and_logs_request_ids() {
    let rt = runtime();
    let (_dir, mut cluster) = start(&options(1));
    cluster.terminate(ONE).expect("stops");
    cluster
        .edit_node_config(ONE, |c| c.metrics_addr = Some(([127, 0, 0, 1], 0).into()))
        .expect("node.toml edited");
    cluster.set_node_env(ONE, LOG_FORMAT_ENV, Some("json"));
    cluster.set_node_env(ONE, "RUST_LOG", Some("info,rackpoint_store::service=debug"));
    cluster.restart(ONE).expect("starts");
    let addr = metrics_addr(&cluster);
    assert_ne!(addr.port(), 0, "the OS-chosen port is logged");

    let before = scrape(addr);
    assert_eq!(value(&before, "rackpoint_shards", &[]), 0);
    let shards: Vec<_> = (0..4).map(|i| (shard_key(3, i), payload(u64::from(i), 5000))).collect();
    let timeout = Duration::from_millis(CLIENT_REQUEST_TIMEOUT_MS);
    let ids = rt.block_on(async {
        let t = transport(&cluster);
        let mut ids = Vec::new();
        for (key, bytes) in &shards {
            let id = next_request_id();
            let req = Request::PutShard { key: key.clone(), hash: digest(bytes) };
            t.call_with_id(ONE, &req, bytes.clone(), timeout, id).await.expect("put");
            ids.push(id);
        }
        for (key, bytes) in &shards {
            assert_eq!(get_shard(&t, ONE, key).await.expect("get"), bytes.to_vec());
        }
        get_shard(&t, ONE, &shard_key(4, 0)).await.expect_err("missing");
        let s = stats(&t, ONE).await;
        t.close().await;
        assert_eq!((s.shards, s.started_empty), (4, false));
        assert!(s.disk_free_bytes > 0);
        ids
    });
    let after = scrape(addr);
    assert_eq!(value(&after, "rackpoint_shards", &[]), 4);
    assert_eq!(value(&after, "rackpoint_shard_bytes", &[]), 4 * 5000);
    assert_eq!(value(&after, "rackpoint_job_shard_bytes", &[("job_name", "test-job")]), 20_000);
    assert_eq!(requests(&after, "PutShard", "served") - requests(&before, "PutShard", "served"), 4);
    assert_eq!(requests(&after, "GetShard", "served") - requests(&before, "GetShard", "served"), 4);
    assert_eq!(requests(&after, "GetShard", "failed") - requests(&before, "GetShard", "failed"), 1);
    let received = value(&after, "rackpoint_received_bytes_total", &[]);
    assert!(received >= value(&before, "rackpoint_received_bytes_total", &[]) + 20_000);
    let sent = value(&after, "rackpoint_sent_bytes_total", &[]);
    assert!(sent >= value(&before, "rackpoint_sent_bytes_total", &[]) + 20_000);
    let put_count =
        value(&after, "rackpoint_request_duration_seconds_count", &[("kind", "PutShard")]);
    assert_eq!(put_count, requests(&after, "PutShard", "served"));

    // Garbage and an oversized head get an error status; the node goes on serving both ways.
    let garbage = http(addr, b"\x16\x03\x01 not http at all\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let padding = "p".repeat(METRICS_MAX_REQUEST_HEAD_BYTES * 4);
    let oversized = http(addr, format!("GET /metrics HTTP/1.1\r\nX: {padding}\r\n\r\n").as_bytes());
    assert!(oversized.starts_with("HTTP/1.1 431"), "{oversized}");
    let other = http(addr, b"GET / HTTP/1.1\r\nHost: node\r\n\r\n");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    assert_eq!(value(&scrape(addr), "rackpoint_shards", &[]), 4);
    rt.block_on(async {
        let t = transport(&cluster);
        t.call(ONE, &Request::Hello, Bytes::new()).await.expect("still serving QUIC");
        t.close().await;
    });

    // Each put's id is in the node's request span, with its kind (stopped first, so that
    // every line of the requests it served is written).
    cluster.terminate(ONE).expect("stops");
    let logged: Vec<(String, String)> = log_lines(&cluster)
        .iter()
        .filter(|l| message(l) == "request done")
        .map(|l| {
            let span = &l["span"];
            (
                span["id"].as_str().unwrap_or("").to_owned(),
                span["kind"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for id in &ids {
        let id = id.to_string();
        assert!(
            logged.iter().any(|(i, kind)| *i == id && kind == "PutShard"),
            "request {id} is not in the node's log: {logged:?}"
        );
    }
}

#[test]
fn a_node_restarted_on_an_emptied_data_folder_says_so() {
    let rt = runtime();
    let (_dir, mut cluster) = start(&options(1));
    rt.block_on(async {
        let t = transport(&cluster);
        put_shard(&t, ONE, &shard_key(1, 0), payload(1, 100)).await.expect("put");
        t.close().await;
    });
    let data = cluster.node_dir(ONE).join("data");
    let marker = rackpoint_store::data_marker::marker_path(&data);
    // The node leaves its marker once it holds a shard (it looks every second).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(std::time::Instant::now() < deadline, "no marker at {}", marker.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A restart with its shards kept is no replaced disk.
    cluster.terminate(ONE).expect("stops");
    cluster.set_node_env(ONE, LOG_FORMAT_ENV, Some("json"));
    cluster.restart(ONE).expect("starts");
    let kept = rt.block_on(async {
        let t = transport(&cluster);
        let s = stats(&t, ONE).await;
        t.close().await;
        s
    });
    assert!(!kept.started_empty);
    // The disk is replaced: the data folder comes back empty, node.toml and certificates stay.
    cluster.terminate(ONE).expect("stops");
    std::fs::remove_dir_all(&data).expect("wipe");
    cluster.restart(ONE).expect("starts on the empty folder");
    let wiped = rt.block_on(async {
        let t = transport(&cluster);
        let s = stats(&t, ONE).await;
        t.close().await;
        s
    });
    assert!(wiped.started_empty && wiped.shards == 0, "{wiped:?}");
    let warned = log_lines(&cluster).into_iter().any(|l| {
        l["level"] == "WARN"
            && message(&l).contains("started on an empty data folder")
            && message(&l).contains(&data.display().to_string())
            && message(&l).contains("rackpoint repair")
    });
    assert!(warned, "a WARN line names the folder and the repair");
}
