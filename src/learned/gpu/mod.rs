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

mod build;
use build::{Activations, Builder, PertBuffers, StageBuffers};

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
        let dmax = problems.max_dim();
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
        let dmax = problems.max_dim() as u64;
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
