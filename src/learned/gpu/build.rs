//! Building a [`LearnedNet`](super::LearnedNet): the activations and perturbation
//! buffers it binds, and the builder that makes each stage's pipeline, uniforms and
//! bind group in the order a step dispatches them.

use super::*;

/// Per-token activations of the network, `rows` token rows each.
pub(super) struct Activations {
    /// Features, `feature_stride` per row (the model's, padded to a multiple of 4: the
    /// input weights' padded rows).
    pub(super) feat: wgpu::Buffer,
    pub(super) feature_stride: usize,
    pub(super) hid: wgpu::Buffer,
    /// LayerNorm outputs.
    pub(super) a: wgpu::Buffer,
    pub(super) qkv: wgpu::Buffer,
    pub(super) att: wgpu::Buffer,
    pub(super) mlp: wgpu::Buffer,
    /// Head outputs, `out_stride` per row.
    pub(super) out: wgpu::Buffer,
    pub(super) out_stride: usize,
}

impl Activations {
    pub(super) fn new(ctx: &GpuContext, cfg: &ModelConfig, rows: usize) -> Result<Self> {
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

    pub(super) fn into_buffers(self) -> [wgpu::Buffer; 7] {
        [
            self.feat, self.hid, self.a, self.qkv, self.att, self.mlp, self.out,
        ]
    }
}

impl<'a> PertBuffers<'a> {
    /// The particle of each token row (padding rows: particle 0) and the projections'
    /// buffer, for the perturbation `p`.
    pub(super) fn new(
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
pub(super) struct PertBuffers<'a> {
    pub(super) tok: wgpu::Buffer,
    pub(super) proj: wgpu::Buffer,
    pub(super) noise: &'a wgpu::Buffer,
    pub(super) layout: &'a NoiseLayout,
    pub(super) sigma: f32,
}

/// What the features, step and preconditioner stages bind besides their own uniforms.
pub(super) struct StageBuffers<'a> {
    pub(super) problems: &'a GpuProblems,
    pub(super) bufs: &'a StepBuffers<'a>,
    pub(super) acts: &'a Activations,
    pub(super) mat: &'a wgpu::Buffer,
    pub(super) ml: &'a MatLayout,
}

/// Collects the dispatches of one learned step and the uniforms they use.
pub(super) struct Builder<'a> {
    pub(super) ctx: &'a GpuContext,
    pub(super) kernels: &'a LearnedKernels,
    pub(super) layout: &'a PackedLayout,
    pub(super) theta: &'a wgpu::Buffer,
    pub(super) pert: Option<&'a PertBuffers<'a>>,
    /// Bound in place of the perturbation's buffers when there is none: read-only ones,
    /// and a written one (a buffer cannot be both in one dispatch).
    pub(super) dummy: &'a wgpu::Buffer,
    pub(super) dummy_out: &'a wgpu::Buffer,
    pub(super) n: u32,
    pub(super) rows: u32,
    /// Pipelines of the linear layers (shapes differ in the generated kernels).
    pub(super) linear: Vec<Arc<Kernel>>,
    pub(super) ops: Vec<(Stage, wgpu::BindGroup, [u32; 3])>,
    /// Uniform buffers the bind groups use, kept with the net.
    pub(super) keep: Vec<wgpu::Buffer>,
}

impl Builder<'_> {
    /// The features stage, with `lanes` invocations per problem, writing `acc`; returns
    /// its pipeline.
    pub(super) fn features(
        &mut self,
        cfg: &ModelConfig,
        on: &StageBuffers<'_>,
        acc: &wgpu::Buffer,
        lanes: u32,
    ) -> Result<Arc<Kernel>> {
        let ctx = self.ctx;
        let fp = ctx.uniform(
            "features params",
            &FeatParams {
                n_problems: on.problems.n_problems,
                n_total: self.n,
                secant: cfg.secant() as u32,
                prev_off: (on.ml.scratch_off + 2 * self.n as usize) as u32,
                n_features: cfg.features as u32,
                stride: on.acts.feature_stride as u32,
                diagonal: (cfg.step == StepRule::DiagonalQuasiNewton) as u32,
                metric_off: on.ml.metric_off as u32,
            },
        );
        let path = "learned/features.wgsl";
        let kernel =
            Kernel::with_constants(ctx, path, &self.kernels.features, &[("WG", lanes as f64)])?;
        let group = kernel.bind(
            ctx,
            &[
                &fp,
                &on.problems.desc,
                on.bufs.x,
                on.bufs.g,
                acc,
                on.bufs.state,
                &on.acts.feat,
                on.bufs.f,
                on.mat,
            ],
        );
        self.push(Stage::Features, group, [0, 0, 0], fp);
        Ok(kernel)
    }

    /// The step stage (the network's outputs to x), with `lanes` invocations per
    /// problem; returns its pipeline.
    pub(super) fn step(
        &mut self,
        cfg: &ModelConfig,
        on: &StageBuffers<'_>,
        lanes: u32,
    ) -> Result<Arc<Kernel>> {
        let ctx = self.ctx;
        let lp = ctx.uniform(
            "learned params",
            &LearnedParams {
                out_stride: on.acts.out_stride as u32,
                precondition: (cfg.kind == ModelKind::Optimus) as u32,
                scratch_off: on.ml.scratch_off as u32,
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
                metric_off: on.ml.metric_off as u32,
                pad: 0,
            },
        );
        let path = "learned/step.wgsl";
        let kernel =
            Kernel::with_constants(ctx, path, &self.kernels.step, &[("WG", lanes as f64)])?;
        let group = kernel.bind(
            ctx,
            &[
                on.bufs.opt_params,
                &lp,
                &on.problems.desc,
                on.bufs.f,
                on.bufs.g,
                &on.acts.out,
                on.bufs.x,
                on.bufs.state,
                on.bufs.history,
                on.mat,
            ],
        );
        self.push(Stage::Step, group, [0, 0, 0], lp);
        Ok(kernel)
    }

    /// Optimus's rank-one preconditioner update over `n_blocks` blocks of rows; returns
    /// its pipeline.
    pub(super) fn preconditioner(
        &mut self,
        on: &StageBuffers<'_>,
        blocks_buf: &wgpu::Buffer,
        n_blocks: u32,
    ) -> Result<Arc<Kernel>> {
        let ctx = self.ctx;
        let pp = ctx.uniform(
            "precondition params",
            &[n_blocks, self.n, on.ml.scratch_off as u32, 0],
        );
        // Four rows per invocation, as many invocations as the largest problem's first
        // block fills (16 for blocks of 64 rows).
        let wgp = on.problems.max_dim().next_power_of_two().min(ATTN_BLOCK) / 4;
        let kernel = Kernel::with_constants(
            ctx,
            "learned/precondition.wgsl",
            &self.kernels.precondition,
            &[("WGP", wgp.max(1) as f64)],
        )?;
        let group = kernel.bind(ctx, &[&pp, blocks_buf, on.bufs.state, on.bufs.x, on.mat]);
        self.push(Stage::Precondition, group, grid_1d(n_blocks), pp);
        Ok(kernel)
    }

    /// The network's layers, from the features to the head outputs: LOpt's MLP, or
    /// Optimus's embedding, blocks and head. Returns the attention pipeline (transformers).
    pub(super) fn network(
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

    pub(super) fn push(
        &mut self,
        stage: Stage,
        group: wgpu::BindGroup,
        grid: [u32; 3],
        uniform: wgpu::Buffer,
    ) {
        self.ops.push((stage, group, grid));
        self.keep.push(uniform);
    }

    pub(super) fn offset4(&self, name: &str) -> Result<u32> {
        Ok(self.layout.offset(name)? as u32 / 4)
    }

    /// y = act(LayerNorm `ln`(x)·W + b) (or y += …) for layer `name`, with `a` to hold
    /// the normalized x: lane kernels fuse the LayerNorm into the layer (it costs them
    /// little, as every invocation reads the whole input row anyway; folded into W, or
    /// per token where PES perturbs its γ and β); block kernels take a LayerNorm pass.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn norm_linear(
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
    pub(super) fn linear(
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
    pub(super) fn layernorm(
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
