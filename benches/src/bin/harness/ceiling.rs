//! The transport's ceiling: raw quinn throughput over one connection with the project's own
//! TLS and transport settings (the node's `service::server_config` and `bind_endpoint`, the
//! client's `quinn_client_config` and `client_endpoint`), no storage and no codec behind it.
//!
//! The far end is this harness re-run as `quic-sink` in its own process, so client and
//! server are measured (CPU per process) as client and node are. Each request is one
//! bidirectional stream: an 8-byte count of bytes wanted back, then the upload bytes; the
//! sink drains the stream and answers with that many bytes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use quinn::{Connection, ConnectionStats};
use rackpoint_benches::{seeded_bytes, MIB};
use rackpoint_client::cluster_dir::{self, node_dir, InitOptions, CLUSTER_FILE, NODE_FILE};
use rackpoint_client::tls::client_endpoint;
use rackpoint_proto::cluster::node_server_name;
use rackpoint_proto::limits::CLIENT_MAX_REQUESTS_PER_NODE;
use rackpoint_proto::NodeId;
use rackpoint_store::service::{bind_endpoint, server_config};
use rackpoint_store::tls::{server_crypto, TlsFiles};

/// Bytes per request stream (one shard of the default 1 MiB shard size).
pub const REQUEST_BYTES: usize = MIB;
/// Streams in flight on the connection: as many as the client keeps per node.
pub const STREAMS_IN_FLIGHT: usize = CLIENT_MAX_REQUESTS_PER_NODE;
/// Time the sink process gets to print its `listening` line.
const SINK_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest count of bytes a request may ask back (a bound on what the sink sends).
const MAX_REPLY_BYTES: u64 = 64 * MIB as u64;

/// `quic-sink`: serves the ceiling protocol with node `--node-config`'s certificate, on its
/// address, until killed. Prints `listening <addr>` once it serves.
pub fn run_sink(node_config: &Path) -> anyhow::Result<()> {
    let config = rackpoint_store::load_node_config(node_config)?;
    let files = TlsFiles { ca: config.ca.clone(), cert: config.cert.clone(), key: config.key };
    let crypto = server_crypto(&files)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the sink's runtime")?;
    rt.block_on(async move {
        let endpoint = bind_endpoint(config.listen, server_config(crypto))?;
        println!("listening {}", endpoint.local_addr()?);
        let reply = Bytes::from(seeded_bytes(7, REQUEST_BYTES));
        while let Some(incoming) = endpoint.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(sink_stream(send, recv, reply.clone()));
                    }
                }
            });
        }
        anyhow::Ok(())
    })
}

async fn sink_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    reply: Bytes,
) -> anyhow::Result<()> {
    let mut wanted = [0u8; 8];
    recv.read_exact(&mut wanted).await?;
    let wanted = u64::from_be_bytes(wanted);
    ensure!(wanted <= MAX_REPLY_BYTES, "{wanted} bytes asked back, over {MAX_REPLY_BYTES}");
    while recv.read_chunk(usize::MAX, true).await?.is_some() {}
    let mut left = wanted as usize;
    while left > 0 {
        let n = left.min(reply.len());
        send.write_chunk(reply.slice(..n)).await?;
        left -= n;
    }
    send.finish()?;
    send.stopped().await?;
    Ok(())
}

/// A running sink process and a client connection to it.
pub struct Ceiling {
    sink: Child,
    conn: Connection,
    endpoint: quinn::Endpoint,
    _dir: tempfile::TempDir,
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.sink.kill(); // fails only if it already exited; wait reaps it either way
        let _ = self.sink.wait();
    }
}

/// One direction's result: the time, and the client connection's counters over it.
pub struct Transfer {
    pub elapsed: Duration,
    pub stats: StatsDelta,
}

/// Client-side quinn counters over one transfer.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatsDelta {
    /// UDP datagrams sent / received (each GSO segment counts).
    pub tx_datagrams: u64,
    pub rx_datagrams: u64,
    /// Send / receive system calls.
    pub tx_ios: u64,
    pub rx_ios: u64,
    /// ACK frames sent / received.
    pub tx_acks: u64,
    pub rx_acks: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// The path MTU at the end.
    pub mtu: u16,
}

fn delta(before: &ConnectionStats, after: &ConnectionStats) -> StatsDelta {
    StatsDelta {
        tx_datagrams: after.udp_tx.datagrams - before.udp_tx.datagrams,
        rx_datagrams: after.udp_rx.datagrams - before.udp_rx.datagrams,
        tx_ios: after.udp_tx.ios - before.udp_tx.ios,
        rx_ios: after.udp_rx.ios - before.udp_rx.ios,
        tx_acks: after.frame_tx.acks - before.frame_tx.acks,
        rx_acks: after.frame_rx.acks - before.frame_rx.acks,
        lost_packets: after.path.lost_packets - before.path.lost_packets,
        mtu: after.path.current_mtu,
    }
}

impl Ceiling {
    /// Makes a one-node cluster folder under `base` (for its certificates), starts the sink
    /// as node 1 and connects to it. Must be called inside a tokio runtime.
    pub async fn start(base: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir_in(base)?;
        let map = cluster_dir::init(dir.path(), &InitOptions::new(1))?;
        let tls = cluster_dir::load(&dir.path().join(CLUSTER_FILE))?.tls;
        let node = NodeId(1);
        let config = node_dir(dir.path(), node).join(NODE_FILE);
        let mut sink = spawn_sink(&config)?;
        let ready = wait_listening(&mut sink);
        if let Err(e) = ready {
            let _ = sink.kill(); // best effort: the error below is what matters
            let _ = sink.wait();
            return Err(e);
        }
        let endpoint = client_endpoint(false)?;
        let addr = map.nodes.first().context("one node in the map")?.addr;
        let conn = endpoint
            .connect_with(tls.quinn_client_config()?, addr, &node_server_name(node))?
            .await
            .context("connecting to the sink")?;
        Ok(Self { sink, conn, endpoint, _dir: dir })
    }

    /// The sink's pid (for its CPU time).
    pub fn sink_pid(&self) -> u32 {
        self.sink.id()
    }

    /// Moves `total` bytes in `REQUEST_BYTES` streams, `STREAMS_IN_FLIGHT` at once: up to
    /// the sink when `upload`, down from it otherwise.
    pub async fn transfer(&self, total: usize, upload: bool) -> anyhow::Result<Transfer> {
        let requests = total.div_ceil(REQUEST_BYTES);
        let payload = Bytes::from(seeded_bytes(3, REQUEST_BYTES));
        let next = Arc::new(AtomicUsize::new(0));
        let before = self.conn.stats();
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..STREAMS_IN_FLIGHT {
            let (conn, payload, next) = (self.conn.clone(), payload.clone(), next.clone());
            workers.spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    one_request(&conn, &payload, upload).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = workers.join_next().await {
            done.context("a ceiling worker panicked")??;
        }
        let elapsed = started.elapsed();
        Ok(Transfer { elapsed, stats: delta(&before, &self.conn.stats()) })
    }

    /// Closes the connection and waits until the sink was told.
    pub async fn close(&self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
    }
}

async fn one_request(conn: &Connection, payload: &Bytes, upload: bool) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let wanted = if upload { 0 } else { payload.len() as u64 };
    send.write_chunk(Bytes::copy_from_slice(&wanted.to_be_bytes())).await?;
    if upload {
        send.write_chunk(payload.clone()).await?;
    }
    send.finish()?;
    let mut got = 0usize;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        got += chunk.bytes.len();
    }
    if got as u64 != wanted {
        bail!("the sink sent {got} bytes, {wanted} asked");
    }
    Ok(())
}

fn spawn_sink(node_config: &Path) -> anyhow::Result<Child> {
    let exe: PathBuf = std::env::current_exe().context("finding the harness binary")?;
    Command::new(exe)
        .arg("quic-sink")
        .arg("--node-config")
        .arg(node_config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the sink process")
}

/// Waits (bounded) for the sink's `listening` line, on a thread so a hung sink cannot block.
fn wait_listening(sink: &mut Child) -> anyhow::Result<()> {
    let stdout = sink.stdout.take().context("the sink's stdout is piped")?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx.send(read); // the receiver may have given up; nothing to do then
    });
    match rx.recv_timeout(SINK_READY_TIMEOUT) {
        Ok(Ok(line)) if line.starts_with("listening") => Ok(()),
        Ok(Ok(line)) => bail!("the sink printed {line:?} instead of its listening line"),
        Ok(Err(e)) => Err(e).context("reading the sink's stdout"),
        Err(_) => bail!("the sink did not start within {SINK_READY_TIMEOUT:?}"),
    }
}
