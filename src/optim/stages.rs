//! A learned optimizer's stages in a pass: its network, and the L-BFGS fallback of
//! the guarded and hybrid methods.

use super::{cpu, Guarding};
use crate::context::GpuContext;
use crate::error::Result;
use crate::kernel::{compose, Kernel};
use crate::learned::gpu::{LearnedKernels, LearnedNet, StepBuffers};
use crate::objective::{Evaluation, Evaluator};
use crate::problem::GpuProblems;
use std::sync::Arc;

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
