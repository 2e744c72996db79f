//! Meta-training of the learned optimizers with Persistent Evolution Strategies
//! (docs/DESIGN.md §2): `optimus-gpu train`.
//!
//! The host schedules: it draws tasks (a pure function of seed, pair and reset count, so
//! a resumed run draws the same ones), queues resets at each pair's staggered horizon,
//! records the K inner steps of a truncation and the gradient passes, and reads back
//! only the logged numbers. Everything else runs in [`pes::PesEngine`].

pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod noise;
pub mod pes;
pub mod report;

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::learned::model::{config_message, Model, ModelConfig, ModelKind};
use crate::motion::body::Body;
use crate::motion::clip::Family;
use crate::motion::gpu::MotionEvaluator;
use crate::motion::task::{Source, TaskConfig as MotionTask, Window};
use crate::objective::{Evaluator, ObjectiveStage};
use crate::optim::{GpuRun, Guarding, Kernels, Method, OptimizerConfig, Status};
use crate::problem::mix_seed;
use crate::problem::ProblemSpec;
use crate::user_objective::UserObjective;
use checkpoint::{CheckpointMeta, LogRow, CHECKPOINT_FILE, CHECKPOINT_VERSION};
use config::{TaskSampler, TrainConfig};
use pes::{PesEngine, PesKernels, PesSettings};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Sub-seeds of a run (`mix_seed` domains).
const SEED_OFFSET: u64 = 2;
const SEED_TASK: u64 = 3;
const SEED_MODEL: u64 = 4;

/// Particles of a run that names none.
pub const DEFAULT_BATCH: usize = 256;

/// A training run as the command line asks for it.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// The run's config; None: the defaults, or the checkpoint's when resuming.
    pub config: Option<TrainConfig>,
    /// Overrides the config's number of meta-iterations.
    pub iterations: Option<u32>,
    /// The model kind; None: optimus, or the checkpoint's kind when resuming.
    pub kind: Option<ModelKind>,
    /// Particles (two per antithetic pair); None: [`DEFAULT_BATCH`], or the checkpoint's
    /// batch when resuming.
    pub batch: Option<usize>,
    /// The run must be on the motion task (checked against a resumed checkpoint).
    pub motion: bool,
    pub out: PathBuf,
    pub resume: bool,
    /// Start θ from this model instead of random weights (e.g. a model meta-trained on
    /// benchmark functions, fine-tuned on motion); it must match the run's architecture,
    /// which may add inputs or the step-scale output (`Model::grown_to`).
    pub init: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub iterations: u32,
    pub interrupted: bool,
    pub log: Vec<LogRow>,
    pub model_dir: PathBuf,
    /// θ of the lowest validation meta-loss ([`best_row`]).
    pub best_dir: PathBuf,
    pub elapsed_seconds: f64,
}

/// The model architecture a run trains.
pub fn model_config(cfg: &TrainConfig, kind: ModelKind) -> ModelConfig {
    match &cfg.model {
        Some(m) => ModelConfig { kind, ..m.clone() },
        None => ModelConfig::for_kind(kind),
    }
}

/// The engine's fixed settings from a training config.
pub(crate) fn pes_settings(cfg: &TrainConfig) -> PesSettings {
    PesSettings {
        truncation: cfg.truncation,
        horizon: cfg.horizon,
        sigma: cfg.sigma as f32,
        seed: mix_seed(cfg.seed, &[5]) as u32,
        loss_clip: cfg.loss_clip as f32,
        soft_clip: cfg.soft_clip,
        loss_ramp: cfg.loss_ramp as f32,
        use_sign: cfg.use_sign,
        guarding: cfg.guarding(),
        beta1: cfg.beta1 as f32,
        beta2: cfg.beta2 as f32,
        adam_eps: cfg.adam_eps as f32,
        clip_norm: cfg.clip_norm as f32,
        trainable: cfg.trainable.clone(),
        // Only built-in functions are ever rotated (`ProblemSpec::sample`).
        rotations: cfg.motion.is_none()
            && cfg.tasks.objective.is_none()
            && cfg.tasks.rotate_prob > 0.0,
    }
}

/// Staggered horizons: pair i first resets after T − o_i steps (o_i uniform in
/// [0, T)), then every T steps. Inner steps are counted globally: step G is step
/// G mod K of truncation G / K.
pub(crate) struct Schedule {
    first: Vec<u64>,
    horizon: u64,
    k: u64,
}

impl Schedule {
    pub(crate) fn new(seed: u64, pairs: usize, horizon: u32, k: u32) -> Self {
        let t = horizon as u64;
        Self {
            first: (0..pairs)
                .map(|i| t - mix_seed(seed, &[SEED_OFFSET, i as u64]) % t)
                .collect(),
            horizon: t,
            k: k as u64,
        }
    }

    /// The reset count if pair i resets at global step g.
    fn reset_at(&self, i: usize, g: u64) -> Option<u64> {
        let f = self.first[i];
        (g >= f && (g - f).is_multiple_of(self.horizon)).then(|| 1 + (g - f) / self.horizon)
    }

    /// Per pair, the truncation its accumulated perturbation starts at when truncation
    /// n begins: that of its last reset before step nK (0 if none).
    pub(crate) fn since(&self, n: u32) -> Vec<u32> {
        let start = n as u64 * self.k;
        self.first
            .iter()
            .map(|&f| {
                if start <= f {
                    0
                } else {
                    let last = f + (start - 1 - f) / self.horizon * self.horizon;
                    (last / self.k) as u32
                }
            })
            .collect()
    }
}

/// Where a run's tasks come from.
enum Tasks {
    Functions(Box<TaskSampler>),
    /// Walking windows of the motion task; the evaluator holds every particle's window
    /// and is given new ones at resets.
    Motion {
        cfg: Box<MotionTask>,
        body: Box<Body>,
        eval: Option<Box<MotionEvaluator>>,
    },
}

impl Tasks {
    fn new(cfg: &TrainConfig) -> Result<Self> {
        Ok(match &cfg.motion {
            None => Tasks::Functions(Box::new(TaskSampler::new(&cfg.tasks)?)),
            Some(m) => Tasks::Motion {
                body: Box::new(Body::new(&m.gains)),
                cfg: Box::new(m.clone()),
                eval: None,
            },
        })
    }

    /// Dimension of slot i of a batch drawn with `seed`.
    fn slot_dim(&self, seed: u64, i: usize) -> usize {
        match self {
            Tasks::Functions(s) => s.slot_dim(seed, i),
            Tasks::Motion { cfg, body, .. } => cfg.sim.n_params(body),
        }
    }

    /// A task of dimension `d` from `seed` (motion: also its window).
    fn sample(&self, d: usize, seed: u64) -> Result<(ProblemSpec, Option<Window>)> {
        match self {
            Tasks::Functions(s) => Ok((s.sample(d, seed)?, None)),
            Tasks::Motion { cfg, body, .. } => {
                let w = Source::Family(Family::Walk).window(body, cfg, seed)?;
                let spec = MotionEvaluator::problems(std::slice::from_ref(&w)).remove(0);
                Ok((spec, Some(w)))
            }
        }
    }
}

/// Everything a run needs besides the engine.
struct Run<'a> {
    ctx: &'a GpuContext,
    cfg: &'a TrainConfig,
    tasks: Tasks,
    dims: Vec<usize>,
    schedule: Schedule,
    /// The validation problems under the unperturbed θ, bound once; each validation
    /// copies the engine's θ in on the GPU.
    validation: GpuRun<'a>,
}

impl Run<'_> {
    fn task(&self, pair: usize, reset: u64) -> Result<(ProblemSpec, Option<Window>)> {
        self.tasks.sample(
            self.dims[pair],
            mix_seed(self.cfg.seed, &[SEED_TASK, pair as u64, reset]),
        )
    }

    /// Every buffer a checkpoint holds: the engine's and the motion windows'.
    fn state_buffers<'e>(
        &'e self,
        engine: &'e PesEngine<'_>,
    ) -> Vec<(&'static str, &'e wgpu::Buffer)> {
        let mut all = engine.state_buffers();
        if let Tasks::Motion { eval: Some(e), .. } = &self.tasks {
            all.extend(e.state_buffers());
        }
        all
    }

    /// Restarts pair i on its task of reset r.
    fn reset(&self, engine: &PesEngine<'_>, i: usize, r: u64) -> Result<()> {
        let (spec, window) = self.task(i, r)?;
        engine.reset_pair(self.ctx, i, &spec)?;
        if let (Some(w), Tasks::Motion { eval: Some(e), .. }) = (window, &self.tasks) {
            e.write_window(self.ctx, 2 * i, &w)?;
            e.write_window(self.ctx, 2 * i + 1, &w)?;
        }
        Ok(())
    }

    /// Mean meta-loss of the engine's current θ on the validation problems.
    fn validate(&self, engine: &PesEngine<'_>) -> Result<f64> {
        let ctx = self.ctx;
        let weights = self
            .validation
            .learned_weights()
            .expect("the validation run is a learned optimizer");
        self.validation.reset(ctx);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&engine.theta, 0, weights, 0, engine.theta.size());
        ctx.queue.submit([enc.finish()]);
        let results = self.validation.run(ctx)?;
        let clip = self.cfg.loss_clip;
        let total: f64 = results
            .iter()
            .map(|r| {
                let div = (r.status == Status::Diverged).then_some(r.iters as usize);
                cpu::run_meta_loss(&r.gaps, div, clip)
            })
            .sum();
        Ok(total / results.len() as f64)
    }
}

/// Reads a buffer's bytes.
fn read_bytes(ctx: &GpuContext, buf: &wgpu::Buffer) -> Result<Vec<u8>> {
    let words: Vec<u32> = ctx.read(buf, (buf.size() / 4) as usize)?;
    Ok(bytemuck::cast_slice(&words).to_vec())
}

/// A checkpoint to continue from: its metadata and its state buffers by name.
type Resumed = Option<(CheckpointMeta, HashMap<String, Vec<u8>>)>;

/// The run's training and model configs (the checkpoint's when resuming, with
/// `--iterations` applied), checked, and the checkpoint to restore if any.
fn resolve_configs(
    opts: &TrainOptions,
    ckpt_path: &Path,
) -> Result<(TrainConfig, ModelConfig, Resumed, usize)> {
    let mut cfg = opts.config.clone().unwrap_or_default();
    let mut model_cfg = model_config(&cfg, opts.kind.unwrap_or_default());
    let resumed = if opts.resume {
        let (meta, tensors) = checkpoint::load(ckpt_path)?;
        check_resume(&meta, opts, &model_cfg)?;
        cfg = meta.train.clone();
        model_cfg = meta.model.clone();
        Some((meta, tensors))
    } else {
        None
    };
    if let Some(it) = opts.iterations {
        cfg.iterations = it;
    }
    cfg.validate()?;
    model_cfg.validate()?;
    let batch = opts
        .batch
        .or(resumed.as_ref().map(|(meta, _)| meta.batch))
        .unwrap_or(DEFAULT_BATCH);
    if batch < 2 || !batch.is_multiple_of(2) {
        return Err(Error::Config(format!(
            "--batch must be an even number of particles ≥ 2 (antithetic pairs), got {batch}"
        )));
    }
    if let (Some(g), false) = (cfg.guarding(), model_cfg.kind == ModelKind::Optimus) {
        let (field, what) = match g {
            Guarding::Guard => ("guard", "behind the loss guard"),
            Guarding::Hybrid => ("hybrid", "taking turns with L-BFGS"),
        };
        return Err(Error::Config(format!(
            "{field}: true trains Optimus {what}, but the model is a {} model; use --model optimus or drop {field}",
            model_cfg.kind
        )));
    }
    Ok((cfg, model_cfg, resumed, batch))
}

/// θ to start from: `--init`'s model grown to the config's architecture, or a seeded
/// random model.
fn initial_model(opts: &TrainOptions, cfg: &TrainConfig, model_cfg: &ModelConfig) -> Result<Model> {
    match &opts.init {
        Some(dir) => Model::load(dir)?.grown_to(model_cfg).map_err(|e| {
            Error::Config(format!(
                "--init {}: {}. Set the config's model to match",
                dir.display(),
                config_message(e)
            ))
        }),
        None => Model::init(model_cfg.clone(), mix_seed(cfg.seed, &[SEED_MODEL])),
    }
}

/// The validation problems (their own seed) bound to a run of the unperturbed θ.
fn validation_run<'a>(
    ctx: &'a GpuContext,
    kernels: &'a Kernels,
    stage: &ObjectiveStage,
    tasks: &Tasks,
    cfg: &TrainConfig,
    init: &Model,
) -> Result<GpuRun<'a>> {
    let vseed = cfg.validation.seed;
    let (problems, windows): (Vec<_>, Vec<_>) = (0..cfg.validation.problems)
        .map(|p| {
            let d = tasks.slot_dim(vseed, p);
            tasks.sample(d, mix_seed(vseed, &[SEED_TASK, p as u64]))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let method = cfg
        .guarding()
        .map_or(Method::for_model(init.config.kind), Guarding::method);
    let oc = OptimizerConfig {
        model: Some(Arc::new(init.clone())),
        ..OptimizerConfig::new(method)
    };
    let steps = cfg.validation_steps();
    match tasks {
        Tasks::Functions(_) => GpuRun::new(ctx, kernels, stage, &problems, &oc, None, steps),
        Tasks::Motion { cfg: m, .. } => {
            let ws: Vec<Window> = windows.into_iter().flatten().collect();
            let eval = MotionEvaluator::new(ctx, m, &ws)?;
            GpuRun::new(ctx, kernels, &eval, &problems, &oc, None, steps)
        }
    }
}

/// Every pair's first task (both particles of a pair get the same one); for motion the
/// evaluator of their windows is made here too.
fn first_tasks(
    ctx: &GpuContext,
    tasks: &mut Tasks,
    cfg: &TrainConfig,
    dims: &[usize],
) -> Result<Vec<ProblemSpec>> {
    let mut specs = Vec::with_capacity(2 * dims.len());
    let mut windows = Vec::new();
    for (i, &d) in dims.iter().enumerate() {
        let (t, w) = tasks.sample(d, mix_seed(cfg.seed, &[SEED_TASK, i as u64, 0]))?;
        specs.push(t.clone());
        specs.push(t);
        if let Some(w) = w {
            windows.extend([w.clone(), w]);
        }
    }
    if let Tasks::Motion { cfg: m, eval, .. } = tasks {
        *eval = Some(Box::new(MotionEvaluator::new(ctx, m, &windows)?));
    }
    Ok(specs)
}

/// Writes a checkpoint's state buffers back to the GPU, refusing a damaged one or one
/// of another model size or batch.
fn restore(
    run: &Run<'_>,
    engine: &PesEngine<'_>,
    tensors: &HashMap<String, Vec<u8>>,
) -> Result<()> {
    for (name, buf) in run.state_buffers(engine) {
        let bytes = tensors.get(name).ok_or_else(|| {
            Error::Io(format!(
                "checkpoint lacks {name}; it is damaged or from another version"
            ))
        })?;
        if bytes.len() as u64 != buf.size() {
            return Err(Error::Config(format!(
                "checkpoint buffer {name} has {} bytes, this run needs {}; the \
                 checkpoint is from a different model size or batch",
                bytes.len(),
                buf.size()
            )));
        }
        run.ctx.queue.write_buffer(buf, 0, bytes);
    }
    Ok(())
}

/// A resumed run must train on the user objective its checkpoint was written with.
fn check_objective_unchanged(
    meta: &CheckpointMeta,
    user: Option<&UserObjective>,
    out: &Path,
) -> Result<()> {
    if meta.objective_source.as_deref() == user.map(|u| u.source.as_str()) {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{} has changed since the checkpoint in {} was written, so resuming would \
         train on another objective; restore the file or start a new run (another \
         --out)",
        user.map_or("the objective", |u| u.path.as_str()),
        out.display()
    )))
}

/// Runs (or resumes) meta-training. `stop` set (Ctrl-C) ends the run after the current
/// meta-iteration with a checkpoint.
pub fn train(ctx: &GpuContext, opts: &TrainOptions, stop: &AtomicBool) -> Result<TrainSummary> {
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| Error::Io(format!("cannot create {}: {e}", opts.out.display())))?;
    let ckpt_path = opts.out.join(CHECKPOINT_FILE);
    let (cfg, model_cfg, resumed, batch) = resolve_configs(opts, &ckpt_path)?;
    let pairs = batch / 2;
    let mut tasks = Tasks::new(&cfg)?;
    let dims: Vec<usize> = (0..pairs).map(|i| tasks.slot_dim(cfg.seed, i)).collect();
    let kernels = Kernels::new(ctx)?;
    let user = match &tasks {
        Tasks::Functions(s) => s.user.clone(),
        Tasks::Motion { .. } => None,
    };
    if let Some((meta, _)) = &resumed {
        check_objective_unchanged(meta, user.as_deref(), &opts.out)?;
    }
    let stage = ObjectiveStage::new(ctx, user.as_deref())?;
    let pes_kernels = PesKernels::new(ctx)?;
    let init = initial_model(opts, &cfg, &model_cfg)?;
    let validation = validation_run(ctx, &kernels, &stage, &tasks, &cfg, &init)?;
    let specs = first_tasks(ctx, &mut tasks, &cfg, &dims)?;
    let run = Run {
        ctx,
        cfg: &cfg,
        tasks,
        dims,
        schedule: Schedule::new(cfg.seed, pairs, cfg.horizon, cfg.truncation),
        validation,
    };
    let objective: &dyn Evaluator = match &run.tasks {
        Tasks::Motion { eval: Some(e), .. } => e.as_ref(),
        _ => &stage,
    };
    let settings = pes_settings(&cfg);
    let engine = PesEngine::new(
        ctx,
        &kernels,
        &pes_kernels,
        objective,
        &init,
        &specs,
        settings,
    )?;
    let (mut n, mut log, elapsed0) = match resumed {
        Some((meta, tensors)) => {
            restore(&run, &engine, &tensors)?;
            (meta.iteration, meta.log, meta.elapsed_seconds)
        }
        None => (0, Vec::new(), 0.0),
    };
    let model_dir = opts.out.join(MODEL_DIR);
    let best_dir = opts.out.join(BEST_MODEL_DIR);
    let bar = progress_bar(opts.progress, cfg.iterations as u64, n as u64);
    let started = Instant::now();
    let elapsed = |t: &Instant| elapsed0 + t.elapsed().as_secs_f64();
    if log.is_empty() {
        let val = run.validate(&engine)?;
        log.push(LogRow {
            iteration: 0,
            train_loss: None,
            val_loss: val,
            grad_norm: None,
            lr: 0.0,
            iter_seconds: None,
            particle_steps_per_second: None,
            elapsed_seconds: elapsed(&started),
        });
        say(&bar, format!("iteration 0: validation meta-loss {val:.4}"));
        save_theta(&engine, &model_cfg, &read_theta(&run, &engine)?, &best_dir)?;
    }
    let mut interrupted = false;
    let mut window_start = (Instant::now(), n);
    while n < cfg.iterations {
        one_iteration(&run, &engine, n)?;
        n += 1;
        bar.set_position(n as u64);
        let last = n == cfg.iterations;
        interrupted = stop.load(Ordering::SeqCst);
        if n.is_multiple_of(cfg.log_every) || last || interrupted {
            let now = || elapsed(&started);
            let row = logged_row(&run, &engine, batch, n, window_start, now, &bar)?;
            if best_row(&log).is_none_or(|b| row.val_loss < b.val_loss) {
                save_theta(&engine, &model_cfg, &read_theta(&run, &engine)?, &best_dir)?;
            }
            log.push(row);
            report::write_csv(&log, &opts.out.join("log.csv"))?;
            report::plot(&log, &opts.out.join("meta_loss.svg"), &model_cfg)?;
            window_start = (Instant::now(), n);
        }
        if n.is_multiple_of(cfg.checkpoint_every) || last || interrupted {
            let meta = CheckpointMeta {
                version: CHECKPOINT_VERSION,
                iteration: n,
                batch,
                model: model_cfg.clone(),
                train: cfg.clone(),
                elapsed_seconds: elapsed(&started),
                log: log.clone(),
                objective_source: user.as_deref().map(|u| u.source.clone()),
            };
            write_checkpoint(&run, &engine, &meta, &opts.out)?;
        }
        if interrupted {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(TrainSummary {
        iterations: n,
        interrupted,
        log,
        model_dir,
        best_dir,
        elapsed_seconds: elapsed(&started),
    })
}

/// Where a run keeps its latest θ as a model (written with every checkpoint).
const MODEL_DIR: &str = "model";

/// θ as a model file in `dir`.
fn save_theta(
    engine: &PesEngine<'_>,
    model_cfg: &ModelConfig,
    theta: &[f32],
    dir: &Path,
) -> Result<()> {
    Model::from_weights(model_cfg.clone(), engine.packed.unpack(theta))?.save(dir)
}

/// θ read back from the GPU.
fn read_theta(run: &Run<'_>, engine: &PesEngine<'_>) -> Result<Vec<f32>> {
    let (_, buf) = run
        .state_buffers(engine)
        .into_iter()
        .find(|(name, _)| *name == "theta")
        .expect("θ is one of the state buffers");
    Ok(bytemuck::pod_collect_to_vec::<u8, f32>(&read_bytes(
        run.ctx, buf,
    )?))
}

/// The log row after iteration `n` (the last meta-iteration's statistics and a
/// validation of θ), also printed, with a warning if the estimate had non-finite entries.
/// `window` is when and after which iteration the timed window began; `elapsed` gives
/// the run's total seconds.
fn logged_row(
    run: &Run<'_>,
    engine: &PesEngine<'_>,
    batch: usize,
    n: u32,
    window: (Instant, u32),
    elapsed: impl Fn() -> f64,
    bar: &indicatif::ProgressBar,
) -> Result<LogRow> {
    // Reading the statistics waits for the GPU, so the window's time is taken after it.
    let st = engine.stats(run.ctx)?;
    let secs = window.0.elapsed().as_secs_f64() / (n - window.1).max(1) as f64;
    let val = run.validate(engine)?;
    let row = LogRow {
        iteration: n,
        train_loss: Some(st.train_loss),
        val_loss: val,
        grad_norm: Some(st.grad_norm),
        lr: run.cfg.lr_at(n - 1),
        iter_seconds: Some(secs),
        particle_steps_per_second: Some(batch as f64 * run.cfg.truncation as f64 / secs),
        elapsed_seconds: elapsed(),
    };
    say(bar, report::log_line(&row));
    if st.nonfinite > 0 {
        say(
            bar,
            format!(
                "  warning: {} non-finite gradient entries were set to 0",
                st.nonfinite
            ),
        );
    }
    bar.set_message(format!("val {val:.3}"));
    Ok(row)
}

/// Writes the checkpoint (every state buffer, atomically) and θ as `model/` in `out`.
fn write_checkpoint(
    run: &Run<'_>,
    engine: &PesEngine<'_>,
    meta: &CheckpointMeta,
    out: &Path,
) -> Result<()> {
    let mut tensors = Vec::new();
    for (name, buf) in run.state_buffers(engine) {
        tensors.push((name, read_bytes(run.ctx, buf)?));
    }
    checkpoint::save(&out.join(CHECKPOINT_FILE), meta, &tensors)?;
    let theta = tensors
        .iter()
        .find(|(name, _)| *name == "theta")
        .map(|(_, bytes)| bytemuck::pod_collect_to_vec::<u8, f32>(bytes))
        .expect("θ is one of the state buffers");
    save_theta(engine, &meta.model, &theta, &out.join(MODEL_DIR))
}

/// Where a run keeps θ of its lowest validation meta-loss so far, next to `model/` (the
/// latest θ): PES runs' validation curves can climb for a hundred iterations and come
/// back (README: Meta-training), so the last θ is not always the best one.
pub const BEST_MODEL_DIR: &str = "best-model";

/// The logged row with the lowest validation meta-loss (the first of equals), which
/// `best-model/` holds.
pub fn best_row(log: &[LogRow]) -> Option<&LogRow> {
    log.iter()
        .filter(|r| !r.val_loss.is_nan())
        .reduce(|a, b| if b.val_loss < a.val_loss { b } else { a })
}

/// One meta-iteration: truncation n's K steps with the resets that fall in it, then the
/// gradient estimate and the Adam step.
fn one_iteration(run: &Run<'_>, engine: &PesEngine<'_>, n: u32) -> Result<()> {
    let ctx = run.ctx;
    let k = run.cfg.truncation;
    let since = run.schedule.since(n);
    engine.begin_truncation(ctx, n);
    let mut pending = 0;
    for j in 0..k {
        let g = n as u64 * k as u64 + j as u64;
        let mut any = false;
        for i in 0..since.len() {
            if let Some(r) = run.schedule.reset_at(i, g) {
                if !any && pending > 0 {
                    engine.steps(ctx, pending);
                    pending = 0;
                }
                any = true;
                run.reset(engine, i, r)?;
            }
        }
        pending += 1;
    }
    engine.steps(ctx, pending);
    engine.finish_truncation(ctx, n, &since, run.cfg.lr_at(n), n + 1);
    Ok(())
}

/// A resumed run must be the same run: same model, batch and settings (only the number
/// of iterations may grow).
fn check_resume(meta: &CheckpointMeta, opts: &TrainOptions, model_cfg: &ModelConfig) -> Result<()> {
    if let Some(kind) = opts.kind.filter(|&k| k != meta.model.kind) {
        return Err(Error::Config(format!(
            "the checkpoint in {} trains a {} model, not {kind}; pass --model {} or leave \
             --model out",
            opts.out.display(),
            meta.model.kind,
            meta.model.kind
        )));
    }
    if opts.config.as_ref().is_some_and(|c| c.model.is_some()) && meta.model != *model_cfg {
        return Err(Error::Config(format!(
            "the checkpoint holds a model of width {}, {} heads, mlp_hidden {}, {} layers; \
             the config asks for width {}, {} heads, mlp_hidden {}, {} layers. Resume with \
             the checkpoint's config or train into a new --out",
            meta.model.width,
            meta.model.heads,
            meta.model.mlp_hidden,
            meta.model.layers,
            model_cfg.width,
            model_cfg.heads,
            model_cfg.mlp_hidden,
            model_cfg.layers
        )));
    }
    if opts.motion && meta.train.motion.is_none() {
        return Err(Error::Config(format!(
            "the checkpoint in {} meta-trains on benchmark functions, not on the motion task; \
             leave --task motion out or train into a new --out",
            opts.out.display()
        )));
    }
    if opts.batch.is_some_and(|b| b != meta.batch) {
        return Err(Error::Config(format!(
            "the checkpoint was trained with --batch {}; resume with the same batch or \
             leave --batch out",
            meta.batch
        )));
    }
    if let Some(c) = &opts.config {
        let same = TrainConfig {
            iterations: meta.train.iterations,
            ..c.clone()
        };
        if same != meta.train {
            return Err(Error::Config(format!(
                "the config differs from the one the checkpoint in {} was trained with; resume \
                 without --config (the checkpoint's is used; --iterations may extend it)",
                opts.out.display()
            )));
        }
    }
    Ok(())
}

/// Prints a line above the progress bar (or plainly without one).
fn say(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

fn progress_bar(show: bool, len: u64, pos: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} meta-iterations [{elapsed_precise} < {eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    bar.set_position(pos);
    bar
}
