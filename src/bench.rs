//! `optimus-gpu bench`: the speed of one learned-optimizer step over a batch, in
//! problem-steps per second and achieved GFLOP/s, with a per-kernel profile from
//! timestamp queries where the device has them.

use crate::context::GpuContext;
use crate::error::Result;
use crate::functions::Function;
use crate::learned::model::{Model, ModelConfig, ModelKind};
use crate::objective::ObjectiveStage;
use crate::optim::{GpuRun, Kernels, Method, OptimizerConfig};
use crate::problem::{Objective, ProblemSpec, SampleOptions};
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

/// Speed of one batch size.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepReport {
    pub problems: usize,
    pub dim: usize,
    pub seconds_per_step: f64,
    pub problem_steps_per_second: f64,
    pub gflops: f64,
    /// Milliseconds per kernel for one step (objective included), if timestamps exist.
    pub profile: Option<Vec<(String, f64)>>,
}

/// Times `steps` steps of `model` on `problems` Sphere problems of dimension `dim` (a
/// cheap objective, so the optimizer dominates), after two warm-up steps.
pub fn learned_step(
    ctx: &GpuContext,
    model: &Arc<Model>,
    problems: usize,
    dim: usize,
    steps: u32,
) -> Result<StepReport> {
    let specs: Vec<ProblemSpec> = (0..problems)
        .map(|i| {
            ProblemSpec::sample(
                Objective::Builtin(Function::Sphere),
                dim,
                &SampleOptions::default(),
                i as u64,
            )
        })
        .collect::<Result<_>>()?;
    let kernels = Kernels::new(ctx)?;
    let stage = ObjectiveStage::new(ctx, None)?;
    let method = Method::for_model(model.config.kind);
    let cfg = OptimizerConfig {
        model: Some(model.clone()),
        ..OptimizerConfig::new(method)
    };
    let run = GpuRun::new(ctx, &kernels, &stage, &specs, &cfg, None, steps + 3)?;
    run.submit_passes(ctx, 2);
    ctx.wait()?;
    let t0 = Instant::now();
    run.submit_passes(ctx, steps);
    ctx.wait()?;
    let seconds_per_step = t0.elapsed().as_secs_f64() / steps as f64;
    let profile = run.profile_pass(ctx)?;
    Ok(StepReport {
        problems,
        dim,
        seconds_per_step,
        problem_steps_per_second: problems as f64 / seconds_per_step,
        gflops: flops_per_step(&model.config, dim) * problems as f64 / seconds_per_step * 1e-9,
        profile,
    })
}

/// A table of reports for the terminal.
pub fn table(reports: &[StepReport]) -> String {
    let mut s = format!(
        "{:>8} {:>6} {:>12} {:>18} {:>9}\n",
        "P", "d", "s / step", "problem-steps / s", "GFLOP/s"
    );
    for r in reports {
        s += &format!(
            "{:>8} {:>6} {:>12.4} {:>18.0} {:>9.2}\n",
            r.problems, r.dim, r.seconds_per_step, r.problem_steps_per_second, r.gflops
        );
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
