//! `optimus-gpu bench`: the speed of one learned-optimizer step over a batch, in
//! problem-steps per second and achieved GFLOP/s, with a per-kernel profile from
//! timestamp queries where the device has them.

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::functions::Function;
use crate::learned::model::{Model, ModelConfig, ModelKind};
use crate::objective::ObjectiveStage;
use crate::optim::{GpuRun, Kernels, Method, OptimizerConfig};
use crate::problem::{Objective, ProblemSpec, SampleOptions};
use crate::train::config::TrainConfig;
use crate::train::pes::{PesEngine, PesKernels};
use crate::train::{pes_settings, Schedule};
use std::sync::Arc;
use std::time::Instant;

/// Floating-point operations of one step of one problem of dimension d (multiply-adds
/// count two): the linear layers, attention's scores and weighted sums, and Optimus's
/// rank-one update and B s. LayerNorms, features and softmax exponentials are left out.
pub fn flops_per_step(cfg: &ModelConfig, d: usize) -> f64 {
    let (f, w, h, o) = (
        cfg.features as f64,
        cfg.width as f64,
        cfg.mlp_hidden as f64,
        cfg.head_outputs() as f64,
    );
    let d_f = d as f64;
    let per_token = match cfg.kind {
        ModelKind::Lopt => 2.0 * (f * h + h * h + h * o),
        ModelKind::Optimus | ModelKind::Optimus0 => {
            let layer = 2.0 * (w * 3.0 * w + w * w + 2.0 * w * h) + 4.0 * d_f * w;
            2.0 * f * w + cfg.layers as f64 * layer + 2.0 * w * o
        }
    };
    let precond = if cfg.kind == ModelKind::Optimus {
        4.0 * d_f * d_f
    } else {
        0.0
    };
    per_token * d_f + precond
}

/// Milliseconds per kernel of one step, by kernel name (timestamp queries).
pub type Profile = Vec<(String, f64)>;

/// Speed of one batch size.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepReport {
    pub problems: usize,
    pub dim: usize,
    pub seconds_per_step: f64,
    pub problem_steps_per_second: f64,
    pub gflops: f64,
    /// Milliseconds per kernel for one step (objective included), if timestamps exist.
    pub profile: Option<Profile>,
    /// Seconds per step of the same model behind the loss guard (`optimus-guard`: the
    /// fallback's evaluation and the guard's choice added), timed in the same run.
    pub guarded_seconds_per_step: Option<f64>,
    /// Seconds per step of the same model as `optimus-hybrid` (the choice and the
    /// fallback's proposal added, one evaluation), timed in the same run.
    pub hybrid_seconds_per_step: Option<f64>,
}

/// Times `steps` steps of `model` on `problems` Sphere problems of dimension `dim` (a
/// cheap objective, so the optimizer dominates), after two warm-up steps; with `guard`,
/// also the same steps behind the loss guard and as the hybrid (Optimus models only).
pub fn learned_step(
    ctx: &GpuContext,
    model: &Arc<Model>,
    problems: usize,
    dim: usize,
    steps: u32,
    guard: bool,
) -> Result<StepReport> {
    if guard && model.config.kind != ModelKind::Optimus {
        return Err(Error::Config(format!(
            "--guard times Optimus behind the loss guard; the model is a {} model",
            model.config.kind
        )));
    }
    let specs = seeded_problems(Function::Sphere, problems, dim)?;
    let kernels = Kernels::new(ctx)?;
    let stage = ObjectiveStage::new(ctx, None)?;
    let method = Method::for_model(model.config.kind);
    let (seconds_per_step, profile) =
        plain_steps(ctx, &kernels, &stage, model, method, &specs, steps)?;
    let with_fallback = |m: Method| -> Result<Option<f64>> {
        guard
            .then(|| plain_steps(ctx, &kernels, &stage, model, m, &specs, steps))
            .transpose()
            .map(|r| r.map(|(s, _)| s))
    };
    let guarded_seconds_per_step = with_fallback(Method::OptimusGuard)?;
    let hybrid_seconds_per_step = with_fallback(Method::OptimusHybrid)?;
    Ok(StepReport {
        guarded_seconds_per_step,
        hybrid_seconds_per_step,
        problems,
        dim,
        seconds_per_step,
        problem_steps_per_second: problems as f64 / seconds_per_step,
        gflops: flops_per_step(&model.config, dim) * problems as f64 / seconds_per_step * 1e-9,
        profile,
    })
}

/// `n` problems of `function` at dimension `dim`, textbook, start points seeded 0..n.
fn seeded_problems(function: Function, n: usize, dim: usize) -> Result<Vec<ProblemSpec>> {
    (0..n)
        .map(|i| {
            ProblemSpec::sample(
                Objective::Builtin(function),
                dim,
                &SampleOptions::default(),
                i as u64,
            )
        })
        .collect()
}

/// Seconds per step of the plain (unperturbed) learned step of `method` with its
/// objective on `specs`, over `steps` steps after two warm-up steps, and a per-kernel
/// profile of one step where the device has timestamps.
fn plain_steps(
    ctx: &GpuContext,
    kernels: &Kernels,
    stage: &ObjectiveStage,
    model: &Arc<Model>,
    method: Method,
    specs: &[ProblemSpec],
    steps: u32,
) -> Result<(f64, Option<Profile>)> {
    let cfg = OptimizerConfig {
        model: Some(model.clone()),
        ..OptimizerConfig::new(method)
    };
    let run = GpuRun::new(ctx, kernels, stage, specs, &cfg, None, steps + 3)?;
    run.submit_passes(ctx, 2);
    ctx.wait()?;
    let t0 = Instant::now();
    run.submit_passes(ctx, steps);
    ctx.wait()?;
    let seconds_per_step = t0.elapsed().as_secs_f64() / steps as f64;
    Ok((seconds_per_step, run.profile_pass(ctx)?))
}

/// Speed of PES meta-training: whole meta-iterations against the plain step.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PesReport {
    pub particles: usize,
    pub dim: usize,
    pub truncation: u32,
    /// One meta-iteration: noise, K perturbed steps with their objective and meta-loss,
    /// the PES gradient reduction over every credited truncation, and the Adam step.
    pub seconds_per_iteration: f64,
    pub particle_steps_per_second: f64,
    /// One perturbed step of every particle (objective and meta-loss included).
    pub perturbed_step_seconds: f64,
    /// One plain step of the same model on the same problems (objective included).
    pub plain_step_seconds: f64,
    /// Milliseconds per kernel of one perturbed and one plain step, where the device
    /// has timestamps.
    pub perturbed_profile: Option<Profile>,
    pub plain_profile: Option<Profile>,
}

impl PesReport {
    /// Time of a perturbed step over a plain one.
    pub fn step_ratio(&self) -> f64 {
        self.perturbed_step_seconds / self.plain_step_seconds
    }

    /// Share of a meta-iteration spent outside the inner steps (noise, gradient, Adam).
    pub fn overhead(&self) -> f64 {
        1.0 - self.truncation as f64 * self.perturbed_step_seconds / self.seconds_per_iteration
    }
}

/// Times PES on `particles` particles (antithetic pairs) of textbook Rastrigin at
/// dimension `dim` with `cfg`'s settings: `iterations` meta-iterations after one
/// warm-up, at a truncation index where every pair's accumulated noise spans as many
/// truncations as in a long run (so the gradient reduction does its steady-state work),
/// then `iterations` × K perturbed steps alone, and the plain step on the same problems.
pub fn pes(
    ctx: &GpuContext,
    model: &Arc<Model>,
    particles: usize,
    dim: usize,
    cfg: &TrainConfig,
    iterations: u32,
) -> Result<PesReport> {
    if particles < 2 || !particles.is_multiple_of(2) {
        return Err(Error::Config(format!(
            "--batch must be an even number of particles ≥ 2 (antithetic pairs), got {particles}"
        )));
    }
    let pairs = particles / 2;
    let specs: Vec<ProblemSpec> = seeded_problems(Function::Rastrigin, pairs, dim)?
        .into_iter()
        .flat_map(|p| [p.clone(), p])
        .collect();
    let kernels = Kernels::new(ctx)?;
    let pes_kernels = PesKernels::new(ctx)?;
    let stage = ObjectiveStage::new(ctx, None)?;
    let settings = pes_settings(cfg);
    let k = settings.truncation;
    // (iterations + 1) truncations and iterations × K steps alone stay within one horizon,
    // so no particle stops early and no pair needs a reset.
    let steps_needed = (2 * iterations + 1) * k;
    if steps_needed > settings.horizon {
        return Err(Error::Config(format!(
            "bench --task pes runs {steps_needed} inner steps without a reset, more than the \
             horizon {}; use fewer --steps or a shorter truncation",
            settings.horizon
        )));
    }
    let n0 = 2 * settings.window();
    let schedule = Schedule::new(cfg.seed, pairs, settings.horizon, k);
    let engine = PesEngine::new(ctx, &kernels, &pes_kernels, &stage, model, &specs, settings)?;
    let iteration = |n: u32| {
        engine.begin_truncation(ctx, n);
        engine.steps(ctx, k);
        engine.finish_truncation(ctx, n, &schedule.since(n), cfg.meta_lr, n + 1);
    };
    iteration(n0);
    ctx.wait()?;
    let t0 = Instant::now();
    for j in 1..=iterations {
        iteration(n0 + j);
    }
    ctx.wait()?;
    let seconds_per_iteration = t0.elapsed().as_secs_f64() / iterations as f64;
    let t0 = Instant::now();
    engine.steps(ctx, iterations * k);
    ctx.wait()?;
    let perturbed_step_seconds = t0.elapsed().as_secs_f64() / (iterations * k) as f64;
    let perturbed_profile = engine.profile_step(ctx)?;
    let (plain_step_seconds, plain_profile) = plain_steps(
        ctx,
        &kernels,
        &stage,
        model,
        Method::for_model(model.config.kind),
        &specs,
        iterations * k,
    )?;
    Ok(PesReport {
        particles,
        dim,
        truncation: k,
        seconds_per_iteration,
        particle_steps_per_second: (particles as u32 * k) as f64 / seconds_per_iteration,
        perturbed_step_seconds,
        plain_step_seconds,
        perturbed_profile,
        plain_profile,
    })
}

/// The PES report for the terminal.
pub fn pes_table(r: &PesReport) -> String {
    format!(
        "PES, {} particles on Rastrigin at d = {}, K = {}:\n\
         {:<44} {:>10.4} s\n\
         {:<44} {:>10.0}\n\
         {:<44} {:>10.4} s\n\
         {:<44} {:>10.4} s\n\
         {:<44} {:>9.2}x\n\
         {:<44} {:>9.1}%\n",
        r.particles,
        r.dim,
        r.truncation,
        "meta-iteration",
        r.seconds_per_iteration,
        "particle-steps / s",
        r.particle_steps_per_second,
        "perturbed step (all particles)",
        r.perturbed_step_seconds,
        "plain step (same model and problems)",
        r.plain_step_seconds,
        "perturbed / plain",
        r.step_ratio(),
        "noise, gradient and Adam, share of an iteration",
        100.0 * r.overhead(),
    ) + &profiles_side_by_side(r)
}

/// The perturbed and the plain step's kernels side by side, if both were profiled.
fn profiles_side_by_side(r: &PesReport) -> String {
    let (Some(pert), Some(plain)) = (&r.perturbed_profile, &r.plain_profile) else {
        return String::new();
    };
    let mut s = format!(
        "\nwhere a step's time goes (timestamp queries, ms):\n  {:<24} {:>10} {:>10}\n",
        "kernel", "perturbed", "plain"
    );
    for (name, ms) in pert {
        let base = plain.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        s += &format!(
            "  {name:<24} {ms:>10.2} {:>10}\n",
            base.map_or("-".into(), |v| format!("{v:.2}"))
        );
    }
    let total = |p: &Profile| p.iter().map(|(_, ms)| ms).sum::<f64>();
    s + &format!(
        "  {:<24} {:>10.2} {:>10.2}\n",
        "total",
        total(pert),
        total(plain)
    )
}

/// A table of reports for the terminal.
pub fn table(reports: &[StepReport]) -> String {
    let guarded = reports.iter().any(|r| r.guarded_seconds_per_step.is_some());
    let mut s = format!(
        "{:>8} {:>6} {:>12} {:>18} {:>9}",
        "P", "d", "s / step", "problem-steps / s", "GFLOP/s"
    );
    if guarded {
        s += &format!(
            " {:>16} {:>16} {:>15} {:>15}",
            "guarded s / step", "guarded / plain", "hybrid s / step", "hybrid / plain"
        );
    }
    s += "\n";
    for r in reports {
        s += &format!(
            "{:>8} {:>6} {:>12.4} {:>18.0} {:>9.2}",
            r.problems, r.dim, r.seconds_per_step, r.problem_steps_per_second, r.gflops
        );
        if guarded {
            for (t, w) in [
                (r.guarded_seconds_per_step, 16),
                (r.hybrid_seconds_per_step, 15),
            ] {
                s += &match t {
                    Some(t) => format!(" {t:>w$.4} {:>w$.2}", t / r.seconds_per_step),
                    None => format!(" {:>w$} {:>w$}", "-", "-"),
                };
            }
        }
        s += "\n";
    }
    for r in reports {
        if let Some(p) = &r.profile {
            let total: f64 = p.iter().map(|(_, ms)| ms).sum();
            s += &format!(
                "\nwhere the time goes at P = {}, d = {} (timestamp queries, one step):\n",
                r.problems, r.dim
            );
            for (name, ms) in p {
                s += &format!(
                    "  {name:<24} {ms:>10.2} ms {:>5.1}%\n",
                    100.0 * ms / total.max(1e-12)
                );
            }
        }
    }
    s
}

/// Speed of the motion simulation, GPU against the f64 CPU twin in the same run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MotionReport {
    pub windows: usize,
    pub steps_per_window: usize,
    pub dt: f64,
    /// Simulated time steps per second (windows × steps), forward only and with the
    /// reprojection loss and adjoint pass (one full objective and gradient).
    pub gpu_forward: f64,
    pub gpu_with_adjoint: f64,
    /// The CPU twin (one thread, f64) on `cpu_windows` of the same windows.
    pub cpu_windows: usize,
    pub cpu_forward: f64,
    pub cpu_with_adjoint: f64,
}

/// Times the motion simulation of `windows` walking windows of the default task
/// (`repeats` timed evaluations after one warm-up), and the CPU twin on a few of them.
pub fn motion(ctx: &GpuContext, windows: usize, repeats: u32) -> Result<MotionReport> {
    use crate::motion::clip::Family;
    use crate::motion::gpu::MotionEvaluator;
    use crate::motion::sim::{adjoint, simulate};
    use crate::motion::task::{data_term, Source, TaskConfig};
    use crate::objective::Evaluation;
    let cfg = TaskConfig::default();
    let body = crate::motion::body::Body::new(&cfg.gains);
    let ws = (0..windows)
        .map(|i| Source::Family(Family::Walk).window(&body, &cfg, i as u64))
        .collect::<Result<Vec<_>>>()?;
    let eval = MotionEvaluator::new(ctx, &cfg, &ws)?;
    let x: Vec<f32> = ws
        .iter()
        .flat_map(|w| w.x0.iter().map(|&v| v as f32))
        .collect();
    let x = ctx.storage("x", &x)?;
    let f = ctx.storage_zeroed("f", windows)?;
    let g = ctx.storage_zeroed("g", x.size() as usize / 4)?;
    let bound = eval.bind_windows(ctx, &x, &f, &g)?;
    let time = |full: bool| -> Result<f64> {
        let mut best = f64::INFINITY;
        for r in 0..=repeats {
            let t0 = Instant::now();
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                if full {
                    bound.record(&mut pass);
                } else {
                    bound.sim.record_forward(&mut pass);
                }
            }
            ctx.queue.submit([enc.finish()]);
            ctx.wait()?;
            if r > 0 {
                best = best.min(t0.elapsed().as_secs_f64());
            }
        }
        Ok(best)
    };
    let n = cfg.sim.n_steps();
    let steps = (windows * n) as f64;
    let gpu_forward = steps / time(false)?;
    let gpu_with_adjoint = steps / time(true)?;
    let cpu_windows = windows.min(4);
    let t0 = Instant::now();
    for w in &ws[..cpu_windows] {
        std::hint::black_box(simulate(&body, &cfg.sim, &w.x0, &w.init));
    }
    let cpu_fwd_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for w in &ws[..cpu_windows] {
        let t = simulate(&body, &cfg.sim, &w.x0, &w.init);
        let (_, seeds) = data_term(&cfg, w, &t);
        std::hint::black_box(adjoint(&body, &cfg.sim, &w.x0, &t, &seeds));
    }
    let cpu_full_s = t0.elapsed().as_secs_f64();
    let cpu_steps = (cpu_windows * n) as f64;
    Ok(MotionReport {
        windows,
        steps_per_window: n,
        dt: cfg.sim.dt,
        gpu_forward,
        gpu_with_adjoint,
        cpu_windows,
        cpu_forward: cpu_steps / cpu_fwd_s,
        cpu_with_adjoint: cpu_steps / cpu_full_s,
    })
}

/// The motion report for the terminal.
pub fn motion_table(r: &MotionReport) -> String {
    let rt = |steps_per_s: f64| steps_per_s * r.dt;
    format!(
        "motion simulation, {} windows × {} steps of {:.2} ms ({} points, semi-implicit Euler):\n\
         {:<28} {:>16} {:>22} {:>10}\n\
         {:<28} {:>16.0} {:>22.1} {:>10}\n\
         {:<28} {:>16.0} {:>22.1} {:>9.1}x\n\
         {:<28} {:>16.0} {:>22.1} {:>10}\n\
         {:<28} {:>16.0} {:>22.1} {:>9.1}x\n",
        r.windows,
        r.steps_per_window,
        r.dt * 1e3,
        crate::motion::body::N_POINTS,
        "",
        "steps / s",
        "simulated s / s",
        "vs CPU",
        "CPU twin, forward",
        r.cpu_forward,
        rt(r.cpu_forward),
        "",
        "GPU, forward",
        r.gpu_forward,
        rt(r.gpu_forward),
        r.gpu_forward / r.cpu_forward,
        "CPU twin, with adjoint",
        r.cpu_with_adjoint,
        rt(r.cpu_with_adjoint),
        "",
        "GPU, with loss and adjoint",
        r.gpu_with_adjoint,
        rt(r.gpu_with_adjoint),
        r.gpu_with_adjoint / r.cpu_with_adjoint,
    )
}
