// LayerNorm over each token's channels: y = (x − mean)/sqrt(var + 1e-5)·γ + β, one
// invocation per token, channels read as vec4 (widths are multiples of 4). γ and β
// live in the packed parameters; in meta-training each particle adds ±σ e to them, and
// the pass also writes y·a, the next perturbed linear layer's projection onto its
// pair's row factor a (what `pes/project.wgsl` computes for other layers), while y is
// in registers. This pass feeds the block kernels (GPUs); the lane kernels of CPU
// devices normalize their input themselves (`learned::linear`). CPU twins:
// `learned::cpu::layernorm`, `train::noise::perturbed_model`.

struct LnParams {
    n_tokens: u32,
    // Channels in vec4s.
    n4: u32,
    // Offsets of γ and β in the packed parameters, in vec4s.
    g_off4: u32,
    b_off4: u32,
    // Offsets of γ's and β's noise in a pair's noise, in vec4s.
    ng_off4: u32,
    nb_off4: u32,
    // Pair stride of the noise in vec4s; 0 when not perturbed.
    stride4: u32,
    sigma: f32,
    // Offset of the next layer's row factor a in a pair's noise, in vec4s (perturbed).
    a_off4: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> params: LnParams;
@group(0) @binding(1) var<storage, read> theta: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> xin: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> yout: array<vec4<f32>>;
// Each token's particle and the pairs' noise (1-word dummies when not perturbed).
@group(0) @binding(4) var<storage, read> tok: array<u32>;
@group(0) @binding(5) var<storage, read> noise: array<vec4<f32>>;
// y·a per token (perturbed; a 1-word dummy otherwise).
@group(0) @binding(6) var<storage, read_write> proj: array<f32>;

#include "learned/norm.wgsl"

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = (wid.x + wid.y * nwg.x) * 64u + lid;
    if t >= params.n_tokens {
        return;
    }
    let n4 = params.n4;
    let base = t * n4;
    var s = vec4<f32>(0.0);
    for (var j = 0u; j < n4; j++) {
        s += xin[base + j];
    }
    let mean = (s.x + s.y + s.z + s.w) / f32(4u * n4);
    var q = vec4<f32>(0.0);
    for (var j = 0u; j < n4; j++) {
        let c = xin[base + j] - mean;
        q += c * c;
    }
    let inv = inverseSqrt((q.x + q.y + q.z + q.w) / f32(4u * n4) + LN_EPS);
    if params.stride4 == 0u {
        for (var j = 0u; j < n4; j++) {
            yout[base + j] = (xin[base + j] - mean) * inv * theta[params.g_off4 + j] + theta[params.b_off4 + j];
        }
    } else {
        let p = tok[t];
        let nbase = (p >> 1u) * params.stride4;
        let sg = select(-params.sigma, params.sigma, (p & 1u) == 0u);
        var z = 0.0;
        for (var j = 0u; j < n4; j++) {
            let gamma = theta[params.g_off4 + j] + sg * noise[nbase + params.ng_off4 + j];
            let beta = theta[params.b_off4 + j] + sg * noise[nbase + params.nb_off4 + j];
            let y = (xin[base + j] - mean) * inv * gamma + beta;
            yout[base + j] = y;
            z += dot(y, noise[nbase + params.a_off4 + j]);
        }
        proj[t] = z;
    }
}
