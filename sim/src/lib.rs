//! rackpoint-sim: the fault-injection simulator. It runs scenarios (`scenario`, their faults
//! resolved per trial by `schedule`, their checkpoints made by `workload`) against real
//! `rackpoint-store` processes behind controllable UDP relays (`real`, `relay`) or against a
//! deterministic in-process model that drives the client's own pure decision code (`fast`),
//! judges every restore against an oracle (`oracle`), and reports recovery rates, restore
//! times, the cost of failures (`cost`), durability (`durability`), tables, JSON (`report`)
//! and SVG plots (`plot`); `run` runs a whole set of scenarios in either mode.

pub mod cost;
pub mod durability;
pub mod fast;
pub mod oracle;
pub mod plot;
pub mod real;
pub mod relay;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod workload;

/// The seed of trial `t` of a run seeded `run_seed` (splitmix64 of the pair), so that any
/// one trial can be replayed alone with `--trial-seed`.
pub fn trial_seed(run_seed: u64, t: u32) -> u64 {
    let mut z = run_seed ^ (u64::from(t) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
