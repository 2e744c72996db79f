// Token-wise linear layer for the learned optimizers: Y = act(X·W + b), or Y += X·W + b
// (residual), for every token of every problem at once. CPU twin:
// `learned::cpu::linear`.
//
// W [in, out] and b sit in the packed parameter vector (`learned::gpu::PackedLayout`):
// rows padded to multiples of 4 and columns to multiples of 8, so they are read as
// vec4 pairs without bounds branches in the inner loop. Each invocation
// computes an 8-token × 8-output block in registers: measured on lavapipe, that cut the
// loads per multiply-add enough to run 13 GFLOP/s where one output per invocation ran
// 1 GFLOP/s and a workgroup-memory tiling 1 GFLOP/s.

struct LinearParams {
    // Token rows, a multiple of 8 (buffers are padded).
    n_rows: u32,
    // Row widths of X and Y in vec4s; out4 is even (columns are padded to 8).
    in4: u32,
    out4: u32,
    // Offsets of W and b in the packed parameters, in vec4s.
    w_off4: u32,
    b_off4: u32,
    // Bit 0: ReLU on the output; bit 1: add into Y (residual); bit 2: perturbed.
    flags: u32,
    // Offsets of the column factor b and the bias noise e in a pair's noise, in vec4s.
    nb_off4: u32,
    ne_off4: u32,
    // Pair stride of the noise, in vec4s.
    stride4: u32,
    sigma: f32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> params: LinearParams;
@group(0) @binding(1) var<storage, read> theta: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> xin: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> yout: array<vec4<f32>>;
// Perturbation inputs (1-word dummies when not perturbed): each row's particle, its x·a,
// and the pairs' noise.
@group(0) @binding(4) var<storage, read> tok: array<u32>;
@group(0) @binding(5) var<storage, read> proj: array<f32>;
@group(0) @binding(6) var<storage, read> noise: array<vec4<f32>>;

fn finish(row: u32, col4: u32, acc: vec4<f32>) {
    var v = acc + theta[params.b_off4 + col4];
    if (params.flags & 4u) != 0u {
        let p = tok[row];
        let base = (p >> 1u) * params.stride4;
        let sg = select(-params.sigma, params.sigma, (p & 1u) == 0u);
        v += sg * (proj[row] * noise[base + params.nb_off4 + col4] + noise[base + params.ne_off4 + col4]);
    }
    if (params.flags & 1u) != 0u {
        v = max(v, vec4<f32>(0.0));
    }
    let idx = row * params.out4 + col4;
    if (params.flags & 2u) != 0u {
        v += yout[idx];
    }
    yout[idx] = v;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t0 = gid.x * 8u;
    let j = gid.y * 2u;
    if t0 >= params.n_rows {
        return;
    }
    let in4 = params.in4;
    let out4 = params.out4;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    var b4 = vec4<f32>(0.0);
    var b5 = vec4<f32>(0.0);
    var b6 = vec4<f32>(0.0);
    var b7 = vec4<f32>(0.0);
    for (var k4 = 0u; k4 < in4; k4++) {
        let x0 = xin[t0 * in4 + k4];
        let x1 = xin[(t0 + 1u) * in4 + k4];
        let x2 = xin[(t0 + 2u) * in4 + k4];
        let x3 = xin[(t0 + 3u) * in4 + k4];
        let x4 = xin[(t0 + 4u) * in4 + k4];
        let x5 = xin[(t0 + 5u) * in4 + k4];
        let x6 = xin[(t0 + 6u) * in4 + k4];
        let x7 = xin[(t0 + 7u) * in4 + k4];
        for (var kk = 0u; kk < 4u; kk++) {
            let wrow = params.w_off4 + (k4 * 4u + kk) * out4 + j;
            let w0 = theta[wrow];
            let w1 = theta[wrow + 1u];
            a0 += x0[kk] * w0;
            a1 += x1[kk] * w0;
            a2 += x2[kk] * w0;
            a3 += x3[kk] * w0;
            a4 += x4[kk] * w0;
            a5 += x5[kk] * w0;
            a6 += x6[kk] * w0;
            a7 += x7[kk] * w0;
            b0 += x0[kk] * w1;
            b1 += x1[kk] * w1;
            b2 += x2[kk] * w1;
            b3 += x3[kk] * w1;
            b4 += x4[kk] * w1;
            b5 += x5[kk] * w1;
            b6 += x6[kk] * w1;
            b7 += x7[kk] * w1;
        }
    }
    finish(t0, j, a0);
    finish(t0 + 1u, j, a1);
    finish(t0 + 2u, j, a2);
    finish(t0 + 3u, j, a3);
    finish(t0 + 4u, j, a4);
    finish(t0 + 5u, j, a5);
    finish(t0 + 6u, j, a6);
    finish(t0 + 7u, j, a7);
    finish(t0, j + 1u, b0);
    finish(t0 + 1u, j + 1u, b1);
    finish(t0 + 2u, j + 1u, b2);
    finish(t0 + 3u, j + 1u, b3);
    finish(t0 + 4u, j + 1u, b4);
    finish(t0 + 5u, j + 1u, b5);
    finish(t0 + 6u, j + 1u, b6);
    finish(t0 + 7u, j + 1u, b7);
}
