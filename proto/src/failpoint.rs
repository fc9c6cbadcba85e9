//! Crash points: every named place where the client or a node can be killed on purpose, listed
//! in [`ALL`] (one place; the crash-point test has a case for each and fails on a name it
//! does not cover, and a tidy check fails on a `hit` of a name not listed here).
//!
//! Activation: the environment variable `RACKPOINT_FAILPOINT`, read once per process, names
//! the points armed, comma-separated; `NAME` kills the process (SIGKILL, on the spot: no
//! destructor, flush or reply runs) at its first hit, `NAME@N` at its `N`th. Unset (always, in
//! production), a [`hit`] costs one relaxed atomic load. This is the one place this crate
//! touches the process (the environment and a signal); it does no other I/O.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms crash points.
pub const ENV: &str = "RACKPOINT_FAILPOINT";

/// Every crash point, with what has happened (and what has not) when it fires.
pub const ALL: &[(&str, &str)] = &[
    // The client's save (`rackpoint put`, `Client::save`).
    ("save.before_put", "a stripe is encoded; none of its shards is sent yet"),
    ("save.shard_acked", "a node acknowledged one shard; other puts may be in flight"),
    ("save.shards_done", "every shard is stored; no manifest copy is written"),
    ("save.manifest_stored", "one manifest copy is stored; the others may not be"),
    ("save.committed", "the manifest is on m + 1 nodes; nothing is reported yet"),
    ("save.rollback", "the commit failed; its stored manifest copies are not taken back yet"),
    // The client's repair (`rackpoint repair`).
    ("repair.before_put", "a stripe's lost shards are rebuilt; none is written"),
    ("repair.shards_written", "a part's rebuilt shards are written; its manifest is not rewritten"),
    ("repair.manifest_stored", "one copy of the rewritten manifest is stored; others may not be"),
    (
        "repair.before_stale_delete",
        "the rewritten manifest is committed; moved shards' old copies remain",
    ),
    // The client's `rackpoint rm`.
    (
        "rm.before_delete",
        "the step is marked as being deleted on m + 1 nodes; nothing is deleted yet",
    ),
    ("rm.node_deleted", "one node deleted the step; others may not have"),
    // The client's garbage collection (`rackpoint gc`).
    ("gc.before_delete", "a step to delete is marked on m + 1 nodes; nothing of it is deleted yet"),
    ("gc.node_deleted", "one node deleted a step's shards; others may not have"),
    ("gc.orphan_swept", "one node swept one orphan part; other sweeps may not have run"),
    // The node (`rackpoint-store`).
    ("node.shard_put.before_write", "a shard put is admitted and checked; nothing is written"),
    (
        "node.shard_put.before_index",
        "a shard's bytes are appended and synced; no index record names them",
    ),
    ("node.shard_put.before_ack", "a shard is durable (index synced); the reply is not sent"),
    ("node.shard_put.after_ack", "the client has the shard's acknowledgement"),
    (
        "node.manifest_write.before",
        "a manifest write (put or a repair's rewrite) is checked; nothing is written",
    ),
    ("node.manifest_write.after", "a manifest is durable; the reply is not sent"),
    ("node.delete.before", "a checkpoint delete is admitted; nothing is deleted"),
    (
        "node.delete.before_segment",
        "a checkpoint's keys are deleted (one synced batch); its segment file is not",
    ),
];

/// Not read yet (0), nothing armed (1), some point armed (2).
static STATE: AtomicU8 = AtomicU8::new(0);
/// The armed points: (name, hit at which to fire, hits so far).
static ARMED: OnceLock<Vec<(String, u64, AtomicU64)>> = OnceLock::new();

/// Parses `RACKPOINT_FAILPOINT`'s value: `NAME[@N]`, comma-separated (`N` at least 1).
/// Names not in [`ALL`] are refused, so a typo cannot make a test pass without firing.
pub fn parse(spec: &str) -> Result<Vec<(String, u64)>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (name, at) = match item.split_once('@') {
                Some((name, n)) => {
                    let n = n.parse::<u64>().map_err(|e| format!("{item}: {e}"))?;
                    (name, n.max(1))
                }
                None => (item, 1),
            };
            if !ALL.iter().any(|(known, _)| *known == name) {
                return Err(format!(
                    "{name}: not a crash point (see rackpoint_proto::failpoint::ALL)"
                ));
            }
            Ok((name.to_owned(), at))
        })
        .collect()
}

/// Passes crash point `name`: kills this process with SIGKILL if it is armed and this is the
/// hit it waits for; otherwise returns at once.
#[inline]
pub fn hit(name: &str) {
    if STATE.load(Ordering::Relaxed) == 1 {
        return;
    }
    hit_slow(name);
}

#[cold]
fn hit_slow(name: &str) {
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var(ENV).unwrap_or_default();
        let armed = parse(&spec).unwrap_or_else(|e| {
            // A test that arms a wrong name must not run as if nothing was armed.
            eprintln!("{ENV}: {e}");
            std::process::exit(70);
        });
        armed.into_iter().map(|(n, at)| (n, at, AtomicU64::new(0))).collect()
    });
    STATE.store(if armed.is_empty() { 1 } else { 2 }, Ordering::Relaxed);
    for (armed_name, at, hits) in armed {
        if armed_name == name && hits.fetch_add(1, Ordering::SeqCst) + 1 == *at {
            eprintln!("crash point {name}: killing process {}", std::process::id());
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_dotted_and_documented() {
        let mut names: Vec<&str> = ALL.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name is listed twice");
        for (name, doc) in ALL {
            assert!(name.contains('.') && !name.contains(['@', ',', ' ']), "{name}");
            assert!(!doc.is_empty(), "{name} has no doc");
        }
    }

    #[test]
    fn specs_parse_and_unknown_names_are_refused() {
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(
            parse("save.committed, node.delete.before@3"),
            Ok(vec![("save.committed".into(), 1), ("node.delete.before".into(), 3)])
        );
        assert!(parse("save.comitted").is_err());
        assert!(parse("save.committed@x").is_err());
    }

    #[test]
    fn an_unarmed_hit_returns() {
        // This test process has no RACKPOINT_FAILPOINT set (the test runner never sets it).
        if std::env::var_os(ENV).is_none() {
            hit("save.committed");
            assert_eq!(STATE.load(Ordering::Relaxed), 1);
        }
    }
}
