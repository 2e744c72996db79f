// Driver shared by BFGS and L-BFGS: one pass takes the objective at the trial point
// xe, advances the problem's line search, and on acceptance updates the curvature
// model (`qn_update`), computes the next direction (`qn_direction`, p = −H ∇f) and the
// first trial of the next search. The including kernel defines those two functions,
// `qn_reset`, and the bindings below. CPU twin: `optim::cpu::run_fn` (`Curvature`).

#include "shared/problem.wgsl"
#include "shared/reduce.wgsl"

@group(0) @binding(0) var<uniform> params: OptParams;
@group(0) @binding(1) var<storage, read> problems: array<Problem>;
@group(0) @binding(2) var<storage, read> f_in: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> xe: array<f32>;
// Six per-coordinate regions: x | ∇f(x) | p | s | y | t (scratch).
@group(0) @binding(5) var<storage, read_write> vecs: array<f32>;
@group(0) @binding(6) var<storage, read_write> state: array<OptState>;
@group(0) @binding(7) var<storage, read_write> history: array<f32>;
// Curvature model: dense inverse Hessians (BFGS) or (s, y) pairs (L-BFGS).
@group(0) @binding(8) var<storage, read_write> mat: array<f32>;

#include "shared/opt_state.wgsl"
#include "shared/regions.wgsl"
#include "shared/history.wgsl"
#include "shared/line_search.wgsl"

const R_X: u32 = 0u;
const R_GK: u32 = 1u;
const R_P: u32 = 2u;
const R_S: u32 = 3u;
const R_Y: u32 = 4u;
const R_T: u32 = 5u;

var<private> cur_dim: u32;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let p = problem_index(wid, nwg);
    if p >= params.n_problems {
        return;
    }
    var st = load_state(p, lid);
    if st.status != ST_RUNNING {
        return;
    }
    let prob = problems[p];
    let d = prob.dim;
    cur_off = prob.offset;
    cur_dim = d;

    var part = vec4<f32>(0.0);
    for (var i = lid; i < d; i += WG) {
        let gi = g[cur_off + i];
        part += vec4<f32>(gi * vecs[vi(R_P, i)], gi * gi, select(1.0, 0.0, is_finite(gi)), 0.0);
    }
    let red = wg_sum4(lid, part);
    let f = f_in[p];
    st.n_evals += 1u;
    let first = st.phase == PH_START;
    var act = ACT_ACCEPT;
    if first {
        if !is_finite(f) || red.z > 0.0 {
            st.status = ST_DIVERGED;
            if lid == 0u {
                write_history(p, 0u, f, st.n_evals);
                state[p] = st;
            }
            return;
        }
    } else {
        var dphi = red.x;
        if red.z > 0.0 {
            dphi = 3.0e38;
        }
        act = ls_step(&st, f, dphi);
    }
    if act == ACT_TRIAL {
        for (var i = lid; i < d; i += WG) {
            xe[cur_off + i] = vecs[vi(R_X, i)] + st.a * vecs[vi(R_P, i)];
        }
        if lid == 0u {
            state[p] = st;
        }
        return;
    }
    if act == ACT_FAIL {
        st.status = ST_STALLED;
        if lid == 0u {
            state[p] = st;
        }
        return;
    }

    // Accept xe: s = xe − x, y = ∇f(xe) − ∇f(x).
    for (var i = lid; i < d; i += WG) {
        let xn = xe[cur_off + i];
        let gn = g[cur_off + i];
        vecs[vi(R_S, i)] = xn - vecs[vi(R_X, i)];
        vecs[vi(R_Y, i)] = gn - vecs[vi(R_GK, i)];
        vecs[vi(R_X, i)] = xn;
        vecs[vi(R_GK, i)] = gn;
    }
    if !first {
        st.iter += 1u;
    }
    st.f = f;
    if lid == 0u {
        write_history(p, st.iter, f, st.n_evals);
    }
    if st.iter >= params.steps {
        st.status = ST_DONE;
    } else if sqrt(red.y) <= params.gtol {
        st.status = ST_CONVERGED;
    }
    if st.status != ST_RUNNING {
        if lid == 0u {
            state[p] = st;
        }
        return;
    }
    storageBarrier();
    if !first {
        qn_update(&st, lid);
    }
    qn_direction(&st, lid);
    storageBarrier();
    var dpart = 0.0;
    for (var i = lid; i < d; i += WG) {
        dpart += vecs[vi(R_GK, i)] * vecs[vi(R_P, i)];
    }
    var dg0 = wg_sum(lid, dpart);
    if !(dg0 < 0.0) {
        // Not a descent direction: forget the curvature model, step along −∇f.
        qn_reset(&st, lid);
        for (var i = lid; i < d; i += WG) {
            vecs[vi(R_P, i)] = -vecs[vi(R_GK, i)];
        }
        dg0 = -red.y;
    }
    // First step: unit length along −∇f; later the quasi-Newton step itself.
    var a0 = 1.0;
    if first {
        a0 = min(1.0, 1.0 / sqrt(red.y));
    }
    ls_begin(&st, f, dg0, a0);
    for (var i = lid; i < d; i += WG) {
        xe[cur_off + i] = vecs[vi(R_X, i)] + a0 * vecs[vi(R_P, i)];
    }
    if lid == 0u {
        state[p] = st;
    }
}
