//! What to say when a job's checkpoint is not there: no such job, no complete checkpoint, or
//! unavailable (nodes that may hold it do not answer). "No such job" and "no checkpoint" are
//! said only when at most m nodes are silent: a part's manifest is on m + 1 nodes, so every
//! committed part was then listed. Nothing here calls "lost" what a node did not answer about.

use rackpoint_proto::{JobName, NodeId, Rank};

use crate::checkpoint_choice::{why_none, WhyNone};
use crate::ctx::Ctx;
use crate::error::{ClientError, NodeList, PassedOver, PassedOverList};
use crate::listing::Listing;
use crate::manifest::Which;

/// The nodes believed down, sorted.
fn down_nodes(ctx: &Ctx) -> Vec<NodeId> {
    let mut down = ctx.health.down_nodes();
    down.sort();
    down
}

/// `Unavailable` for `asked`, when so many nodes do not answer (more than m) that a listing
/// may miss committed parts: every manifest copy of a part may be on them.
pub(crate) fn out_of_reach(ctx: &Ctx, job: &JobName, asked: Which) -> Option<ClientError> {
    let down = down_nodes(ctx);
    (down.len() > usize::from(ctx.map.code.m)).then(|| ClientError::Unavailable {
        job: job.clone(),
        asked,
        nodes: NodeList(down),
        passed_over: PassedOverList::default(),
    })
}

/// Why `latest` found no checkpoint to take, after passing over `passed_over` (newest first),
/// as the core's [`why_none`] judges it: unavailable (naming the nodes to bring back), no
/// such job, or no complete checkpoint.
pub(crate) fn no_checkpoint(ctx: &Ctx, job: &JobName, passed_over: Vec<PassedOver>) -> ClientError {
    let job = job.clone();
    match why_none(&passed_over, &down_nodes(ctx), usize::from(ctx.map.code.m)) {
        WhyNone::Unavailable { nodes } => {
            let (nodes, passed_over) = (NodeList(nodes), PassedOverList(passed_over));
            ClientError::Unavailable { job, asked: Which::Latest, nodes, passed_over }
        }
        WhyNone::NoSuchJob => ClientError::NoSuchJob { job },
        WhyNone::NoCheckpoint => {
            ClientError::NoCheckpoint { job, passed_over: PassedOverList(passed_over) }
        }
    }
}

/// Why part `(asked, rank)` is not in `listing`: unavailable if the listing may miss parts,
/// no such job if it is empty, else no such part.
pub(crate) fn not_listed(
    ctx: &Ctx,
    listing: &Listing,
    job: &JobName,
    asked: Which,
    rank: Rank,
) -> ClientError {
    if let Some(e) = out_of_reach(ctx, job, asked) {
        e
    } else if listing.is_empty() {
        ClientError::NoSuchJob { job: job.clone() }
    } else {
        ClientError::ManifestNotFound { job: job.clone(), asked, rank, detail: String::new() }
    }
}
