//! `optimus-gpu bench`: the speed of one learned-optimizer step over a batch, in
//! problem-steps per second and achieved GFLOP/s, with a per-kernel profile from
//! timestamp queries where the device has them.

use crate::context::GpuContext;
use crate::error::Result;
use crate::functions::Function;
use crate::learned::model::{Model, ModelConfig, ModelKind, N_FEATURES};
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
        N_FEATURES as f64,
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
