// Draws one truncation's perturbation factors for every antithetic pair: per pair a
// vector laid out by `learned::layout::NoiseLayout` (for each weight matrix a factor a over
// its rows and b over its columns, giving the rank-one perturbation σ·a bᵀ; for each
// bias and LayerNorm vector a full-rank e), zeros in the padding. Keyed by (seed,
// iteration, pair, index), so any truncation's noise can be drawn again. Redrawn for the
// gradient, it is drawn for the pairs whose coefficient can be nonzero only (`live`).
// CPU twin: `train::noise::draw`.

#include "shared/rng.wgsl"

struct NoiseParams {
    n_pairs: u32,
    // Floats per pair.
    stride: u32,
    seed: u32,
    iteration: u32,
    // Pairs drawn: all n_pairs (list 0), or the first n_active of `live` from list_off
    // (list 1).
    n_active: u32,
    list: u32,
    list_off: u32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> params: NoiseParams;
// 1 where the index is a real weight's factor, 0 in padding.
@group(0) @binding(1) var<storage, read> mask: array<u32>;
@group(0) @binding(2) var<storage, read_write> noise: array<f32>;
@group(0) @binding(3) var<storage, read> live: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if j >= params.stride || gid.y >= select(params.n_pairs, params.n_active, params.list == 1u) {
        return;
    }
    let pair = select(gid.y, live[params.list_off + gid.y], params.list == 1u);
    var v = 0.0;
    if mask[j] != 0u {
        v = counter_normal(vec4<u32>(params.seed, params.iteration, pair, j));
    }
    noise[pair * params.stride + j] = v;
}
