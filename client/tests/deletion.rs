//! Issue 17, finding 4, replayed against real node processes: with the three nodes that hold
//! the newest step's manifests killed (SIGKILL), `ls` says which nodes it did not see (stderr
//! and `--json`), `gc --keep 1` deletes nothing and exits 4, `gc --keep 1 --force` marks and
//! deletes what it reaches and exits 4 naming the nodes; once they are back the steps it
//! deleted are listed as being deleted (never complete), refused by `get --step`, `put` and
//! `get --latest`, and the next `gc` finishes the deletes until no node holds a shard, a
//! manifest or a mark of them.

mod common;

use std::collections::BTreeSet;
use std::process::Output;

use bytes::Bytes;
use common::{client, data, doc as json_doc, job, rackpoint, request, six_nodes, text};
use rackpoint_client::transport::Transport;
use rackpoint_proto::{NodeId, Request, Response};
use serde_json::Value;

const SHARD: u32 = 64 * 1024;

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

/// Steps the `ls --json` document lists, with (complete, deleting).
fn listed(doc: &Value) -> Vec<(u64, bool, bool)> {
    doc["checkpoints"]
        .as_array()
        .expect("checkpoints")
        .iter()
        .map(|c| {
            let flag = |k: &str| c[k].as_bool().expect("a bool");
            (c["step"].as_u64().expect("step"), flag("complete"), flag("deleting"))
        })
        .collect()
}

fn numbers(v: &Value) -> Vec<u64> {
    v.as_array().expect("an array").iter().map(|n| n.as_u64().expect("a number")).collect()
}

/// What `node` holds of `job`: (steps with shards, steps with manifests, steps marked).
async fn held(t: &Transport, node: NodeId, job: &rackpoint_proto::JobName) -> [BTreeSet<u64>; 3] {
    let parts = Request::ListParts { job: job.clone(), after: None, limit: 512 };
    let Response::Parts { entries, .. } =
        t.call(node, &parts, Bytes::new()).await.expect("ListParts").response
    else {
        panic!("ListParts answered otherwise")
    };
    let shards = entries.iter().map(|p| p.step.0).collect();
    let list = Request::ListManifests { job: job.clone(), after: None, limit: 512 };
    let Response::Manifests { entries, deleting, .. } =
        t.call(node, &list, Bytes::new()).await.expect("ListManifests").response
    else {
        panic!("ListManifests answered otherwise")
    };
    let manifests = entries.iter().map(|e| e.step.0).collect();
    [shards, manifests, deleting.iter().map(|s| s.0).collect()]
}

#[test]
fn a_gc_while_the_newest_steps_manifests_are_down_cannot_half_delete() {
    let mut tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let j = job("finding-4");
    let steps = [400u64, 500, 600, 700];
    let manifest_nodes: Vec<BTreeSet<NodeId>> = rt.block_on(async {
        let c = client(&tc);
        let mut nodes = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let bytes = data(*step, 300_000 + i * 1000);
            let r = c
                .save(request(&j, *step, 0, 1, &[("optim.bin", bytes.as_slice())]))
                .await
                .expect("save");
            nodes.push(r.manifest_nodes.into_iter().collect());
        }
        nodes
    });
    let down: Vec<NodeId> = manifest_nodes[3].iter().copied().collect();
    assert_eq!(down.len(), 3, "m + 1 copies of step 700's manifest");
    for n in &down {
        tc.cluster.kill(*n).expect("SIGKILL");
    }
    let down_ids: Vec<u64> = down.iter().map(|n| u64::from(n.0)).collect();
    let down_text = down.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
    // What a listing without the three can see: steps with a manifest copy elsewhere.
    let visible: Vec<u64> = steps
        .iter()
        .zip(&manifest_nodes)
        .filter(|(_, nodes)| nodes.iter().any(|n| !down.contains(n)))
        .map(|(s, _)| *s)
        .collect();
    assert!(!visible.contains(&700));
    assert!(visible.len() >= 2, "the placement leaves something for gc to delete: {visible:?}");
    let deleted: Vec<u64> = visible[..visible.len() - 1].to_vec();

    // `ls` admits what it did not see.
    let ls = rackpoint(&cluster, &["ls", "finding-4", "--json"]);
    assert_eq!(code(&ls), 0, "{}", text(&ls.stderr));
    let doc = json_doc(&ls);
    assert_eq!(numbers(&doc["unseen_nodes"]), down_ids);
    let shown: Vec<u64> = listed(&doc).iter().map(|c| c.0).collect();
    assert_eq!(shown, visible);
    let stderr = text(&ls.stderr);
    assert!(
        stderr.contains(&format!("warning: nodes {down_text} do not answer"))
            && stderr.contains("may be incomplete"),
        "{stderr}"
    );

    // `gc` refuses without --force, and deletes nothing.
    let gc = rackpoint(&cluster, &["gc", "finding-4", "--keep", "1"]);
    let stderr = text(&gc.stderr);
    assert_eq!(code(&gc), 4, "{stderr}");
    assert!(stderr.contains("--force") && stderr.contains(&down_text), "{stderr}");
    let again = json_doc(&rackpoint(&cluster, &["ls", "finding-4", "--json"]));
    assert!(listed(&again).iter().all(|c| c.1 && !c.2), "all still complete: {again}");

    // With --force it marks, deletes what it reaches, and says what is left (exit 4).
    let gc = rackpoint(&cluster, &["gc", "finding-4", "--keep", "1", "--force"]);
    let stderr = text(&gc.stderr);
    assert_eq!(code(&gc), 4, "{}\n{stderr}", text(&gc.stdout));
    assert!(stderr.contains("not finished") && stderr.contains(&down_text), "{stderr}");

    for n in &down {
        tc.cluster.restart(*n).expect("restart");
    }

    // Back: the deleted steps are never listed as complete, whatever the nodes that
    // missed the delete still hold.
    let ls = rackpoint(&cluster, &["ls", "finding-4", "--json"]);
    assert_eq!(code(&ls), 0, "{}", text(&ls.stderr));
    let doc = json_doc(&ls);
    assert!(numbers(&doc["unseen_nodes"]).is_empty(), "{doc}");
    for (step, complete, deleting) in listed(&doc) {
        let gone = deleted.contains(&step);
        assert_eq!((complete, deleting), (!gone, gone), "step {step}: {doc}");
    }
    assert!(listed(&doc).iter().any(|c| c.0 == 700 && c.1), "700 is back: {doc}");
    let text_ls = rackpoint(&cluster, &["ls", "finding-4"]);
    assert!(text(&text_ls.stdout).contains("DELETING"), "{}", text(&text_ls.stdout));

    // Never restored, never saved into.
    let victim = deleted[0].to_string();
    let out = tc.dir.path().join("out");
    let get = rackpoint(
        &cluster,
        &["get", "finding-4", "--step", &victim, "--out", out.to_str().expect("utf-8")],
    );
    assert_eq!(code(&get), 1, "{}", text(&get.stderr));
    assert!(text(&get.stderr).contains("being deleted"), "{}", text(&get.stderr));
    let file = tc.dir.path().join("optim.bin");
    std::fs::write(&file, data(9, 1000)).expect("write");
    let put = rackpoint(&cluster, &["put", "finding-4", &victim, file.to_str().expect("utf-8")]);
    assert_eq!(code(&put), 1, "{}", text(&put.stderr));
    assert!(text(&put.stderr).contains("being deleted"), "{}", text(&put.stderr));

    // Remove every step not being deleted: `get --latest` then must not restore one.
    for step in steps.iter().filter(|s| !deleted.contains(s)) {
        let rm = rackpoint(&cluster, &["rm", "finding-4", "--step", &step.to_string()]);
        assert_eq!(code(&rm), 0, "{}", text(&rm.stderr));
    }
    let get = rackpoint(
        &cluster,
        &["get", "finding-4", "--latest", "--out", out.to_str().expect("utf-8")],
    );
    assert_eq!(code(&get), 1, "{}", text(&get.stderr));
    assert!(text(&get.stderr).contains("being deleted"), "{}", text(&get.stderr));
    rt.block_on(async {
        let c = client(&tc);
        assert!(c.resume(&j).await.expect("resume").is_none(), "nothing to resume from");
    });

    // The next gc finishes the deletes: no shard, manifest or mark of them is left.
    let gc = rackpoint(&cluster, &["gc", "finding-4", "--keep", "1"]);
    assert_eq!(code(&gc), 0, "{}\n{}", text(&gc.stdout), text(&gc.stderr));
    assert!(text(&gc.stdout).contains("finished the pending deletes"), "{}", text(&gc.stdout));
    rt.block_on(async {
        let t = Transport::new(tc.cluster.map(), tc.cluster.tls()).expect("transport");
        for node in tc.cluster.map().nodes.iter().map(|n| n.id) {
            let [shards, manifests, marks] = held(&t, node, &j).await;
            assert!(
                shards.is_empty() && manifests.is_empty() && marks.is_empty(),
                "node {node} still holds shards of {shards:?}, manifests of {manifests:?}, marks of {marks:?}"
            );
        }
    });
    let ls = rackpoint(&cluster, &["ls", "finding-4"]);
    assert_eq!(code(&ls), 1, "no checkpoint left: {}", text(&ls.stderr));
}

#[test]
fn an_rm_that_cannot_mark_m_plus_one_nodes_deletes_nothing() {
    let mut tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let j = job("few-nodes");
    rt.block_on(async {
        let c = client(&tc);
        c.save(request(&j, 1, 0, 1, &[("w.bin", data(1, 200_000).as_slice())]))
            .await
            .expect("save");
    });
    // Four of six down: two nodes answer, short of the m + 1 = 3 a mark needs.
    for n in [1, 2, 3, 4] {
        tc.cluster.kill(NodeId(n)).expect("SIGKILL");
    }
    let rm = rackpoint(&cluster, &["rm", "few-nodes", "--step", "1"]);
    let stderr = text(&rm.stderr);
    assert_eq!(code(&rm), 4, "{stderr}");
    assert!(stderr.contains("nothing was deleted") && stderr.contains("1, 2, 3, 4"), "{stderr}");
    for n in [1, 2, 3, 4] {
        tc.cluster.restart(NodeId(n)).expect("restart");
    }
    let ls = json_doc(&rackpoint(&cluster, &["ls", "few-nodes", "--json"]));
    assert_eq!(listed(&ls), [(1, true, false)], "untouched and not marked: {ls}");
    let get = rackpoint(
        &cluster,
        &[
            "get",
            "few-nodes",
            "--latest",
            "--out",
            tc.dir.path().join("o").to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code(&get), 0, "{}", text(&get.stderr));
}
