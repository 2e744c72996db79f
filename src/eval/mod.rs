//! `optimus-gpu eval` (docs/DESIGN.md §4): functions × dimensions × seeded start points ×
//! optimizers, a step budget, learning rates tuned per function on a grid, and the
//! statistics, table, files and plots of the comparison.

pub mod report;
pub mod results;

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::functions::Function;
use crate::learned::model::{Model, ModelKind};
use crate::objective::{Evaluator, ObjectiveStage};
use crate::optim::{
    check_loop_budget, GpuRun, Kernels, Method, OptimizerConfig, ProblemResult, Status,
};
use crate::problem::{Objective, ProblemSpec, SampleOptions};
use crate::user_objective::UserObjective;
use indicatif::{ProgressBar, ProgressStyle};
use results::{Cell, EvalResults, TunedLr};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// What to evaluate. Every field has a default; a RON file or flags override them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Benchmark functions by name (ignored when `objective` is set).
    pub functions: Vec<String>,
    pub dims: Vec<usize>,
    /// Start points per (function, dimension); the same for every optimizer.
    pub starts: usize,
    /// Step budget T.
    pub steps: u32,
    pub optimizers: Vec<String>,
    pub seed: u64,
    /// Shift, rotation and scale of the problems (none: the textbook functions).
    pub sample: SampleOptions,
    /// Learning rates tried when tuning GD, momentum and Adam.
    pub lr_grid: Vec<f64>,
    /// Start points used for tuning (drawn apart from the evaluation's).
    pub tune_starts: usize,
    /// Fixed learning rate instead of tuning, when set.
    pub lr: Option<f64>,
    /// A run succeeds when its final gap f − f* is at most this.
    pub success_tol: f64,
    /// Steps and evaluations are counted until the gap first reaches this.
    pub threshold: f64,
    /// A user WGSL objective in place of the benchmark functions.
    pub objective: Option<PathBuf>,
    /// Folder for results.json, results.csv, head_to_head.csv and the SVG plots.
    pub out: PathBuf,
    /// Model directories of the learned optimizers named in `optimizers`; a kind with
    /// none here uses the committed trained model (`assets/models/<kind>`).
    pub models: Vec<PathBuf>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            functions: Function::ALL.iter().map(|f| f.name().to_string()).collect(),
            dims: vec![2, 10, 30, 100],
            starts: 8,
            steps: 200,
            optimizers: [
                "gd",
                "momentum",
                "adam",
                "bfgs",
                "lbfgs",
                "lopt",
                "optimus-0",
                "optimus",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            seed: 0,
            sample: SampleOptions::default(),
            lr_grid: (0..=12)
                .map(|k| 10f64.powf(-6.0 + 0.5 * k as f64))
                .collect(),
            tune_starts: 4,
            lr: None,
            success_tol: 1e-5,
            threshold: 1e-3,
            objective: None,
            out: PathBuf::from("results/eval"),
            models: Vec::new(),
        }
    }
}

impl EvalConfig {
    /// Reads a RON config; unknown fields and bad values are errors.
    pub fn from_ron(text: &str, path: &str) -> Result<Self> {
        ron::from_str(text).map_err(|e| Error::Config(format!("{path}: {e}")))
    }

    fn methods(&self) -> Result<Vec<Method>> {
        if self.optimizers.is_empty() {
            return Err(Error::Config("name at least one optimizer".into()));
        }
        self.optimizers
            .iter()
            .map(|s| Method::parse(s).map_err(Error::Config))
            .collect()
    }

    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.dims.is_empty() || self.starts == 0 || self.steps == 0 {
            return bad("dims, starts and steps must be non-empty and positive");
        }
        if self.lr_grid.is_empty() || self.lr_grid.iter().any(|l| !(*l > 0.0 && l.is_finite())) {
            return bad("lr_grid must hold positive learning rates");
        }
        if self.lr.is_some_and(|l| !(l > 0.0 && l.is_finite())) {
            return bad("lr must be positive");
        }
        if self.tune_starts == 0 {
            return bad("tune_starts must be at least 1");
        }
        Ok(())
    }
}

/// The problems of one evaluation: objectives with the dimensions they run at.
struct Suite {
    objectives: Vec<Objective>,
    dims: Vec<usize>,
    skipped: Vec<String>,
    user: Option<Arc<UserObjective>>,
}

impl Suite {
    fn new(cfg: &EvalConfig) -> Result<Self> {
        let (objectives, user) = match &cfg.objective {
            Some(path) => {
                let u = Arc::new(UserObjective::load(path)?);
                (vec![Objective::User(u.clone())], Some(u))
            }
            None => {
                if cfg.functions.is_empty() {
                    return Err(Error::Config("name at least one function".into()));
                }
                let fs = cfg
                    .functions
                    .iter()
                    .map(|n| {
                        Function::parse(n)
                            .map(Objective::Builtin)
                            .map_err(Error::Config)
                    })
                    .collect::<Result<Vec<_>>>()?;
                (fs, None)
            }
        };
        let mut skipped = Vec::new();
        for &d in &cfg.dims {
            if d == 0 || d > crate::functions::MAX_DIM {
                return Err(Error::Config(format!(
                    "dimension {d} is out of range 1..={}",
                    crate::functions::MAX_DIM
                )));
            }
        }
        for o in &objectives {
            if let Objective::Builtin(f) = o {
                for &d in &cfg.dims {
                    if let Err(e) = f.check_dim(d) {
                        skipped.push(e);
                    }
                }
            }
        }
        Ok(Self {
            objectives,
            dims: cfg.dims.clone(),
            skipped,
            user,
        })
    }

    fn valid(&self, o: &Objective, d: usize) -> bool {
        match o {
            Objective::Builtin(f) => f.check_dim(d).is_ok(),
            Objective::User(_) | Objective::Pipeline(_) => true,
        }
    }

    /// Start problems of one cell; `stream` separates tuning draws from evaluation draws.
    fn problems(
        &self,
        cfg: &EvalConfig,
        o: &Objective,
        d: usize,
        n: usize,
        stream: u64,
    ) -> Result<Vec<ProblemSpec>> {
        (0..n)
            .map(|r| {
                let seed = cfg
                    .seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(stream << 48)
                    .wrapping_add((o.id() as u64) << 32)
                    .wrapping_add((d as u64) << 12)
                    .wrapping_add(r as u64);
                ProblemSpec::sample(o.clone(), d, &cfg.sample, seed)
            })
            .collect()
    }
}

pub(crate) fn model_for(m: Method, models: &[Arc<Model>]) -> Option<Arc<Model>> {
    m.model_kind()
        .and_then(|k| models.iter().find(|x| x.config.kind == k).cloned())
}

/// The committed trained model of `kind`: `assets/models/<kind>` under the current
/// directory, else under the crate's source directory.
pub fn default_model_dir(kind: ModelKind) -> Option<PathBuf> {
    model_asset(kind.name())
}

/// The model directory `assets/models/<name>` (current directory first, then the
/// crate's source directory), if it holds a model.
pub fn model_asset(name: &str) -> Option<PathBuf> {
    let rel = PathBuf::from("assets/models").join(name);
    [PathBuf::new(), PathBuf::from(env!("CARGO_MANIFEST_DIR"))]
        .into_iter()
        .map(|base| base.join(&rel))
        .find(|p| p.join(crate::learned::model::CONFIG_FILE).exists())
}

/// Loads the model of every learned method in `methods` from `dirs`, falling back to
/// the committed trained models.
pub(crate) fn load_models(dirs: &[PathBuf], methods: &[Method]) -> Result<Vec<Arc<Model>>> {
    let mut models = dirs
        .iter()
        .map(|dir| Model::load(dir).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    for m in methods {
        if let Some(kind) = m.model_kind() {
            if !models.iter().any(|x| x.config.kind == kind) {
                let dir = default_model_dir(kind).ok_or_else(|| {
                    Error::Config(format!(
                        "optimizer {m} needs a {kind} model and assets/models/{kind} is not \
                         here: pass --model DIR (train one with `optimus-gpu train --model \
                         {kind}`), or leave {m} out of --optimizers"
                    ))
                })?;
                models.push(Arc::new(Model::load(&dir)?));
            }
        }
    }
    Ok(models)
}

/// Runs every method once on one small problem, so that pipeline compilation (done
/// lazily by some drivers) is not billed to the first measured cell.
fn warm_up(
    ctx: &GpuContext,
    kernels: &Kernels,
    stage: &ObjectiveStage,
    suite: &Suite,
    cfg: &EvalConfig,
    methods: &[Method],
    models: &[Arc<Model>],
) -> Result<()> {
    let Some((o, d)) = suite
        .objectives
        .iter()
        .flat_map(|o| suite.dims.iter().map(move |&d| (o, d)))
        .find(|(o, d)| suite.valid(o, *d))
    else {
        return Ok(());
    };
    let problems = suite.problems(cfg, o, d, 1, 2)?;
    for &m in methods {
        let ocfg = OptimizerConfig {
            model: model_for(m, models),
            ..OptimizerConfig::new(m)
        };
        GpuRun::new(ctx, kernels, stage, &problems, &ocfg, None, 1)?.run(ctx)?;
    }
    Ok(())
}

/// Score of a final gap for tuning: log10 of the gap, with a penalty for divergence.
fn tuning_score(r: &ProblemResult) -> f64 {
    let g = r.final_gap();
    if r.status == Status::Diverged || !g.is_finite() {
        40.0
    } else {
        g.max(1e-12).log10()
    }
}

/// Learning-rate tuning, shared by the function and motion evaluations: runs `method`
/// on `problems`, problem i at `grid[keys[i].1]`, and returns for each of `groups`
/// groups (`keys[i].0`) the rate whose problems' `score`s sum lowest (ties go to the
/// earlier grid entry, the smaller rate in the ascending grids the configs hold).
#[allow(clippy::too_many_arguments)]
pub(crate) fn tune_lr(
    ctx: &GpuContext,
    kernels: &Kernels,
    objective: &dyn Evaluator,
    method: Method,
    problems: &[ProblemSpec],
    keys: &[(usize, usize)],
    groups: usize,
    grid: &[f64],
    steps: u32,
    score: impl Fn(&ProblemResult) -> f64,
) -> Result<Vec<f64>> {
    let lrs: Vec<f64> = keys.iter().map(|&(_, l)| grid[l]).collect();
    let config = OptimizerConfig::new(method);
    let res = GpuRun::new(
        ctx,
        kernels,
        objective,
        problems,
        &config,
        Some(&lrs),
        steps,
    )?
    .run(ctx)?;
    let mut sums = vec![vec![0.0; grid.len()]; groups];
    for (r, &(g, l)) in res.iter().zip(keys) {
        sums[g][l] += score(r);
    }
    Ok(sums
        .iter()
        .map(|s| {
            let best = (0..s.len())
                .min_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)))
                .unwrap_or(0);
            grid[best]
        })
        .collect())
}

pub(crate) fn bar(len: u64, quiet: bool, msg: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

/// Runs the evaluation described by `cfg` on `ctx`.
pub fn run(ctx: &GpuContext, cfg: &EvalConfig, quiet: bool) -> Result<EvalResults> {
    cfg.check()?;
    let methods = cfg.methods()?;
    let models = load_models(&cfg.models, &methods)?;
    let suite = Suite::new(cfg)?;
    let kernels = Kernels::new(ctx)?;
    let stage = ObjectiveStage::new(ctx, suite.user.as_deref())?;
    let start = Instant::now();
    warm_up(ctx, &kernels, &stage, &suite, cfg, &methods, &models)?;

    // Tune the learning rate of each first-order method per objective: one batch per
    // method holds every (objective, dimension, tuning start, learning rate).
    let mut tuned: Vec<TunedLr> = Vec::new();
    let tune_methods: Vec<Method> = methods.iter().copied().filter(|m| m.has_lr()).collect();
    if cfg.lr.is_none() && !tune_methods.is_empty() {
        let pb = bar(tune_methods.len() as u64, quiet, "tuning");
        for &m in &tune_methods {
            let mut problems = Vec::new();
            let mut keys = Vec::new();
            for (oi, o) in suite.objectives.iter().enumerate() {
                for &d in &suite.dims {
                    if !suite.valid(o, d) {
                        continue;
                    }
                    let base = suite.problems(cfg, o, d, cfg.tune_starts, 1)?;
                    // Cells past the driver's loop limit are skipped (and reported) below.
                    if check_loop_budget(ctx, &base, &OptimizerConfig::new(m)).is_err() {
                        continue;
                    }
                    for li in 0..cfg.lr_grid.len() {
                        for p in &base {
                            problems.push(p.clone());
                            keys.push((oi, li));
                        }
                    }
                }
            }
            let groups = suite.objectives.len();
            let best = tune_lr(
                ctx,
                &kernels,
                &stage,
                m,
                &problems,
                &keys,
                groups,
                &cfg.lr_grid,
                cfg.steps,
                tuning_score,
            )?;
            for (o, lr) in suite.objectives.iter().zip(best) {
                tuned.push(TunedLr {
                    optimizer: m.name().into(),
                    function: o.name(),
                    lr,
                });
            }
            pb.inc(1);
        }
        pb.finish_and_clear();
    }
    let lr_for = |m: Method, o: &Objective| -> f64 {
        cfg.lr.unwrap_or_else(|| {
            tuned
                .iter()
                .find(|t| t.optimizer == m.name() && t.function == o.name())
                .map_or(OptimizerConfig::default().lr, |t| t.lr)
        })
    };

    // Evaluate: one batch per (method, objective, dimension), so each cell's time is
    // its own.
    let n_cells: usize = suite
        .objectives
        .iter()
        .map(|o| suite.dims.iter().filter(|&&d| suite.valid(o, d)).count())
        .sum::<usize>()
        * methods.len();
    let pb = bar(n_cells as u64, quiet, "evaluating");
    let mut skipped = suite.skipped.clone();
    let mut cells = Vec::new();
    for &m in &methods {
        for o in &suite.objectives {
            for &d in &suite.dims {
                if !suite.valid(o, d) {
                    continue;
                }
                let problems = suite.problems(cfg, o, d, cfg.starts, 0)?;
                let lr = m.has_lr().then(|| lr_for(m, o));
                let ocfg = OptimizerConfig {
                    lr: lr.unwrap_or(OptimizerConfig::default().lr),
                    model: model_for(m, &models),
                    ..OptimizerConfig::new(m)
                };
                if let Err(e) = check_loop_budget(ctx, &problems, &ocfg) {
                    skipped.push(format!("{m} on {} at d = {d}: {e}", o.name()));
                    pb.inc(1);
                    continue;
                }
                let t0 = Instant::now();
                let run = GpuRun::new(ctx, &kernels, &stage, &problems, &ocfg, None, cfg.steps)?;
                let res = run.run(ctx)?;
                let seconds = t0.elapsed().as_secs_f64();
                cells.push(cell(o.name(), d, m, lr, &res, cfg, seconds));
                pb.inc(1);
            }
        }
    }
    pb.finish_and_clear();

    Ok(EvalResults {
        adapter: ctx
            .adapter_info
            .as_ref()
            .map_or("embedded device".into(), |i| {
                format!("{} ({:?})", i.name, i.backend)
            }),
        steps: cfg.steps,
        starts: cfg.starts,
        success_tol: cfg.success_tol,
        threshold: cfg.threshold,
        optimizers: methods.iter().map(|m| m.name().to_string()).collect(),
        functions: suite.objectives.iter().map(|o| o.name()).collect(),
        dims: suite.dims.clone(),
        cells,
        tuned,
        skipped,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// A gap for statistics: +∞ where it is not finite (the start diverged), so a diverged start is a
/// failure in every mean, median and comparison instead of being left out.
pub(crate) fn scored_gap(g: f64) -> f64 {
    if !g.is_finite() {
        f64::INFINITY
    } else {
        g
    }
}

/// Statistics of one cell over its start points. A diverged start counts as +∞ in the
/// mean, the median and the median curve (from the step it diverged on); the mean over
/// finite starts is kept beside it, with the diverged count.
fn cell(
    function: String,
    dim: usize,
    m: Method,
    lr: Option<f64>,
    res: &[ProblemResult],
    cfg: &EvalConfig,
    seconds: f64,
) -> Cell {
    let final_gaps: Vec<f64> = res
        .iter()
        .map(|r| {
            if r.status == Status::Diverged {
                f64::NAN
            } else {
                r.final_gap()
            }
        })
        .collect();
    let scored: Vec<f64> = final_gaps.iter().map(|&g| scored_gap(g)).collect();
    let ok: Vec<f64> = final_gaps
        .iter()
        .copied()
        .filter(|g| g.is_finite())
        .collect();
    let reached: Vec<(u32, u32)> = res
        .iter()
        .filter(|r| r.status != Status::Diverged)
        .filter_map(|r| r.reached(cfg.threshold))
        .collect();
    let t1 = cfg.steps as usize + 1;
    let median_at = |value: &dyn Fn(&ProblemResult, usize) -> f64| -> Vec<f64> {
        (0..t1)
            .map(|t| median(&res.iter().map(|r| value(r, t)).collect::<Vec<_>>()))
            .collect()
    };
    // A diverged run's history repeats its last entry from the step it diverged on
    // (where f may still be finite, ∇f not): from there on it is +∞ in both curves, so
    // it neither looks converged nor lowers the evaluations a level took.
    let gone = |r: &ProblemResult, t: usize| r.status == Status::Diverged && t >= r.iters as usize;
    let curve = median_at(&|r, t| {
        if gone(r, t) {
            f64::INFINITY
        } else {
            scored_gap(r.gaps[t])
        }
    });
    let evals_curve = median_at(&|r, t| {
        if gone(r, t) {
            f64::INFINITY
        } else {
            r.evals_at[t] as f64
        }
    });
    Cell {
        function,
        dim,
        optimizer: m.name().into(),
        lr,
        mean_gap: mean(&scored),
        median_gap: median(&scored),
        finite_mean_gap: if ok.is_empty() { f64::NAN } else { mean(&ok) },
        success_rate: ok.iter().filter(|&&g| g <= cfg.success_tol).count() as f64
            / res.len() as f64,
        steps_to_threshold: (!reached.is_empty())
            .then(|| mean(&reached.iter().map(|r| r.0 as f64).collect::<Vec<_>>())),
        evals_to_threshold: (!reached.is_empty())
            .then(|| mean(&reached.iter().map(|r| r.1 as f64).collect::<Vec<_>>())),
        reached_threshold: reached.len(),
        diverged: res.iter().filter(|r| r.status == Status::Diverged).count(),
        final_gaps,
        curve,
        evals_curve,
        seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `steps` steps whose gap halves each step, or diverges at step 2: with a
    /// non-finite f, or (`finite_f`) with f still finite and only ∇f not, as the GPU
    /// flags it; its history repeats the step-2 entry from there on.
    fn run(start: f64, steps: u32, diverged: bool) -> ProblemResult {
        run_with(start, steps, diverged, false)
    }

    fn run_with(start: f64, steps: u32, diverged: bool, finite_f: bool) -> ProblemResult {
        let hist: Vec<(f64, u32)> = (0..=steps)
            .map(|t| {
                let g = if diverged && t >= 2 && !finite_f {
                    f64::INFINITY
                } else {
                    start * 0.5f64.powi(t as i32)
                };
                (g, t + 1)
            })
            .collect();
        let (status, iters) = if diverged {
            (Status::Diverged, 2)
        } else {
            (Status::Done, steps)
        };
        ProblemResult::from_history(status, iters, iters + 1, &hist, vec![0.0])
    }

    #[test]
    fn a_diverged_start_is_a_failure_in_every_statistic() {
        let cfg = EvalConfig {
            steps: 4,
            ..EvalConfig::default()
        };
        let res = [run(1.0, 4, false), run(2.0, 4, false), run(4.0, 4, true)];
        let m = Method::parse("adam").unwrap();
        let c = cell("sphere".into(), 2, m, None, &res, &cfg, 0.0);
        assert_eq!(c.diverged, 1);
        assert_eq!(c.mean_gap, f64::INFINITY);
        // Finals 1/16, 2/16 and +inf: the median is the middle one, not the mean of two.
        assert_eq!(c.median_gap, 0.125);
        assert!((c.finite_mean_gap - 0.09375).abs() < 1e-15);
        // The median curve counts the diverged start as +inf from step 2 on.
        assert_eq!(c.curve[1], 1.0);
        assert_eq!(c.curve[2], 0.5);
        assert_eq!(c.curve[4], 0.125);
        assert!(c.final_gaps[2].is_nan());
        assert!((c.success_rate - 0.0).abs() < 1e-15);

        // Diverged with a finite f (∇f was not): the same, in the curves too.
        let res2 = [res[0].clone(), res[1].clone(), run_with(4.0, 4, true, true)];
        let c2 = cell("sphere".into(), 2, m, None, &res2, &cfg, 0.0);
        assert_eq!((c2.mean_gap, c2.median_gap), (f64::INFINITY, 0.125));
        assert_eq!((c2.curve[2], c2.curve[4]), (0.5, 0.125));
        assert_eq!(c2.evals_curve[4], 5.0);
        assert_eq!(c2.evals_curve[1], 2.0);

        let all_fine = cell("sphere".into(), 2, m, None, &res[..2], &cfg, 0.0);
        assert!((all_fine.mean_gap - 0.09375).abs() < 1e-15);
        assert_eq!(all_fine.mean_gap, all_fine.finite_mean_gap);
    }
}
