//! Durability: the probability of losing a checkpoint within a year, analytic (a Markov
//! birth-death chain per stripe) and by Monte-Carlo over a whole cluster.
//!
//! Chain. A stripe's `n = k + m` shards sit on `n` distinct nodes, each failing at rate
//! `lambda = 1 / MTBF`; a failed node's shards are rebuilt at rate `mu = 1 / repair time`,
//! each failed node independently. State `i` (failed shards) goes to `i + 1` at `(n - i)
//! lambda` and to `i - 1` at `i mu`; state `m + 1` loses the stripe. The mean time to data
//! loss (MTTDL) is the expected time to reach `m + 1` from 0. A checkpoint of `S` stripes
//! over `N` nodes has `G = min(S, C(N, n))` distinct placement groups, each an independent
//! chain, so it is lost within `t` with probability `1 - exp(-G t / MTTDL)`.
//!
//! Monte-Carlo. The same failure and repair processes run over `N` nodes with `S` stripes
//! placed on random distinct nodes (seeded); a run loses the checkpoint if some stripe ever
//! has more than `m` of its nodes failed at once. It checks the chain's independence
//! assumptions (shared nodes between stripes) where losses are frequent enough to count.
//!
//! Assumptions, printed beside the figures ([`Assumptions`]): nodes fail independently
//! (no rack or power-domain failures: a correlated outage is outside these figures) at an
//! exponential rate, and are repaired in parallel at an exponential rate whose mean is the
//! scenario's repair time (configured, or a measured throughput over a node's data).
//! `sim/tests/durability.rs` checks the chain against the exact birth-death solution and the
//! standard closed-form approximation, and the Monte-Carlo run against the chain.

use std::collections::BinaryHeap;

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The inputs of one durability estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DurabilityParams {
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Stripes of the checkpoint.
    pub stripes: u64,
    /// Mean hours between failures of one node.
    pub node_mtbf_hours: f64,
    /// Mean hours to rebuild a failed node's shards.
    pub repair_hours: f64,
}

/// Mean hours until a stripe of `k + m` shards loses more than `m` (see the module doc).
///
/// Solved by the chain's first-passage recursion: the mean time to go from `j` failed shards
/// to `j + 1` is `t_0 = 1 / l_0`, `t_j = 1 / l_j + (u_j / l_j) t_{j-1}` (up rate `l_j = (n -
/// j) lambda`, down rate `u_j = j mu`), and the MTTDL is their sum. Every term is positive, so
/// it stays exact where a tridiagonal solve of the same chain cancelled catastrophically
/// (a factor of 10 off for RS 10+4 with repairs 87,600 times faster than failures, found by
/// `sim/tests/durability.rs`).
pub fn stripe_mttdl_hours(k: u8, m: u8, node_mtbf_hours: f64, repair_hours: f64) -> f64 {
    let n = f64::from(k) + f64::from(m);
    let (lambda, mu) = (1.0 / node_mtbf_hours, 1.0 / repair_hours);
    let (mut total, mut step) = (0.0, 0.0);
    for j in 0..=u32::from(m) {
        let j = f64::from(j);
        let (up, down) = ((n - j) * lambda, j * mu);
        step = 1.0 / up + down / up * step;
        total += step;
    }
    total
}

/// What a durability figure assumes, as the report prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assumptions {
    /// Mean hours between failures of one node (configured).
    pub node_mtbf_hours: f64,
    /// Share of nodes failing per year, `1 - exp(-8766 / MTBF)`.
    pub node_failures_per_year: f64,
    /// Mean hours to repair a failed node.
    pub repair_hours: f64,
    /// Where the repair time comes from.
    pub repair_from: String,
    /// Whether correlated failures (a rack, a power domain) are modelled: never, yet.
    pub correlated_failures: bool,
    /// Independent placement groups, `min(stripes, C(nodes, k + m))`.
    pub placement_groups: f64,
}

/// The assumptions behind `p`, with `repair_from` saying where its repair time came from.
pub fn assumptions(p: &DurabilityParams, repair_from: String) -> Assumptions {
    Assumptions {
        node_mtbf_hours: p.node_mtbf_hours,
        node_failures_per_year: -(-HOURS_PER_YEAR / p.node_mtbf_hours).exp_m1(),
        repair_hours: p.repair_hours,
        repair_from,
        correlated_failures: false,
        placement_groups: placement_groups(p),
    }
}

/// Hours in a (Julian) year.
pub const HOURS_PER_YEAR: f64 = 8766.0;

/// Independent placement groups of a checkpoint: `min(stripes, C(nodes, k + m))`.
pub fn placement_groups(p: &DurabilityParams) -> f64 {
    (p.stripes as f64).min(choose(p.nodes, usize::from(p.k) + usize::from(p.m)))
}

/// `C(n, r)` as a float (saturating at infinity for huge values).
fn choose(n: usize, r: usize) -> f64 {
    if r > n {
        return 0.0;
    }
    (0..r).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// The analytic probability of losing the checkpoint within `hours`.
pub fn loss_probability(p: &DurabilityParams, hours: f64) -> f64 {
    let mttdl = stripe_mttdl_hours(p.k, p.m, p.node_mtbf_hours, p.repair_hours);
    -(-placement_groups(p) * hours / mttdl).exp_m1()
}

/// A Monte-Carlo estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MonteCarlo {
    /// Runs made.
    pub runs: u64,
    /// Runs that lost the checkpoint.
    pub losses: u64,
    /// `losses / runs`.
    pub probability: f64,
    /// Half-width of the 95% confidence interval (normal approximation).
    pub ci95: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    Repaired,
    Failed,
}

/// A node event at a time, earliest first out of a max-heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Event {
    at_h: f64,
    node: usize,
    change: Change,
}

impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .at_h
            .total_cmp(&self.at_h)
            .then(other.node.cmp(&self.node))
            .then(other.change.cmp(&self.change))
    }
}

fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    -mean * (1.0 - rng.gen::<f64>()).ln()
}

/// One Monte-Carlo run over `hours`: whether some stripe had more than `m` nodes failed.
fn one_run(p: &DurabilityParams, hours: f64, rng: &mut StdRng) -> bool {
    let n = usize::from(p.k) + usize::from(p.m);
    let mut stripes_of: Vec<Vec<u32>> = vec![Vec::new(); p.nodes];
    for s in 0..p.stripes {
        for node in sample(rng, p.nodes, n) {
            stripes_of[node].push(s as u32);
        }
    }
    let mut failed_in = vec![0u8; p.stripes as usize];
    let mut heap = BinaryHeap::with_capacity(p.nodes);
    for node in 0..p.nodes {
        let at_h = exponential(rng, p.node_mtbf_hours);
        heap.push(Event { at_h, node, change: Change::Failed });
    }
    while let Some(e) = heap.pop() {
        if e.at_h > hours {
            return false;
        }
        match e.change {
            Change::Failed => {
                for &s in &stripes_of[e.node] {
                    failed_in[s as usize] += 1;
                    if failed_in[s as usize] > p.m {
                        return true;
                    }
                }
                let at_h = e.at_h + exponential(rng, p.repair_hours);
                heap.push(Event { at_h, node: e.node, change: Change::Repaired });
            }
            Change::Repaired => {
                for &s in &stripes_of[e.node] {
                    failed_in[s as usize] -= 1;
                }
                let at_h = e.at_h + exponential(rng, p.node_mtbf_hours);
                heap.push(Event { at_h, node: e.node, change: Change::Failed });
            }
        }
    }
    false
}

/// `runs` seeded Monte-Carlo runs of `hours` each (a fresh placement per run).
pub fn monte_carlo(p: &DurabilityParams, hours: f64, runs: u64, seed: u64) -> MonteCarlo {
    let runs = runs.clamp(1, rackpoint_proto::limits::SIM_MAX_MONTE_CARLO_RUNS);
    let mut rng = StdRng::seed_from_u64(seed);
    let losses = (0..runs).filter(|_| one_run(p, hours, &mut rng)).count() as u64;
    let probability = losses as f64 / runs as f64;
    let ci95 = 1.96 * (probability * (1.0 - probability) / runs as f64).sqrt();
    MonteCarlo { runs, losses, probability, ci95 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mttdl_of_one_parity_matches_the_closed_form() {
        // n = 2 (k = 1, m = 1, 2-way replication): T0 = (3 lambda + mu) / (2 lambda^2).
        let (mtbf, repair) = (1000.0, 10.0);
        let (l, u) = (1.0 / mtbf, 1.0 / repair);
        let closed = (3.0 * l + u) / (2.0 * l * l);
        let t = stripe_mttdl_hours(1, 1, mtbf, repair);
        assert!((t - closed).abs() / closed < 1e-12, "{t} vs {closed}");
    }

    #[test]
    fn mttdl_without_repair_is_the_sum_of_holding_times() {
        // With repair far slower than failure, T0 -> sum_{i=0}^{m} 1 / ((n - i) lambda).
        let t = stripe_mttdl_hours(4, 2, 1.0, 1e12);
        let expected = 1.0 / 6.0 + 1.0 / 5.0 + 1.0 / 4.0;
        assert!((t - expected).abs() < 1e-6, "{t}");
    }

    #[test]
    fn more_parity_is_more_durable_at_equal_overhead_or_less() {
        let (mtbf, repair) = (8760.0, 2.0);
        let rs42 = stripe_mttdl_hours(4, 2, mtbf, repair);
        let rep2 = stripe_mttdl_hours(1, 1, mtbf, repair);
        let rep3 = stripe_mttdl_hours(1, 2, mtbf, repair);
        assert!(rs42 > 100.0 * rep2, "two parities beat one copy by far: {rs42} vs {rep2}");
        assert!(rep3 > rs42, "3 copies (3x) beat 4+2 (1.5x) per stripe: {rep3} vs {rs42}");
    }

    #[test]
    fn monte_carlo_agrees_with_the_chain_where_losses_are_countable() {
        // 1,000 nodes, accelerated failures so that losses happen often enough to count.
        let p = DurabilityParams {
            k: 4,
            m: 2,
            nodes: 1000,
            stripes: 200,
            node_mtbf_hours: 500.0,
            repair_hours: 2.0,
        };
        let hours = 2000.0;
        let analytic = loss_probability(&p, hours);
        let mc = monte_carlo(&p, hours, 400, 7);
        assert!(analytic > 0.05 && analytic < 0.95, "the check needs a countable rate: {analytic}");
        let tolerance = 3.0 * mc.ci95 + 0.03;
        assert!(
            (mc.probability - analytic).abs() < tolerance,
            "monte carlo {} ± {} vs analytic {analytic}",
            mc.probability,
            mc.ci95
        );
    }
}
