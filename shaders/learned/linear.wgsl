// Token-wise linear layer for the learned optimizers: Y = act(X·W + b), or Y += X·W + b
// (residual), for every token of every problem at once. W [n_in, n_out] row-major and b
// live in the flat parameter vector θ. CPU twin: `learned::cpu::linear`.
//
// Tiled: a workgroup computes a TILE×TILE block of Y (tokens × outputs), each
// invocation a MICRO×MICRO sub-block held in registers, streaming K-slices of X and W
// through workgroup memory.

struct LinearParams {
    n_tokens: u32,
    n_in: u32,
    n_out: u32,
    // Offsets of W and b in θ.
    w_off: u32,
    b_off: u32,
    // Bit 0: ReLU on the output; bit 1: add into Y (residual).
    flags: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> params: LinearParams;
@group(0) @binding(1) var<storage, read> theta: array<f32>;
@group(0) @binding(2) var<storage, read> xin: array<f32>;
@group(0) @binding(3) var<storage, read_write> yout: array<f32>;

const TILE: u32 = 32u;
const MICRO: u32 = 4u;
const SIDE: u32 = 8u; // TILE / MICRO invocations per side
const KT: u32 = 16u;  // K-slice

var<workgroup> xs: array<f32, 512>; // TILE × KT
var<workgroup> ws: array<f32, 512>; // KT × TILE

@compute @workgroup_size(8, 8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let col0 = wid.x * TILE;
    let row0 = wid.y * TILE;
    let tx = lid3.x;
    let ty = lid3.y;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < params.n_in; k0 += KT) {
        // Stage X[row0.., k0..] and W[k0.., col0..]: 512 values each, 8 per invocation.
        for (var e = lid; e < TILE * KT; e += 64u) {
            let r = e / KT;
            let k = e % KT;
            let gr = row0 + r;
            let gk = k0 + k;
            var v = 0.0;
            if gr < params.n_tokens && gk < params.n_in {
                v = xin[gr * params.n_in + gk];
            }
            xs[e] = v;
            let kk = e / TILE;
            let c = e % TILE;
            let gc = col0 + c;
            let gk2 = k0 + kk;
            var w = 0.0;
            if gc < params.n_out && gk2 < params.n_in {
                w = theta[params.w_off + gk2 * params.n_out + gc];
            }
            ws[e] = w;
        }
        workgroupBarrier();
        for (var k = 0u; k < KT; k++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var m = 0u; m < MICRO; m++) {
                a[m] = xs[(ty * MICRO + m) * KT + k];
                b[m] = ws[k * TILE + tx * MICRO + m];
            }
            for (var m = 0u; m < MICRO; m++) {
                for (var n = 0u; n < MICRO; n++) {
                    acc[m * MICRO + n] += a[m] * b[n];
                }
            }
        }
        workgroupBarrier();
    }
    for (var m = 0u; m < MICRO; m++) {
        let r = row0 + ty * MICRO + m;
        if r >= params.n_tokens {
            continue;
        }
        for (var n = 0u; n < MICRO; n++) {
            let c = col0 + tx * MICRO + n;
            if c >= params.n_out {
                continue;
            }
            var v = acc[m * MICRO + n] + theta[params.b_off + c];
            let idx = r * params.n_out + c;
            if (params.flags & 1u) != 0u {
                v = max(v, 0.0);
            }
            if (params.flags & 2u) != 0u {
                v += yout[idx];
            }
            yout[idx] = v;
        }
    }
}
