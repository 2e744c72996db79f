//! `optimus-gpu eval --task motion`: optimizers against each other on motion
//! reconstruction windows (docs/DESIGN.md §5): objective against iterations, iterations to
//! reach the reference optimizer's final objective, MPJPE and Procrustes-aligned MPJPE
//! in mm, time; a table, JSON, CSV, plots and stick-figure strips.

use super::body::Body;
use super::clip::{Clip, Family};
use super::gpu::MotionEvaluator;
use super::render::{stick_strip, Layer};
use super::sim::simulate;
use super::task::{mpjpe, Source, TaskConfig, Window};
use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::eval::report::{draw_chart, Labels, Series};
use crate::eval::{bar, load_models, model_asset, model_for, scored_gap, tune_lr};
use crate::learned::model::ModelKind;
use crate::optim::{GpuRun, Kernels, Method, OptimizerConfig, ProblemResult, Status};
use crate::problem::mix_seed;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a motion evaluation runs. Every field has a default; a RON file or flags
/// override them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MotionEvalConfig {
    pub task: TaskConfig,
    /// Procedural motion families to cut test windows from.
    pub families: Vec<String>,
    /// Clip files to cut test windows from (each a family of its own): BVH for a name
    /// ending in `.bvh`, DeepMimic JSON otherwise.
    pub clips: Vec<PathBuf>,
    /// Windows per family or clip.
    pub windows: usize,
    pub optimizers: Vec<String>,
    pub steps: u32,
    /// Adam's learning rate is tuned on walking windows (apart from the test ones).
    pub lr_grid: Vec<f64>,
    pub tune_windows: usize,
    pub lr: Option<f64>,
    pub seed: u64,
    pub out: PathBuf,
    pub models: Vec<PathBuf>,
}

impl Default for MotionEvalConfig {
    fn default() -> Self {
        Self {
            task: TaskConfig::default(),
            families: Family::ALL.iter().map(|f| f.name().to_string()).collect(),
            clips: Vec::new(),
            windows: 4,
            optimizers: ["adam", "bfgs", "lbfgs", "lopt", "optimus-0", "optimus"]
                .map(String::from)
                .to_vec(),
            steps: 100,
            lr_grid: vec![0.001, 0.003, 0.01, 0.03, 0.1],
            tune_windows: 4,
            lr: None,
            seed: 0,
            out: PathBuf::from("results/motion"),
            models: Vec::new(),
        }
    }
}

impl MotionEvalConfig {
    pub fn from_ron(text: &str, path: &str) -> Result<Self> {
        ron::from_str(text).map_err(|e| Error::Config(format!("{path}: {e}")))
    }
}

/// One optimizer on one window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WindowResult {
    pub family: String,
    pub window: usize,
    pub optimizer: String,
    /// Objective at iterations 0..=T (NaN after a divergence).
    pub curve: Vec<f64>,
    pub final_objective: f64,
    pub evals: u32,
    pub diverged: bool,
    pub mpjpe_mm: f64,
    pub pa_mpjpe_mm: f64,
    /// First iteration whose objective is at most the reference optimizer's final one.
    pub iters_to_reference: Option<u32>,
    /// Final parameters (for pictures; not written to the results files).
    #[serde(skip)]
    pub params: Vec<f64>,
}

/// One optimizer on one family: means over its windows, a diverged window counting as
/// +∞ in each (so one makes the mean +∞; the table names the count).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub family: String,
    pub optimizer: String,
    pub lr: Option<f64>,
    pub final_objective: f64,
    pub mpjpe_mm: f64,
    pub pa_mpjpe_mm: f64,
    /// Mean iterations to the reference's final objective, over the windows that got
    /// there, and how many did.
    pub iters_to_reference: Option<f64>,
    pub reached_reference: usize,
    pub windows: usize,
    pub diverged: usize,
    /// This family's share of the optimizer's batch wall time.
    pub seconds: f64,
}

/// Everything a motion evaluation measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MotionResults {
    pub adapter: String,
    pub steps: u32,
    pub parameters_per_window: usize,
    /// The optimizer whose final objective the others race to.
    pub reference: Option<String>,
    pub adam_lr: Option<f64>,
    /// MPJPE of the kinematic initialization per family (mm).
    pub initial_mpjpe_mm: Vec<(String, f64)>,
    /// Per family: how far the simulated truth is from the clip that drives it, the
    /// mean point distance (mm) and the largest trunk tilt between them (degrees),
    /// averaged over the family's windows ([`Window::truth_vs_clip`]).
    pub truth_vs_clip: Vec<(String, f64, f64)>,
    pub rows: Vec<Row>,
    pub windows: Vec<WindowResult>,
    pub seconds: f64,
}

/// Test windows per family or clip: (name, windows).
pub type FamilyWindows = Vec<(String, Vec<Window>)>;

/// Test windows per family or clip, each window from its own seed.
pub fn test_windows(cfg: &MotionEvalConfig, body: &Body) -> Result<FamilyWindows> {
    let mut sources: Vec<(String, Source)> = Vec::new();
    for name in &cfg.families {
        sources.push((name.clone(), Source::Family(Family::parse(name)?)));
    }
    for path in &cfg.clips {
        let clip = Clip::load(path)?;
        sources.push((clip.name.clone(), Source::Clip(clip)));
    }
    if sources.is_empty() {
        return Err(Error::Config(
            "name at least one motion family or clip".into(),
        ));
    }
    sources
        .into_iter()
        .enumerate()
        .map(|(k, (name, source))| {
            let ws = (0..cfg.windows)
                .map(|j| {
                    source.window(
                        body,
                        &cfg.task,
                        mix_seed(cfg.seed, &[SEED_TEST, k as u64, j as u64]),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((name, ws))
        })
        .collect()
}

/// Seed domains of the evaluation's windows.
const SEED_TEST: u64 = 1;
const SEED_TUNE: u64 = 2;

/// Adam's learning rate: the best mean final objective on walking windows drawn apart
/// from the test windows.
fn tune_adam(
    ctx: &GpuContext,
    kernels: &Kernels,
    cfg: &MotionEvalConfig,
    body: &Body,
) -> Result<f64> {
    let base = (0..cfg.tune_windows)
        .map(|j| {
            Source::Family(Family::Walk).window(
                body,
                &cfg.task,
                mix_seed(cfg.seed, &[SEED_TUNE, j as u64]),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let mut windows = Vec::new();
    let mut keys = Vec::new();
    for l in 0..cfg.lr_grid.len() {
        windows.extend(base.iter().cloned());
        keys.extend(std::iter::repeat_n((0, l), base.len()));
    }
    let eval = MotionEvaluator::new(ctx, &cfg.task, &windows)?;
    let problems = MotionEvaluator::problems(&windows);
    // A diverged window counts as an objective far above any finite one.
    let score = |r: &ProblemResult| {
        if r.status == Status::Diverged || !r.final_gap().is_finite() {
            1e6
        } else {
            r.final_gap()
        }
    };
    let best = tune_lr(
        ctx,
        kernels,
        &eval,
        Method::Adam,
        &problems,
        &keys,
        1,
        &cfg.lr_grid,
        cfg.steps,
        score,
    )?;
    Ok(best[0])
}

/// Model directories for the run: `cfg.models`, plus the Optimus meta-trained on
/// walking (`assets/models/optimus-motion`) when Optimus runs and no Optimus model was
/// named; other kinds fall back to the committed models of their own kind.
fn motion_model_dirs(cfg: &MotionEvalConfig, methods: &[Method]) -> Result<Vec<PathBuf>> {
    let mut dirs = cfg.models.clone();
    let named_optimus = dirs
        .iter()
        .map(|d| crate::learned::model::Model::load(d).map(|m| m.config.kind))
        .collect::<Result<Vec<_>>>()?
        .contains(&ModelKind::Optimus);
    if methods
        .iter()
        .any(|m| m.model_kind() == Some(ModelKind::Optimus))
        && !named_optimus
    {
        dirs.extend(model_asset("optimus-motion"));
    }
    Ok(dirs)
}

/// Runs the motion evaluation described by `cfg`.
pub fn run(
    ctx: &GpuContext,
    cfg: &MotionEvalConfig,
    quiet: bool,
) -> Result<(MotionResults, FamilyWindows)> {
    if cfg.windows == 0 || cfg.steps == 0 || cfg.optimizers.is_empty() {
        return Err(Error::Config(
            "windows and steps must be at least 1, and optimizers must name one".into(),
        ));
    }
    let body = Body::new(&cfg.task.gains);
    cfg.task.validate(&body)?;
    let methods: Vec<Method> = cfg
        .optimizers
        .iter()
        .map(|s| Method::parse(s).map_err(Error::Config))
        .collect::<Result<_>>()?;
    let models = load_models(&motion_model_dirs(cfg, &methods)?, &methods)?;
    let start = Instant::now();
    let families = test_windows(cfg, &body)?;
    let kernels = Kernels::new(ctx)?;
    let adam_lr = match (cfg.lr, methods.iter().any(|m| m.has_lr())) {
        (Some(lr), _) => Some(lr),
        (None, true) => Some(tune_adam(ctx, &kernels, cfg, &body)?),
        (None, false) => None,
    };
    let all: Vec<Window> = families
        .iter()
        .flat_map(|(_, w)| w.iter().cloned())
        .collect();
    let eval = MotionEvaluator::new(ctx, &cfg.task, &all)?;
    let problems = MotionEvaluator::problems(&all);
    let mut per_method: Vec<(Method, Vec<ProblemResult>, f64)> = Vec::new();
    let pb = bar(methods.len() as u64, quiet, "motion");
    for &m in &methods {
        let ocfg = OptimizerConfig {
            lr: adam_lr
                .filter(|_| m.has_lr())
                .unwrap_or(OptimizerConfig::default().lr),
            model: model_for(m, &models),
            ..OptimizerConfig::new(m)
        };
        let t0 = Instant::now();
        let res = GpuRun::new(ctx, &kernels, &eval, &problems, &ocfg, None, cfg.steps)?.run(ctx)?;
        per_method.push((m, res, t0.elapsed().as_secs_f64()));
        pb.inc(1);
    }
    pb.finish_and_clear();
    let reference = [Method::Bfgs, Method::Lbfgs]
        .into_iter()
        .find(|r| methods.contains(r));
    let ref_final: Option<Vec<f64>> = reference.and_then(|r| {
        per_method
            .iter()
            .find(|(m, _, _)| *m == r)
            .map(|(_, res, _)| res.iter().map(|x| x.final_gap()).collect())
    });
    let mut windows = Vec::new();
    let mut rows = Vec::new();
    for (m, res, secs) in &per_method {
        let mut k = 0;
        for (family, ws) in &families {
            let mut mine = Vec::new();
            for (wi, w) in ws.iter().enumerate() {
                let r = &res[k];
                let diverged = r.status == Status::Diverged;
                let est = simulate(&body, &cfg.task.sim, &r.x, &w.init);
                let (e, pa) = if diverged || !est.is_finite() {
                    (f64::NAN, f64::NAN)
                } else {
                    mpjpe(&cfg.task, &w.truth, &est)
                };
                let target = ref_final.as_ref().map(|f| f[k]);
                mine.push(WindowResult {
                    family: family.clone(),
                    window: wi,
                    optimizer: m.name().into(),
                    curve: r.gaps.clone(),
                    final_objective: if diverged { f64::NAN } else { r.final_gap() },
                    evals: r.evals,
                    diverged,
                    mpjpe_mm: 1e3 * e,
                    pa_mpjpe_mm: 1e3 * pa,
                    iters_to_reference: target
                        .filter(|t| t.is_finite() && !diverged)
                        .and_then(|t| r.gaps.iter().position(|g| *g <= t).map(|i| i as u32)),
                    params: r.x.clone(),
                });
                k += 1;
            }
            rows.push(row(
                family,
                *m,
                adam_lr.filter(|_| m.has_lr()),
                &mine,
                secs * ws.len() as f64 / all.len() as f64,
            ));
            windows.extend(mine);
        }
    }
    let initial_mpjpe_mm = families
        .iter()
        .map(|(name, ws)| {
            let e: f64 = ws
                .iter()
                .map(|w| {
                    mpjpe(
                        &cfg.task,
                        &w.truth,
                        &simulate(&body, &cfg.task.sim, &w.x0, &w.init),
                    )
                    .0
                })
                .sum::<f64>()
                / ws.len() as f64;
            (name.clone(), 1e3 * e)
        })
        .collect();
    let truth_vs_clip = families
        .iter()
        .map(|(name, ws)| {
            let (d, t) = ws.iter().fold((0.0, 0.0), |(d, t), w| {
                let (dw, tw) = w.truth_vs_clip(&cfg.task);
                (d + dw, t + tw)
            });
            let n = ws.len() as f64;
            (name.clone(), 1e3 * d / n, (t / n).to_degrees())
        })
        .collect();
    Ok((
        MotionResults {
            adapter: ctx
                .adapter_info
                .as_ref()
                .map_or("embedded device".into(), |i| {
                    format!("{} ({:?})", i.name, i.backend)
                }),
            steps: cfg.steps,
            parameters_per_window: cfg.task.sim.n_params(&body),
            reference: reference.map(|r| r.name().to_string()),
            adam_lr,
            initial_mpjpe_mm,
            truth_vs_clip,
            rows,
            windows,
            seconds: start.elapsed().as_secs_f64(),
        },
        families,
    ))
}

fn finite_mean(v: impl Iterator<Item = f64>) -> f64 {
    let ok: Vec<f64> = v.filter(|x| x.is_finite()).collect();
    if ok.is_empty() {
        f64::NAN
    } else {
        ok.iter().sum::<f64>() / ok.len() as f64
    }
}

/// Mean of one statistic over windows, +∞ for a diverged window: a failure, never left
/// out of the mean.
fn scored_mean(ws: &[WindowResult], value: impl Fn(&WindowResult) -> f64) -> f64 {
    let v: Vec<f64> = ws
        .iter()
        .map(|w| if w.diverged { f64::INFINITY } else { value(w) })
        .collect();
    v.iter().map(|&x| scored_gap(x)).sum::<f64>() / v.len().max(1) as f64
}

fn row(family: &str, m: Method, lr: Option<f64>, ws: &[WindowResult], seconds: f64) -> Row {
    let reached: Vec<f64> = ws
        .iter()
        .filter_map(|w| w.iters_to_reference.map(f64::from))
        .collect();
    Row {
        family: family.into(),
        optimizer: m.name().into(),
        lr,
        final_objective: scored_mean(ws, |w| w.final_objective),
        mpjpe_mm: scored_mean(ws, |w| w.mpjpe_mm),
        pa_mpjpe_mm: scored_mean(ws, |w| w.pa_mpjpe_mm),
        iters_to_reference: (!reached.is_empty())
            .then(|| reached.iter().sum::<f64>() / reached.len() as f64),
        reached_reference: reached.len(),
        windows: ws.len(),
        diverged: ws.iter().filter(|w| w.diverged).count(),
        seconds,
    }
}

/// The results as a text table, one block per family.
pub fn table(res: &MotionResults) -> String {
    let mut s = format!(
        "motion reconstruction: {} parameters per window, {} iterations{}\n",
        res.parameters_per_window,
        res.steps,
        res.adam_lr.map_or(String::new(), |l| format!(
            ", Adam lr {l} (tuned on walking)"
        ))
    );
    let reference = res.reference.clone().unwrap_or_else(|| "-".into());
    // Columns as wide as the longest clip and optimizer names.
    let wf = res
        .rows
        .iter()
        .map(|r| r.family.chars().count())
        .fold(10, usize::max);
    let wo = res
        .rows
        .iter()
        .map(|r| r.optimizer.chars().count())
        .fold(10, usize::max);
    let iters_head = format!("iters to {reference}");
    let wi = iters_head.chars().count().max(16);
    s += &format!(
        "{:<wf$} {:<wo$} {:>12} {:>10} {:>12} {:>wi$} {:>8}\n",
        "motion", "optimizer", "objective", "MPJPE mm", "PA-MPJPE mm", iters_head, "time s"
    );
    for r in &res.rows {
        let iters = match r.iters_to_reference {
            Some(i) => format!("{i:.0} ({}/{})", r.reached_reference, r.windows),
            None => format!("- (0/{})", r.windows),
        };
        s += &format!(
            "{:<wf$} {:<wo$} {:>12.3} {:>10.1} {:>12.1} {:>wi$} {:>8.1}{}\n",
            r.family,
            r.optimizer,
            r.final_objective,
            r.mpjpe_mm,
            r.pa_mpjpe_mm,
            iters,
            r.seconds,
            if r.diverged > 0 {
                format!("  ({} diverged)", r.diverged)
            } else {
                String::new()
            }
        );
    }
    let init: Vec<String> = res
        .initial_mpjpe_mm
        .iter()
        .map(|(f, e)| format!("{f} {e:.1}"))
        .collect();
    s += &format!(
        "MPJPE of the kinematic initialization (mm): {}\n",
        init.join(", ")
    );
    let track: Vec<String> = res
        .truth_vs_clip
        .iter()
        .map(|(f, d, t)| format!("{f} {d:.0} mm / {t:.0}°"))
        .collect();
    s += &format!(
        "simulated truth against its clip (mean point distance / per-window largest trunk tilt, averaged): {}\n",
        track.join(", ")
    );
    s
}

/// Writes results.json, results.csv, one objective plot per family and one stick
/// strip per family; returns the files.
pub fn write_all(
    res: &MotionResults,
    families: &[(String, Vec<Window>)],
    cfg: &MotionEvalConfig,
) -> Result<Vec<PathBuf>> {
    let dir = &cfg.out;
    let io = |p: &Path, e: &dyn std::fmt::Display| Error::Io(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
    let mut files = Vec::new();
    let json = dir.join("results.json");
    let text = serde_json::to_string_pretty(res).map_err(|e| io(&json, &e))?;
    std::fs::write(&json, text).map_err(|e| io(&json, &e))?;
    files.push(json);
    let csv_path = dir.join("results.csv");
    let mut w = csv::Writer::from_path(&csv_path).map_err(|e| io(&csv_path, &e))?;
    for r in &res.rows {
        w.serialize(r).map_err(|e| io(&csv_path, &e))?;
    }
    w.flush().map_err(|e| io(&csv_path, &e))?;
    files.push(csv_path);
    let body = Body::new(&cfg.task.gains);
    for (family, ws) in families {
        let path = dir.join(format!("objective_{family}.svg"));
        plot_curves(res, family, &path)?;
        files.push(path);
        let path = dir.join(format!("strip_{family}.svg"));
        strip(res, cfg, &body, family, &ws[0], &path)?;
        files.push(path);
    }
    Ok(files)
}

/// Mean objective over a family's windows against iterations, one line per optimizer
/// (diverged windows left out; an optimizer with none left is listed without a line).
fn plot_curves(res: &MotionResults, family: &str, path: &Path) -> Result<()> {
    let series: Vec<Series> = res
        .rows
        .iter()
        .filter(|r| r.family == family)
        .map(|r| {
            let ws: Vec<&WindowResult> = res
                .windows
                .iter()
                .filter(|w| w.family == family && w.optimizer == r.optimizer && !w.diverged)
                .collect();
            let points = (0..=res.steps as usize)
                .map(|t| {
                    let y = finite_mean(ws.iter().map(|w| w.curve[t]));
                    (y.is_finite() && y > 0.0).then_some((t as f64, y))
                })
                .collect();
            Series {
                name: &r.optimizer,
                points,
            }
        })
        .collect();
    let title = format!("motion reconstruction: {family}");
    let labels = Labels {
        title: &title,
        x: "iteration",
        y: "objective (mean over windows, px²)",
    };
    let x: RangedCoordf64 = (0.0..res.steps as f64).into();
    draw_chart(path, &labels, x, &|v| format!("{v}"), &series, false)
        .map_err(|e| Error::Io(format!("{}: {e:#}", path.display())))
}

/// Ground truth against the reference and the learned Optimus (when run) over the
/// window's observed frames.
fn strip(
    res: &MotionResults,
    cfg: &MotionEvalConfig,
    body: &Body,
    family: &str,
    w: &Window,
    path: &Path,
) -> Result<()> {
    let every = cfg.task.obs_every;
    let frames: Vec<usize> = (0..cfg.task.n_obs())
        .step_by((cfg.task.n_obs() / 7).max(1))
        .collect();
    let times: Vec<f64> = frames
        .iter()
        .map(|&j| (j * every) as f64 * cfg.task.sim.dt)
        .collect();
    let points = |t: &super::sim::Trajectory| -> Vec<Vec<glam::DVec3>> {
        frames.iter().map(|&j| t.x_at(j * every).to_vec()).collect()
    };
    let truth = points(&w.truth);
    let mut layers_data = vec![("ground truth".to_string(), RGBColor(0, 0, 0), truth)];
    let colors = [
        RGBColor(30, 90, 220),
        RGBColor(220, 40, 40),
        RGBColor(40, 160, 60),
    ];
    let mut shown: Vec<String> = res.reference.iter().cloned().collect();
    if res.rows.iter().any(|r| r.optimizer == "optimus") {
        shown.push("optimus".into());
    }
    for (i, opt) in shown.iter().enumerate() {
        let Some(r) = res
            .windows
            .iter()
            .find(|x| x.family == family && x.window == 0 && &x.optimizer == opt)
        else {
            continue;
        };
        if r.diverged {
            continue;
        }
        let traj = simulate(body, &cfg.task.sim, &r.params, &w.init);
        layers_data.push((
            format!("{opt} ({:.0} mm)", r.mpjpe_mm),
            colors[i % 3],
            points(&traj),
        ));
    }
    let layers: Vec<Layer> = layers_data
        .iter()
        .map(|(label, color, frames)| Layer {
            label,
            color: *color,
            frames,
        })
        .collect();
    let first = &w.truth.x_at(0);
    let lateral = first[14] - first[9];
    let fwd = lateral.cross(glam::DVec3::Y).normalize_or(glam::DVec3::X);
    stick_strip(
        path,
        &format!("{family}: ground truth and reconstructions"),
        &times,
        &layers,
        (-fwd.z).atan2(fwd.x),
    )
}
