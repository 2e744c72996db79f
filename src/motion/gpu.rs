//! Batched simulation of motion windows on the GPU (`shaders/motion/`): the forward
//! pass stores every state, the adjoint pass walks them back into ∂L/∂θ. One invocation
//! owns one window, so windows run in parallel and never synchronize. Both passes are
//! split into dispatches of a few dozen steps where the driver limits loop iterations
//! per invocation (lavapipe).

use super::body::Body;
use super::sim::{Initial, SimConfig, Trajectory};
use super::task::{TaskConfig, Window};
use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernel::{compose, Kernel};
use glam::DVec3;
use std::sync::Arc;

/// The motion kernels of one body and simulation config, built once: the forward and
/// adjoint passes are completed by code generated from the body ([`super::codegen`]).
pub struct MotionKernels {
    forward: Arc<Kernel>,
    adjoint: Arc<Kernel>,
    loss: Arc<Kernel>,
    finish: Arc<Kernel>,
}

impl MotionKernels {
    /// The kernels of `body` under `cfg` (each built once per device, in the kernel
    /// cache).
    pub fn new(ctx: &GpuContext, body: &Body, cfg: &SimConfig) -> Result<Self> {
        let fwd = format!(
            "{}\n{}",
            compose("motion/forward.wgsl")?,
            super::codegen::forward(body, cfg)
        );
        let adj = format!(
            "{}\n{}",
            compose("motion/adjoint.wgsl")?,
            super::codegen::adjoint(body)
        );
        Ok(Self {
            forward: Kernel::new(ctx, "motion/forward.wgsl", &fwd)?,
            adjoint: Kernel::new(ctx, "motion/adjoint.wgsl", &adj)?,
            loss: Kernel::from_shader(ctx, "motion/loss.wgsl")?,
            finish: Kernel::from_shader(ctx, "motion/finish.wgsl")?,
        })
    }
}

const WORKGROUP: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct SimParams {
    n_windows: u32,
    n_steps: u32,
    n_params: u32,
    steps_per_key: u32,
    keyframes: u32,
    lo: u32,
    hi: u32,
    pad0: u32,
    dt: f32,
    ground_k: f32,
    ground_soft: f32,
    ground_damp: f32,
    friction: f32,
    friction_speed: f32,
    pad1: [f32; 2],
}

/// One invocation per window, with the pipeline already set.
fn per_window(pass: &mut wgpu::ComputePass<'_>, group: &wgpu::BindGroup, n_windows: usize) {
    pass.set_bind_group(0, group, &[]);
    pass.dispatch_workgroups((n_windows as u32).div_ceil(WORKGROUP), 1, 1);
}

/// Loop iterations per step of each pass, an upper bound for splitting passes under the
/// driver's limit. The generated code and the term helpers are straight-line, so it is
/// loose by a wide margin; that costs only a few more dispatches of the step loop.
fn iterations_per_step(body: &Body, adjoint: bool) -> u64 {
    let per_term = if adjoint { 16 } else { 6 };
    (per_term * body.terms.len() + 8) as u64
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
            let fixed = cfg.n_params(body) as u64 + 8;
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
    pipelines: [wgpu::ComputePipeline; 2],
    _owned: Vec<wgpu::Buffer>,
}

/// A window's initial state in the kernels' layout: positions, then velocities.
fn flat_initial(init: &Initial) -> Vec<f32> {
    init.x
        .iter()
        .chain(&init.v)
        .flat_map(|v| v.to_array().map(|c| c as f32))
        .collect()
}

impl GpuSim {
    /// Initial states of `init` as a buffer for [`GpuSim::new`].
    pub fn initial_buffer(ctx: &GpuContext, body: &Body, init: &[Initial]) -> Result<wgpu::Buffer> {
        let np = body.masses.len();
        if init.iter().any(|i| i.x.len() != np || i.v.len() != np) {
            return Err(Error::Problem(format!(
                "every window's initial state needs {np} positions and velocities"
            )));
        }
        let flat: Vec<f32> = init.iter().flat_map(flat_initial).collect();
        ctx.storage("motion initial states", &flat)
    }

    /// P = `n_windows` windows whose initial states are in `init_buf`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        kernels: &MotionKernels,
        body: &Body,
        cfg: &SimConfig,
        n_windows: usize,
        init_buf: &wgpu::Buffer,
        theta: &wgpu::Buffer,
        grad: &wgpu::Buffer,
    ) -> Result<Self> {
        cfg.validate(body)?;
        let np = body.masses.len();
        let p = n_windows;
        if init_buf.size() < (p * 6 * np * 4) as u64 {
            return Err(Error::Problem(format!(
                "the initial-state buffer is too small for {p} windows"
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
        let traj = ctx.storage_zeroed("motion trajectories", p * (n + 1) * 6 * np)?;
        let seeds = ctx.storage_zeroed("motion seeds", p * (n + 1) * 3 * np)?;
        let status = ctx.storage_zeroed("motion status", p)?;
        let adj = ctx.storage_zeroed("motion adjoint state", p * 6 * np)?;
        let base = SimParams {
            n_windows: p as u32,
            n_steps: n as u32,
            n_params: d as u32,
            steps_per_key: cfg.steps_per_key as u32,
            keyframes: cfg.keyframes as u32,
            lo: 0,
            hi: 0,
            pad0: 0,
            dt: cfg.dt as f32,
            ground_k: cfg.ground_stiffness as f32,
            ground_soft: cfg.ground_softness as f32,
            ground_damp: cfg.ground_damping as f32,
            friction: cfg.friction as f32,
            friction_speed: cfg.friction_speed as f32,
            pad1: [0.0; 2],
        };
        let mut owned = vec![init_buf.clone(), adj.clone()];
        let mut uniform = |lo: u32, hi: u32| {
            let u = ctx.uniform("motion params", &SimParams { lo, hi, ..base });
            owned.push(u.clone());
            u
        };
        let forward = chunks(ctx, body, cfg, false)?
            .into_iter()
            .map(|(lo, hi)| {
                let u = uniform(lo, hi);
                kernels
                    .forward
                    .bind(ctx, &[&u, theta, init_buf, &traj, &status])
            })
            .collect();
        let adjoint = chunks(ctx, body, cfg, true)?
            .into_iter()
            .rev()
            .map(|(lo, hi)| {
                let u = uniform(lo, hi);
                kernels
                    .adjoint
                    .bind(ctx, &[&u, theta, &traj, &seeds, &adj, grad])
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
            pipelines: [
                kernels.forward.pipeline.clone(),
                kernels.adjoint.pipeline.clone(),
            ],
            _owned: owned,
        })
    }

    fn record(&self, pass: &mut wgpu::ComputePass<'_>, which: usize, groups: &[wgpu::BindGroup]) {
        pass.set_pipeline(&self.pipelines[which]);
        for g in groups {
            per_window(pass, g, self.n_windows);
        }
    }

    /// Dispatches per forward and per adjoint pass (more than one where the driver
    /// limits loop iterations per invocation).
    pub fn dispatches(&self) -> (usize, usize) {
        (self.forward.len(), self.adjoint.len())
    }

    /// Records the forward pass: every state of every window from θ.
    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.record(pass, 0, &self.forward);
    }

    /// Records the adjoint pass: ∂L/∂θ into the gradient buffer from the seeds.
    pub fn record_adjoint(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.record(pass, 1, &self.adjoint);
    }

    /// Reads every window's trajectory back (tests, ground truth, pictures).
    pub fn read_trajectories(&self, ctx: &GpuContext) -> Result<Vec<Trajectory>> {
        let (np, p) = (self.n_points, self.n_windows);
        let flat: Vec<f32> = ctx.read(&self.traj, (self.n_steps + 1) * 6 * np * p)?;
        // Window-minor: component j of window w at step n is [(n · 6 np + j) · P + w].
        let at = |w: usize, n: usize, j: usize| -> DVec3 {
            let i = |c: usize| flat[(n * 6 * np + j + c) * p + w] as f64;
            DVec3::new(i(0), i(1), i(2))
        };
        Ok((0..p)
            .map(|w| Trajectory {
                n_points: np,
                x: (0..=self.n_steps)
                    .flat_map(|n| (0..np).map(move |i| (n, 3 * i)))
                    .map(|(n, j)| at(w, n, j))
                    .collect(),
                v: (0..=self.n_steps)
                    .flat_map(|n| (0..np).map(move |i| (n, 3 * (np + i))))
                    .map(|(n, j)| at(w, n, j))
                    .collect(),
            })
            .collect())
    }

    /// Uploads ∂L/∂xₙ of every window (laid out like `Trajectory::x`), for running the
    /// adjoint pass on a loss of one's own.
    pub fn write_seeds(&self, ctx: &GpuContext, seeds: &[Vec<DVec3>]) -> Result<()> {
        let (np, p) = (self.n_points, self.n_windows);
        let per = (self.n_steps + 1) * np;
        if seeds.len() != p || seeds.iter().any(|s| s.len() != per) {
            return Err(Error::Problem(format!(
                "seeds: {p} windows of {per} point vectors expected"
            )));
        }
        let mut flat = vec![0f32; per * 3 * p];
        for (w, s) in seeds.iter().enumerate() {
            for (k, v) in s.iter().enumerate() {
                for c in 0..3 {
                    flat[(3 * k + c) * p + w] = v[c] as f32;
                }
            }
        }
        ctx.queue
            .write_buffer(&self.seeds, 0, bytemuck::cast_slice(&flat));
        Ok(())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LossParams {
    n_windows: u32,
    n_points: u32,
    n_obs: u32,
    obs_every: u32,
    n_steps: u32,
    pad: [u32; 2],
    s2: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FinishParams {
    n_windows: u32,
    n_params: u32,
    keyframes: u32,
    n_channels: u32,
    smooth_w: f32,
    limit_w: f32,
    pad: [u32; 2],
}

/// The motion reconstruction objective of a set of windows as an
/// [`Evaluator`](crate::objective::Evaluator): simulate, reproject, adjoint,
/// regularize. Any optimizer run binds it like the benchmark objective kernel.
///
/// The windows' data (initial states, observations, cameras) live in buffers of the
/// evaluator that every binding shares, so [`MotionEvaluator::write_window`] puts a
/// new window in a slot for all of them (meta-training resets).
pub struct MotionEvaluator {
    kernels: MotionKernels,
    body: Body,
    cfg: TaskConfig,
    n_windows: usize,
    init: wgpu::Buffer,
    obs: wgpu::Buffer,
    cameras: wgpu::Buffer,
}

/// A window's observations and camera in the kernels' layout (camera slot 3 holds
/// 1 / the number of seen joints).
fn flat_view(w: &Window) -> (Vec<f32>, [f32; 16]) {
    let obs = w.obs.iter().flat_map(|o| o.map(|v| v as f32)).collect();
    let mut cam = w.camera.to_gpu();
    let seen: f64 = w.obs.iter().map(|o| o[2]).sum();
    cam[3] = (1.0 / seen.max(1.0)) as f32;
    (obs, cam)
}

impl MotionEvaluator {
    pub fn new(ctx: &GpuContext, cfg: &TaskConfig, windows: &[Window]) -> Result<Self> {
        let body = Body::new(&cfg.gains);
        cfg.validate(&body)?;
        let mut obs = Vec::new();
        let mut cameras = Vec::new();
        for w in windows {
            let (o, c) = flat_view(w);
            obs.extend(o);
            cameras.extend(c);
        }
        let init: Vec<Initial> = windows.iter().map(|w| w.init.clone()).collect();
        Ok(Self {
            kernels: MotionKernels::new(ctx, &body, &cfg.sim)?,
            init: GpuSim::initial_buffer(ctx, &body, &init)?,
            obs: ctx.storage("motion observations", &obs)?,
            cameras: ctx.storage("motion cameras", &cameras)?,
            n_windows: windows.len(),
            body,
            cfg: cfg.clone(),
        })
    }

    /// The buffers that hold the windows, by name (meta-training checkpoints them).
    pub fn state_buffers(&self) -> Vec<(&'static str, &wgpu::Buffer)> {
        vec![
            ("motion_initial", &self.init),
            ("motion_observations", &self.obs),
            ("motion_cameras", &self.cameras),
        ]
    }

    /// Puts `w` in slot `slot` (queued writes: they land before the next submit). The
    /// optimizer's start point for the slot is the caller's to write.
    pub fn write_window(&self, ctx: &GpuContext, slot: usize, w: &Window) -> Result<()> {
        let np = self.body.masses.len();
        if slot >= self.n_windows || w.obs.len() != self.cfg.n_obs() * np {
            return Err(Error::Problem(format!(
                "slot {slot} of {} cannot take a window with {} observations",
                self.n_windows,
                w.obs.len()
            )));
        }
        let (obs, cam) = flat_view(w);
        let q = &ctx.queue;
        q.write_buffer(
            &self.init,
            (slot * 6 * np * 4) as u64,
            bytemuck::cast_slice(&flat_initial(&w.init)),
        );
        q.write_buffer(
            &self.obs,
            (slot * obs.len() * 4) as u64,
            bytemuck::cast_slice(&obs),
        );
        q.write_buffer(
            &self.cameras,
            (slot * 64) as u64,
            bytemuck::cast_slice(&cam),
        );
        Ok(())
    }
}

/// A [`MotionEvaluator`] bound to one parameter, value and gradient buffer.
pub struct MotionEvaluation {
    pub sim: GpuSim,
    pipelines: [wgpu::ComputePipeline; 2],
    loss: wgpu::BindGroup,
    finish: wgpu::BindGroup,
    _owned: Vec<wgpu::Buffer>,
}

impl crate::objective::Evaluation for MotionEvaluation {
    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        let n = self.sim.n_windows;
        self.sim.record_forward(pass);
        pass.set_pipeline(&self.pipelines[0]);
        per_window(pass, &self.loss, n);
        self.sim.record_adjoint(pass);
        pass.set_pipeline(&self.pipelines[1]);
        per_window(pass, &self.finish, n);
    }
}

impl MotionEvaluator {
    /// Binds to parameter buffer `x` (windows back to back), writing f and ∇f.
    pub fn bind_windows(
        &self,
        ctx: &GpuContext,
        x: &wgpu::Buffer,
        f: &wgpu::Buffer,
        grad: &wgpu::Buffer,
    ) -> Result<MotionEvaluation> {
        let n = self.n_windows;
        let sim = GpuSim::new(
            ctx,
            &self.kernels,
            &self.body,
            &self.cfg.sim,
            n,
            &self.init,
            x,
            grad,
        )?;
        let data = ctx.storage_zeroed("motion data term", n)?;
        let bounded: Vec<u32> = crate::motion::task::bounded_channels(&self.body)
            .into_iter()
            .map(u32::from)
            .collect();
        let bounded = ctx.storage("motion bounded channels", &bounded)?;
        let lp = ctx.uniform(
            "motion loss params",
            &LossParams {
                n_windows: n as u32,
                n_points: self.body.masses.len() as u32,
                n_obs: self.cfg.n_obs() as u32,
                obs_every: self.cfg.obs_every as u32,
                n_steps: self.cfg.sim.n_steps() as u32,
                pad: [0; 2],
                s2: (self.cfg.robust_scale * self.cfg.robust_scale) as f32,
            },
        );
        let fp = ctx.uniform(
            "motion finish params",
            &FinishParams {
                n_windows: n as u32,
                n_params: self.cfg.sim.n_params(&self.body) as u32,
                keyframes: self.cfg.sim.keyframes as u32,
                n_channels: self.body.n_channels() as u32,
                smooth_w: self.cfg.smooth_weight as f32,
                limit_w: self.cfg.limit_weight as f32,
                pad: [0; 2],
            },
        );
        let loss = self.kernels.loss.bind(
            ctx,
            &[&lp, &sim.traj, &self.obs, &self.cameras, &sim.seeds, &data],
        );
        let finish = self
            .kernels
            .finish
            .bind(ctx, &[&fp, x, &bounded, &data, &sim.status, f, grad]);
        Ok(MotionEvaluation {
            sim,
            pipelines: [
                self.kernels.loss.pipeline.clone(),
                self.kernels.finish.pipeline.clone(),
            ],
            loss,
            finish,
            _owned: vec![data, bounded, lp, fp],
        })
    }

    /// One optimizer problem per window, starting from its kinematic estimate.
    pub fn problems(windows: &[Window]) -> Vec<crate::problem::ProblemSpec> {
        windows
            .iter()
            .map(|w| crate::problem::ProblemSpec {
                objective: crate::problem::Objective::Pipeline(format!("motion:{}", w.source)),
                dim: w.x0.len(),
                scale: 1.0,
                width: 1.0,
                center: vec![0.0; w.x0.len()],
                rotation: None,
                x0: w.x0.clone(),
            })
            .collect()
    }
}

impl crate::objective::Evaluator for MotionEvaluator {
    fn bind(
        &self,
        ctx: &GpuContext,
        problems: &crate::problem::GpuProblems,
        x: &wgpu::Buffer,
        f: &wgpu::Buffer,
        grad: &wgpu::Buffer,
    ) -> Result<Box<dyn crate::objective::Evaluation>> {
        let d = self.cfg.sim.n_params(&self.body) as u32;
        if problems.n_problems as usize != self.n_windows || problems.dims.iter().any(|&p| p != d) {
            return Err(Error::Problem(format!(
                "the motion objective holds {} windows of {d} parameters; the batch has {} problems",
                self.n_windows,
                problems.n_problems
            )));
        }
        Ok(Box::new(self.bind_windows(ctx, x, f, grad)?))
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::kernel::assert_wgsl_layout;

    /// The motion kernels' parameter structs match their WGSL.
    #[test]
    fn params_match_their_wgsl() {
        assert_wgsl_layout!(
            SimParams,
            "motion/body.wgsl",
            "SimParams",
            [
                n_windows,
                n_steps,
                n_params,
                steps_per_key,
                keyframes,
                lo,
                hi,
                dt,
                ground_k,
                ground_soft,
                ground_damp,
                friction,
                friction_speed
            ]
        );
        assert_wgsl_layout!(
            LossParams,
            "motion/loss.wgsl",
            "LossParams",
            [n_windows, n_points, n_obs, obs_every, n_steps, s2]
        );
        assert_wgsl_layout!(
            FinishParams,
            "motion/finish.wgsl",
            "FinishParams",
            [n_windows, n_params, keyframes, n_channels, smooth_w, limit_w]
        );
    }
}
