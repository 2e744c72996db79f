// Adjoint (reverse) pass over stored motion windows, one invocation per window, steps
// hi − 1 down to lo: with v̄' = v̄ₙ₊₁ + h x̄ₙ₊₁ and λ = h M⁻¹ v̄',
// x̄ₙ = x̄ₙ₊₁ + (∂F/∂x)ᵀλ + ∂L/∂xₙ, v̄ₙ = v̄' + (∂F/∂v)ᵀλ, θ̄ += (∂F/∂θ)ᵀλ. Completed by
// the body's generated code (src/motion/codegen.rs: adjoint_step and state moves).
// CPU twin: src/motion/sim.rs `adjoint`.
#include "motion/body.wgsl"

@group(0) @binding(0) var<uniform> params: SimParams;
@group(0) @binding(1) var<storage, read> theta: array<f32>;
// States n = 0 ..= N (positions, then velocities), window-minor: component j of
// window w at step n is [(n · 6 N_POINTS + j) · P + w].
@group(0) @binding(2) var<storage, read> traj: array<f32>;
// ∂L/∂xₙ, window-minor like traj: [(n · 3 N_POINTS + j) · P + w].
@group(0) @binding(3) var<storage, read> seeds: array<f32>;
// x̄ and v̄ per window between dispatches.
@group(0) @binding(4) var<storage, read_write> adj: array<f32>;
// ∂L/∂θ per window (the optimizer's gradient buffer).
@group(0) @binding(5) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let p = params;
    if w >= p.n_windows {
        return;
    }
    let tw = w * p.n_params;
    let ab = w * 6u * N_POINTS;
    if p.hi == p.n_steps {
        seed_final(p.n_steps * 3u * N_POINTS * p.n_windows + w);
        for (var j = 0u; j < p.n_params; j++) {
            grad[tw + j] = 0.0;
        }
    } else {
        load_adjoint(ab);
    }
    for (var n = p.hi; n > p.lo; n--) {
        let step = n - 1u;
        let k = key_of(p, step);
        adjoint_step(
            p,
            step * 6u * N_POINTS * p.n_windows + w,
            step * 3u * N_POINTS * p.n_windows + w,
            tw + k * N_CHANNELS,
            key_weight(p, step, k),
        );
    }
    if p.lo == 0u {
        root_gradient(tw + p.keyframes * N_CHANNELS);
    } else {
        store_adjoint(ab);
    }
}
