//! A UDP relay in front of one storage node, under the simulator's control: it forwards QUIC
//! datagrams between clients and the node, and can partition the node (drop everything),
//! delay every datagram, or drop each with a probability, in both directions.
//!
//! The client's cluster map names the relay's address; TLS still checks the node's identity,
//! since the server name comes from the node id (`node_server_name`), not the address. Each
//! client address gets its own upstream socket (at most `SIM_RELAY_MAX_PEERS`), so the node sees
//! one peer per client; past that, the least recently heard client is evicted. Delayed datagrams wait in a bounded delay line; when it is full they
//! are dropped, as a router with a full queue would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use rackpoint_proto::limits::{
    SIM_RELAY_MAX_DATAGRAM_BYTES, SIM_RELAY_MAX_PEERS, SIM_RELAY_MAX_QUEUED_DATAGRAMS,
};

/// What the relay does to traffic; shared between the controller and the forwarding tasks.
#[derive(Debug)]
struct Controls {
    partitioned: AtomicBool,
    delay_us: AtomicU64,
    /// Drop probability in parts per million.
    drop_ppm: AtomicU64,
    rng: Mutex<StdRng>,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// Datagram counters of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayCounters {
    /// Datagrams passed on.
    pub forwarded: u64,
    /// Datagrams dropped (partition, loss, full delay line).
    pub dropped: u64,
}

/// A datagram on its way out, through the delay line.
struct Outgoing {
    due: Instant,
    via: Arc<UdpSocket>,
    to: Option<SocketAddr>,
    bytes: Vec<u8>,
}

/// One relay. Dropping it stops every task it started.
pub struct Relay {
    addr: SocketAddr,
    controls: Arc<Controls>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    /// Binds a relay on 127.0.0.1 (an OS-chosen port) forwarding to `node`. `seed` drives
    /// the random drops.
    pub async fn start(node: SocketAddr, seed: u64) -> std::io::Result<Self> {
        let down = Arc::new(bind_local().await?);
        let addr = down.local_addr()?;
        let controls = Arc::new(Controls {
            partitioned: AtomicBool::new(false),
            delay_us: AtomicU64::new(0),
            drop_ppm: AtomicU64::new(0),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let (delay_tx, delay_rx) = mpsc::channel(SIM_RELAY_MAX_QUEUED_DATAGRAMS);
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let line = tokio::spawn(delay_line(delay_rx));
        let from_clients =
            tokio::spawn(from_clients(down, node, controls.clone(), delay_tx, tasks.clone()));
        lock(&tasks).extend([line, from_clients]);
        Ok(Self { addr, controls, tasks })
    }

    /// The address clients should use for the node.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops (or stops dropping) every datagram to and from the node.
    pub fn set_partitioned(&self, on: bool) {
        self.controls.partitioned.store(on, Ordering::SeqCst);
    }

    /// Delays every datagram by `delay` (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.controls.delay_us.store(us, Ordering::SeqCst);
    }

    /// Drops each datagram with probability `p` (clamped to 0..=1).
    pub fn set_drop_probability(&self, p: f64) {
        let ppm = (p.clamp(0.0, 1.0) * 1e6).round() as u64;
        self.controls.drop_ppm.store(ppm, Ordering::SeqCst);
    }

    /// Back to plain forwarding.
    pub fn clear(&self) {
        self.set_partitioned(false);
        self.set_delay(Duration::ZERO);
        self.set_drop_probability(0.0);
    }

    /// Datagrams forwarded and dropped so far.
    pub fn counters(&self) -> RelayCounters {
        RelayCounters {
            forwarded: self.controls.forwarded.load(Ordering::Relaxed),
            dropped: self.controls.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

async fn bind_local() -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // Best effort: the kernel caps buffers at its maximum; a smaller buffer only drops more.
    let _ = socket.set_recv_buffer_size(rackpoint_proto::limits::UDP_SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(rackpoint_proto::limits::UDP_SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    UdpSocket::from_std(socket.into())
}

/// Decides a datagram's fate: dropped, sent at once, or queued in the delay line.
async fn forward(
    controls: &Controls,
    delay_tx: &mpsc::Sender<Outgoing>,
    via: &Arc<UdpSocket>,
    to: Option<SocketAddr>,
    bytes: &[u8],
) {
    let drop_ppm = controls.drop_ppm.load(Ordering::Relaxed);
    let lost = drop_ppm > 0 && lock(&controls.rng).gen_range(0..1_000_000) < drop_ppm;
    if controls.partitioned.load(Ordering::Relaxed) || lost {
        controls.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let delay_us = controls.delay_us.load(Ordering::Relaxed);
    if delay_us == 0 {
        // A send error (the node's port closed while it is down) is a lost datagram.
        let _ = match to {
            Some(addr) => via.send_to(bytes, addr).await,
            None => via.send(bytes).await,
        };
        controls.forwarded.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let due = Instant::now() + Duration::from_micros(delay_us);
    let out = Outgoing { due, via: via.clone(), to, bytes: bytes.to_vec() };
    match delay_tx.try_send(out) {
        Ok(()) => controls.forwarded.fetch_add(1, Ordering::Relaxed),
        Err(_) => controls.dropped.fetch_add(1, Ordering::Relaxed),
    };
}

/// Sends queued datagrams when they are due, in order.
async fn delay_line(mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(out) = rx.recv().await {
        tokio::time::sleep_until(out.due).await;
        let _ = match out.to {
            Some(addr) => out.via.send_to(&out.bytes, addr).await,
            None => out.via.send(&out.bytes).await,
        };
    }
}

/// One client address the relay forwards for.
struct Peer {
    up: Arc<UdpSocket>,
    /// Its reply task, to stop when the peer is evicted.
    back: tokio::task::AbortHandle,
    /// When it last sent, in datagrams received by the relay (for eviction).
    last: u64,
}

/// Reads datagrams from clients and forwards each through its client's upstream socket,
/// making one (and its reply task) for a new client. With `SIM_RELAY_MAX_PEERS` peers
/// already, the one that sent least recently is evicted: clients come and go (every trial
/// of a cell makes new ones against the same relays), and a client long gone must not keep
/// a new one out.
async fn from_clients(
    down: Arc<UdpSocket>,
    node: SocketAddr,
    controls: Arc<Controls>,
    delay_tx: mpsc::Sender<Outgoing>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut peers: HashMap<SocketAddr, Peer> = HashMap::new();
    let mut buf = vec![0u8; SIM_RELAY_MAX_DATAGRAM_BYTES];
    let mut clock = 0u64;
    loop {
        let Ok((len, client)) = down.recv_from(&mut buf).await else { continue };
        clock += 1;
        let up = match peers.get_mut(&client) {
            Some(peer) => {
                peer.last = clock;
                peer.up.clone()
            }
            None => {
                if peers.len() >= SIM_RELAY_MAX_PEERS {
                    let oldest = peers.iter().min_by_key(|(_, p)| p.last).map(|(a, _)| *a);
                    if let Some(gone) = oldest.and_then(|a| peers.remove(&a)) {
                        gone.back.abort();
                    }
                }
                let Ok(up) = upstream(node).await else { continue };
                let up = Arc::new(up);
                let back = tokio::spawn(from_node(
                    up.clone(),
                    down.clone(),
                    client,
                    controls.clone(),
                    delay_tx.clone(),
                ));
                let abort = back.abort_handle();
                {
                    let mut tasks = lock(&tasks);
                    tasks.retain(|t| !t.is_finished());
                    tasks.push(back);
                }
                peers.insert(client, Peer { up: up.clone(), back: abort, last: clock });
                up
            }
        };
        forward(&controls, &delay_tx, &up, None, &buf[..len]).await;
    }
}

async fn upstream(node: SocketAddr) -> std::io::Result<UdpSocket> {
    let up = bind_local().await?;
    up.connect(node).await?;
    Ok(up)
}

/// Reads the node's replies to one client and forwards them from the relay's address.
async fn from_node(
    up: Arc<UdpSocket>,
    down: Arc<UdpSocket>,
    client: SocketAddr,
    controls: Arc<Controls>,
    delay_tx: mpsc::Sender<Outgoing>,
) {
    let mut buf = vec![0u8; SIM_RELAY_MAX_DATAGRAM_BYTES];
    loop {
        // While the node is down its port refuses datagrams (ECONNREFUSED on a connected
        // socket); keep listening, it comes back on the same port.
        let Ok(len) = up.recv(&mut buf).await else { continue };
        forward(&controls, &delay_tx, &down, Some(client), &buf[..len]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo() -> (SocketAddr, JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = s.local_addr().expect("addr");
        let t = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        (addr, t)
    }

    /// Sends `msg` and waits for its echo: long enough for a loaded machine when an answer
    /// is expected, briefly when none is.
    async fn ask(client: &UdpSocket, relay: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
        let expect_silence = msg.starts_with(b"-");
        let wait = Duration::from_millis(if expect_silence { 300 } else { 10_000 });
        client.send_to(msg, relay).await.expect("send");
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(wait, client.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn more_clients_than_the_peer_bound_all_get_through() {
        let (node, _echo) = echo().await;
        let relay = Relay::start(node, 2).await.expect("relay");
        for i in 0..SIM_RELAY_MAX_PEERS + 8 {
            let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            let msg = format!("client {i}");
            let got = ask(&client, relay.addr(), msg.as_bytes()).await;
            assert_eq!(got.as_deref(), Some(msg.as_bytes()), "a new client past the bound");
        }
    }

    #[tokio::test]
    async fn forwards_both_ways_and_partitions_on_command() {
        let (node, _echo) = echo().await;
        let relay = Relay::start(node, 1).await.expect("relay");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        assert_eq!(ask(&client, relay.addr(), b"ping").await.as_deref(), Some(&b"ping"[..]));
        relay.set_partitioned(true);
        assert_eq!(ask(&client, relay.addr(), b"-lost").await, None);
        relay.clear();
        assert_eq!(ask(&client, relay.addr(), b"back").await.as_deref(), Some(&b"back"[..]));
        relay.set_drop_probability(1.0);
        assert_eq!(ask(&client, relay.addr(), b"-dropped").await, None);
        relay.clear();
        relay.set_delay(Duration::from_millis(30));
        let started = Instant::now();
        assert_eq!(ask(&client, relay.addr(), b"slow").await.as_deref(), Some(&b"slow"[..]));
        assert!(started.elapsed() >= Duration::from_millis(60), "delayed both ways");
        let c = relay.counters();
        assert!(c.forwarded >= 6 && c.dropped >= 2, "{c:?}");
    }
}
