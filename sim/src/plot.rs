//! SVG plots of a run (plotters, SVG backend only): recovery rate against failed nodes per
//! scheme, the restore-time distribution per scheme, and GPU-hours lost per failure against
//! the checkpoint interval for each job model.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::cost;
use crate::report::{Outcome, RunReport};
use crate::scenario::ResolvedJob;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {reason}")]
pub struct PlotError {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

const SIZE: (u32, u32) = (900, 560);

fn err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |reason| PlotError { path: path.display().to_string(), reason }
}

fn palette(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    COLORS[i % COLORS.len()]
}

/// Recovery rate (share of trials restored exactly) against the number of faulty nodes,
/// one line per scheme, over every trial of the run.
pub fn recovery_vs_failed(report: &RunReport, path: &Path) -> Result<(), PlotError> {
    let mut by_scheme: BTreeMap<&str, BTreeMap<usize, (u32, u32)>> = BTreeMap::new();
    for c in &report.cells {
        for t in &c.trials_detail {
            let e = by_scheme.entry(&c.scheme).or_default().entry(t.faulty_nodes).or_default();
            e.1 += 1;
            if t.outcome == Outcome::Restored {
                e.0 += 1;
            }
        }
    }
    let max_x = by_scheme.values().flat_map(|m| m.keys()).copied().max().unwrap_or(1).max(1);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path)(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Recovery rate vs faulty nodes", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..max_x as f64 + 0.5, 0f64..105f64)
        .map_err(|e| err(path)(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("nodes killed, frozen, partitioned or corrupt")
        .y_desc("restored exactly (%)")
        .draw()
        .map_err(|e| err(path)(e.to_string()))?;
    for (i, (scheme, points)) in by_scheme.iter().enumerate() {
        let color = palette(i);
        let series: Vec<(f64, f64)> = points
            .iter()
            .map(|(&x, &(ok, n))| (x as f64, 100.0 * f64::from(ok) / f64::from(n.max(1))))
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))
            .map_err(|e| err(path)(e.to_string()))?
            .label(scheme.to_string())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(series.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(|e| err(path)(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(path)(e.to_string()))?;
    root.present().map_err(|e| err(path)(e.to_string()))
}

/// The distribution (CDF) of restore times per scheme, over every trial that restored.
pub fn restore_time_cdf(report: &RunReport, path: &Path) -> Result<(), PlotError> {
    let mut by_scheme: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for c in &report.cells {
        let v = by_scheme.entry(&c.scheme).or_default();
        v.extend(
            c.trials_detail
                .iter()
                .filter(|t| t.outcome == Outcome::Restored)
                .filter_map(|t| t.restore_ms),
        );
    }
    let max_ms = by_scheme.values().flatten().copied().fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path)(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Restore time distribution ({} mode)", report.mode), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..max_ms * 1.05, 0f64..1.02f64)
        .map_err(|e| err(path)(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("restore time (ms)")
        .y_desc("share of restores at most this long")
        .draw()
        .map_err(|e| err(path)(e.to_string()))?;
    for (i, (scheme, mut v)) in by_scheme.into_iter().enumerate() {
        if v.is_empty() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let color = palette(i);
        let series: Vec<(f64, f64)> =
            v.iter().enumerate().map(|(j, &x)| (x, (j + 1) as f64 / n)).collect();
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(2)))
            .map_err(|e| err(path)(e.to_string()))?
            .label(scheme.to_string())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(path)(e.to_string()))?;
    root.present().map_err(|e| err(path)(e.to_string()))
}

/// GPU-hours lost per failure against the checkpoint interval, one line per job model, with
/// each model's Young/Daly interval marked.
pub fn cost_vs_interval(jobs: &[(String, ResolvedJob)], path: &Path) -> Result<(), PlotError> {
    let intervals: Vec<f64> = (1..=120).map(|i| f64::from(i) * 60.0).collect();
    let max_y = jobs
        .iter()
        .map(|(_, j)| cost::failure_cost(j, 7200.0, j.restore_s).gpu_hours)
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path)(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("GPU-hours lost per failure vs checkpoint interval", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..120f64, 0f64..max_y * 1.05)
        .map_err(|e| err(path)(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("checkpoint interval (minutes)")
        .y_desc("GPU-hours lost per failure")
        .draw()
        .map_err(|e| err(path)(e.to_string()))?;
    for (i, (name, job)) in jobs.iter().enumerate() {
        let color = palette(i);
        let series: Vec<(f64, f64)> = intervals
            .iter()
            .map(|&t| (t / 60.0, cost::failure_cost(job, t, job.restore_s).gpu_hours))
            .collect();
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(2)))
            .map_err(|e| err(path)(e.to_string()))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        let yd = cost::young_daly_interval_s(job.save_stall_s, job.job_mtbf_hours * 3600.0);
        let at = (yd / 60.0, cost::failure_cost(job, yd, job.restore_s).gpu_hours);
        chart
            .draw_series(std::iter::once(Circle::new(at, 6, color.filled())))
            .map_err(|e| err(path)(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(path)(e.to_string()))?;
    root.present().map_err(|e| err(path)(e.to_string()))
}
