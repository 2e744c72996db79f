//! GPU stages of one learned-optimizer step, for every problem of a batch at once:
//! features (`features.wgsl`) → token embedding and Transformer blocks (`linear.wgsl`,
//! `layernorm.wgsl`, `attention.wgsl`) or LOpt's per-dimension MLP → output heads →
//! step and preconditioner (`step.wgsl`). Tokens of all problems are stored back to back,
//! so linear layers and LayerNorms run over all tokens at once; attention is masked to
//! each problem by working on one problem's query block per workgroup.
//!
//! All buffers and bind groups are made once in [`LearnedNet::new`]; recording a step
//! only records dispatches.

use super::attention::AttentionKernels;
use super::layout::{round4, round8, NoiseLayout, PackedLayout};
use super::linear::{
    LinearKernels, Tiling, BLOCK_ROWS, NORMALIZED, PERTURBED, PERTURBED_NORM, RELU, RESIDUAL,
};
use super::model::{Model, ModelConfig, ModelKind, StepRule};
use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernel::{compose, lanes_for, Kernel};
use crate::problem::GpuProblems;
use std::sync::Arc;

/// Queries per attention block, and rows per preconditioner workgroup.
const ATTN_BLOCK: u32 = super::attention::BLOCK;
/// Largest head width the attention kernels hold in registers (`MAX_HEAD4` vec4s).
pub const MAX_HEAD_WIDTH: usize = 32;
const MAX_GROUPS: u32 = 65535;

/// The learned optimizers' kernels, built once.
pub struct LearnedKernels {
    /// `features.wgsl`, composed; each net builds it with its batch's `WG`.
    features: String,
    linear: LinearKernels,
    layernorm: Arc<Kernel>,
    /// Attention pipelines by head width, built on first use: a constant head width
    /// lets the loops over it unroll into registers (measured 2x faster on lavapipe).
    attention: AttentionKernels,
    /// `step.wgsl`, composed; each net builds it with its batch's `WG`.
    step: String,
    /// `precondition.wgsl`, composed; each net builds it for its batch's row blocks.
    precondition: String,
    /// x·a of the rank-one perturbations (meta-training only).
    project: Arc<Kernel>,
}

impl LearnedKernels {
    /// The kernels, with the linear layers and attention laid out for `ctx`'s device.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Self::with_tiling(ctx, Tiling::for_device(ctx))
    }

    /// The kernels with a chosen layout of the linear layers and attention (tests run
    /// both).
    pub fn with_tiling(ctx: &GpuContext, tiling: Tiling) -> Result<Self> {
        if tiling == Tiling::Lanes && !super::linear::lanes_supported(ctx) {
            return Err(Error::Gpu(
                "the lane kernels need subgroup operations with subgroups of at least 8 \
                 invocations, which this device lacks; use the block layout"
                    .into(),
            ));
        }
        Ok(Self {
            project: Kernel::from_shader(ctx, "pes/project.wgsl")?,
            features: compose("learned/features.wgsl")?,
            linear: LinearKernels::new(tiling)?,
            layernorm: Kernel::from_shader(ctx, "learned/layernorm.wgsl")?,
            attention: AttentionKernels::new(tiling)?,
            precondition: compose("learned/precondition.wgsl")?,
            step: compose("learned/step.wgsl")?,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearParams {
    n_rows: u32,
    in4: u32,
    out4: u32,
    w_off4: u32,
    b_off4: u32,
    ln_g_off4: u32,
    nb_off4: u32,
    ne_off4: u32,
    stride4: u32,
    sigma: f32,
    ln_b_off4: u32,
    na_off4: u32,
    ln_ng_off4: u32,
    ln_nb_off4: u32,
    pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ProjectParams {
    n_rows: u32,
    in4: u32,
    a_off4: u32,
    stride4: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LnParams {
    n_tokens: u32,
    n4: u32,
    g_off4: u32,
    b_off4: u32,
    ng_off4: u32,
    nb_off4: u32,
    stride4: u32,
    sigma: f32,
    a_off4: u32,
    pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttnParams {
    n_blocks: u32,
    width: u32,
    heads: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FeatParams {
    n_problems: u32,
    n_total: u32,
    secant: u32,
    prev_off: u32,
    n_features: u32,
    stride: u32,
    diagonal: u32,
    metric_off: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LearnedParams {
    out_stride: u32,
    precondition: u32,
    scratch_off: u32,
    scale_col: u32,
    lambda_mu: f32,
    lambda_s: f32,
    lambda_u: f32,
    lambda_scale: f32,
    secant: u32,
    absolute: u32,
    abs_col: u32,
    unit_first: u32,
    quasi_newton: u32,
    diagonal: u32,
    metric_off: u32,
    pad: u32,
}

/// What a linear layer's input went through before it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input<'n> {
    /// Nothing: the layer reads it as it is.
    Plain,
    /// LayerNorm `n`, fused into the layer (lane kernels).
    Fused(&'n str),
    /// A LayerNorm pass (only before block kernels), which when perturbed also wrote the
    /// projection x·a.
    Normalized,
}

#[derive(Clone, Copy)]
enum Stage {
    Features,
    /// A linear layer, named by its tensor without the block index (for profiles), and
    /// its pipeline in `LearnedNet::linear`.
    Linear(&'static str, usize),
    /// x·a for the next linear layer's perturbation.
    Project,
    /// A LayerNorm pass (before a block kernel; perturbed, it also writes the next
    /// layer's projection x·a).
    LayerNorm,
    Attention,
    Step,
    Precondition,
}

/// Buffers the step shares with the optimizer run that owns it.
pub struct StepBuffers<'a> {
    /// Uniform `OptParams` of the run.
    pub opt_params: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub f: &'a wgpu::Buffer,
    pub g: &'a wgpu::Buffer,
    pub state: &'a wgpu::Buffer,
    pub history: &'a wgpu::Buffer,
}

/// Per-particle weights for meta-training (PES): particle p of the batch runs
/// θ + σ ε_{p/2} when p is even and θ − σ ε_{p/2} when odd, ε being its antithetic pair's
/// perturbation (rank one per weight matrix, full for vectors) as `noise` holds it in
/// `layout`. One shared matmul per layer plus an O(in + out) correction per token,
/// instead of a copy of θ per particle.
pub struct Perturbation<'a> {
    /// Packed θ, owned and updated by the trainer (the model's weights are not used).
    pub theta: &'a wgpu::Buffer,
    pub noise: &'a wgpu::Buffer,
    pub layout: &'a NoiseLayout,
    pub sigma: f32,
}

/// One learned optimizer bound to one batch.
pub struct LearnedNet {
    ops: Vec<(Stage, wgpu::BindGroup, [u32; 3])>,
    /// Pipelines of the linear layers.
    linear: Vec<Arc<Kernel>>,
    /// The attention pipeline the step uses (transformers only).
    attention: Option<Arc<Kernel>>,
    /// The features and step pipelines, with as few invocations per problem as the
    /// batch allows ([`crate::kernel::lanes_for`]; the results do not depend on it).
    features: Arc<Kernel>,
    step: Arc<Kernel>,
    /// The preconditioner's pipeline (Optimus), with as many invocations per block as
    /// the batch's largest problem fills.
    preconditioner: Option<Arc<Kernel>>,
    /// Accumulators and preconditioner with their initial contents, for `reset`.
    pub(crate) acc: wgpu::Buffer,
    pub(crate) mat: wgpu::Buffer,
    mat_init: Vec<f32>,
    /// Whether `mat` starts with every problem's B (Optimus).
    precondition: bool,
    /// The packed weights when the net holds its own (not under a perturbation).
    own_theta: Option<wgpu::Buffer>,
    _buffers: Vec<wgpu::Buffer>,
}

fn grid_1d(n: u32) -> [u32; 3] {
    let n = n.max(1);
    [n.min(MAX_GROUPS), n.div_ceil(MAX_GROUPS), 1]
}

/// Blocks of up to 64 coordinates of one problem, as [first coordinate, d, first row,
/// problem]: the work items of attention's queries and of the preconditioner's rows.
fn attention_blocks(problems: &GpuProblems) -> Vec<[u32; 4]> {
    let mut blocks = Vec::new();
    for (p, (&off, &d)) in problems.offsets.iter().zip(&problems.dims).enumerate() {
        for start in (0..d).step_by(ATTN_BLOCK as usize) {
            blocks.push([off, d, start, p as u32]);
        }
    }
    blocks
}

impl LearnedNet {
    /// Binds `model` to `problems`. `state` must hold each problem's `moff`: the start of
    /// its d×d block of the preconditioner storage (Optimus), as
    /// [`GpuProblems::square_offsets`] lays them out.
    pub fn new(
        ctx: &GpuContext,
        kernels: &LearnedKernels,
        model: &Model,
        problems: &GpuProblems,
        bufs: &StepBuffers<'_>,
        perturb: Option<&Perturbation<'_>>,
    ) -> Result<Self> {
        let cfg = &model.config;
        cfg.validate()?;
        let (rows, head) = check_fits(ctx, kernels, cfg, problems)?;
        let n = problems.n_total;
        let layout = PackedLayout::new(cfg);
        let own_theta = match perturb {
            Some(_) => None,
            None => Some(ctx.storage("theta", &layout.pack(model))?),
        };
        let theta = perturb.map_or_else(
            || {
                own_theta
                    .as_ref()
                    .expect("made above when there is no perturbation")
            },
            |p| p.theta,
        );
        let (nu, ru) = (n as usize, rows as usize);
        let acts = Activations::new(ctx, cfg, ru)?;
        let acc = ctx.storage_zeroed("accumulators", 7 * nu)?;
        let pert = perturb
            .map(|p| PertBuffers::new(ctx, p, problems, ru))
            .transpose()?;
        let dummy = ctx.storage_zeroed("no perturbation", 4)?;
        let dummy_out = ctx.storage_zeroed("no projection", 4)?;
        let mut b = Builder {
            ctx,
            kernels,
            layout: &layout,
            theta,
            pert: pert.as_ref(),
            dummy: &dummy,
            dummy_out: &dummy_out,
            n,
            rows,
            linear: Vec::new(),
            ops: Vec::new(),
            keep: Vec::new(),
        };
        let precondition = cfg.kind == ModelKind::Optimus;
        let ml = MatLayout::new(cfg, problems);
        let mat = ctx.storage("preconditioner", &ml.host)?;
        let lanes = lanes_for(ctx, problems.max_dim());
        let on = StageBuffers {
            problems,
            bufs,
            acts: &acts,
            mat: &mat,
            ml: &ml,
        };
        let features = b.features(cfg, &on, &acc, lanes)?;
        let blocks = attention_blocks(problems);
        let blocks_buf = ctx.storage("blocks", &blocks)?;
        let n_blocks = blocks.len() as u32;
        let dmax = problems.dims.iter().copied().max().unwrap_or(1);
        let attention = b.network(cfg, &acts, &blocks_buf, n_blocks, dmax, head)?;
        let step = b.step(cfg, &on, lanes)?;
        let preconditioner = if precondition {
            Some(b.preconditioner(&on, &blocks_buf, n_blocks)?)
        } else {
            None
        };
        let ops = b.ops;
        let linear = b.linear;
        let mut buffers = b.keep;
        buffers.extend(acts.into_buffers());
        buffers.extend([blocks_buf, dummy, dummy_out]);
        if let Some(p) = pert {
            buffers.extend([p.tok, p.proj]);
        }
        Ok(Self {
            ops,
            linear,
            attention,
            features,
            step,
            preconditioner,
            acc,
            mat,
            mat_init: ml.host,
            precondition,
            own_theta,
            _buffers: buffers,
        })
    }

    /// Fresh accumulators and B = I for problem `p` alone (a meta-training reset), as
    /// writes queued before the next submit.
    /// `moff` is the start of its B block (its `OptState::moff`).
    pub fn reset_problem(&self, ctx: &GpuContext, problems: &GpuProblems, p: usize, moff: u32) {
        let (off, d) = (problems.offsets[p] as u64, problems.dims[p] as usize);
        let n = problems.n_total as u64;
        let zeros = vec![0f32; d];
        for k in 0..7 {
            ctx.queue
                .write_buffer(&self.acc, (k * n + off) * 4, bytemuck::cast_slice(&zeros));
        }
        // The previous x | g of the secant scale need no reset: the first step only
        // writes them.
        if self.precondition {
            let moff = moff as usize;
            ctx.queue.write_buffer(
                &self.mat,
                moff as u64 * 4,
                bytemuck::cast_slice(&self.mat_init[moff..moff + d * d]),
            );
        }
    }

    /// The packed weights the net owns (None under a perturbation, whose θ is the
    /// trainer's), so a trainer can copy new weights in on the GPU.
    pub fn own_theta(&self) -> Option<&wgpu::Buffer> {
        self.own_theta.as_ref()
    }

    /// Zeroes the accumulators and puts B back to the identity.
    pub fn reset(&self, ctx: &GpuContext) {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&self.acc, 0, None);
        ctx.queue.submit([enc.finish()]);
        ctx.queue
            .write_buffer(&self.mat, 0, bytemuck::cast_slice(&self.mat_init));
    }

    /// Records one step of every problem (after the objective stage).
    pub fn record(
        &self,
        kernels: &LearnedKernels,
        pass: &mut wgpu::ComputePass<'_>,
        n_problems: u32,
    ) {
        for k in 0..self.ops.len() {
            self.record_stage(k, kernels, pass, n_problems);
        }
    }

    /// Names of the stages, in recording order (for profiles).
    pub fn stage_names(&self) -> Vec<&'static str> {
        self.ops
            .iter()
            .map(|(stage, _, _)| match stage {
                Stage::Features => "features",
                Stage::Linear(label, _) => label,
                Stage::Project => "perturbation",
                Stage::LayerNorm => "layernorm",
                Stage::Attention => "attention",
                Stage::Step => "step",
                Stage::Precondition => "preconditioner",
            })
            .collect()
    }

    /// Records stage `k` alone.
    pub fn record_stage(
        &self,
        k: usize,
        kernels: &LearnedKernels,
        pass: &mut wgpu::ComputePass<'_>,
        n_problems: u32,
    ) {
        let (stage, group, grid) = &self.ops[k];
        let kernel = match stage {
            Stage::Features => &self.features,
            Stage::Linear(_, k) => &self.linear[*k],
            Stage::Project => &kernels.project,
            Stage::LayerNorm => &kernels.layernorm,
            Stage::Attention => self
                .attention
                .as_ref()
                .expect("made in LearnedNet::new with the attention stage"),
            Stage::Step => &self.step,
            Stage::Precondition => self
                .preconditioner
                .as_ref()
                .expect("made in LearnedNet::new with the preconditioner stage"),
        };
        match stage {
            Stage::Features | Stage::Step => kernel.dispatch_problems(pass, group, n_problems),
            _ => {
                pass.set_pipeline(&kernel.pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
            }
        }
    }
}

/// Profile label of a linear layer: its tensor name without the block index.
fn layer_label(name: &str) -> &'static str {
    let tail = name.rsplit('.').take(2).collect::<Vec<_>>();
    match (tail.get(1).copied(), tail[0]) {
        (Some("attn"), "qkv") => "linear attn.qkv",
        (Some("attn"), "out") => "linear attn.out",
        (Some("mlp"), "fc1") => "linear mlp.fc1",
        (Some("mlp"), "fc2") => "linear mlp.fc2",
        (_, "embed") => "linear embed",
        (_, "head") => "linear head",
        _ => "linear",
    }
}

/// Refuses a model and batch the kernels cannot run: widths not multiples of 8, a head
/// width the attention kernel lacks, more token rows than a dispatch holds, or, on
/// llvmpipe, a d whose attention would pass the driver's loop limit. Returns the token
/// rows (padded for the 8-row blocks of `linear_blocks.wgsl`) and the head width.
fn check_fits(
    ctx: &GpuContext,
    kernels: &LearnedKernels,
    cfg: &ModelConfig,
    problems: &GpuProblems,
) -> Result<(u32, usize)> {
    let n = problems.n_total;
    if !cfg.width.is_multiple_of(8) || !cfg.mlp_hidden.is_multiple_of(8) {
        return Err(Error::Config(format!(
            "the GPU kernels need width and mlp_hidden to be multiples of 8 (got {} and {})",
            cfg.width, cfg.mlp_hidden
        )));
    }
    if let (Some(limit), true) = (ctx.loop_limit(), cfg.kind.is_transformer()) {
        // Attention loops over every key of the problem in each query's invocation.
        let dmax = problems.dims.iter().copied().max().unwrap_or(0) as u64;
        let hd4 = (cfg.width / cfg.heads.max(1)) as u64 / 4;
        let it = kernels.attention.loop_iterations(dmax, hd4);
        if it > limit {
            return Err(Error::TooLarge(format!(
                "d = {dmax} needs about {it} loop iterations per invocation in attention; \
                 this driver (llvmpipe) stops an invocation after {limit}, which would give \
                 wrong results. Use a smaller d or a GPU"
            )));
        }
    }
    let rows = n.div_ceil(BLOCK_ROWS) * BLOCK_ROWS;
    if rows as u64 > kernels.linear.max_rows() {
        return Err(Error::TooLarge(format!(
            "{n} coordinates in one batch; the learned optimizers take at most {} per batch here",
            kernels.linear.max_rows()
        )));
    }
    // Head width (LOpt has no attention; its `heads` is not checked).
    let head = if cfg.kind.is_transformer() {
        cfg.width / cfg.heads
    } else {
        4
    };
    if cfg.kind != ModelKind::Lopt && (head > MAX_HEAD_WIDTH || !head.is_multiple_of(4)) {
        return Err(Error::Config(format!(
            "head width {head} (width / heads) must be a multiple of 4 up to {MAX_HEAD_WIDTH} for the attention kernel; change heads"
        )));
    }
    Ok((rows, head))
}

/// The `mat` buffer of a learned step as first written: every problem's B = I
/// (Optimus), then the s | u scratch, then the previous x | g (secant scale), then the
/// diagonal metric h.
struct MatLayout {
    host: Vec<f32>,
    /// Start of the s | u scratch (the length of the B blocks).
    scratch_off: usize,
    metric_off: usize,
}

impl MatLayout {
    fn new(cfg: &ModelConfig, problems: &GpuProblems) -> Self {
        let nu = problems.n_total as usize;
        let precondition = cfg.kind == ModelKind::Optimus;
        let (moffs, total) = problems.square_offsets();
        let scratch_off = if precondition { total } else { 0 };
        let secant_len = if cfg.secant() { 2 * nu } else { 0 };
        let metric_off = scratch_off + 2 * nu + secant_len;
        let metric_len = match cfg.step {
            StepRule::DiagonalQuasiNewton => nu,
            _ => 0,
        };
        let mut host = vec![0f32; metric_off + metric_len];
        if precondition {
            for (&moff, &d) in moffs.iter().zip(&problems.dims) {
                let (moff, d) = (moff as usize, d as usize);
                for i in 0..d {
                    host[moff + i * d + i] = 1.0;
                }
            }
        }
        Self {
            host,
            scratch_off,
            metric_off,
        }
    }
}

/// Per-token activations of the network, `rows` token rows each.
struct Activations {
    /// Features, `feature_stride` per row (the model's, padded to a multiple of 4: the
    /// input weights' padded rows).
    feat: wgpu::Buffer,
    feature_stride: usize,
    hid: wgpu::Buffer,
    /// LayerNorm outputs.
    a: wgpu::Buffer,
    qkv: wgpu::Buffer,
    att: wgpu::Buffer,
    mlp: wgpu::Buffer,
    /// Head outputs, `out_stride` per row.
    out: wgpu::Buffer,
    out_stride: usize,
}

impl Activations {
    fn new(ctx: &GpuContext, cfg: &ModelConfig, rows: usize) -> Result<Self> {
        let feature_stride = round4(cfg.features);
        let out_stride = round8(cfg.head_outputs());
        let wide = cfg.width.max(cfg.mlp_hidden);
        Ok(Self {
            feat: ctx.storage_zeroed("features", rows * feature_stride)?,
            feature_stride,
            hid: ctx.storage_zeroed("hidden", rows * wide)?,
            a: ctx.storage_zeroed("normalized", rows * wide)?,
            qkv: ctx.storage_zeroed("qkv", rows * 3 * cfg.width)?,
            att: ctx.storage_zeroed("attention", rows * cfg.width)?,
            mlp: ctx.storage_zeroed("mlp", rows * cfg.mlp_hidden)?,
            out: ctx.storage_zeroed("head outputs", rows * out_stride)?,
            out_stride,
        })
    }

    fn into_buffers(self) -> [wgpu::Buffer; 7] {
        [
            self.feat, self.hid, self.a, self.qkv, self.att, self.mlp, self.out,
        ]
    }
}

impl<'a> PertBuffers<'a> {
    /// The particle of each token row (padding rows: particle 0) and the projections'
    /// buffer, for the perturbation `p`.
    fn new(
        ctx: &GpuContext,
        p: &Perturbation<'a>,
        problems: &GpuProblems,
        rows: usize,
    ) -> Result<Self> {
        let mut tok = vec![0u32; rows];
        for (i, (&off, &d)) in problems.offsets.iter().zip(&problems.dims).enumerate() {
            tok[off as usize..(off + d) as usize].fill(i as u32);
        }
        Ok(Self {
            tok: ctx.storage("token particles", &tok)?,
            proj: ctx.storage_zeroed("projections", rows)?,
            noise: p.noise,
            layout: p.layout,
            sigma: p.sigma,
        })
    }
}

/// The perturbation's buffers as the layers bind them.
struct PertBuffers<'a> {
    tok: wgpu::Buffer,
    proj: wgpu::Buffer,
    noise: &'a wgpu::Buffer,
    layout: &'a NoiseLayout,
    sigma: f32,
}

/// Collects the dispatches of one learned step and the uniforms they use.
/// What the features, step and preconditioner stages bind besides their own uniforms.
#[derive(Clone, Copy)]
struct StageBuffers<'a> {
    problems: &'a GpuProblems,
    bufs: &'a StepBuffers<'a>,
    acts: &'a Activations,
    mat: &'a wgpu::Buffer,
    ml: &'a MatLayout,
}

struct Builder<'a> {
    ctx: &'a GpuContext,
    kernels: &'a LearnedKernels,
    layout: &'a PackedLayout,
    theta: &'a wgpu::Buffer,
    pert: Option<&'a PertBuffers<'a>>,
    /// Bound in place of the perturbation's buffers when there is none: read-only ones,
    /// and a written one (a buffer cannot be both in one dispatch).
    dummy: &'a wgpu::Buffer,
    dummy_out: &'a wgpu::Buffer,
    n: u32,
    rows: u32,
    /// Pipelines of the linear layers (shapes differ in the generated kernels).
    linear: Vec<Arc<Kernel>>,
    ops: Vec<(Stage, wgpu::BindGroup, [u32; 3])>,
    /// Uniform buffers the bind groups use, kept with the net.
    keep: Vec<wgpu::Buffer>,
}

impl Builder<'_> {
    /// The features stage, with `lanes` invocations per problem, writing `acc`; returns
    /// its pipeline.
    fn features(
        &mut self,
        cfg: &ModelConfig,
        on: &StageBuffers<'_>,
        acc: &wgpu::Buffer,
        lanes: u32,
    ) -> Result<Arc<Kernel>> {
        let ctx = self.ctx;
        let StageBuffers {
            problems,
            bufs,
            acts,
            mat,
            ml,
        } = *on;
        let fp = ctx.uniform(
            "features params",
            &FeatParams {
                n_problems: problems.n_problems,
                n_total: self.n,
                secant: cfg.secant() as u32,
                prev_off: (ml.scratch_off + 2 * self.n as usize) as u32,
                n_features: cfg.features as u32,
                stride: acts.feature_stride as u32,
                diagonal: (cfg.step == StepRule::DiagonalQuasiNewton) as u32,
                metric_off: ml.metric_off as u32,
            },
        );
        let path = "learned/features.wgsl";
        let kernel =
            Kernel::with_constants(ctx, path, &self.kernels.features, &[("WG", lanes as f64)])?;
        let group = kernel.bind(
            ctx,
            &[
                &fp,
                &problems.desc,
                bufs.x,
                bufs.g,
                acc,
                bufs.state,
                &acts.feat,
                bufs.f,
                mat,
            ],
        );
        self.push(Stage::Features, group, [0, 0, 0], fp);
        Ok(kernel)
    }

    /// The step stage (the network's outputs to x), with `lanes` invocations per
    /// problem; returns its pipeline.
    fn step(
        &mut self,
        cfg: &ModelConfig,
        on: &StageBuffers<'_>,
        lanes: u32,
    ) -> Result<Arc<Kernel>> {
        let ctx = self.ctx;
        let StageBuffers {
            problems,
            bufs,
            acts,
            mat,
            ml,
        } = *on;
        let lp = ctx.uniform(
            "learned params",
            &LearnedParams {
                out_stride: acts.out_stride as u32,
                precondition: (cfg.kind == ModelKind::Optimus) as u32,
                scratch_off: ml.scratch_off as u32,
                scale_col: cfg.scale_output().unwrap_or(0) as u32,
                lambda_mu: cfg.lambda_mu as f32,
                lambda_s: cfg.lambda_s as f32,
                lambda_u: cfg.lambda_u as f32,
                lambda_scale: cfg.lambda_scale as f32,
                secant: cfg.secant() as u32,
                absolute: cfg.absolute_steps as u32,
                abs_col: cfg.absolute_output().unwrap_or(0) as u32,
                unit_first: cfg.unit_first() as u32,
                quasi_newton: cfg.step.is_quasi_newton() as u32,
                diagonal: (cfg.step == StepRule::DiagonalQuasiNewton) as u32,
                metric_off: ml.metric_off as u32,
                pad: 0,
            },
        );
        let path = "learned/step.wgsl";
        let kernel =
            Kernel::with_constants(ctx, path, &self.kernels.step, &[("WG", lanes as f64)])?;
        let group = kernel.bind(
            ctx,
            &[
                bufs.opt_params,
                &lp,
                &problems.desc,
                bufs.f,
                bufs.g,
                &acts.out,
                bufs.x,
                bufs.state,
                bufs.history,
                mat,
            ],
        );
        self.push(Stage::Step, group, [0, 0, 0], lp);
        Ok(kernel)
    }

    /// Optimus's rank-one preconditioner update over `n_blocks` blocks of rows; returns
    /// its pipeline.
    fn preconditioner(
        &mut self,
        on: &StageBuffers<'_>,
        blocks_buf: &wgpu::Buffer,
        n_blocks: u32,
    ) -> Result<Arc<Kernel>> {
        let ctx = self.ctx;
        let StageBuffers {
            problems,
            bufs,
            mat,
            ml,
            ..
        } = *on;
        let pp = ctx.uniform(
            "precondition params",
            &[n_blocks, self.n, ml.scratch_off as u32, 0],
        );
        // Four rows per invocation, as many invocations as the largest problem's first
        // block fills (16 for blocks of 64 rows).
        let wgp = problems.max_dim().next_power_of_two().min(ATTN_BLOCK) / 4;
        let kernel = Kernel::with_constants(
            ctx,
            "learned/precondition.wgsl",
            &self.kernels.precondition,
            &[("WGP", wgp.max(1) as f64)],
        )?;
        let group = kernel.bind(ctx, &[&pp, blocks_buf, bufs.state, bufs.x, mat]);
        self.push(Stage::Precondition, group, grid_1d(n_blocks), pp);
        Ok(kernel)
    }

    /// The network's layers, from the features to the head outputs: LOpt's MLP, or
    /// Optimus's embedding, blocks and head. Returns the attention pipeline (transformers).
    fn network(
        &mut self,
        cfg: &ModelConfig,
        acts: &Activations,
        blocks_buf: &wgpu::Buffer,
        n_blocks: u32,
        dmax: u32,
        head: usize,
    ) -> Result<Option<Arc<Kernel>>> {
        let Activations {
            feat,
            hid,
            a,
            qkv,
            att,
            mlp,
            out,
            ..
        } = acts;
        let fs = acts.feature_stride as u32;
        let (w, hidden) = (cfg.width as u32, cfg.mlp_hidden as u32);
        let o = cfg.head_outputs() as u32;
        if cfg.kind == ModelKind::Lopt {
            self.linear(feat, mlp, fs, hidden, "mlp.fc1", RELU, Input::Plain)?;
            self.linear(mlp, hid, hidden, hidden, "mlp.fc2", RELU, Input::Plain)?;
            self.linear(hid, out, hidden, o, "head", 0, Input::Plain)?;
            return Ok(None);
        }
        let ap = self.ctx.uniform(
            "attention params",
            &AttnParams {
                n_blocks,
                width: w,
                heads: cfg.heads as u32,
                pad: 0,
            },
        );
        let (kernel, z) =
            self.kernels
                .attention
                .layer(self.ctx, head as u32 / 4, cfg.heads as u32, dmax)?;
        let attn_group = kernel.bind(self.ctx, &[&ap, blocks_buf, qkv, att]);
        let block_grid = grid_1d(n_blocks);
        let attn_grid = [block_grid[0], block_grid[1], z];
        self.keep.push(ap);
        self.linear(feat, hid, fs, w, "embed", 0, Input::Plain)?;
        for l in 0..cfg.layers {
            let blk = format!("blocks.{l}");
            let (ln1, qkv_name) = (format!("{blk}.ln1"), format!("{blk}.attn.qkv"));
            self.norm_linear(hid, a, qkv, w, 3 * w, &ln1, &qkv_name, 0)?;
            self.ops
                .push((Stage::Attention, attn_group.clone(), attn_grid));
            let (attn_out, fc2) = (format!("{blk}.attn.out"), format!("{blk}.mlp.fc2"));
            self.linear(att, hid, w, w, &attn_out, RESIDUAL, Input::Plain)?;
            let (ln2, fc1) = (format!("{blk}.ln2"), format!("{blk}.mlp.fc1"));
            self.norm_linear(hid, a, mlp, w, hidden, &ln2, &fc1, RELU)?;
            self.linear(mlp, hid, hidden, w, &fc2, RESIDUAL, Input::Plain)?;
        }
        self.norm_linear(hid, a, out, w, o, "ln_f", "head", 0)?;
        Ok(Some(kernel))
    }

    fn push(
        &mut self,
        stage: Stage,
        group: wgpu::BindGroup,
        grid: [u32; 3],
        uniform: wgpu::Buffer,
    ) {
        self.ops.push((stage, group, grid));
        self.keep.push(uniform);
    }

    fn offset4(&self, name: &str) -> Result<u32> {
        Ok(self.layout.offset(name)? as u32 / 4)
    }

    /// y = act(LayerNorm `ln`(x)·W + b) (or y += …) for layer `name`, with `a` to hold
    /// the normalized x: lane kernels fuse the LayerNorm into the layer (it costs them
    /// little, as every invocation reads the whole input row anyway; folded into W, or
    /// per token where PES perturbs its γ and β); block kernels take a LayerNorm pass.
    #[allow(clippy::too_many_arguments)]
    fn norm_linear(
        &mut self,
        x: &wgpu::Buffer,
        a: &wgpu::Buffer,
        y: &wgpu::Buffer,
        n_in: u32,
        n_out: u32,
        ln: &str,
        name: &str,
        flags: u32,
    ) -> Result<()> {
        let lanes = self
            .kernels
            .linear
            .lanes_for(n_in.div_ceil(4), round8(n_out as usize) as u32 / 4);
        if lanes {
            self.linear(x, y, n_in, n_out, name, flags, Input::Fused(ln))
        } else {
            self.layernorm(x, a, n_in, ln, name)?;
            self.linear(a, y, n_in, n_out, name, flags, Input::Normalized)
        }
    }

    /// y = act(x·W + b) (or y += …) for layer `name`, from `input`.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        n_in: u32,
        n_out: u32,
        name: &str,
        flags: u32,
        input: Input,
    ) -> Result<()> {
        let out4 = round8(n_out as usize) as u32 / 4;
        let in4 = n_in.div_ceil(4);
        let (weight, bias) = (format!("{name}.weight"), format!("{name}.bias"));
        let mut lp = LinearParams {
            n_rows: self.rows,
            in4,
            out4,
            w_off4: self.offset4(&weight)?,
            b_off4: self.offset4(&bias)?,
            ln_g_off4: 0,
            nb_off4: 0,
            ne_off4: 0,
            stride4: 0,
            sigma: 0.0,
            ln_b_off4: 0,
            na_off4: 0,
            ln_ng_off4: 0,
            ln_nb_off4: 0,
            pad: [0; 2],
        };
        let mut flags = flags;
        if let Input::Fused(ln) = input {
            let (gname, bname) = (format!("{ln}.weight"), format!("{ln}.bias"));
            lp.ln_g_off4 = self.offset4(&gname)?;
            lp.ln_b_off4 = self.offset4(&bname)?;
            flags |= NORMALIZED;
            if let Some(pb) = self.pert {
                if pb.layout.perturbs(&gname)? || pb.layout.perturbs(&bname)? {
                    flags |= PERTURBED_NORM;
                    lp.ln_ng_off4 = (pb.layout.slot(&gname)?.b_off / 4) as u32;
                    lp.ln_nb_off4 = (pb.layout.slot(&bname)?.b_off / 4) as u32;
                }
            }
        }
        let (tok, proj, noise) = match self.pert {
            Some(pb) => {
                let w = pb.layout.slot(&weight)?;
                let stride4 = (pb.layout.stride / 4) as u32;
                flags |= PERTURBED;
                lp.nb_off4 = (w.b_off / 4) as u32;
                lp.ne_off4 = (pb.layout.slot(&bias)?.b_off / 4) as u32;
                lp.stride4 = stride4;
                lp.sigma = pb.sigma;
                lp.na_off4 = (w.a_off / 4) as u32;
                // A lane kernel projects its input itself; after a LayerNorm pass the
                // projection is written already.
                if !self.kernels.linear.lanes_for(in4, out4) && input != Input::Normalized {
                    let pp = self.ctx.uniform(
                        name,
                        &ProjectParams {
                            n_rows: self.rows,
                            in4,
                            a_off4: (w.a_off / 4) as u32,
                            stride4,
                        },
                    );
                    let group = self
                        .kernels
                        .project
                        .bind(self.ctx, &[&pp, &pb.tok, pb.noise, x, &pb.proj]);
                    self.push(Stage::Project, group, grid_1d(self.rows.div_ceil(64)), pp);
                }
                (&pb.tok, &pb.proj, pb.noise)
            }
            None => (self.dummy, self.dummy, self.dummy),
        };
        let p = self.ctx.uniform(name, &lp);
        let (kernel, grid) = self
            .kernels
            .linear
            .layer(self.ctx, self.rows, in4, out4, flags)?;
        let group = kernel.bind(self.ctx, &[&p, self.theta, x, y, tok, proj, noise]);
        self.linear.push(kernel);
        let stage = Stage::Linear(layer_label(name), self.linear.len() - 1);
        self.push(stage, group, grid, p);
        Ok(())
    }

    /// LayerNorm `name` over `width` channels of every token, feeding the block kernel
    /// of linear layer `next`: perturbed, the pass also writes its input's projection
    /// onto `next`'s row factor.
    fn layernorm(
        &mut self,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        width: u32,
        name: &str,
        next: &str,
    ) -> Result<()> {
        let (gname, bname) = (format!("{name}.weight"), format!("{name}.bias"));
        let mut lp = LnParams {
            n_tokens: self.n,
            n4: width / 4,
            g_off4: self.offset4(&gname)?,
            b_off4: self.offset4(&bname)?,
            ng_off4: 0,
            nb_off4: 0,
            stride4: 0,
            sigma: 0.0,
            a_off4: 0,
            pad: [0; 3],
        };
        let (tok, noise, proj) = match self.pert {
            Some(pb) => {
                lp.ng_off4 = (pb.layout.slot(&gname)?.b_off / 4) as u32;
                lp.nb_off4 = (pb.layout.slot(&bname)?.b_off / 4) as u32;
                lp.stride4 = (pb.layout.stride / 4) as u32;
                lp.sigma = pb.sigma;
                lp.a_off4 = (pb.layout.slot(&format!("{next}.weight"))?.a_off / 4) as u32;
                (&pb.tok, pb.noise, &pb.proj)
            }
            None => (self.dummy, self.dummy, self.dummy_out),
        };
        let p = self.ctx.uniform(name, &lp);
        let group = self
            .kernels
            .layernorm
            .bind(self.ctx, &[&p, self.theta, x, y, tok, noise, proj]);
        self.push(Stage::LayerNorm, group, grid_1d(self.n.div_ceil(64)), p);
        Ok(())
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::kernel::assert_wgsl_layout;

    /// The learned step's parameter structs match their WGSL.
    #[test]
    fn params_match_their_wgsl() {
        assert_wgsl_layout!(
            LinearParams,
            "learned/linear.wgsl",
            "LinearParams",
            [
                n_rows, in4, out4, w_off4, b_off4, ln_g_off4, nb_off4, ne_off4, stride4, sigma,
                ln_b_off4, na_off4, ln_ng_off4, ln_nb_off4
            ]
        );
        assert_wgsl_layout!(
            ProjectParams,
            "pes/project.wgsl",
            "ProjectParams",
            [n_rows, in4, a_off4, stride4]
        );
        assert_wgsl_layout!(
            LnParams,
            "learned/layernorm.wgsl",
            "LnParams",
            [n_tokens, n4, g_off4, b_off4, ng_off4, nb_off4, stride4, sigma, a_off4]
        );
        assert_wgsl_layout!(
            AttnParams,
            "learned/attention.wgsl",
            "AttnParams",
            [n_blocks, width, heads]
        );
        assert_wgsl_layout!(
            FeatParams,
            "learned/features.wgsl",
            "FeatParams",
            [n_problems, n_total, secant, prev_off, n_features, stride, diagonal, metric_off]
        );
        assert_wgsl_layout!(
            LearnedParams,
            "learned/step.wgsl",
            "LearnedParams",
            [
                out_stride,
                precondition,
                scratch_off,
                scale_col,
                lambda_mu,
                lambda_s,
                lambda_u,
                lambda_scale,
                secant,
                absolute,
                abs_col,
                unit_first,
                quasi_newton,
                diagonal,
                metric_off
            ]
        );
    }
}
