//! SVG plots of a run (plotters, SVG backend only), each answering one question: how safe
//! is a scheme (`recovery_bars`: exact, refused cleanly or wrong bytes, per scheme and
//! number of faulty nodes), how durable for what storage (`durability_vs_overhead`), what a
//! failure costs against the checkpoint interval with the cost of checkpointing drawn too
//! (`cost_vs_interval`), and how long restores take with the detection step explained
//! (`restore_time_cdf`). Each picture was rendered to PNG and looked at while it was made.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::cost::{self, CostReport};
use crate::report::{Outcome, RunReport};
use crate::scenario::ResolvedJob;
use rackpoint_proto::limits::HEDGE_MIN_MS;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {reason}")]
pub struct PlotError {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

const SIZE: (u32, u32) = (1000, 600);
const FONT: &str = "sans-serif";

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

const EXACT: RGBColor = RGBColor(44, 160, 44);
const REFUSED: RGBColor = RGBColor(158, 202, 225);
const OTHER: RGBColor = RGBColor(255, 127, 14);
const WRONG: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(110, 110, 110);

/// Groups thousands: 12345 -> "12,345".
fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Schemes in the order the run first met them, with their parity count.
fn schemes(report: &RunReport) -> Vec<(String, u8)> {
    let mut out: Vec<(String, u8)> = Vec::new();
    for c in &report.cells {
        if !out.iter().any(|(s, _)| *s == c.scheme) {
            out.push((c.scheme.clone(), c.m));
        }
    }
    out
}

/// Trial outcomes of one bar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Trials.
    pub trials: u32,
    /// Exact bytes back.
    pub exact: u32,
    /// Clean refusals.
    pub refused: u32,
    /// Wrong bytes.
    pub wrong: u32,
    /// Anything else (failed save, error, hang).
    pub other: u32,
}

/// Every trial of the run counted per scheme and number of faulty nodes.
pub fn tallies(report: &RunReport) -> BTreeMap<(String, usize), Tally> {
    let mut out: BTreeMap<(String, usize), Tally> = BTreeMap::new();
    for c in &report.cells {
        for t in &c.trials_detail {
            let e = out.entry((c.scheme.clone(), t.faulty_nodes)).or_default();
            e.trials += 1;
            match &t.outcome {
                Outcome::Restored => e.exact += 1,
                Outcome::WrongBytes(_) => e.wrong += 1,
                o if o.is_clean_failure() => e.refused += 1,
                _ => e.other += 1,
            }
        }
    }
    out
}

/// Recovery as stacked bars, one group per scheme and one bar per number of faulty nodes:
/// exact (green), refused cleanly (light blue), other failures (orange) and wrong bytes (red,
/// with its count written in a red box on top of every bar, so that a zero is seen as one).
pub fn recovery_bars(report: &RunReport, path: &Path) -> Result<(), PlotError> {
    let e = err(path);
    let tally = tallies(report);
    let schemes = schemes(report);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    // Slots: each scheme's faulty-node counts side by side, a gap between schemes.
    let mut slots: Vec<(usize, usize, f64)> = Vec::new(); // (scheme index, faulty, x)
    let mut x = 0.0;
    for (i, (name, _)) in schemes.iter().enumerate() {
        for f in tally.keys().filter(|(s, _)| s == name).map(|(_, f)| *f) {
            slots.push((i, f, x));
            x += 1.0;
        }
        x += 0.8;
    }
    let x_end = (x - 0.8).max(1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "What each restore returned, per scheme and faulty nodes ({} mode)",
                report.mode
            ),
            (FONT, 22),
        )
        .margin(16)
        .margin_top(10)
        .margin_bottom(8)
        .top_x_label_area_size(34)
        .x_label_area_size(70)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.6f64..x_end - 0.4, 0f64..111f64)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_labels(7)
        .y_label_formatter(&|y| if *y <= 100.0 { format!("{y:.0}") } else { String::new() })
        .y_desc("share of trials (%)")
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let w = 0.36;
    for &(si, f, x) in &slots {
        let t = tally[&(schemes[si].0.clone(), f)];
        let n = f64::from(t.trials.max(1));
        let mut y0 = 0.0;
        for (count, color) in
            [(t.exact, EXACT), (t.refused, REFUSED), (t.other, OTHER), (t.wrong, WRONG)]
        {
            let h = 100.0 * f64::from(count) / n;
            if h > 0.0 {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x - w, y0), (x + w, y0 + h)],
                        color.filled(),
                    )))
                    .map_err(|x| e(x.to_string()))?;
            }
            y0 += h;
        }
        // The wrong-bytes box: outlined in red, the count inside.
        let (top, box_h) = (101.5, 8.0);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x - w, top), (x + w, top + box_h)],
                WRONG.stroke_width(1),
            )))
            .map_err(|x| e(x.to_string()))?;
        let label = Text::new(
            t.wrong.to_string(),
            (x, top + box_h / 2.0),
            (FONT, 13).into_font().color(&WRONG).pos(Pos::new(HPos::Center, VPos::Center)),
        );
        chart.draw_series(std::iter::once(label)).map_err(|x| e(x.to_string()))?;
        // Under the bar: the faulty-node count (an integer) and the trials.
        let (px, py) = chart.backend_coord(&(x, 0.0));
        let tick = (FONT, 15).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&Text::new(f.to_string(), (px, py + 6), tick)).map_err(|x| e(x.to_string()))?;
        let small = (FONT, 11).into_font().color(&GREY).pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&Text::new(format!("n={}", t.trials), (px, py + 24), small))
            .map_err(|x| e(x.to_string()))?;
    }
    // Under each group: the scheme and its tolerance; a dotted line after its last
    // tolerated count.
    for (i, (name, m)) in schemes.iter().enumerate() {
        let xs: Vec<(usize, f64)> = slots.iter().filter(|s| s.0 == i).map(|s| (s.1, s.2)).collect();
        let Some(mid) = xs.first().zip(xs.last()).map(|(a, b)| (a.1 + b.1) / 2.0) else {
            continue;
        };
        let (px, py) = chart.backend_coord(&(mid, 0.0));
        let style = (FONT, 15).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&Text::new(format!("{name} (tolerates m = {m})"), (px, py + 42), style))
            .map_err(|x| e(x.to_string()))?;
        let beyond = xs.iter().find(|(f, _)| *f > usize::from(*m)).map(|(_, x)| *x - 0.5);
        if let Some(bx) = beyond.filter(|_| xs.iter().any(|(f, _)| *f <= usize::from(*m))) {
            chart
                .draw_series(std::iter::once(DashedPathElement::new(
                    vec![(bx, 0.0), (bx, 100.0)],
                    4,
                    4,
                    BLACK.stroke_width(1),
                )))
                .map_err(|x| e(x.to_string()))?;
            let t = Text::new(
                "beyond m",
                (bx + 0.05, 97.0),
                (FONT, 12).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Top)),
            );
            chart.draw_series(std::iter::once(t)).map_err(|x| e(x.to_string()))?;
        }
    }
    // The x axis line and its description.
    let (x0, y0) = chart.backend_coord(&(-0.6, 0.0));
    let (x1, _) = chart.backend_coord(&(x_end - 0.4, 0.0));
    root.draw(&PathElement::new(vec![(x0, y0), (x1, y0)], BLACK.stroke_width(1)))
        .map_err(|x| e(x.to_string()))?;
    root.draw(&Text::new(
        "faulty nodes in the trial (killed, frozen, partitioned, wiped or corrupt); n = trials",
        ((x0 + x1) / 2, y0 + 60),
        (FONT, 14).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top)),
    ))
    .map_err(|x| e(x.to_string()))?;
    legend_row(
        &root,
        (x0, 48),
        &[
            (EXACT.filled(), "exact bytes back"),
            (REFUSED.filled(), "refused cleanly (nothing returned)"),
            (OTHER.filled(), "other failure (save failed, error)"),
            (WRONG.stroke_width(1), "wrong bytes: count in the red box"),
        ],
    )
    .map_err(&e)?;
    root.present().map_err(|x| e(x.to_string()))
}

/// A legend of coloured boxes in one row starting at `at` (pixels of `root`).
fn legend_row(
    root: &DrawingArea<SVGBackend, Shift>,
    at: (i32, i32),
    rows: &[(ShapeStyle, &str)],
) -> Result<(), String> {
    let (mut x, y) = at;
    for (style, text) in rows {
        root.draw(&Rectangle::new([(x, y), (x + 16, y + 12)], *style))
            .map_err(|e| e.to_string())?;
        root.draw(&Text::new(*text, (x + 22, y), (FONT, 13))).map_err(|e| e.to_string())?;
        x += 32 + 7 * text.len() as i32;
    }
    Ok(())
}

/// Loss probability per year (log scale) against storage overhead, one labelled point per
/// scheme (and scenario), with the model's assumptions written under the axis.
pub fn durability_vs_overhead(report: &RunReport, path: &Path) -> Result<(), PlotError> {
    let e = err(path);
    const FLOOR: f64 = 1e-30;
    let points: Vec<(String, f64, f64, &str)> = report
        .durability
        .iter()
        .map(|d| {
            let k = f64::from(d.params.k);
            let ovh = (k + f64::from(d.params.m)) / k.max(1.0);
            (d.scheme.clone(), ovh, d.loss_per_year.max(FLOOR), d.scenario.as_str())
        })
        .collect();
    let scenarios: Vec<&str> = {
        let mut v: Vec<&str> = points.iter().map(|p| p.3).collect();
        v.dedup();
        v
    };
    let lo = points.iter().map(|p| p.2).fold(1.0f64, f64::min);
    let y_lo = 10f64.powf(lo.log10().floor() - 1.0).max(FLOOR / 10.0);
    let x_hi = points.iter().map(|p| p.1).fold(2.0f64, f64::max) + 0.6;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let notes = dedup_by_scenario(report).len() as u32;
    let mut chart = ChartBuilder::on(&root)
        .caption("Chance of losing the checkpoint within a year vs storage overhead", (FONT, 22))
        .margin(16)
        .margin_bottom(16 + 16 * 4 * notes)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.9f64..x_hi, (y_lo..4.0f64).log_scale())
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("storage overhead: bytes stored per byte saved, (k + m) / k")
        .y_desc("P(loss within a year), log scale")
        .y_label_formatter(&|y| {
            if *y >= 0.01 {
                format!("{y}")
            } else {
                format!("1e{:.0}", y.log10())
            }
        })
        .x_label_formatter(&|x| format!("{x:.1}x"))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (scheme, ovh, p, scenario) in &points {
        let si = scenarios.iter().position(|s| s == scenario).unwrap_or(0);
        let color = palette(si);
        chart
            .draw_series(std::iter::once(Circle::new((*ovh, *p), 7, color.filled())))
            .map_err(|x| e(x.to_string()))?;
        let what = if *p <= FLOOR {
            format!("< {FLOOR:.0e} per year")
        } else if *p >= 0.01 {
            format!("{:.0}% per year", 100.0 * p)
        } else {
            format!("{p:.1e} per year, about 1 in {} years", thousands(1.0 / p))
        };
        let label = if scenarios.len() > 1 {
            format!("{scheme} ({scenario}): {what}")
        } else {
            format!("{scheme}: {what}")
        };
        // Alternate label sides so that close points do not overwrite each other.
        let (pos, dx) =
            if *ovh < (0.9 + x_hi) / 2.0 { (HPos::Left, 0.06) } else { (HPos::Right, -0.06) };
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (*ovh + dx, *p),
                (FONT, 14).into_font().color(&BLACK).pos(Pos::new(pos, VPos::Center)),
            )))
            .map_err(|x| e(x.to_string()))?;
    }
    // The assumptions, under the x axis description.
    let (cx, cy) = chart.backend_coord(&(0.9, y_lo));
    let mut y = cy + 56;
    for d in dedup_by_scenario(report) {
        let a = &d.assumptions;
        let lines = [
            format!(
                "Assumptions ({}): {} stripes on {} nodes, {:.0} placement groups for {}; nodes \
                 fail independently, exponentially, MTBF {} h;",
                d.scenario,
                thousands(d.params.stripes as f64),
                thousands(d.params.nodes as f64),
                a.placement_groups,
                d.scheme,
                thousands(a.node_mtbf_hours)
            ),
            format!(
                "repair: mean {:.2} h, exponential, in parallel per failed node, from {}",
                a.repair_hours,
                a.repair_from.split("; ").next().unwrap_or_default()
            ),
            a.repair_from.split("; ").nth(1).unwrap_or_default().to_string(),
            "correlated (rack, power) failures are not modelled.".to_string(),
        ];
        for l in lines.iter().filter(|l| !l.is_empty()) {
            root.draw(&Text::new(l.as_str(), (cx, y), (FONT, 12).into_font().color(&GREY)))
                .map_err(|x| e(x.to_string()))?;
            y += 16;
        }
    }
    root.present().map_err(|x| e(x.to_string()))
}

fn dedup_by_scenario(report: &RunReport) -> Vec<&crate::report::DurabilityRow> {
    let mut out: Vec<&crate::report::DurabilityRow> = Vec::new();
    for d in &report.durability {
        if !out.iter().any(|o| o.scenario == d.scenario) {
            out.push(d);
        }
    }
    out
}

/// One job model and the schemes priced with it.
struct JobPanel {
    job: ResolvedJob,
    scenarios: Vec<String>,
    schemes: Vec<(String, CostReport)>,
}

fn job_panels(report: &RunReport) -> Vec<JobPanel> {
    let mut out: Vec<JobPanel> = Vec::new();
    for c in &report.cells {
        let Some(k) = c.cost else { continue };
        let i = match out.iter().position(|p| p.job == k.job) {
            Some(i) => i,
            None => {
                out.push(JobPanel { job: k.job, scenarios: Vec::new(), schemes: Vec::new() });
                out.len() - 1
            }
        };
        let p = &mut out[i];
        if !p.scenarios.contains(&c.scenario) {
            p.scenarios.push(c.scenario.clone());
        }
        if !p.schemes.iter().any(|(s, _)| *s == c.scheme) {
            p.schemes.push((c.scheme.clone(), k));
        }
    }
    out
}

/// GPU-hours per failure against the checkpoint interval, one panel per job model: lost work
/// plus detection, restart and restore rise with the interval (dashed, the same for every
/// scheme); save stalls between two failures fall with it (dotted, per scheme: a scheme that
/// writes more bytes stalls longer); their sum (solid, per scheme) is U-shaped, its minimum
/// (the Young/Daly interval) marked with a dot and given in the legend; the job's own
/// interval is drawn.
pub fn cost_vs_interval(report: &RunReport, path: &Path) -> Result<(), PlotError> {
    let e = err(path);
    let panels = job_panels(report);
    let n = panels.len().max(1);
    let root = SVGBackend::new(path, (SIZE.0, SIZE.1 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    for (panel, area) in panels.iter().zip(root.split_evenly((n, 1))) {
        cost_panel(panel, &area).map_err(&e)?;
    }
    root.present().map_err(|x| e(x.to_string()))
}

fn cost_panel(panel: &JobPanel, area: &DrawingArea<SVGBackend, Shift>) -> Result<(), String> {
    let job = &panel.job;
    let mtbf_s = job.job_mtbf_hours * 3600.0;
    let best: Vec<f64> = panel
        .schemes
        .iter()
        .map(|(_, k)| cost::young_daly_interval_s(k.save_stall_s, mtbf_s))
        .collect();
    let max_best = best.iter().copied().fold(60.0, f64::max);
    let x_hi_s = (3.0 * max_best).max(1.25 * job.checkpoint_interval_s);
    let min_total = panel
        .schemes
        .iter()
        .zip(&best)
        .map(|((_, k), &b)| cost::interval_cost(job, b, k.save_stall_s, k.restore_s).total_gpu_h)
        .fold(0.0, f64::max);
    let fixed_line = |t: f64| {
        let c = cost::interval_cost(job, t, 0.0, job.restore_s);
        c.lost_work_gpu_h + c.recovery_gpu_h
    };
    // Room above the curves for the legend: they end below half the height on the right.
    let end_total = panel
        .schemes
        .iter()
        .map(|(_, k)| cost::interval_cost(job, x_hi_s, k.save_stall_s, k.restore_s).total_gpu_h)
        .fold(0.0, f64::max);
    let y_hi = (2.2 * min_total).max(1.9 * end_total);
    let to_min = |s: f64| s / 60.0;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "GPU-hours per failure vs checkpoint interval: {} GPUs, a failure every {:.2} h ({})",
                thousands(job.gpus as f64),
                job.job_mtbf_hours,
                panel.scenarios.join(", ")
            ),
            (FONT, 19),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..to_min(x_hi_s), 0f64..y_hi)
        .map_err(|x| x.to_string())?;
    chart
        .configure_mesh()
        .x_desc("checkpoint interval (minutes)")
        .y_desc("GPU-hours per failure")
        .y_label_formatter(&|y| thousands(*y))
        .draw()
        .map_err(|x| x.to_string())?;
    let steps = 400;
    let xs: Vec<f64> = (1..=steps).map(|i| x_hi_s * f64::from(i) / f64::from(steps)).collect();
    let clip = |pts: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        pts.into_iter().filter(|p| p.1 <= y_hi).collect()
    };
    // Lost work + detect + restart + restore: the same for every scheme.
    let fixed: Vec<(f64, f64)> = xs.iter().map(|&t| (to_min(t), fixed_line(t))).collect();
    chart
        .draw_series(std::iter::once(DashedPathElement::new(
            clip(fixed),
            8,
            5,
            BLACK.stroke_width(2),
        )))
        .map_err(|x| x.to_string())?
        .label("lost work (interval / 2) + detect + restart + restore: the same for every scheme")
        .legend(|(x, y)| {
            DashedPathElement::new(vec![(x, y), (x + 22, y)], 8, 5, BLACK.stroke_width(2))
        });
    chart
        .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
        .map_err(|x| x.to_string())?
        .label("save stalls between two failures: dotted, one per scheme")
        .legend(|(x, y)| {
            DashedPathElement::new(vec![(x, y), (x + 22, y)], 2, 4, GREY.stroke_width(2))
        });
    for (i, ((scheme, k), &b)) in panel.schemes.iter().zip(&best).enumerate() {
        let color = palette(i);
        let at = |t: f64| cost::interval_cost(job, t, k.save_stall_s, k.restore_s);
        let stalls: Vec<(f64, f64)> =
            xs.iter().map(|&t| (to_min(t), at(t).checkpointing_gpu_h)).collect();
        chart
            .draw_series(std::iter::once(DashedPathElement::new(
                clip(stalls),
                2,
                4,
                color.stroke_width(2),
            )))
            .map_err(|x| x.to_string())?;
        let total: Vec<(f64, f64)> = xs.iter().map(|&t| (to_min(t), at(t).total_gpu_h)).collect();
        let lowest = at(b).total_gpu_h;
        chart
            .draw_series(LineSeries::new(clip(total), color.stroke_width(3)))
            .map_err(|x| x.to_string())?
            .label(format!(
                "{scheme} total = dashed + dotted ({:.0} s per save): minimum (dot) {} GPU-h at \
                 {:.1} min",
                k.save_stall_s,
                thousands(lowest),
                to_min(b)
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
            });
        chart
            .draw_series(std::iter::once(Circle::new((to_min(b), lowest), 6, color.filled())))
            .map_err(|x| x.to_string())?;
    }
    // The job's own interval.
    let ji = to_min(job.checkpoint_interval_s);
    chart
        .draw_series(std::iter::once(DashedPathElement::new(
            vec![(ji, 0.0), (ji, y_hi)],
            3,
            3,
            GREY.stroke_width(1),
        )))
        .map_err(|x| x.to_string())?;
    chart
        .draw_series(std::iter::once(Text::new(
            format!("job's interval: {ji:.0} min"),
            (ji, y_hi * 0.62),
            (FONT, 12).into_font().color(&GREY).pos(Pos::new(HPos::Left, VPos::Top)),
        )))
        .map_err(|x| x.to_string())?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 12))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|x| x.to_string())?;
    Ok(())
}

/// The distribution (CDF) of restore times per scheme over every trial that restored, on a
/// log time axis, with its step explained: a node silent during the listing costs the
/// restore one listing grace (at least `HEDGE_MIN_MS`), drawn dashed.
pub fn restore_time_cdf(report: &RunReport, path: &Path) -> Result<(), PlotError> {
    let e = err(path);
    let mut by_scheme: Vec<(String, Vec<f64>)> = Vec::new();
    for c in &report.cells {
        let i = match by_scheme.iter().position(|(s, _)| *s == c.scheme) {
            Some(i) => i,
            None => {
                by_scheme.push((c.scheme.clone(), Vec::new()));
                by_scheme.len() - 1
            }
        };
        by_scheme[i].1.extend(
            c.trials_detail
                .iter()
                .filter(|t| t.outcome == Outcome::Restored)
                .filter_map(|t| t.restore_ms)
                .filter(|ms| *ms > 0.0),
        );
    }
    let all = by_scheme.iter().flat_map(|(_, v)| v.iter().copied());
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lo, hi) = if hi <= 0.0 { (0.1, 1.0) } else { (lo * 0.7, hi * 1.4) };
    let detect = crate::report::percentiles(
        report.cells.iter().flat_map(|c| c.trials_detail.iter().filter_map(|t| t.detect_ms)),
    );
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("How long exact restores took ({} mode)", report.mode), (FONT, 22))
        .margin(16)
        .x_label_area_size(46)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.02f64)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("restore time (ms, log scale)")
        .y_desc("share of exact restores at most this long")
        .x_label_formatter(&|x| if *x >= 1000.0 { thousands(*x) } else { format!("{x}") })
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let schemes_n = by_scheme.len();
    for (i, (scheme, mut v)) in by_scheme.into_iter().enumerate() {
        if v.is_empty() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let color = palette(i);
        // Earlier schemes are drawn wider, so that identical curves show as outlined lines.
        let width = 2 + 2 * schemes_n.saturating_sub(i + 1) as u32;
        let mut series: Vec<(f64, f64)> = Vec::with_capacity(2 * v.len());
        for (j, &x) in v.iter().enumerate() {
            series.push((x, j as f64 / n));
            series.push((x, (j + 1) as f64 / n));
        }
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(width)))
            .map_err(|x| e(x.to_string()))?
            .label(format!("{scheme} ({} restores)", v.len()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(width))
            });
    }
    let grace = HEDGE_MIN_MS as f64;
    if grace > lo && grace < hi {
        chart
            .draw_series(std::iter::once(DashedPathElement::new(
                vec![(grace, 0.0), (grace, 1.0)],
                5,
                4,
                BLACK.stroke_width(1),
            )))
            .map_err(|x| e(x.to_string()))?;
    }
    let mut note = vec![
        format!("Dashed: {HEDGE_MIN_MS} ms, the shortest listing grace. A restore first lists"),
        "the job's checkpoints on every node; when a node stays silent (killed, frozen,".into(),
        "partitioned), the listing waits one hedging threshold (at least this long) before".into(),
        "leaving it out and reading parity instead: the step. Restores left of it met no".into(),
        "silent node.".into(),
    ];
    if detect.count > 0 {
        note.push(format!(
            "The heartbeat marks such a node down later (median {} ms, {} trials: the",
            thousands(detect.p50),
            detect.count
        ));
        note.push("table's detect column); the restore does not wait for it.".into());
    }
    let (cx, cy) = chart.backend_coord(&(lo, 1.0));
    for (i, l) in note.iter().enumerate() {
        root.draw(&Text::new(l.as_str(), (cx + 12, cy + 14 + 17 * i as i32), (FONT, 13)))
            .map_err(|x| e(x.to_string()))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}
