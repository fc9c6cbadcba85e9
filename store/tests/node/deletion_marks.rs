//! Deletion marks against a real node process: a mark is durable (it survives SIGKILL and a
//! restart, and the checkpoint's own delete), every manifest page names the marked steps, no
//! manifest of a marked step is stored until the mark is cleared, and a job holds at most
//! `MAX_DELETION_MARKS_PER_JOB` marks. (Who may mark: `trust.rs`.)

use bytes::Bytes;
use rackpoint_client::transport::{Transport, TransportError};
use rackpoint_proto::limits::MAX_DELETION_MARKS_PER_JOB;
use rackpoint_proto::{ErrorCode, Request, Response, Step};

use crate::common::*;

async fn call(t: &Transport, request: Request) -> Result<Response, TransportError> {
    Ok(t.call(ONE, &request, Bytes::new()).await?.response)
}

fn mark(step: u64) -> Request {
    Request::MarkDeleting { job: job(), step: Step(step) }
}

fn clear(step: u64) -> Request {
    Request::ClearDeleting { job: job(), step: Step(step) }
}

/// The steps the node lists as being deleted, and its manifest count.
async fn listed(t: &Transport) -> (Vec<Step>, usize) {
    let list = Request::ListManifests { job: job(), after: None, limit: 10 };
    match call(t, list).await.expect("lists") {
        Response::Manifests { entries, deleting, .. } => (deleting, entries.len()),
        other => panic!("ListManifests answered {other:?}"),
    }
}

fn code(result: &Result<Response, TransportError>) -> Option<ErrorCode> {
    match result {
        Err(TransportError::Remote { code, .. }) => Some(*code),
        _ => None,
    }
}

#[test]
fn a_mark_survives_sigkill_and_the_delete_and_blocks_manifests_until_cleared() {
    let rt = runtime();
    let (_dir, mut cluster) = start(&options(1));
    let manifest = Bytes::from_static(b"a manifest of step 5");
    rt.block_on(async {
        let t = transport(&cluster);
        put_shard(&t, ONE, &shard_key(5, 0), payload(5, 4096)).await.expect("shard");
        put_manifest(&t, ONE, &manifest_key(5, 0), manifest.clone()).await.expect("manifest");
        assert_eq!(
            call(&t, mark(5)).await.expect("marks"),
            Response::DeletionMark { existed: false }
        );
        assert_eq!(listed(&t).await, (vec![Step(5)], 1), "marked, its manifest still there");
        let delete = Request::DeleteCheckpoint { job: job(), step: Step(5) };
        call(&t, delete).await.expect("deletes");
        t.close().await;
    });
    cluster.kill(ONE).expect("SIGKILL");
    cluster.restart(ONE).expect("restart");
    rt.block_on(async {
        let t = transport(&cluster);
        assert_eq!(
            listed(&t).await,
            (vec![Step(5)], 0),
            "the mark outlives the delete and a crash"
        );
        let refused = put_manifest(&t, ONE, &manifest_key(5, 0), manifest.clone()).await;
        let Err(TransportError::Remote { code: ErrorCode::Conflict, message, .. }) = &refused
        else {
            panic!("a manifest of a marked step was stored: {refused:?}");
        };
        assert!(message.contains("being deleted"), "{message}");
        assert_eq!(
            call(&t, mark(5)).await.expect("again"),
            Response::DeletionMark { existed: true }
        );
        assert_eq!(
            call(&t, clear(5)).await.expect("clears"),
            Response::DeletionMark { existed: true }
        );
        assert_eq!(
            call(&t, clear(5)).await.expect("again"),
            Response::DeletionMark { existed: false }
        );
        assert_eq!(listed(&t).await, (vec![], 0));
        put_manifest(&t, ONE, &manifest_key(5, 0), manifest).await.expect("stored once cleared");
        let s = stats(&t, ONE).await;
        assert_eq!(served_failed(&s, "MarkDeleting"), (1, 0));
        assert_eq!(served_failed(&s, "ClearDeleting"), (2, 0));
    });
    let log = std::fs::read_to_string(cluster.node_dir(ONE).join("node.log")).expect("log");
    assert!(
        log.lines().any(|l| l.contains("rackpoint::audit") && l.contains("ClearDeleting")),
        "clearing a mark is audited"
    );
}

#[test]
fn a_job_holds_a_bounded_number_of_marks() {
    let rt = runtime();
    let (_dir, cluster) = start(&options(1));
    rt.block_on(async {
        let t = transport(&cluster);
        for s in 0..MAX_DELETION_MARKS_PER_JOB as u64 {
            call(&t, mark(s)).await.expect("within the bound");
        }
        let over = call(&t, mark(u64::MAX)).await;
        assert_eq!(code(&over), Some(ErrorCode::TooLarge), "{over:?}");
        let Err(TransportError::Remote { message, .. }) = &over else { unreachable!() };
        assert!(message.contains("MAX_DELETION_MARKS_PER_JOB"), "{message}");
        assert_eq!(
            call(&t, mark(0)).await.expect("an existing mark"),
            Response::DeletionMark { existed: true }
        );
        let (deleting, _) = listed(&t).await;
        assert_eq!(deleting.len(), MAX_DELETION_MARKS_PER_JOB, "every mark on the page");
        call(&t, clear(0)).await.expect("clears");
        call(&t, mark(u64::MAX)).await.expect("room again");
    });
}
