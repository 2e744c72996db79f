//! Batched simulation of motion windows on the GPU (`shaders/motion/`): the forward
//! pass stores every state, the adjoint pass walks them back into ∂L/∂θ. One invocation
//! owns one window, so windows run in parallel and never synchronize. Both passes are
//! split into dispatches of a few dozen steps where the driver limits loop iterations
//! per invocation (lavapipe).

use super::body::{Body, Measure, Target, Vector};
use super::sim::{Initial, SimConfig, Trajectory};
use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernel::{Bind, Kernel};
use glam::DVec3;

/// The motion kernels, built once.
pub struct MotionKernels {
    forward: Kernel,
    adjoint: Kernel,
}

impl MotionKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        use Bind::*;
        Ok(Self {
            forward: Kernel::from_shader(
                ctx,
                "motion/forward.wgsl",
                &[
                    Uniform, ReadOnly, ReadOnly, ReadOnly, ReadOnly, ReadWrite, ReadWrite,
                ],
            )?,
            adjoint: Kernel::from_shader(
                ctx,
                "motion/adjoint.wgsl",
                &[
                    Uniform, ReadOnly, ReadOnly, ReadOnly, ReadOnly, ReadOnly, ReadWrite, ReadWrite,
                ],
            )?,
        })
    }
}

const NONE: u32 = u32::MAX;
const WORKGROUP: u32 = 64;
/// Points a kernel holds in private memory (`MAX_POINTS` in body.wgsl).
const MAX_POINTS: usize = 24;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct GpuTerm {
    kind: u32,
    ends: [u32; 6],
    channel: u32,
    target: f32,
    kp: f32,
    kd: f32,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct SimParams {
    n_windows: u32,
    n_points: u32,
    n_terms: u32,
    n_channels: u32,
    keyframes: u32,
    steps_per_key: u32,
    n_steps: u32,
    n_params: u32,
    lo: u32,
    hi: u32,
    pad0: [u32; 2],
    dt: f32,
    gravity: f32,
    ground_k: f32,
    ground_soft: f32,
    ground_damp: f32,
    friction: f32,
    friction_speed: f32,
    pad1: f32,
}

fn encode(body: &Body) -> Vec<GpuTerm> {
    let ends = |v: &Vector| match *v {
        Vector::Points { from, to } => [from as u32, to as u32],
        Vector::Axis(a) => [NONE, a as u32],
    };
    body.terms
        .iter()
        .map(|t| {
            let mut e = [0u32; 6];
            let kind = match &t.measure {
                Measure::Length(u) => {
                    e[..2].copy_from_slice(&ends(u));
                    0
                }
                Measure::Cos(u, v) => {
                    e[..2].copy_from_slice(&ends(u));
                    e[2..4].copy_from_slice(&ends(v));
                    1
                }
                Measure::Triple(u, v, w) => {
                    e[..2].copy_from_slice(&ends(u));
                    e[2..4].copy_from_slice(&ends(v));
                    e[4..].copy_from_slice(&ends(w));
                    2
                }
                Measure::Midpoint { a, b, axis } => {
                    // from0, to0: the two points; to1: the axis (body.wgsl).
                    e[0] = *a as u32;
                    e[1] = *b as u32;
                    e[3] = *axis as u32;
                    3
                }
            };
            let (channel, target) = match t.target {
                Target::Fixed(q) => (NONE, q as f32),
                Target::Channel(c) => (c as u32, 0.0),
            };
            GpuTerm {
                kind,
                ends: e,
                channel,
                target,
                kp: t.kp as f32,
                kd: t.kd as f32,
                pad: 0,
            }
        })
        .collect()
}

/// Loop iterations per step of each pass (an upper bound: every term loops over at most
/// three vectors a few times), for splitting passes under the driver's limit.
fn iterations_per_step(body: &Body, adjoint: bool) -> u64 {
    let per_term = if adjoint { 36 } else { 16 };
    (per_term * body.terms.len() + 4 * body.masses.len() + 8) as u64
}

/// Step ranges (lo, hi) of the dispatches of one pass.
fn chunks(
    ctx: &GpuContext,
    body: &Body,
    cfg: &SimConfig,
    adjoint: bool,
) -> Result<Vec<(u32, u32)>> {
    let n = cfg.n_steps() as u32;
    let per = match ctx.loop_limit() {
        None => n,
        Some(limit) => {
            let fixed = (cfg.n_params(body) + 8 * body.masses.len()) as u64;
            let per = limit.saturating_sub(fixed) / iterations_per_step(body, adjoint);
            if per == 0 {
                return Err(Error::TooLarge(
                    "the body has too many terms for one step within this driver's loop limit"
                        .into(),
                ));
            }
            per.min(n as u64) as u32
        }
    };
    Ok((0..n.div_ceil(per))
        .map(|c| (c * per, ((c + 1) * per).min(n)))
        .collect())
}

/// P motion windows bound to a parameter buffer θ (P × n_params values, the optimizer's
/// x) and a gradient buffer of the same size.
pub struct GpuSim {
    pub n_windows: usize,
    pub n_points: usize,
    pub n_steps: usize,
    /// States: per window and n = 0 ..= N, positions then velocities.
    pub traj: wgpu::Buffer,
    /// ∂L/∂xₙ per window and state, written by the loss before the adjoint pass.
    pub seeds: wgpu::Buffer,
    /// Per window: 1 where a state left the finite range (diverged), else 0.
    pub status: wgpu::Buffer,
    forward: Vec<wgpu::BindGroup>,
    adjoint: Vec<wgpu::BindGroup>,
    _owned: Vec<wgpu::Buffer>,
}

impl GpuSim {
    pub fn new(
        ctx: &GpuContext,
        kernels: &MotionKernels,
        body: &Body,
        cfg: &SimConfig,
        init: &[Initial],
        theta: &wgpu::Buffer,
        grad: &wgpu::Buffer,
    ) -> Result<Self> {
        cfg.validate(body)?;
        let np = body.masses.len();
        if np > MAX_POINTS {
            return Err(Error::TooLarge(format!(
                "the body has {np} points; the kernels hold at most {MAX_POINTS}"
            )));
        }
        let p = init.len();
        if init.iter().any(|i| i.x.len() != np || i.v.len() != np) {
            return Err(Error::Problem(format!(
                "every window's initial state needs {np} positions and velocities"
            )));
        }
        let d = cfg.n_params(body);
        let need = (p * d * 4) as u64;
        if theta.size() < need || grad.size() < need {
            return Err(Error::Problem(format!(
                "θ and its gradient need {need} bytes for {p} windows of {d} parameters"
            )));
        }
        let n = cfg.n_steps();
        let mut flat_init = Vec::with_capacity(p * 6 * np);
        for w in init {
            for v in w.x.iter().chain(&w.v) {
                flat_init.extend(v.to_array().map(|c| c as f32));
            }
        }
        let terms = ctx.storage("motion terms", &encode(body))?;
        let inv_mass: Vec<f32> = body.masses.iter().map(|m| (1.0 / m) as f32).collect();
        let inv_mass = ctx.storage("motion inverse masses", &inv_mass)?;
        let init_buf = ctx.storage("motion initial states", &flat_init)?;
        let traj = ctx.storage_zeroed("motion trajectories", p * (n + 1) * 6 * np)?;
        let seeds = ctx.storage_zeroed("motion seeds", p * (n + 1) * 3 * np)?;
        let status = ctx.storage_zeroed("motion status", p)?;
        let adj = ctx.storage_zeroed("motion adjoint state", p * 6 * np)?;
        let base = SimParams {
            n_windows: p as u32,
            n_points: np as u32,
            n_terms: body.terms.len() as u32,
            n_channels: body.n_channels() as u32,
            keyframes: cfg.keyframes as u32,
            steps_per_key: cfg.steps_per_key as u32,
            n_steps: n as u32,
            n_params: d as u32,
            lo: 0,
            hi: 0,
            pad0: [0; 2],
            dt: cfg.dt as f32,
            gravity: cfg.gravity as f32,
            ground_k: cfg.ground_stiffness as f32,
            ground_soft: cfg.ground_softness as f32,
            ground_damp: cfg.ground_damping as f32,
            friction: cfg.friction as f32,
            friction_speed: cfg.friction_speed as f32,
            pad1: 0.0,
        };
        let mut owned = vec![
            terms.clone(),
            inv_mass.clone(),
            init_buf.clone(),
            adj.clone(),
        ];
        let mut uniform = |lo: u32, hi: u32| {
            let u = ctx.uniform("motion params", &SimParams { lo, hi, ..base });
            owned.push(u.clone());
            u
        };
        let forward = chunks(ctx, body, cfg, false)?
            .into_iter()
            .map(|(lo, hi)| {
                let u = uniform(lo, hi);
                kernels.forward.bind(
                    ctx,
                    &[&u, &terms, &inv_mass, theta, &init_buf, &traj, &status],
                )
            })
            .collect();
        let adjoint = chunks(ctx, body, cfg, true)?
            .into_iter()
            .rev()
            .map(|(lo, hi)| {
                let u = uniform(lo, hi);
                kernels.adjoint.bind(
                    ctx,
                    &[&u, &terms, &inv_mass, theta, &traj, &seeds, &adj, grad],
                )
            })
            .collect();
        Ok(Self {
            n_windows: p,
            n_points: np,
            n_steps: n,
            traj,
            seeds,
            status,
            forward,
            adjoint,
            _owned: owned,
        })
    }

    fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        kernel: &Kernel,
        groups: &[wgpu::BindGroup],
    ) {
        pass.set_pipeline(&kernel.pipeline);
        for g in groups {
            pass.set_bind_group(0, g, &[]);
            pass.dispatch_workgroups((self.n_windows as u32).div_ceil(WORKGROUP), 1, 1);
        }
    }

    /// Records the forward pass: every state of every window from θ.
    pub fn record_forward(&self, kernels: &MotionKernels, pass: &mut wgpu::ComputePass<'_>) {
        self.record(pass, &kernels.forward, &self.forward);
    }

    /// Records the adjoint pass: ∂L/∂θ into the gradient buffer from the seeds.
    pub fn record_adjoint(&self, kernels: &MotionKernels, pass: &mut wgpu::ComputePass<'_>) {
        self.record(pass, &kernels.adjoint, &self.adjoint);
    }

    /// Reads every window's trajectory back (tests, ground truth, pictures).
    pub fn read_trajectories(&self, ctx: &GpuContext) -> Result<Vec<Trajectory>> {
        let np = self.n_points;
        let per = (self.n_steps + 1) * 6 * np;
        let flat: Vec<f32> = ctx.read(&self.traj, self.n_windows * per)?;
        Ok(flat
            .chunks(per)
            .map(|w| {
                let mut t = Trajectory {
                    n_points: np,
                    x: Vec::with_capacity((self.n_steps + 1) * np),
                    v: Vec::with_capacity((self.n_steps + 1) * np),
                };
                for s in w.chunks(6 * np) {
                    let vec = |i: usize| DVec3::new(s[i] as f64, s[i + 1] as f64, s[i + 2] as f64);
                    t.x.extend((0..np).map(|i| vec(3 * i)));
                    t.v.extend((0..np).map(|i| vec(3 * (np + i))));
                }
                t
            })
            .collect())
    }
}
