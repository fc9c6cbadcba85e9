//! CPU time and UDP counters read from `/proc`, for the harness's cost columns: a process's
//! user + system time (`/proc/<pid>/stat`), the time of its reaped children, the whole
//! machine's busy time (`/proc/stat`), a process's child processes by name, and the
//! network namespace's UDP datagram counters (`/proc/net/snmp`).
//!
//! The parsers are pure functions of the text; the readers only fetch it.

use std::io;

/// Clock ticks per second of the times in `/proc` (`USER_HZ`, 100 on every Linux ABI the
/// harness runs on).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds of one process.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProcessTimes {
    /// User + system seconds of the process itself (all its threads).
    pub own_s: f64,
    /// User + system seconds of its children that it has reaped.
    pub reaped_children_s: f64,
}

/// The fields of a `/proc/<pid>/stat` line the harness uses.
#[derive(Debug, Clone, PartialEq)]
pub struct PidStat {
    /// The command name (`comm`, at most 15 bytes).
    pub comm: String,
    /// The parent's pid.
    pub ppid: u32,
    /// CPU times.
    pub times: ProcessTimes,
}

/// Parses a `/proc/<pid>/stat` line: `pid (comm) state ppid ... utime stime cutime cstime
/// ...` (fields 14-17 in ticks). The command name may hold spaces and parentheses, so the
/// fields after it are found from the last `)`.
pub fn parse_pid_stat(text: &str) -> Option<PidStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // Fields after the comm start at field 3 (state).
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field =
        |n: usize| -> Option<f64> { rest.get(n - 3)?.parse::<u64>().ok().map(|t| t as f64) };
    let ppid = rest.get(1)?.parse().ok()?;
    let own = field(14)? + field(15)?;
    let children = field(16)? + field(17)?;
    Some(PidStat {
        comm,
        ppid,
        times: ProcessTimes {
            own_s: own / TICKS_PER_SECOND,
            reaped_children_s: children / TICKS_PER_SECOND,
        },
    })
}

/// Reads and parses `/proc/<pid>/stat` (`pid` 0 means this process).
pub fn pid_stat(pid: u32) -> io::Result<PidStat> {
    let path = if pid == 0 { "/proc/self/stat".to_owned() } else { format!("/proc/{pid}/stat") };
    let text = std::fs::read_to_string(&path)?;
    parse_pid_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {path}")))
}

/// Busy and total CPU seconds of the whole machine, summed over its cores.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MachineTimes {
    /// user + nice + system + irq + softirq + steal.
    pub busy_s: f64,
    /// busy + idle + iowait.
    pub total_s: f64,
}

/// Parses the `cpu ` line of `/proc/stat` (`user nice system idle iowait irq softirq steal
/// guest guest_nice`; guest time is already inside user).
pub fn parse_machine_stat(text: &str) -> Option<MachineTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>().map(|t| t as f64))
        .collect::<Result<_, _>>()
        .ok()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    if v.len() < 4 {
        return None;
    }
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let total = busy + at(3) + at(4);
    Some(MachineTimes { busy_s: busy / TICKS_PER_SECOND, total_s: total / TICKS_PER_SECOND })
}

/// Reads `/proc/stat`.
pub fn machine_times() -> io::Result<MachineTimes> {
    let text = std::fs::read_to_string("/proc/stat")?;
    parse_machine_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "cannot parse /proc/stat"))
}

/// The pids of live processes whose parent is `parent` and whose command name is `comm`
/// (processes that vanish during the scan are skipped).
pub fn children_named(parent: u32, comm: &str) -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        match pid_stat(pid) {
            Ok(stat) if stat.ppid == parent && stat.comm == comm => pids.push(pid),
            _ => {}
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// This process's pid.
pub fn own_pid() -> u32 {
    std::process::id()
}

/// The network namespace's UDP counters (`Udp:` lines of `/proc/net/snmp`; with GSO the
/// kernel counts every segment as one datagram out, with GRO one coalesced batch in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpCounters {
    /// `InDatagrams`.
    pub in_datagrams: u64,
    /// `OutDatagrams`.
    pub out_datagrams: u64,
    /// `RcvbufErrors`: datagrams dropped because a receive buffer was full.
    pub rcvbuf_errors: u64,
    /// `SndbufErrors`.
    pub sndbuf_errors: u64,
}

impl UdpCounters {
    /// Counts since `earlier`.
    pub fn since(&self, earlier: &UdpCounters) -> UdpCounters {
        UdpCounters {
            in_datagrams: self.in_datagrams.saturating_sub(earlier.in_datagrams),
            out_datagrams: self.out_datagrams.saturating_sub(earlier.out_datagrams),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(earlier.sndbuf_errors),
        }
    }
}

/// Parses the two `Udp:` lines (names, then values) of `/proc/net/snmp`.
pub fn parse_snmp_udp(text: &str) -> Option<UdpCounters> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some(UdpCounters {
        in_datagrams: get("InDatagrams")?,
        out_datagrams: get("OutDatagrams")?,
        rcvbuf_errors: get("RcvbufErrors")?,
        sndbuf_errors: get("SndbufErrors")?,
    })
}

/// Reads `/proc/net/snmp`.
pub fn udp_counters() -> io::Result<UdpCounters> {
    let text = std::fs::read_to_string("/proc/net/snmp")?;
    parse_snmp_udp(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "cannot parse /proc/net/snmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_stat_survives_spaces_and_parentheses_in_the_name() {
        let line = "4242 (tokio (rt) 1) S 4000 4242 9041 0 -1 4194304 97 0 0 0 250 50 30 20 20 0 \
                    1 0 62849 3133440 357 18446744073709551615";
        let stat = parse_pid_stat(line).expect("parses");
        assert_eq!(stat.comm, "tokio (rt) 1");
        assert_eq!(stat.ppid, 4000);
        assert_eq!(stat.times, ProcessTimes { own_s: 3.0, reaped_children_s: 0.5 });
        assert_eq!(parse_pid_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_is_readable() {
        let me = pid_stat(0).expect("/proc/self/stat");
        assert_eq!(pid_stat(own_pid()).expect("by pid").comm, me.comm);
        assert!(me.times.own_s >= 0.0);
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let text = "cpu  100 10 50 1000 40 5 5 10 7 0\ncpu0 1 2 3 4\n";
        let t = parse_machine_stat(text).expect("parses");
        assert!((t.busy_s - 1.8).abs() < 1e-9, "{t:?}");
        assert!((t.total_s - 12.2).abs() < 1e-9, "{t:?}");
        assert_eq!(parse_machine_stat("cpu0 1 2 3 4\n"), None);
        assert!(machine_times().expect("/proc/stat").total_s > 0.0);
    }

    #[test]
    fn udp_counters_are_found_by_name() {
        let text = "Ip: Forwarding\nIp: 1\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 37 0 2 38 5 6\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    UdpLite: 9 9 9 9 9 9\n";
        let c = parse_snmp_udp(text).expect("parses");
        let want =
            UdpCounters { in_datagrams: 37, out_datagrams: 38, rcvbuf_errors: 5, sndbuf_errors: 6 };
        assert_eq!(c, want);
        let later = UdpCounters { in_datagrams: 40, ..c };
        assert_eq!(later.since(&c).in_datagrams, 3);
        assert_eq!(c.since(&later).in_datagrams, 0);
        assert_eq!(parse_snmp_udp("Udp: InDatagrams\n"), None);
    }

    #[test]
    fn children_of_this_process_are_found_by_name() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let found = children_named(own_pid(), "sleep");
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert_eq!(found.expect("scan"), vec![child.id()]);
    }
}
