// L-BFGS: the last `memory` (s, y) pairs per problem and the two-loop recursion, with
// the strong-Wolfe line search of the quasi-Newton driver.
// CPU twin: `optim::cpu::run_fn` with `Curvature::Limited`.
// `mat` holds S then Y, each `memory` regions of n_total coordinates.

#include "shared/quasi_newton.wgsl"
#include "shared/two_loop.wgsl"

// Index of coordinate i of pair `slot` (which = 0: s, 1: y).
fn pair_at(which: u32, slot: u32, i: u32) -> u32 {
    return (which * params.memory + slot) * params.n_total + cur_off + i;
}

fn pair_s(slot: u32, i: u32) -> f32 {
    return mat[pair_at(0u, slot, i)];
}

fn pair_y(slot: u32, i: u32) -> f32 {
    return mat[pair_at(1u, slot, i)];
}

fn t_get(i: u32) -> f32 {
    return vecs[vi(R_T, i)];
}

fn t_set(i: u32, v: f32) {
    vecs[vi(R_T, i)] = v;
}

fn qn_reset(st: ptr<function, OptState>, lid: u32) {
    (*st).k = 0u;
    (*st).head = 0u;
}

// Stores (s, y) in the ring unless sᵀy ≤ 0 (curvature condition violated).
fn qn_update(st: ptr<function, OptState>, lid: u32) {
    let d = cur_dim;
    var part = vec4<f32>(0.0);
    for (var i = lid; i < d; i += WG) {
        part.x += vecs[vi(R_S, i)] * vecs[vi(R_Y, i)];
    }
    let r = wg_sum4(lid, part);
    if !(r.x > 0.0) || !is_finite(r.x) {
        return;
    }
    let slot = (*st).head;
    for (var i = lid; i < d; i += WG) {
        mat[pair_at(0u, slot, i)] = vecs[vi(R_S, i)];
        mat[pair_at(1u, slot, i)] = vecs[vi(R_Y, i)];
    }
    (*st).head = (slot + 1u) % params.memory;
    (*st).k = min((*st).k + 1u, params.memory);
}

// p = −H ∇f by the two-loop recursion (`shared/two_loop.wgsl`) on region t.
fn qn_direction(st: ptr<function, OptState>, lid: u32) {
    let d = cur_dim;
    for (var i = lid; i < d; i += WG) {
        vecs[vi(R_T, i)] = vecs[vi(R_GK, i)];
    }
    two_loop(lid, d, params.memory, (*st).k, (*st).head);
    for (var i = lid; i < d; i += WG) {
        vecs[vi(R_P, i)] = -vecs[vi(R_T, i)];
    }
}
