// BFGS with a dense inverse-Hessian estimate H per problem (d×d, row-major at
// state.moff), and the strong-Wolfe line search of the quasi-Newton driver.
// CPU twin: `optim::cpu::run_fn` with `Curvature::Dense`.

#include "shared/quasi_newton.wgsl"

fn h_at(st: ptr<function, OptState>, i: u32, j: u32) -> u32 {
    return (*st).moff + i * cur_dim + j;
}

// H ← γ I.
fn set_identity(st: ptr<function, OptState>, lid: u32, gamma: f32) {
    let d = cur_dim;
    for (var idx = lid; idx < d * d; idx += WG) {
        mat[(*st).moff + idx] = select(0.0, gamma, idx / d == idx % d);
    }
}

fn qn_reset(st: ptr<function, OptState>, lid: u32) {
    set_identity(st, lid, 1.0);
    (*st).k = 0u;
}

// H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ, with H₀ scaled by sᵀy / yᵀy before the
// first update (Nocedal & Wright, eq. 6.20). Skipped when sᵀy ≤ 0.
fn qn_update(st: ptr<function, OptState>, lid: u32) {
    let d = cur_dim;
    for (var i = lid; i < d; i += WG) {
        var acc = 0.0;
        for (var j = 0u; j < d; j++) {
            acc += mat[h_at(st, i, j)] * vecs[vi(R_Y, j)];
        }
        vecs[vi(R_T, i)] = acc;
    }
    var part = vec4<f32>(0.0);
    for (var i = lid; i < d; i += WG) {
        let y = vecs[vi(R_Y, i)];
        part += vec4<f32>(vecs[vi(R_S, i)] * y, y * vecs[vi(R_T, i)], y * y, 0.0);
    }
    let r = wg_sum4(lid, part);
    let sy = r.x;
    if !(sy > 0.0) || !is_finite(sy) || !(r.z > 0.0) {
        return;
    }
    var yhy = r.y;
    if (*st).k == 0u {
        let gamma = sy / r.z;
        set_identity(st, lid, gamma);
        for (var i = lid; i < d; i += WG) {
            vecs[vi(R_T, i)] = gamma * vecs[vi(R_Y, i)];
        }
        yhy = gamma * r.z;
    }
    storageBarrier();
    let rho = 1.0 / sy;
    let c = rho * rho * yhy + rho;
    for (var idx = lid; idx < d * d; idx += WG) {
        let i = idx / d;
        let j = idx % d;
        let si = vecs[vi(R_S, i)];
        let sj = vecs[vi(R_S, j)];
        let ti = vecs[vi(R_T, i)];
        let tj = vecs[vi(R_T, j)];
        mat[(*st).moff + idx] += -rho * (ti * sj + si * tj) + c * si * sj;
    }
    (*st).k += 1u;
    storageBarrier();
}

// p = −H ∇f.
fn qn_direction(st: ptr<function, OptState>, lid: u32) {
    let d = cur_dim;
    for (var i = lid; i < d; i += WG) {
        var acc = 0.0;
        for (var j = 0u; j < d; j++) {
            acc += mat[h_at(st, i, j)] * vecs[vi(R_GK, j)];
        }
        vecs[vi(R_P, i)] = -acc;
    }
}
