//! A cluster folder: `init` makes a local cluster's CA, certificates, node configs and
//! `cluster.toml`; `load` reads a `cluster.toml` back with its client TLS material.
//!
//! Layout made by [`init`] (paths inside the files are relative to the file's folder):
//!
//! ```text
//! DIR/cluster.toml                 the cluster map (written last: its presence means "done")
//! DIR/ca.pem                       the cluster CA's certificate (the trust anchor)
//! DIR/admin.pem  DIR/admin.key     the operator's identity: an admin grant over every job
//! DIR/authority/ca.key             the CA's key (folder 0700, key 0600): issues identities
//!                                  (`rackpoint cluster cert`); never handed to a node or job
//! DIR/node-<id>/                   self-contained (0700), to copy to host <id> as it is:
//!   node.toml                      listen address, rack, data dir `data`
//!   node.pem  node.key  ca.pem     the node's server-only identity (key 0600), the anchor
//!   cluster-map.signed             the cluster map signed by the CA, taken at start
//! ```
//!
//! The map changes only here, with the CA key at hand: [`add_node`] (a certificate from the
//! existing CA, the node's folder, the map at epoch + 1) and [`decommission`] (the node
//! flagged, epoch + 1) rewrite `cluster.toml` and every node folder's signed map;
//! [`signed_map`] signs the current map for a push (`rackpoint cluster push-map`).
//!
//! A job is handed `cluster.toml`, `ca.pem` and its own certificate (see [`issue_client`]),
//! and names the certificate with `--cert`/`--key` (or `RACKPOINT_CERT`/`RACKPOINT_KEY`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use rackpoint_proto::access::Grant;
use rackpoint_proto::cluster::{ClientTlsPaths, CodeParams, ConfigError, NodeConfig, NodeInfo};
use rackpoint_proto::limits::{
    DEFAULT_SCRUB_BYTES_PER_SEC, DEFAULT_SCRUB_START_JITTER_MS, MAX_CLIENT_CERT_DAYS,
    MAX_CONFIG_FILE_BYTES, MAX_NODES, MAX_PEM_FILE_BYTES, NODE_DEFAULT_ORPHAN_GRACE_MS,
};
use rackpoint_proto::{ClusterMap, NodeId};

use crate::certs::{write_key_file, write_public_file, CertError, CertifiedPem, ClusterCa};
use crate::tls::{read_file_bounded, ClientTls, TlsError};

/// File name of the cluster map inside a cluster folder.
pub const CLUSTER_FILE: &str = "cluster.toml";
/// Folder of the CA's private key inside a cluster folder (kept apart from everything that
/// is handed out).
pub const AUTHORITY_DIR: &str = "authority";
/// Name of the operator's admin identity that `init` issues (`admin.pem`, `admin.key`).
pub const ADMIN_IDENTITY: &str = "admin";
/// Longest name of an identity `issue_client` writes (it names its files).
const MAX_IDENTITY_NAME_BYTES: usize = 64;
/// File name of a node's config inside its folder.
pub const NODE_FILE: &str = "node.toml";
/// File name of a node's stderr log inside its folder (written by `local_cluster`).
pub const NODE_LOG_FILE: &str = "node.log";
/// Name of a node's data folder inside its folder.
pub const NODE_DATA_DIR: &str = "data";
/// File name of the signed cluster map inside a node's folder (`node.toml`'s
/// `cluster_map`).
pub const NODE_MAP_FILE: &str = "cluster-map.signed";
/// The address every node of a local cluster listens on.
const LOCAL_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Why a cluster folder could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum ClusterDirError {
    /// `cluster.toml` already exists and `force` was not given.
    #[error("{0} already exists (pass --force to overwrite its configs and certificates)")]
    Exists(PathBuf),
    /// The node count is 0 or over the limit.
    #[error("a cluster needs 1 to {max} nodes, not {nodes}")]
    NodeCount {
        /// Requested nodes.
        nodes: usize,
        /// The limit.
        max: usize,
    },
    /// The rack count is 0.
    #[error("a cluster needs at least one rack")]
    NoRacks,
    /// `base_port + nodes - 1` is past 65535 (or `base_port` is 0).
    #[error("ports {base_port}..{base_port}+{nodes} do not fit in 1..=65535")]
    Ports {
        /// First port.
        base_port: u16,
        /// Nodes.
        nodes: usize,
    },
    /// The code or the resulting map is invalid.
    #[error("invalid cluster: {0}")]
    Config(ConfigError),
    /// A file could not be parsed.
    #[error("{path}: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        error: ConfigError,
    },
    /// A file or folder could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// `hosts` was given with a count other than the node count, with a repeated address,
    /// or without a base port.
    #[error("--hosts needs one distinct address per node ({nodes} nodes, {given} addresses given{repeated}) and --base-port (every node listens on its host at that port)")]
    Hosts {
        /// Addresses given.
        given: usize,
        /// Nodes.
        nodes: usize,
        /// ", X twice" when an address repeats, else empty.
        repeated: String,
    },
    /// Free ports could not be found.
    #[error("cannot find free UDP ports on {LOCAL_IP}: {0}")]
    PortProbe(std::io::Error),
    /// A certificate could not be made or written.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// An identity name that cannot name a file.
    #[error("{0:?} is not an identity name: 1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.'")]
    BadIdentityName(String),
    /// The cluster folder holds no CA key to issue with.
    #[error("no CA key in {0} (looked for authority/ca.key and ca.key): certificates are issued where the cluster was made")]
    NoCaKey(PathBuf),
    /// `add-node` needs an address: the cluster's nodes are not all on this host.
    #[error("the nodes of this cluster are not all on {LOCAL_IP}: give the new node's address (--addr HOST:PORT)")]
    NeedAddr,
    /// No node of that id in the map.
    #[error("node {0} is not in the cluster map")]
    UnknownNode(NodeId),
    /// The node is decommissioned already.
    #[error("node {0} is decommissioned already")]
    AlreadyDecommissioned(NodeId),
    /// The client TLS material named by the cluster file could not be loaded.
    #[error("{path}: {error}")]
    Tls {
        /// The cluster file naming the material.
        path: PathBuf,
        /// Why.
        error: TlsError,
    },
}

/// What [`init`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// Number of nodes (ids `1..=nodes`).
    pub nodes: usize,
    /// Number of racks; node `id` is in `rack-((id - 1) mod racks)`.
    pub racks: usize,
    /// Node `id` listens on `base_port + id - 1`; `None` picks free ports.
    pub base_port: Option<u16>,
    /// The nodes' hosts, one distinct address per node (node `id` listens on
    /// `hosts[id - 1]:base_port`); empty: every node on 127.0.0.1.
    pub hosts: Vec<IpAddr>,
    /// Data shards per stripe.
    pub k: u8,
    /// Parity shards per stripe.
    pub m: u8,
    /// Bytes per shard.
    pub shard_size_bytes: u32,
    /// Each node's `capacity_bytes` (0: no limit beyond the disk).
    pub capacity_bytes: u64,
    /// Overwrite an existing cluster's configs and certificates (data folders are kept).
    pub force: bool,
    /// Each node's `min_orphan_grace_ms` (test clusters sweep at once).
    pub node_min_orphan_grace_ms: u64,
    /// Each node serves Prometheus metrics on its host at this port (nodes sharing a host:
    /// node `id` at `metrics_port + id - 1`); `None`: no metrics endpoint.
    pub metrics_port: Option<u16>,
}

impl InitOptions {
    /// `nodes` nodes over 3 racks, code 4+2 with 1 MiB shards, free ports, no capacity
    /// limit, no force: the `rackpoint cluster init` defaults.
    pub fn new(nodes: usize) -> Self {
        Self {
            nodes,
            racks: 3,
            base_port: None,
            hosts: Vec::new(),
            k: 4,
            m: 2,
            shard_size_bytes: 1 << 20,
            capacity_bytes: 0,
            force: false,
            node_min_orphan_grace_ms: NODE_DEFAULT_ORPHAN_GRACE_MS,
            metrics_port: None,
        }
    }
}

/// A cluster file read back: the map, the client identity it names, and its folder.
#[derive(Debug, Clone)]
pub struct LoadedCluster {
    /// The cluster map (TLS paths as written in the file).
    pub map: ClusterMap,
    /// The client TLS material, loaded.
    pub tls: ClientTls,
    /// The folder of the cluster file, against which its relative paths resolve.
    pub dir: PathBuf,
}

/// Makes a local cluster in `dir` (created if missing) and returns its map. Refuses a
/// folder that already holds a `cluster.toml` unless `opts.force`.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<ClusterMap, ClusterDirError> {
    let cluster_file = dir.join(CLUSTER_FILE);
    if cluster_file.exists() && !opts.force {
        return Err(ClusterDirError::Exists(cluster_file));
    }
    let code =
        CodeParams::new(opts.k, opts.m, opts.shard_size_bytes).map_err(ClusterDirError::Config)?;
    let map = ClusterMap { epoch: 0, code, tls: client_tls_paths(), nodes: plan_nodes(opts)? };
    map.validate().map_err(ClusterDirError::Config)?;
    let template = NodeTemplate {
        capacity_bytes: opts.capacity_bytes,
        min_orphan_grace_ms: opts.node_min_orphan_grace_ms,
        metrics: opts
            .metrics_port
            .map(|port| (map.nodes[0].id, SocketAddr::new(map.nodes[0].addr.ip(), port))),
    };
    create_dir(dir)?;
    let ca = ClusterCa::generate()?;
    write_public_file(&dir.join("ca.pem"), ca.cert_pem())?;
    let authority = dir.join(AUTHORITY_DIR);
    create_private_dir(&authority)?;
    write_key_file(&authority.join("ca.key"), &ca.key_pem())?;
    let admin = ca.issue_client(ADMIN_IDENTITY, &Grant::admin(), MAX_CLIENT_CERT_DAYS)?;
    write_public_file(&dir.join(&map.tls.cert), &admin.cert_pem)?;
    write_key_file(&dir.join(&map.tls.key), &admin.key_pem)?;
    let signed = ca.sign_layout(&map.layout())?;
    for node in &map.nodes {
        write_node(dir, &ca, node, &template, &signed)?;
    }
    write_atomically(&cluster_file, map.to_toml().as_bytes())?;
    Ok(map)
}

/// What [`add_node`] or [`decommission`] made: the new map (written to `cluster.toml`),
/// its signed form (written to every node folder of the cluster folder; push it to the
/// nodes), and the node it was about.
#[derive(Debug, Clone)]
pub struct MapChange {
    /// The new map, at the old epoch + 1.
    pub map: ClusterMap,
    /// The map's cluster-wide part signed by the CA.
    pub signed: Vec<u8>,
    /// The node added or decommissioned.
    pub node: NodeInfo,
}

/// Where [`add_node`] puts the new node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddNodeOptions {
    /// Its rack (default: the rack with the fewest nodes in service).
    pub rack: Option<String>,
    /// Its address (default: a free port on 127.0.0.1, when every node is there).
    pub addr: Option<SocketAddr>,
}

/// Adds a node to the cluster of folder `dir`: the next free id, a certificate from the
/// existing CA (never a new one), its folder `node-<id>/` (configured like the existing
/// nodes), and the map at epoch + 1 in `cluster.toml` and every node folder. The node
/// starts with the new map from its folder; the running nodes need it pushed.
pub fn add_node(dir: &Path, opts: &AddNodeOptions) -> Result<MapChange, ClusterDirError> {
    let mut map = read_map(dir)?;
    let ca = load_ca(dir)?;
    let id = NodeId(map.nodes.iter().map(|n| n.id.0).max().unwrap_or(0).saturating_add(1));
    let rack = match &opts.rack {
        Some(rack) => rack.clone(),
        None => least_used_rack(&map),
    };
    let addr = match opts.addr {
        Some(addr) => addr,
        None if map.nodes.iter().all(|n| n.addr.ip() == LOCAL_IP) => {
            let port = free_udp_ports(1).map_err(ClusterDirError::PortProbe)?[0];
            SocketAddr::new(LOCAL_IP, port)
        }
        None => return Err(ClusterDirError::NeedAddr),
    };
    let node = NodeInfo { id, addr, rack, decommissioned: false };
    map.nodes.push(node.clone());
    map.epoch += 1;
    map.validate().map_err(ClusterDirError::Config)?;
    let signed = ca.sign_layout(&map.layout())?;
    let template = node_template(dir, &map)?;
    write_node(dir, &ca, &node, &template, &signed)?;
    publish(dir, &map, &signed)?;
    Ok(MapChange { map, signed, node })
}

/// Marks node `id` decommissioned in the map of folder `dir` (epoch + 1): new saves place
/// nothing on it, and `rackpoint repair` moves its shards off.
pub fn decommission(dir: &Path, id: NodeId) -> Result<MapChange, ClusterDirError> {
    let mut map = read_map(dir)?;
    let ca = load_ca(dir)?;
    let node = map.nodes.iter_mut().find(|n| n.id == id).ok_or(ClusterDirError::UnknownNode(id))?;
    if node.decommissioned {
        return Err(ClusterDirError::AlreadyDecommissioned(id));
    }
    node.decommissioned = true;
    let node = node.clone();
    map.epoch += 1;
    map.validate().map_err(ClusterDirError::Config)?;
    let signed = ca.sign_layout(&map.layout())?;
    publish(dir, &map, &signed)?;
    Ok(MapChange { map, signed, node })
}

/// The map of folder `dir` as it is, signed by its CA (to push it again).
pub fn signed_map(dir: &Path) -> Result<(ClusterMap, Vec<u8>), ClusterDirError> {
    let map = read_map(dir)?;
    let signed = load_ca(dir)?.sign_layout(&map.layout())?;
    Ok((map, signed))
}

/// Writes `map` (a newer one a client learned from the nodes, its TLS paths the file's
/// own) over the cluster file `path`, atomically.
pub fn write_cluster_file(path: &Path, map: &ClusterMap) -> Result<(), ClusterDirError> {
    write_atomically(path, map.to_toml().as_bytes())
}

fn read_map(dir: &Path) -> Result<ClusterMap, ClusterDirError> {
    let file = dir.join(CLUSTER_FILE);
    let bytes = read_file_bounded(&file, MAX_CONFIG_FILE_BYTES)
        .map_err(|error| ClusterDirError::Io { path: file.clone(), error })?;
    let parse_error = |error| ClusterDirError::Parse { path: file.clone(), error };
    let text = String::from_utf8(bytes).map_err(|e| {
        parse_error(ConfigError::Parse { what: "cluster map", message: e.to_string() })
    })?;
    ClusterMap::from_toml(&text).map_err(parse_error)
}

/// The rack with the fewest nodes in service (the first by name among equals).
fn least_used_rack(map: &ClusterMap) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for n in &map.nodes {
        *counts.entry(n.rack.as_str()).or_default() += usize::from(!n.decommissioned);
    }
    let least = counts.iter().min_by_key(|(rack, count)| (**count, **rack));
    least.map_or_else(|| "rack-0".to_owned(), |(rack, _)| (*rack).to_owned())
}

/// Writes the signed map into every node folder of `dir` (naming it in its `node.toml`),
/// then `cluster.toml` last.
fn publish(dir: &Path, map: &ClusterMap, signed: &[u8]) -> Result<(), ClusterDirError> {
    for node in &map.nodes {
        let folder = node_dir(dir, node.id);
        let config_file = folder.join(NODE_FILE);
        if !config_file.exists() {
            continue; // a node folder already handed to its host
        }
        write_private_atomically(&folder.join(NODE_MAP_FILE), signed)?;
        let mut config = read_node_config(&config_file)?;
        if config.cluster_map.is_none() {
            config.cluster_map = Some(NODE_MAP_FILE.into());
            write_atomically(&config_file, config.to_toml().as_bytes())?;
        }
    }
    write_atomically(&dir.join(CLUSTER_FILE), map.to_toml().as_bytes())
}

fn read_node_config(path: &Path) -> Result<NodeConfig, ClusterDirError> {
    let bytes = read_file_bounded(path, MAX_CONFIG_FILE_BYTES)
        .map_err(|error| ClusterDirError::Io { path: path.to_owned(), error })?;
    let parse_error = |error| ClusterDirError::Parse { path: path.to_owned(), error };
    let text = String::from_utf8(bytes).map_err(|e| {
        parse_error(ConfigError::Parse { what: "node config", message: e.to_string() })
    })?;
    NodeConfig::from_toml(&text).map_err(parse_error)
}

/// A new node is configured like the existing ones: the settings of the first node folder
/// found, or the defaults.
fn node_template(dir: &Path, map: &ClusterMap) -> Result<NodeTemplate, ClusterDirError> {
    for node in &map.nodes {
        let file = node_dir(dir, node.id).join(NODE_FILE);
        if file.exists() {
            let c = read_node_config(&file)?;
            let template = NodeTemplate {
                capacity_bytes: c.capacity_bytes,
                min_orphan_grace_ms: c.min_orphan_grace_ms,
                metrics: c.metrics_addr.map(|addr| (c.id, addr)),
            };
            return Ok(template);
        }
    }
    Ok(NodeTemplate {
        capacity_bytes: 0,
        min_orphan_grace_ms: NODE_DEFAULT_ORPHAN_GRACE_MS,
        metrics: None,
    })
}

/// The folder of node `id` inside a cluster folder.
pub fn node_dir(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{id}"))
}

/// A client identity's files: a certificate and its key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Issues a client certificate named `name` with `grant`, valid for `days`, from the CA of
/// the cluster folder `dir`, and writes `out/NAME.pem` and `out/NAME.key` (0600).
pub fn issue_client(
    dir: &Path,
    name: &str,
    grant: &Grant,
    days: u32,
    out: &Path,
) -> Result<(IdentityFiles, CertifiedPem), ClusterDirError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_IDENTITY_NAME_BYTES
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(ClusterDirError::BadIdentityName(name.to_owned()));
    }
    let ca = load_ca(dir)?;
    let issued = ca.issue_client(name, grant, days)?;
    create_dir(out)?;
    let files = IdentityFiles {
        cert: out.join(format!("{name}.pem")),
        key: out.join(format!("{name}.key")),
    };
    write_public_file(&files.cert, &issued.cert_pem)?;
    write_key_file(&files.key, &issued.key_pem)?;
    Ok((files, issued))
}

/// The CA of a cluster folder: `ca.pem` with `authority/ca.key` (or, in folders made before
/// the key moved there, `ca.key`).
fn load_ca(dir: &Path) -> Result<ClusterCa, ClusterDirError> {
    let key_path = [dir.join(AUTHORITY_DIR).join("ca.key"), dir.join("ca.key")]
        .into_iter()
        .find(|p| p.exists())
        .ok_or_else(|| ClusterDirError::NoCaKey(dir.to_owned()))?;
    let read = |path: &Path| {
        read_file_bounded(path, MAX_PEM_FILE_BYTES)
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
            .map_err(|error| ClusterDirError::Io { path: path.to_owned(), error })
    };
    Ok(ClusterCa::load(&read(&dir.join("ca.pem"))?, &read(&key_path)?)?)
}

/// Reads a cluster file and the client TLS material it names (relative paths resolve
/// against the file's folder). Errors name the file.
pub fn load(cluster_file: &Path) -> Result<LoadedCluster, ClusterDirError> {
    load_as(cluster_file, None)
}

/// [`load`], presenting `identity` instead of the certificate the file names.
pub fn load_as(
    cluster_file: &Path,
    identity: Option<&IdentityFiles>,
) -> Result<LoadedCluster, ClusterDirError> {
    let bytes = read_file_bounded(cluster_file, MAX_CONFIG_FILE_BYTES)
        .map_err(|error| ClusterDirError::Io { path: cluster_file.to_owned(), error })?;
    let parse_error = |error| ClusterDirError::Parse { path: cluster_file.to_owned(), error };
    let text = String::from_utf8(bytes).map_err(|e| {
        parse_error(ConfigError::Parse { what: "cluster map", message: e.to_string() })
    })?;
    let map = ClusterMap::from_toml(&text).map_err(parse_error)?;
    let dir = cluster_file.parent().map(Path::to_owned).unwrap_or_default();
    let (cert, key) = match identity {
        Some(id) => (id.cert.clone(), id.key.clone()),
        None => (dir.join(&map.tls.cert), dir.join(&map.tls.key)),
    };
    let resolved = ClientTlsPaths { ca: dir.join(&map.tls.ca), cert, key };
    let tls = ClientTls::from_pem_files(&resolved)
        .map_err(|error| ClusterDirError::Tls { path: cluster_file.to_owned(), error })?;
    Ok(LoadedCluster { map, tls, dir })
}

fn client_tls_paths() -> ClientTlsPaths {
    ClientTlsPaths {
        ca: "ca.pem".into(),
        cert: format!("{ADMIN_IDENTITY}.pem").into(),
        key: format!("{ADMIN_IDENTITY}.key").into(),
    }
}

/// Ids, racks and addresses of the nodes `init` makes.
fn plan_nodes(opts: &InitOptions) -> Result<Vec<NodeInfo>, ClusterDirError> {
    if opts.nodes == 0 || opts.nodes > MAX_NODES {
        return Err(ClusterDirError::NodeCount { nodes: opts.nodes, max: MAX_NODES });
    }
    if opts.racks == 0 {
        return Err(ClusterDirError::NoRacks);
    }
    let addrs = node_addrs(opts)?;
    let nodes = addrs
        .into_iter()
        .enumerate()
        .map(|(index, addr)| NodeInfo {
            id: NodeId(u32::try_from(index + 1).expect("node count is at most MAX_NODES")),
            addr,
            rack: format!("rack-{}", index % opts.racks),
            decommissioned: false,
        })
        .collect();
    Ok(nodes)
}

/// Where each node listens: one port on each of `hosts`, or consecutive (or free) ports on
/// 127.0.0.1.
fn node_addrs(opts: &InitOptions) -> Result<Vec<SocketAddr>, ClusterDirError> {
    if opts.hosts.is_empty() {
        let ports = match opts.base_port {
            Some(base_port) => consecutive_ports(base_port, opts.nodes)?,
            None => free_udp_ports(opts.nodes).map_err(ClusterDirError::PortProbe)?,
        };
        return Ok(ports.into_iter().map(|port| SocketAddr::new(LOCAL_IP, port)).collect());
    }
    let repeated = opts
        .hosts
        .iter()
        .enumerate()
        .find(|(i, host)| opts.hosts[..*i].contains(host))
        .map(|(_, host)| format!(", {host} twice"));
    let hosts_error = |repeated: Option<String>| ClusterDirError::Hosts {
        given: opts.hosts.len(),
        nodes: opts.nodes,
        repeated: repeated.unwrap_or_default(),
    };
    match opts.base_port {
        Some(port) if port != 0 && repeated.is_none() && opts.hosts.len() == opts.nodes => {
            Ok(opts.hosts.iter().map(|&host| SocketAddr::new(host, port)).collect())
        }
        _ => Err(hosts_error(repeated)),
    }
}

fn consecutive_ports(base_port: u16, nodes: usize) -> Result<Vec<u16>, ClusterDirError> {
    let last = usize::from(base_port) + nodes - 1;
    if base_port == 0 || last > usize::from(u16::MAX) {
        return Err(ClusterDirError::Ports { base_port, nodes });
    }
    Ok((0..nodes).map(|i| base_port + i as u16).collect())
}

/// `count` distinct UDP ports that were free a moment ago: all sockets are bound at once
/// (so the OS cannot hand out one port twice), read, and released.
fn free_udp_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let sockets = (0..count)
        .map(|_| UdpSocket::bind(SocketAddr::new(LOCAL_IP, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    sockets.iter().map(|s| s.local_addr().map(|a| a.port())).collect()
}

/// What a node's `node.toml` takes from the cluster it joins.
struct NodeTemplate {
    capacity_bytes: u64,
    min_orphan_grace_ms: u64,
    /// A node of the cluster and its metrics address, if nodes serve metrics.
    metrics: Option<(NodeId, SocketAddr)>,
}

impl NodeTemplate {
    /// Where `node` serves metrics: on its own host at the template's port, or, sharing the
    /// template node's host, at that port shifted by the difference of their ids.
    fn metrics_addr(&self, node: &NodeInfo) -> Option<SocketAddr> {
        let (id, addr) = self.metrics?;
        if addr.ip() != node.addr.ip() {
            return Some(SocketAddr::new(node.addr.ip(), addr.port()));
        }
        let port = i64::from(addr.port()) + i64::from(node.id.0) - i64::from(id.0);
        u16::try_from(port).ok().map(|port| SocketAddr::new(node.addr.ip(), port))
    }
}

fn write_node(
    dir: &Path,
    ca: &ClusterCa,
    node: &NodeInfo,
    template: &NodeTemplate,
    signed_map: &[u8],
) -> Result<(), ClusterDirError> {
    let folder = node_dir(dir, node.id);
    create_private_dir(&folder)?;
    let identity = ca.issue_node(node.id, node.addr.ip())?;
    write_public_file(&folder.join("ca.pem"), ca.cert_pem())?;
    write_public_file(&folder.join("node.pem"), &identity.cert_pem)?;
    write_key_file(&folder.join("node.key"), &identity.key_pem)?;
    write_private_atomically(&folder.join(NODE_MAP_FILE), signed_map)?;
    let config = NodeConfig {
        id: node.id,
        listen: node.addr,
        rack: node.rack.clone(),
        data_dir: NODE_DATA_DIR.into(),
        ca: "ca.pem".into(),
        cert: "node.pem".into(),
        key: "node.key".into(),
        capacity_bytes: template.capacity_bytes,
        scrub_bytes_per_sec: DEFAULT_SCRUB_BYTES_PER_SEC,
        scrub_start_jitter_ms: DEFAULT_SCRUB_START_JITTER_MS,
        revoked: None,
        quota: Vec::new(),
        min_orphan_grace_ms: template.min_orphan_grace_ms,
        wire_version_max: None,
        metrics_addr: template.metrics_addr(node),
        log_format: None,
        cluster_map: Some(NODE_MAP_FILE.into()),
    };
    write_atomically(&folder.join(NODE_FILE), config.to_toml().as_bytes())
}

/// Makes `dir` readable by its owner only (0700), also when it existed.
fn create_private_dir(dir: &Path) -> Result<(), ClusterDirError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io_error = |error| ClusterDirError::Io { path: dir.to_owned(), error };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_error)
}

fn create_dir(dir: &Path) -> Result<(), ClusterDirError> {
    std::fs::create_dir_all(dir)
        .map_err(|error| ClusterDirError::Io { path: dir.to_owned(), error })
}

/// Writes `text` to a temporary file beside `path`, syncs it, and renames it over `path`.
fn write_atomically(path: &Path, text: &[u8]) -> Result<(), ClusterDirError> {
    write_atomically_mode(path, text, 0o644)
}

/// [`write_atomically`] with the new file's mode (narrowed by the umask): the signed map
/// in a node folder is 0600 like everything of a node's but its certificates and config.
fn write_private_atomically(path: &Path, text: &[u8]) -> Result<(), ClusterDirError> {
    write_atomically_mode(path, text, 0o600)
}

fn write_atomically_mode(path: &Path, text: &[u8], mode: u32) -> Result<(), ClusterDirError> {
    let io_error = |error| ClusterDirError::Io { path: path.to_owned(), error };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;

    fn small(nodes: usize) -> InitOptions {
        InitOptions { shard_size_bytes: 64 * 1024, ..InitOptions::new(nodes) }
    }

    #[test]
    fn init_writes_a_cluster_that_loads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let map = init(dir.path(), &small(5)).expect("init");
        assert_eq!(map.nodes.len(), 5);
        let ids: Vec<u32> = map.nodes.iter().map(|n| n.id.0).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        let racks: Vec<&str> = map.nodes.iter().map(|n| n.rack.as_str()).collect();
        assert_eq!(racks, vec!["rack-0", "rack-1", "rack-2", "rack-0", "rack-1"]);
        let ports: HashSet<u16> = map.nodes.iter().map(|n| n.addr.port()).collect();
        assert_eq!(ports.len(), 5, "distinct free ports");
        assert!(map.nodes.iter().all(|n| n.addr.ip() == LOCAL_IP));

        let loaded = load(&dir.path().join(CLUSTER_FILE)).expect("load");
        assert_eq!(loaded.map, map);
        assert_eq!(loaded.dir, dir.path());
        loaded.tls.quinn_client_config().expect("usable identity");

        for node in &map.nodes {
            let folder = node_dir(dir.path(), node.id);
            let text = std::fs::read_to_string(folder.join(NODE_FILE)).expect("node.toml");
            let config = NodeConfig::from_toml(&text).expect("valid node.toml");
            assert_eq!((config.id, config.listen), (node.id, node.addr));
            assert_eq!(config.rack, node.rack);
            assert_eq!(config.data_dir, PathBuf::from(NODE_DATA_DIR));
            assert!(folder.join(&config.ca).exists(), "CA path resolves from the node folder");
            assert!(folder.join(&config.cert).exists() && folder.join(&config.key).exists());
        }
    }

    #[test]
    fn private_keys_are_0600_and_private_folders_0700() {
        let dir = tempfile::tempdir().expect("temp dir");
        init(dir.path(), &small(2)).expect("init");
        let private = ["authority/ca.key", "admin.key", "node-1/node.key", "node-2/node.key"];
        for key in private.into_iter().chain(["node-1/cluster-map.signed"]) {
            let mode = std::fs::metadata(dir.path().join(key)).expect("stat").mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        for folder in [AUTHORITY_DIR, "node-1", "node-2"] {
            let mode = std::fs::metadata(dir.path().join(folder)).expect("stat").mode();
            assert_eq!(mode & 0o777, 0o700, "{folder}");
        }
        assert!(!dir.path().join("ca.key").exists(), "the CA key lives apart");
    }

    #[test]
    fn a_node_folder_copied_alone_is_complete() {
        let dir = tempfile::tempdir().expect("temp dir");
        init(dir.path(), &small(1)).expect("init");
        let host = tempfile::tempdir().expect("temp dir");
        let copy = host.path().join("node-1");
        std::fs::create_dir(&copy).expect("mkdir");
        for entry in std::fs::read_dir(node_dir(dir.path(), NodeId(1))).expect("read dir") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), copy.join(entry.file_name())).expect("copy");
        }
        let text = std::fs::read_to_string(copy.join(NODE_FILE)).expect("node.toml");
        let config = NodeConfig::from_toml(&text).expect("valid");
        for path in [&config.ca, &config.cert, &config.key] {
            assert!(copy.join(path).exists(), "{} inside the node folder", path.display());
        }
    }

    #[test]
    fn issued_identities_chain_to_the_cluster_ca_and_load_in_place_of_the_admin() {
        let dir = tempfile::tempdir().expect("temp dir");
        init(dir.path(), &small(1)).expect("init");
        let grant = Grant::new(
            rackpoint_proto::Access::Append,
            Grant::parse_patterns("llm-*,eval").expect("patterns"),
        )
        .expect("grant");
        let out = dir.path().join("jobs");
        let (files, issued) =
            issue_client(dir.path(), "trainer", &grant, 30, &out).expect("issued");
        assert_eq!(files.cert, out.join("trainer.pem"));
        assert_eq!(std::fs::metadata(&files.key).expect("stat").mode() & 0o777, 0o600);
        assert_eq!(issued.serial.len(), 32);
        let loaded = load_as(&dir.path().join(CLUSTER_FILE), Some(&files)).expect("loads");
        loaded.tls.quinn_client_config().expect("usable identity");
        for bad in ["", ".hidden", "a/b", "x".repeat(65).as_str()] {
            let err = issue_client(dir.path(), bad, &grant, 30, &out).expect_err("bad name");
            assert!(matches!(err, ClusterDirError::BadIdentityName(_)), "{err}");
        }
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let err = issue_client(elsewhere.path(), "x", &grant, 30, &out).expect_err("no CA");
        assert!(matches!(err, ClusterDirError::NoCaKey(_)), "{err}");
    }

    #[test]
    fn an_existing_cluster_is_refused_unless_forced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = init(dir.path(), &small(3)).expect("init");
        let err = init(dir.path(), &small(3)).expect_err("exists");
        assert!(matches!(err, ClusterDirError::Exists(_)), "{err}");
        let forced = InitOptions { force: true, base_port: Some(41000), ..small(3) };
        let second = init(dir.path(), &forced).expect("forced");
        assert_ne!(first, second);
        assert_eq!(load(&dir.path().join(CLUSTER_FILE)).expect("load").map, second);
    }

    #[test]
    fn base_port_gives_consecutive_ports_and_bounds_are_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = InitOptions { base_port: Some(40100), ..small(3) };
        let map = init(dir.path(), &opts).expect("init");
        let ports: Vec<u16> = map.nodes.iter().map(|n| n.addr.port()).collect();
        assert_eq!(ports, vec![40100, 40101, 40102]);
        let cases = [
            InitOptions { base_port: Some(65535), ..small(2) },
            InitOptions { base_port: Some(0), ..small(2) },
            InitOptions { nodes: 0, ..small(1) },
            InitOptions { racks: 0, ..small(1) },
            InitOptions { k: 0, ..small(1) },
            InitOptions { shard_size_bytes: 1, ..small(1) },
        ];
        for opts in cases {
            let dir = tempfile::tempdir().expect("temp dir");
            assert!(init(dir.path(), &opts).is_err(), "{opts:?}");
            assert!(!dir.path().join(CLUSTER_FILE).exists(), "nothing written for {opts:?}");
        }
    }

    #[test]
    fn metrics_ports_follow_the_hosts_and_added_nodes_get_theirs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = InitOptions { base_port: Some(40200), metrics_port: Some(9500), ..small(3) };
        let map = init(dir.path(), &opts).expect("init");
        let metrics = |id: NodeId| {
            let text = std::fs::read_to_string(node_dir(dir.path(), id).join(NODE_FILE))
                .expect("node.toml");
            NodeConfig::from_toml(&text).expect("parses").metrics_addr
        };
        for node in &map.nodes {
            let port = 9500 + node.id.0 as u16 - 1;
            assert_eq!(metrics(node.id), Some(SocketAddr::new(LOCAL_IP, port)), "one host");
        }
        let hosts: Vec<IpAddr> =
            ["10.9.0.1", "10.9.0.2"].iter().map(|h| h.parse().expect("an address")).collect();
        let dir2 = tempfile::tempdir().expect("temp dir");
        let opts = InitOptions {
            base_port: Some(7100),
            metrics_port: Some(9464),
            hosts: hosts.clone(),
            ..small(2)
        };
        let map = init(dir2.path(), &opts).expect("init");
        for (node, host) in map.nodes.iter().zip(&hosts) {
            let text = std::fs::read_to_string(node_dir(dir2.path(), node.id).join(NODE_FILE))
                .expect("node.toml");
            let config = NodeConfig::from_toml(&text).expect("parses");
            assert_eq!(config.metrics_addr, Some(SocketAddr::new(*host, 9464)), "own host");
        }
        let template =
            node_template(dir.path(), &load(&dir.path().join(CLUSTER_FILE)).expect("load").map)
                .expect("template");
        let fourth = NodeInfo {
            id: NodeId(4),
            addr: SocketAddr::new(LOCAL_IP, 40203),
            rack: "rack-0".into(),
            decommissioned: false,
        };
        assert_eq!(template.metrics_addr(&fourth), Some(SocketAddr::new(LOCAL_IP, 9503)));
    }

    #[test]
    fn hosts_give_each_node_its_address_at_one_port_and_are_checked() {
        let hosts: Vec<IpAddr> = ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
            .iter()
            .map(|h| h.parse().expect("an address"))
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = InitOptions { base_port: Some(7100), hosts: hosts.clone(), ..small(3) };
        let map = init(dir.path(), &opts).expect("init");
        let addrs: Vec<SocketAddr> = map.nodes.iter().map(|n| n.addr).collect();
        let want: Vec<SocketAddr> = hosts.iter().map(|&h| SocketAddr::new(h, 7100)).collect();
        assert_eq!(addrs, want);
        for node in &map.nodes {
            let text = std::fs::read_to_string(node_dir(dir.path(), node.id).join(NODE_FILE))
                .expect("node.toml");
            let config = NodeConfig::from_toml(&text).expect("node.toml parses");
            assert_eq!(config.listen, node.addr, "node {} listens where the map says", node.id);
        }
        let twice = vec![hosts[0], hosts[1], hosts[0]];
        let cases = [
            InitOptions { base_port: None, hosts: hosts.clone(), ..small(3) },
            InitOptions { base_port: Some(7100), hosts: hosts[..2].to_vec(), ..small(3) },
            InitOptions { base_port: Some(7100), hosts: twice, ..small(3) },
            InitOptions { base_port: Some(0), hosts, ..small(3) },
        ];
        for opts in cases {
            let dir = tempfile::tempdir().expect("temp dir");
            let err = init(dir.path(), &opts).expect_err("refused");
            assert!(matches!(err, ClusterDirError::Hosts { .. }), "{opts:?}: {err}");
            assert!(!dir.path().join(CLUSTER_FILE).exists(), "nothing written for {opts:?}");
        }
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join(CLUSTER_FILE);
        let err = load(&file).expect_err("missing");
        assert!(
            matches!(err, ClusterDirError::Io { .. }) && err.to_string().contains("cluster.toml")
        );
        std::fs::write(&file, "not = [toml").expect("write");
        let err = load(&file).expect_err("garbage");
        assert!(
            matches!(err, ClusterDirError::Parse { .. })
                && err.to_string().contains("cluster.toml")
        );
        init(dir.path(), &InitOptions { force: true, ..small(1) }).expect("init");
        std::fs::remove_file(dir.path().join("admin.key")).expect("rm");
        let err = load(&file).expect_err("no key");
        assert!(matches!(err, ClusterDirError::Tls { .. }), "{err}");
        assert!(err.to_string().contains("cluster.toml") && err.to_string().contains("admin.key"));
    }

    fn ca_der(dir: &Path) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(dir.join("ca.pem")).expect("ca.pem");
        rustls::pki_types::CertificateDer::from_pem_slice(&pem).expect("PEM").to_vec()
    }

    fn node_map(dir: &Path, id: u32) -> rackpoint_proto::signed_map::SignedMap {
        let bytes = std::fs::read(node_dir(dir, NodeId(id)).join(NODE_MAP_FILE)).expect("map file");
        rackpoint_proto::signed_map::SignedMap::open(&bytes, &[&ca_der(dir)]).expect("verifies")
    }

    #[test]
    fn add_node_issues_from_the_existing_ca_and_raises_the_epoch_everywhere() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = InitOptions { node_min_orphan_grace_ms: 5, ..small(3) };
        init(dir.path(), &opts).expect("init");
        assert_eq!(node_map(dir.path(), 1).epoch(), 0, "init gives every node the map");
        let ca_before = std::fs::read(dir.path().join("ca.pem")).expect("ca.pem");
        let change = add_node(dir.path(), &AddNodeOptions::default()).expect("adds");
        assert_eq!((change.node.id, change.map.epoch, change.map.nodes.len()), (NodeId(4), 1, 4));
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).expect("ca.pem"), ca_before);
        let loaded = load(&dir.path().join(CLUSTER_FILE)).expect("loads");
        assert_eq!(loaded.map, change.map);
        for id in 1..=4 {
            assert_eq!(node_map(dir.path(), id).layout(), &change.map.layout(), "node {id}");
        }
        let folder = node_dir(dir.path(), NodeId(4));
        let config =
            NodeConfig::from_toml(&std::fs::read_to_string(folder.join(NODE_FILE)).expect("toml"))
                .expect("valid");
        assert_eq!((config.id, config.listen), (NodeId(4), change.node.addr));
        assert_eq!(config.min_orphan_grace_ms, 5, "configured like the others");
        assert_eq!(config.cluster_map, Some(PathBuf::from(NODE_MAP_FILE)));
        // (That node.pem chains to the same CA: client/tests/grow.rs starts the node.)
        assert_eq!(std::fs::read(folder.join("ca.pem")).expect("anchor"), ca_before);
        let other = AddNodeOptions { rack: Some("rack-9".into()), addr: Some(change.node.addr) };
        let err = add_node(dir.path(), &other).expect_err("an address twice");
        assert!(matches!(err, ClusterDirError::Config(ConfigError::DuplicateAddr(_))), "{err}");
        assert_eq!(load(&dir.path().join(CLUSTER_FILE)).expect("loads").map.epoch, 1, "unchanged");
    }

    #[test]
    fn decommission_flags_the_node_at_the_next_epoch() {
        let dir = tempfile::tempdir().expect("temp dir");
        init(dir.path(), &small(3)).expect("init");
        let change = decommission(dir.path(), NodeId(2)).expect("decommissions");
        assert_eq!(change.map.epoch, 1);
        assert!(change.map.node(NodeId(2)).is_some_and(|n| n.decommissioned));
        assert!(node_map(dir.path(), 3).layout().nodes[1].decommissioned);
        let again = decommission(dir.path(), NodeId(2)).expect_err("twice");
        assert!(matches!(again, ClusterDirError::AlreadyDecommissioned(NodeId(2))), "{again}");
        let unknown = decommission(dir.path(), NodeId(9)).expect_err("unknown");
        assert!(matches!(unknown, ClusterDirError::UnknownNode(NodeId(9))), "{unknown}");
        let (map, signed) = signed_map(dir.path()).expect("signs");
        let opened = rackpoint_proto::signed_map::SignedMap::open(&signed, &[&ca_der(dir.path())])
            .expect("ok");
        assert_eq!((map.epoch, opened.epoch()), (1, 1));
    }

    #[test]
    fn a_new_nodes_rack_is_the_least_used_and_remote_clusters_need_an_address() {
        let dir = tempfile::tempdir().expect("temp dir");
        init(dir.path(), &InitOptions { racks: 2, ..small(3) }).expect("init");
        let change = add_node(dir.path(), &AddNodeOptions::default()).expect("adds");
        assert_eq!(change.node.rack, "rack-1", "rack-0 holds two nodes, rack-1 one");
        let file = dir.path().join(CLUSTER_FILE);
        let mut map = load(&file).expect("loads").map;
        map.nodes[0].addr = "10.0.0.1:7000".parse().expect("addr");
        std::fs::write(&file, map.to_toml()).expect("write");
        let err = add_node(dir.path(), &AddNodeOptions::default()).expect_err("where?");
        assert!(matches!(err, ClusterDirError::NeedAddr), "{err}");
    }
}
