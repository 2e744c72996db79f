// Adam on the meta-parameters θ (the packed weights), after `pes/stats.wgsl` measured
// the gradient's norm: non-finite entries count as 0, the gradient is clipped to
// `clip_norm`, and the learning rate comes from the host's schedule.
// CPU twin: `train::cpu::adam_step`.

struct AdamParams {
    n_elems: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    clip_norm: f32,
    // 1 − β1^t and 1 − β2^t.
    c1: f32,
    c2: f32,
}

@group(0) @binding(0) var<uniform> params: AdamParams;
// [‖ĝ‖², mean training meta-loss, non-finite gradient entries].
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> theta: array<f32>;

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
    var g = grad[q];
    if !(g == g && abs(g) <= 3.4e38) {
        g = 0.0;
    }
    let norm = sqrt(stats[0]);
    if norm > params.clip_norm {
        g *= params.clip_norm / norm;
    }
    let mq = params.beta1 * m[q] + (1.0 - params.beta1) * g;
    let vq = params.beta2 * v[q] + (1.0 - params.beta2) * g * g;
    m[q] = mq;
    v[q] = vq;
    theta[q] -= params.lr * (mq / params.c1) / (sqrt(vq / params.c2) + params.eps);
}
