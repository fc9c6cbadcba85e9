//! Telling a replaced disk from a new node. A data folder alone cannot: both are empty. So a
//! node that holds shards leaves a marker *beside* its data folder (`<data_dir>.rackpoint-node`,
//! naming the node id), on the file system of the folder's parent: where the data folder is
//! its own disk (a mount point, as the systemd unit's layout has it), the marker is on the
//! system disk and outlives a disk swap. A node that starts with no shard while the marker
//! names it started on an emptied data folder that should hold shards: it says so (a WARN
//! line naming the folder, `Stats.started_empty`, the `rackpoint_started_empty` metric) and
//! its shards must be rebuilt with `rackpoint repair`.
//!
//! What it cannot see: a volume replaced together with its parent (a Kubernetes
//! PersistentVolume mounted at the data folder's parent holds the marker too) looks like a new
//! node. To start a node afresh on purpose, delete the marker with the folder.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rackpoint_proto::NodeId;

/// What follows the data folder's name in the marker's.
pub const MARKER_SUFFIX: &str = ".rackpoint-node";
/// What the marker holds before the node id.
const MARKER_PREFIX: &str = "rackpoint-node ";
/// Longest marker read.
const MAX_MARKER_BYTES: u64 = 64;

/// The marker of data folder `data_dir`: beside it, named after it.
pub fn marker_path(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "data".into());
    name.push(MARKER_SUFFIX);
    data_dir.with_file_name(name)
}

/// The node id a marker names, if it is there and readable.
fn marked_node(marker: &Path) -> Option<NodeId> {
    let mut text = String::new();
    std::fs::File::open(marker).ok()?.take(MAX_MARKER_BYTES).read_to_string(&mut text).ok()?;
    text.trim_end().strip_prefix(MARKER_PREFIX)?.parse().ok().map(NodeId)
}

/// Whether node `node`, holding `shards` shards in `data_dir` as it starts, started on an
/// emptied data folder that held its shards before (no shard, and a marker naming it).
pub fn started_empty(data_dir: &Path, node: NodeId, shards: u64) -> bool {
    shards == 0 && marked_node(&marker_path(data_dir)) == Some(node)
}

/// Records that node `node` holds shards in `data_dir` (durably: a temporary file, synced,
/// renamed over, the folder synced); nothing is written when the marker says so already.
pub fn record(data_dir: &Path, node: NodeId) -> io::Result<()> {
    let marker = marker_path(data_dir);
    if marked_node(&marker) == Some(node) {
        return Ok(());
    }
    let mut tmp = marker.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(format!("{MARKER_PREFIX}{}\n", node.0).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &marker)?;
    let parent = marker.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_held_shards_and_starts_empty_is_told_apart_from_a_new_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        assert_eq!(marker_path(&data), dir.path().join("data.rackpoint-node"));
        assert!(!started_empty(&data, NodeId(3), 0), "a new node has no marker");
        record(&data, NodeId(3)).expect("recorded");
        assert!(!started_empty(&data, NodeId(3), 5), "it holds shards");
        assert!(started_empty(&data, NodeId(3), 0), "its shards are gone");
        assert!(!started_empty(&data, NodeId(4), 0), "another node's marker");
        std::fs::write(marker_path(&data), "rubbish").expect("write");
        assert!(!started_empty(&data, NodeId(3), 0), "an unreadable marker says nothing");
        record(&data, NodeId(3)).expect("recorded again");
        assert!(started_empty(&data, NodeId(3), 0));
    }
}
