//! The `optimus-gpu` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use optimus_gpu::bench;
use optimus_gpu::eval::{self, report, EvalConfig};
use optimus_gpu::learned::model::{
    Model, ModelConfig, ModelKind, StepRule, N_FEATURES_WITH_LOSS, N_FEATURES_WITH_SCALE,
    N_FEATURES_WITH_SECANT,
};
use optimus_gpu::motion::{self, eval::MotionEvalConfig};
use optimus_gpu::train::{self, config::TrainConfig, TrainOptions};
use optimus_gpu::GpuContext;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "optimus-gpu",
    version,
    about = "GPU-first engine for learned and classic optimizers on batched problems",
    long_about = "GPU-first engine for learned and classic optimizers, with hand-written WGSL \
                  kernels on wgpu. The adapter is picked from WGPU_BACKEND / WGPU_ADAPTER_NAME \
                  (e.g. WGPU_BACKEND=vulkan); on a machine without a GPU install Mesa's lavapipe \
                  (apt-get install mesa-vulkan-drivers)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the GPU adapter, backend, limits and features the engine uses.
    Info,
    /// Compare optimizers on benchmark functions (or a user WGSL objective):
    /// functions × dimensions × seeded start points, a step budget, learning rates of
    /// GD, momentum and Adam tuned per function. With --task motion: on physics-based
    /// motion reconstruction windows (objective, iterations to BFGS's final objective,
    /// MPJPE, time; stick-figure strips). Prints a table and writes JSON, CSV and SVG
    /// plots to the output folder.
    Eval(Box<EvalArgs>),
    /// Write a seeded random learned-optimizer model (model.ron + weights.safetensors).
    InitModel(InitModelArgs),
    /// Time one learned-optimizer step at several batch sizes: problem-steps per second,
    /// GFLOP/s, and where the time goes (timestamp queries per kernel). With --task
    /// motion: simulated steps per second of the motion simulation, forward and with its
    /// adjoint, against the f64 CPU twin.
    Bench(BenchArgs),
    /// Meta-train a learned optimizer with Persistent Evolution Strategies: --batch
    /// particles in antithetic pairs run perturbed copies of the optimizer on tasks drawn
    /// from the config's distribution (benchmark functions, or with --task motion walking
    /// windows of the motion task), entirely on the GPU. Logs, a CSV, a meta-loss plot,
    /// checkpoints (every few iterations and on Ctrl-C) and the model go to --out.
    Train(TrainArgs),
    /// Check a user objective's hand-written gradient: user_grad against central
    /// finite differences of its own f (on the GPU, f32, several step sizes) at seeded
    /// random points of its domain; prints the worst coordinate per point and exits
    /// with an error naming the coordinates whose derivative is wrong.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The user objective file (see assets/objectives/quadratic.wgsl).
    #[arg(long)]
    objective: PathBuf,
    /// Dimensions to check at, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,10,30")]
    dims: Vec<usize>,
    /// Random points per dimension.
    #[arg(long, default_value_t = 4)]
    points: usize,
    /// Seed of the points.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// What to meta-train on: benchmark functions (the config's `tasks`), or walking
    /// windows of the motion reconstruction task (the config's `motion`, defaults if
    /// absent; see assets/train_motion.ron).
    #[arg(long, value_enum, default_value_t = Task::Functions)]
    task: Task,
    /// Particles (two per antithetic pair) [default: 256, or the checkpoint's with
    /// --resume].
    #[arg(long)]
    batch: Option<usize>,
    /// RON training config (see assets/train.ron); default: the built-in defaults, or the
    /// checkpoint's config with --resume.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model kind: optimus, optimus-0 or lopt [default: optimus, or the checkpoint's
    /// kind with --resume].
    #[arg(long)]
    model: Option<String>,
    /// Output directory: checkpoint.safetensors, log.csv, meta_loss.svg, model/ (latest
    /// θ) and best-model/ (θ of the lowest validation meta-loss).
    #[arg(long, default_value = "results/train")]
    out: PathBuf,
    /// Continue from --out's checkpoint (same result as an uninterrupted run).
    #[arg(long)]
    resume: bool,
    /// Meta-train on your own WGSL objective (as `eval --objective` takes it; check its
    /// gradient first with `optimus-gpu check`) instead of the benchmark functions: its
    /// start points at the config's dimensions (sets the config's `tasks.objective`).
    #[arg(long, conflicts_with = "resume")]
    objective: Option<PathBuf>,
    /// Start from this model's weights instead of random ones (same architecture as
    /// the config's model), e.g. assets/models/optimus to fine-tune on motion.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Override the config's number of meta-iterations (e.g. to extend a resumed run).
    #[arg(long)]
    iterations: Option<u32>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct InitModelArgs {
    /// Model kind: optimus, optimus-0 or lopt.
    #[arg(long, default_value = "optimus")]
    kind: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Token width (default 64).
    #[arg(long)]
    width: Option<usize>,
    /// Attention heads (default 4).
    #[arg(long)]
    heads: Option<usize>,
    /// Hidden width of the MLPs (default 128).
    #[arg(long)]
    mlp_hidden: Option<usize>,
    /// Transformer blocks (default 3).
    #[arg(long)]
    layers: Option<usize>,
    /// Also feed the network the loss change (f_t − f_{t−1}) / (|f_t| + |f_{t−1}|), so it
    /// sees whether its last step lowered the objective (34 input features instead of 33).
    #[arg(long)]
    loss_feature: bool,
    /// Give the model a learned per-problem step scale with this rate (e.g. 0.05): each
    /// step its log scale moves by up to the rate, so steps can grow or shrink by orders
    /// of magnitude over a run. Implies the loss-change input (35 input features).
    #[arg(long, value_name = "RATE")]
    step_scale: Option<f64>,
    /// Scale steps by the problem's secant (Barzilai–Borwein) step length γ·rms(g),
    /// γ = sᵀy / yᵀy, so they shrink near a minimizer and grow with the problem's width.
    /// Not together with --step-scale.
    #[arg(long)]
    secant_scale: bool,
    /// With --secant-scale, give steps an absolute part as well, with its own magnitude
    /// output, so the network can keep taking steps of a fixed size.
    #[arg(long, requires = "secant_scale")]
    absolute_steps: bool,
    /// With --secant-scale, also feed the network the last step s = x − x_prev and the
    /// gradient change y = g − g_prev (BFGS's pairs), the loss change and the log secant
    /// length (37 input features).
    #[arg(long, requires = "secant_scale")]
    secant_features: bool,
    /// The quasi-Newton step: the network corrects the secant-scaled (Barzilai–Borwein)
    /// gradient step instead of writing the step itself, so a fresh model already
    /// converges on smooth problems (37 input features, λ_μ = λ_s = 1 since the step's
    /// scale comes from the secant length; not with the switches above).
    #[arg(long, conflicts_with_all = ["step_scale", "secant_scale", "loss_feature"])]
    quasi_newton: bool,
    /// With --quasi-newton, measure the step in a diagonal metric (each gradient
    /// coordinate divided by its running rms, as Adam does), so unknowns of different
    /// units move on their own scales (e.g. the motion task's angles, metres and m/s)
    #[arg(long, requires = "quasi_newton")]
    diagonal: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// What to time: one learned-optimizer step (functions), the motion simulation,
    /// forward and with its adjoint, against the CPU twin (motion), or PES
    /// meta-iterations against the plain step (pes).
    #[arg(long, value_enum, default_value_t = BenchTask::Functions)]
    task: BenchTask,
    /// Motion windows simulated at once (--task motion).
    #[arg(long, default_value_t = 256)]
    windows: usize,
    /// Model directory; default: a seeded random model of --kind at the default size.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Model kind when no --model is given.
    #[arg(long, default_value = "optimus")]
    kind: String,
    /// Batch sizes as PxD, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4096x32,256x100,16x1000")]
    sizes: Vec<String>,
    /// Steps timed per size (after two warm-up steps); with --task pes, meta-iterations
    /// (after one warm-up).
    #[arg(long, default_value_t = 3)]
    steps: u32,
    /// Particles of the PES bench (--task pes).
    #[arg(long, default_value_t = 4096)]
    batch: usize,
    /// Dimension of the PES bench's Rastrigin problems (--task pes).
    #[arg(long, default_value_t = 16)]
    dim: usize,
    /// Training config whose PES settings (truncation, horizon, σ, ...) the PES bench
    /// uses (--task pes; default: the built-in defaults, K = 10).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also time each size behind the loss guard (`optimus-guard`: the fallback's
    /// evaluation and the guard's choice added) and as `optimus-hybrid` (the choice and
    /// the fallback's proposal added, one evaluation), and print their ratios to the
    /// plain step (--task functions, Optimus models).
    #[arg(long)]
    guard: bool,
}

/// What `bench` times.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchTask {
    Functions,
    Motion,
    Pes,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// What to evaluate on: benchmark functions, or physics-based motion
    /// reconstruction windows (docs/DESIGN.md §5).
    #[arg(long, value_enum, default_value_t = Task::Functions)]
    task: Task,
    /// RON config file (see assets/eval.ron, or assets/motion.ron with --task motion);
    /// flags override its fields.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Motion families to test on, comma-separated (--task motion; default: walk, turn,
    /// dance, jump, squat, kick).
    #[arg(long, value_delimiter = ',')]
    families: Option<Vec<String>>,
    /// Motion clip files to test on as well (--task motion): BVH motion capture for a
    /// name ending in .bvh (e.g. the CMU database), DeepMimic JSON otherwise.
    #[arg(long, value_delimiter = ',')]
    clips: Option<Vec<PathBuf>>,
    /// Windows per motion family or clip (--task motion; default 4).
    #[arg(long)]
    windows: Option<usize>,
    /// Functions, comma-separated (default: all 13).
    #[arg(long, value_delimiter = ',')]
    functions: Option<Vec<String>>,
    /// Dimensions, comma-separated (default: 2,10,30,100).
    #[arg(long, value_delimiter = ',')]
    dims: Option<Vec<usize>>,
    /// Seeded start points per function and dimension (default: 8).
    #[arg(long)]
    starts: Option<usize>,
    /// Step budget T (default: 200; 100 with --task motion).
    #[arg(long)]
    steps: Option<u32>,
    /// Optimizers, comma-separated: gd, momentum, nesterov, adam, bfgs, lbfgs, and the
    /// learned optimus, optimus-0, lopt, optimus-guard (Optimus behind a loss guard,
    /// two evaluations a step) and optimus-hybrid (Optimus and L-BFGS proposing in turn,
    /// an uphill candidate rejected, one evaluation a step). Learned ones use --model or
    /// the committed models.
    #[arg(long, value_delimiter = ',')]
    optimizers: Option<Vec<String>>,
    /// Seed of the start points (and of shifts and rotations).
    #[arg(long)]
    seed: Option<u64>,
    /// Use this learning rate instead of tuning one per function.
    #[arg(long)]
    lr: Option<f64>,
    /// Rotate each problem by a random orthogonal matrix (couples the coordinates).
    #[arg(long)]
    rotate: bool,
    /// Shift each minimizer by up to this fraction of the domain's half-width.
    #[arg(long)]
    shift: Option<f64>,
    /// Stretch each problem's domain by this factor (start points and minimizer that many
    /// times farther apart; 1: the textbook functions). Learned optimizers see only
    /// per-problem normalized inputs, so this tests whether their steps adapt.
    #[arg(long)]
    width: Option<f64>,
    /// User WGSL objective instead of the benchmark functions (see
    /// assets/objectives/quadratic.wgsl for the signature).
    #[arg(long)]
    objective: Option<PathBuf>,
    /// Output folder for results.json, results.csv, head_to_head.csv and plots (default:
    /// results/eval, or results/motion with --task motion).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Learned-optimizer model directories (comma-separated), one per kind used by
    /// --optimizers optimus / optimus-0 / lopt.
    #[arg(long, value_delimiter = ',')]
    model: Option<Vec<PathBuf>>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

/// Copies every flag given on the command line over the config's field of that name.
macro_rules! take {
    ($args:ident, $cfg:ident, $($f:ident),*) => {
        $(if let Some(v) = &$args.$f { $cfg.$f = v.clone(); })*
    };
}

/// The problems `eval` runs on.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Task {
    Functions,
    Motion,
}

/// The adapter's name for reports ("?" where the driver gives none).
fn adapter_name(ctx: &GpuContext) -> String {
    ctx.adapter_info
        .as_ref()
        .map_or("?".into(), |i| i.name.clone())
}

/// The bench's model: `--model`, or a seeded random model of `--kind` at the default
/// size.
fn bench_model(a: &BenchArgs) -> Result<Arc<Model>> {
    let model = match &a.model {
        Some(dir) => Model::load(dir)?,
        None => {
            let kind = ModelKind::parse(&a.kind).map_err(anyhow::Error::msg)?;
            Model::init(ModelConfig::for_kind(kind), 0)?
        }
    };
    Ok(Arc::new(model))
}

fn read_config<T>(
    path: &PathBuf,
    parse: impl Fn(&str, &str) -> optimus_gpu::Result<T>,
) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    Ok(parse(&text, &path.display().to_string())?)
}

impl EvalArgs {
    fn motion_config(&self) -> Result<MotionEvalConfig> {
        let function_flags = [
            ("--functions", self.functions.is_some()),
            ("--dims", self.dims.is_some()),
            ("--starts", self.starts.is_some()),
            ("--rotate", self.rotate),
            ("--shift", self.shift.is_some()),
            ("--width", self.width.is_some()),
            ("--objective", self.objective.is_some()),
        ];
        if let Some((flag, _)) = function_flags.iter().find(|(_, set)| *set) {
            anyhow::bail!("{flag} applies to benchmark functions, not to --task motion");
        }
        let mut cfg = match &self.config {
            Some(p) => read_config(p, MotionEvalConfig::from_ron)?,
            None => MotionEvalConfig::default(),
        };
        take!(self, cfg, families, clips, windows, steps, optimizers, seed, out);
        if let Some(m) = &self.model {
            cfg.models = m.clone();
        }
        if self.lr.is_some() {
            cfg.lr = self.lr;
        }
        Ok(cfg)
    }

    fn config(&self) -> Result<EvalConfig> {
        for (flag, set) in [
            ("--families", self.families.is_some()),
            ("--clips", self.clips.is_some()),
            ("--windows", self.windows.is_some()),
        ] {
            if set {
                anyhow::bail!("{flag} applies to --task motion");
            }
        }
        let mut cfg = match &self.config {
            Some(p) => read_config(p, EvalConfig::from_ron)?,
            None => EvalConfig::default(),
        };
        take!(self, cfg, functions, dims, starts, steps, optimizers, seed, out);
        if let Some(m) = &self.model {
            cfg.models = m.clone();
        }
        if self.lr.is_some() {
            cfg.lr = self.lr;
        }
        if self.objective.is_some() {
            cfg.objective = self.objective.clone();
        }
        if self.rotate {
            cfg.sample.rotate = true;
        }
        if let Some(s) = self.shift {
            cfg.sample.shift = s;
        }
        if let Some(w) = self.width {
            if !(w.is_finite() && w > 0.0) {
                anyhow::bail!(
                    "--width must be a positive number (1: the textbook functions), got {w}"
                );
            }
            cfg.sample.log10_width = (w.log10(), w.log10());
        }
        Ok(cfg)
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info => {
            let ctx = GpuContext::new()?;
            print!("{}", ctx.describe());
            println!(
                "engine limits: d <= {}, workgroup size {}",
                optimus_gpu::functions::MAX_DIM,
                optimus_gpu::kernel::WORKGROUP
            );
        }
        Command::Eval(args) if args.task == Task::Motion => {
            let cfg = args.motion_config()?;
            let ctx = GpuContext::new()?;
            let (res, windows) = motion::eval::run(&ctx, &cfg, args.quiet)?;
            print!("{}", motion::eval::table(&res));
            let files = motion::eval::write_all(&res, &windows, &cfg)?;
            println!(
                "wrote {} files to {} ({:.1} s on {})",
                files.len(),
                cfg.out.display(),
                res.seconds,
                res.adapter
            );
        }
        Command::Eval(args) => {
            let cfg = args.config()?;
            let ctx = GpuContext::new()?;
            let res = eval::run(&ctx, &cfg, args.quiet)?;
            print!("{}", report::table(&res));
            let files = report::write_all(&res, &cfg.out)?;
            println!(
                "wrote {} files to {} ({:.1} s on {})",
                files.len(),
                cfg.out.display(),
                res.seconds,
                res.adapter
            );
        }
        Command::InitModel(a) => {
            let kind = ModelKind::parse(&a.kind).map_err(anyhow::Error::msg)?;
            let mut cfg = ModelConfig::for_kind(kind);
            cfg.width = a.width.unwrap_or(cfg.width);
            cfg.heads = a.heads.unwrap_or(cfg.heads);
            cfg.mlp_hidden = a.mlp_hidden.unwrap_or(cfg.mlp_hidden);
            cfg.layers = a.layers.unwrap_or(cfg.layers);
            if a.loss_feature {
                cfg.features = N_FEATURES_WITH_LOSS;
            }
            if let Some(rate) = a.step_scale {
                cfg.lambda_scale = rate;
                cfg.features = N_FEATURES_WITH_SCALE;
            }
            cfg.secant_scale = a.secant_scale;
            cfg.absolute_steps = a.absolute_steps;
            if a.secant_features {
                cfg.features = N_FEATURES_WITH_SECANT;
            }
            if a.quasi_newton {
                cfg.step = if a.diagonal {
                    StepRule::DiagonalQuasiNewton
                } else {
                    StepRule::QuasiNewton
                };
                cfg.features = N_FEATURES_WITH_SECANT;
                cfg.lambda_mu = 1.0;
                cfg.lambda_s = 1.0;
            }
            let model = Model::init(cfg, a.seed)?;
            model.save(&a.out)?;
            println!(
                "wrote a random {} model ({} parameters, seed {}) to {}",
                kind,
                model.weights.len(),
                a.seed,
                a.out.display()
            );
        }
        Command::Bench(a) if a.task == BenchTask::Pes => {
            let model = bench_model(&a)?;
            let cfg = match &a.config {
                Some(p) => read_config(p, TrainConfig::from_ron)?,
                None => TrainConfig::default(),
            };
            let ctx = GpuContext::new()?;
            eprintln!(
                "timing PES with {} particles at d = {} ({} meta-iterations) ...",
                a.batch, a.dim, a.steps
            );
            let r = bench::pes(&ctx, &model, a.batch, a.dim, &cfg, a.steps)?;
            println!(
                "{} model, {} parameters, on {}",
                model.config.kind,
                model.weights.len(),
                adapter_name(&ctx)
            );
            print!("{}", bench::pes_table(&r));
        }
        Command::Bench(a) if a.task == BenchTask::Motion => {
            let ctx = GpuContext::new()?;
            eprintln!("timing {} motion windows ...", a.windows);
            let r = bench::motion(&ctx, a.windows, a.steps)?;
            println!("on {}", adapter_name(&ctx));
            print!("{}", bench::motion_table(&r));
        }
        Command::Bench(a) => {
            let model = bench_model(&a)?;
            let ctx = GpuContext::new()?;
            let mut reports = Vec::new();
            for size in &a.sizes {
                let (p, d) = size
                    .split_once('x')
                    .and_then(|(p, d)| Some((p.parse().ok()?, d.parse().ok()?)))
                    .with_context(|| {
                        format!("--sizes takes PxD pairs like 4096x32, got '{size}'")
                    })?;
                eprintln!("timing P = {p}, d = {d} ...");
                reports.push(bench::learned_step(&ctx, &model, p, d, a.steps, a.guard)?);
            }
            println!(
                "{} model, {} parameters, on {}",
                model.config.kind,
                model.weights.len(),
                adapter_name(&ctx)
            );
            print!("{}", bench::table(&reports));
        }
        Command::Check(a) => {
            let user = Arc::new(optimus_gpu::user_objective::UserObjective::load(
                &a.objective,
            )?);
            let ctx = GpuContext::new()?;
            let checks =
                optimus_gpu::check::check_gradient(&ctx, &user, &a.dims, a.points, a.seed)?;
            print!("{}", optimus_gpu::check::report(&user, &checks));
            if checks.iter().any(|c| c.wrong().next().is_some()) {
                anyhow::bail!(
                    "the gradient of {} disagrees with its finite differences (above)",
                    a.objective.display()
                );
            }
        }
        Command::Train(a) => {
            let mut config = match &a.config {
                Some(p) => Some(read_config(p, TrainConfig::from_ron)?),
                None => None,
            };
            if a.task == Task::Motion && !a.resume {
                let cfg = config.get_or_insert_with(TrainConfig::default);
                cfg.motion.get_or_insert_with(Default::default);
            }
            if let Some(path) = &a.objective {
                if a.task == Task::Motion {
                    anyhow::bail!("--objective trains on your objective; leave out --task motion");
                }
                let cfg = config.get_or_insert_with(TrainConfig::default);
                cfg.tasks.objective = Some(path.clone());
            }
            let opts = TrainOptions {
                config,
                iterations: a.iterations,
                kind: a
                    .model
                    .as_deref()
                    .map(ModelKind::parse)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                batch: a.batch,
                motion: a.task == Task::Motion,
                init: a.init.clone(),
                out: a.out.clone(),
                resume: a.resume,
                progress: !a.quiet,
            };
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            ctrlc::set_handler(move || {
                eprintln!("\ninterrupted: finishing this meta-iteration and writing a checkpoint");
                flag.store(true, Ordering::SeqCst);
            })
            .context("cannot install the Ctrl-C handler")?;
            let ctx = GpuContext::new()?;
            eprintln!(
                "training on {}",
                ctx.describe().lines().next().unwrap_or("?")
            );
            let s = train::train(&ctx, &opts, &stop)?;
            let last = s.log.last();
            println!(
                "{} after {} meta-iterations ({:.1} s); validation meta-loss {:.4} (started at {:.4}); model in {}",
                if s.interrupted { "stopped" } else { "done" },
                s.iterations,
                s.elapsed_seconds,
                last.map_or(f64::NAN, |r| r.val_loss),
                s.log.first().map_or(f64::NAN, |r| r.val_loss),
                s.model_dir.display()
            );
            if let Some(b) = train::best_row(&s.log) {
                println!(
                    "lowest validation meta-loss {:.4} at iteration {}: model in {}",
                    b.val_loss,
                    b.iteration,
                    s.best_dir.display()
                );
            }
            if s.interrupted {
                println!(
                    "resume with: optimus-gpu train --resume --out {}",
                    a.out.display()
                );
            }
        }
    }
    Ok(())
}
