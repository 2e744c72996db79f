//! The attention kernels, laid out for the device at hand (see `learned::linear` for
//! why CPU devices want their own layout).
//!
//! GPUs get `attention_tiles.wgsl`: keys and values staged in workgroup memory, two
//! queries per invocation. On lavapipe a read of workgroup memory inside a loop is a
//! scalar loop over the invocations even when every invocation reads the same word, and
//! a barrier splits the kernel into coroutines. So there a workgroup is one SIMD vector
//! (one subgroup) of 8 invocations holding 4 or 8 queries each of one problem and head;
//! the invocations load a tile of key and value rows together, a share each, and pass
//! them to all with subgroup broadcasts, so every read serves all 32 or 64 queries.
//! Keys go in tiles of `KEY_TILE` so the running maximum and sums are rescaled once
//! per tile. The code is generated per head width, straight-line over queries, keys of
//! a tile and channels.

use crate::context::GpuContext;
use crate::error::Result;
use crate::kernel::{compose, Kernel};
use crate::learned::linear::Tiling;
use std::fmt::Write;
use std::sync::Arc;

/// Queries per query block (`BLOCK` in `attention_tiles.wgsl`).
pub const BLOCK: u32 = 64;
/// Queries per invocation of a lane kernel: more share each key read, but past d they
/// are wasted, so as many as the largest problem fills, up to 8 (measured on lavapipe:
/// at d = 32, 4 beat 8, which wastes half the block; at d = 1000, 8 ran 1.6x faster
/// than 4; at d = 16, 2 took the PES bench's attention from 110 to 93 ms a step).
/// Either way one workgroup covers a problem's whole query block.
fn queries_per_lane(dmax: u32) -> u32 {
    dmax.div_ceil(LANES).clamp(1, 8)
}
/// Invocations of a lane kernel's workgroup: one SIMD vector on lavapipe.
const LANES: u32 = 8;
/// Keys per tile of a lane kernel (measured on lavapipe with the broadcast reads: 4
/// beats 1, 2 and 8 at d = 32, 100 and 1000).
const KEY_TILE: u32 = 4;

/// Attention pipelines, built on first use by head width and kept in the device's
/// cache (`GpuContext::cached`).
pub struct AttentionKernels {
    tiling: Tiling,
    common: String,
}

impl AttentionKernels {
    pub fn new(tiling: Tiling) -> Result<Self> {
        Ok(Self {
            tiling,
            common: compose("learned/attention.wgsl")?,
        })
    }

    /// Most loop iterations one invocation runs for problems of up to `dmax`
    /// coordinates and heads of `hd4` vec4s (lavapipe ends an invocation past 65 535).
    pub fn loop_iterations(&self, dmax: u64, hd4: u64) -> u64 {
        match self.tiling {
            Tiling::Blocks => dmax * (1 + 3 * hd4) + 64,
            Tiling::Lanes => dmax.div_ceil(KEY_TILE as u64) + 1,
        }
    }

    /// The pipeline for heads of `hd4` vec4s when the largest problem has `dmax`
    /// coordinates, and the z extent of its grid (x, y: the query blocks).
    pub fn layer(
        &self,
        ctx: &GpuContext,
        hd4: u32,
        heads: u32,
        dmax: u32,
    ) -> Result<(Arc<Kernel>, u32)> {
        match self.tiling {
            Tiling::Blocks => {
                // Two heads per workgroup when every problem fits one 32-query block.
                let pair = dmax <= 32 && heads.is_multiple_of(2) && hd4 <= 4;
                let path = "learned/attention_tiles.wgsl";
                let constants = [("HD4", hd4 as f64), ("PAIR", pair as u32 as f64)];
                let k = Kernel::with_constants(ctx, path, &compose(path)?, &constants)?;
                Ok((k, if pair { heads / 2 } else { heads }))
            }
            Tiling::Lanes => {
                let qpl = queries_per_lane(dmax);
                let label = format!("learned/attention lanes {hd4}x{qpl}");
                let k = Kernel::new(ctx, &label, &lane_source(&self.common, hd4, qpl))?;
                Ok((k, heads))
            }
        }
    }
}

/// `attention.wgsl` completed by a lane kernel for heads of `hd4` vec4s and `nq`
/// queries per invocation.
fn lane_source(common: &str, hd4: u32, nq: u32) -> String {
    let nt = KEY_TILE;
    let mut s = String::from(common);
    // `write!` to a String cannot fail.
    let w = &mut s;
    let _ = writeln!(
        w,
        "\n@compute @workgroup_size({LANES})\n\
         fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, \
         @builtin(local_invocation_index) lid: u32, \
         @builtin(subgroup_invocation_id) sl: u32) {{\n    \
         let b = wid.x + wid.y * nwg.x;\n    \
         if b >= params.n_blocks {{\n        return;\n    }}\n    \
         let blk = blocks[b];\n    \
         let off = blk.x;\n    \
         let d = blk.y;\n    \
         let first = blk.z;\n    \
         let w4 = params.width / 4u;\n    \
         let stride4 = 3u * w4;\n    \
         let hq = wid.z * {hd4}u;\n    \
         let scale = inverseSqrt({}.0);",
        4 * hd4
    );
    // This invocation's queries (rows past d are clamped and not written).
    for i in 0..nq {
        let _ = writeln!(
            w,
            "    let qi{i} = first + lid + {}u;\n    \
             let qr{i} = (off + min(qi{i}, d - 1u)) * stride4 + hq;\n    \
             var m{i} = -3.0e38;\n    var l{i} = 0.0;",
            LANES * i
        );
        for c in 0..hd4 {
            let _ = writeln!(
                w,
                "    let q{i}_{c} = qkv[qr{i} + {c}u] * scale;\n    var a{i}_{c} = vec4<f32>(0.0);"
            );
        }
    }
    let _ = writeln!(w, "    for (var j = 0u; j < d; j += {nt}u) {{");
    // The tile's key and value rows, nt·hd4 vec4s each: every invocation loads a share
    // (item e = (kind·nt + t)·hd4 + c, kind 0 for keys, 1 for values) and subgroup
    // broadcasts pass them to all (measured on lavapipe: attention 1.4x faster at
    // d = 32 and 1.8x at d = 1000 than every invocation loading every value itself).
    let items = 2 * nt * hd4;
    for q in 0..items.div_ceil(LANES) {
        let _ = writeln!(
            w,
            "        let e{q} = min({}u + sl, {}u);\n        \
             let y{q} = qkv[(off + min(j + (e{q} / {hd4}u) % {nt}u, d - 1u)) * stride4 + hq \
             + (1u + e{q} / {}u) * w4 + e{q} % {hd4}u];",
            q * LANES,
            items - 1,
            nt * hd4
        );
    }
    let item = |kind: u32, t: u32, c: u32| {
        let e = (kind * nt + t) * hd4 + c;
        format!("subgroupBroadcast(y{}, {}u)", e / LANES, e % LANES)
    };
    for t in 0..nt {
        for c in 0..hd4 {
            let _ = writeln!(w, "        let k{t}_{c} = {};", item(0, t, c));
        }
    }
    for i in 0..nq {
        for t in 0..nt {
            let dots: Vec<String> = (0..hd4)
                .map(|c| format!("dot(q{i}_{c}, k{t}_{c})"))
                .collect();
            let _ = writeln!(
                w,
                "        let s{i}_{t} = select(-3.0e38, {}, j + {t}u < d);",
                dots.join(" + ")
            );
        }
        let scores: Vec<String> = (0..nt).map(|t| format!("s{i}_{t}")).collect();
        let _ = writeln!(
            w,
            "        let mx{i} = max(m{i}, {});\n        \
             let corr{i} = exp(m{i} - mx{i});\n        m{i} = mx{i};",
            max_of(&scores)
        );
        let ps: Vec<String> = (0..nt).map(|t| format!("p{i}_{t}")).collect();
        for t in 0..nt {
            let _ = writeln!(w, "        let p{i}_{t} = exp(s{i}_{t} - mx{i});");
        }
        let _ = writeln!(w, "        l{i} = l{i} * corr{i} + {};", ps.join(" + "));
    }
    for t in 0..nt {
        for c in 0..hd4 {
            let _ = writeln!(w, "        let v{t}_{c} = {};", item(1, t, c));
        }
    }
    for i in 0..nq {
        for c in 0..hd4 {
            let terms: Vec<String> = (0..nt).map(|t| format!("p{i}_{t} * v{t}_{c}")).collect();
            let _ = writeln!(
                w,
                "        a{i}_{c} = a{i}_{c} * corr{i} + {};",
                terms.join(" + ")
            );
        }
    }
    let _ = writeln!(w, "    }}");
    for i in 0..nq {
        let _ = writeln!(w, "    if qi{i} < d {{");
        for c in 0..hd4 {
            let _ = writeln!(
                w,
                "        att[(off + qi{i}) * w4 + hq + {c}u] = a{i}_{c} / l{i};"
            );
        }
        let _ = writeln!(w, "    }}");
    }
    let _ = writeln!(w, "}}");
    s
}

/// `max(a, max(b, …))` of WGSL expressions.
fn max_of(items: &[String]) -> String {
    match items {
        [one] => one.clone(),
        [first, rest @ ..] => format!("max({first}, {})", max_of(rest)),
        [] => unreachable!("a key tile is never empty"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::validate;

    #[test]
    fn lane_kernels_are_valid_wgsl() {
        let common = compose("learned/attention.wgsl").unwrap();
        for hd4 in 1..=8 {
            for nq in 1..=8 {
                validate("lanes", &lane_source(&common, hd4, nq)).unwrap();
            }
        }
    }
}
