//! SVG plots: final gap against dimension, and convergence curves.

use super::*;

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
