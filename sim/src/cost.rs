//! What a failure costs a training job, in GPU-hours and dollars: the work lost since the
//! last good checkpoint, detection, restart and restore; the stalls of checkpointing; the
//! checkpoint interval that minimizes both (Young/Daly); the useful share of wall time. Pure
//! arithmetic, one function per figure, so that every table and plot prints the same number.
//!
//! First-order model (Young 1974, Daly 2006). A job checkpoints every `tau` seconds, stalls
//! `delta` seconds per save and is interrupted every `M` seconds on average. A failure falls
//! uniformly inside an interval, so it loses `tau / 2` of work on average, plus detection
//! `D`, restart `R` and restore `T`. Between two failures the job also stalls `M / tau`
//! times for `delta`. Per failure, the wasted time is therefore
//! `W(tau) = tau / 2 + D + R + T + M delta / tau` (U-shaped in `tau`), smallest at
//! `tau* = sqrt(2 delta M)`; the wasted share of wall time is `W(tau) / M`.
//!
//! Per scheme. The job model's `save_stall_s` is the stall of writing one copy of the
//! checkpoint (overhead 1). A scheme stores `overhead = (k + m) / k` bytes per byte saved and
//! a save is bound by the bytes it sends, so the scheme's stall is modelled as `save_stall_s *
//! overhead` ([`scheme_stall_s`]): 3-way replication stalls twice as long as RS 4+2. This is a
//! model, not a measurement: the trials save a small checkpoint (their measured save times
//! are in the recovery table). A restore reads `k` shards per stripe, one copy's bytes, for
//! every scheme, so the restore time is the job model's `restore_s` for all.

use serde::Serialize;

use crate::scenario::ResolvedJob;

/// The cost of one failure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FailureCost {
    /// Work since the last good checkpoint, on average `interval / 2`.
    pub lost_work_s: f64,
    /// Time to notice the failure.
    pub detect_s: f64,
    /// Time to restart the job.
    pub restart_s: f64,
    /// Time to restore the checkpoint.
    pub restore_s: f64,
    /// All of the above.
    pub total_s: f64,
    /// `gpus * total_s / 3600`.
    pub gpu_hours: f64,
    /// `gpu_hours * price_per_gpu_hour`.
    pub dollars: f64,
}

/// The cost of one failure of `job` checkpointing every `interval_s`, restoring in
/// `restore_s`.
pub fn failure_cost(job: &ResolvedJob, interval_s: f64, restore_s: f64) -> FailureCost {
    let lost_work_s = interval_s / 2.0;
    let total_s = lost_work_s + job.detect_s + job.restart_s + restore_s;
    let gpu_hours = job.gpus as f64 * total_s / 3600.0;
    FailureCost {
        lost_work_s,
        detect_s: job.detect_s,
        restart_s: job.restart_s,
        restore_s,
        total_s,
        gpu_hours,
        dollars: gpu_hours * job.price_per_gpu_hour,
    }
}

/// Young's optimal checkpoint interval, `sqrt(2 * save_stall * mtbf)`, in seconds: where
/// [`interval_cost`]'s total is smallest.
pub fn young_daly_interval_s(save_stall_s: f64, mtbf_s: f64) -> f64 {
    (2.0 * save_stall_s * mtbf_s).sqrt()
}

/// The modelled stall of one save of `job` with a scheme storing `overhead` bytes per byte
/// saved: `save_stall_s * overhead` (see the module doc: a model, not a measurement).
pub fn scheme_stall_s(job: &ResolvedJob, overhead: f64) -> f64 {
    job.save_stall_s * overhead
}

/// GPU-hours one failure costs at one checkpoint interval, split as the cost plot draws it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IntervalCost {
    /// The checkpoint interval, seconds.
    pub interval_s: f64,
    /// Work lost since the last checkpoint: `gpus * interval / 2`, GPU-hours.
    pub lost_work_gpu_h: f64,
    /// Detection, restart and restore: `gpus * (detect + restart + restore)`, GPU-hours.
    pub recovery_gpu_h: f64,
    /// Save stalls between two failures: `gpus * (mtbf / interval) * stall`, GPU-hours.
    pub checkpointing_gpu_h: f64,
    /// The sum of the three, GPU-hours.
    pub total_gpu_h: f64,
}

/// The GPU-hours one failure of `job` costs when it checkpoints every `interval_s`, stalls
/// `stall_s` per save and restores in `restore_s`, checkpoint stalls included.
pub fn interval_cost(
    job: &ResolvedJob,
    interval_s: f64,
    stall_s: f64,
    restore_s: f64,
) -> IntervalCost {
    let gpus = job.gpus as f64;
    let f = failure_cost(job, interval_s, restore_s);
    let lost_work_gpu_h = gpus * f.lost_work_s / 3600.0;
    let recovery_gpu_h = f.gpu_hours - lost_work_gpu_h;
    let saves = job.job_mtbf_hours * 3600.0 / interval_s;
    let checkpointing_gpu_h = gpus * saves * stall_s / 3600.0;
    IntervalCost {
        interval_s,
        lost_work_gpu_h,
        recovery_gpu_h,
        checkpointing_gpu_h,
        total_gpu_h: lost_work_gpu_h + recovery_gpu_h + checkpointing_gpu_h,
    }
}

/// The share of wall time spent on useful training (0 to 1):
/// `1 - stall / interval - (interval / 2 + detect + restart + restore) / mtbf`.
pub fn effective_ratio(job: &ResolvedJob, interval_s: f64, stall_s: f64, restore_s: f64) -> f64 {
    let mtbf_s = job.job_mtbf_hours * 3600.0;
    let per_failure = interval_s / 2.0 + job.detect_s + job.restart_s + restore_s;
    (1.0 - stall_s / interval_s - per_failure / mtbf_s).clamp(0.0, 1.0)
}

/// Everything the report says about one job model on one scheme. Every table prints these
/// fields; none recomputes them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostReport {
    /// The job model.
    pub job: ResolvedJob,
    /// Save stall used, seconds ([`scheme_stall_s`]).
    pub save_stall_s: f64,
    /// Restore time used, seconds (the job model's).
    pub restore_s: f64,
    /// One failure at the job's own interval (lost work, detection, restart, restore).
    pub per_failure: FailureCost,
    /// One failure at the job's own interval, with the save stalls between two failures.
    pub at_interval: IntervalCost,
    /// The same at the Young/Daly interval.
    pub at_young_daly: IntervalCost,
    /// Interruptions per day, `24 / mtbf_hours`.
    pub failures_per_day: f64,
    /// GPU-hours lost per day at the job's interval: failures and save stalls
    /// (`at_interval.total_gpu_h * failures_per_day`).
    pub gpu_hours_lost_per_day: f64,
    /// Dollars lost per day at the job's interval (failures and save stalls).
    pub dollars_lost_per_day: f64,
    /// Young/Daly interval, seconds.
    pub young_daly_interval_s: f64,
    /// Useful share of wall time at the job's interval.
    pub effective_ratio: f64,
    /// Useful share of wall time at the Young/Daly interval.
    pub effective_ratio_at_young_daly: f64,
}

/// Prices `job`'s failures with the given save stall and restore time.
pub fn report(job: &ResolvedJob, save_stall_s: f64, restore_s: f64) -> CostReport {
    let per_failure = failure_cost(job, job.checkpoint_interval_s, restore_s);
    let at_interval = interval_cost(job, job.checkpoint_interval_s, save_stall_s, restore_s);
    let failures_per_day = 24.0 / job.job_mtbf_hours;
    let yd = young_daly_interval_s(save_stall_s, job.job_mtbf_hours * 3600.0);
    let gpu_hours_lost_per_day = at_interval.total_gpu_h * failures_per_day;
    CostReport {
        job: *job,
        save_stall_s,
        restore_s,
        per_failure,
        at_interval,
        at_young_daly: interval_cost(job, yd, save_stall_s, restore_s),
        failures_per_day,
        gpu_hours_lost_per_day,
        dollars_lost_per_day: gpu_hours_lost_per_day * job.price_per_gpu_hour,
        young_daly_interval_s: yd,
        effective_ratio: effective_ratio(job, job.checkpoint_interval_s, save_stall_s, restore_s),
        effective_ratio_at_young_daly: effective_ratio(job, yd, save_stall_s, restore_s),
    }
}

/// Prices `job` on a scheme storing `overhead` bytes per byte saved: the stall of
/// [`scheme_stall_s`], the job model's restore time. The one place a cell's cost is made.
pub fn scheme_report(job: &ResolvedJob, overhead: f64) -> CostReport {
    report(job, scheme_stall_s(job, overhead), job.restore_s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{GPU_100K, LLAMA3_16K};

    fn job() -> ResolvedJob {
        ResolvedJob {
            gpus: 1000,
            price_per_gpu_hour: 3.0,
            step_time_s: 1.0,
            checkpoint_interval_s: 3600.0,
            detect_s: 60.0,
            restart_s: 240.0,
            job_mtbf_hours: 10.0,
            save_stall_s: 50.0,
            restore_s: 300.0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn failure_cost_matches_hand_arithmetic() {
        // 3600 / 2 + 60 + 240 + 300 = 2400 s; 1000 GPUs * 2400 s = 666.67 GPU-h; * $3 = $2000.
        let c = failure_cost(&job(), 3600.0, 300.0);
        assert!(close(c.lost_work_s, 1800.0));
        assert!(close(c.total_s, 2400.0));
        assert!(close(c.gpu_hours, 2400.0 * 1000.0 / 3600.0));
        assert!(close(c.dollars, 2000.0));
    }

    #[test]
    fn young_daly_and_effective_ratio_match_hand_arithmetic() {
        // sqrt(2 * 50 * 36000) = sqrt(3.6e6) = 1897.366...
        assert!(close(young_daly_interval_s(50.0, 36_000.0), 1_897.366_596_101_027_7));
        // 1 - 50/3600 - 2400/36000 = 1 - 0.013888... - 0.066666... = 0.919444...
        assert!(close(
            effective_ratio(&job(), 3600.0, 50.0, 300.0),
            1.0 - 50.0 / 3600.0 - 2400.0 / 36_000.0
        ));
        // The Young/Daly interval beats the job's own: the waste curve is smallest there.
        let r = report(&job(), 50.0, 300.0);
        assert!(r.effective_ratio_at_young_daly > r.effective_ratio);
        assert!(close(r.failures_per_day, 2.4));
        // Per failure: 2400 s of lost work and recovery, plus 10 saves of 50 s between two
        // failures (MTBF 36,000 s / interval 3,600 s).
        assert!(close(r.at_interval.checkpointing_gpu_h, 500.0 * 1000.0 / 3600.0));
        assert!(close(r.at_interval.total_gpu_h, 2900.0 * 1000.0 / 3600.0));
        assert!(close(r.gpu_hours_lost_per_day, 2.4 * 2900.0 * 1000.0 / 3600.0));
        assert!(close(r.dollars_lost_per_day, r.gpu_hours_lost_per_day * 3.0));
    }

    #[test]
    fn the_interval_cost_splits_into_its_parts() {
        // 1000 GPUs, interval 600 s, stall 50 s, restore 300 s, MTBF 36,000 s:
        // lost 300 s, recovery 60 + 240 + 300 = 600 s, checkpointing 60 saves * 50 s = 3000 s.
        let c = interval_cost(&job(), 600.0, 50.0, 300.0);
        let h = |s: f64| s * 1000.0 / 3600.0;
        assert!(close(c.lost_work_gpu_h, h(300.0)));
        assert!(close(c.recovery_gpu_h, h(600.0)));
        assert!(close(c.checkpointing_gpu_h, h(3000.0)));
        assert!(close(c.total_gpu_h, h(3900.0)));
        // The table's GPU-h per failure is the failure part of the same function.
        let f = failure_cost(&job(), 600.0, 300.0);
        assert!(close(f.gpu_hours, c.lost_work_gpu_h + c.recovery_gpu_h));
    }

    #[test]
    fn a_scheme_that_stores_more_stalls_longer_and_checkpoints_less_often() {
        let j = job();
        let rs42 = scheme_report(&j, 1.5);
        let rep3 = scheme_report(&j, 3.0);
        assert!(close(rs42.save_stall_s, 75.0) && close(rep3.save_stall_s, 150.0));
        assert!(rep3.young_daly_interval_s > rs42.young_daly_interval_s);
        assert!(rep3.at_young_daly.total_gpu_h > rs42.at_young_daly.total_gpu_h);
        // Lost work, detection, restart and restore do not depend on the scheme.
        assert_eq!(rs42.per_failure, rep3.per_failure);
    }

    proptest::proptest! {
        /// The total is U-shaped: it falls before the Young/Daly interval and rises after it
        /// (its derivative changes sign there), and no interval on a grid beats it.
        #[test]
        fn the_total_is_smallest_at_young_daly(
            gpus in 1u64..200_000,
            mtbf_h in 0.1f64..100.0,
            stall in 0.5f64..600.0,
            overhead in 1.0f64..4.0,
            fixed in 0.0f64..3600.0,
        ) {
            let mut j = job();
            j.gpus = gpus;
            j.job_mtbf_hours = mtbf_h;
            j.save_stall_s = stall;
            j.restart_s = fixed;
            let s = scheme_stall_s(&j, overhead);
            let best = young_daly_interval_s(s, mtbf_h * 3600.0);
            let total = |t: f64| interval_cost(&j, t, s, j.restore_s).total_gpu_h;
            let slope = |t: f64| (total(t * 1.0001) - total(t * 0.9999)) / (t * 0.0002);
            proptest::prop_assert!(slope(best * 0.9) < 0.0, "falls before the minimum");
            proptest::prop_assert!(slope(best * 1.1) > 0.0, "rises after it");
            for i in 1..=200 {
                let t = best * f64::from(i) / 50.0;
                proptest::prop_assert!(total(t) >= total(best) * (1.0 - 1e-12), "{t} beats {best}");
            }
        }
    }

    #[test]
    fn the_anchored_job_models_have_the_published_rates() {
        // Llama 3: 419 interruptions in 54 days on 16,384 GPUs: one every 3.09 hours.
        assert!((LLAMA3_16K.job_mtbf_hours - 3.0931).abs() < 1e-3);
        assert_eq!(LLAMA3_16K.gpus, 16_384);
        // 30 s stall, MTBF 11,135 s: sqrt(2 * 30 * 11135.08) = 817.4 s.
        let yd = young_daly_interval_s(30.0, LLAMA3_16K.job_mtbf_hours * 3600.0);
        assert!((yd - 817.37).abs() < 0.05, "{yd}");
        // 100k GPUs failing every 30 minutes: sqrt(2 * 30 * 1800) = 328.6 s.
        let yd = young_daly_interval_s(30.0, GPU_100K.job_mtbf_hours * 3600.0);
        assert!((yd - 328.63).abs() < 0.01, "{yd}");
    }

    #[test]
    fn the_ratio_is_clamped_when_failures_outrun_checkpoints() {
        let mut j = job();
        j.job_mtbf_hours = 0.01;
        assert_eq!(effective_ratio(&j, 3600.0, 50.0, 300.0), 0.0);
    }
}
