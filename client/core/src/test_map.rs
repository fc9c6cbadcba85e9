//! A cluster map for the core's unit tests: `nodes` nodes, ids 1.., node `i` in rack
//! `i % racks`, code k = 4, m = 2 with 4 KiB shards.

use std::net::SocketAddr;

use rackpoint_proto::cluster::ClientTlsPaths;
use rackpoint_proto::{ClusterMap, CodeParams, NodeId, NodeInfo};

/// The map (see the module doc).
pub fn map(nodes: u32, racks: u32) -> ClusterMap {
    ClusterMap {
        epoch: 0,
        code: CodeParams::new(4, 2, 4096).expect("valid"),
        tls: ClientTlsPaths { ca: "ca.pem".into(), cert: "c.pem".into(), key: "c.key".into() },
        nodes: (1..=nodes)
            .map(|id| NodeInfo {
                id: NodeId(id),
                addr: SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16)),
                rack: format!("rack-{}", id % racks),
                decommissioned: false,
            })
            .collect(),
    }
}
