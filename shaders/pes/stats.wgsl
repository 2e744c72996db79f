// One workgroup sums what a meta-iteration reports and Adam needs: the squared norm of
// the finite gradient entries, the number of non-finite ones, and the training
// meta-loss (mean over particles of their truncation's mean l_t). Deterministic tree
// reduction (`shared/reduce.wgsl`). CPU twin: `train::cpu::stats`.

struct StatsParams {
    n_elems: u32,
    n_particles: u32,
    inv_k: f32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> params: StatsParams;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;

#include "shared/reduce.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    var acc = vec4<f32>(0.0);
    for (var q = lid; q < params.n_elems; q += WG) {
        let g = grad[q];
        if g == g && abs(g) <= 3.4e38 {
            acc.x += g * g;
        } else {
            acc.z += 1.0;
        }
    }
    for (var p = lid; p < params.n_particles; p += WG) {
        acc.y += (loss[2u * p] + loss[2u * p + 1u]) * params.inv_k;
    }
    let total = wg_sum4(lid, acc);
    if lid == 0u {
        stats[0] = total.x;
        stats[1] = total.y / f32(params.n_particles);
        stats[2] = total.z;
    }
}
