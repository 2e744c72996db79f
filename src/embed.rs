//! The learned optimizer as a component of someone else's GPU pipeline: their device,
//! their buffers for x, ∇f and f, their gradient kernels; the engine only records its
//! optimizer step into their compute pass, with no round trip through the host.
//!
//! ```ignore
//! let ctx = GpuContext::from_device(device.clone(), queue.clone());
//! let opt = EmbeddedOptimizer::new(&ctx, &model, &dims, &x, &grad, Some(&f), 1000)?;
//! // every iteration, inside your encoder:
//! let mut pass = encoder.begin_compute_pass(&Default::default());
//! my_gradient_kernel(&mut pass);   // writes f and ∇f at x
//! opt.record(&mut pass);           // x ← optimizer step
//! ```
//!
//! [`EmbeddedOptimizer::hybrid`] binds Optimus as `optimus-hybrid` the same way: the
//! caller's kernel evaluates the one candidate in x, and the engine keeps or rejects it
//! and writes the next candidate (Optimus's or the L-BFGS fallback's) to x. So between
//! passes x holds a candidate, not the accepted point; the history holds the accepted
//! points' f.

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::learned::gpu::{LearnedKernels, LearnedNet, StepBuffers};
use crate::learned::model::ModelKind;
use crate::learned::model::{Model, N_FEATURES_WITH_LOSS};
use crate::optim::{FallbackOf, Guard, LearnedStages, OptParams, OptState, Status};
use crate::problem::GpuProblems;

/// A learned optimizer bound to a caller's buffers.
pub struct EmbeddedOptimizer {
    kernels: LearnedKernels,
    /// The network, and for the hybrid its L-BFGS fallback (choice and proposals).
    stages: LearnedStages,
    problems: GpuProblems,
    state: wgpu::Buffer,
    history: wgpu::Buffer,
    params: wgpu::Buffer,
    steps: u32,
    _owned: Vec<wgpu::Buffer>,
}

impl EmbeddedOptimizer {
    /// Binds `model` to problems of dimensions `dims` whose coordinates lie back to back
    /// in `x` and `grad` (f32, Σ d values); `f` holds one objective value per problem,
    /// written by the caller's kernel (None: the engine tracks no objective values and
    /// flags only non-finite gradients; not allowed for a model that reads the loss
    /// change, `features` 34 or 35). At most `max_steps` steps are taken.
    pub fn new(
        ctx: &GpuContext,
        model: &Model,
        dims: &[usize],
        x: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        f: Option<&wgpu::Buffer>,
        max_steps: u32,
    ) -> Result<Self> {
        let problems = GpuProblems::layout(ctx, dims)?;
        let n = problems.n_total as u64 * 4;
        if x.size() < n || grad.size() < n {
            return Err(Error::Problem(format!(
                "x and grad need {n} bytes for dimensions summing to {}, got {} and {}",
                problems.n_total,
                x.size(),
                grad.size()
            )));
        }
        if let Some(f) = f.filter(|f| f.size() < 4 * dims.len() as u64) {
            return Err(Error::Problem(format!(
                "f needs one f32 per problem, {} bytes for {} problems, got {}",
                4 * dims.len(),
                dims.len(),
                f.size()
            )));
        }
        if f.is_none() && model.config.features >= N_FEATURES_WITH_LOSS {
            return Err(Error::Problem(format!(
                "this model reads the loss change (features: {}), so it needs the objective \
                 values: pass the buffer f that your kernel writes one value per problem to",
                model.config.features
            )));
        }
        let mut owned = Vec::new();
        let f = match f {
            Some(f) => f.clone(),
            None => {
                let z = ctx.storage_zeroed("f", dims.len())?;
                owned.push(z.clone());
                z
            }
        };
        let states: Vec<OptState> = problems
            .square_offsets()
            .0
            .into_iter()
            .map(|moff| OptState {
                moff,
                ..Default::default()
            })
            .collect();
        let state = ctx.storage("optimizer state", &states)?;
        let history = ctx.storage_zeroed("history", 2 * dims.len() * (max_steps as usize + 1))?;
        let params = ctx.uniform(
            "optimizer params",
            &OptParams::learned(problems.n_problems, problems.n_total, max_steps),
        );
        let kernels = LearnedKernels::new(ctx)?;
        let bufs = StepBuffers {
            opt_params: &params,
            x,
            f: &f,
            g: grad,
            state: &state,
            history: &history,
        };
        let net = LearnedNet::new(ctx, &kernels, model, &problems, &bufs, None)?;
        Ok(Self {
            kernels,
            stages: LearnedStages { net, guard: None },
            problems,
            state,
            history,
            params,
            steps: max_steps,
            _owned: owned,
        })
    }

    /// Binds an Optimus `model` as `optimus-hybrid` (Optimus and an L-BFGS step propose
    /// in turn; a candidate higher than the current point is rejected), with the
    /// arguments of [`EmbeddedOptimizer::new`]. `f` is required: the choice compares
    /// objective values. Before each [`EmbeddedOptimizer::record`] the caller's kernel
    /// evaluates f and ∇f at x, which holds the candidate. Where the engine rejects it,
    /// it writes the accepted point back into x, ∇f and f before its step, so the history
    /// ([`EmbeddedOptimizer::history`]) holds the accepted points' f; after the pass that
    /// ends the budget (the `max_steps + 1`-th) x holds the last accepted point.
    pub fn hybrid(
        ctx: &GpuContext,
        model: &Model,
        dims: &[usize],
        x: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        f: &wgpu::Buffer,
        max_steps: u32,
    ) -> Result<Self> {
        if model.config.kind != ModelKind::Optimus {
            return Err(Error::Config(format!(
                "the hybrid runs Optimus models; this is a {} model",
                model.config.kind
            )));
        }
        let mut opt = Self::new(ctx, model, dims, x, grad, Some(f), max_steps)?;
        let bufs = StepBuffers {
            opt_params: &opt.params,
            x,
            f,
            g: grad,
            state: &opt.state,
            history: &opt.history,
        };
        opt.stages.guard = Some(Guard::new(ctx, FallbackOf::Hybrid, &opt.problems, &bufs)?);
        Ok(opt)
    }

    /// Records one optimizer step of every problem into the caller's pass; it reads the
    /// gradient the caller's kernels wrote and updates x in place.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.stages
            .record(&self.kernels, pass, self.problems.n_problems, None);
    }

    /// Per problem: status, steps taken, and f at each step (as the caller's kernel
    /// wrote it; for the hybrid, the accepted point's). Reads back; call it outside the
    /// loop.
    pub fn history(&self, ctx: &GpuContext) -> Result<Vec<(Status, u32, Vec<f64>)>> {
        let np = self.problems.n_problems as usize;
        let st: Vec<OptState> = ctx.read(&self.state, np)?;
        let t1 = self.steps as usize + 1;
        let h: Vec<f32> = ctx.read(&self.history, 2 * np * t1)?;
        Ok(st
            .iter()
            .enumerate()
            .map(|(p, s)| {
                let n = (s.iter as usize + 1).min(t1);
                let f = (0..n).map(|i| h[2 * (p * t1 + i)] as f64).collect();
                (Status::from_code(s.status), s.iter, f)
            })
            .collect())
    }
}
