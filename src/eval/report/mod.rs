//! The output side of `optimus-gpu eval`: a terminal table, JSON and CSV files, head-to-
//! head counts, and SVG plots (final gap against dimension, and convergence curves). Everything here only
//! reads an [`EvalResults`]; nothing touches the GPU.
//!
//! `compare.rs` holds the head-to-head counts, `plot.rs` the SVG plots.

mod compare;
mod plot;

use compare::head_to_head_table;
pub use compare::{
    evals_speedup_to_level, head_to_head, speedup_to_level, write_head_to_head, HeadToHead,
    ALL_CLASSIC,
};
pub(crate) use plot::{draw_chart, Labels, Series};
pub use plot::{plot_convergence, plot_final_vs_dim};

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
    use super::compare::{censored_steps, fewer_steps};
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
