//! What a measured phase cost, from `/proc`: CPU seconds of this process (the client), of
//! its reaped children (a CLI run), of given peer processes (the nodes, the sink), of the
//! whole machine (shared with whatever else runs: nothing is subtracted), and the UDP
//! datagrams the network namespace counted, each per GiB moved; printed as a table of
//! medians over runs.

use std::time::{Duration, Instant};

use rackpoint_benches::proc_stats::{
    machine_times, pid_stat, udp_counters, MachineTimes, ProcessTimes, UdpCounters,
};
use rackpoint_benches::{median, Table};

const GIB: f64 = (1u64 << 30) as f64;

/// A phase being measured: the readings at its start.
pub struct Meter {
    started: Instant,
    machine: MachineTimes,
    own: ProcessTimes,
    peers: Vec<(u32, f64)>,
    udp: UdpCounters,
}

/// What one phase cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub elapsed: Duration,
    /// Busy core-seconds of the whole machine.
    pub machine_s: f64,
    /// Core-seconds of this process.
    pub own_s: f64,
    /// Core-seconds of children this process reaped during the phase.
    pub reaped_s: f64,
    /// Core-seconds of the peers, summed, and of the busiest one.
    pub peers_s: f64,
    pub busiest_peer_s: f64,
    pub udp: UdpCounters,
}

impl Meter {
    /// Starts measuring; `peers` are the other processes to account (nodes or the sink).
    /// A reading that fails counts as zero, so the table shows it rather than the run dying.
    pub fn start(peers: &[u32]) -> Self {
        let peers =
            peers.iter().map(|&pid| (pid, pid_stat(pid).map_or(0.0, |s| s.times.own_s))).collect();
        Self {
            machine: machine_times().unwrap_or_default(),
            own: pid_stat(0).map(|s| s.times).unwrap_or_default(),
            udp: udp_counters().unwrap_or_default(),
            peers,
            started: Instant::now(),
        }
    }

    /// Ends the phase. A peer that exited meanwhile counts only up to its last reading (0).
    pub fn stop(self) -> Cost {
        let elapsed = self.started.elapsed();
        let machine = machine_times().unwrap_or_default();
        let own = pid_stat(0).map(|s| s.times).unwrap_or_default();
        let peer_deltas: Vec<f64> = self
            .peers
            .iter()
            .map(|(pid, at_start)| pid_stat(*pid).map_or(0.0, |s| s.times.own_s - at_start))
            .collect();
        Cost {
            elapsed,
            machine_s: machine.busy_s - self.machine.busy_s,
            own_s: own.own_s - self.own.own_s,
            reaped_s: own.reaped_children_s - self.own.reaped_children_s,
            peers_s: peer_deltas.iter().sum(),
            busiest_peer_s: peer_deltas.iter().copied().fold(0.0, f64::max),
            udp: udp_counters().unwrap_or_default().since(&self.udp),
        }
    }
}

/// Which process plays the client in a row: this one, or a reaped child (the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIs {
    ThisProcess,
    ReapedChild,
}

/// The costs of one measurement over its runs.
pub struct CostSeries {
    pub label: String,
    pub bytes: u64,
    pub client: ClientIs,
    pub runs: Vec<Cost>,
}

impl CostSeries {
    pub fn new(label: impl Into<String>, bytes: u64, client: ClientIs) -> Self {
        Self { label: label.into(), bytes, client, runs: Vec::new() }
    }

    fn per_gib(&self, f: impl Fn(&Cost) -> f64) -> f64 {
        let gib = self.bytes as f64 / GIB;
        let v: Vec<f64> = self.runs.iter().map(|c| f(c) / gib).collect();
        median(&v).unwrap_or(f64::NAN)
    }

    fn client_s(&self, c: &Cost) -> f64 {
        match self.client {
            ClientIs::ThisProcess => c.own_s,
            ClientIs::ReapedChild => c.reaped_s + c.own_s,
        }
    }

    fn cells(&self) -> Vec<String> {
        let mib_s: Vec<f64> = self
            .runs
            .iter()
            .map(|c| self.bytes as f64 / (1 << 20) as f64 / c.elapsed.as_secs_f64().max(1e-9))
            .collect();
        let f2 = |x: f64| format!("{x:.2}");
        let k = |x: f64| format!("{:.0}k", x / 1000.0);
        vec![
            self.label.clone(),
            format!("{:.0}", median(&mib_s).unwrap_or(f64::NAN)),
            f2(self.per_gib(|c| self.client_s(c))),
            f2(self.per_gib(|c| c.peers_s)),
            f2(self.per_gib(|c| c.busiest_peer_s)),
            f2(self.per_gib(|c| self.client_s(c) + c.peers_s)),
            f2(self.per_gib(|c| c.machine_s)),
            k(self.per_gib(|c| c.udp.out_datagrams as f64)),
            k(self.per_gib(|c| c.udp.in_datagrams as f64)),
            format!("{:.0}", self.per_gib(|c| c.udp.rcvbuf_errors as f64)),
        ]
    }
}

/// The cost table: medians per GiB of every series.
pub fn render(series: &[&CostSeries]) -> String {
    let mut table = Table::new(&[
        "measurement",
        "MiB/s",
        "client core-s/GiB",
        "peers core-s/GiB",
        "busiest peer",
        "client+peers",
        "machine core-s/GiB",
        "UDP sends/GiB",
        "UDP receives/GiB",
        "rcvbuf drops/GiB",
    ]);
    for s in series {
        table.row(s.cells());
    }
    table.render()
}
