//! Objective stage (`shaders/objective.wgsl`): the gap f − f* and ∇f of every problem
//! of a batch at a point, one workgroup per problem. Its CPU twin is
//! [`crate::problem::ProblemSpec::cpu_gap_grad`].
//!
//! User objectives (WGSL files) are read and checked in [`crate::user_objective`].

use crate::context::GpuContext;
use crate::error::Result;
use crate::kernel::{lanes_for, Kernel, WORKGROUP};
use crate::problem::GpuProblems;
use crate::user_objective::{objective_source, UserObjective};
use std::sync::Arc;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ObjParams {
    n_problems: u32,
    n_total: u32,
    pad: [u32; 2],
}

/// The objective kernel of one batch kind (builtin or one user objective): a generic
/// pipeline for batches that mix functions, and one per function with `FUNC_SPEC` set,
/// whose dispatch on the function id folds away (measured about 2x faster per problem
/// on lavapipe at d = 32); each with as many invocations per problem as the batch's
/// largest problem needs ([`lanes_for`]). Pipelines are built on first use and kept in
/// the device's cache.
pub struct ObjectiveStage {
    source: String,
    /// The label of the generic pipeline (it names a user's file in naga's errors).
    label: String,
    /// 1 when reads past a problem's coordinates give NaN (`checking`), else 0: the
    /// `CHECK_BOUNDS` override of every pipeline.
    check_bounds: f64,
}

/// What computes f − f* and ∇f of every problem of a batch on the GPU: the objective
/// kernel here, or a multi-pass pipeline (the motion task's simulation, loss and
/// adjoint). Runs bind it once and record it before every optimizer step.
pub trait Evaluator {
    /// Binds to `problems`: reads points from `x`, writes one value per problem to `f`
    /// and gradients (ragged, like x) to `grad`.
    fn bind(
        &self,
        ctx: &GpuContext,
        problems: &GpuProblems,
        x: &wgpu::Buffer,
        f: &wgpu::Buffer,
        grad: &wgpu::Buffer,
    ) -> Result<Box<dyn Evaluation>>;
}

/// An [`Evaluator`] bound to one batch and one set of buffers.
pub trait Evaluation {
    /// Records one evaluation of every problem.
    fn record(&self, pass: &mut wgpu::ComputePass<'_>);
}

/// The objective bound to one batch and one set of x / f / ∇f buffers.
pub struct ObjectiveBinding {
    pipeline: wgpu::ComputePipeline,
    group: wgpu::BindGroup,
    n_problems: u32,
    _scratch: wgpu::Buffer,
    _params: wgpu::Buffer,
}

impl Evaluation for ObjectiveBinding {
    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        crate::kernel::dispatch_group(pass, &self.group, self.n_problems);
    }
}

impl ObjectiveStage {
    pub fn new(ctx: &GpuContext, user: Option<&UserObjective>) -> Result<Self> {
        Self::build(ctx, user, false)
    }

    /// The stage for `optimus-gpu check`: a user objective's `coord(j)` with j past the
    /// problem's d reads NaN, so an out-of-range read shows instead of silently reading
    /// another problem's coordinates.
    pub fn checking(ctx: &GpuContext, user: &UserObjective) -> Result<Self> {
        Self::build(ctx, Some(user), true)
    }

    fn build(ctx: &GpuContext, user: Option<&UserObjective>, check_bounds: bool) -> Result<Self> {
        let source = objective_source(user.map(|u| u.source.as_str()))?;
        // The label names the user's file in naga's errors (its lines come first).
        let file = user.map_or("objective.wgsl", |u| u.path.as_str());
        let label = if check_bounds {
            format!("{file} (bounds checked)")
        } else {
            file.to_string()
        };
        let stage = Self {
            source,
            label,
            check_bounds: check_bounds as u32 as f64,
        };
        // Built now so that a user objective's errors show before any run.
        stage.kernel(ctx, None, WORKGROUP)?;
        Ok(stage)
    }

    /// The pipeline for function `func` (None: generic) with `lanes` invocations per
    /// problem.
    fn kernel(&self, ctx: &GpuContext, func: Option<u32>, lanes: u32) -> Result<Arc<Kernel>> {
        let mut constants = vec![("CHECK_BOUNDS", self.check_bounds), ("WG", lanes as f64)];
        let label = match func {
            Some(id) => {
                constants.push(("FUNC_SPEC", id as f64));
                "objective (specialized)"
            }
            None => self.label.as_str(),
        };
        Kernel::with_constants(ctx, label, &self.source, &constants)
    }

    /// Binds the stage: it reads points from `x` and writes gaps to `f` (one per
    /// problem) and gradients to `grad` (ragged).
    pub fn bind(
        &self,
        ctx: &GpuContext,
        problems: &GpuProblems,
        x: &wgpu::Buffer,
        f: &wgpu::Buffer,
        grad: &wgpu::Buffer,
    ) -> Result<ObjectiveBinding> {
        let scratch = ctx.storage_zeroed("objective scratch", 3 * problems.n_total as usize)?;
        let params = ctx.uniform(
            "objective params",
            &ObjParams {
                n_problems: problems.n_problems,
                n_total: problems.n_total,
                pad: [0; 2],
            },
        );
        // The benchmark functions and the user objective have kernels of their own.
        let func = problems
            .single_func
            .filter(|&id| id <= crate::problem::FUNC_USER);
        let kernel = self.kernel(ctx, func, lanes_for(ctx, problems.max_dim()))?;
        let group = kernel.bind(
            ctx,
            &[
                &params,
                &problems.desc,
                &problems.center,
                &problems.rot,
                x,
                f,
                grad,
                &scratch,
            ],
        );
        Ok(ObjectiveBinding {
            pipeline: kernel.pipeline.clone(),
            group,
            n_problems: problems.n_problems,
            _scratch: scratch,
            _params: params,
        })
    }
}

impl Evaluator for ObjectiveStage {
    fn bind(
        &self,
        ctx: &GpuContext,
        problems: &GpuProblems,
        x: &wgpu::Buffer,
        f: &wgpu::Buffer,
        grad: &wgpu::Buffer,
    ) -> Result<Box<dyn Evaluation>> {
        Ok(Box::new(ObjectiveStage::bind(
            self, ctx, problems, x, f, grad,
        )?))
    }
}

/// Evaluates every problem at its start point on the GPU: (gap, gradient) per problem.
/// For tests, benchmarks and one-off checks; runs build their own bindings.
pub fn evaluate(
    ctx: &GpuContext,
    stage: &ObjectiveStage,
    problems: &[crate::problem::ProblemSpec],
) -> Result<Vec<(f64, Vec<f64>)>> {
    let gp = GpuProblems::new(ctx, problems)?;
    let f = ctx.storage_zeroed("f", gp.n_problems as usize)?;
    let g = ctx.storage_zeroed("gradient", gp.n_total as usize)?;
    let binding = stage.bind(ctx, &gp, &gp.x0, &f, &g)?;
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        binding.record(&mut pass);
    }
    ctx.queue.submit([enc.finish()]);
    let fs: Vec<f32> = ctx.read(&f, gp.n_problems as usize)?;
    let gs: Vec<f32> = ctx.read(&g, gp.n_total as usize)?;
    Ok(fs
        .iter()
        .zip(gp.split(&gs))
        .map(|(&f, g)| (f as f64, g.iter().map(|&v| v as f64).collect()))
        .collect())
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::kernel::assert_wgsl_layout;

    /// The objective kernel's parameters match the WGSL struct.
    #[test]
    fn params_match_their_wgsl() {
        assert_wgsl_layout!(
            ObjParams,
            "objective.wgsl",
            "ObjParams",
            [n_problems, n_total]
        );
    }
}
