//! The client's QUIC transport, and its only QUIC code path for requests: one endpoint, one
//! cached connection per node (opened lazily, shared by concurrent calls, replaced once
//! closed), one bidirectional stream per request.
//!
//! Wire versions: each node's calls go in the newest version both sides speak. A call starts in
//! the newest this client speaks (`RACKPOINT_WIRE_VERSION_MAX` caps it); a node of an older
//! release answers `BadVersion` in its own version, and the call is sent again in that one,
//! which the node's connection then keeps (a new connection, perhaps to an upgraded node, starts
//! from the newest again). A request the node's version lacks is [`TransportError::PeerTooOld`]
//! and is never sent; a reply in a version newer than this client's is
//! [`TransportError::PeerTooNew`].
//!
//! Request ids: every call carries one ([`next_request_id`]: a random per-process prefix and
//! a counter), in the header from wire version 3 on; the node logs it in its request span and
//! echoes it in the reply, which must name the same id. A call sent again in an older version
//! keeps its id (the version has no room for it, but the logs do).
//!
//! A call writes `prefix + header + payload`, finishes the stream, and reads the reply frame,
//! allocating only what the validated prefix and header allow (a reply payload goes into a
//! buffer from the receive cache when one was handed back, [`Transport::recycle`], so a
//! restore does not fault in and zero fresh memory for every shard). There are no retries here:
//! the save and restore pipelines own the retry policy and use
//! [`TransportError::is_node_failure`] to tell a dead node from a refused request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream, VarInt, WriteError};
use rackpoint_proto::cluster::node_server_name;
use rackpoint_proto::limits::{
    CLIENT_CONNECT_TIMEOUT_MS, CLIENT_MAX_INFLIGHT_BYTES, CLIENT_REQUEST_TIMEOUT_MS,
};
use rackpoint_proto::wire::{
    decode_header_meta, encode_frame_with_id, RequestId, Versions, PREFIX_BYTES, REQUEST_ID_SINCE,
};
use rackpoint_proto::{ClusterMap, ErrorCode, FramePrefix, NodeId, Request, Response, WireError};
use tokio::sync::OnceCell;

use crate::tls::{client_endpoint_sized, ClientTls, TlsError};

/// Application error code the client uses when it abandons a stream (a timed-out call).
const ABANDONED_STREAM: VarInt = VarInt::from_u32(1);
/// Application error code the client closes its connections with.
const CLIENT_CLOSING: VarInt = VarInt::from_u32(0);
/// The environment variable that caps the wire version the client speaks (unset: the newest
/// this build speaks). Set to the previous version, this client speaks exactly as the
/// previous release did.
pub const WIRE_VERSION_MAX_ENV: &str = "RACKPOINT_WIRE_VERSION_MAX";

/// Why a call to a node failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The node is not in the cluster map.
    #[error("node {0} is not in the cluster map")]
    UnknownNode(NodeId),
    /// The connection could not be set up (unreachable, handshake refused, ...).
    #[error("cannot connect to node {node} at {addr}: {reason}")]
    Connect {
        /// The node.
        node: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The node did not complete the handshake or the request in time.
    #[error("node {node} did not answer within {after_ms} ms")]
    Timeout {
        /// The node.
        node: NodeId,
        /// The bound that ran out.
        after_ms: u64,
    },
    /// The connection broke during the request.
    #[error("connection to node {node} lost: {reason}")]
    ConnectionLost {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// The node answered with an error reply.
    #[error("node {node} refused the request ({code:?}): {message}")]
    Remote {
        /// The node.
        node: NodeId,
        /// The typed reason.
        code: ErrorCode,
        /// The node's message.
        message: String,
    },
    /// The node's reply broke the protocol (bad frame, truncated, trailing bytes, reset).
    #[error("node {node} broke the protocol: {reason}")]
    Protocol {
        /// The node.
        node: NodeId,
        /// What was wrong.
        reason: String,
    },
    /// The node answered with a reply of another kind than the request calls for.
    #[error("node {node} answered {got} where {expected} was due")]
    UnexpectedReply {
        /// The node.
        node: NodeId,
        /// The reply kind the request calls for.
        expected: &'static str,
        /// The reply kind that came.
        got: &'static str,
    },
    /// The request itself cannot be encoded (a payload length its kind does not allow).
    #[error("request to node {node} cannot be sent: {error}")]
    InvalidRequest {
        /// The node.
        node: NodeId,
        /// The encoder's reason.
        error: WireError,
    },
    /// The node speaks an older wire version (an older release), which lacks this request;
    /// nothing was sent.
    #[error("node {node} speaks wire version {version}, which has no {kind} (it came with version {since}): upgrade the node to this release")]
    PeerTooOld {
        /// The node.
        node: NodeId,
        /// The request kind the node's version lacks.
        kind: &'static str,
        /// The node's wire version.
        version: u8,
        /// The version that brought the request.
        since: u8,
    },
    /// The node answered in a wire version newer than this client speaks (a newer release
    /// that no longer speaks this client's versions).
    #[error("node {node} answers in wire version {version}, newer than this client speaks ({min}..={max}): upgrade the client")]
    PeerTooNew {
        /// The node.
        node: NodeId,
        /// The version of the node's reply.
        version: u8,
        /// Oldest version this client speaks.
        min: u8,
        /// Newest version this client speaks.
        max: u8,
    },
    /// The client endpoint or TLS configuration could not be set up.
    #[error("cannot set up the QUIC client: {0}")]
    Setup(Arc<TlsError>),
    /// `RACKPOINT_WIRE_VERSION_MAX` is not a wire version this build speaks.
    #[error(
        "{WIRE_VERSION_MAX_ENV}={value:?} is not a wire version this build speaks ({min}..={max})"
    )]
    BadVersionSetting {
        /// The variable's value.
        value: String,
        /// Oldest version this build speaks.
        min: u8,
        /// Newest version this build speaks.
        max: u8,
    },
}

impl TransportError {
    /// The node the error is about, if any.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            TransportError::UnknownNode(node) => Some(*node),
            TransportError::Connect { node, .. }
            | TransportError::Timeout { node, .. }
            | TransportError::ConnectionLost { node, .. }
            | TransportError::Remote { node, .. }
            | TransportError::Protocol { node, .. }
            | TransportError::UnexpectedReply { node, .. }
            | TransportError::InvalidRequest { node, .. }
            | TransportError::PeerTooOld { node, .. }
            | TransportError::PeerTooNew { node, .. } => Some(*node),
            TransportError::Setup(_) | TransportError::BadVersionSetting { .. } => None,
        }
    }

    /// True when the node itself is unreachable or dead (connect, timeout, lost connection,
    /// or a node that says it is shutting down), rather than refusing this one request.
    pub fn is_node_failure(&self) -> bool {
        matches!(
            self,
            TransportError::Connect { .. }
                | TransportError::Timeout { .. }
                | TransportError::ConnectionLost { .. }
                | TransportError::Remote { code: ErrorCode::ShuttingDown, .. }
        )
    }
}

/// A node's successful reply and its raw payload (empty for kinds without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply message (never `Response::Error`: that is `TransportError::Remote`).
    pub response: Response,
    /// The payload bytes after the header.
    pub payload: Vec<u8>,
}

/// One connection attempt, shared by every call that arrives while it runs.
type Attempt = Arc<OnceCell<Result<Connection, TransportError>>>;

/// What the transport keeps per node.
struct NodeSlot {
    addr: SocketAddr,
    server_name: String,
    attempt: Mutex<Attempt>,
    /// The wire version to send in: the newest the client speaks until the node's current
    /// connection answered `BadVersion` in an older one.
    version: AtomicU8,
}

impl NodeSlot {
    /// The attempt to use: the current one unless it failed or its connection closed, in
    /// which case a fresh one replaces it.
    fn live_attempt(&self) -> Attempt {
        let mut current = self.attempt.lock().unwrap_or_else(|poison| poison.into_inner());
        let stale = match current.get() {
            Some(Ok(conn)) => conn.close_reason().is_some(),
            Some(Err(_)) => true,
            None => false,
        };
        if stale {
            *current = Attempt::default();
        }
        current.clone()
    }

    fn reset(&self) {
        *self.attempt.lock().unwrap_or_else(|poison| poison.into_inner()) = Attempt::default();
    }
}

/// The client's QUIC transport to every node of a cluster map. `Send + Sync`: share it
/// through an `Arc`.
pub struct Transport {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    map: ClusterMap,
    slots: HashMap<NodeId, NodeSlot>,
    recv_cache: RecvCache,
    recv_buffer_bytes: usize,
    versions: Versions,
}

/// The wire versions the client speaks: every one this build does, capped by
/// `RACKPOINT_WIRE_VERSION_MAX` when it is set.
fn client_versions() -> Result<Versions, TransportError> {
    let Some(value) = std::env::var_os(WIRE_VERSION_MAX_ENV) else { return Ok(Versions::ALL) };
    let value = value.to_string_lossy().into_owned();
    let bad = || TransportError::BadVersionSetting {
        value: value.clone(),
        min: Versions::ALL.min(),
        max: Versions::ALL.max(),
    };
    let max: u8 = value.trim().parse().map_err(|_| bad())?;
    Versions::capped(max).map_err(|_| bad())
}

/// A new request id: this process's random 32-bit prefix (drawn once, odd) and a 32-bit counter,
/// so ids are unique within a process and, across processes, apart with odds of 2^-32.
pub fn next_request_id() -> RequestId {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        // std's hasher keys are drawn from the OS's randomness once per process.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        (h.finish() >> 32) as u32 | 1
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // The prefix is odd, so the id is never 0.
    RequestId::new(u64::from(prefix) << 32 | u64::from(count))
        .expect("an odd prefix makes a non-zero id")
}

/// A reply frame as read: the message, its payload, the wire version it came in and the
/// request id its header names.
struct ReplyFrame {
    response: Response,
    payload: Vec<u8>,
    version: u8,
    request_id: Option<RequestId>,
}

/// Reply buffers handed back for reuse, at most `CLIENT_MAX_INFLIGHT_BYTES` of them.
#[derive(Default)]
struct RecvCache {
    free: Mutex<(Vec<Vec<u8>>, usize)>,
}

impl RecvCache {
    /// A buffer of exactly `len` bytes: a kept one (its old bytes are to be overwritten; only
    /// a tail past its old length is zeroed) or a new one.
    fn take(&self, len: usize) -> Vec<u8> {
        if len == 0 {
            return Vec::new();
        }
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let buf = free.0.pop();
            if let Some(b) = &buf {
                free.1 -= b.capacity();
            }
            buf
        };
        let mut buf = reused.unwrap_or_default();
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.resize(len, 0);
        }
        buf
    }

    fn give(&self, bufs: impl IntoIterator<Item = Vec<u8>>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        for buf in bufs {
            let cap = buf.capacity() as u64;
            if cap > 0 && free.1 as u64 + cap <= CLIENT_MAX_INFLIGHT_BYTES {
                free.1 += buf.capacity();
                free.0.push(buf);
            }
        }
    }
}

impl Transport {
    /// One client endpoint for the whole map; connections are opened on first use. Must be
    /// called inside a tokio runtime.
    pub fn new(map: &ClusterMap, tls: &ClientTls) -> Result<Self, TransportError> {
        let versions = client_versions()?;
        let setup = |e| TransportError::Setup(Arc::new(e));
        let config = tls.quinn_client_config().map_err(setup)?;
        let ipv6 = map.nodes.iter().any(|n| n.addr.is_ipv6());
        let (endpoint, recv_buffer_bytes) = client_endpoint_sized(ipv6).map_err(setup)?;
        let slots = map
            .nodes
            .iter()
            .map(|n| {
                let slot = NodeSlot {
                    addr: n.addr,
                    server_name: node_server_name(n.id),
                    attempt: Mutex::default(),
                    version: AtomicU8::new(versions.max()),
                };
                (n.id, slot)
            })
            .collect();
        let recv_cache = RecvCache::default();
        Ok(Self {
            endpoint,
            config,
            map: map.clone(),
            slots,
            recv_cache,
            recv_buffer_bytes,
            versions,
        })
    }

    /// The wire versions this transport speaks.
    pub fn wire_versions(&self) -> Versions {
        self.versions
    }

    /// The wire version calls to `node` go in now (the newest the client speaks until the
    /// node answered in an older one).
    pub fn wire_version(&self, node: NodeId) -> Option<u8> {
        self.slots.get(&node).map(|s| s.version.load(Ordering::SeqCst))
    }

    /// The UDP receive buffer the kernel gave this endpoint's socket (as `SO_RCVBUF` reads).
    pub fn udp_recv_buffer_bytes(&self) -> usize {
        self.recv_buffer_bytes
    }

    /// Hands reply payload buffers back for later replies to reuse.
    pub fn recycle(&self, bufs: impl IntoIterator<Item = Vec<u8>>) {
        self.recv_cache.give(bufs);
    }

    /// The cluster map this transport serves.
    pub fn map(&self) -> &ClusterMap {
        &self.map
    }

    /// One request, bounded by `CLIENT_CONNECT_TIMEOUT_MS` to connect and
    /// `CLIENT_REQUEST_TIMEOUT_MS` for the exchange.
    pub async fn call(
        &self,
        node: NodeId,
        req: &Request,
        payload: Bytes,
    ) -> Result<Reply, TransportError> {
        let timeout = Duration::from_millis(CLIENT_REQUEST_TIMEOUT_MS);
        self.call_with_timeout(node, req, payload, timeout).await
    }

    /// One request on its own bidirectional stream: writes prefix, header and payload,
    /// finishes, and reads the reply frame. The connection (if it has to be opened) is
    /// bounded by `CLIENT_CONNECT_TIMEOUT_MS`; the exchange by `timeout`. A
    /// `Response::Error` becomes `TransportError::Remote`. A node that answers `BadVersion`
    /// in an older version this client speaks gets the request again in that version (see
    /// the module doc).
    pub async fn call_with_timeout(
        &self,
        node: NodeId,
        req: &Request,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        self.call_with_id(node, req, payload, timeout, next_request_id()).await
    }

    /// [`Transport::call_with_timeout`] under request id `id` (a retry of the same request
    /// may keep its id). From wire version 3 on the reply must name the same id.
    pub async fn call_with_id(
        &self,
        node: NodeId,
        req: &Request,
        payload: Bytes,
        timeout: Duration,
        id: RequestId,
    ) -> Result<Reply, TransportError> {
        let slot = self.slots.get(&node).ok_or(TransportError::UnknownNode(node))?;
        let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        // In a version the node answered in, a kind it lacks is the node's age; in the
        // client's own newest, the client's (a capped client).
        let encode = |version: u8| {
            encode_frame_with_id(req, payload_len, version, Some(id)).map_err(|error| match error {
                WireError::NotInVersion { kind, version, since }
                    if version < self.versions.max() =>
                {
                    TransportError::PeerTooOld { node, kind, version, since }
                }
                error => TransportError::InvalidRequest { node, error },
            })
        };
        // Checked before the network: a payload length the kind does not allow.
        let mut version = self.versions.max();
        let mut frame = encode(version)?;
        let conn = self.connection(node).await?;
        let spoken = slot.version.load(Ordering::SeqCst);
        if spoken != version {
            version = spoken;
            frame = encode(version)?;
        }
        loop {
            let exchange = exchange(
                node,
                &conn,
                std::mem::take(&mut frame),
                payload.clone(),
                &self.recv_cache,
                self.versions,
            );
            let reply = match tokio::time::timeout(timeout, exchange).await {
                Ok(reply) => reply?,
                Err(_) => return Err(TransportError::Timeout { node, after_ms: millis(timeout) }),
            };
            if reply.version >= REQUEST_ID_SINCE && reply.request_id != Some(id) {
                let named = reply.request_id.map_or("none".into(), |r| r.to_string());
                let reason = format!("the reply names request id {named}, not {id}");
                return Err(TransportError::Protocol { node, reason });
            }
            match reply.response {
                Response::Error { code: ErrorCode::BadVersion, .. }
                    if reply.version < version && self.versions.contains(reply.version) =>
                {
                    // The node speaks an older version: this connection keeps to it.
                    tracing::debug!(%node, from = version, to = reply.version, "wire version falls back");
                    slot.version.fetch_min(reply.version, Ordering::SeqCst);
                    version = reply.version;
                    frame = encode(version)?;
                }
                Response::Error { code, message } => {
                    return Err(TransportError::Remote { node, code, message })
                }
                _ if reply.version != version => {
                    let reason =
                        format!("a version {} reply to a version {version} request", reply.version);
                    return Err(TransportError::Protocol { node, reason });
                }
                response => return Ok(Reply { response, payload: reply.payload }),
            }
        }
    }

    /// Drops the cached connection to `node` (calls in flight on it go on); the next call
    /// opens a new one.
    pub fn forget(&self, node: NodeId) {
        if let Some(slot) = self.slots.get(&node) {
            slot.reset();
        }
    }

    /// Closes every connection and waits (bounded by QUIC's own close timers) until the
    /// nodes have been told, so that they do not wait for an idle timeout.
    pub async fn close(&self) {
        self.endpoint.close(CLIENT_CLOSING, b"client closing");
        self.endpoint.wait_idle().await;
    }

    /// The node's live connection, opening one if needed. Calls that arrive while a
    /// connection is being opened wait for that attempt and share its result.
    async fn connection(&self, node: NodeId) -> Result<Connection, TransportError> {
        let slot = self.slots.get(&node).ok_or(TransportError::UnknownNode(node))?;
        let attempt = slot.live_attempt();
        attempt.get_or_init(|| self.connect(node, slot)).await.clone()
    }

    async fn connect(&self, node: NodeId, slot: &NodeSlot) -> Result<Connection, TransportError> {
        let connect_error =
            |reason: String| TransportError::Connect { node, addr: slot.addr, reason };
        let connecting = self
            .endpoint
            .connect_with(self.config.clone(), slot.addr, &slot.server_name)
            .map_err(|e| connect_error(e.to_string()))?;
        let bound = Duration::from_millis(CLIENT_CONNECT_TIMEOUT_MS);
        match tokio::time::timeout(bound, connecting).await {
            Ok(Ok(conn)) => {
                // A new connection (perhaps to an upgraded node) starts from the newest.
                slot.version.store(self.versions.max(), Ordering::SeqCst);
                Ok(conn)
            }
            Ok(Err(e)) => Err(connect_error(e.to_string())),
            Err(_) => Err(TransportError::Timeout { node, after_ms: CLIENT_CONNECT_TIMEOUT_MS }),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A send stream that is reset, not finished, if the call is abandoned (timed out, or
/// answered before the payload was all sent): a half-written request must never look
/// complete to the node.
struct AbandonGuard {
    stream: SendStream,
    finished: bool,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.finished {
            // An already closed stream needs no reset; nothing else can fail here.
            let _ = self.stream.reset(ABANDONED_STREAM);
        }
    }
}

/// Sends the request and reads the reply on a new stream. The reply is read while the
/// request is written, so a node that refuses a request early (before taking its whole
/// payload) is heard at once.
async fn exchange(
    node: NodeId,
    conn: &Connection,
    frame: Vec<u8>,
    payload: Bytes,
    cache: &RecvCache,
    versions: Versions,
) -> Result<ReplyFrame, TransportError> {
    let (send, mut recv) = conn.open_bi().await.map_err(|e| lost(node, &e))?;
    let mut send = AbandonGuard { stream: send, finished: false };
    let write = write_request(&mut send, frame, payload);
    let read = read_reply(node, &mut recv, cache, versions);
    tokio::pin!(write, read);
    tokio::select! {
        reply = &mut read => reply,
        written = &mut write => match written {
            Ok(()) => read.await,
            Err(WriteError::ConnectionLost(e)) => Err(lost(node, &e)),
            // Stopped by the node: it refused the request and its reply says why.
            Err(write_error) => read.await.map_err(|read_error| TransportError::Protocol {
                node,
                reason: format!("request not taken ({write_error}), then {read_error}"),
            }),
        },
    }
}

async fn write_request(
    send: &mut AbandonGuard,
    frame: Vec<u8>,
    payload: Bytes,
) -> Result<(), WriteError> {
    send.stream.write_chunk(Bytes::from(frame)).await?;
    if !payload.is_empty() {
        send.stream.write_chunk(payload).await?;
    }
    send.stream.finish()?;
    send.finished = true;
    Ok(())
}

/// Reads one reply frame in any version of `versions`, then requires the end of the stream.
async fn read_reply(
    node: NodeId,
    recv: &mut RecvStream,
    cache: &RecvCache,
    versions: Versions,
) -> Result<ReplyFrame, TransportError> {
    let protocol = |reason: String| TransportError::Protocol { node, reason };
    let mut prefix = [0u8; PREFIX_BYTES];
    read_exact(node, recv, &mut prefix, "reply prefix").await?;
    let prefix = FramePrefix::parse(prefix).map_err(|e| protocol(format!("reply prefix: {e}")))?;
    let mut header = vec![0u8; prefix.header_len as usize];
    read_exact(node, recv, &mut header, "reply header").await?;
    let (response, meta) =
        match decode_header_meta::<Response>(&header, prefix.payload_len, versions) {
            Ok(decoded) => decoded,
            Err(WireError::BadVersion { got, min, max }) if got > max => {
                return Err(TransportError::PeerTooNew { node, version: got, min, max })
            }
            Err(e) => return Err(protocol(format!("reply header: {e}"))),
        };
    let mut payload = cache.take(prefix.payload_len as usize);
    read_exact(node, recv, &mut payload, "reply payload").await?;
    match recv.read(&mut [0u8; 1]).await {
        Ok(None) => {}
        Ok(Some(_)) => return Err(protocol("bytes after the reply frame".into())),
        Err(e) => return Err(read_error(node, e)),
    }
    Ok(ReplyFrame { response, payload, version: meta.version, request_id: meta.request_id })
}

async fn read_exact(
    node: NodeId,
    recv: &mut RecvStream,
    buf: &mut [u8],
    what: &str,
) -> Result<(), TransportError> {
    match recv.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(quinn::ReadExactError::FinishedEarly(got)) => Err(TransportError::Protocol {
            node,
            reason: format!(
                "{what} truncated: the stream ended after {got} of {} bytes",
                buf.len()
            ),
        }),
        Err(quinn::ReadExactError::ReadError(e)) => Err(read_error(node, e)),
    }
}

fn read_error(node: NodeId, e: quinn::ReadError) -> TransportError {
    match e {
        quinn::ReadError::ConnectionLost(e) => lost(node, &e),
        other => TransportError::Protocol { node, reason: format!("reading the reply: {other}") },
    }
}

fn lost(node: NodeId, e: &quinn::ConnectionError) -> TransportError {
    TransportError::ConnectionLost { node, reason: e.to_string() }
}

#[cfg(test)]
mod tests;
