//! The GPU side of PES meta-training (docs/DESIGN.md §2): a batch of particles in antithetic
//! pairs, each running the learned optimizer with its own perturbed weights on its own
//! persistent inner problem; the meta-loss summed per particle on the GPU; the gradient
//! estimate reduced on the GPU from regenerated noise; Adam on θ on the GPU. The host
//! only records passes, queues resets and reads back what it logs.

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::learned::gpu::{LearnedNet, Perturbation, StepBuffers};
use crate::learned::layout::NoiseLayout;
use crate::learned::layout::PackedLayout;
use crate::learned::model::Model;
use crate::objective::{Evaluation, Evaluator};
use crate::optim::{
    Between, FallbackOf, Guard, Guarding, Kernels, LearnedStages, OptParams, OptState,
};
use crate::problem::{GpuProblems, ProblemSpec};
use std::sync::Arc;

/// The PES kernels, built once.
pub struct PesKernels {
    noise: Arc<Kernel>,
    loss: Arc<Kernel>,
    coef: Arc<Kernel>,
    grad: Arc<Kernel>,
    stats: Arc<Kernel>,
    adam: Arc<Kernel>,
}

impl PesKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            noise: Kernel::from_shader(ctx, "pes/noise.wgsl")?,
            loss: Kernel::from_shader(ctx, "pes/loss.wgsl")?,
            coef: Kernel::from_shader(ctx, "pes/coef.wgsl")?,
            grad: Kernel::from_shader(ctx, "pes/grad.wgsl")?,
            stats: Kernel::from_shader(ctx, "pes/stats.wgsl")?,
            adam: Kernel::from_shader(ctx, "pes/adam.wgsl")?,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NoiseParams {
    n_pairs: u32,
    stride: u32,
    seed: u32,
    iteration: u32,
    n_active: u32,
    list: u32,
    list_off: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CoefParams {
    n_pairs: u32,
    n_slots: u32,
    first: u32,
    use_sign: u32,
    inv_k: f32,
    scale: f32,
    pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GradParams {
    n_quads: u32,
    n_pairs: u32,
    stride4: u32,
    slot: u32,
    n_tensors: u32,
    n_active: u32,
    list_off: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TensorNoise {
    offset4: u32,
    cols4: u32,
    quad_off: u32,
    matrix: u32,
    a_off4: u32,
    b_off4: u32,
    rows4: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamParams {
    n_elems: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    clip_norm: f32,
    c1: f32,
    c2: f32,
}

/// Settings of a [`PesEngine`] that stay fixed for a run.
#[derive(Clone, Debug)]
pub struct PesSettings {
    pub truncation: u32,
    pub horizon: u32,
    pub sigma: f32,
    pub seed: u32,
    pub loss_clip: f32,
    /// See `TrainConfig::soft_clip`.
    pub soft_clip: bool,
    /// Exponent p of the per-step meta-loss weight (see `TrainConfig::loss_ramp`).
    pub loss_ramp: f32,
    pub use_sign: bool,
    /// Every particle runs behind the loss guard or as the hybrid (see
    /// `TrainConfig::guard` and `TrainConfig::hybrid`).
    pub guarding: Option<Guarding>,
    pub beta1: f32,
    pub beta2: f32,
    pub adam_eps: f32,
    pub clip_norm: f32,
    /// Names or name prefixes of the tensors PES trains (empty: all).
    pub trainable: Vec<String>,
    /// Tasks may be rotated, so every particle's slot keeps room for a d×d rotation.
    pub rotations: bool,
}

impl PesSettings {
    /// Truncations whose noise can still be part of a pair's accumulated perturbation:
    /// a pair resets at least every `horizon` steps.
    pub fn window(&self) -> u32 {
        self.horizon.div_ceil(self.truncation) + 2
    }
}

/// What one meta-iteration reports, read back only when logging.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IterStats {
    /// ‖ĝ‖ before clipping.
    pub grad_norm: f64,
    /// Mean over particles of their truncation's mean meta-loss.
    pub train_loss: f64,
    /// Non-finite gradient entries (set to 0).
    pub nonfinite: u32,
}

fn grid(n: u32) -> [u32; 3] {
    let g = n.div_ceil(64).max(1);
    [g.min(65535), g.div_ceil(65535), 1]
}

/// Every GPU buffer of a PES run. Particles 2i and 2i + 1 are pair i (+ and −).
pub struct PesEngine<'a> {
    kernels: &'a Kernels,
    pes: &'a PesKernels,
    pub problems: GpuProblems,
    pub settings: PesSettings,
    pub packed: PackedLayout,
    pub noise_layout: NoiseLayout,
    pub n_pairs: u32,
    /// Packed θ and Adam's moments.
    pub theta: wgpu::Buffer,
    pub adam_m: wgpu::Buffer,
    pub adam_v: wgpu::Buffer,
    pub grad: wgpu::Buffer,
    pub noise: wgpu::Buffer,
    /// Per particle: meta-loss sums before / after its pair's reset this truncation.
    pub loss: wgpu::Buffer,
    /// Per particle: ln(f₀ + 1e-10) of its current horizon.
    pub logf0: wgpu::Buffer,
    phase: wgpu::Buffer,
    since: wgpu::Buffer,
    stats: wgpu::Buffer,
    /// Inner state: iterate, optimizer state, learned accumulators and B (in `stages`).
    pub x: wgpu::Buffer,
    pub state: wgpu::Buffer,
    /// The perturbed network (its accumulators and B are inner state) and, when the
    /// particles run behind the guard or as the hybrid, their L-BFGS fallback.
    stages: LearnedStages,
    initial_state: Vec<OptState>,
    obj_binding: Box<dyn Evaluation>,
    loss_group: wgpu::BindGroup,
    meta: MetaPasses,
    _keep: Vec<wgpu::Buffer>,
}

/// The meta-iteration's kernels bound to θ and its buffers: the noise draws (one
/// parameter block per credited truncation), the PES coefficients and gradient, the
/// statistics and meta-Adam.
struct MetaPasses {
    noise_params: Vec<wgpu::Buffer>,
    noise: Vec<wgpu::BindGroup>,
    grad_params: Vec<wgpu::Buffer>,
    grad: Vec<wgpu::BindGroup>,
    /// Per credited truncation (slot s at s · pairs), the pairs whose coefficient can be
    /// nonzero, ascending: those whose accumulated noise reaches back to it (all for the
    /// current one). The gradient draws and visits only these.
    live: wgpu::Buffer,
    coef_params: wgpu::Buffer,
    coef: wgpu::BindGroup,
    stats: wgpu::BindGroup,
    adam_params: wgpu::Buffer,
    adam: wgpu::BindGroup,
    /// Invocations of `pes/grad.wgsl` (16×4 weight blocks).
    n_quads: u32,
    _keep: Vec<wgpu::Buffer>,
}

/// The buffers [`MetaPasses`] binds, and the batch's pair and particle counts.
struct MetaBuffers<'b> {
    n_pairs: u32,
    n_particles: usize,
    mask: &'b wgpu::Buffer,
    theta: &'b wgpu::Buffer,
    adam_m: &'b wgpu::Buffer,
    adam_v: &'b wgpu::Buffer,
    grad: &'b wgpu::Buffer,
    noise: &'b wgpu::Buffer,
    loss: &'b wgpu::Buffer,
    since: &'b wgpu::Buffer,
    coef: &'b wgpu::Buffer,
    stats: &'b wgpu::Buffer,
}

/// The noise draw of truncation `iteration` for every pair.
fn all_pairs(n_pairs: u32, stride: u32, seed: u32, iteration: u32) -> NoiseParams {
    NoiseParams {
        n_pairs,
        stride,
        seed,
        iteration,
        n_active: n_pairs,
        list: 0,
        list_off: 0,
        pad: 0,
    }
}

impl MetaPasses {
    fn new(
        ctx: &GpuContext,
        pes: &PesKernels,
        s: &PesSettings,
        packed: &PackedLayout,
        noise_layout: &NoiseLayout,
        b: MetaBuffers<'_>,
    ) -> Result<Self> {
        let n_pairs = b.n_pairs;
        let window = s.window() as usize;
        let stride = noise_layout.stride as u32;
        let plen = packed.len;
        let live = ctx.storage_zeroed("live pairs", window * n_pairs as usize)?;
        let noise_params: Vec<wgpu::Buffer> = (0..window)
            .map(|_| ctx.uniform("noise params", &all_pairs(n_pairs, stride, s.seed, 0)))
            .collect();
        let noise_groups = noise_params
            .iter()
            .map(|p| pes.noise.bind(ctx, &[p, b.mask, b.noise, &live]))
            .collect();
        let (table, n_quads) = noise_table(packed, noise_layout);
        let table_buf = ctx.storage("noise table", &table)?;
        let mut keep = Vec::new();
        let grad_params: Vec<wgpu::Buffer> = (0..window)
            .map(|slot| {
                ctx.uniform(
                    "grad params",
                    &GradParams {
                        n_quads,
                        n_pairs,
                        stride4: stride / 4,
                        slot: slot as u32,
                        n_tensors: table.len() as u32,
                        n_active: 0,
                        list_off: slot as u32 * n_pairs,
                        pad: 0,
                    },
                )
            })
            .collect();
        let grad_groups = grad_params
            .iter()
            .map(|p| {
                pes.grad
                    .bind(ctx, &[p, &table_buf, b.noise, b.coef, b.grad, &live])
            })
            .collect();
        let coef_params = ctx.uniform(
            "coef params",
            &CoefParams {
                n_pairs,
                n_slots: 1,
                first: 0,
                use_sign: s.use_sign as u32,
                inv_k: 1.0 / s.truncation as f32,
                scale: 1.0 / (n_pairs as f32 * 2.0 * s.sigma),
                pad: [0; 2],
            },
        );
        let coef_group = pes.coef.bind(ctx, &[&coef_params, b.loss, b.since, b.coef]);
        let stats_params = ctx.uniform(
            "stats params",
            &[
                plen as u32,
                b.n_particles as u32,
                (1.0 / s.truncation as f32).to_bits(),
                0,
            ],
        );
        let stats_group = pes
            .stats
            .bind(ctx, &[&stats_params, b.grad, b.loss, b.stats]);
        let adam_params = ctx.uniform(
            "adam params",
            &AdamParams {
                n_elems: plen as u32,
                lr: 0.0,
                beta1: s.beta1,
                beta2: s.beta2,
                eps: s.adam_eps,
                clip_norm: s.clip_norm,
                c1: 1.0,
                c2: 1.0,
            },
        );
        let adam_group = pes.adam.bind(
            ctx,
            &[&adam_params, b.stats, b.grad, b.adam_m, b.adam_v, b.theta],
        );
        keep.extend([stats_params, table_buf]);
        Ok(Self {
            noise_params,
            noise: noise_groups,
            grad_params,
            grad: grad_groups,
            live,
            coef_params,
            coef: coef_group,
            stats: stats_group,
            adam_params,
            adam: adam_group,
            n_quads,
            _keep: keep,
        })
    }
}

impl<'a> PesEngine<'a> {
    /// A run of `model` (its weights are θ's start) on `specs`: particles in pairs, so
    /// `specs` holds each pair's task twice, back to back.
    pub fn new(
        ctx: &GpuContext,
        kernels: &'a Kernels,
        pes: &'a PesKernels,
        objective: &dyn Evaluator,
        model: &Model,
        specs: &[ProblemSpec],
        settings: PesSettings,
    ) -> Result<Self> {
        let packed = PackedLayout::new(&model.config);
        check_particles(ctx, specs.len(), &packed)?;
        let n_pairs = (specs.len() / 2) as u32;
        let np = specs.len();
        let problems = GpuProblems::with_slots(ctx, specs, settings.rotations)?;
        let n = problems.n_total as usize;
        let noise_layout = NoiseLayout::new(&packed, &settings.trainable)?;
        let stride = noise_layout.stride as u32;
        let s = &settings;
        let theta = ctx.storage("theta", &packed.pack(model))?;
        let plen = packed.len;
        let adam_m = ctx.storage_zeroed("adam m", plen)?;
        let adam_v = ctx.storage_zeroed("adam v", plen)?;
        let grad = ctx.storage_zeroed("meta-gradient", plen)?;
        let noise = ctx.storage_zeroed("noise", n_pairs as usize * stride as usize)?;
        let loss = ctx.storage_zeroed("meta-loss", 2 * np)?;
        let logf0 = ctx.storage_zeroed("log f0", np)?;
        let phase = ctx.storage_zeroed("reset phase", n_pairs as usize)?;
        let since = ctx.storage_zeroed("accumulation start", n_pairs as usize)?;
        let window = s.window() as usize;
        let coef = ctx.storage_zeroed("pes coefficients", window * n_pairs as usize)?;
        let stats = ctx.storage_zeroed("meta stats", 4)?;
        let mask = ctx.storage("noise mask", &noise_layout.mask)?;

        let x = ctx.storage_zeroed("x", n)?;
        let f = ctx.storage_zeroed("f", np)?;
        let g = ctx.storage_zeroed("gradient", n)?;
        let (moffs, _) = problems.square_offsets();
        let initial_state: Vec<OptState> = moffs
            .iter()
            .map(|&moff| OptState {
                moff,
                ..Default::default()
            })
            .collect();
        let state = ctx.storage("optimizer state", &initial_state)?;
        let history = ctx.storage_zeroed("history", 2 * np * (s.horizon as usize + 2))?;
        let opt_params = ctx.uniform(
            "optimizer params",
            &OptParams::learned(np as u32, n as u32, s.horizon + 1),
        );
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&problems.x0, 0, &x, 0, (n * 4) as u64);
        ctx.queue.submit([enc.finish()]);
        let obj_binding = objective.bind(ctx, &problems, &x, &f, &g)?;

        let bufs = StepBuffers {
            opt_params: &opt_params,
            x: &x,
            f: &f,
            g: &g,
            state: &state,
            history: &history,
        };
        let pert = Perturbation {
            theta: &theta,
            noise: &noise,
            layout: &noise_layout,
            sigma: s.sigma,
        };
        let guard = s
            .guarding
            .map(|g| Guard::new(ctx, FallbackOf::new(g, objective), &problems, &bufs))
            .transpose()?;
        let net = LearnedNet::new(ctx, &kernels.learned, model, &problems, &bufs, Some(&pert))?;

        let loss_params = ctx.uniform(
            "loss params",
            &[
                np as u32,
                s.loss_clip.to_bits(),
                s.horizon,
                s.loss_ramp.to_bits(),
                s.soft_clip as u32,
                0,
                0,
                0,
            ],
        );
        let loss_group = pes
            .loss
            .bind(ctx, &[&loss_params, &f, &state, &phase, &logf0, &loss]);
        let meta = MetaPasses::new(
            ctx,
            pes,
            s,
            &packed,
            &noise_layout,
            MetaBuffers {
                n_pairs,
                n_particles: np,
                mask: &mask,
                theta: &theta,
                adam_m: &adam_m,
                adam_v: &adam_v,
                grad: &grad,
                noise: &noise,
                loss: &loss,
                since: &since,
                coef: &coef,
                stats: &stats,
            },
        )?;
        let keep = vec![loss_params, mask, coef, f, g, history, opt_params];
        Ok(Self {
            kernels,
            pes,
            problems,
            settings,
            packed,
            noise_layout,
            n_pairs,
            theta,
            adam_m,
            adam_v,
            grad,
            noise,
            loss,
            logf0,
            phase,
            since,
            stats,
            x,
            state,
            stages: LearnedStages { net, guard },
            initial_state,
            obj_binding,
            loss_group,
            meta,
            _keep: keep,
        })
    }

    /// Truncations credited at iteration `n`: k = first ..= n.
    fn credited(&self, n: u32) -> (u32, u32) {
        let first = (n + 1).saturating_sub(self.settings.window());
        (first, n - first + 1)
    }

    /// Starts truncation `n`: draws its noise, clears the loss sums and reset phases.
    /// Resets queued after this land before the first step.
    pub fn begin_truncation(&self, ctx: &GpuContext, n: u32) {
        let slot = (self.credited(n).1 - 1) as usize;
        let stride = self.noise_layout.stride as u32;
        let p = all_pairs(self.n_pairs, stride, self.settings.seed, n);
        ctx.queue
            .write_buffer(&self.meta.noise_params[slot], 0, bytemuck::bytes_of(&p));
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&self.loss, 0, None);
        enc.clear_buffer(&self.phase, 0, None);
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            self.record_noise(&mut pass, slot, self.n_pairs);
        }
        ctx.queue.submit([enc.finish()]);
    }

    /// Draws slot `slot`'s noise for `pairs` pairs (all, or its live list).
    fn record_noise(&self, pass: &mut wgpu::ComputePass<'_>, slot: usize, pairs: u32) {
        let stride = self.noise_layout.stride as u32;
        pass.set_pipeline(&self.pes.noise.pipeline);
        pass.set_bind_group(0, &self.meta.noise[slot], &[]);
        pass.dispatch_workgroups(stride.div_ceil(64), pairs, 1);
    }

    /// Puts pair `i` on `spec` (both particles) from a fresh start: new problem, x₀,
    /// optimizer state, accumulators and B = I; its later steps of this truncation count
    /// as after the reset. Queued writes, applied before the next submit.
    pub fn reset_pair(&self, ctx: &GpuContext, i: usize, spec: &ProblemSpec) -> Result<()> {
        let q = &ctx.queue;
        for p in [2 * i, 2 * i + 1] {
            self.problems.write_problem(ctx, p, spec)?;
            let x0: Vec<f32> = spec.x0.iter().map(|&v| v as f32).collect();
            q.write_buffer(
                &self.x,
                self.problems.offsets[p] as u64 * 4,
                bytemuck::cast_slice(&x0),
            );
            q.write_buffer(
                &self.state,
                (p * std::mem::size_of::<OptState>()) as u64,
                bytemuck::bytes_of(&self.initial_state[p]),
            );
            self.stages
                .net
                .reset_problem(ctx, &self.problems, p, self.initial_state[p].moff);
        }
        q.write_buffer(&self.phase, i as u64 * 4, bytemuck::bytes_of(&1u32));
        Ok(())
    }

    /// Submits `k` inner steps of every particle: objective, the guard's or the hybrid's
    /// choice (with `guarding`), meta-loss, learned step, the hybrid's proposal.
    pub fn steps(&self, ctx: &GpuContext, k: u32) {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            let np = self.problems.n_problems;
            let loss = |pass: &mut wgpu::ComputePass<'_>| self.record_loss(pass);
            for _ in 0..k {
                self.obj_binding.record(&mut pass);
                self.stages.record(
                    &self.kernels.learned,
                    &mut pass,
                    np,
                    Some(("meta-loss", &loss)),
                );
            }
        }
        ctx.queue.submit([enc.finish()]);
    }

    /// Times one perturbed step of every particle kernel by kernel (timestamp queries):
    /// objective, the guard's or the hybrid's choice (with `guarding`), meta-loss, the
    /// network's stages, the hybrid's proposal. None without timestamps.
    pub fn profile_step(&self, ctx: &GpuContext) -> Result<Option<Vec<(String, f64)>>> {
        let np = self.problems.n_problems;
        let loss = |pass: &mut wgpu::ComputePass<'_>| self.record_loss(pass);
        let between: Between<'_> = Some(("meta-loss", &loss));
        let mut names = vec!["objective"];
        names.extend(self.stages.stage_names(between));
        ctx.profile(&names, |k, pass| match k {
            0 => self.obj_binding.record(pass),
            k => self
                .stages
                .record_stage(k - 1, &self.kernels.learned, pass, np, between),
        })
    }

    /// Names of a perturbed step's stages after the objective, in recording order.
    pub fn stage_names(&self) -> Vec<&'static str> {
        let loss = |pass: &mut wgpu::ComputePass<'_>| self.record_loss(pass);
        self.stages.stage_names(Some(("meta-loss", &loss)))
    }

    /// The meta-loss pass: every particle's loss at its accepted point into its pair's
    /// sums.
    fn record_loss(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pes.loss.pipeline);
        pass.set_bind_group(0, &self.loss_group, &[]);
        let gr = grid(self.problems.n_problems);
        pass.dispatch_workgroups(gr[0], gr[1], 1);
    }

    /// Ends truncation `n`: the PES estimate from the particles' meta-losses, `since`
    /// (per pair, the truncation its accumulated perturbation starts at), and the noise
    /// of every credited truncation drawn again; then its norm and the training loss,
    /// and one Adam step with learning rate `lr` (the `t`-th, from 1).
    pub fn finish_truncation(&self, ctx: &GpuContext, n: u32, since: &[u32], lr: f64, t: u32) {
        let (first, slots) = self.credited(n);
        ctx.queue
            .write_buffer(&self.since, 0, bytemuck::cast_slice(since));
        let counts = self.write_live(ctx, first, slots, since);
        let s = &self.settings;
        let cp = CoefParams {
            n_pairs: self.n_pairs,
            n_slots: slots,
            first,
            use_sign: s.use_sign as u32,
            inv_k: 1.0 / s.truncation as f32,
            scale: 1.0 / (self.n_pairs as f32 * 2.0 * s.sigma),
            pad: [0; 2],
        };
        ctx.queue
            .write_buffer(&self.meta.coef_params, 0, bytemuck::bytes_of(&cp));
        let ap = AdamParams {
            n_elems: self.packed.len as u32,
            lr: lr as f32,
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.adam_eps,
            clip_norm: s.clip_norm,
            c1: (1.0 - (s.beta1 as f64).powi(t as i32)) as f32,
            c2: (1.0 - (s.beta2 as f64).powi(t as i32)) as f32,
        };
        ctx.queue
            .write_buffer(&self.meta.adam_params, 0, bytemuck::bytes_of(&ap));
        let plen = self.packed.len as u32;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&self.grad, 0, None);
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pes.coef.pipeline);
            pass.set_bind_group(0, &self.meta.coef, &[]);
            pass.dispatch_workgroups(self.n_pairs.div_ceil(64), 1, 1);
            let gq = grid(self.meta.n_quads);
            for (slot, &count) in counts.iter().enumerate() {
                if count == 0 {
                    continue;
                }
                self.record_noise(&mut pass, slot, count);
                pass.set_pipeline(&self.pes.grad.pipeline);
                pass.set_bind_group(0, &self.meta.grad[slot], &[]);
                pass.dispatch_workgroups(gq[0], gq[1], 1);
            }
            let gr = grid(plen);
            pass.set_pipeline(&self.pes.stats.pipeline);
            pass.set_bind_group(0, &self.meta.stats, &[]);
            pass.dispatch_workgroups(1, 1, 1);
            pass.set_pipeline(&self.pes.adam.pipeline);
            pass.set_bind_group(0, &self.meta.adam, &[]);
            pass.dispatch_workgroups(gr[0], gr[1], 1);
        }
        ctx.queue.submit([enc.finish()]);
    }

    /// Queues, for each credited truncation k = first + s, the ascending list of pairs
    /// whose coefficient can be nonzero (since_i ≤ k, or every pair at k = n: the
    /// coefficient rule of `pes/coef.wgsl`) and the noise and gradient parameters that
    /// draw and visit only those; returns the list lengths. Leaving out pairs whose
    /// coefficient is exactly 0 leaves every sum as it was (about half the pairs at a
    /// long run's horizon, and none for the oldest slots).
    fn write_live(&self, ctx: &GpuContext, first: u32, slots: u32, since: &[u32]) -> Vec<u32> {
        let n = first + slots - 1;
        let np = self.n_pairs;
        let stride = self.noise_layout.stride as u32;
        let q = &ctx.queue;
        let mut lists = Vec::with_capacity((slots * np) as usize);
        let mut counts = Vec::with_capacity(slots as usize);
        for s in 0..slots {
            let k = first + s;
            let start = lists.len();
            lists.extend((0..np).filter(|&i| k == n || since[i as usize] <= k));
            let count = (lists.len() - start) as u32;
            lists.resize((s + 1) as usize * np as usize, 0);
            counts.push(count);
            let noise = NoiseParams {
                n_active: count,
                list: 1,
                list_off: s * np,
                ..all_pairs(np, stride, self.settings.seed, k)
            };
            q.write_buffer(
                &self.meta.noise_params[s as usize],
                0,
                bytemuck::bytes_of(&noise),
            );
            q.write_buffer(
                &self.meta.grad_params[s as usize],
                std::mem::offset_of!(GradParams, n_active) as u64,
                bytemuck::cast_slice(&[count, s * np]),
            );
        }
        q.write_buffer(&self.meta.live, 0, bytemuck::cast_slice(&lists));
        counts
    }

    /// The last meta-iteration's gradient norm, training loss and non-finite count.
    pub fn stats(&self, ctx: &GpuContext) -> Result<IterStats> {
        let v: Vec<f32> = ctx.read(&self.stats, 3)?;
        Ok(IterStats {
            grad_norm: (v[0] as f64).sqrt(),
            train_loss: v[1] as f64,
            nonfinite: v[2] as u32,
        })
    }

    /// Buffers that make up the run's state, by name, for checkpoints: θ, Adam, and
    /// every particle's inner problem and optimizer state.
    pub fn state_buffers(&self) -> Vec<(&'static str, &wgpu::Buffer)> {
        vec![
            ("theta", &self.theta),
            ("adam_m", &self.adam_m),
            ("adam_v", &self.adam_v),
            ("x", &self.x),
            ("state", &self.state),
            ("logf0", &self.logf0),
            ("accumulators", &self.stages.net.acc),
            ("preconditioner", &self.stages.net.mat),
            ("problems", &self.problems.desc),
            ("center", &self.problems.center),
            ("rotations", &self.problems.rot),
            ("x0", &self.problems.x0),
        ]
        .into_iter()
        .chain(self.stages.guard.iter().map(|g| ("guard", &g.gmem)))
        .collect()
    }
}

/// Refuses a particle count PES cannot run: odd or zero (antithetic pairs), more pairs
/// than one dispatch row holds, or, on llvmpipe, more than its loop limit lets the
/// gradient reduction visit in one invocation.
fn check_particles(ctx: &GpuContext, np: usize, packed: &PackedLayout) -> Result<()> {
    if np == 0 || !np.is_multiple_of(2) {
        return Err(Error::Config(format!(
            "PES needs an even number of particles (antithetic pairs), got {np}"
        )));
    }
    let n_pairs = np / 2;
    if n_pairs > 65535 {
        return Err(Error::TooLarge(format!(
            "{np} particles; at most {} per run (65535 pairs)",
            2 * 65535
        )));
    }
    if let Some(limit) = ctx.loop_limit() {
        // `pes/grad.wgsl` loops over every pair in one invocation.
        if (n_pairs as u64 + packed.tensors.len() as u64) > limit {
            return Err(Error::TooLarge(format!(
                "{np} particles need {n_pairs} loop iterations per invocation in the \
                 gradient reduction; this driver (llvmpipe) stops an invocation after \
                 {limit}. Use a smaller --batch or a GPU"
            )));
        }
    }
    Ok(())
}

/// Per tensor, where `pes/grad.wgsl` finds its weights and noise, in vec4s, and where
/// its blocks of 16×4 weights (4 entries of a vector) start; and the number of blocks.
/// Packed rows are padded to 4 and columns to 8, so every offset is a multiple of 4.
fn noise_table(packed: &PackedLayout, layout: &NoiseLayout) -> (Vec<TensorNoise>, u32) {
    let mut n_quads = 0u32;
    let table = packed
        .tensors
        .iter()
        .zip(&layout.slots)
        .map(|(t, sl)| {
            let quad_off = n_quads;
            // A matrix's blocks are 16 rows × 4 columns, a vector's 4 entries.
            let row_blocks = match sl.matrix {
                true => t.rows_p.div_ceil(16),
                false => t.rows_p.div_ceil(4),
            };
            n_quads += (row_blocks * t.cols_p / 4) as u32;
            TensorNoise {
                offset4: (t.offset / 4) as u32,
                cols4: (t.cols_p / 4) as u32,
                quad_off,
                matrix: sl.matrix as u32,
                a_off4: (sl.a_off / 4) as u32,
                b_off4: (sl.b_off / 4) as u32,
                rows4: (t.rows_p / 4) as u32,
                pad: 0,
            }
        })
        .collect();
    (table, n_quads)
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::kernel::assert_wgsl_layout;

    /// The PES kernels' parameter structs match their WGSL.
    #[test]
    fn params_match_their_wgsl() {
        assert_wgsl_layout!(
            NoiseParams,
            "pes/noise.wgsl",
            "NoiseParams",
            [n_pairs, stride, seed, iteration, n_active, list, list_off]
        );
        assert_wgsl_layout!(
            CoefParams,
            "pes/coef.wgsl",
            "CoefParams",
            [n_pairs, n_slots, first, use_sign, inv_k, scale]
        );
        assert_wgsl_layout!(
            GradParams,
            "pes/grad.wgsl",
            "GradParams",
            [n_quads, n_pairs, stride4, slot, n_tensors, n_active, list_off]
        );
        assert_wgsl_layout!(
            TensorNoise,
            "pes/grad.wgsl",
            "TensorNoise",
            [offset4, cols4, quad_off, matrix, a_off4, b_off4, rows4]
        );
        assert_wgsl_layout!(
            AdamParams,
            "pes/adam.wgsl",
            "AdamParams",
            [n_elems, lr, beta1, beta2, eps, clip_norm, c1, c2]
        );
    }
}
