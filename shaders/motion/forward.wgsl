// Forward simulation of motion windows, one invocation per window: semi-implicit Euler
// over steps lo .. hi, storing every state for the adjoint pass. Completed by the
// body's generated code (src/motion/codegen.rs: load/store, forward_step).
// CPU twin: src/motion/sim.rs `simulate`.
#include "motion/body.wgsl"

@group(0) @binding(0) var<uniform> params: SimParams;
// Per window: keyframes · channels targets, then the root offsets p₀ and v₀'.
@group(0) @binding(1) var<storage, read> theta: array<f32>;
// Per window: initial positions, then initial velocities (3 floats per point each).
@group(0) @binding(2) var<storage, read> init: array<f32>;
// States n = 0 ..= N (positions, then velocities), window-minor: component j of
// window w at step n is [(n · 6 N_POINTS + j) · P + w], so neighbouring invocations
// touch neighbouring words.
@group(0) @binding(3) var<storage, read_write> traj: array<f32>;
// Per window: 0 while every state is finite and within 1 km, else 1.
@group(0) @binding(4) var<storage, read_write> status: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let p = params;
    if w >= p.n_windows {
        return;
    }
    let state = 6u * N_POINTS;
    let tw = w * p.n_params;
    var base = p.lo * state * p.n_windows + w;
    if p.lo == 0u {
        let root = tw + p.keyframes * N_CHANNELS;
        let p0 = vec3<f32>(theta[root], theta[root + 1u], theta[root + 2u]);
        let v0 = vec3<f32>(theta[root + 3u], theta[root + 4u], theta[root + 5u]);
        init_state(w * state, p0, v0);
        store_state(base);
        status[w] = 0u;
    } else {
        load_state(base);
    }
    var bad = status[w];
    for (var n = p.lo; n < p.hi; n++) {
        let k = key_of(p, n);
        forward_step(p, tw + k * N_CHANNELS, key_weight(p, n, k));
        base += state * p.n_windows;
        store_state(base);
        if !state_ok() {
            bad = 1u;
        }
    }
    status[w] = bad;
}
