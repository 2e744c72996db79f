//! The output side of `optimus-gpu eval`: a terminal table, JSON and CSV files, head-to-
//! head counts, and SVG plots (final gap against dimension, and convergence curves). Everything here only
//! reads an [`EvalResults`]; nothing touches the GPU.

use super::results::{Cell, EvalResults};
use super::scored_gap;
use crate::optim::Method;
use anyhow::{Context, Result};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Smallest gap drawn on a log axis: exact zeros and round-off negatives land here.
const GAP_FLOOR: f64 = 1e-12;

/// Plot size in pixels.
const PLOT_SIZE: (u32, u32) = (900, 600);

// ---------------------------------------------------------------------------------------
// Ordering helpers
// ---------------------------------------------------------------------------------------

/// Names in the order the run listed them, then any others in order of first appearance,
/// so the report follows the configuration rather than the order cells were produced.
fn ordered_names<'a>(listed: &'a [String], seen: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for name in listed.iter().map(String::as_str).chain(seen) {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Functions, dimensions and optimizers of `res`, each in report order.
fn axes(res: &EvalResults) -> (Vec<&str>, Vec<usize>, Vec<&str>) {
    let functions = ordered_names(
        &res.functions,
        res.cells.iter().map(|c| c.function.as_str()),
    );
    let optimizers = ordered_names(
        &res.optimizers,
        res.cells.iter().map(|c| c.optimizer.as_str()),
    );
    let mut dims: Vec<usize> = res
        .dims
        .iter()
        .copied()
        .chain(res.cells.iter().map(|c| c.dim))
        .collect();
    dims.sort_unstable();
    dims.dedup();
    (functions, dims, optimizers)
}

/// The cell of one (function, dimension, optimizer), if the run produced it.
fn find<'a>(res: &'a EvalResults, function: &str, dim: usize, optimizer: &str) -> Option<&'a Cell> {
    res.cells
        .iter()
        .find(|c| c.function == function && c.dim == dim && c.optimizer == optimizer)
}

// ---------------------------------------------------------------------------------------
// Terminal table
// ---------------------------------------------------------------------------------------

/// A gap in compact scientific notation (`3.2e-5`), short enough for a table column.
fn sci(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.1e}")
    }
}

/// An optional mean count, or "-" when no start point reached the threshold.
fn opt_count(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.1}"),
        Some(v) => format!("{v}"),
        None => "-".into(),
    }
}

/// Appends rows of cells as aligned columns; `right[i]` right-aligns column i (numbers).
fn push_columns(out: &mut String, rows: &[Vec<String>], right: &[bool], indent: &str) {
    let ncol = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncol)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        // An empty row is a rule across the full width.
        if row.is_empty() {
            let total = widths.iter().sum::<usize>() + 2 * ncol.saturating_sub(1);
            let _ = writeln!(out, "{indent}{}", "-".repeat(total));
            continue;
        }
        let mut line = String::from(indent);
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let w = widths[i];
            if right.get(i).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>w$}");
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// A plain-text table for the terminal: one row per optimizer, grouped by function then
/// dimension, followed by the tuned learning rates and skipped problems, so a run can be
/// read at a glance without opening the files.
pub fn table(res: &EvalResults) -> String {
    let (functions, dims, optimizers) = axes(res);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} steps, {} start points, success: gap <= {}, threshold: gap <= {}, {:.2} s on {}",
        res.steps,
        res.starts,
        sci(res.success_tol),
        sci(res.threshold),
        res.seconds,
        res.adapter
    );
    let _ = writeln!(out);

    let header: Vec<String> = [
        "function",
        "d",
        "optimizer",
        "mean f−f*",
        "median f−f*",
        "finite mean",
        "success %",
        "steps to thr",
        "evals to thr",
        "reached thr",
        "diverged",
        "time (s)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let right = [
        false, true, false, true, true, true, true, true, true, true, true, true,
    ];
    let mut rows = vec![header, Vec::new()];
    let mut first_group = true;
    for f in &functions {
        let mut f_shown = false;
        for &d in &dims {
            let mut d_shown = false;
            for o in &optimizers {
                let Some(c) = find(res, f, d, o) else {
                    continue;
                };
                if !f_shown && !first_group {
                    rows.push(Vec::new());
                }
                rows.push(vec![
                    if f_shown {
                        String::new()
                    } else {
                        f.to_string()
                    },
                    if d_shown {
                        String::new()
                    } else {
                        d.to_string()
                    },
                    o.to_string(),
                    sci(c.mean_gap),
                    sci(c.median_gap),
                    sci(c.finite_mean_gap),
                    format!("{:.1}", 100.0 * c.success_rate),
                    opt_count(c.steps_to_threshold),
                    opt_count(c.evals_to_threshold),
                    format!("{}/{}", c.reached_threshold, c.final_gaps.len()),
                    c.diverged.to_string(),
                    format!("{:.3}", c.seconds),
                ]);
                f_shown = true;
                d_shown = true;
                first_group = false;
            }
        }
    }
    if rows.len() == 2 {
        let _ = writeln!(out, "(no results)");
    } else {
        push_columns(&mut out, &rows, &right, "");
    }

    if axes(res).2.len() > 1 {
        head_to_head_table(res, &mut out);
    }
    if !res.tuned.is_empty() {
        let _ = writeln!(out, "\nTuned learning rates:");
        let rows: Vec<Vec<String>> = res
            .tuned
            .iter()
            .map(|t| vec![t.optimizer.clone(), t.function.clone(), sci(t.lr)])
            .collect();
        push_columns(&mut out, &rows, &[false, false, true], "  ");
    }
    if !res.skipped.is_empty() {
        let _ = writeln!(out, "\nSkipped:");
        for s in &res.skipped {
            let _ = writeln!(out, "  - {s}");
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Head to head
// ---------------------------------------------------------------------------------------

/// Opponent name of the column that counts cells won against every classic optimizer.
pub const ALL_CLASSIC: &str = "all classic";

/// How often `optimizer` beats `opponent` over the (function, d) cells both ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadToHead {
    pub optimizer: String,
    /// Another optimizer of the run, or [`ALL_CLASSIC`]: every classic optimizer of the
    /// run at once (a cell counts when it beats each of them).
    pub opponent: String,
    pub cells: usize,
    /// Cells where its mean final gap is lower (a diverged start makes a mean +∞, and
    /// +∞ is never lower).
    pub lower_gap: usize,
    /// Cells where it reaches the threshold in fewer steps on average over all starts, a
    /// start that never reaches it counting as T + 1 (so reaching it from more starts
    /// counts, and a cell neither reaches is a tie).
    pub fewer_steps: usize,
    /// Cells where its median gap gets to the opponent's final median gap in fewer
    /// steps than the opponent's own (see [`speedup_to_level`]).
    pub sooner_to_level: usize,
    /// Of those, cells where it gets there in a tenth of the opponent's steps or fewer:
    /// the paper's "10x fewer steps".
    pub ten_times_sooner: usize,
    /// Cells where it gets there in a tenth of the opponent's evaluations or fewer (see
    /// [`evals_speedup_to_level`]).
    pub ten_times_fewer_evals: usize,
    /// Start points both ran (the same points, over every cell both ran).
    pub starts: usize,
    /// Of those, the start points where it ends strictly lower (a diverged start is +∞,
    /// so it never ends lower, and two diverged starts tie): the paired comparison.
    pub paired_lower: usize,
}

fn lower_gap(a: &Cell, b: &Cell) -> bool {
    scored_gap(a.mean_gap) < scored_gap(b.mean_gap)
}

/// Start points of a cell where `a` ends strictly lower than every cell of `them` (same
/// seeds, so the same start points).
fn paired_lower(a: &Cell, them: &[&Cell]) -> usize {
    (0..a.final_gaps.len())
        .filter(|&i| {
            let ga = scored_gap(a.final_gaps[i]);
            them.iter()
                .all(|b| b.final_gaps.get(i).is_some_and(|&gb| ga < scored_gap(gb)))
        })
        .count()
}

/// Mean steps to the threshold over all of a cell's starts, T + 1 for a start that
/// did not reach it within the budget T.
fn censored_steps(c: &Cell, budget: u32) -> f64 {
    let n = c.final_gaps.len().max(1) as f64;
    let k = c.reached_threshold as f64;
    let miss = (budget + 1) as f64;
    (c.steps_to_threshold.unwrap_or(0.0) * k + miss * (n - k)) / n
}

fn fewer_steps(a: &Cell, b: &Cell, budget: u32) -> bool {
    censored_steps(a, budget) < censored_steps(b, budget)
}

/// Relative slack on an opponent's final level: its median curve can creep down by a
/// hair until the last step, which would otherwise date its arrival at T.
const LEVEL_SLACK: f64 = 0.01;

/// First iterations at which `a` and `b` get to b's final median gap (within 1 %):
/// a fixed threshold such as 1e-3 is never reached on the rugged functions within the
/// budget, this level always is by `b`. None where b's final median is not finite, `a`
/// never gets there, or b never moves from the start.
fn arrivals_at_level(a: &Cell, b: &Cell) -> Option<(usize, usize)> {
    let level = *b.curve.last()?;
    if !level.is_finite() {
        return None;
    }
    let level = level + LEVEL_SLACK * level.abs();
    let first = |c: &Cell| c.curve.iter().position(|&g| g <= level);
    let tb = first(b)?;
    let ta = first(a)?;
    (tb > 0).then_some((ta, tb))
}

/// How many times sooner `a` reaches what `b` ends at: b's arrival iteration over a's
/// (at least 1), see [`arrivals_at_level`].
pub fn speedup_to_level(a: &Cell, b: &Cell) -> Option<f64> {
    let (ta, tb) = arrivals_at_level(a, b)?;
    Some(tb as f64 / ta.max(1) as f64)
}

/// The same arrivals counted in objective/gradient evaluations (median over starts):
/// a line search pays several per iteration where a learned step pays one, and the
/// evaluations are what a user's simulation is charged for. None also where a cell
/// has no evaluation curve (results written before it was recorded).
pub fn evals_speedup_to_level(a: &Cell, b: &Cell) -> Option<f64> {
    let (ta, tb) = arrivals_at_level(a, b)?;
    let (ea, eb) = (a.evals_curve.get(ta)?, b.evals_curve.get(tb)?);
    Some(eb / ea.max(1.0))
}

/// Every optimizer against every other and against all classic ones at once: the
/// counts behind "beats Adam and L-BFGS on most cells", computed, not read off a table.
pub fn head_to_head(res: &EvalResults) -> Vec<HeadToHead> {
    let (functions, dims, optimizers) = axes(res);
    let classic: Vec<&str> = optimizers
        .iter()
        .copied()
        .filter(|o| Method::parse(o).is_ok_and(|m| m.model_kind().is_none()))
        .collect();
    let mut out = Vec::new();
    for &o in &optimizers {
        let others = optimizers
            .iter()
            .filter(|&&p| p != o)
            .map(|&p| (p, vec![p]));
        let all = (!classic.is_empty()).then(|| {
            let rest: Vec<&str> = classic.iter().copied().filter(|&p| p != o).collect();
            (ALL_CLASSIC, rest)
        });
        for (name, opponents) in others.chain(all) {
            if opponents.is_empty() {
                continue;
            }
            let mut h = HeadToHead {
                optimizer: o.into(),
                opponent: name.into(),
                cells: 0,
                lower_gap: 0,
                starts: 0,
                paired_lower: 0,
                fewer_steps: 0,
                sooner_to_level: 0,
                ten_times_sooner: 0,
                ten_times_fewer_evals: 0,
            };
            for f in &functions {
                for &d in &dims {
                    let Some(a) = find(res, f, d, o) else {
                        continue;
                    };
                    let them: Option<Vec<&Cell>> =
                        opponents.iter().map(|p| find(res, f, d, p)).collect();
                    let Some(them) = them else { continue };
                    h.cells += 1;
                    h.lower_gap += them.iter().all(|b| lower_gap(a, b)) as usize;
                    h.starts += a.final_gaps.len();
                    h.paired_lower += paired_lower(a, &them);
                    h.fewer_steps += them.iter().all(|b| fewer_steps(a, b, res.steps)) as usize;
                    let speedups: Vec<f64> = them
                        .iter()
                        .map(|b| speedup_to_level(a, b).unwrap_or(0.0))
                        .collect();
                    h.sooner_to_level += speedups.iter().all(|&s| s > 1.0) as usize;
                    h.ten_times_sooner += speedups.iter().all(|&s| s >= 10.0) as usize;
                    h.ten_times_fewer_evals += them
                        .iter()
                        .all(|b| evals_speedup_to_level(a, b).is_some_and(|s| s >= 10.0))
                        as usize;
                }
            }
            out.push(h);
        }
    }
    out
}

/// What one head-to-head matrix shows for a (row, column) pair.
type CellText = Box<dyn Fn(&HeadToHead) -> String>;

/// The head-to-head counts as matrices (row against column) for the terminal.
fn head_to_head_table(res: &EvalResults, out: &mut String) {
    let h = head_to_head(res);
    let (_, _, optimizers) = axes(res);
    let mut columns: Vec<&str> = optimizers.clone();
    if h.iter().any(|x| x.opponent == ALL_CLASSIC) {
        columns.push(ALL_CLASSIC);
    }
    let of_cells =
        |count: fn(&HeadToHead) -> usize| move |x: &HeadToHead| format!("{}/{}", count(x), x.cells);
    let matrices: [(&str, CellText); 6] = [
        (
            "Head to head, cells where the row's mean final gap is lower than the column's \
             (a diverged start makes a mean +inf)",
            Box::new(of_cells(|x| x.lower_gap)),
        ),
        (
            "Head to head, cells where the row reaches the threshold in fewer steps",
            Box::new(of_cells(|x| x.fewer_steps)),
        ),
        (
            "Head to head, cells where the row's median gap reaches the column's final \
             median gap (within 1 %) in fewer steps than the column",
            Box::new(of_cells(|x| x.sooner_to_level)),
        ),
        (
            "Head to head, the same in at most a tenth of the column's steps (10x fewer)",
            Box::new(of_cells(|x| x.ten_times_sooner)),
        ),
        (
            "Head to head, the same in at most a tenth of the column's objective/gradient \
             evaluations (a line search spends several per step)",
            Box::new(of_cells(|x| x.ten_times_fewer_evals)),
        ),
        (
            "Paired, the share of start points where the row ends lower than the column \
             (the same start points; a diverged start is +inf, two tie)",
            Box::new(|x: &HeadToHead| {
                format!(
                    "{:.0}%",
                    100.0 * x.paired_lower as f64 / x.starts.max(1) as f64
                )
            }),
        ),
    ];
    for (title, show) in matrices {
        let _ = writeln!(out, "\n{title} (of the cells both ran):");
        let mut rows = vec![std::iter::once(String::new())
            .chain(columns.iter().map(|c| c.to_string()))
            .collect::<Vec<_>>()];
        for &o in &optimizers {
            let mut row = vec![o.to_string()];
            for &c in &columns {
                row.push(
                    h.iter()
                        .find(|x| x.optimizer == o && x.opponent == c)
                        .map_or("-".into(), &show),
                );
            }
            rows.push(row);
        }
        let right: Vec<bool> = (0..rows[0].len()).map(|i| i > 0).collect();
        push_columns(out, &rows, &right, "  ");
    }
}

/// Writes the head-to-head counts as CSV, one row per (optimizer, opponent).
pub fn write_head_to_head(res: &EvalResults, path: &Path) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    for h in head_to_head(res) {
        w.serialize(h)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// JSON and CSV
// ---------------------------------------------------------------------------------------

/// Writes the full results (curves and per-start gaps included) as pretty JSON, the
/// lossless record of a run. Non-finite numbers become `null`, as JSON has no NaN.
pub fn write_json(res: &EvalResults, path: &Path) -> Result<()> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, res)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(w)?;
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One CSV row: the summary statistics of a cell, without the per-iteration curve or
/// the per-start gaps, which do not fit a flat table.
#[derive(Serialize)]
struct CsvRow<'a> {
    function: &'a str,
    dim: usize,
    optimizer: &'a str,
    lr: Option<f64>,
    mean_gap: f64,
    median_gap: f64,
    finite_mean_gap: f64,
    success_rate: f64,
    steps_to_threshold: Option<f64>,
    evals_to_threshold: Option<f64>,
    reached_threshold: usize,
    diverged: usize,
    seconds: f64,
}

/// Writes one row per cell as CSV (empty field where a value is absent), for
/// spreadsheets and pandas.
pub fn write_csv(res: &EvalResults, path: &Path) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    for c in &res.cells {
        w.serialize(CsvRow {
            function: &c.function,
            dim: c.dim,
            optimizer: &c.optimizer,
            lr: c.lr,
            mean_gap: c.mean_gap,
            median_gap: c.median_gap,
            finite_mean_gap: c.finite_mean_gap,
            success_rate: c.success_rate,
            steps_to_threshold: c.steps_to_threshold,
            evals_to_threshold: c.evals_to_threshold,
            reached_threshold: c.reached_threshold,
            diverged: c.diverged,
            seconds: c.seconds,
        })
        .with_context(|| format!("writing {}", path.display()))?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Plots
// ---------------------------------------------------------------------------------------

/// A gap as drawn on a log axis: NaN and infinities are dropped, zeros and round-off
/// negatives are raised to [`GAP_FLOOR`].
fn plot_gap(g: f64) -> Option<f64> {
    g.is_finite().then(|| g.max(GAP_FLOOR))
}

/// A name made safe for a file name (benchmark names are plain, user ones may not be).
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A log-axis range covering `lo..=hi` (both > 0), widened to whole decades so the
/// axis always has labelled ticks.
fn decade_range(lo: f64, hi: f64) -> Range<f64> {
    let a = 10f64.powf(lo.log10().floor());
    let mut b = 10f64.powf(hi.log10().ceil());
    if b <= a {
        b = a * 10.0;
    }
    a..b
}

/// A y range for all plotted gaps of a chart, or a default when there are none.
fn gap_range<'a>(series: impl Iterator<Item = &'a [(f64, f64)]>) -> Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, y) in series.flatten() {
        lo = lo.min(y);
        hi = hi.max(y);
    }
    if lo.is_finite() && hi.is_finite() {
        // The factor keeps points at a decade (the floor, most often) off the frame.
        decade_range(lo / 2.0, hi * 2.0)
    } else {
        GAP_FLOOR / 10.0..1.0
    }
}

/// Splits a series at its missing points, so a line stops at NaN instead of joining
/// across it.
fn segments(points: &[Option<(f64, f64)>]) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![Vec::new()];
    for p in points {
        match p {
            Some(p) => out.last_mut().expect("never empty").push(*p),
            None if !out.last().expect("never empty").is_empty() => out.push(Vec::new()),
            None => {}
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// One optimizer's line on a chart: its name and its points (missing ones as `None`).
pub(crate) struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<Option<(f64, f64)>>,
}

/// Labels of a chart.
pub(crate) struct Labels<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
}

/// Draws one chart with a log-scale gap axis and any x axis (linear or log), so both
/// kinds of plot share the styling; `markers` adds a point at every data point. The
/// motion evaluation's objective curves use it too.
pub(crate) fn draw_chart<X>(
    path: &Path,
    labels: &Labels,
    x: X,
    x_fmt: &dyn Fn(&f64) -> String,
    series: &[Series],
    markers: bool,
) -> Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let parts: Vec<Vec<Vec<(f64, f64)>>> = series.iter().map(|s| segments(&s.points)).collect();
    let y = gap_range(parts.iter().flatten().map(Vec::as_slice));
    let y: LogCoord<f64> = y.log_scale().into();

    let root = SVGBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(labels.title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(labels.x)
        .y_desc(labels.y)
        .x_label_formatter(x_fmt)
        .y_label_formatter(&|v: &f64| format!("{v:.0e}"))
        .draw()?;

    for (i, (s, segs)) in series.iter().zip(&parts).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let legend = move |(lx, ly): (i32, i32)| {
            PathElement::new(vec![(lx, ly), (lx + 20, ly)], color.stroke_width(2))
        };
        if segs.is_empty() {
            // Still list an optimizer with nothing to draw, so its absence is explained.
            chart
                .draw_series(LineSeries::new(std::iter::empty(), color.stroke_width(2)))?
                .label(format!("{} (no finite values)", s.name))
                .legend(legend);
            continue;
        }
        for (k, seg) in segs.iter().enumerate() {
            let anno =
                chart.draw_series(LineSeries::new(seg.iter().copied(), color.stroke_width(2)))?;
            if k == 0 {
                anno.label(s.name).legend(legend);
            }
            if markers {
                chart.draw_series(seg.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One SVG per function (`final_<function>.svg`): mean final gap against dimension, one
/// line per optimizer, to show how each method scales with d.
pub fn plot_final_vs_dim(res: &EvalResults, dir: &Path) -> Result<Vec<PathBuf>> {
    let (functions, dims, optimizers) = axes(res);
    let mut written = Vec::new();
    for f in &functions {
        let f_dims: Vec<usize> = dims
            .iter()
            .copied()
            .filter(|&d| res.cells.iter().any(|c| c.function == *f && c.dim == d))
            .collect();
        let (Some(&dmin), Some(&dmax)) = (f_dims.first(), f_dims.last()) else {
            continue;
        };
        let series: Vec<Series> = optimizers
            .iter()
            .filter_map(|o| {
                let points: Vec<Option<(f64, f64)>> = f_dims
                    .iter()
                    .filter_map(|&d| find(res, f, d, o))
                    .map(|c| plot_gap(c.mean_gap).map(|g| (c.dim as f64, g)))
                    .collect();
                (!points.is_empty()).then_some(Series { name: o, points })
            })
            .collect();
        let path = dir.join(format!("final_{}.svg", file_stem(f)));
        let title = format!("{f}: mean final gap vs dimension");
        let labels = Labels {
            title: &title,
            x: "dimension d",
            y: "mean f − f* (floor 1e-12)",
        };
        let (lo, hi) = (dmin as f64, dmax as f64);
        if f_dims.len() > 2 {
            // Log axis: pad by a factor and start at a decade so there is a tick.
            let lo = 10f64.powf((lo / 1.3).log10().floor());
            let x: LogCoord<f64> = (lo..hi * 1.3).log_scale().into();
            draw_chart(&path, &labels, x, &|v| format!("{v:.0}"), &series, true)?;
        } else {
            let pad = ((hi - lo) * 0.1).max(1.0);
            let x: RangedCoordf64 = ((lo - pad).max(0.0)..hi + pad).into();
            draw_chart(&path, &labels, x, &|v| format!("{v}"), &series, true)?;
        }
        written.push(path);
    }
    Ok(written)
}

/// One SVG per (function, dimension) (`curve_<function>_d<dim>.svg`): median gap over
/// the iterations, one line per optimizer, to compare convergence speed.
pub fn plot_convergence(res: &EvalResults, dir: &Path) -> Result<Vec<PathBuf>> {
    let (functions, dims, optimizers) = axes(res);
    let mut written = Vec::new();
    for f in &functions {
        for &d in &dims {
            let cells: Vec<&Cell> = optimizers
                .iter()
                .filter_map(|o| find(res, f, d, o))
                .collect();
            if cells.is_empty() {
                continue;
            }
            let t = cells
                .iter()
                .map(|c| c.curve.len())
                .max()
                .unwrap_or(0)
                .saturating_sub(1);
            let series: Vec<Series> = cells
                .iter()
                .map(|c| Series {
                    name: &c.optimizer,
                    points: c
                        .curve
                        .iter()
                        .enumerate()
                        .map(|(i, &g)| plot_gap(g).map(|g| (i as f64, g)))
                        .collect(),
                })
                .collect();
            let path = dir.join(format!("curve_{}_d{d}.svg", file_stem(f)));
            let title = format!("{f}, d = {d}: median gap per iteration");
            let labels = Labels {
                title: &title,
                x: "iteration",
                y: "median f − f* (floor 1e-12)",
            };
            let x: RangedCoordf64 = (0.0..t.max(1) as f64).into();
            draw_chart(&path, &labels, x, &|v| format!("{v}"), &series, false)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Creates `dir` and writes everything a run reports (results.json, results.csv,
/// head_to_head.csv and all plots), returning the written paths so the CLI can list them.
pub fn write_all(res: &EvalResults, dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let json = dir.join("results.json");
    write_json(res, &json)?;
    written.push(json);
    let csv = dir.join("results.csv");
    write_csv(res, &csv)?;
    written.push(csv);
    let h2h = dir.join("head_to_head.csv");
    write_head_to_head(res, &h2h)?;
    written.push(h2h);
    written.extend(plot_final_vs_dim(res, dir)?);
    written.extend(plot_convergence(res, dir)?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::results::TunedLr;

    fn cell(function: &str, dim: usize, optimizer: &str, gap: f64) -> Cell {
        let curve: Vec<f64> = (0..=20)
            .map(|i| {
                if gap.is_nan() && i > 10 {
                    f64::NAN
                } else {
                    gap + 10f64.powi(-i / 2)
                }
            })
            .collect();
        Cell {
            function: function.into(),
            dim,
            optimizer: optimizer.into(),
            lr: (optimizer == "adam").then_some(1e-2),
            final_gaps: vec![gap, gap],
            mean_gap: scored_gap(gap),
            median_gap: scored_gap(gap),
            finite_mean_gap: gap,
            success_rate: if gap.is_finite() && gap < 1e-6 {
                1.0
            } else {
                0.5
            },
            steps_to_threshold: (gap < 1e-6).then_some(12.5),
            evals_to_threshold: (gap < 1e-6).then_some(25.0),
            reached_threshold: if gap < 1e-6 { 2 } else { 0 },
            diverged: usize::from(gap.is_nan()),
            curve,
            evals_curve: (0..=20).map(|i| (i + 1) as f64).collect(),
            seconds: 0.25,
        }
    }

    fn synthetic() -> EvalResults {
        let gaps = [0.0, 3.2e-5, f64::NAN, 1.5, -1e-16, 7e-9, 2e-3, 4.0];
        let mut cells = Vec::new();
        let mut k = 0;
        for f in ["sphere", "rosenbrock"] {
            for d in [2, 10] {
                for o in ["adam", "bfgs"] {
                    cells.push(cell(f, d, o, gaps[k]));
                    k += 1;
                }
            }
        }
        EvalResults {
            adapter: "test".into(),
            steps: 20,
            starts: 2,
            success_tol: 1e-6,
            threshold: 1e-4,
            optimizers: vec!["adam".into(), "bfgs".into()],
            functions: vec!["sphere".into(), "rosenbrock".into()],
            dims: vec![2, 10],
            cells,
            tuned: vec![TunedLr {
                optimizer: "adam".into(),
                function: "sphere".into(),
                lr: 1e-2,
            }],
            skipped: vec!["powell at d=2: d must be a multiple of 4".into()],
            seconds: 2.0,
        }
    }

    #[test]
    fn write_all_produces_files_and_table() {
        let res = synthetic();
        let dir = std::env::temp_dir().join(format!("optimus-report-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let files = write_all(&res, &dir).expect("write_all");

        // results.json, results.csv, head_to_head.csv, 2 final plots, 4 curve plots.
        assert_eq!(files.len(), 3 + 2 + 4, "{files:?}");
        for f in &files {
            assert!(f.is_file(), "{} missing", f.display());
        }
        for name in ["final_sphere.svg", "curve_rosenbrock_d10.svg"] {
            let svg = fs::read_to_string(dir.join(name)).unwrap();
            assert!(svg.contains("<svg"), "{name}");
            assert!(svg.contains("<polyline") || svg.contains("<path"), "{name}");
            assert!(
                svg.contains("adam") && svg.contains("bfgs"),
                "legend in {name}"
            );
        }

        // Adam diverged on sphere at d = 10: nothing to draw, but still in the legend.
        let svg = fs::read_to_string(dir.join("curve_sphere_d10.svg")).unwrap();
        assert!(svg.contains("adam (no finite values)"));

        let csv = fs::read_to_string(dir.join("results.csv")).unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            "function,dim,optimizer,lr,mean_gap,median_gap,finite_mean_gap,success_rate,\
             steps_to_threshold,evals_to_threshold,reached_threshold,diverged,seconds"
        );
        assert_eq!(lines.filter(|l| !l.is_empty()).count(), 8);

        // NaN gaps are written as null, so read the JSON back untyped.
        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
        assert_eq!(json["adapter"], "test");
        assert_eq!(json["cells"].as_array().map(Vec::len), Some(8));

        let t = table(&res);
        for o in &res.optimizers {
            assert!(t.contains(o.as_str()), "{o} missing from\n{t}");
        }
        assert!(t.contains("3.2e-5"), "{t}");
        assert!(
            t.contains("Tuned learning rates") && t.contains("Skipped"),
            "{t}"
        );

        let h2h = fs::read_to_string(dir.join("head_to_head.csv")).unwrap();
        assert!(h2h.contains("adam,bfgs,4,3,1,3,0,0,8,6"), "{h2h}");
        assert!(t.contains("Head to head"), "{t}");

        let _ = fs::remove_dir_all(&dir);
    }

    /// Lower gaps and fewer steps are counted per cell; a NaN mean never wins, and the
    /// "all classic" column needs a win against every classic optimizer.
    #[test]
    fn head_to_head_counts_wins_per_cell() {
        let mut res = synthetic();
        // sphere: adam 0 | 3.2e-5 bfgs | NaN vs 1.5; rosenbrock: -1e-16 | 7e-9, 2e-3 | 4.
        for (f, d, g) in [
            ("sphere", 2, 1e-7),
            ("sphere", 10, f64::NAN),
            ("rosenbrock", 2, 1e-8),
            ("rosenbrock", 10, 1.0),
        ] {
            res.cells.push(cell(f, d, "optimus", g));
        }
        res.optimizers.push("optimus".into());
        let h = head_to_head(&res);
        let get = |o: &str, p: &str| {
            h.iter()
                .find(|x| x.optimizer == o && x.opponent == p)
                .unwrap()
        };
        let ab = get("adam", "bfgs");
        assert_eq!((ab.cells, ab.lower_gap, ab.fewer_steps), (4, 3, 1));
        let ba = get("bfgs", "adam");
        assert_eq!((ba.cells, ba.lower_gap, ba.fewer_steps), (4, 1, 0));
        // optimus beats bfgs on sphere d = 2 and rosenbrock d = 10, adam nowhere.
        assert_eq!(get("optimus", "bfgs").lower_gap, 2);
        assert_eq!(get("optimus", "adam").lower_gap, 0);
        let all = get("optimus", ALL_CLASSIC);
        assert_eq!((all.cells, all.lower_gap), (4, 0));
        assert_eq!(get("adam", ALL_CLASSIC).lower_gap, 3);
        // Paired, two starts per cell: adam is lower at both starts of every cell but
        // sphere d = 10, where its diverged starts (+inf) lose to bfgs's 1.5.
        assert_eq!((ab.starts, ab.paired_lower), (8, 6));
        assert_eq!((ba.starts, ba.paired_lower), (8, 2));
        // Both diverged on sphere d = 10: a tie, lower for neither.
        assert_eq!(get("optimus", "adam").paired_lower, 0);
        assert_eq!(get("optimus", "bfgs").paired_lower, 4);
    }

    /// The speed-up to an opponent's final level: the opponent's arrival within 1 % of
    /// its final median over the row's arrival; none where the row never gets there,
    /// the level is NaN, or the opponent never moved.
    #[test]
    fn speedup_to_level_compares_arrivals_at_the_opponents_final_gap() {
        // One evaluation per step (and one at the start), as a learned optimizer spends.
        let with_curve = |curve: Vec<f64>| Cell {
            evals_curve: (0..curve.len()).map(|i| (i + 1) as f64).collect(),
            curve,
            ..cell("sphere", 2, "adam", 0.0)
        };
        // Slow: 100 → 1.0 by step 40, then a creep to 0.998 at step 60 (within 1 %).
        let slow = with_curve(
            (0..=60)
                .map(|i| {
                    if i < 40 {
                        100.0 - 2.0 * i as f64
                    } else {
                        1.0 - i as f64 * 1e-4 + 0.004
                    }
                })
                .collect(),
        );
        assert_eq!(slow.curve[40], 1.0);
        let fast = with_curve((0..=60).map(|i| 100.0 * 0.5f64.powi(i)).collect());
        // fast is at 100/128 < 1.005 from step 7 on: 40 / 7.
        let s = speedup_to_level(&fast, &slow).unwrap();
        assert!((s - 40.0 / 7.0).abs() < 1e-12, "{s}");
        // slow gets to fast's final level (about 1e-16) never.
        assert_eq!(speedup_to_level(&slow, &fast), None);
        // Against itself: 1.
        assert_eq!(speedup_to_level(&fast, &fast), Some(1.0));
        // A negative round-off level still counts its own arrival.
        let neg = with_curve(vec![1.0, 0.5, -1e-16]);
        assert_eq!(speedup_to_level(&neg, &neg), Some(1.0));
        // NaN final level, and an opponent that never left the start.
        let nan = with_curve(vec![1.0, f64::NAN]);
        assert_eq!(speedup_to_level(&fast, &nan), None);
        let flat = with_curve(vec![100.0; 61]);
        assert_eq!(speedup_to_level(&fast, &flat), None);
        // In evaluations: 41 / 8 at one per step; a line search spending two per
        // iteration (2t + 1) takes the same 40 / 7 steps to 81 / 8, past 10x.
        assert_eq!(evals_speedup_to_level(&fast, &slow), Some(41.0 / 8.0));
        let searching = Cell {
            evals_curve: (0..=60).map(|i| (2 * i + 1) as f64).collect(),
            ..slow.clone()
        };
        assert_eq!(evals_speedup_to_level(&fast, &searching), Some(81.0 / 8.0));
        assert_eq!(evals_speedup_to_level(&slow, &fast), None);
        // Results written before the evaluation curve was recorded have none.
        let unrecorded = Cell {
            evals_curve: Vec::new(),
            ..slow.clone()
        };
        assert_eq!(evals_speedup_to_level(&fast, &unrecorded), None);
        // The head-to-head counts: 40 / 7 is sooner but not 10x.
        let mut res = synthetic();
        res.cells.retain(|c| c.function == "sphere" && c.dim == 2);
        res.cells[0].curve = fast.curve.clone();
        res.cells[0].evals_curve = fast.evals_curve.clone();
        res.cells[1].curve = slow.curve.clone();
        res.cells[1].evals_curve = searching.evals_curve.clone();
        let level_counts = |res: &EvalResults, o: &str, p: &str| {
            let h = head_to_head(res);
            let x = h
                .iter()
                .find(|x| x.optimizer == o && x.opponent == p)
                .unwrap();
            (
                x.sooner_to_level,
                x.ten_times_sooner,
                x.ten_times_fewer_evals,
            )
        };
        assert_eq!(level_counts(&res, "adam", "bfgs"), (1, 0, 1));
        res.cells[1].curve = (0..=60).map(|i| 100.0 - 1.4 * i as f64).collect();
        // bfgs now ends at 16 at step 60; adam is below 16.16 from step 3: 60 / 3 = 20.
        assert_eq!(level_counts(&res, "adam", "bfgs"), (1, 1, 1));
        assert_eq!(level_counts(&res, "bfgs", "adam"), (0, 0, 0));
    }

    /// Steps to the threshold count every start: one start reached in 3 steps and one
    /// never (T + 1 = 21) averages 12, fewer than both reached in 12.5, more than both
    /// reached in 11.5; a cell nobody reaches is a tie.
    #[test]
    fn fewer_steps_counts_starts_that_never_reach_the_threshold() {
        let both = |steps| Cell {
            steps_to_threshold: Some(steps),
            ..cell("sphere", 2, "adam", 0.0)
        };
        let half = Cell {
            steps_to_threshold: Some(3.0),
            reached_threshold: 1,
            ..cell("sphere", 2, "bfgs", 0.0)
        };
        let none = cell("sphere", 2, "adam", 1.0);
        assert_eq!(censored_steps(&half, 20), 12.0);
        assert!(fewer_steps(&half, &both(12.5), 20));
        assert!(!fewer_steps(&half, &both(11.5), 20));
        assert!(fewer_steps(&both(11.5), &half, 20));
        assert!(fewer_steps(&half, &none, 20));
        assert!(!fewer_steps(&none, &none.clone(), 20));
    }
}
