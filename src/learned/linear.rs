//! The kernels of the token-wise linear layers, laid out for the device at hand.
//!
//! GPUs get `linear_blocks.wgsl`: thousands of invocations, each an 8-token × 8-output
//! block in registers. CPU devices (lavapipe) run a workgroup as one SIMD vector of 8
//! invocations, and there a load whose address differs between invocations costs a
//! scalar loop over them (about 120 cycles per vec4 for all 8), one that is the same
//! for all a scalar load (about 15 cycles). So there each invocation owns a few output
//! columns, keeps its slice of W in registers for the whole run, and walks 256 tokens;
//! the invocations load each token's inputs together, a share each, and pass them to
//! all with subgroup broadcasts. Measured on lavapipe at 131 072 tokens, 64 → 192 went
//! from 7 GFLOP/s (blocks) to 38 (columns, every invocation loading every input) to 58
//! (broadcasts), 64 → 64 from 7 to 25 to 55. The code is generated per layer shape
//! (straight-line over the input width, so W's slice is constant-indexed) and
//! completes `linear.wgsl`.

use crate::context::GpuContext;
use crate::error::Result;
use crate::kernel::{compose, Kernel};
use std::fmt::Write;
use std::sync::Arc;

/// Tokens per invocation of `linear_blocks.wgsl`; token rows are padded to a multiple.
pub const BLOCK_ROWS: u32 = 8;
/// Invocations per workgroup of `linear_blocks.wgsl`.
const BLOCK_WG: u32 = 64;
/// Tokens one workgroup of a lane kernel walks.
const LANE_TOKENS: u32 = 256;
/// Largest number of invocations of a lane kernel: one SIMD vector on lavapipe.
const MAX_LANES: u32 = 8;
/// Most weights (vec4s) one invocation of a lane kernel holds. Wider layers take the
/// blocks kernel even on a CPU device: their straight-line lane kernels would take
/// minutes to build on lavapipe (a width-256 model's did not finish in 10). The
/// default model's largest slice is 384 (64 inputs × 6 vec4 columns of q/k/v).
const MAX_LANE_WEIGHTS: u32 = 1024;
const MAX_GROUPS: u32 = 65535;

/// Epilogue flags of a layer (`FLAGS` in `linear.wgsl`).
pub const RELU: u32 = 1;
pub const RESIDUAL: u32 = 2;
pub const PERTURBED: u32 = 4;
/// LayerNorm the input first (lane kernels only): folded into W where γ and β are
/// shared by every particle, per token with the pair's perturbed γ and β where they are
/// not (with [`PERTURBED_NORM`]).
pub const NORMALIZED: u32 = 8;
/// With [`NORMALIZED`] and [`PERTURBED`]: γ and β carry each particle's perturbation.
pub const PERTURBED_NORM: u32 = 16;

/// How the work of the linear layers and of attention is spread over invocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiling {
    /// Many small invocations: 8 × 8 register blocks (`linear_blocks.wgsl`) and
    /// attention through workgroup memory (`attention_tiles.wgsl`), for GPUs.
    Blocks,
    /// One subgroup of 8 per workgroup sharing loads by broadcasts (generated), for
    /// CPU devices.
    Lanes,
}

impl Tiling {
    /// The layout that suits `ctx`'s device: lanes on a CPU device whose subgroups
    /// span a whole lane workgroup (the lane kernels pass inputs between invocations
    /// with subgroup broadcasts), blocks otherwise.
    pub fn for_device(ctx: &GpuContext) -> Self {
        if lanes_supported(ctx) && ctx.device.adapter_info().device_type == wgpu::DeviceType::Cpu {
            Tiling::Lanes
        } else {
            Tiling::Blocks
        }
    }
}

/// Whether `ctx`'s device can run the lane kernels: subgroup operations, with
/// subgroups of at least `MAX_LANES` invocations.
pub fn lanes_supported(ctx: &GpuContext) -> bool {
    ctx.device.features().contains(wgpu::Features::SUBGROUP)
        && ctx.device.adapter_info().subgroup_min_size >= MAX_LANES
}

/// Linear-layer pipelines, built on first use (lane kernels per layer shape) and kept
/// in the device's cache (`GpuContext::cached`), so every run on a device shares them.
pub struct LinearKernels {
    tiling: Tiling,
    common: String,
}

impl LinearKernels {
    pub fn new(tiling: Tiling) -> Result<Self> {
        Ok(Self {
            tiling,
            common: compose("learned/linear.wgsl")?,
        })
    }

    /// Whether a layer from `in4` to `out4` vec4s runs a lane kernel (which can fuse
    /// the input LayerNorm).
    pub fn lanes_for(&self, in4: u32, out4: u32) -> bool {
        self.tiling == Tiling::Lanes && 4 * in4 * columns_per_lane(out4) <= MAX_LANE_WEIGHTS
    }

    /// Most token rows one dispatch takes.
    pub fn max_rows(&self) -> u64 {
        let per_group = match self.tiling {
            Tiling::Blocks => BLOCK_ROWS * BLOCK_WG,
            Tiling::Lanes => LANE_TOKENS,
        };
        per_group as u64 * MAX_GROUPS as u64
    }

    /// The pipeline and grid for `rows` token rows (a multiple of [`BLOCK_ROWS`]) of a
    /// layer from `in4` to `out4` vec4s (`out4` even) with epilogue `flags`.
    pub fn layer(
        &self,
        ctx: &GpuContext,
        rows: u32,
        in4: u32,
        out4: u32,
        flags: u32,
    ) -> Result<(Arc<Kernel>, [u32; 3])> {
        let constants = [("FLAGS", flags as f64)];
        if self.lanes_for(in4, out4) {
            let c4 = columns_per_lane(out4);
            let label = format!("learned/linear lanes {in4}x{out4} ({c4} per lane)");
            let src = lane_source(&self.common, in4, c4, out4 / c4, flags);
            let k = Kernel::with_constants(ctx, &label, &src, &constants)?;
            Ok((k, [rows.div_ceil(LANE_TOKENS), 1, 1]))
        } else {
            let path = "learned/linear_blocks.wgsl";
            let k = Kernel::with_constants(ctx, path, &compose(path)?, &constants)?;
            let groups = (rows / BLOCK_ROWS).div_ceil(BLOCK_WG);
            Ok((k, [groups, out4.div_ceil(2), 1]))
        }
    }
}

/// Output vec4s per invocation of a lane kernel: the fewest that split `out4` over at
/// most [`MAX_LANES`] invocations.
fn columns_per_lane(out4: u32) -> u32 {
    (out4.div_ceil(MAX_LANES)..=out4)
        .find(|c| out4.is_multiple_of(*c))
        .unwrap_or(out4)
        .max(1)
}

/// `linear.wgsl` completed by a lane kernel for inputs of `in4` vec4s and `c4` output
/// vec4s on each of `lanes` invocations, LayerNorm-ing its input first if `norm`. The
/// LayerNorm is folded into the layer: with c = x − mean and inv = 1/sqrt(var + ε),
/// (c·inv∘γ + β)·W + b = inv·(c·W') + b' for W' = diag(γ)·W and b' = β·W + b, which an
/// invocation forms once for its columns, so a token costs only its mean and variance
/// more (measured: normalizing each input instead cost the qkv layer 40%).
///
/// Perturbed (`flags` & [`PERTURBED`]), it keeps the pair's noise b and e for its
/// columns, and its share of the row factor a, in registers, reloading them only when
/// the token's pair changes (a pair's tokens are contiguous: an outer loop over pairs
/// reloads, an inner one walks the pair's tokens; measured 6–8 % faster a perturbed step
/// than a reload behind a branch in one token loop), and projects each token
/// onto a itself: every invocation dots the share of the input it loaded anyway, and a
/// subgroup sum adds the shares, so no separate projection pass reads the activations
/// again. Folded LayerNorm and perturbation go together when γ and β are not perturbed:
/// LN(x)·a = inv·(c·(γ∘a)) + β·a, the share of γ∘a and β·a formed once per pair.
///
/// When γ and β are perturbed too ([`PERTURBED_NORM`]) they differ per particle and
/// cannot be folded into the shared W: each invocation normalizes its own share of the
/// input with the particle's γ ± σe_γ and β ± σe_β (kept per pair in registers; the
/// mean and variance are subgroup sums of the shares) before the broadcasts, so a token
/// costs two more subgroup sums and no LayerNorm pass writes and reads the activations
/// again.
fn lane_source(common: &str, in4: u32, c4: u32, lanes: u32, flags: u32) -> String {
    let pert = flags & PERTURBED != 0;
    // LayerNorm with the particle's γ and β, per token.
    let pnorm = flags & NORMALIZED != 0 && pert && flags & PERTURBED_NORM != 0;
    // LayerNorm folded into W.
    let norm = flags & NORMALIZED != 0 && !pnorm;
    let out4 = c4 * lanes;
    let mut s = String::from(common);
    // `write!` to a String cannot fail.
    let w = &mut s;
    let _ = writeln!(
        w,
        "\n@compute @workgroup_size({lanes})\n\
         fn main(@builtin(local_invocation_id) lid: vec3<u32>, \
         @builtin(workgroup_id) wid: vec3<u32>, \
         @builtin(subgroup_invocation_id) sl: u32) {{\n    let c = lid.x * {c4}u;"
    );
    if norm {
        for k4 in 0..in4 {
            let _ = writeln!(
                w,
                "    let g{k4} = theta[params.ln_g_off4 + {k4}u];\n    \
                 let be{k4} = theta[params.ln_b_off4 + {k4}u];"
            );
        }
    }
    // This invocation's columns of W and b, held for every token.
    for j in 0..c4 {
        let _ = writeln!(w, "    var b{j} = bias(c + {j}u);");
        for k in 0..4 * in4 {
            let at = format!("theta[params.w_off4 + {k}u * {out4}u + c + {j}u]");
            if norm {
                let (k4, comp) = (k / 4, COMP[k as usize % 4]);
                let _ = writeln!(
                    w,
                    "    let u{k}_{j} = {at};\n    \
                     b{j} += be{k4}.{comp} * u{k}_{j};\n    \
                     let w{k}_{j} = g{k4}.{comp} * u{k}_{j};"
                );
            } else {
                let _ = writeln!(w, "    let w{k}_{j} = {at};");
            }
        }
    }
    let shares = in4.div_ceil(lanes);
    // This invocation's share of the token's inputs: vec4 `q·lanes + sl`, clamped (the
    // loads) or masked (the projection) past the row.
    let share = |q: u32| format!("min({}u + sl, {}u)", q * lanes, in4 - 1);
    if pnorm {
        // This invocation's share of the shared γ and β.
        for q in 0..shares {
            let _ = writeln!(
                w,
                "    let lg{q} = theta[params.ln_g_off4 + {s}];\n    \
                 let lb{q} = theta[params.ln_b_off4 + {s}];\n    \
                 let in{q} = {}u + sl < {in4}u;",
                q * lanes,
                s = share(q)
            );
        }
    }
    if pert {
        let _ = writeln!(w, "    var pair = 0xffffffffu;");
        for j in 0..c4 {
            let _ = writeln!(
                w,
                "    var nb{j} = vec4<f32>(0.0);\n    var ne{j} = vec4<f32>(0.0);"
            );
        }
        for q in 0..shares {
            let _ = writeln!(w, "    var na{q} = vec4<f32>(0.0);");
            if pnorm {
                let _ = writeln!(
                    w,
                    "    var ng{q} = vec4<f32>(0.0);\n    var nl{q} = vec4<f32>(0.0);"
                );
            }
        }
        if norm {
            let _ = writeln!(w, "    var beta_a = 0.0;");
        }
    }
    let _ = writeln!(
        w,
        "    let t0 = wid.x * {LANE_TOKENS}u;\n    let t1 = min(t0 + {LANE_TOKENS}u, params.n_rows);"
    );
    if !pert {
        let _ = writeln!(w, "    for (var t = t0; t < t1; t++) {{");
    } else {
        // An outer loop over the pairs, which reloads, and an inner one over a pair's
        // tokens, whose body has no reload in it.
        let _ = writeln!(
            w,
            "    var t = t0;\n    loop {{\n        if t >= t1 {{ break; }}\n            \
             pair = tok[t] >> 1u;\n            let base = pair * params.stride4;"
        );
        for j in 0..c4 {
            let _ = writeln!(
                w,
                "            nb{j} = noise[base + params.nb_off4 + c + {j}u];\n            \
                 ne{j} = noise[base + params.ne_off4 + c + {j}u];"
            );
        }
        for q in 0..shares {
            let _ = writeln!(
                w,
                "            na{q} = select(vec4<f32>(0.0), noise[base + params.na_off4 + {}], \
                 {}u + sl < {in4}u);",
                share(q),
                q * lanes
            );
            if pnorm {
                let _ = writeln!(
                    w,
                    "            ng{q} = noise[base + params.ln_ng_off4 + {s}];\n            \
                     nl{q} = noise[base + params.ln_nb_off4 + {s}];",
                    s = share(q)
                );
            }
        }
        if norm {
            // β·a, then the share of γ∘a.
            let dots = (0..shares)
                .map(|q| format!("dot(theta[params.ln_b_off4 + {}], na{q})", share(q)))
                .collect::<Vec<_>>()
                .join(" + ");
            let _ = writeln!(w, "            beta_a = subgroupAdd({dots});");
            for q in 0..shares {
                let _ = writeln!(
                    w,
                    "            na{q} *= theta[params.ln_g_off4 + {}];",
                    share(q)
                );
            }
        }
        let _ = writeln!(
            w,
            "        loop {{\n        if t >= t1 {{ break; }}\n        let p = tok[t];\n        \
             if (p >> 1u) != pair {{ break; }}"
        );
    }
    let raw = if norm { "r" } else { "x" };
    // Each invocation loads a share of the token's inputs, and broadcasts pass them to
    // all (measured on lavapipe: 2.1–2.4x faster at 64 and 128 → 64, 1.45x at
    // 64 → 192, than every invocation loading every input itself).
    for q in 0..shares {
        let _ = writeln!(w, "        let y{q} = xin[t * {in4}u + {}];", share(q));
    }
    // What is broadcast: the inputs, or (pnorm) their normalized shares.
    let sent = if pnorm { "yn" } else { "y" };
    if pnorm {
        let n = 4 * in4;
        let sum = |f: &dyn Fn(u32) -> String| (0..shares).map(f).collect::<Vec<_>>().join(" + ");
        let _ = writeln!(
            w,
            "        let mean = subgroupAdd({}) / {n}.0;",
            sum(&|q| format!("select(0.0, dot(y{q}, vec4<f32>(1.0)), in{q})"))
        );
        for q in 0..shares {
            let _ = writeln!(
                w,
                "        let cy{q} = select(vec4<f32>(0.0), y{q} - mean, in{q});"
            );
        }
        let _ = writeln!(
            w,
            "        let inv = inverseSqrt(subgroupAdd({}) / {n}.0 + LN_EPS);\n        \
             let sg = select(-params.sigma, params.sigma, (p & 1u) == 0u);",
            sum(&|q| format!("dot(cy{q}, cy{q})"))
        );
        for q in 0..shares {
            let _ = writeln!(
                w,
                "        let yn{q} = cy{q} * inv * (lg{q} + sg * ng{q}) + lb{q} + sg * nl{q};"
            );
        }
    }
    for k4 in 0..in4 {
        let _ = writeln!(
            w,
            "        let {raw}{k4} = subgroupBroadcast({sent}{}, {}u);",
            k4 / lanes,
            k4 % lanes
        );
    }
    if norm {
        let n = 4 * in4;
        let all = |f: &dyn Fn(u32) -> String| (0..in4).map(f).collect::<Vec<_>>().join(" + ");
        let _ = writeln!(
            w,
            "        let sum = {};\n        \
             let mean = (sum.x + sum.y + sum.z + sum.w) / {n}.0;",
            all(&|k| format!("r{k}"))
        );
        for k4 in 0..in4 {
            let _ = writeln!(w, "        let x{k4} = r{k4} - mean;");
        }
        let _ = writeln!(
            w,
            "        let sq = {};\n        \
             let inv = inverseSqrt((sq.x + sq.y + sq.z + sq.w) / {n}.0 + LN_EPS);",
            all(&|k| format!("x{k} * x{k}"))
        );
    }
    if pert {
        // The token's projection onto a (of its normalized input if `norm`).
        let centre = if norm { " - mean" } else { "" };
        let dots = (0..shares)
            .map(|q| format!("dot({sent}{q}{centre}, na{q})"))
            .collect::<Vec<_>>()
            .join(" + ");
        let z = if norm {
            format!("inv * subgroupAdd({dots}) + beta_a")
        } else {
            format!("subgroupAdd({dots})")
        };
        let _ = writeln!(w, "        let z = {z};");
    }
    for j in 0..c4 {
        let init = if norm {
            "vec4<f32>(0.0)".to_string()
        } else {
            format!("b{j}")
        };
        let _ = writeln!(w, "        var a{j} = {init};");
    }
    for k in 0..4 * in4 {
        let comp = COMP[k as usize % 4];
        for j in 0..c4 {
            let _ = writeln!(w, "        a{j} += x{}.{comp} * w{k}_{j};", k / 4);
        }
    }
    for j in 0..c4 {
        let v = if norm {
            format!("a{j} * inv + b{j}")
        } else {
            format!("a{j}")
        };
        if pert {
            let _ = writeln!(
                w,
                "        store(t, c + {j}u, {v} + perturbation_z(p, z, nb{j}, ne{j}));"
            );
        } else {
            let _ = writeln!(w, "        finish(t, c + {j}u, {v});");
        }
    }
    if pert {
        // The inner loop; the outer closes below, as the token loop does unperturbed.
        let _ = writeln!(w, "        t++;\n        }}");
    }
    let _ = writeln!(w, "    }}\n}}");
    s
}

const COMP: [&str; 4] = ["x", "y", "z", "w"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::validate;

    #[test]
    fn columns_split_over_at_most_eight_lanes() {
        for out4 in (2..=96).step_by(2) {
            let c4 = columns_per_lane(out4);
            assert!(out4.is_multiple_of(c4) && out4 / c4 <= MAX_LANES, "{out4}");
        }
        assert_eq!(columns_per_lane(48), 6);
        assert_eq!(columns_per_lane(16), 2);
        assert_eq!(columns_per_lane(2), 1);
    }

    #[test]
    fn wide_layers_take_the_blocks_kernel() {
        let k = LinearKernels::new(Tiling::Lanes).unwrap();
        // The default model's q/k/v (64 → 192) and the test's MLP of 1040 (32 → 1040).
        assert!(k.lanes_for(16, 48));
        assert!(!k.lanes_for(8, 260));
        assert!(!LinearKernels::new(Tiling::Blocks)
            .unwrap()
            .lanes_for(16, 48));
    }

    #[test]
    fn lane_kernels_are_valid_wgsl() {
        let common = compose("learned/linear.wgsl").unwrap();
        for (in4, out4) in [(9, 16), (16, 48), (32, 16), (1, 2)] {
            let c4 = columns_per_lane(out4);
            for flags in [
                0,
                NORMALIZED,
                PERTURBED,
                PERTURBED | RELU | RESIDUAL,
                NORMALIZED | PERTURBED | RELU,
                NORMALIZED | PERTURBED | PERTURBED_NORM,
                NORMALIZED | PERTURBED | PERTURBED_NORM | RELU,
            ] {
                let src = lane_source(&common, in4, c4, out4 / c4, flags);
                validate("lanes", &src).unwrap();
            }
        }
    }
}
