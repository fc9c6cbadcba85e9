//! The trust boundary against real node processes: a certificate reaches only the jobs its
//! grant names, at its level; a node's certificate is no client; a revoked one is refused on
//! its next request; a slow client cannot starve the others; the orphan grace is the node's;
//! data at rest is the node user's alone.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rackpoint_client::cluster_dir::{self, IdentityFiles};
use rackpoint_client::local_cluster::LocalCluster;
use rackpoint_client::tls::ClientTls;
use rackpoint_client::transport::{Transport, TransportError};
use rackpoint_proto::access::{Access, Grant, Scope};
use rackpoint_proto::limits::MAX_SHARD_BYTES;
use rackpoint_proto::wire::{encode_frame, Message};
use rackpoint_proto::{
    ErrorCode, JobName, ManifestKey, ObjectName, Rank, Request, Response, ShardIndex, ShardKey,
    Step, StripeIndex,
};

use crate::common::*;

/// Issues a certificate named `name` with `access` over `jobs` from the cluster's CA.
fn issue(cluster: &LocalCluster, name: &str, access: Access, jobs: &str) -> IdentityFiles {
    let dir = cluster.cluster_file().parent().expect("cluster folder").to_owned();
    let grant = Grant::new(access, Grant::parse_patterns(jobs).expect("patterns")).expect("grant");
    cluster_dir::issue_client(&dir, name, &grant, 1, &dir.join("identities")).expect("issued").0
}

/// The TLS material of `identity` for this cluster.
fn tls_of(cluster: &LocalCluster, identity: &IdentityFiles) -> ClientTls {
    cluster_dir::load_as(&cluster.cluster_file(), Some(identity)).expect("loads").tls
}

fn transport_as(cluster: &LocalCluster, identity: &IdentityFiles) -> Arc<Transport> {
    Arc::new(Transport::new(cluster.map(), &tls_of(cluster, identity)).expect("transport"))
}

fn named(job: &str) -> JobName {
    JobName::new(job).expect("valid job")
}

fn shard_of(job: &JobName, step: u64) -> ShardKey {
    ShardKey {
        job: job.clone(),
        step: Step(step),
        rank: Rank(0),
        object: ObjectName::new("w").expect("valid"),
        stripe: StripeIndex(0),
        index: ShardIndex(0),
    }
}

fn part_of(job: &JobName, step: u64) -> ManifestKey {
    ManifestKey { job: job.clone(), step: Step(step), rank: Rank(0) }
}

/// One request of every kind against `job` (with its payload): the table the refusal tests
/// walk. Fails if a kind is added to the protocol without a row here.
fn one_of_each_kind(job: &JobName) -> Vec<(Request, Bytes)> {
    let bytes = payload(7, 1024);
    let hash = digest(&bytes);
    let manifest = Bytes::from_static(b"a manifest");
    let rows = vec![
        (Request::Hello, Bytes::new()),
        (Request::PutShard { key: shard_of(job, 1), hash }, bytes.clone()),
        (Request::GetShard { key: shard_of(job, 1) }, Bytes::new()),
        (Request::DeleteCheckpoint { job: job.clone(), step: Step(1) }, Bytes::new()),
        (
            Request::PutManifest { key: part_of(job, 1), world_size: 1, hash: digest(&manifest) },
            manifest.clone(),
        ),
        (Request::GetManifest { key: part_of(job, 1) }, Bytes::new()),
        (Request::ListManifests { job: job.clone(), after: None, limit: 10 }, Bytes::new()),
        (Request::Stats, Bytes::new()),
        (Request::VerifyShard { key: shard_of(job, 1) }, Bytes::new()),
        (Request::DeleteManifest { key: part_of(job, 1), hash: None }, Bytes::new()),
        (
            Request::ReplaceManifest {
                key: part_of(job, 1),
                world_size: 1,
                hash: digest(&manifest),
                revision: 1,
                base: digest(&manifest),
            },
            manifest,
        ),
        (Request::ListParts { job: job.clone(), after: None, limit: 10 }, Bytes::new()),
        (Request::DeleteOrphanShards { key: part_of(job, 1), min_age_ms: 0 }, Bytes::new()),
        (Request::DeleteShard { key: shard_of(job, 1), hash }, Bytes::new()),
        (Request::MarkDeleting { job: job.clone(), step: Step(1) }, Bytes::new()),
        (Request::ClearDeleting { job: job.clone(), step: Step(1) }, Bytes::new()),
        (Request::ListJobs { after: None, limit: 10 }, Bytes::new()),
        (Request::GetClusterMap, Bytes::new()),
        // Refused before its payload is read: any bytes do.
        (Request::PutClusterMap { epoch: 9 }, Bytes::from_static(b"a cluster map")),
    ];
    let kinds: Vec<&str> = rows.iter().map(|(r, _)| r.kind()).collect();
    assert_eq!(kinds, Request::KINDS, "every request kind has a row, in wire order");
    rows
}

fn is_denied(result: &Result<rackpoint_client::transport::Reply, TransportError>) -> bool {
    matches!(result, Err(TransportError::Remote { code: ErrorCode::PermissionDenied, .. }))
}

/// Stores a victim's shard and manifest as the admin.
async fn plant_victim(admin: &Transport, victim: &JobName) -> (Bytes, Bytes) {
    let shard = payload(1, 4096);
    put_shard(admin, ONE, &shard_of(victim, 1), shard.clone()).await.expect("victim shard");
    let manifest = Bytes::from_static(b"the victim's manifest");
    let key = part_of(victim, 1);
    let req = Request::PutManifest { key, world_size: 1, hash: digest(&manifest) };
    admin.call(ONE, &req, manifest.clone()).await.expect("victim manifest");
    (shard, manifest)
}

#[test]
fn a_foreign_jobs_certificate_is_refused_for_every_kind_and_changes_nothing() {
    let (_dir, cluster) = start(&options(1));
    let attacker = issue(&cluster, "attacker", Access::Write, "attacker-*");
    runtime().block_on(async {
        let admin = transport(&cluster);
        let victim = named("victim");
        let (shard, manifest) = plant_victim(&admin, &victim).await;
        let t = transport_as(&cluster, &attacker);
        for (request, body) in one_of_each_kind(&victim) {
            let kind = request.kind();
            let scope = request.needs().scope;
            let result = t.call(ONE, &request, body).await;
            match scope {
                Scope::Job(_) => {
                    let Err(TransportError::Remote { code, message, .. }) = &result else {
                        panic!("{kind} of another job was served: {result:?}");
                    };
                    assert_eq!(*code, ErrorCode::PermissionDenied, "{kind}: {message}");
                    for word in ["victim", "attacker"] {
                        assert!(message.contains(word), "{kind}: {message:?} names {word}");
                    }
                }
                Scope::Cluster => {
                    let Err(TransportError::Remote { code, message, .. }) = &result else {
                        panic!("{kind} of the whole cluster was served: {result:?}");
                    };
                    assert_eq!(*code, ErrorCode::PermissionDenied, "{kind}: {message}");
                    assert!(message.contains("attacker"), "{kind}: {message:?}");
                }
                Scope::Any => {
                    assert!(result.is_ok(), "{kind} is open to every client: {result:?}")
                }
            }
        }
        assert_eq!(get_shard(&admin, ONE, &shard_of(&victim, 1)).await.expect("kept"), shard);
        assert_eq!(get_manifest(&admin, ONE, &part_of(&victim, 1)).await.expect("kept"), manifest);
    });
    let log = std::fs::read_to_string(cluster.node_dir(ONE).join("node.log")).expect("log");
    assert!(
        log.contains("rackpoint::audit") && log.contains("attacker") && log.contains("refused"),
        "every refusal leaves an audit line naming the identity"
    );
}

/// The job names a `ListJobs` page from `t` shows, and whether it says more follow.
async fn listed_jobs(t: &Transport, after: Option<JobName>) -> (Vec<String>, bool) {
    let reply = t.call(ONE, &Request::ListJobs { after, limit: 10 }, Bytes::new()).await;
    match reply.expect("ListJobs is served to every client").response {
        Response::Jobs { jobs, more } => (jobs.iter().map(|j| j.job.to_string()).collect(), more),
        other => panic!("expected Jobs, got {other:?}"),
    }
}

#[test]
fn a_job_scoped_identity_does_not_learn_other_jobs_names() {
    let (_dir, cluster) = start(&options(1));
    let scoped = issue(&cluster, "scoped", Access::Write, "mine-*,exact");
    runtime().block_on(async {
        let admin = transport(&cluster);
        for job in ["victim", "mine-1", "exact", "exact-not", "mine"] {
            plant_victim(&admin, &named(job)).await;
        }
        let all = listed_jobs(&admin, None).await;
        assert_eq!(
            all,
            (
                vec!["exact", "exact-not", "mine", "mine-1", "victim"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                false
            )
        );
        let t = transport_as(&cluster, &scoped);
        let own = vec!["exact".to_string(), "mine-1".to_string()];
        assert_eq!(listed_jobs(&t, None).await, (own, false));
        // Resume points of names it does not reach, before, between and after its own,
        // show nothing more than its own jobs after them.
        assert_eq!(listed_jobs(&t, Some(named("a"))).await.0, ["exact", "mine-1"]);
        assert_eq!(listed_jobs(&t, Some(named("exact-not"))).await.0, ["mine-1"]);
        assert_eq!(listed_jobs(&t, Some(named("victim"))).await, (vec![], false));
    });
}

#[test]
fn each_level_does_what_it_names_and_no_more() {
    let (_dir, cluster) = start(&options(1));
    let job = named("llm-7b");
    let read = issue(&cluster, "reader", Access::Read, "llm-*");
    let append = issue(&cluster, "trainer", Access::Append, "llm-7b");
    let write = issue(&cluster, "owner", Access::Write, "llm-7b");
    runtime().block_on(async {
        let admin = transport(&cluster);
        let (r, a, w) = (
            transport_as(&cluster, &read),
            transport_as(&cluster, &append),
            transport_as(&cluster, &write),
        );
        for (request, body) in one_of_each_kind(&job) {
            let need = request.needs();
            for (level, t) in [(Access::Read, &r), (Access::Append, &a), (Access::Write, &w)] {
                // Each request goes where the one before it left the store, so only the
                // refusal decides: a permitted request may still fail for other reasons.
                let result = t.call(ONE, &request, body.clone()).await;
                let allowed = level >= need.access;
                assert_eq!(
                    !is_denied(&result),
                    allowed,
                    "{} as {level}: {result:?}",
                    request.kind()
                );
            }
        }
        // An append identity takes back exactly the manifest it stored (a commit's
        // rollback), never another one.
        let mine = Bytes::from_static(b"my manifest");
        let key = part_of(&job, 20);
        let put = Request::PutManifest { key: key.clone(), world_size: 1, hash: digest(&mine) };
        a.call(ONE, &put, mine.clone()).await.expect("append stores");
        let theirs = Bytes::from_static(b"someone else's manifest");
        let other = part_of(&job, 21);
        let put = Request::PutManifest { key: other.clone(), world_size: 1, hash: digest(&theirs) };
        admin.call(ONE, &put, theirs.clone()).await.expect("admin stores");
        let undo = Request::DeleteManifest { key: key.clone(), hash: Some(digest(&mine)) };
        let reply = a.call(ONE, &undo, Bytes::new()).await.expect("own rollback");
        assert_eq!(reply.response, Response::ManifestDeleted { existed: true });
        let steal = Request::DeleteManifest { key: other.clone(), hash: Some(digest(&theirs)) };
        assert!(is_denied(&a.call(ONE, &steal, Bytes::new()).await), "not its manifest");
        assert_eq!(get_manifest(&admin, ONE, &other).await.expect("kept"), theirs.to_vec());
    });
}

#[test]
fn a_nodes_certificate_is_no_client() {
    let (_dir, cluster) = start(&options(2));
    let node = cluster.node_dir(ONE);
    let as_node = IdentityFiles { cert: node.join("node.pem"), key: node.join("node.key") };
    runtime().block_on(async {
        let t = transport_as(&cluster, &as_node);
        let other = rackpoint_proto::NodeId(2);
        for request in [Request::Hello, Request::Stats] {
            let result = t.call(other, &request, Bytes::new()).await;
            assert!(
                matches!(
                    result,
                    Err(TransportError::Connect { .. } | TransportError::ConnectionLost { .. })
                ) || is_denied(&result),
                "a node's certificate was served as a client: {result:?}"
            );
        }
    });
}

#[test]
fn a_revoked_certificate_is_refused_on_its_next_request_without_a_restart() {
    let (_dir, mut cluster) = start(&options(1));
    let list = cluster.node_dir(ONE).join("revoked.txt");
    std::fs::write(&list, "# serials or blake3: fingerprints\n").expect("write list");
    cluster.terminate(ONE).expect("stops");
    cluster.edit_node_config(ONE, |c| c.revoked = Some("revoked.txt".into())).expect("edit");
    cluster.restart(ONE).expect("restarts");
    let dir = cluster.cluster_file().parent().expect("folder").to_owned();
    let grant = Grant::new(Access::Read, vec![rackpoint_proto::JobPattern::All]).expect("grant");
    let (files, issued) =
        cluster_dir::issue_client(&dir, "laptop", &grant, 1, &dir.join("ids")).expect("issued");
    runtime().block_on(async {
        let t = transport_as(&cluster, &files);
        let list_req = Request::ListManifests { job: job(), after: None, limit: 1 };
        t.call(ONE, &list_req, Bytes::new()).await.expect("served before revocation");
        std::fs::write(&list, format!("{}  # lost laptop\n", issued.serial)).expect("revoke");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let result = t.call(ONE, &list_req, Bytes::new()).await;
            if is_denied(&result) {
                let Err(TransportError::Remote { message, .. }) = result else { unreachable!() };
                assert!(message.contains("revoked"), "{message}");
                break;
            }
            assert!(Instant::now() < deadline, "still served after the list changed: {result:?}");
            tokio::task::yield_now().await;
        }
    });
}

#[test]
fn the_orphan_grace_is_the_nodes_own_whatever_the_sweep_asks() {
    let mut opts = options(1);
    opts.node_min_orphan_grace_ms = 3_600_000;
    let (_dir, cluster) = start(&opts);
    runtime().block_on(async {
        let admin = transport(&cluster);
        put_shard(&admin, ONE, &shard_key(3, 0), payload(3, 4096)).await.expect("put");
        let sweep = Request::DeleteOrphanShards { key: manifest_key(3, 0), min_age_ms: 0 };
        let reply = admin.call(ONE, &sweep, Bytes::new()).await.expect("sweep");
        assert_eq!(
            reply.response,
            Response::OrphansDeleted { shards: 0, bytes: 0, kept_young: 1 },
            "a save still writing its part is never swept"
        );
    });
}

/// Opens `streams` requests on `conn` that each announce a whole shard and send nothing
/// more; returns their streams (held open).
async fn stall(
    conn: &quinn::Connection,
    streams: usize,
) -> Vec<(quinn::SendStream, quinn::RecvStream)> {
    let key = shard_of(&named("loris"), 1);
    let frame = encode_frame(&Request::PutShard { key, hash: digest(b"x") }, MAX_SHARD_BYTES)
        .expect("encodes");
    let mut held = Vec::new();
    for _ in 0..streams {
        let (mut send, recv) = conn.open_bi().await.expect("stream");
        send.write_all(&frame).await.expect("header");
        held.push((send, recv));
    }
    held
}

#[test]
fn a_slow_loris_client_does_not_stall_anyone_else() {
    let (_dir, cluster) = start(&options(1));
    let loris = issue(&cluster, "loris", Access::Append, "loris");
    let honest = issue(&cluster, "honest", Access::Write, "test-job");
    runtime().block_on(async {
        let config = tls_of(&cluster, &loris).quinn_client_config().expect("config");
        let mut connections = Vec::new();
        let mut held = Vec::new();
        // 6 connections x 9 streams x 16 MiB announced: 864 MiB, past the node's 512 MiB.
        for _ in 0..6 {
            let raw = RawClient::connect_with(&cluster, ONE, config.clone()).await.expect("tls");
            held.extend(stall(&raw.conn, 9).await);
            connections.push(raw);
        }
        // Every request of the honest client is answered within the client's request
        // timeout: a put starved of budget would get `Busy` or time out, and fail here.
        let t = transport_as(&cluster, &honest);
        for step in 0..8 {
            let bytes = payload(step, SHARD_BYTES);
            put_shard(&t, ONE, &shard_key(step, 0), bytes.clone()).await.expect("honest put");
            assert_eq!(get_shard(&t, ONE, &shard_key(step, 0)).await.expect("get"), bytes);
        }
        // The loris's streams lose their budget: each is answered with an error once its
        // payload's deadline (grace + 16 MiB at the minimum rate) passes, or refused at once
        // for want of its share.
        let (_, mut recv) = held.pop().expect("a stalled stream");
        let frame = tokio::time::timeout(Duration::from_secs(60), recv.read_to_end(1 << 20))
            .await
            .expect("the node gives up on the stalled stream")
            .expect("a reply");
        let (response, _) =
            rackpoint_proto::wire::decode_frame::<Response>(&frame).expect("a reply frame");
        assert!(
            matches!(
                response,
                Response::Error { code: ErrorCode::LengthMismatch | ErrorCode::Busy, .. }
            ),
            "{response:?}"
        );
    });
}

#[test]
fn data_at_rest_is_readable_by_the_node_user_only() {
    let (_dir, cluster) = start(&options(1));
    runtime().block_on(async {
        let admin = transport(&cluster);
        put_shard(&admin, ONE, &shard_key(1, 0), payload(1, 4096)).await.expect("put");
    });
    let node = cluster.node_dir(ONE);
    assert_eq!(std::fs::metadata(&node).expect("stat").mode() & 0o777, 0o700);
    let mut checked = 0;
    walk(&node, &mut |path, mode| {
        checked += 1;
        assert_eq!(mode & 0o077, 0, "{} is {:o}", path.display(), mode & 0o777);
    });
    assert!(checked > 5, "walked the data folder");
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, u32)) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        // Certificates are public; everything else the node holds is private.
        if path.extension().is_some_and(|e| e == "pem" || e == "toml") {
            continue;
        }
        visit(&path, meta.mode());
        if meta.is_dir() {
            walk(&path, visit);
        }
    }
}

#[test]
fn a_quota_refuses_the_write_past_it_and_keeps_everything_stored() {
    let (_dir, mut cluster) = start(&options(1));
    cluster.terminate(ONE).expect("stops");
    let limit = 3 * SHARD_BYTES as u64;
    cluster
        .edit_node_config(ONE, |c| {
            c.quota =
                vec![rackpoint_proto::cluster::QuotaRule { jobs: "test-*".into(), bytes: limit }]
        })
        .expect("edit");
    cluster.restart(ONE).expect("restarts");
    runtime().block_on(async {
        let t = transport(&cluster);
        for step in 0..3 {
            put_shard(&t, ONE, &shard_key(step, 0), payload(step, SHARD_BYTES))
                .await
                .expect("fits");
        }
        let again = put_shard(&t, ONE, &shard_key(0, 0), payload(0, SHARD_BYTES)).await;
        assert!(again.is_ok(), "storing the same shard again takes no more room: {again:?}");
        let over = put_shard(&t, ONE, &shard_key(3, 0), payload(3, SHARD_BYTES)).await;
        let Err(TransportError::Remote {
            code: ErrorCode::QuotaExceeded { used, limit: l },
            message,
            ..
        }) = over
        else {
            panic!("past the quota: {over:?}");
        };
        assert_eq!((used, l), (limit, limit), "{message}");
        assert!(message.contains("test-job"), "{message}");
        for step in 0..3 {
            assert_eq!(
                get_shard(&t, ONE, &shard_key(step, 0)).await.expect("kept"),
                payload(step, SHARD_BYTES)
            );
        }
        let other = shard_of(&named("other"), 1);
        put_shard(&t, ONE, &other, payload(9, SHARD_BYTES)).await.expect("no rule: no quota");
        let rm = Request::DeleteCheckpoint { job: job(), step: Step(0) };
        t.call(ONE, &rm, Bytes::new()).await.expect("delete");
        put_shard(&t, ONE, &shard_key(3, 0), payload(3, SHARD_BYTES)).await.expect("room again");
    });
}

#[test]
fn only_write_access_to_the_job_marks_or_clears_a_deletion() {
    let (_dir, cluster) = start(&options(1));
    let job = named("llm-7b");
    let read = issue(&cluster, "reader", Access::Read, "llm-*");
    let append = issue(&cluster, "trainer", Access::Append, "llm-7b");
    let write = issue(&cluster, "owner", Access::Write, "llm-7b");
    let other = issue(&cluster, "neighbour", Access::Write, "llm-13b");
    runtime().block_on(async {
        let admin = transport(&cluster);
        let mark = Request::MarkDeleting { job: job.clone(), step: Step(3) };
        let clear = Request::ClearDeleting { job: job.clone(), step: Step(3) };
        for who in [&read, &append, &other] {
            let t = transport_as(&cluster, who);
            for request in [&mark, &clear] {
                let result = t.call(ONE, request, Bytes::new()).await;
                assert!(
                    is_denied(&result),
                    "{} as {}: {result:?}",
                    request.kind(),
                    who.cert.display()
                );
            }
        }
        let list = Request::ListManifests { job: job.clone(), after: None, limit: 1 };
        let deleting = |r: Response| match r {
            Response::Manifests { deleting, .. } => deleting,
            other => panic!("{other:?}"),
        };
        let listed = admin.call(ONE, &list, Bytes::new()).await.expect("lists").response;
        assert!(deleting(listed).is_empty(), "no refused mark was stored");
        let owner = transport_as(&cluster, &write);
        owner.call(ONE, &mark, Bytes::new()).await.expect("write marks");
        let listed = admin.call(ONE, &list, Bytes::new()).await.expect("lists").response;
        assert_eq!(deleting(listed), [Step(3)]);
        let t = transport_as(&cluster, &append);
        assert!(is_denied(&t.call(ONE, &clear, Bytes::new()).await), "append never clears one");
        owner.call(ONE, &clear, Bytes::new()).await.expect("write clears");
    });
}
