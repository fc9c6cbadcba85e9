//! The durability model checked from outside. `durability::stripe_mttdl_hours` solves the
//! stripe's birth-death chain by its first-passage recursion; here it is compared with two
//! closed forms written apart from it (the exact double sum and the standard approximation), and the seeded Monte-Carlo run is compared with the
//! chain's exact loss probability within the estimate's own confidence interval.
//!
//! The chain (see `sim/src/durability.rs`): a stripe of `n = k + m` shards on `n` distinct
//! nodes; each node fails independently at rate `lambda = 1 / MTBF` (exponential); each
//! failed node is rebuilt independently at rate `mu = 1 / repair time` (exponential, repairs
//! run in parallel); state `i` failed goes up at `(n - i) lambda` and down at `i mu`; the
//! stripe is lost on reaching `m + 1`.

use proptest::prelude::*;
use rackpoint_sim::durability::{
    loss_probability, monte_carlo, stripe_mttdl_hours, DurabilityParams,
};

/// Exact MTTDL in closed form, the unrolled first-passage sum of a birth-death chain (Karlin
/// & Taylor, "A First Course in Stochastic Processes", 2nd ed., 1975, ch. 4): with up rates
/// `l_j = (n - j) lambda` and down rates `u_j = j mu`,
/// `MTTDL = sum_{j=0..m} sum_{i=0..j} (u_{i+1} ... u_j) / (l_i ... l_j)`.
/// Written as an explicit double sum of products, apart from the module's recursion.
fn mttdl_exact(k: u8, m: u8, lambda: f64, mu: f64) -> f64 {
    let n = f64::from(k) + f64::from(m);
    let up = |l: u32| (n - f64::from(l)) * lambda;
    let down = |l: u32| f64::from(l) * mu;
    let mut sum = 0.0;
    for j in 0..=u32::from(m) {
        for i in 0..=j {
            let num: f64 = (i + 1..=j).map(down).product();
            let den: f64 = (i..=j).map(up).product();
            sum += num / den;
        }
    }
    sum
}

/// The standard approximation for `mu >> lambda`: `MTTDL ~ m! mu^m / (lambda^(m+1)
/// prod_{i=0..m} (n - i))`. For `m = 1` it is Patterson, Gibson & Katz's RAID formula (SIGMOD
/// 1988), `MTTF^2 / (n (n - 1) MTTR)`. The `m!` is there because this chain repairs failed
/// nodes in parallel (rate `i mu` in state `i`); with one repair at a time (rate `mu`) the
/// formula has no `m!`. Its first neglected terms are of relative order `(m + 1) n lambda /
/// mu`, the tolerance used below.
fn mttdl_approx(k: u8, m: u8, lambda: f64, mu: f64) -> f64 {
    let n = f64::from(k) + f64::from(m);
    let (mut fact, mut falling) = (1.0, 1.0);
    for i in 0..=u32::from(m) {
        falling *= n - f64::from(i);
        if i > 0 {
            fact *= f64::from(i);
        }
    }
    fact * mu.powi(i32::from(m)) / (lambda.powi(i32::from(m) + 1) * falling)
}

/// The exact probability that one stripe is lost within `hours`, starting with every shard
/// good: entry (0, m + 1) of `exp(Q hours)` for the chain's generator `Q` with its absorbing
/// state, by scaling and squaring a Taylor series.
fn loss_within_exact(k: u8, m: u8, lambda: f64, mu: f64, hours: f64) -> f64 {
    let n = f64::from(k) + f64::from(m);
    let s = usize::from(m) + 2;
    let mut q = vec![vec![0.0; s]; s];
    for (i, row) in q.iter_mut().enumerate().take(s - 1) {
        let (up, down) = ((n - i as f64) * lambda, i as f64 * mu);
        row[i + 1] = up;
        if i > 0 {
            row[i - 1] = down;
        }
        row[i] = -(up + down);
    }
    let norm = q.iter().map(|r| r.iter().map(|x| x.abs()).sum::<f64>()).fold(0.0, f64::max);
    let mut squarings = 0;
    let mut scale = hours;
    while norm * scale > 0.25 {
        scale /= 2.0;
        squarings += 1;
    }
    let mul = |a: &Vec<Vec<f64>>, b: &Vec<Vec<f64>>| -> Vec<Vec<f64>> {
        (0..s).map(|i| (0..s).map(|j| (0..s).map(|l| a[i][l] * b[l][j]).sum()).collect()).collect()
    };
    let a: Vec<Vec<f64>> = q.iter().map(|r| r.iter().map(|x| x * scale).collect()).collect();
    let mut e: Vec<Vec<f64>> =
        (0..s).map(|i| (0..s).map(|j| f64::from(u8::from(i == j))).collect()).collect();
    let mut term = e.clone();
    for t in 1..=24 {
        term = mul(&term, &a)
            .into_iter()
            .map(|r| r.into_iter().map(|x| x / f64::from(t)).collect())
            .collect();
        for i in 0..s {
            for j in 0..s {
                e[i][j] += term[i][j];
            }
        }
    }
    for _ in 0..squarings {
        e = mul(&e, &e);
    }
    e[0][s - 1]
}

/// (k, m, node MTBF hours, repair hours): replication and RS codes, repair from 30 minutes to
/// a day, node MTBF from one to ten years.
const CASES: [(u8, u8, f64, f64); 8] = [
    (1, 1, 8_760.0, 24.0),
    (1, 2, 8_760.0, 24.0),
    (4, 2, 43_800.0, 3.1),
    (8, 3, 43_800.0, 3.1),
    (6, 3, 5_000.0, 0.5),
    (10, 4, 87_600.0, 1.0),
    (1, 1, 43_800.0, 3.1),
    (4, 2, 8_760.0, 2.0),
];

#[test]
fn the_chain_matches_the_exact_birth_death_solution() {
    for (k, m, mtbf, repair) in CASES {
        let chain = stripe_mttdl_hours(k, m, mtbf, repair);
        let exact = mttdl_exact(k, m, 1.0 / mtbf, 1.0 / repair);
        assert!(
            (chain - exact).abs() <= 1e-9 * exact,
            "k={k} m={m} MTBF {mtbf} h repair {repair} h: chain {chain} vs exact {exact}"
        );
    }
}

#[test]
fn the_chain_matches_the_standard_approximation_within_its_error() {
    for (k, m, mtbf, repair) in CASES {
        let (lambda, mu) = (1.0 / mtbf, 1.0 / repair);
        let chain = stripe_mttdl_hours(k, m, mtbf, repair);
        let approx = mttdl_approx(k, m, lambda, mu);
        let n = f64::from(k) + f64::from(m);
        let tolerance = (f64::from(m) + 1.0) * n * lambda / mu;
        assert!(tolerance < 0.05, "the approximation needs mu >> lambda: {tolerance}");
        let rel = (chain - approx).abs() / chain;
        assert!(
            rel <= tolerance,
            "k={k} m={m} MTBF {mtbf} h repair {repair} h: chain {chain:.6e} vs approx \
             {approx:.6e}: {rel:.2e} > {tolerance:.2e}"
        );
    }
}

#[test]
fn the_exponential_loss_figure_matches_the_exact_transient_when_losses_are_rare() {
    // The report's P(loss within a year) is 1 - exp(-t / MTTDL) per placement group. Over a
    // year with repairs of hours it is the exact first-passage probability to 1%.
    for (k, m, mtbf, repair) in [(1, 1, 8_760.0, 24.0), (4, 2, 8_760.0, 2.0), (1, 2, 2_000.0, 24.0)]
    {
        let p = DurabilityParams {
            k,
            m,
            nodes: usize::from(k + m),
            stripes: 1,
            node_mtbf_hours: mtbf,
            repair_hours: repair,
        };
        let figure = loss_probability(&p, 8766.0);
        let exact = loss_within_exact(k, m, 1.0 / mtbf, 1.0 / repair, 8766.0);
        assert!(exact > 1e-6 && exact < 0.2, "a rare but computable loss: {exact}");
        assert!(
            (figure - exact).abs() <= 0.01 * exact,
            "k={k} m={m}: reported {figure:.6e} vs exact {exact:.6e}"
        );
    }
}

#[test]
fn the_seeded_monte_carlo_falls_within_its_interval_of_the_exact_chain() {
    // One placement group (n nodes, one stripe): the Monte-Carlo run simulates exactly the
    // chain, so its estimate must fall within its 99.9% interval (3.29 standard errors) of
    // the exact probability. Rates are accelerated so that losses are countable.
    for (k, m, mtbf, repair, seed) in
        [(4u8, 2u8, 100.0, 10.0, 1u64), (1, 1, 100.0, 10.0, 2), (8, 3, 50.0, 10.0, 3)]
    {
        let lambda_mu = (1.0 / mtbf, 1.0 / repair);
        let hours = 0.7 * mttdl_exact(k, m, lambda_mu.0, lambda_mu.1);
        let exact = loss_within_exact(k, m, lambda_mu.0, lambda_mu.1, hours);
        let p = DurabilityParams {
            k,
            m,
            nodes: usize::from(k + m),
            stripes: 1,
            node_mtbf_hours: mtbf,
            repair_hours: repair,
        };
        let runs = 4000;
        let mc = monte_carlo(&p, hours, runs, seed);
        let sigma = (exact * (1.0 - exact) / runs as f64).sqrt();
        assert!(
            (mc.probability - exact).abs() <= 3.29 * sigma,
            "k={k} m={m}: Monte-Carlo {} ({} of {runs}) vs exact {exact:.4} ± {:.4}",
            mc.probability,
            mc.losses,
            3.29 * sigma
        );
        // The report's exponential figure is within 0.035 of the exact one even here, where
        // a year is most of an MTTDL and repairs are only 10 times faster than failures.
        assert!((loss_probability(&p, hours) - exact).abs() < 0.035);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Faster failures lose data sooner; faster repairs later; the solver equals the closed
    /// form everywhere.
    #[test]
    fn mttdl_falls_as_failures_quicken_and_rises_as_repairs_do(
        k in 1u8..=12,
        m in 1u8..=4,
        mtbf in 10.0f64..1e6,
        repair in 0.01f64..100.0,
        factor in 1.01f64..100.0,
    ) {
        let base = stripe_mttdl_hours(k, m, mtbf, repair);
        prop_assert!(stripe_mttdl_hours(k, m, mtbf / factor, repair) < base);
        prop_assert!(stripe_mttdl_hours(k, m, mtbf, repair / factor) > base);
        let exact = mttdl_exact(k, m, 1.0 / mtbf, 1.0 / repair);
        prop_assert!((base - exact).abs() <= 1e-9 * exact, "{} vs {}", base, exact);
    }
}
