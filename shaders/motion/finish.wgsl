// Completes the motion objective per window after the adjoint pass: adds the
// regularizers (smooth keyframes, angle measures within [−1, 1]) to f and ∇f, and
// makes f NaN for a window whose simulation left the finite range, so optimizers flag
// that problem and the batch goes on. CPU twin: src/motion/task.rs `regularizer`.

struct FinishParams {
    n_windows: u32,
    n_params: u32,
    keyframes: u32,
    n_channels: u32,
    smooth_w: f32,
    limit_w: f32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> params: FinishParams;
@group(0) @binding(1) var<storage, read> theta: array<f32>;
// Per channel: 1 where the channel is an angle measure with limits.
@group(0) @binding(2) var<storage, read> bounded: array<u32>;
@group(0) @binding(3) var<storage, read> data: array<f32>;
@group(0) @binding(4) var<storage, read> status: array<u32>;
@group(0) @binding(5) var<storage, read_write> f: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let p = params;
    if w >= p.n_windows {
        return;
    }
    let c = p.n_channels;
    let base = w * p.n_params;
    var value = data[w];
    for (var k = 0u; k < p.keyframes; k++) {
        for (var j = 0u; j < c; j++) {
            let i = base + k * c + j;
            var g = 0.0;
            if k + 1u < p.keyframes {
                let d = theta[i + c] - theta[i];
                value += p.smooth_w * d * d;
                g -= 2.0 * p.smooth_w * d;
            }
            if k > 0u {
                g += 2.0 * p.smooth_w * (theta[i] - theta[i - c]);
            }
            let over = abs(theta[i]) - 1.0;
            if bounded[j] != 0u && over > 0.0 {
                value += p.limit_w * over * over;
                g += 2.0 * p.limit_w * over * sign(theta[i]);
            }
            grad[i] += g;
        }
    }
    if status[w] != 0u {
        value = bitcast<f32>(0x7fc00000u);
    }
    f[w] = value;
}
