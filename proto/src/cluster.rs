//! The cluster map (`cluster.toml`, read by clients and the simulator) and a node's own
//! configuration (`node.toml`, read by `rackpoint-store`). Parsing and validation only: the
//! callers read the files and resolve relative paths against the file's folder.
//!
//! A map has a cluster-wide part, [`ClusterLayout`] (its epoch, code and nodes: what the
//! admin tool signs and nodes serve, see `signed_map`), and a client-local part, the TLS
//! paths of the identity a client presents, which never leave the client.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::limits::{
    DEFAULT_SCRUB_BYTES_PER_SEC, DEFAULT_SCRUB_START_JITTER_MS, MAX_NODES, MAX_QUOTA_RULES,
    MAX_RACK_NAME_BYTES, MAX_SHARD_BYTES, MAX_TOTAL_SHARDS, MIN_SHARD_BYTES,
    NODE_DEFAULT_ORPHAN_GRACE_MS,
};

/// Why a cluster map, node config or code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The TOML did not parse or did not have the expected fields.
    #[error("cannot parse {what}: {message}")]
    Parse {
        /// Which file kind.
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The erasure code is out of bounds.
    #[error("invalid code k={k} m={m} shard_size_bytes={shard_size_bytes}: need 1 <= k, 1 <= m, k + m <= {max_total}, {min_shard} <= shard size <= {max_shard}")]
    BadCode {
        /// Data shards.
        k: u32,
        /// Parity shards.
        m: u32,
        /// Shard size.
        shard_size_bytes: u32,
        /// Limit on k + m.
        max_total: usize,
        /// Smallest shard size.
        min_shard: u32,
        /// Largest shard size.
        max_shard: u32,
    },
    /// The map has no nodes, or more than the limit.
    #[error("cluster map has {count} nodes; it needs 1 to {max}")]
    NodeCount {
        /// Nodes in the map.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Two nodes share an id.
    #[error("node id {0} appears twice in the cluster map")]
    DuplicateId(NodeId),
    /// Two nodes share an address.
    #[error("address {0} appears twice in the cluster map")]
    DuplicateAddr(SocketAddr),
    /// A rack name is empty or too long.
    #[error("rack name {0:?} must be 1 to {MAX_RACK_NAME_BYTES} bytes")]
    BadRack(String),
}

/// A Reed-Solomon code: `k` data shards and `m` parity shards of `shard_size_bytes` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeParams {
    /// Data shards per stripe.
    pub k: u8,
    /// Parity shards per stripe.
    pub m: u8,
    /// Bytes per shard.
    pub shard_size_bytes: u32,
}

impl CodeParams {
    /// Checks the code against the limits.
    pub fn new(k: u8, m: u8, shard_size_bytes: u32) -> Result<Self, ConfigError> {
        let c = Self { k, m, shard_size_bytes };
        c.validate()?;
        Ok(c)
    }

    /// Checks the code against the limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ok = self.k >= 1
            && self.m >= 1
            && usize::from(self.k) + usize::from(self.m) <= MAX_TOTAL_SHARDS
            && (MIN_SHARD_BYTES..=MAX_SHARD_BYTES).contains(&self.shard_size_bytes);
        if ok {
            Ok(())
        } else {
            Err(ConfigError::BadCode {
                k: self.k.into(),
                m: self.m.into(),
                shard_size_bytes: self.shard_size_bytes,
                max_total: MAX_TOTAL_SHARDS,
                min_shard: MIN_SHARD_BYTES,
                max_shard: MAX_SHARD_BYTES,
            })
        }
    }

    /// Shards per stripe, `k + m`.
    pub fn total(&self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// Object bytes one stripe carries, `k * shard_size_bytes`.
    pub fn stripe_bytes(&self) -> u64 {
        u64::from(self.k) * u64::from(self.shard_size_bytes)
    }
}

/// One storage node as the cluster map lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// Unique id.
    pub id: NodeId,
    /// QUIC address.
    pub addr: SocketAddr,
    /// Failure domain.
    pub rack: String,
    /// Being taken out of service: it gets no new shards or manifests, and `repair` moves
    /// the shards it holds to other nodes. It keeps serving what it has until then.
    #[serde(default, skip_serializing_if = "is_false")]
    pub decommissioned: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Paths of the TLS material a client presents (relative to the cluster file's folder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsPaths {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// The client certificate (PEM), signed by the CA.
    pub cert: PathBuf,
    /// The client's private key (PEM).
    pub key: PathBuf,
}

/// The cluster map: its epoch, the code used for new checkpoints, the TLS material, and the
/// nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMap {
    /// The map's version: each change the admin tool makes (`rackpoint cluster add-node`,
    /// `decommission`) raises it by one; a client takes a map from a node only when its
    /// epoch is newer. Files written before epochs existed are epoch 0.
    #[serde(default)]
    pub epoch: u64,
    /// Default code for new checkpoints.
    pub code: CodeParams,
    /// Client TLS material.
    pub tls: ClientTlsPaths,
    /// The storage nodes.
    pub nodes: Vec<NodeInfo>,
}

impl ClusterMap {
    /// Parses and validates a `cluster.toml`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let map: Self = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { what: "cluster map", message: e.to_string() })?;
        map.validate()?;
        Ok(map)
    }

    /// The map as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a cluster map always serializes")
    }

    /// Checks the code, node count, unique ids and addresses, and rack names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.code.validate()?;
        if self.nodes.is_empty() || self.nodes.len() > MAX_NODES {
            return Err(ConfigError::NodeCount { count: self.nodes.len(), max: MAX_NODES });
        }
        let mut ids = HashSet::new();
        let mut addrs = HashSet::new();
        for n in &self.nodes {
            if !ids.insert(n.id) {
                return Err(ConfigError::DuplicateId(n.id));
            }
            if !addrs.insert(n.addr) {
                return Err(ConfigError::DuplicateAddr(n.addr));
            }
            validate_rack(&n.rack)?;
        }
        Ok(())
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The cluster-wide part (epoch, code, nodes), what is signed and distributed.
    pub fn layout(&self) -> ClusterLayout {
        ClusterLayout { epoch: self.epoch, code: self.code, nodes: self.nodes.clone() }
    }

    /// This client's map with the cluster-wide part replaced by `layout` (its TLS paths
    /// kept).
    pub fn with_layout(&self, layout: ClusterLayout) -> ClusterMap {
        ClusterMap {
            epoch: layout.epoch,
            code: layout.code,
            tls: self.tls.clone(),
            nodes: layout.nodes,
        }
    }
}

/// The cluster-wide part of a cluster map: what the admin tool signs, nodes store and serve,
/// and clients fetch (a client's own TLS paths are not part of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLayout {
    /// The map's epoch.
    pub epoch: u64,
    /// Default code for new checkpoints.
    pub code: CodeParams,
    /// The storage nodes.
    pub nodes: Vec<NodeInfo>,
}

impl ClusterLayout {
    /// The same checks as [`ClusterMap::validate`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let tls = ClientTlsPaths { ca: PathBuf::new(), cert: PathBuf::new(), key: PathBuf::new() };
        ClusterMap { epoch: self.epoch, code: self.code, tls, nodes: self.nodes.clone() }.validate()
    }
}

/// The TLS server name a node's certificate carries and clients check: `node-<id>.rackpoint`.
/// Naming the id (not the address) means one node's certificate cannot stand in for another's.
pub fn node_server_name(id: NodeId) -> String {
    format!("node-{id}.rackpoint")
}

fn validate_rack(rack: &str) -> Result<(), ConfigError> {
    if rack.is_empty() || rack.len() > MAX_RACK_NAME_BYTES {
        return Err(ConfigError::BadRack(rack.chars().take(MAX_RACK_NAME_BYTES).collect()));
    }
    Ok(())
}

/// A storage node's own configuration (`node.toml`). Relative paths are relative to the
/// file's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's id in the cluster map.
    pub id: NodeId,
    /// UDP address to serve QUIC on.
    pub listen: SocketAddr,
    /// The node's failure domain.
    pub rack: String,
    /// RocksDB folder.
    pub data_dir: PathBuf,
    /// The cluster CA certificate (PEM): clients must present a certificate it signed.
    pub ca: PathBuf,
    /// The node's certificate (PEM).
    pub cert: PathBuf,
    /// The node's private key (PEM).
    pub key: PathBuf,
    /// Bytes of shard payload the node will hold; 0 means no limit beyond the disk.
    #[serde(default)]
    pub capacity_bytes: u64,
    /// Bytes per second the background scrubber may re-hash; 0 turns it off.
    #[serde(default = "default_scrub_rate")]
    pub scrub_bytes_per_sec: u64,
    /// Longest random delay before the first scrub pass.
    #[serde(default = "default_scrub_start_jitter")]
    pub scrub_start_jitter_ms: u64,
    /// A revocation list: a text file of certificate serials (hex, as `rackpoint cluster cert`
    /// prints them) or fingerprints (`blake3:` and the hex blake3 of the certificate's DER),
    /// one per line, `#` comments allowed. Re-read when it changes, without a restart; a
    /// certificate on it is refused on its next request.
    #[serde(default)]
    pub revoked: Option<PathBuf>,
    /// Youngest shard age, by this node's clock, that an orphan sweep may delete: a sweep
    /// that asks for less gets this (the grace period is the node's own).
    #[serde(default = "default_orphan_grace")]
    pub min_orphan_grace_ms: u64,
    /// Byte quotas: each job a rule's pattern matches (the first rule that matches) may hold
    /// at most `bytes` of shard payload on this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quota: Vec<QuotaRule>,
    /// The newest wire version the node speaks (`MIN_WIRE_VERSION..=WIRE_VERSION`; unset:
    /// `WIRE_VERSION`). Set to the previous version, the node speaks exactly as the previous
    /// release did: what the upgrade test runs as the old node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire_version_max: Option<u8>,
    /// TCP address of the Prometheus metrics endpoint (`GET /metrics`); unset: none. Port 0
    /// takes a free port, which the node prints (`metrics <ip:port>` on stdout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
    /// The log line format on stderr: `text` (the default) or `json` (one object a line,
    /// for log shippers); `RACKPOINT_LOG_FORMAT` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<crate::logs::LogFormat>,
    /// A signed cluster map file (`rackpoint cluster add-node` writes one into each node
    /// folder it can reach): at start the node takes it if it verifies against `ca` and is
    /// newer than the map it holds, and serves it to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_map: Option<PathBuf>,
}

/// One `[[quota]]` of a `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRule {
    /// The jobs it applies to: a name, a prefix ending in `*`, or `*`.
    pub jobs: String,
    /// Shard payload bytes each of those jobs may hold on this node.
    pub bytes: u64,
}

fn default_orphan_grace() -> u64 {
    NODE_DEFAULT_ORPHAN_GRACE_MS
}

fn default_scrub_rate() -> u64 {
    DEFAULT_SCRUB_BYTES_PER_SEC
}

fn default_scrub_start_jitter() -> u64 {
    DEFAULT_SCRUB_START_JITTER_MS
}

impl NodeConfig {
    /// Parses and validates a `node.toml`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: Self = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { what: "node config", message: e.to_string() })?;
        validate_rack(&c.rack)?;
        if c.quota.len() > MAX_QUOTA_RULES {
            let message = format!("{} quota rules, at most {MAX_QUOTA_RULES}", c.quota.len());
            return Err(ConfigError::Parse { what: "node config", message });
        }
        for rule in &c.quota {
            crate::access::JobPattern::parse(&rule.jobs).map_err(|e| ConfigError::Parse {
                what: "node config quota",
                message: e.to_string(),
            })?;
        }
        c.wire_versions()?;
        Ok(c)
    }

    /// The wire versions the node speaks: every one this build does, up to `wire_version_max`.
    pub fn wire_versions(&self) -> Result<crate::wire::Versions, ConfigError> {
        match self.wire_version_max {
            None => Ok(crate::wire::Versions::ALL),
            Some(max) => crate::wire::Versions::capped(max).map_err(|e| ConfigError::Parse {
                what: "node config wire_version_max",
                message: e.to_string(),
            }),
        }
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a node config always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(nodes: usize) -> ClusterMap {
        ClusterMap {
            epoch: 0,
            code: CodeParams::new(4, 2, 1 << 20).expect("valid"),
            tls: ClientTlsPaths {
                ca: "ca.pem".into(),
                cert: "client.pem".into(),
                key: "client.key".into(),
            },
            nodes: (0..nodes)
                .map(|i| NodeInfo {
                    id: NodeId(i as u32 + 1),
                    addr: SocketAddr::from(([127, 0, 0, 1], 7400 + i as u16)),
                    rack: format!("rack-{}", i % 3),
                    decommissioned: false,
                })
                .collect(),
        }
    }

    #[test]
    fn cluster_map_round_trips_through_toml() {
        let m = map(6);
        assert_eq!(ClusterMap::from_toml(&m.to_toml()), Ok(m));
    }

    #[test]
    fn a_map_without_an_epoch_is_epoch_0_and_the_epoch_round_trips() {
        let mut m = map(3);
        let old = m.to_toml().replace("epoch = 0\n", "");
        assert!(!old.contains("epoch"), "{old}");
        assert_eq!(ClusterMap::from_toml(&old), Ok(m.clone()));
        m.epoch = 7;
        assert_eq!(ClusterMap::from_toml(&m.to_toml()), Ok(m.clone()));
        let layout = m.layout();
        let mut other = map(1);
        other.tls.cert = "someone-else.pem".into();
        let mine = other.with_layout(layout.clone());
        assert_eq!((mine.epoch, mine.nodes.len()), (7, 3));
        assert_eq!(mine.tls, other.tls, "a client keeps its own identity");
        assert_eq!(mine.layout(), layout);
    }

    #[test]
    fn decommissioned_is_optional_and_round_trips() {
        let mut m = map(3);
        assert!(!m.to_toml().contains("decommissioned"), "written only when set");
        m.nodes[1].decommissioned = true;
        let back = ClusterMap::from_toml(&m.to_toml()).expect("parses");
        assert!(back.nodes[1].decommissioned && !back.nodes[0].decommissioned);
    }

    #[test]
    fn cluster_map_refuses_duplicates_and_bad_codes() {
        let mut m = map(3);
        m.nodes[2].id = NodeId(1);
        assert_eq!(ClusterMap::from_toml(&m.to_toml()), Err(ConfigError::DuplicateId(NodeId(1))));
        let mut m = map(3);
        m.nodes[1].addr = m.nodes[0].addr;
        assert!(matches!(m.validate(), Err(ConfigError::DuplicateAddr(_))));
        let mut m = map(3);
        m.code.k = 0;
        assert!(matches!(m.validate(), Err(ConfigError::BadCode { .. })));
        m.code = CodeParams { k: 30, m: 3, shard_size_bytes: 4096 };
        assert!(matches!(m.validate(), Err(ConfigError::BadCode { .. })));
        assert!(matches!(map(0).validate(), Err(ConfigError::NodeCount { .. })));
        assert!(matches!(ClusterMap::from_toml("nonsense = 1"), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn node_config_round_trips_with_defaults() {
        let text = r#"
            id = 3
            listen = "127.0.0.1:7403"
            rack = "rack-1"
            data_dir = "data"
            ca = "../ca.pem"
            cert = "node.pem"
            key = "node.key"
        "#;
        let c = NodeConfig::from_toml(text).expect("valid");
        assert_eq!(c.id, NodeId(3));
        assert_eq!(c.scrub_bytes_per_sec, default_scrub_rate());
        assert_eq!(NodeConfig::from_toml(&c.to_toml()), Ok(c.clone()));
        assert_eq!(c.wire_versions(), Ok(crate::wire::Versions::ALL));
        let capped =
            NodeConfig::from_toml(&format!("{text}\nwire_version_max = 1")).expect("valid");
        assert_eq!(capped.wire_versions().map(|v| v.max()), Ok(1));
        assert_eq!((c.metrics_addr, c.log_format), (None, None));
        let watched = NodeConfig::from_toml(&format!(
            "{text}\nmetrics_addr = \"127.0.0.1:9464\"\nlog_format = \"json\""
        ))
        .expect("valid");
        assert_eq!(watched.metrics_addr, Some(([127, 0, 0, 1], 9464).into()));
        assert_eq!(watched.log_format, Some(crate::logs::LogFormat::Json));
        assert_eq!(NodeConfig::from_toml(&watched.to_toml()), Ok(watched.clone()));
        let bad = NodeConfig::from_toml(&format!("{text}\nlog_format = \"xml\""));
        assert!(matches!(bad, Err(ConfigError::Parse { .. })), "{bad:?}");
        for bad in [0, crate::limits::WIRE_VERSION + 1] {
            let err = NodeConfig::from_toml(&format!("{text}\nwire_version_max = {bad}"));
            assert!(matches!(err, Err(ConfigError::Parse { .. })), "{bad}: {err:?}");
        }
    }
}
