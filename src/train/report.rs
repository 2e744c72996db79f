//! What a training run shows and writes: a log line per logged meta-iteration, the log
//! as CSV, and the meta-loss curves as SVG.

use super::checkpoint::LogRow;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::learned::model::ModelConfig;
use plotters::prelude::*;
use std::path::Path;

/// One log line: training and validation meta-loss, gradient norm, learning rate,
/// iteration time and throughput.
pub fn log_line(r: &LogRow) -> String {
    let v = |x: Option<f64>| x.unwrap_or(f64::NAN);
    format!(
        "iteration {:>6}: train meta-loss {:>8.4}  validation {:>8.4}  |g| {:>9.3e}  lr {:.2e}  \
         {:>6.3} s/iteration  {:>9.0} particle-steps/s",
        r.iteration,
        v(r.train_loss),
        r.val_loss,
        v(r.grad_norm),
        r.lr,
        v(r.iter_seconds),
        v(r.particle_steps_per_second)
    )
}

/// Writes the log as CSV (rewritten whole, atomically, so it always matches the last
/// checkpoint's log after a resume).
pub fn write_csv(log: &[LogRow], path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in log {
        w.serialize(r)
            .map_err(|e| Error::Io(format!("log.csv: {e}")))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Io(format!("log.csv: {e}")))?;
    write_atomic(path, &bytes)
}

/// Plots training and validation meta-loss against meta-iterations.
pub fn plot(log: &[LogRow], path: &Path, model: &ModelConfig) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| Error::Io(format!("{}: {e}", path.display()));
    let train: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|r| Some((r.iteration as f64, r.train_loss.filter(|v| v.is_finite())?)))
        .collect();
    let val: Vec<(f64, f64)> = log
        .iter()
        .filter(|r| r.val_loss.is_finite())
        .map(|r| (r.iteration as f64, r.val_loss))
        .collect();
    let ys = train.iter().chain(&val).map(|p| p.1);
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    if !lo.is_finite() {
        return Ok(());
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let x_max = log.last().map_or(1.0, |r| r.iteration.max(1) as f64);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "PES meta-training of {} (width {}, {} layers)",
        model.kind, model.width, model.layers
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (lo - pad)..(hi + pad))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("meta-iteration")
        .y_desc("meta-loss (mean log-gap change)")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in [
        ("training (perturbed particles)", &train),
        ("validation (θ)", &val),
    ]
    .into_iter()
    .enumerate()
    {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
