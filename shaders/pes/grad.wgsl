// Adds one truncation's share of the PES estimate to the gradient: for every packed
// weight, Σ_i c_i a_i[r] b_i[c] (matrices) or Σ_i c_i e_i[c] (vectors), with the noise of
// truncation k drawn again by `pes/noise.wgsl` and c_i from `pes/coef.wgsl`. For a
// matrix this is A·diag(c)·Bᵀ, so one invocation computes a 4×4 block of it (a vector,
// 4 of its entries), looping over pairs: per pair two vec4 loads feed 16 multiply-adds,
// where one invocation per weight loaded three values for one. Packed rows are padded
// to 4 and columns to 8, and every tensor and noise factor starts at a multiple of 4,
// so blocks tile the packed layout exactly. Only the pairs whose coefficient can be
// nonzero for this truncation are visited (`live`, ascending, so the sum adds the
// same nonzero terms in the same order as a loop over every pair). Deterministic, no
// atomics.
// CPU twin: `train::cpu::accumulate_gradient`.

struct GradParams {
    // 4×4 blocks (matrices) and 4-entry chunks (vectors) in all.
    n_quads: u32,
    n_pairs: u32,
    // vec4s per pair of noise.
    stride4: u32,
    // Row of `coef` for this truncation.
    slot: u32,
    n_tensors: u32,
    // Pairs visited: the first n_active entries of `live` from list_off.
    n_active: u32,
    list_off: u32,
    pad0: u32,
}

// One tensor of the packed parameters and where its noise sits in a pair's vector, in
// vec4 units.
struct TensorNoise {
    // First vec4 of the tensor in the packed parameters.
    offset4: u32,
    // vec4s per packed row.
    cols4: u32,
    // First block of this tensor among all blocks.
    quad_off: u32,
    // 1 for a matrix (noise a at `a_off4`, b at `b_off4`), 0 for a vector (e at `b_off4`).
    matrix: u32,
    a_off4: u32,
    b_off4: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> params: GradParams;
@group(0) @binding(1) var<storage, read> table: array<TensorNoise>;
@group(0) @binding(2) var<storage, read> noise: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> live: array<u32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q = (wid.x + wid.y * nwg.x) * 64u + lid;
    if q >= params.n_quads {
        return;
    }
    var t = 0u;
    for (var k = 0u; k < params.n_tensors; k++) {
        if q >= table[k].quad_off {
            t = k;
        }
    }
    let e = table[t];
    let local = q - e.quad_off;
    let cb = local % e.cols4;
    let cbase = params.slot * params.n_pairs;
    if e.matrix == 1u {
        let rb = local / e.cols4;
        var acc = mat4x4<f32>();
        for (var j = 0u; j < params.n_active; j++) {
            let i = live[params.list_off + j];
            let base = i * params.stride4;
            let a = coef[cbase + i] * noise[base + e.a_off4 + rb];
            let b = noise[base + e.b_off4 + cb];
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        let g0 = e.offset4 + 4u * rb * e.cols4 + cb;
        for (var k = 0u; k < 4u; k++) {
            grad[g0 + k * e.cols4] += acc[k];
        }
    } else {
        var acc = vec4<f32>();
        for (var j = 0u; j < params.n_active; j++) {
            let i = live[params.list_off + j];
            acc += coef[cbase + i] * noise[i * params.stride4 + e.b_off4 + cb];
        }
        grad[e.offset4 + cb] += acc;
    }
}
