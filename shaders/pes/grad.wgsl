// Adds one truncation's share of the PES estimate to the gradient: for every packed
// weight, Σ_i c_i a_i[r] b_i[c] (matrices) or Σ_i c_i e_i[c] (vectors), with the noise of
// truncation k drawn again by `pes/noise.wgsl` and c_i from `pes/coef.wgsl`. One
// invocation per weight, looping over pairs: deterministic, no atomics.
// CPU twin: `train::cpu::accumulate_gradient`.

struct GradParams {
    n_elems: u32,
    n_pairs: u32,
    // Floats per pair of noise.
    stride: u32,
    // Row of `coef` for this truncation.
    slot: u32,
    n_tensors: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

// One tensor of the packed parameters and where its noise sits in a pair's vector.
struct TensorNoise {
    offset: u32,
    len: u32,
    cols: u32,
    // 1 for a matrix (noise a at `a_off`, b at `b_off`), 0 for a vector (e at `b_off`).
    matrix: u32,
    a_off: u32,
    b_off: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> params: GradParams;
@group(0) @binding(1) var<storage, read> table: array<TensorNoise>;
@group(0) @binding(2) var<storage, read> noise: array<f32>;
@group(0) @binding(3) var<storage, read> coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q = (wid.x + wid.y * nwg.x) * 64u + lid;
    if q >= params.n_elems {
        return;
    }
    var t = 0u;
    for (var k = 0u; k < params.n_tensors; k++) {
        if q >= table[k].offset {
            t = k;
        }
    }
    let e = table[t];
    let local = q - e.offset;
    let c = local % e.cols;
    let cbase = params.slot * params.n_pairs;
    var acc = 0.0;
    if e.matrix == 1u {
        let r = local / e.cols;
        for (var i = 0u; i < params.n_pairs; i++) {
            let base = i * params.stride;
            acc += coef[cbase + i] * noise[base + e.a_off + r] * noise[base + e.b_off + c];
        }
    } else {
        for (var i = 0u; i < params.n_pairs; i++) {
            acc += coef[cbase + i] * noise[i * params.stride + e.b_off + c];
        }
    }
    grad[q] += acc;
}
