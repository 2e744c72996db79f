//! GPU stages of one learned-optimizer step, for every problem of a batch at once:
//! features (`features.wgsl`) → token embedding and Transformer blocks (`linear.wgsl`,
//! `layernorm.wgsl`, `attention.wgsl`) or LOpt's per-dimension MLP → output heads →
//! step and preconditioner (`step.wgsl`). Tokens of all problems are stored back to back,
//! so linear layers and LayerNorms run over all tokens at once; attention is masked to
//! each problem by working on one problem's query block per workgroup.
//!
//! All buffers and bind groups are made once in [`LearnedNet::new`]; recording a step
//! only records dispatches.

use super::model::{Model, ModelKind, N_FEATURES};
use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernel::{Bind, Kernel};
use crate::problem::GpuProblems;

/// Queries per attention workgroup (`BLOCK` in `attention.wgsl`).
const ATTN_BLOCK: u32 = 32;
/// Largest head width `attention.wgsl` holds in registers (`MAX_HEAD`).
pub const MAX_HEAD_WIDTH: usize = 32;
/// Output tile of `linear.wgsl` (`TILE`).
const LINEAR_TILE: u32 = 32;
const MAX_GROUPS: u32 = 65535;

/// The learned optimizers' kernels, built once.
pub struct LearnedKernels {
    features: Kernel,
    linear: Kernel,
    layernorm: Kernel,
    attention: Kernel,
    step: Kernel,
}

impl LearnedKernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        use Bind::*;
        let io = [Uniform, ReadOnly, ReadOnly, ReadWrite];
        Ok(Self {
            features: Kernel::from_shader(
                ctx,
                "learned/features.wgsl",
                &[
                    Uniform, ReadOnly, ReadOnly, ReadOnly, ReadWrite, ReadOnly, ReadWrite,
                ],
            )?,
            linear: Kernel::from_shader(ctx, "learned/linear.wgsl", &io)?,
            layernorm: Kernel::from_shader(ctx, "learned/layernorm.wgsl", &io)?,
            attention: Kernel::from_shader(ctx, "learned/attention.wgsl", &io)?,
            step: Kernel::from_shader(
                ctx,
                "learned/step.wgsl",
                &[
                    Uniform, Uniform, ReadOnly, ReadOnly, ReadOnly, ReadOnly, ReadWrite, ReadWrite,
                    ReadWrite, ReadWrite,
                ],
            )?,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearParams {
    n_tokens: u32,
    n_in: u32,
    n_out: u32,
    w_off: u32,
    b_off: u32,
    flags: u32,
    pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LnParams {
    n_tokens: u32,
    n: u32,
    g_off: u32,
    b_off: u32,
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
    pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LearnedParams {
    n_out: u32,
    precondition: u32,
    scratch_off: u32,
    pad0: u32,
    lambda_mu: f32,
    lambda_s: f32,
    lambda_u: f32,
    pad1: f32,
}

const RELU: u32 = 1;
const RESIDUAL: u32 = 2;

#[derive(Clone, Copy)]
enum Stage {
    Features,
    Linear,
    LayerNorm,
    Attention,
    Step,
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

/// One learned optimizer bound to one batch.
pub struct LearnedNet {
    ops: Vec<(Stage, wgpu::BindGroup, [u32; 3])>,
    /// Accumulators and preconditioner with their initial contents, for `reset`.
    acc: wgpu::Buffer,
    mat: wgpu::Buffer,
    mat_init: Vec<f32>,
    _buffers: Vec<wgpu::Buffer>,
}

fn grid_1d(n: u32) -> [u32; 3] {
    let n = n.max(1);
    [n.min(MAX_GROUPS), n.div_ceil(MAX_GROUPS), 1]
}

impl LearnedNet {
    /// Binds `model` to `problems`. `state` must hold each problem's `moff`: the start of
    /// its d×d block of the preconditioner storage (Optimus), as [`preconditioner_len`]
    /// lays them out.
    pub fn new(
        ctx: &GpuContext,
        kernels: &LearnedKernels,
        model: &Model,
        problems: &GpuProblems,
        bufs: &StepBuffers<'_>,
    ) -> Result<Self> {
        let cfg = &model.config;
        cfg.validate()?;
        let n = problems.n_total;
        let w = cfg.width as u32;
        let hidden = cfg.mlp_hidden as u32;
        let o = cfg.head_outputs() as u32;
        let tokens_tiles = n.div_ceil(LINEAR_TILE);
        if tokens_tiles > MAX_GROUPS {
            return Err(Error::TooLarge(format!(
                "{n} coordinates in one batch; the learned optimizers take at most {} per batch",
                MAX_GROUPS * LINEAR_TILE
            )));
        }
        if cfg.kind != ModelKind::Lopt && cfg.width / cfg.heads > MAX_HEAD_WIDTH {
            return Err(Error::Config(format!(
                "head width {} (width / heads) is over the kernel's limit of {MAX_HEAD_WIDTH}; use more heads",
                cfg.width / cfg.heads
            )));
        }
        let theta = ctx.storage("theta", &model.weights)?;
        let nu = n as usize;
        let feat = ctx.storage_zeroed("features", nu * N_FEATURES)?;
        let acc = ctx.storage_zeroed("accumulators", 7 * nu)?;
        let hid = ctx.storage_zeroed("hidden", nu * cfg.width.max(cfg.mlp_hidden))?;
        let a = ctx.storage_zeroed("normalized", nu * cfg.width.max(cfg.mlp_hidden))?;
        let qkv = ctx.storage_zeroed("qkv", nu * 3 * cfg.width)?;
        let att = ctx.storage_zeroed("attention", nu * cfg.width)?;
        let mlp = ctx.storage_zeroed("mlp", nu * cfg.mlp_hidden)?;
        let out = ctx.storage_zeroed("head outputs", nu * o as usize)?;

        let offset = |name: &str| -> Result<u32> {
            cfg.tensor(name)
                .map(|t| t.offset as u32)
                .ok_or_else(|| Error::Config(format!("model has no tensor {name}")))
        };
        type Op = (Stage, wgpu::BindGroup, [u32; 3]);
        let mut uniforms = Vec::new();
        let mut ops: Vec<Op> = Vec::new();
        let linear = |x: &wgpu::Buffer,
                      y: &wgpu::Buffer,
                      n_in: u32,
                      n_out: u32,
                      name: &str,
                      flags: u32|
         -> Result<(Op, wgpu::Buffer)> {
            let p = ctx.uniform(
                name,
                &LinearParams {
                    n_tokens: n,
                    n_in,
                    n_out,
                    w_off: offset(&format!("{name}.weight"))?,
                    b_off: offset(&format!("{name}.bias"))?,
                    flags,
                    pad: [0; 2],
                },
            );
            let group = kernels.linear.bind(ctx, &[&p, &theta, x, y]);
            Ok((
                (
                    Stage::Linear,
                    group,
                    [n_out.div_ceil(LINEAR_TILE), tokens_tiles, 1],
                ),
                p,
            ))
        };
        let mut push = |r: (Op, wgpu::Buffer), ops: &mut Vec<Op>| {
            ops.push(r.0);
            uniforms.push(r.1);
        };
        let fp = ctx.uniform(
            "features params",
            &FeatParams {
                n_problems: problems.n_problems,
                n_total: n,
                pad: [0; 2],
            },
        );
        let feat_group = kernels.features.bind(
            ctx,
            &[&fp, &problems.desc, bufs.x, bufs.g, &acc, bufs.state, &feat],
        );
        let mut pre = vec![(Stage::Features, feat_group, [0, 0, 0])];
        let mut push_all = Vec::new();
        match cfg.kind {
            ModelKind::Lopt => {
                push(
                    linear(&feat, &mlp, N_FEATURES as u32, hidden, "mlp.fc1", RELU)?,
                    &mut ops,
                );
                push(
                    linear(&mlp, &hid, hidden, hidden, "mlp.fc2", RELU)?,
                    &mut ops,
                );
                push(linear(&hid, &out, hidden, o, "head", 0)?, &mut ops);
            }
            ModelKind::Optimus | ModelKind::Optimus0 => {
                let mut ln_ops = Vec::new();
                let ln = |x: &wgpu::Buffer,
                          y: &wgpu::Buffer,
                          name: &str|
                 -> Result<(wgpu::BindGroup, wgpu::Buffer)> {
                    let p = ctx.uniform(
                        name,
                        &LnParams {
                            n_tokens: n,
                            n: w,
                            g_off: offset(&format!("{name}.weight"))?,
                            b_off: offset(&format!("{name}.bias"))?,
                        },
                    );
                    Ok((kernels.layernorm.bind(ctx, &[&p, &theta, x, y]), p))
                };
                // Query blocks of every problem for attention.
                let mut blocks: Vec<[u32; 4]> = Vec::new();
                for (&off, &d) in problems.offsets.iter().zip(&problems.dims) {
                    for start in (0..d).step_by(ATTN_BLOCK as usize) {
                        blocks.push([off, d, start, 0]);
                    }
                }
                let blocks_buf = ctx.storage("attention blocks", &blocks)?;
                let ap = ctx.uniform(
                    "attention params",
                    &AttnParams {
                        n_blocks: blocks.len() as u32,
                        width: w,
                        heads: cfg.heads as u32,
                        pad: 0,
                    },
                );
                let attn_group = kernels.attention.bind(ctx, &[&ap, &blocks_buf, &qkv, &att]);
                let [bx, by, _] = grid_1d(blocks.len() as u32);
                let attn_grid = [bx, by, cfg.heads as u32];
                let ln_grid = grid_1d(n.div_ceil(64));

                push(
                    linear(&feat, &hid, N_FEATURES as u32, w, "embed", 0)?,
                    &mut ops,
                );
                for l in 0..cfg.layers {
                    let b = format!("blocks.{l}");
                    let (g1, p1) = ln(&hid, &a, &format!("{b}.ln1"))?;
                    ops.push((Stage::LayerNorm, g1, ln_grid));
                    ln_ops.push(p1);
                    push(
                        linear(&a, &qkv, w, 3 * w, &format!("{b}.attn.qkv"), 0)?,
                        &mut ops,
                    );
                    ops.push((Stage::Attention, attn_group.clone(), attn_grid));
                    push(
                        linear(&att, &hid, w, w, &format!("{b}.attn.out"), RESIDUAL)?,
                        &mut ops,
                    );
                    let (g2, p2) = ln(&hid, &a, &format!("{b}.ln2"))?;
                    ops.push((Stage::LayerNorm, g2, ln_grid));
                    ln_ops.push(p2);
                    push(
                        linear(&a, &mlp, w, hidden, &format!("{b}.mlp.fc1"), RELU)?,
                        &mut ops,
                    );
                    push(
                        linear(&mlp, &hid, hidden, w, &format!("{b}.mlp.fc2"), RESIDUAL)?,
                        &mut ops,
                    );
                }
                let (gf, pf) = ln(&hid, &a, "ln_f")?;
                ops.push((Stage::LayerNorm, gf, ln_grid));
                ln_ops.push(pf);
                push(linear(&a, &out, w, o, "head", 0)?, &mut ops);
                ln_ops.push(ap);
                ln_ops.push(blocks_buf);
                push_all = ln_ops;
            }
        }
        pre.extend(ops);
        let mut ops = pre;
        uniforms.extend(push_all);

        // Preconditioner storage: identity blocks, then the s | u scratch.
        let precondition = cfg.kind == ModelKind::Optimus;
        let mat_len = preconditioner_len(&problems.dims, precondition);
        let mut mat_host = vec![0f32; mat_len + 2 * nu];
        if precondition {
            let mut moff = 0usize;
            for &d in &problems.dims {
                let d = d as usize;
                for i in 0..d {
                    mat_host[moff + i * d + i] = 1.0;
                }
                moff += d * d;
            }
        }
        let mat = ctx.storage("preconditioner", &mat_host)?;
        let lp = ctx.uniform(
            "learned params",
            &LearnedParams {
                n_out: o,
                precondition: precondition as u32,
                scratch_off: mat_len as u32,
                pad0: 0,
                lambda_mu: cfg.lambda_mu as f32,
                lambda_s: cfg.lambda_s as f32,
                lambda_u: cfg.lambda_u as f32,
                pad1: 0.0,
            },
        );
        let step_group = kernels.step.bind(
            ctx,
            &[
                bufs.opt_params,
                &lp,
                &problems.desc,
                bufs.f,
                bufs.g,
                &out,
                bufs.x,
                bufs.state,
                bufs.history,
                &mat,
            ],
        );
        ops.push((Stage::Step, step_group, [0, 0, 0]));
        let mut buffers = vec![theta, feat, hid, a, qkv, att, mlp, out, lp, fp];
        buffers.extend(uniforms);
        Ok(Self {
            ops,
            acc,
            mat,
            mat_init: mat_host,
            _buffers: buffers,
        })
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
                Stage::Linear => "linear",
                Stage::LayerNorm => "layernorm",
                Stage::Attention => "attention",
                Stage::Step => "step + preconditioner",
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
            Stage::Features => &kernels.features,
            Stage::Linear => &kernels.linear,
            Stage::LayerNorm => &kernels.layernorm,
            Stage::Attention => &kernels.attention,
            Stage::Step => &kernels.step,
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

/// Floats of preconditioner storage: Σ d² for Optimus, none otherwise. Problem p's block
/// starts at the sum of the squares of the dimensions before it.
pub fn preconditioner_len(dims: &[u32], precondition: bool) -> usize {
    if precondition {
        dims.iter().map(|&d| (d as usize) * (d as usize)).sum()
    } else {
        0
    }
}
