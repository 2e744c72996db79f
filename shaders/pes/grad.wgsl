// Adds one truncation's share of the PES estimate to the gradient: for every packed
// weight, Σ_i c_i a_i[r] b_i[c] (matrices) or Σ_i c_i e_i[c] (vectors), with the noise of
// truncation k drawn again by `pes/noise.wgsl` and c_i from `pes/coef.wgsl`. For a
// matrix this is A·diag(c)·Bᵀ, so one invocation computes a 16×4 block of it (a vector,
// 4 of its entries), looping over pairs: per pair five vec4 loads feed 64 multiply-adds,
// where one invocation per weight loaded three values for one. Packed rows are padded
// to 4 and columns to 8, and every tensor and noise factor starts at a multiple of 4,
// so blocks tile the packed layout exactly (a block's rows past the last are skipped).
// Only the pairs whose coefficient can be nonzero for this truncation are visited
// (`live`, ascending, so the sum adds the same nonzero terms in the same order as a loop
// over every pair). Deterministic, no atomics.
// CPU twin: `train::cpu::accumulate_gradient`.

struct GradParams {
    // 16×4 blocks (matrices) and 4-entry chunks (vectors) in all.
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
    // vec4s of packed rows (a matrix's rows / 4).
    rows4: u32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> params: GradParams;
@group(0) @binding(1) var<storage, read> table: array<TensorNoise>;
@group(0) @binding(2) var<storage, read> noise: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> live: array<u32>;

// Adds the 4×4 block of row vec4 `r4`, column vec4 `cb` (if the row exists).
fn add_rows(e: TensorNoise, r4: u32, cb: u32, acc: mat4x4<f32>) {
    if r4 >= e.rows4 {
        return;
    }
    let g0 = e.offset4 + 4u * r4 * e.cols4 + cb;
    grad[g0] += acc[0];
    grad[g0 + e.cols4] += acc[1];
    grad[g0 + 2u * e.cols4] += acc[2];
    grad[g0 + 3u * e.cols4] += acc[3];
}

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
        // Rows 16·rb .. 16·rb + 15 (four vec4s of a, clamped past the last row and not
        // written there), columns 4·cb .. 4·cb + 3: per pair one load of b, which
        // differs between neighbouring invocations, serves 64 multiply-adds, and the
        // four loads of a are the same for invocations of the same row block.
        let r0 = 4u * (local / e.cols4);
        let last = e.rows4 - 1u;
        let ra = vec4<u32>(r0, min(r0 + 1u, last), min(r0 + 2u, last), min(r0 + 3u, last));
        var acc0 = mat4x4<f32>();
        var acc1 = mat4x4<f32>();
        var acc2 = mat4x4<f32>();
        var acc3 = mat4x4<f32>();
        for (var j = 0u; j < params.n_active; j++) {
            let i = live[params.list_off + j];
            let base = i * params.stride4;
            let c = coef[cbase + i];
            let b = noise[base + e.b_off4 + cb];
            let a0 = c * noise[base + e.a_off4 + ra.x];
            let a1 = c * noise[base + e.a_off4 + ra.y];
            let a2 = c * noise[base + e.a_off4 + ra.z];
            let a3 = c * noise[base + e.a_off4 + ra.w];
            acc0 += mat4x4<f32>(a0.x * b, a0.y * b, a0.z * b, a0.w * b);
            acc1 += mat4x4<f32>(a1.x * b, a1.y * b, a1.z * b, a1.w * b);
            acc2 += mat4x4<f32>(a2.x * b, a2.y * b, a2.z * b, a2.w * b);
            acc3 += mat4x4<f32>(a3.x * b, a3.y * b, a3.z * b, a3.w * b);
        }
        add_rows(e, r0, cb, acc0);
        add_rows(e, r0 + 1u, cb, acc1);
        add_rows(e, r0 + 2u, cb, acc2);
        add_rows(e, r0 + 3u, cb, acc3);
    } else {
        var acc = vec4<f32>();
        for (var j = 0u; j < params.n_active; j++) {
            let i = live[params.list_off + j];
            acc += coef[cbase + i] * noise[i * params.stride4 + e.b_off4 + cb];
        }
        grad[e.offset4 + cb] += acc;
    }
}
