//! The QUIC glue: binds the UDP socket and endpoint with throughput-tuned transport settings,
//! accepts connections (at most `MAX_CONNECTIONS`), and serves one request per bidirectional
//! stream: read prefix, header and payload within bounds and the in-flight byte budget, hand
//! the request to the [`Handler`], write the reply, finish the stream. A bad request gets an
//! error reply and a warn line; the connection and the node go on serving. Each request is
//! served inside a `request` span naming its request id (from the header, wire version 3
//! on), kind, peer address and identity, so every line logged for it carries them; the reply
//! carries the same id back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Endpoint, EndpointConfig, Incoming, RecvStream, SendStream, TransportConfig, VarInt};
use rackpoint_proto::failpoint;
use rackpoint_proto::limits::MIN_WIRE_VERSION;
use rackpoint_proto::limits::{
    MAX_CONNECTIONS, MAX_STREAMS_PER_CONNECTION, NODE_BUDGET_WAIT_MS,
    NODE_CONNECTION_INFLIGHT_BYTES, NODE_IDENTITY_INFLIGHT_BYTES,
    NODE_MAX_CONNECTIONS_PER_IDENTITY, NODE_MIN_PAYLOAD_BYTES_PER_SEC, NODE_PAYLOAD_GRACE_MS,
    NODE_REQUEST_IO_TIMEOUT_MS, QUIC_CONNECTION_WINDOW_BYTES, QUIC_IDLE_TIMEOUT_MS,
    QUIC_MAX_UDP_PAYLOAD_BYTES, QUIC_STREAM_WINDOW_BYTES, UDP_SOCKET_BUFFER_BYTES,
};
use rackpoint_proto::wire::{
    decode_header_meta, encode_frame_with_id, header_request_id, header_version, Message,
    RequestId, PREFIX_BYTES,
};
use rackpoint_proto::{ErrorCode, FramePrefix, Request, Response, WireError};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::handler::{Handler, Reply, RequestError, AUDIT_TARGET};
use crate::identity::Caller;
use crate::stats::INVALID_KIND;

/// Transport settings for throughput: large flow-control windows (a 1 MiB+ shard never
/// waits for window updates), path-MTU discovery up to `QUIC_MAX_UDP_PAYLOAD_BYTES`, `MAX_STREAMS_PER_CONNECTION` concurrent request streams,
/// no unidirectional streams or datagrams, and the idle timeout.
pub fn transport_config() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS_PER_CONNECTION));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.stream_receive_window(VarInt::from_u32(QUIC_STREAM_WINDOW_BYTES));
    t.receive_window(VarInt::from_u32(QUIC_CONNECTION_WINDOW_BYTES));
    t.send_window(u64::from(QUIC_CONNECTION_WINDOW_BYTES));
    t.datagram_receive_buffer_size(None);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(QUIC_MAX_UDP_PAYLOAD_BYTES);
    t.mtu_discovery_config(Some(mtu));
    let idle =
        VarInt::from_u64(QUIC_IDLE_TIMEOUT_MS).expect("the idle timeout constant fits a varint");
    t.max_idle_timeout(Some(idle.into()));
    t
}

/// The server configuration: the TLS crypto and [`transport_config`].
pub fn server_config(crypto: QuicServerConfig) -> quinn::ServerConfig {
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    config
}

/// Binds a UDP socket on `addr` with `UDP_SOCKET_BUFFER_BYTES` send and receive buffers
/// (the kernel may grant less: see `net.core.rmem_max`) and serves QUIC on it. Must run
/// inside a tokio runtime.
pub fn bind_endpoint(addr: SocketAddr, config: quinn::ServerConfig) -> std::io::Result<Endpoint> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_SOCKET_BUFFER_BYTES) {
        tracing::warn!("cannot set the UDP receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_SOCKET_BUFFER_BYTES) {
        tracing::warn!("cannot set the UDP send buffer: {e}");
    }
    tracing::debug!(
        recv = ?socket.recv_buffer_size(),
        send = ?socket.send_buffer_size(),
        "UDP socket buffers granted"
    );
    socket.bind(&addr.into())?;
    let runtime = Arc::new(quinn::TokioRuntime);
    Endpoint::new(endpoint_config(), Some(config), socket.into(), runtime)
}

/// Endpoint settings: datagrams up to `QUIC_MAX_UDP_PAYLOAD_BYTES` accepted, and so
/// advertised (quinn's default of 1,472 would hold the client's MTU discovery there however
/// high its own bound).
pub fn endpoint_config() -> EndpointConfig {
    let mut config = EndpointConfig::default();
    config
        .max_udp_payload_size(QUIC_MAX_UDP_PAYLOAD_BYTES)
        .expect("QUIC_MAX_UDP_PAYLOAD_BYTES is within quinn's 1200..=65527");
    config
}

/// Counts open tasks: each holds a [`DrainGuard`]; [`DrainTracker::wait`] returns once every
/// guard is dropped.
#[derive(Debug)]
pub struct DrainTracker {
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
}

/// Held by an open task; see [`DrainTracker`].
#[derive(Debug, Clone)]
pub struct DrainGuard {
    _tx: mpsc::Sender<()>,
}

impl DrainTracker {
    /// A tracker with no tasks.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Self { tx, rx }
    }

    /// A guard for one more task.
    pub fn guard(&self) -> DrainGuard {
        DrainGuard { _tx: self.tx.clone() }
    }

    /// Waits until every guard has been dropped.
    pub async fn wait(self) {
        let Self { tx, mut rx } = self;
        drop(tx);
        // Nobody sends: recv returns None once the last guard is gone.
        while rx.recv().await.is_some() {}
    }
}

impl Default for DrainTracker {
    fn default() -> Self {
        Self::new()
    }
}

/// Accepts connections on `endpoint` until `shutdown` turns true, serving each with
/// `handler`. Every connection and request task holds a guard of `drain`.
pub async fn serve(
    endpoint: Endpoint,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
    drain: DrainGuard,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let identities = Identities::default();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let peer = incoming.remote_address();
            tracing::warn!(%peer, "refusing a connection: {MAX_CONNECTIONS} are open");
            incoming.refuse();
            continue;
        };
        let connection = ConnectionTask {
            handler: handler.clone(),
            identities: identities.clone(),
            shutdown: shutdown.clone(),
            drain: drain.clone(),
            _slot: slot,
        };
        tokio::spawn(connection.run(incoming));
    }
}

/// The connections and in-flight bytes of each identity connected now (by certificate
/// fingerprint): an entry lives while the identity has a connection open.
#[derive(Debug, Clone, Default)]
struct Identities(Arc<Mutex<HashMap<String, IdentityShare>>>);

#[derive(Debug)]
struct IdentityShare {
    connections: usize,
    budget: Arc<Semaphore>,
}

/// One open connection of an identity; gives its place back when dropped.
struct IdentitySlot {
    identities: Identities,
    fingerprint: String,
    budget: Arc<Semaphore>,
}

impl Identities {
    /// A place for one more connection of `caller`, unless it holds
    /// `NODE_MAX_CONNECTIONS_PER_IDENTITY` already.
    fn open(&self, caller: &Caller) -> Option<IdentitySlot> {
        let mut map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let share = map.entry(caller.fingerprint.clone()).or_insert_with(|| IdentityShare {
            connections: 0,
            budget: Arc::new(Semaphore::new(NODE_IDENTITY_INFLIGHT_BYTES as usize)),
        });
        if share.connections >= NODE_MAX_CONNECTIONS_PER_IDENTITY {
            return None;
        }
        share.connections += 1;
        Some(IdentitySlot {
            identities: self.clone(),
            fingerprint: caller.fingerprint.clone(),
            budget: share.budget.clone(),
        })
    }
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        let mut map = self.identities.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(share) = map.get_mut(&self.fingerprint) {
            share.connections = share.connections.saturating_sub(1);
            if share.connections == 0 {
                map.remove(&self.fingerprint);
            }
        }
    }
}

/// The budgets one request draws from, in order: its connection's, its identity's and the
/// node's. Each wait is bounded by `NODE_BUDGET_WAIT_MS` (then the reply is `Busy`), so a
/// peer that holds its share without sending only ever delays itself.
#[derive(Clone)]
struct Share {
    connection: Arc<Semaphore>,
    identity: Arc<Semaphore>,
}

/// Bytes held in all three budgets; released when dropped.
struct SharePermit {
    _held: Vec<OwnedSemaphorePermit>,
}

impl Share {
    async fn acquire(&self, node: &Handler, bytes: u32) -> Result<SharePermit, ReadRequestError> {
        let wait = Duration::from_millis(NODE_BUDGET_WAIT_MS);
        let take = async {
            let shutting = |_| ReadRequestError::Budget(RequestError::ShuttingDown);
            let connection =
                self.connection.clone().acquire_many_owned(bytes).await.map_err(shutting)?;
            let identity =
                self.identity.clone().acquire_many_owned(bytes).await.map_err(shutting)?;
            let node = node.budget().acquire(bytes).await?;
            Ok(SharePermit { _held: vec![connection, identity, node] })
        };
        tokio::time::timeout(wait, take).await.unwrap_or(Err(ReadRequestError::Busy))
    }
}

struct ConnectionTask {
    handler: Handler,
    identities: Identities,
    shutdown: watch::Receiver<bool>,
    drain: DrainGuard,
    _slot: OwnedSemaphorePermit,
}

/// The caller behind a connection, from the certificate the TLS layer verified.
fn caller_of(connection: &quinn::Connection) -> Result<Caller, crate::identity::IdentityError> {
    use rustls::pki_types::CertificateDer;
    let certs = connection
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(crate::identity::IdentityError::NoCertificate)?;
    let leaf = certs.first().ok_or(crate::identity::IdentityError::NoCertificate)?;
    Caller::from_der(leaf)
}

impl ConnectionTask {
    async fn run(mut self, incoming: Incoming) {
        let peer = incoming.remote_address();
        let connection = tokio::select! {
            c = incoming => c,
            _ = self.shutdown.wait_for(|stop| *stop) => return,
        };
        let connection = match connection {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%peer, "handshake failed: {e}");
                return;
            }
        };
        let caller = match caller_of(&connection) {
            Ok(caller) => Arc::new(caller),
            Err(e) => {
                tracing::warn!(target: AUDIT_TARGET, %peer, "connection refused: {e}");
                connection.close(VarInt::from_u32(1), b"unusable certificate");
                return;
            }
        };
        let Some(identity) = self.identities.open(&caller) else {
            tracing::warn!(target: AUDIT_TARGET, %peer, identity = %caller.name, serial = %caller.serial,
                "connection refused: {NODE_MAX_CONNECTIONS_PER_IDENTITY} connections of this identity are open");
            connection.close(VarInt::from_u32(2), b"too many connections of this identity");
            return;
        };
        let share = Share {
            connection: Arc::new(Semaphore::new(NODE_CONNECTION_INFLIGHT_BYTES as usize)),
            identity: identity.budget.clone(),
        };
        tracing::debug!(%peer, identity = %caller.name, "connection open");
        loop {
            let (send, recv) = tokio::select! {
                stream = connection.accept_bi() => match stream {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!(%peer, "connection closed: {e}");
                        return;
                    }
                },
                _ = self.shutdown.wait_for(|stop| *stop) => return,
            };
            let stream = StreamTask {
                handler: self.handler.clone(),
                caller: caller.clone(),
                share: share.clone(),
                peer,
                _drain: self.drain.clone(),
            };
            tokio::spawn(stream.run(send, recv));
        }
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadRequestError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("stream ended after {got} of the {declared} bytes of the {part}")]
    Short { part: &'static str, got: usize, declared: usize },
    #[error("stream failed: {0}")]
    Stream(#[from] quinn::ReadError),
    #[error(transparent)]
    Budget(#[from] RequestError),
    #[error("request not complete after {NODE_REQUEST_IO_TIMEOUT_MS} ms")]
    TimedOut,
    #[error("payload of {len} bytes not delivered within {ms} ms")]
    PayloadTimedOut { len: u32, ms: u64 },
    #[error("no in-flight budget free within {NODE_BUDGET_WAIT_MS} ms; retry later")]
    Busy,
    #[error("refused")]
    Refused(Reply),
}

impl ReadRequestError {
    fn code(&self) -> ErrorCode {
        match self {
            ReadRequestError::Wire(e) => e.code(),
            ReadRequestError::Short { .. }
            | ReadRequestError::TimedOut
            | ReadRequestError::PayloadTimedOut { .. } => ErrorCode::LengthMismatch,
            ReadRequestError::Stream(_) => ErrorCode::Internal,
            ReadRequestError::Budget(e) => e.code(),
            ReadRequestError::Busy => ErrorCode::Busy,
            ReadRequestError::Refused(_) => ErrorCode::PermissionDenied,
        }
    }
}

/// A request read in full, with the budget its header and payload hold, and the wire
/// version it came in (the reply's).
struct ReadRequest {
    request: Request,
    payload: Bytes,
    version: u8,
    request_id: Option<RequestId>,
    _permit: SharePermit,
}

/// A failed read, with the request kind if its header decoded, and the wire version to
/// answer in: the request's when the node speaks it, else the nearest one it does
/// ([`rackpoint_proto::wire::Versions::reply_version`]); the oldest before a header was read,
/// which every client can parse.
struct ReadFailure {
    kind: &'static str,
    error: ReadRequestError,
    version: u8,
    request_id: Option<RequestId>,
}

async fn read_exact(
    recv: &mut RecvStream,
    part: &'static str,
    buf: &mut [u8],
) -> Result<(), ReadRequestError> {
    match recv.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(quinn::ReadExactError::FinishedEarly(got)) => {
            Err(ReadRequestError::Short { part, got, declared: buf.len() })
        }
        Err(quinn::ReadExactError::ReadError(e)) => Err(e.into()),
    }
}

async fn read_payload(recv: &mut RecvStream, len: usize) -> Result<Bytes, ReadRequestError> {
    let mut payload = Vec::with_capacity(len);
    while payload.len() < len {
        match recv.read_chunk(len - payload.len(), true).await? {
            Some(chunk) => payload.extend_from_slice(&chunk.bytes),
            None => {
                return Err(ReadRequestError::Short {
                    part: "payload",
                    got: payload.len(),
                    declared: len,
                })
            }
        }
    }
    Ok(Bytes::from(payload))
}

struct StreamTask {
    handler: Handler,
    caller: Arc<Caller>,
    share: Share,
    peer: SocketAddr,
    _drain: DrainGuard,
}

/// Time a request has to deliver a payload of `len` bytes: `NODE_PAYLOAD_GRACE_MS` plus
/// its length at `NODE_MIN_PAYLOAD_BYTES_PER_SEC`.
fn payload_deadline(len: u32) -> Duration {
    Duration::from_millis(NODE_PAYLOAD_GRACE_MS)
        + Duration::from_secs_f64(f64::from(len) / NODE_MIN_PAYLOAD_BYTES_PER_SEC as f64)
}

fn io_timeout() -> Duration {
    Duration::from_millis(NODE_REQUEST_IO_TIMEOUT_MS)
}

async fn timed<T>(
    read: impl std::future::Future<Output = Result<T, ReadRequestError>>,
) -> Result<T, ReadRequestError> {
    tokio::time::timeout(io_timeout(), read).await.unwrap_or(Err(ReadRequestError::TimedOut))
}

impl StreamTask {
    async fn run(self, send: SendStream, recv: RecvStream) {
        let span = tracing::info_span!(
            "request",
            id = tracing::field::Empty,
            kind = tracing::field::Empty,
            peer = %self.peer,
            identity = %self.caller.name,
        );
        self.serve(send, recv).instrument(span).await
    }

    async fn serve(self, mut send: SendStream, mut recv: RecvStream) {
        let started = Instant::now();
        let mut put_shard = false;
        let (reply, version, request_id) = match self.read_request(&mut recv).await {
            Ok(read) => {
                put_shard = matches!(read.request, Request::PutShard { .. });
                let (version, request_id) = (read.version, read.request_id);
                (self.handle(read).await, version, request_id)
            }
            Err(failure) => {
                let (version, request_id) = (failure.version, failure.request_id);
                (self.refuse(failure, started), version, request_id)
            }
        };
        let stored = put_shard && reply.is_ok();
        let ok = reply.is_ok();
        drop(recv);
        let write = write_reply(&mut send, reply, version, request_id);
        match tokio::time::timeout(io_timeout(), write).await {
            Ok(Ok(sent)) => {
                self.handler.counters().record_bytes_out(sent);
                let elapsed_us = started.elapsed().as_micros() as u64;
                tracing::debug!(ok, elapsed_us, version, "request done");
                if stored {
                    failpoint::hit("node.shard_put.after_ack");
                }
            }
            Ok(Err(e)) => tracing::debug!("reply not delivered: {e}"),
            Err(_) => tracing::warn!("reply not taken within {NODE_REQUEST_IO_TIMEOUT_MS} ms"),
        }
    }

    /// Reads prefix and header (within `NODE_REQUEST_IO_TIMEOUT_MS`, holding the header's
    /// bytes of the share), admits the request for the caller, then takes the payload's bytes
    /// of the share and reads the payload within its deadline ([`payload_deadline`]). A
    /// refused request never reads or holds its payload.
    async fn read_request(&self, recv: &mut RecvStream) -> Result<ReadRequest, ReadFailure> {
        let versions = self.handler.wire_versions();
        let mut version = MIN_WIRE_VERSION;
        let mut request_id = None;
        let span = tracing::Span::current();
        let read = timed(async {
            let mut prefix = [0u8; PREFIX_BYTES];
            read_exact(recv, "prefix", &mut prefix).await?;
            let prefix = FramePrefix::parse(prefix)?;
            let permit = self.share.acquire(&self.handler, prefix.header_len).await?;
            let mut header = vec![0u8; prefix.header_len as usize];
            read_exact(recv, "header", &mut header).await?;
            self.handler.counters().record_bytes_in((PREFIX_BYTES + header.len()) as u64);
            if let Some(requested) = header_version(&header) {
                version = versions.reply_version(requested);
            }
            // Named before the message decodes, so a refusal of a bad one carries it too.
            request_id = header_request_id(&header);
            if let Some(id) = request_id {
                span.record("id", tracing::field::display(id));
            }
            let (request, _) =
                decode_header_meta::<Request>(&header, prefix.payload_len, versions)?;
            Ok::<_, ReadRequestError>((request, prefix, permit))
        })
        .await;
        let (request, prefix, header_permit) =
            read.map_err(|error| ReadFailure { kind: INVALID_KIND, error, version, request_id })?;
        drop(header_permit);
        let kind = request.kind();
        span.record("kind", kind);
        let failure = |error: ReadRequestError| ReadFailure { kind, error, version, request_id };
        self.handler
            .admit(&self.caller, &request)
            .map_err(|reply| failure(ReadRequestError::Refused(reply)))?;
        let len = prefix.payload_len;
        let permit = self.share.acquire(&self.handler, len).await.map_err(failure)?;
        let deadline = payload_deadline(len);
        let payload = tokio::time::timeout(deadline, read_payload(recv, len as usize))
            .await
            .unwrap_or(Err(ReadRequestError::PayloadTimedOut {
                len,
                ms: deadline.as_millis() as u64,
            }))
            .map_err(failure)?;
        self.handler.counters().record_bytes_in(u64::from(len));
        Ok(ReadRequest { request, payload, version, request_id, _permit: permit })
    }

    async fn handle(&self, read: ReadRequest) -> Reply {
        let kind = read.request.kind();
        let reply =
            self.handler.handle_at(&self.caller, read.request, read.payload, read.version).await;
        if let Response::Error { code, message } = &reply.response {
            tracing::warn!(kind, ?code, "request failed: {message}");
        }
        reply
    }

    fn refuse(&self, failure: ReadFailure, started: Instant) -> Reply {
        let ReadFailure { kind, error, .. } = failure;
        self.handler.counters().record_request(kind, false, started.elapsed());
        if let ReadRequestError::Refused(reply) = error {
            return reply;
        }
        tracing::warn!(kind, code = ?error.code(), "bad request: {error}");
        Reply::error(error.code(), error.to_string())
    }
}

/// Why a reply could not be delivered.
#[derive(Debug, thiserror::Error)]
enum WriteReplyError {
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    #[error(transparent)]
    Closed(#[from] quinn::ClosedStream),
    #[error(transparent)]
    Stopped(#[from] quinn::StoppedError),
}

/// The frame header of a reply in wire version `version`, carrying the request's id, or of
/// an `Internal` error reply (and no payload) if the reply does not encode.
fn reply_frame(reply: &Reply, version: u8, id: Option<RequestId>) -> (Vec<u8>, bool) {
    let len = u32::try_from(reply.payload.len()).unwrap_or(u32::MAX);
    match encode_frame_with_id(&reply.response, len, version, id) {
        Ok(frame) => (frame, true),
        Err(e) => {
            tracing::error!("reply does not encode: {e}");
            let error = Response::error(ErrorCode::Internal, format!("reply does not encode: {e}"));
            let frame = encode_frame_with_id(&error, 0, version, id)
                .expect("an error reply with a bounded message encodes in every version");
            (frame, false)
        }
    }
}

/// Writes the reply in wire version `version` with the request's id, finishes the stream,
/// and waits until the peer has acknowledged every byte; only then is the reply's budget
/// released. Returns the bytes sent.
async fn write_reply(
    send: &mut SendStream,
    reply: Reply,
    version: u8,
    id: Option<RequestId>,
) -> Result<u64, WriteReplyError> {
    let (frame, with_payload) = reply_frame(&reply, version, id);
    let mut chunks = vec![Bytes::from(frame)];
    if with_payload && !reply.payload.is_empty() {
        chunks.push(reply.payload);
    }
    let sent = chunks.iter().map(|c| c.len() as u64).sum();
    send.write_all_chunks(&mut chunks).await?;
    send.finish()?;
    send.stopped().await?;
    drop(reply.permit);
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_drain_tracker_waits_for_every_guard() {
        let tracker = DrainTracker::new();
        let guards = [tracker.guard(), tracker.guard()];
        let wait = tracker.wait();
        tokio::pin!(wait);
        for guard in guards {
            tokio::select! {
                biased;
                () = &mut wait => panic!("returned while a guard was alive"),
                () = std::future::ready(()) => {}
            }
            drop(guard);
        }
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("returns once all are gone");
    }

    /// A server on this module's settings and a client on the client's: path-MTU discovery
    /// rises above quinn's default of 1,472 in both directions (each side accepts what the
    /// other probes), and full GSO batches at that size are delivered rather than dropped
    /// (8,952-byte datagrams, ten to a send, fail with EMSGSIZE and show up as mass loss).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_datagrams_flow_both_ways_without_loss() {
        use rackpoint_client::certs::ClusterCa;
        use rackpoint_client::tls::{client_endpoint, ClientTls};
        use rackpoint_proto::cluster::node_server_name;
        use rackpoint_proto::NodeId;

        const BYTES: usize = 16 << 20;
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = ClusterCa::generate().expect("CA");
        let node = ca.issue_node(NodeId(1), [127, 0, 0, 1].into()).expect("node cert");
        let files = crate::tls::TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("node.pem"),
            key: dir.path().join("node.key"),
        };
        std::fs::write(&files.ca, ca.cert_pem()).expect("write");
        std::fs::write(&files.cert, &node.cert_pem).expect("write");
        std::fs::write(&files.key, &node.key_pem).expect("write");
        let crypto = crate::tls::server_crypto(&files).expect("server crypto");
        let server =
            bind_endpoint(([127, 0, 0, 1], 0).into(), server_config(crypto)).expect("bind");
        let addr = server.local_addr().expect("bound");
        let serving = tokio::spawn(async move {
            let conn = server.accept().await.expect("incoming").await.expect("handshake");
            let (mut send, mut recv) = conn.accept_bi().await.expect("stream");
            let got = recv.read_to_end(BYTES).await.expect("upload").len();
            send.write_all(&vec![7u8; BYTES]).await.expect("download");
            send.finish().expect("finish");
            send.stopped().await.expect("delivered");
            (got, conn.stats())
        });

        let client = ca
            .issue_client("test", &rackpoint_proto::access::Grant::admin(), 1)
            .expect("client cert");
        let tls = ClientTls::from_pem(ca.cert_pem(), &client.cert_pem, &client.key_pem)
            .expect("client TLS");
        let endpoint = client_endpoint(false).expect("client endpoint");
        let config = tls.quinn_client_config().expect("client config");
        let conn = endpoint
            .connect_with(config, addr, &node_server_name(NodeId(1)))
            .expect("connect")
            .await
            .expect("handshake");
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        send.write_all(&vec![3u8; BYTES]).await.expect("upload");
        send.finish().expect("finish");
        let down = recv.read_to_end(BYTES).await.expect("download").len();
        let (up, server_stats) = serving.await.expect("server task");
        assert_eq!((up, down), (BYTES, BYTES));
        for (side, stats) in [("client", conn.stats()), ("node", server_stats)] {
            let path = stats.path;
            assert!(
                path.current_mtu > 1472 && path.current_mtu <= QUIC_MAX_UDP_PAYLOAD_BYTES,
                "{side}: path MTU {}",
                path.current_mtu
            );
            assert!(
                path.lost_packets * 20 < path.sent_packets,
                "{side}: {} of {} packets lost",
                path.lost_packets,
                path.sent_packets
            );
        }
    }
}
