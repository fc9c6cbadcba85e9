//! Growing and shrinking a cluster with real node processes: `rackpoint cluster add-node`
//! and `decommission` raise the map's epoch, sign it with the cluster CA and push it; a
//! client still holding the old `cluster.toml` learns the new map from the nodes and places
//! new shards by it; a node keeps the map across SIGKILL; and nobody but the admin
//! authority can change the map a client takes (a job's credential, a node's credential,
//! an unsigned, foreign-signed or older map, or a node serving a map of another CA).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use common::{client, data, doc, job, rackpoint_args, request, s, six_nodes, text};
use rackpoint_client::certs::ClusterCa;
use rackpoint_client::cluster_dir::{self, IdentityFiles, NODE_MAP_FILE};
use rackpoint_client::local_cluster::find_store_binary;
use rackpoint_client::restore::Which;
use rackpoint_client::tls::ClientTls;
use rackpoint_client::transport::{Transport, TransportError};
use rackpoint_client::Client;
use rackpoint_proto::access::{Access, Grant, JobPattern};
use rackpoint_proto::cluster::{ClientTlsPaths, ClusterLayout};
use rackpoint_proto::signed_map::SignedMap;
use rackpoint_proto::{ClusterMap, ErrorCode, JobName, NodeId, Rank, Request, Response, Step};

const SHARD: u32 = 64 * 1024;

/// The cluster CA of a cluster folder, as the admin tool loads it.
fn cluster_ca(dir: &Path) -> ClusterCa {
    let read = |p: PathBuf| std::fs::read_to_string(p).expect("read");
    ClusterCa::load(&read(dir.join("ca.pem")), &read(dir.join("authority/ca.key"))).expect("CA")
}

fn ca_der(dir: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(dir.join("ca.pem")).expect("ca.pem");
    rustls::pki_types::CertificateDer::from_pem_slice(&pem).expect("PEM").to_vec()
}

fn tls_as(dir: &Path, identity: &IdentityFiles) -> ClientTls {
    let paths = ClientTlsPaths {
        ca: dir.join("ca.pem"),
        cert: identity.cert.clone(),
        key: identity.key.clone(),
    };
    ClientTls::from_pem_files(&paths).expect("identity loads")
}

fn admin_files(dir: &Path) -> IdentityFiles {
    IdentityFiles { cert: dir.join("admin.pem"), key: dir.join("admin.key") }
}

/// The signed map a node serves, verified against the cluster CA.
async fn served_map(t: &Transport, node: NodeId, dir: &Path) -> SignedMap {
    let reply = t.call(node, &Request::GetClusterMap, Bytes::new()).await.expect("served");
    assert!(matches!(reply.response, Response::ClusterMap { .. }), "{:?}", reply.response);
    SignedMap::open(&reply.payload, &[&ca_der(dir)]).expect("signed by the cluster CA")
}

/// Shards of `job`'s step `step` a node holds, by its own listing.
async fn shards_on(t: &Transport, node: NodeId, job: &JobName, step: u64) -> u64 {
    let req = Request::ListParts { job: job.clone(), after: None, limit: 1000 };
    match t.call(node, &req, Bytes::new()).await.expect("ListParts").response {
        Response::Parts { entries, .. } => {
            entries.iter().filter(|p| p.step == Step(step)).map(|p| p.shards).sum()
        }
        other => panic!("{other:?}"),
    }
}

fn remote_code(result: &Result<rackpoint_client::transport::Reply, TransportError>) -> ErrorCode {
    match result {
        Err(TransportError::Remote { code, .. }) => *code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_node_takes_new_shards_and_a_stale_client_learns_the_map() {
    let mut tc = six_nodes(SHARD);
    let dir = tc.dir.path().to_owned();
    let job = job("grow");
    let first = data(1, 2 << 20);
    client(&tc).save(request(&job, 1, 0, 1, &[("w", &first)])).await.expect("save on 6 nodes");
    // A client's file made before the node was added: 6 nodes, epoch 0.
    let stale = dir.join("stale.toml");
    std::fs::copy(dir.join("cluster.toml"), &stale).expect("copy");

    let out = rackpoint_args(&["cluster", "add-node", "--dir", s(&dir), "--json"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let d = doc(&out);
    assert_eq!((d["epoch"].as_u64(), d["node"]["id"].as_u64()), (Some(1), Some(7)), "{d}");
    let pushed = d["pushed"].as_array().expect("pushed");
    assert_eq!(pushed.len(), 6, "every running node, not the new one: {d}");
    assert!(pushed.iter().all(|p| p["outcome"] == "stored"), "{d}");
    assert!(d["start"].as_str().is_some_and(|c| c.contains("node-7/node.toml")), "{d}");

    assert_eq!(tc.cluster.reload_map().expect("reload"), vec![NodeId(7)]);
    tc.cluster.restart(NodeId(7)).expect("node 7 starts with its folder's map");
    let new_map: ClusterMap = tc.cluster.map().clone();
    let t = Transport::new(&new_map, tc.cluster.tls()).expect("transport");
    for id in 1..=7 {
        let served = served_map(&t, NodeId(id), &dir).await;
        assert_eq!(served.layout(), &new_map.layout(), "node {id} serves epoch 1");
    }

    let c = Client::connect(&stale).expect("connects with the stale file");
    let second = data(2, 2 << 20);
    c.save(request(&job, 2, 0, 1, &[("w", &second)])).await.expect("save on 7 nodes");
    let learned = c.map();
    assert_eq!((learned.epoch, learned.nodes.len()), (1, 7));
    assert_eq!(
        learned.tls,
        ClusterMap::from_toml(&std::fs::read_to_string(&stale).expect("read")).expect("toml").tls
    );
    assert!(shards_on(&t, NodeId(7), &job, 2).await > 0, "the new node takes new stripes");
    assert_eq!(shards_on(&t, NodeId(7), &job, 1).await, 0, "no data moved by add-node");
    for (step, bytes) in [(1, &first), (2, &second)] {
        let (_, restored) =
            c.restore(&job, Which::Step(Step(step)), Rank(0)).await.expect("restore");
        assert_eq!(&restored[0].bytes, bytes, "step {step}");
    }

    // A node killed with SIGKILL and started again still serves the map it took.
    tc.cluster.kill(NodeId(3)).expect("kill");
    tc.cluster.restart(NodeId(3)).expect("restart");
    let t = Transport::new(&new_map, tc.cluster.tls()).expect("transport");
    assert_eq!(served_map(&t, NodeId(3), &dir).await.epoch(), 1);

    // Decommission node 2: the next save places nothing on it.
    let out =
        rackpoint_args(&["cluster", "decommission", "--dir", s(&dir), "--node", "2", "--json"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let d = doc(&out);
    assert_eq!(d["epoch"].as_u64(), Some(2), "{d}");
    assert!(
        d["pushed"].as_array().expect("pushed").iter().all(|p| p["outcome"] == "stored"),
        "{d}"
    );
    let c = Client::connect(&stale).expect("connects");
    let third = data(3, 2 << 20);
    c.save(request(&job, 3, 0, 1, &[("w", &third)])).await.expect("save");
    assert_eq!(c.map().epoch, 2);
    assert!(c.map().node(NodeId(2)).is_some_and(|n| n.decommissioned));
    assert_eq!(shards_on(&t, NodeId(2), &job, 3).await, 0, "a decommissioned node takes nothing");
    assert!(shards_on(&t, NodeId(2), &job, 2).await > 0, "it keeps what it holds");
    let (_, restored) = c.restore(&job, Which::Step(Step(2)), Rank(0)).await.expect("restore");
    assert_eq!(restored[0].bytes, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_authority_changes_the_map_a_client_takes() {
    let mut tc = six_nodes(SHARD);
    let dir = tc.dir.path().to_owned();
    let ca = cluster_ca(&dir);
    let map = tc.cluster.map().clone();
    let layout = |epoch| ClusterLayout { epoch, ..map.layout() };
    let one = ca.sign_layout(&layout(1)).expect("signs");

    // A job's credential with write access to every job is no admin.
    let grant = Grant::new(Access::Write, vec![JobPattern::All]).expect("grant");
    let (writer, _) =
        cluster_dir::issue_client(&dir, "writer", &grant, 1, &dir.join("ids")).expect("issued");
    let t = Transport::new(&map, &tls_as(&dir, &writer)).expect("transport");
    let push = Request::PutClusterMap { epoch: 1 };
    let refused = t.call(NodeId(1), &push, Bytes::from(one.clone())).await;
    assert_eq!(remote_code(&refused), ErrorCode::PermissionDenied);
    let served = t.call(NodeId(1), &Request::GetClusterMap, Bytes::new()).await.expect("served");
    assert_eq!(
        served.response,
        Response::ClusterMap { epoch: 0 },
        "the node keeps serving its map"
    );

    // A node's credential is no client at all.
    let node = tc.cluster.node_dir(NodeId(1));
    let as_node = IdentityFiles { cert: node.join("node.pem"), key: node.join("node.key") };
    let t = Transport::new(&map, &tls_as(&dir, &as_node)).expect("transport");
    let result = t.call(NodeId(2), &push, Bytes::from(one.clone())).await;
    assert!(
        matches!(
            result,
            Err(TransportError::Connect { .. } | TransportError::ConnectionLost { .. })
        ) || matches!(
            result,
            Err(TransportError::Remote { code: ErrorCode::PermissionDenied, .. })
        ),
        "a node's certificate pushed a map: {result:?}"
    );

    // The admin: unsigned, foreign-signed, misnamed and older maps are refused.
    let admin = Transport::new(&map, &tls_as(&dir, &admin_files(&dir))).expect("transport");
    let call = |req: Request, body: Vec<u8>| {
        let admin = &admin;
        async move { admin.call(NodeId(1), &req, Bytes::from(body)).await }
    };
    let unsigned = call(push.clone(), b"a map nobody signed".to_vec()).await;
    assert_eq!(remote_code(&unsigned), ErrorCode::UnsignedMap);
    let foreign = ClusterCa::generate().expect("CA").sign_layout(&layout(1)).expect("signs");
    assert_eq!(remote_code(&call(push.clone(), foreign).await), ErrorCode::UnsignedMap);
    let mut flipped = one.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(remote_code(&call(push.clone(), flipped).await), ErrorCode::UnsignedMap);
    let said_two = call(Request::PutClusterMap { epoch: 2 }, one.clone()).await;
    assert_eq!(remote_code(&said_two), ErrorCode::Malformed);
    let two = ca.sign_layout(&layout(2)).expect("signs");
    let stored = call(Request::PutClusterMap { epoch: 2 }, two.clone()).await.expect("taken");
    assert_eq!(stored.response, Response::ClusterMapStored { existed: false });
    let replay = call(push.clone(), one.clone()).await;
    assert_eq!(remote_code(&replay), ErrorCode::StaleMap { held: 2 });
    assert_eq!(served_map(&admin, NodeId(1), &dir).await.epoch(), 2);
    for id in 2..=6 {
        let req = Request::PutClusterMap { epoch: 2 };
        admin.call(NodeId(id), &req, Bytes::from(two.clone())).await.expect("taken");
    }

    // Node 1 turned hostile: it trusts a second CA too and serves a map of epoch 9 signed
    // by it. A client asks it first (the highest epoch), refuses that map, and takes the
    // cluster's epoch 2 from another node.
    let rogue = ClusterCa::generate().expect("CA");
    let mut bigger = layout(9);
    bigger.nodes.truncate(1);
    std::fs::write(node.join(NODE_MAP_FILE), rogue.sign_layout(&bigger).expect("signs"))
        .expect("write");
    let both = format!("{}{}", ca.cert_pem(), rogue.cert_pem());
    std::fs::write(node.join("rogue-ca.pem"), both).expect("write");
    tc.cluster.edit_node_config(NodeId(1), |c| c.ca = "rogue-ca.pem".into()).expect("edit");
    tc.cluster.kill(NodeId(1)).expect("kill");
    tc.cluster.restart(NodeId(1)).expect("restart with the rogue map");
    let admin = Transport::new(&map, &tls_as(&dir, &admin_files(&dir))).expect("transport");
    let rogue_served = admin.call(NodeId(1), &Request::Hello, Bytes::new()).await.expect("hello");
    assert!(
        matches!(rogue_served.response, Response::Hello { map_epoch: 9, .. }),
        "{:?}",
        rogue_served.response
    );
    let c = client(&tc);
    let learned = c.newest_map().await;
    assert_eq!((learned.epoch, learned.nodes.len()), (2, 6), "the CA's map, not node 1's");
    let j = job("still-works");
    c.save(request(&j, 1, 0, 1, &[("x", &data(9, 100_000))])).await.expect("saves");

    // A node of the previous release (wire version 2) is never sent a map: the push is a
    // typed error naming the node and the request, and its Hello says no epoch.
    tc.cluster.edit_node_config(NodeId(2), |c| c.wire_version_max = Some(2)).expect("edit");
    tc.cluster.kill(NodeId(2)).expect("kill");
    tc.cluster.restart(NodeId(2)).expect("restart as the previous release");
    let admin = Transport::new(&map, &tls_as(&dir, &admin_files(&dir))).expect("transport");
    let old = admin.call(NodeId(2), &Request::PutClusterMap { epoch: 3 }, Bytes::from(two)).await;
    assert!(
        matches!(
            old,
            Err(TransportError::PeerTooOld {
                node: NodeId(2),
                kind: "PutClusterMap",
                version: 2,
                since: 3
            })
        ),
        "{old:?}"
    );
    let hello = admin.call(NodeId(2), &Request::Hello, Bytes::new()).await.expect("hello");
    assert!(matches!(hello.response, Response::Hello { map_epoch: 0, .. }), "{:?}", hello.response);
    let c = client(&tc);
    assert_eq!(c.newest_map().await.epoch, 2, "learned from the others");
}

/// Reads a `cluster up --json` child's first document (printed once its nodes listen).
fn up_document(child: &mut Child) -> serde_json::Value {
    let stdout = child.stdout.as_mut().expect("piped");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn cluster_up(dir: &Path) -> Child {
    common::rackpoint_bin()
        .args(["cluster", "up", "--dir", s(dir), "--json"])
        .env("RACKPOINT_STORE_BIN", find_store_binary().expect("built"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cluster up")
}

fn stop(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    child.wait().expect("exits");
}

#[test]
fn a_node_added_while_cluster_up_runs_starts_by_hand_and_with_the_next_up() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("c");
    let out = rackpoint_args(&[
        "cluster",
        "init",
        "--dir",
        s(&dir),
        "--nodes",
        "3",
        "--k",
        "2",
        "--m",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut up = cluster_up(&dir);
    assert_eq!(up_document(&mut up)["nodes"].as_array().map(Vec::len), Some(3));
    let out = rackpoint_args(&["cluster", "add-node", "--dir", s(&dir), "--json"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let d = doc(&out);
    // The command the output gives, run as given (without its log redirection).
    let start = d["start"].as_str().expect("start");
    let config = start.split_whitespace().nth(2).expect("--config PATH");
    let mut by_hand = Command::new(find_store_binary().expect("built"))
        .args(["--config", config])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node 4 starts");
    let mut line = String::new();
    BufReader::new(by_hand.stdout.as_mut().expect("piped")).read_line(&mut line).expect("read");
    assert!(line.starts_with("listening "), "{line}");
    let t_file = dir.join("cluster.toml");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = Client::connect(&t_file).expect("connects");
        assert_eq!(c.newest_map().await.nodes.len(), 4);
        let status = c.status().await;
        assert!(status.iter().all(|n| n.stats.is_ok()), "all 4 answer: {status:?}");
        c.close().await;
    });
    stop(by_hand);
    stop(up);
    let mut up = cluster_up(&dir);
    let nodes = up_document(&mut up)["nodes"].as_array().map(Vec::len);
    stop(up);
    assert_eq!(nodes, Some(4), "the next cluster up starts the added node too");
}
