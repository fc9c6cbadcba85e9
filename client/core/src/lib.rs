//! Rackpoint's pure core: every decision the client makes, with no I/O. `rackpoint-client`
//! re-exports each module (`rackpoint_client::codec`, ...), and the simulator's fast mode
//! drives the very same code.
//!
//! - `codec` — object → stripes geometry, Reed-Solomon encode/decode of one stripe, hashes.
//! - `placement` — rendezvous hashing of stripes and manifests over failure domains.
//! - `manifest` — the per-part record, its canonical bytes, validation and chain.
//! - `planner` — the restore planner: which shard to fetch next for one stripe.
//! - `stripe_write` — the save side: where each shard of a stripe goes, moves and retries.
//! - `manifest_commit` — the save's last step: the manifest's copies, rounds and rollback.
//! - `listing` — the listing quorum over the nodes' manifest lists (and deletion marks).
//! - `deletion` — deletes that cannot half-happen: the mark quorum, when to clear, gc's gate.
//! - `job_list` — the cluster's jobs, merged from the nodes' job pages and manifest lists.
//! - `hedge` — the hedging policy: when a fetch is late.
//! - `health_view` — which nodes are down or stalled, with `now` passed in.
//! - `redundancy` — how many more node and rack failures a stripe or part survives.
//! - `checkpoint_choice` — which checkpoint to restore (newest complete, readable, not lost
//!   to nodes down, not being deleted), or why none.
//! - `repair_plan` — the repair planner: per stripe, which shards to rewrite, where, from what.
//! - `rebalance` — the rebalance planner: which shards move onto the current map's placement.
//! - `retention` — gc's rule: keep the newest `keep` complete checkpoints, delete older steps.
//! - `deadline` — a priority save's deadline: go on, give up early, patience, commit rounds.
//!
//! Architecture invariant: this crate depends on no async runtime, socket or clock (the
//! compiler enforces the first two through `Cargo.toml`; `tests/tidy.rs` checks that no
//! module reads the clock or touches files or the network). Time is always a parameter.

pub mod checkpoint_choice;
pub mod codec;
pub mod deadline;
pub mod deletion;
pub mod health_view;
pub mod hedge;
pub mod job_list;
pub mod listing;
pub mod manifest;
pub mod manifest_commit;
pub mod placement;
pub mod planner;
pub mod rebalance;
pub mod redundancy;
pub mod repair_plan;
pub mod retention;
pub mod stripe_write;
#[cfg(test)]
mod test_map;
