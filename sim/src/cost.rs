//! What a failure costs a training job: the work lost since the last good checkpoint, the
//! time to detect, restart and restore, in GPU-hours and dollars; the Young/Daly checkpoint
//! interval; and the share of wall time that is useful training. Pure arithmetic.
//!
//! First-order model (Young 1974, Daly 2006). A job checkpoints every `tau` seconds, stalls
//! `delta` seconds per save and is interrupted every `M` seconds on average. A failure falls
//! uniformly inside an interval, so it loses `tau / 2` of work on average, plus detection,
//! restart and restore. The wasted share of wall time is `delta / tau + (tau / 2 + D + R +
//! T) / M`; it is smallest at `tau = sqrt(2 * delta * M)`.

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

/// Young's optimal checkpoint interval, `sqrt(2 * save_stall * mtbf)`, in seconds.
pub fn young_daly_interval_s(save_stall_s: f64, mtbf_s: f64) -> f64 {
    (2.0 * save_stall_s * mtbf_s).sqrt()
}

/// The share of wall time spent on useful training (0 to 1):
/// `1 - stall / interval - (interval / 2 + detect + restart + restore) / mtbf`.
pub fn effective_ratio(job: &ResolvedJob, interval_s: f64, stall_s: f64, restore_s: f64) -> f64 {
    let mtbf_s = job.job_mtbf_hours * 3600.0;
    let per_failure = interval_s / 2.0 + job.detect_s + job.restart_s + restore_s;
    (1.0 - stall_s / interval_s - per_failure / mtbf_s).clamp(0.0, 1.0)
}

/// Everything the report says about one job model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostReport {
    /// The job model.
    pub job: ResolvedJob,
    /// Save stall used (measured, or the model's).
    pub save_stall_s: f64,
    /// Restore time used (measured, or the model's).
    pub restore_s: f64,
    /// One failure at the job's own interval.
    pub per_failure: FailureCost,
    /// Interruptions per day, `24 / mtbf_hours`.
    pub failures_per_day: f64,
    /// GPU-hours lost per day to failures at the job's interval (checkpoint stalls apart).
    pub gpu_hours_lost_per_day: f64,
    /// Dollars lost per day to failures at the job's interval.
    pub dollars_lost_per_day: f64,
    /// Young/Daly interval.
    pub young_daly_interval_s: f64,
    /// Useful share of wall time at the job's interval.
    pub effective_ratio: f64,
    /// Useful share of wall time at the Young/Daly interval.
    pub effective_ratio_at_young_daly: f64,
}

/// Prices `job`'s failures with the given save stall and restore time.
pub fn report(job: &ResolvedJob, save_stall_s: f64, restore_s: f64) -> CostReport {
    let per_failure = failure_cost(job, job.checkpoint_interval_s, restore_s);
    let failures_per_day = 24.0 / job.job_mtbf_hours;
    let yd = young_daly_interval_s(save_stall_s, job.job_mtbf_hours * 3600.0);
    CostReport {
        job: *job,
        save_stall_s,
        restore_s,
        per_failure,
        failures_per_day,
        gpu_hours_lost_per_day: per_failure.gpu_hours * failures_per_day,
        dollars_lost_per_day: per_failure.dollars * failures_per_day,
        young_daly_interval_s: yd,
        effective_ratio: effective_ratio(job, job.checkpoint_interval_s, save_stall_s, restore_s),
        effective_ratio_at_young_daly: effective_ratio(job, yd, save_stall_s, restore_s),
    }
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
        assert!(close(r.gpu_hours_lost_per_day, 2.4 * 2400.0 * 1000.0 / 3600.0));
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
