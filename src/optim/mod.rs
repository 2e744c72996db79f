//! Optimizers, batched on the GPU with one problem per workgroup, behind one interface:
//! an [`OptimizerConfig`] names the method and its hyperparameters, [`GpuRun`] binds it
//! to a batch of problems and runs passes (objective, then the optimizer's kernel) with
//! no readback inside the loop, and [`cpu`] holds the f64 twins.
//!
//! Every problem stops on its own (budget, convergence, line-search failure, or a
//! non-finite value, which flags that problem and leaves the rest of the batch running),
//! and counts its own iterations and evaluations.
//!
//! `method` names the methods and their settings, `state` the per-problem state and
//! results, `budget` refuses runs past lavapipe's loop limit, `stages` records a
//! learned optimizer's work in a pass (with the guard's and hybrid's L-BFGS fallback),
//! and this file holds the kernels and the executor, [`GpuRun`].

pub mod cpu;

mod budget;
mod method;
mod stages;
mod state;

pub use budget::check_loop_budget;
pub use method::{Family, FirstOrder, Guarding, Method, OptimizerConfig};
pub(crate) use stages::{Between, FallbackOf, Guard, LearnedStages};
pub(crate) use state::OptParams;
pub use state::{OptState, ProblemResult, Status};

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernel::{compose, lanes_for, Kernel};
use crate::learned::gpu::{LearnedKernels, LearnedNet, StepBuffers};
use crate::learned::linear::Tiling;
use crate::learned::model::Model;
use crate::objective::{Evaluation, Evaluator};
use crate::problem::{GpuProblems, ProblemSpec};
use std::sync::Arc;

/// Kernels of every method, built once and shared by runs (the first-order kernel per
/// number of invocations per problem, on first use, in the device's cache).
pub struct Kernels {
    first_order: String,
    bfgs: Arc<Kernel>,
    lbfgs: Arc<Kernel>,
    pub(crate) learned: LearnedKernels,
}

impl Kernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Self::with_tiling(ctx, Tiling::for_device(ctx))
    }

    /// The kernels with a chosen layout of the learned optimizers' linear layers
    /// (tests check both layouts on one device).
    pub fn with_tiling(ctx: &GpuContext, tiling: Tiling) -> Result<Self> {
        Ok(Self {
            first_order: compose("first_order.wgsl")?,
            bfgs: Kernel::from_shader(ctx, "bfgs.wgsl")?,
            lbfgs: Kernel::from_shader(ctx, "lbfgs.wgsl")?,
            learned: LearnedKernels::with_tiling(ctx, tiling)?,
        })
    }

    /// The kernel of classic method `m` for a batch whose largest problem has `max_dim`
    /// coordinates: the first-order kernel with as few invocations per problem as that
    /// allows ([`lanes_for`]), the quasi-Newton ones with [`crate::kernel::WORKGROUP`].
    fn for_method(&self, ctx: &GpuContext, m: Method, max_dim: u32) -> Result<Arc<Kernel>> {
        Ok(match m {
            Method::Bfgs => self.bfgs.clone(),
            Method::Lbfgs => self.lbfgs.clone(),
            _ => {
                let lanes = lanes_for(ctx, max_dim) as f64;
                Kernel::with_constants(
                    ctx,
                    "first_order.wgsl",
                    &self.first_order,
                    &[("WG", lanes)],
                )?
            }
        })
    }
}

/// What a run dispatches after the objective in each pass.
enum Program {
    /// A classic method: one kernel over every problem.
    Classic(Arc<Kernel>, wgpu::BindGroup),
    Learned(Box<LearnedStages>),
}

impl Program {
    fn record(&self, kernels: &Kernels, pass: &mut wgpu::ComputePass<'_>, n: u32) {
        match self {
            Program::Classic(kernel, group) => kernel.dispatch_problems(pass, group, n),
            Program::Learned(stages) => stages.record(&kernels.learned, pass, n, None),
        }
    }

    /// Names of the stages [`Program::record`] records, for profiles.
    fn stage_names(&self, method: Method) -> Vec<&'static str> {
        match self {
            Program::Classic(..) => vec![method.name()],
            Program::Learned(stages) => stages.stage_names(None),
        }
    }

    /// Records stage `k` of [`Program::stage_names`] alone.
    fn record_stage(&self, k: usize, kernels: &Kernels, pass: &mut wgpu::ComputePass<'_>, n: u32) {
        match self {
            Program::Classic(kernel, group) => kernel.dispatch_problems(pass, group, n),
            Program::Learned(stages) => stages.record_stage(k, &kernels.learned, pass, n, None),
        }
    }
}

/// One optimizer bound to one batch: every buffer and bind group is made here, once;
/// passes only record dispatches.
pub struct GpuRun<'a> {
    kernels: &'a Kernels,
    config: OptimizerConfig,
    problems: GpuProblems,
    steps: u32,
    obj_binding: Box<dyn Evaluation>,
    program: Program,
    state: wgpu::Buffer,
    /// Initial states, for `reset`.
    initial: Vec<OptState>,
    history: wgpu::Buffer,
    /// Starts with the iterate (first-order: the point itself; quasi-Newton: the
    /// vectors whose region 0 is x).
    x: wgpu::Buffer,
    /// Trial point of the quasi-Newton line search.
    trial: Option<wgpu::Buffer>,
    _buffers: Vec<wgpu::Buffer>,
}

/// What binding a method to a batch makes beyond the buffers every method shares.
struct Bound {
    evaluation: Box<dyn Evaluation>,
    program: Program,
    /// `GpuRun::x`.
    x: wgpu::Buffer,
    /// `GpuRun::trial`.
    trial: Option<wgpu::Buffer>,
    /// The method's own buffers, kept alive for its bind groups.
    extra: Vec<wgpu::Buffer>,
}

/// The buffers every method binds, and where each family binds its own.
struct Shared<'b> {
    ctx: &'b GpuContext,
    gp: &'b GpuProblems,
    objective: &'b dyn Evaluator,
    params: &'b wgpu::Buffer,
    f: &'b wgpu::Buffer,
    g: &'b wgpu::Buffer,
    state: &'b wgpu::Buffer,
    history: &'b wgpu::Buffer,
}

impl Shared<'_> {
    /// A buffer of `len` floats whose first n (every coordinate of the batch) start at
    /// x0, copied by `enc`.
    fn starting_at_x0(
        &self,
        enc: &mut wgpu::CommandEncoder,
        label: &str,
        len: usize,
    ) -> Result<wgpu::Buffer> {
        let buf = self.ctx.storage_zeroed(label, len)?;
        let n = self.gp.n_total as u64;
        enc.copy_buffer_to_buffer(&self.gp.x0, 0, &buf, 0, n * 4);
        Ok(buf)
    }

    /// BFGS and L-BFGS: the objective at the line search's trial point, the iterate in
    /// region 0 of the vectors, and the curvature (BFGS's matrices or L-BFGS's pairs).
    fn quasi_newton(
        &self,
        enc: &mut wgpu::CommandEncoder,
        kernels: &Kernels,
        config: &OptimizerConfig,
    ) -> Result<Bound> {
        let (ctx, n) = (self.ctx, self.gp.n_total as usize);
        let method = config.method;
        let kernel = kernels.for_method(ctx, method, self.gp.max_dim())?;
        let xe = self.starting_at_x0(enc, "trial point", n)?;
        let vecs = self.starting_at_x0(enc, "quasi-newton vectors", 6 * n)?;
        let mat_len = if method == Method::Bfgs {
            self.gp.square_offsets().1
        } else {
            2 * config.memory as usize * n
        };
        let mat = ctx.storage_zeroed("curvature", mat_len)?;
        let evaluation = self.objective.bind(ctx, self.gp, &xe, self.f, self.g)?;
        let (p, gp) = (self, self.gp);
        let group = kernel.bind(
            ctx,
            &[
                p.params, &gp.desc, p.f, p.g, &xe, &vecs, p.state, p.history, &mat,
            ],
        );
        Ok(Bound {
            evaluation,
            program: Program::Classic(kernel, group),
            x: vecs,
            trial: Some(xe),
            extra: vec![mat],
        })
    }

    /// A learned optimizer's network (and its guard, for the guarded kinds).
    fn learned(
        &self,
        enc: &mut wgpu::CommandEncoder,
        kernels: &Kernels,
        model: &Model,
        method: Method,
    ) -> Result<Bound> {
        let ctx = self.ctx;
        let x = self.starting_at_x0(enc, "x", self.gp.n_total as usize)?;
        let evaluation = self.objective.bind(ctx, self.gp, &x, self.f, self.g)?;
        let bufs = StepBuffers {
            opt_params: self.params,
            x: &x,
            f: self.f,
            g: self.g,
            state: self.state,
            history: self.history,
        };
        let guard = match method.guarding() {
            Some(guarding) => {
                let kind = FallbackOf::new(guarding, self.objective);
                Some(Guard::new(ctx, kind, self.gp, &bufs)?)
            }
            None => None,
        };
        let net = LearnedNet::new(ctx, &kernels.learned, model, self.gp, &bufs, None)?;
        Ok(Bound {
            evaluation,
            program: Program::Learned(Box::new(LearnedStages { net, guard })),
            x,
            trial: None,
            extra: Vec::new(),
        })
    }

    /// The first-order methods: the point and its two moment vectors.
    fn first_order(
        &self,
        enc: &mut wgpu::CommandEncoder,
        kernels: &Kernels,
        method: Method,
    ) -> Result<Bound> {
        let (ctx, n) = (self.ctx, self.gp.n_total as usize);
        let kernel = kernels.for_method(ctx, method, self.gp.max_dim())?;
        let x = self.starting_at_x0(enc, "x", n)?;
        let vecs = ctx.storage_zeroed("moments", 2 * n)?;
        let evaluation = self.objective.bind(ctx, self.gp, &x, self.f, self.g)?;
        let (p, gp) = (self, self.gp);
        let group = kernel.bind(
            ctx,
            &[p.params, &gp.desc, p.f, p.g, &x, &vecs, p.state, p.history],
        );
        Ok(Bound {
            evaluation,
            program: Program::Classic(kernel, group),
            x,
            trial: None,
            extra: vec![vecs],
        })
    }
}

/// Passes recorded per submit; keeps command buffers small.
const PASSES_PER_SUBMIT: u32 = 32;

impl<'a> GpuRun<'a> {
    /// Binds `config` to `problems` for a budget of `steps` iterations. `lrs` gives a
    /// learning rate per problem (for tuning in one batch); None uses `config.lr`.
    pub fn new(
        ctx: &GpuContext,
        kernels: &'a Kernels,
        objective: &dyn Evaluator,
        problems: &[ProblemSpec],
        config: &OptimizerConfig,
        lrs: Option<&[f64]>,
        steps: u32,
    ) -> Result<Self> {
        config.validate()?;
        if steps == 0 {
            return Err(Error::Config("the step budget must be at least 1".into()));
        }
        if let Some(l) = lrs {
            if l.len() != problems.len() {
                return Err(Error::Config(
                    "one learning rate per problem expected".into(),
                ));
            }
        }
        check_loop_budget(ctx, problems, config)?;
        let gp = GpuProblems::new(ctx, problems)?;
        let (np, n) = (gp.n_problems as usize, gp.n_total as usize);
        let method = config.method;
        let (moffs, _) = gp.square_offsets();
        let states: Vec<OptState> = moffs
            .iter()
            .enumerate()
            .map(|(i, &moff)| OptState {
                lr: lrs.map_or(config.lr, |l| l[i]) as f32,
                moff,
                ..Default::default()
            })
            .collect();
        let state = ctx.storage("optimizer state", &states)?;
        let initial = states;
        let history = ctx.storage_zeroed("history", 2 * np * (steps as usize + 1))?;
        let f = ctx.storage_zeroed("f", np)?;
        let g = ctx.storage_zeroed("gradient", n)?;
        let params = ctx.uniform(
            "optimizer params",
            &OptParams {
                n_problems: gp.n_problems,
                n_total: gp.n_total,
                steps,
                variant: method.variant(),
                beta1: config.beta1 as f32,
                beta2: config.beta2 as f32,
                eps: config.eps as f32,
                gtol: config.gtol as f32,
                memory: config.memory,
                pad: [0; 3],
            },
        );
        let shared = Shared {
            ctx,
            gp: &gp,
            objective,
            params: &params,
            f: &f,
            g: &g,
            state: &state,
            history: &history,
        };
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        let bound = if method.is_quasi_newton() {
            shared.quasi_newton(&mut enc, kernels, config)?
        } else if let Some(model) = &config.model {
            shared.learned(&mut enc, kernels, model, method)?
        } else {
            shared.first_order(&mut enc, kernels, method)?
        };
        ctx.queue.submit([enc.finish()]);
        let mut buffers = bound.extra;
        buffers.extend([params, f, g]);
        Ok(Self {
            kernels,
            config: config.clone(),
            problems: gp,
            steps,
            obj_binding: bound.evaluation,
            program: bound.program,
            state,
            initial,
            history,
            x: bound.x,
            trial: bound.trial,
            _buffers: buffers,
        })
    }

    /// A learned run's packed weights (`learned::layout::PackedLayout`), e.g. for a
    /// meta-trainer to copy its current θ in on the GPU; None for classic methods.
    pub fn learned_weights(&self) -> Option<&wgpu::Buffer> {
        match &self.program {
            Program::Learned(stages) => stages.net.own_theta(),
            Program::Classic(..) => None,
        }
    }

    /// Puts every problem back at its start point with fresh optimizer state.
    pub fn reset(&self, ctx: &GpuContext) {
        if let Program::Learned(stages) = &self.program {
            stages.net.reset(ctx);
        }
        ctx.queue
            .write_buffer(&self.state, 0, bytemuck::cast_slice(&self.initial));
        let bytes = self.problems.n_total as u64 * 4;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&self.problems.x0, 0, &self.x, 0, bytes);
        if let Some(xe) = &self.trial {
            enc.copy_buffer_to_buffer(&self.problems.x0, 0, xe, 0, bytes);
        }
        ctx.queue.submit([enc.finish()]);
    }

    /// Records one pass (objective at the evaluation point, then the optimizer kernel)
    /// into `pass`. No readback: this is the unit an embedding application records.
    pub fn record_pass(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.obj_binding.record(pass);
        self.program
            .record(self.kernels, pass, self.problems.n_problems);
    }

    /// Times one pass kernel by kernel with timestamp queries: (kernel, milliseconds),
    /// summed over kernels of the same name. None when the device has no timestamps.
    pub fn profile_pass(&self, ctx: &GpuContext) -> Result<Option<Vec<(String, f64)>>> {
        let n = self.problems.n_problems;
        let mut names: Vec<&str> = vec!["objective"];
        names.extend(self.program.stage_names(self.config.method));
        ctx.profile(&names, |k, pass| match k {
            0 => self.obj_binding.record(pass),
            k => self.program.record_stage(k - 1, self.kernels, pass, n),
        })
    }

    /// Submits `n` passes, in submits of `PASSES_PER_SUBMIT`.
    pub fn submit_passes(&self, ctx: &GpuContext, n: u32) {
        let mut left = n;
        while left > 0 {
            let k = left.min(PASSES_PER_SUBMIT);
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for _ in 0..k {
                    self.record_pass(&mut pass);
                }
            }
            ctx.queue.submit([enc.finish()]);
            left -= k;
        }
    }

    /// Most passes a run can need: each iteration takes at most the line search's
    /// evaluations plus its final re-evaluation.
    fn max_passes(&self) -> u32 {
        if self.config.method.is_quasi_newton() {
            1 + self.steps * (cpu::LS_MAX + 1)
        } else {
            self.steps + 1
        }
    }

    /// Runs until every problem has stopped. First-order methods need exactly T + 1
    /// passes and never read back before the end; quasi-Newton runs check the problems'
    /// status every few submits, since line searches take a varying number of passes.
    pub fn run(&self, ctx: &GpuContext) -> Result<Vec<ProblemResult>> {
        let max = self.max_passes();
        if !self.config.method.is_quasi_newton() {
            self.submit_passes(ctx, max);
        } else {
            let chunk = 4 * PASSES_PER_SUBMIT;
            let mut done = 0;
            while done < max {
                let k = chunk.min(max - done);
                self.submit_passes(ctx, k);
                done += k;
                let states: Vec<OptState> =
                    ctx.read(&self.state, self.problems.n_problems as usize)?;
                if states.iter().all(|s| s.status != 0) {
                    break;
                }
            }
        }
        self.results(ctx)
    }

    /// Reads back state, history and final iterates.
    pub fn results(&self, ctx: &GpuContext) -> Result<Vec<ProblemResult>> {
        let np = self.problems.n_problems as usize;
        let n = self.problems.n_total as usize;
        let states: Vec<OptState> = ctx.read(&self.state, np)?;
        let hist: Vec<f32> = ctx.read(&self.history, 2 * np * (self.steps as usize + 1))?;
        let x_flat: Vec<f32> = ctx.read(&self.x, n)?;
        let xs = self.problems.split(&x_flat);
        let t1 = self.steps as usize + 1;
        Ok(states
            .iter()
            .zip(xs)
            .enumerate()
            .map(|(p, (s, x))| {
                let raw: Vec<(f64, u32)> = (0..t1)
                    .map(|i| {
                        let b = 2 * (p * t1 + i);
                        (hist[b] as f64, hist[b + 1] as u32)
                    })
                    .collect();
                let status = Status::from_code(s.status);
                ProblemResult::from_history(
                    status,
                    s.iter,
                    s.n_evals,
                    &raw,
                    x.iter().map(|&v| v as f64).collect(),
                )
            })
            .collect())
    }
}
