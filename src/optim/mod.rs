//! Optimizers, batched on the GPU with one problem per workgroup, behind one interface:
//! an [`OptimizerConfig`] names the method and its hyperparameters, [`GpuRun`] binds it
//! to a batch of problems and runs passes (objective, then the optimizer's kernel) with
//! no readback inside the loop, and [`cpu`] holds the f64 twins.
//!
//! Every problem stops on its own (budget, convergence, line-search failure, or a
//! non-finite value, which flags that problem and leaves the rest of the batch running),
//! and counts its own iterations and evaluations.

pub mod cpu;

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernel::{compose, lanes_for, Kernel};
use crate::learned::gpu::{LearnedKernels, LearnedNet, StepBuffers};
use crate::learned::linear::Tiling;
use crate::learned::model::{Model, ModelKind};
use crate::objective::{Evaluation, Evaluator};
use crate::problem::{GpuProblems, ProblemSpec};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The optimization methods the engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Gradient descent.
    Gd,
    /// Heavy-ball momentum.
    Momentum,
    /// Nesterov momentum.
    Nesterov,
    Adam,
    /// BFGS with a dense inverse Hessian and a strong-Wolfe line search.
    Bfgs,
    /// L-BFGS with a strong-Wolfe line search.
    Lbfgs,
    /// The Transformer-based learned optimizer with its rank-one preconditioner.
    Optimus,
    /// Optimus without the preconditioner.
    #[serde(rename = "optimus-0")]
    Optimus0,
    /// The per-parameter MLP learned optimizer.
    Lopt,
    /// Optimus behind a loss guard: each step evaluates its candidate and an L-BFGS
    /// step's (no line search); the fallback is taken where it is the lower and no higher
    /// than the current point, backtracked where it is the lower but uphill, and
    /// Optimus's candidate is taken otherwise (two evaluations a step).
    #[serde(rename = "optimus-guard")]
    OptimusGuard,
    /// Optimus taking turns with an L-BFGS step (no line search): one candidate and one
    /// evaluation a step, kept only where it is no higher than the current point.
    #[serde(rename = "optimus-hybrid")]
    OptimusHybrid,
}

/// How a learned run uses its L-BFGS fallback (`learned/guard.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarding {
    /// Both candidates evaluated every step; the loss guard chooses.
    Guard,
    /// The fallback and the learned optimizer propose in turn, one evaluation a step;
    /// a candidate higher than the current point is rejected.
    Hybrid,
}

impl Guarding {
    /// The method that runs Optimus this way.
    pub fn method(self) -> Method {
        match self {
            Guarding::Guard => Method::OptimusGuard,
            Guarding::Hybrid => Method::OptimusHybrid,
        }
    }
}

impl Method {
    pub const ALL: [Method; 11] = [
        Method::Gd,
        Method::Momentum,
        Method::Nesterov,
        Method::Adam,
        Method::Bfgs,
        Method::Lbfgs,
        Method::Optimus,
        Method::Optimus0,
        Method::Lopt,
        Method::OptimusGuard,
        Method::OptimusHybrid,
    ];

    /// The classic methods, which need no model.
    pub const CLASSIC: [Method; 6] = [
        Method::Gd,
        Method::Momentum,
        Method::Nesterov,
        Method::Adam,
        Method::Bfgs,
        Method::Lbfgs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Gd => "gd",
            Method::Momentum => "momentum",
            Method::Nesterov => "nesterov",
            Method::Adam => "adam",
            Method::Bfgs => "bfgs",
            Method::Lbfgs => "lbfgs",
            Method::Optimus => "optimus",
            Method::Optimus0 => "optimus-0",
            Method::Lopt => "lopt",
            Method::OptimusGuard => "optimus-guard",
            Method::OptimusHybrid => "optimus-hybrid",
        }
    }

    /// The learned method that runs models of `kind`.
    pub fn for_model(kind: ModelKind) -> Method {
        match kind {
            ModelKind::Optimus => Method::Optimus,
            ModelKind::Optimus0 => Method::Optimus0,
            ModelKind::Lopt => Method::Lopt,
        }
    }

    /// The model kind a learned method runs, None for classic methods.
    pub fn model_kind(self) -> Option<ModelKind> {
        match self {
            Method::Optimus | Method::OptimusGuard | Method::OptimusHybrid => {
                Some(ModelKind::Optimus)
            }
            Method::Optimus0 => Some(ModelKind::Optimus0),
            Method::Lopt => Some(ModelKind::Lopt),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Result<Method, String> {
        let n = s.trim().to_ascii_lowercase().replace(['_', '-'], "");
        Method::ALL
            .into_iter()
            .find(|m| m.name().replace('-', "") == n)
            .ok_or_else(|| {
                format!(
                    "unknown optimizer '{s}'; known: {}",
                    Method::ALL.map(|m| m.name()).join(", ")
                )
            })
    }

    /// Whether the learning rate is a tuned hyperparameter.
    pub fn has_lr(self) -> bool {
        matches!(
            self,
            Method::Gd | Method::Momentum | Method::Nesterov | Method::Adam
        )
    }

    /// How the learned step uses the L-BFGS fallback of `learned/guard.wgsl`, if at all.
    pub fn guarding(self) -> Option<Guarding> {
        match self {
            Method::OptimusGuard => Some(Guarding::Guard),
            Method::OptimusHybrid => Some(Guarding::Hybrid),
            _ => None,
        }
    }

    fn is_quasi_newton(self) -> bool {
        matches!(self, Method::Bfgs | Method::Lbfgs)
    }

    /// Variant index inside `first_order.wgsl`.
    fn variant(self) -> u32 {
        match self {
            Method::Gd => 0,
            Method::Momentum => 1,
            Method::Nesterov => 2,
            _ => 3,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A method and its hyperparameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    pub method: Method,
    /// Learning rate (first-order methods); per problem values override it.
    pub lr: f64,
    /// Momentum coefficient, or Adam's β₁.
    pub beta1: f64,
    /// Adam's β₂.
    pub beta2: f64,
    /// Adam's ε.
    pub eps: f64,
    /// Quasi-Newton methods stop when ‖∇f‖₂ ≤ gtol.
    pub gtol: f64,
    /// L-BFGS memory (pairs kept).
    pub memory: u32,
    /// Weights of a learned method (loaded from a model file, not part of a config).
    #[serde(skip)]
    pub model: Option<Arc<Model>>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            method: Method::Adam,
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            gtol: 1e-7,
            memory: 10,
            model: None,
        }
    }
}

impl OptimizerConfig {
    pub fn new(method: Method) -> Self {
        Self {
            method,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("{}: {m}", self.method)));
        if self.method.has_lr() && !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("beta1 and beta2 must lie in [0, 1)".into());
        }
        if self.method == Method::Lbfgs && !(1..=64).contains(&self.memory) {
            return bad(format!("memory must be in 1..=64, got {}", self.memory));
        }
        if let Some(kind) = self.method.model_kind() {
            match &self.model {
                None => {
                    return bad(
                        "needs a model: pass --model DIR (see `optimus-gpu init-model`)".into(),
                    )
                }
                Some(m) if m.config.kind != kind => {
                    return bad(format!("the model given is a {:?} model", m.config.kind))
                }
                Some(m) => m.config.validate()?,
            }
        }
        Ok(())
    }
}

/// Why a problem stopped (or that it has not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Running,
    /// Used its step budget.
    Done,
    /// ‖∇f‖ fell below the tolerance.
    Converged,
    /// The line search found no decrease (usually: converged to working precision).
    Stalled,
    /// f or ∇f became NaN or infinite; the problem was stopped and flagged.
    Diverged,
}

impl Status {
    pub fn from_code(c: u32) -> Status {
        match c {
            0 => Status::Running,
            1 => Status::Done,
            2 => Status::Converged,
            3 => Status::Stalled,
            _ => Status::Diverged,
        }
    }
}

/// Per-problem optimizer state; mirrors `struct OptState` in
/// `shaders/shared/opt_state.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct OptState {
    pub status: u32,
    pub iter: u32,
    pub n_evals: u32,
    pub phase: u32,
    pub f: f32,
    pub lr: f32,
    pub moff: u32,
    pub n_ls: u32,
    /// The strong-Wolfe line search's bracket (kernels only; the host zeroes it).
    pub a: f32,
    pub f0: f32,
    pub dg0: f32,
    pub a_prev: f32,
    pub f_prev: f32,
    pub dg_prev: f32,
    pub a_lo: f32,
    pub f_lo: f32,
    pub dg_lo: f32,
    pub a_hi: f32,
    pub f_hi: f32,
    pub dg_hi: f32,
    pub k: u32,
    pub head: u32,
    /// Learned log step scale ℓ (learned optimizers with `lambda_scale > 0`); starts at 0.
    pub log_scale: f32,
    pub pad1: u32,
}

/// Mirrors `struct OptParams` in `shaders/shared/opt_state.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct OptParams {
    n_problems: u32,
    n_total: u32,
    steps: u32,
    variant: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    gtol: f32,
    memory: u32,
    pad: [u32; 3],
}

impl OptParams {
    /// Parameters of a learned method (the first-order fields are unused).
    pub(crate) fn learned(n_problems: u32, n_total: u32, steps: u32) -> Self {
        Self {
            n_problems,
            n_total,
            steps,
            variant: 0,
            beta1: 0.0,
            beta2: 0.0,
            eps: 0.0,
            gtol: 0.0,
            memory: 0,
            pad: [0; 3],
        }
    }
}

/// Outcome of one problem.
#[derive(Clone, Debug, Serialize)]
pub struct ProblemResult {
    pub status: Status,
    /// Accepted steps.
    pub iters: u32,
    /// Objective and gradient evaluations.
    pub evals: u32,
    /// Gap f − f* at iterations 0..=T (held at the last value after a stop).
    pub gaps: Vec<f64>,
    /// Evaluations spent by each iteration of `gaps`.
    pub evals_at: Vec<u32>,
    /// Final iterate.
    pub x: Vec<f64>,
}

impl ProblemResult {
    /// Final gap f − f*.
    pub fn final_gap(&self) -> f64 {
        *self.gaps.last().unwrap_or(&f64::NAN)
    }

    /// First iteration whose gap is at most `threshold`, with its evaluation count.
    pub fn reached(&self, threshold: f64) -> Option<(u32, u32)> {
        self.gaps
            .iter()
            .position(|&g| g <= threshold)
            .map(|i| (i as u32, self.evals_at[i]))
    }

    /// Builds a result from raw history pairs (gap, evaluations), holding the last
    /// recorded value for the iterations after the problem stopped.
    pub fn from_history(
        status: Status,
        iters: u32,
        evals: u32,
        raw: &[(f64, u32)],
        x: Vec<f64>,
    ) -> Self {
        let mut gaps = Vec::with_capacity(raw.len());
        let mut evals_at = Vec::with_capacity(raw.len());
        let last = if status == Status::Diverged {
            iters as usize
        } else {
            (iters as usize).min(raw.len() - 1)
        };
        for (i, &(g, e)) in raw.iter().enumerate() {
            if i <= last {
                gaps.push(g);
                evals_at.push(e);
            } else {
                gaps.push(gaps[last]);
                evals_at.push(evals_at[last]);
            }
        }
        Self {
            status,
            iters,
            evals,
            gaps,
            evals_at,
            x,
        }
    }
}

/// Loop iterations one invocation of the objective kernel runs for `p` (an upper
/// estimate: rows per invocation times the work per row, plus the reductions).
fn objective_loop_iterations(p: &ProblemSpec) -> u64 {
    let d = p.dim as u64;
    let rows = d.div_ceil(crate::kernel::fewest_lanes(p.dim as u32) as u64);
    let mut it = 4 * rows + 64;
    if p.rotation.is_some() {
        it += 2 * rows * d;
    }
    if matches!(
        p.objective,
        crate::problem::Objective::Builtin(crate::Function::Perm)
    ) {
        // Inner sums with a binary power each, then the gradient's sum.
        let bits = 64 - d.leading_zeros() as u64;
        it += rows * d * (bits + 1) + rows * d;
    }
    it
}

/// Loop iterations one invocation of `method`'s own kernel runs at dimension d.
fn method_loop_iterations(method: Method, d: u64, config: &OptimizerConfig) -> u64 {
    let rows = d.div_ceil(crate::kernel::WORKGROUP as u64);
    match method {
        // The first-order kernel may run with fewer invocations (`kernel::lanes_for`).
        Method::Gd | Method::Momentum | Method::Nesterov | Method::Adam => {
            4 * d.div_ceil(crate::kernel::fewest_lanes(d as u32) as u64) + 64
        }
        // H y, the scaling of H₀ and the rank-two update (d² entries each), and −H g.
        Method::Bfgs => {
            2 * rows * d + 2 * (d * d).div_ceil(crate::kernel::WORKGROUP as u64) + 16 * rows + 64
        }
        Method::Lbfgs => (4 * config.memory as u64 + 8) * rows + 64 * config.memory as u64,
        // The guard's two-loop over its pairs, plus its own passes over the coordinates.
        Method::OptimusGuard | Method::OptimusHybrid => {
            let m = cpu::GUARD_MEMORY as u64;
            (4 * m + 14) * rows + 64 * m
        }
        _ => 4 * rows + 64,
    }
}

/// Refuses runs that would pass the driver's per-invocation loop limit (lavapipe), which
/// would otherwise end kernels early and give silently wrong results.
pub fn check_loop_budget(
    ctx: &GpuContext,
    problems: &[ProblemSpec],
    config: &OptimizerConfig,
) -> Result<()> {
    let Some(limit) = ctx.loop_limit() else {
        return Ok(());
    };
    for (k, p) in problems.iter().enumerate() {
        let d = p.dim as u64;
        for (kernel, it) in [
            ("objective", objective_loop_iterations(p)),
            (
                config.method.name(),
                method_loop_iterations(config.method, d, config),
            ),
        ] {
            if it > limit {
                return Err(Error::TooLarge(format!(
                    "problem {k} ({}, d = {d}) needs about {it} loop iterations per invocation in the \
                     {kernel} kernel; this driver (llvmpipe) stops an invocation after {limit}, which \
                     would give wrong results. Use a smaller d{}, or a GPU",
                    p.objective.name(),
                    if config.method == Method::Bfgs { ", L-BFGS instead of BFGS" } else { "" }
                )));
            }
        }
    }
    Ok(())
}

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

/// The L-BFGS fallback of a guarded or hybrid learned run (`learned/guard.wgsl`): for
/// the guard, the objective bound a second time, to the fallback candidate at the start
/// of `gmem`; the kernel's choice; for the hybrid, the kernel that puts the fallback's
/// candidate in x on its turns.
pub(crate) struct Guard {
    fallback: Option<Box<dyn Evaluation>>,
    choice: (Arc<Kernel>, wgpu::BindGroup),
    propose: Option<(Arc<Kernel>, wgpu::BindGroup)>,
    /// The guard's state (fallback point, last accepted point, L-BFGS pairs, lengths),
    /// for checkpoints.
    pub(crate) gmem: wgpu::Buffer,
    _buffers: Vec<wgpu::Buffer>,
}

impl Guard {
    /// Binds the fallback to a learned run's buffers (`bufs`: its x, f, ∇f and state).
    pub(crate) fn new(
        ctx: &GpuContext,
        kind: FallbackOf<'_>,
        gp: &GpuProblems,
        bufs: &StepBuffers<'_>,
    ) -> Result<Self> {
        let StepBuffers {
            opt_params: params,
            x,
            f,
            g,
            state,
            ..
        } = *bufs;
        let (np, n) = (gp.n_problems as usize, gp.n_total as usize);
        let guard = matches!(kind, FallbackOf::Guard(_));
        // The hybrid evaluates one candidate a step, in x: nothing reads these there.
        let ff = ctx.storage_zeroed("fallback f", if guard { np } else { 1 })?;
        let gf = ctx.storage_zeroed("fallback gradient", if guard { n } else { 1 })?;
        // x_F | previous accepted x | its g | two-loop vector | S | Y | first trial, τ.
        let gmem = ctx.storage_zeroed("guard vectors", (4 + 2 * cpu::GUARD_MEMORY) * n + 2 * np)?;
        let fallback = match kind {
            FallbackOf::Guard(o) => Some(o.bind(ctx, gp, &gmem, &ff, &gf)?),
            FallbackOf::Hybrid => None,
        };
        let source = compose("learned/guard.wgsl")?;
        let bind = |mode: GuardKernel| -> Result<(Arc<Kernel>, wgpu::BindGroup)> {
            let k = Kernel::with_constants(
                ctx,
                "learned/guard.wgsl",
                &source,
                &[("MODE", mode as u32 as f64)],
            )?;
            let group = k.bind(ctx, &[params, &gp.desc, f, g, x, &ff, &gf, &gmem, state]);
            Ok((k, group))
        };
        let (choice, propose) = match kind {
            FallbackOf::Guard(_) => (bind(GuardKernel::Guard)?, None),
            FallbackOf::Hybrid => (
                bind(GuardKernel::Hybrid)?,
                Some(bind(GuardKernel::Propose)?),
            ),
        };
        Ok(Self {
            fallback,
            choice,
            propose,
            gmem,
            _buffers: vec![ff, gf],
        })
    }

    /// Records what comes between the objective at the last candidate and the learned
    /// step: the guard's evaluation of the fallback, then the choice (the accepted point
    /// and the next fallback candidate).
    pub(crate) fn record(&self, pass: &mut wgpu::ComputePass<'_>, n: u32) {
        if let Some(fallback) = &self.fallback {
            fallback.record(pass);
        }
        self.choice.0.dispatch_problems(pass, &self.choice.1, n);
    }

    /// Stage `i` of [`Guard::record`]: the objective at the fallback candidate (the
    /// guard only), then the choice between the candidates and the next fallback.
    fn record_stage(&self, i: usize, pass: &mut wgpu::ComputePass<'_>, n: u32) {
        match (&self.fallback, i) {
            (Some(fallback), 0) => fallback.record(pass),
            _ => self.choice.0.dispatch_problems(pass, &self.choice.1, n),
        }
    }

    /// Records what comes after the learned step: the hybrid's fallback candidate put in
    /// x on the fallback's turns.
    pub(crate) fn record_after(&self, pass: &mut wgpu::ComputePass<'_>, n: u32) {
        if let Some((k, group)) = &self.propose {
            k.dispatch_problems(pass, group, n);
        }
    }

    /// Names of the stages [`Guard::record`] and [`Guard::record_after`] record, for
    /// profiles: (before the learned step, after it).
    pub(crate) fn stage_names(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        match &self.fallback {
            Some(_) => (vec!["objective (fallback)", "guard"], vec![]),
            None => (vec!["hybrid choice"], vec!["hybrid proposal"]),
        }
    }
}

/// What a [`Guard`] is built for: the loss guard, which evaluates its fallback itself
/// with the run's objective bound a second time, or the hybrid, whose one candidate a
/// step the run's own evaluation (or an embedding caller's kernel) evaluates in x.
pub(crate) enum FallbackOf<'a> {
    Guard(&'a dyn Evaluator),
    Hybrid,
}

impl<'a> FallbackOf<'a> {
    /// The fallback `guarding` asks for, with the run's `objective`.
    pub(crate) fn new(guarding: Guarding, objective: &'a dyn Evaluator) -> Self {
        match guarding {
            Guarding::Guard => FallbackOf::Guard(objective),
            Guarding::Hybrid => FallbackOf::Hybrid,
        }
    }
}

/// The three kernels of `learned/guard.wgsl` (its `MODE` constant).
#[derive(Clone, Copy)]
enum GuardKernel {
    Guard = 0,
    Hybrid = 1,
    Propose = 2,
}

/// A pass recorded between a learned optimizer's fallback choice and its step, with
/// its profile name (meta-training's meta-loss, which scores the accepted point).
pub(crate) type Between<'a> = Option<(&'static str, &'a dyn Fn(&mut wgpu::ComputePass<'_>))>;

/// A learned optimizer's work in a pass after the objective: its network, and for the
/// guarded and hybrid methods the L-BFGS fallback around it (its choice before the
/// step, the hybrid's proposal after). Runs, meta-training and embedding all record it
/// through here, so the order of the stages is written once.
pub(crate) struct LearnedStages {
    pub(crate) net: LearnedNet,
    pub(crate) guard: Option<Guard>,
}

impl LearnedStages {
    /// Records every stage, `between` after the fallback's choice.
    pub(crate) fn record(
        &self,
        kernels: &LearnedKernels,
        pass: &mut wgpu::ComputePass<'_>,
        n: u32,
        between: Between<'_>,
    ) {
        if let Some(guard) = &self.guard {
            guard.record(pass, n);
        }
        if let Some((_, record)) = between {
            record(pass);
        }
        self.net.record(kernels, pass, n);
        if let Some(guard) = &self.guard {
            guard.record_after(pass, n);
        }
    }

    /// Names of the stages [`LearnedStages::record`] records, for profiles.
    pub(crate) fn stage_names(&self, between: Between<'_>) -> Vec<&'static str> {
        let (before, after) = self
            .guard
            .as_ref()
            .map_or((vec![], vec![]), |g| g.stage_names());
        before
            .into_iter()
            .chain(between.map(|(name, _)| name))
            .chain(self.net.stage_names())
            .chain(after)
            .collect()
    }

    /// Records stage `k` of [`LearnedStages::stage_names`] alone.
    pub(crate) fn record_stage(
        &self,
        k: usize,
        kernels: &LearnedKernels,
        pass: &mut wgpu::ComputePass<'_>,
        n: u32,
        between: Between<'_>,
    ) {
        let before = self.guard.as_ref().map_or(0, |g| g.stage_names().0.len());
        if let Some(guard) = self.guard.as_ref().filter(|_| k < before) {
            return guard.record_stage(k, pass, n);
        }
        let mut k = k - before;
        if let Some((_, record)) = between {
            if k == 0 {
                return record(pass);
            }
            k -= 1;
        }
        match &self.guard {
            Some(guard) if k >= self.net.stage_names().len() => guard.record_after(pass, n),
            _ => self.net.record_stage(k, kernels, pass, n),
        }
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
        let (moffs, mat_total) = gp.square_offsets();
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
        let kernel = kernels.for_method(ctx, method, gp.max_dim())?;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        let (obj_binding, program, x, trial, buffers) = if method.is_quasi_newton() {
            // xe (evaluation point) starts at x0; vecs region 0 (x) too.
            let xe = ctx.storage_zeroed("trial point", n)?;
            let vecs = ctx.storage_zeroed("quasi-newton vectors", 6 * n)?;
            enc.copy_buffer_to_buffer(&gp.x0, 0, &xe, 0, (n * 4) as u64);
            enc.copy_buffer_to_buffer(&gp.x0, 0, &vecs, 0, (n * 4) as u64);
            let mat_len = if method == Method::Bfgs {
                mat_total
            } else {
                2 * config.memory as usize * n
            };
            let mat = ctx.storage_zeroed("curvature", mat_len)?;
            let ob = objective.bind(ctx, &gp, &xe, &f, &g)?;
            let group = kernel.bind(
                ctx,
                &[
                    &params, &gp.desc, &f, &g, &xe, &vecs, &state, &history, &mat,
                ],
            );
            (
                ob,
                Program::Classic(kernel, group),
                vecs,
                Some(xe),
                vec![mat, params, f, g],
            )
        } else if let Some(model) = &config.model {
            let x = ctx.storage_zeroed("x", n)?;
            enc.copy_buffer_to_buffer(&gp.x0, 0, &x, 0, (n * 4) as u64);
            let ob = objective.bind(ctx, &gp, &x, &f, &g)?;
            let bufs = StepBuffers {
                opt_params: &params,
                x: &x,
                f: &f,
                g: &g,
                state: &state,
                history: &history,
            };
            let guard = match method.guarding() {
                Some(guarding) => {
                    let kind = FallbackOf::new(guarding, objective);
                    Some(Guard::new(ctx, kind, &gp, &bufs)?)
                }
                None => None,
            };
            let net = LearnedNet::new(ctx, &kernels.learned, model, &gp, &bufs, None)?;
            (
                ob,
                Program::Learned(Box::new(LearnedStages { net, guard })),
                x,
                None,
                vec![params, f, g],
            )
        } else {
            let x = ctx.storage_zeroed("x", n)?;
            enc.copy_buffer_to_buffer(&gp.x0, 0, &x, 0, (n * 4) as u64);
            let vecs = ctx.storage_zeroed("moments", 2 * n)?;
            let ob = objective.bind(ctx, &gp, &x, &f, &g)?;
            let group = kernel.bind(
                ctx,
                &[&params, &gp.desc, &f, &g, &x, &vecs, &state, &history],
            );
            (
                ob,
                Program::Classic(kernel, group),
                x,
                None,
                vec![vecs, params, f, g],
            )
        };
        ctx.queue.submit([enc.finish()]);
        Ok(Self {
            kernels,
            config: config.clone(),
            problems: gp,
            steps,
            obj_binding,
            program,
            state,
            initial,
            history,
            x,
            trial,
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

    /// Submits `n` passes, in submits of [`PASSES_PER_SUBMIT`].
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

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::kernel::assert_wgsl_layout;

    /// The host's mirrors of the optimizer state and parameters match the WGSL structs.
    #[test]
    fn structs_match_their_wgsl() {
        assert_wgsl_layout!(
            OptState,
            "shared/opt_state.wgsl",
            "OptState",
            [
                status, iter, n_evals, phase, f, lr, moff, n_ls, a, f0, dg0, a_prev, f_prev,
                dg_prev, a_lo, f_lo, dg_lo, a_hi, f_hi, dg_hi, k, head, log_scale
            ]
        );
        assert_wgsl_layout!(
            OptParams,
            "shared/opt_state.wgsl",
            "OptParams",
            [n_problems, n_total, steps, variant, beta1, beta2, eps, gtol, memory]
        );
    }
}
