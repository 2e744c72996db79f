// L-BFGS: the last `memory` (s, y) pairs per problem and the two-loop recursion, with
// the strong-Wolfe line search of the quasi-Newton driver.
// CPU twin: `optim::cpu::run_fn` with `Curvature::Limited`.
// `mat` holds S then Y, each `memory` regions of n_total coordinates.

#include "shared/quasi_newton.wgsl"

const MAX_MEMORY: u32 = 64u;

var<private> alphas: array<f32, MAX_MEMORY>;

// Index of coordinate i of pair `slot` (which = 0: s, 1: y).
fn pair_at(which: u32, slot: u32, i: u32) -> u32 {
    return (which * params.memory + slot) * params.n_total + cur_off + i;
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

// Two-loop recursion: p = −H ∇f with H₀ = (sᵀy / yᵀy) I from the newest pair.
// Every invocation touches only its own coordinates, so reductions are the only sync.
fn qn_direction(st: ptr<function, OptState>, lid: u32) {
    let d = cur_dim;
    let m = params.memory;
    let k = (*st).k;
    let head = (*st).head;
    for (var i = lid; i < d; i += WG) {
        vecs[vi(R_T, i)] = vecs[vi(R_GK, i)];
    }
    for (var c = 0u; c < k; c++) {
        let slot = (head + m - 1u - c) % m;
        var part = vec4<f32>(0.0);
        for (var i = lid; i < d; i += WG) {
            let s = mat[pair_at(0u, slot, i)];
            part += vec4<f32>(s * vecs[vi(R_T, i)], s * mat[pair_at(1u, slot, i)], 0.0, 0.0);
        }
        let r = wg_sum4(lid, part);
        let alpha = r.x / r.y;
        alphas[c] = alpha;
        for (var i = lid; i < d; i += WG) {
            vecs[vi(R_T, i)] -= alpha * mat[pair_at(1u, slot, i)];
        }
    }
    var gamma = 1.0;
    if k > 0u {
        let slot = (head + m - 1u) % m;
        var part = vec4<f32>(0.0);
        for (var i = lid; i < d; i += WG) {
            let y = mat[pair_at(1u, slot, i)];
            part += vec4<f32>(mat[pair_at(0u, slot, i)] * y, y * y, 0.0, 0.0);
        }
        let r = wg_sum4(lid, part);
        gamma = r.x / r.y;
    }
    for (var i = lid; i < d; i += WG) {
        vecs[vi(R_T, i)] *= gamma;
    }
    for (var c = k; c > 0u; c--) {
        let slot = (head + m - c) % m;
        var part = vec4<f32>(0.0);
        for (var i = lid; i < d; i += WG) {
            let y = mat[pair_at(1u, slot, i)];
            part += vec4<f32>(y * vecs[vi(R_T, i)], mat[pair_at(0u, slot, i)] * y, 0.0, 0.0);
        }
        let r = wg_sum4(lid, part);
        let beta = r.x / r.y;
        let coef = alphas[c - 1u] - beta;
        for (var i = lid; i < d; i += WG) {
            vecs[vi(R_T, i)] += coef * mat[pair_at(0u, slot, i)];
        }
    }
    for (var i = lid; i < d; i += WG) {
        vecs[vi(R_P, i)] = -vecs[vi(R_T, i)];
    }
}
