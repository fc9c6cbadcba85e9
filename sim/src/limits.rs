//! The simulator's own bounds (scenario sizes, trial counts, relay queues). They bound what a
//! scenario file may ask for and what the relay buffers; the system's bounds stay in
//! `rackpoint_proto::limits`, which the simulator uses as they are.

/// Largest scenario file read.
pub const MAX_SCENARIO_FILE_BYTES: u64 = 1024 * 1024;
/// Most trials per scheme in one run.
pub const MAX_TRIALS: u32 = 1_000_000;
/// Most schemes one scenario compares.
pub const MAX_SCHEMES: usize = 16;
/// Most scheduled faults in one scenario.
pub const MAX_FAULTS: usize = 64;
/// Largest part a trial saves (real mode holds it in memory twice: original and restored).
pub const MAX_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Most objects in one part.
pub const MAX_OBJECTS: u32 = 4096;
/// Latest time a fault may be scheduled into its phase, and the longest relay delay.
pub const MAX_FAULT_TIME_MS: u64 = 600_000;

/// Largest datagram the relay forwards (QUIC's largest UDP payload is far below it).
pub const RELAY_MAX_DATAGRAM_BYTES: usize = 65_535;
/// Datagrams a relay holds in its delay line; past it, datagrams are dropped (as a router
/// with a full queue would).
pub const RELAY_MAX_QUEUED_DATAGRAMS: usize = 8192;
/// Distinct client addresses one relay forwards for (each gets its own upstream socket).
pub const RELAY_MAX_PEERS: usize = 64;

/// Longest wait for a fault to be noticed by the client's health view before "not
/// detected" is recorded.
pub const DETECT_TIMEOUT_MS: u64 = 15_000;
/// How often the health view is looked at while measuring detection.
pub const DETECT_POLL_MS: u64 = 20;
/// Longest a real-mode restore may take before the trial counts it as hung.
pub const REAL_RESTORE_TIMEOUT_MS: u64 = 300_000;
/// Longest a real-mode save may take before the trial counts it as hung.
pub const REAL_SAVE_TIMEOUT_MS: u64 = 300_000;

/// Failing trial seeds a report lists per scheme (the count is always exact).
pub const MAX_REPORTED_FAILURES: usize = 32;
/// Most simulated events one fast-mode trial may process before it is declared stuck.
pub const FAST_MAX_EVENTS_PER_TRIAL: u64 = 10_000_000;
/// Most Monte-Carlo runs of the durability check.
pub const MAX_MONTE_CARLO_RUNS: u64 = 10_000_000;
