// Loss guard of a learned optimizer (Prémont-Schwarz et al., "A Simple Guard for
// Learned Optimizers", ICML 2022: take whichever of the learned and a fallback
// optimizer's candidates has the lower loss). Runs after the objective has been
// evaluated at both candidates of the last step, and before the learned step:
//
// - x, f, g hold the learned candidate and its gap and gradient; `gmem` starts with
//   the fallback candidate x_F (so the objective reads it as a point) and ff, gf hold
//   its gap and gradient. Where the fallback is the lower finite candidate and no
//   higher than the current point, x, f and g become the fallback's: the learned step
//   then starts from the accepted point, whose (x, g) also feed its secant pair. Where
//   the fallback is the lower but higher than the current point, or neither is finite,
//   the current point is taken again and the fallback's length shrinks (a backtracking
//   step), so a problem whose start is finite never diverges. Otherwise the learned
//   candidate stays, uphill or not: that is how its exploration gets through.
// - The fallback is L-BFGS without a line search: x_F = x − τ H g, H by the two-loop
//   recursion (`shared/two_loop.wgsl`) over the last GUARD_MEMORY (s, y) pairs of
//   accepted points (pairs with sᵀy ≤ 0 skipped, the ring's count and next slot kept in
//   the state's k and head), or L-BFGS's first trial min(1, 1/‖g‖)·I before the first
//   pair; τ is 1, and shrinks by RETREAT at each backtracking step until a candidate is
//   accepted.
// - The fallback's evaluation is counted from the second step on (the first step has
//   no candidates yet).
// gmem: [x_F | previous accepted x | its g | t (the two-loop's vector), n_total each |
// S, Y: GUARD_MEMORY regions each | per problem: the first trial length, τ].
//
// MODE (a pipeline constant) picks what this kernel does:
// - MODE_GUARD: the loss guard above.
// - MODE_HYBRID: Optimus and the fallback take turns, one candidate and one
//   evaluation a step (proposal t is the fallback's for even t). The candidate in x, f,
//   g is accepted where it is finite and no higher than the current point; otherwise
//   the current point is taken again, and τ shrinks by RETREAT if it was the fallback's.
//   τ is back to 1 after an accepted fallback candidate.
// - MODE_PROPOSE (hybrid, after the learned step wrote its candidate to x): where the
//   next proposal is the fallback's, x becomes x_F.
// CPU twin: `optim::cpu::run_guarded`.

#include "shared/problem.wgsl"
#include "shared/reduce.wgsl"
#include "shared/two_loop.wgsl"

// Pairs of the fallback (`optim::cpu::GUARD_MEMORY`).
const GUARD_MEMORY: u32 = 10u;
// Factor on τ after the current point was kept instead of the fallback's candidate (the
// guard's backtracking step, or the hybrid's rejected fallback candidate;
// `optim::cpu::GUARD_RETREAT`).
const RETREAT: f32 = 0.25;

const MODE_GUARD: u32 = 0u;
const MODE_HYBRID: u32 = 1u;
const MODE_PROPOSE: u32 = 2u;
override MODE: u32 = MODE_GUARD;

@group(0) @binding(0) var<uniform> params: OptParams;
@group(0) @binding(1) var<storage, read> problems: array<Problem>;
@group(0) @binding(2) var<storage, read_write> f: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read> ff: array<f32>;
@group(0) @binding(6) var<storage, read> gf: array<f32>;
@group(0) @binding(7) var<storage, read_write> gmem: array<f32>;
@group(0) @binding(8) var<storage, read_write> state: array<OptState>;

#include "shared/opt_state.wgsl"
#include "shared/regions.wgsl"

// Regions of gmem, in units of n_total.
const R_XF: u32 = 0u;
const R_XP: u32 = 1u;
const R_GP: u32 = 2u;
const R_T: u32 = 3u;
const R_S: u32 = 4u;


fn pair_s(slot: u32, i: u32) -> f32 {
    return gmem[vi(R_S + slot, i)];
}

fn pair_y(slot: u32, i: u32) -> f32 {
    return gmem[vi(R_S + GUARD_MEMORY + slot, i)];
}

fn t_get(i: u32) -> f32 {
    return gmem[vi(R_T, i)];
}

fn t_set(i: u32, v: f32) {
    gmem[vi(R_T, i)] = v;
}

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
    let off = prob.offset;
    cur_off = off;
    if MODE == MODE_PROPOSE {
        // The learned step counted proposal st.iter − 1.
        if (st.iter - 1u) % 2u == 0u {
            for (var i = lid; i < d; i += WG) {
                x[off + i] = gmem[vi(R_XF, i)];
            }
        }
        return;
    }
    // Per problem: the first trial length, then τ.
    let pa = (R_S + 2u * GUARD_MEMORY) * params.n_total + 2u * p;
    var first = gmem[pa];
    var tau = gmem[pa + 1u];
    var retreat = false;
    if MODE == MODE_HYBRID && st.iter > 0u {
        // Read before the reduction's barriers: invocation 0 overwrites f[p] below.
        let f_c = f[p];
        var bad = 0.0;
        for (var i = lid; i < d; i += WG) {
            bad += select(1.0, 0.0, is_finite(g[off + i]));
        }
        // The reduction outside the condition: its barriers need uniform control flow.
        let n_bad = wg_sum(lid, bad);
        retreat = !(is_finite(f_c) && n_bad == 0.0 && f_c <= st.f);
        if retreat {
            for (var i = lid; i < d; i += WG) {
                x[off + i] = gmem[vi(R_XP, i)];
                g[off + i] = gmem[vi(R_GP, i)];
            }
            if lid == 0u {
                f[p] = st.f;
            }
        }
        // Proposal st.iter − 1 was the fallback's for even st.iter − 1.
        if (st.iter - 1u) % 2u == 0u {
            tau = select(1.0, tau * RETREAT, retreat);
        }
    } else if st.iter > 0u {
        // Read before the reduction's barriers: invocation 0 overwrites f[p] below.
        let f_l = f[p];
        let f_f = ff[p];
        // Non-finite gradient entries of each candidate.
        var bad = vec2<f32>(0.0);
        for (var i = lid; i < d; i += WG) {
            bad += vec2<f32>(
                select(1.0, 0.0, is_finite(g[off + i])),
                select(1.0, 0.0, is_finite(gf[off + i])),
            );
        }
        let nb = wg_sum4(lid, vec4<f32>(bad, 0.0, 0.0));
        let learned_ok = is_finite(f_l) && nb.x == 0.0;
        let fallback_ok = is_finite(f_f) && nb.y == 0.0;
        let take_f = fallback_ok && (!learned_ok || f_f < f_l);
        if take_f && f_f <= st.f {
            for (var i = lid; i < d; i += WG) {
                x[off + i] = gmem[vi(R_XF, i)];
                g[off + i] = gf[off + i];
            }
            if lid == 0u {
                f[p] = f_f;
            }
        } else if !learned_ok || take_f {
            // The fallback is the lower candidate but uphill (Optimus's is higher or not
            // finite), or neither is finite: stay at the current point (its gap is st.f)
            // and shorten the fallback, as a backtracking line search would.
            retreat = true;
            for (var i = lid; i < d; i += WG) {
                x[off + i] = gmem[vi(R_XP, i)];
                g[off + i] = gmem[vi(R_GP, i)];
            }
            if lid == 0u {
                f[p] = st.f;
            }
        }
        st.n_evals += 1u;
        tau = select(1.0, tau * RETREAT, retreat);
    }
    // The pair of the last two accepted points, or on the first step the first trial.
    var acc = vec4<f32>(0.0);
    for (var i = lid; i < d; i += WG) {
        let si = x[off + i] - gmem[vi(R_XP, i)];
        let yi = g[off + i] - gmem[vi(R_GP, i)];
        let gv = g[off + i];
        acc += vec4<f32>(si * yi, gv * gv, 0.0, 0.0);
    }
    let r = wg_sum4(lid, acc);
    if st.iter == 0u {
        first = min(1.0, inverseSqrt(r.y));
        tau = 1.0;
        st.k = 0u;
        st.head = 0u;
    } else if !retreat && r.x > 0.0 && is_finite(r.x) {
        let slot = st.head;
        for (var i = lid; i < d; i += WG) {
            gmem[vi(R_S + slot, i)] = x[off + i] - gmem[vi(R_XP, i)];
            gmem[vi(R_S + GUARD_MEMORY + slot, i)] = g[off + i] - gmem[vi(R_GP, i)];
        }
        st.head = (slot + 1u) % GUARD_MEMORY;
        st.k = min(st.k + 1u, GUARD_MEMORY);
    }
    // The next fallback candidate from the accepted point, x − τ H g; the hybrid needs
    // it only on the fallback's turns (the next proposal, st.iter, is its for even
    // st.iter). A uniform branch: st is the same in every invocation.
    let fallback_next = MODE != MODE_HYBRID || st.iter % 2u == 0u;
    if fallback_next {
        let h0 = select(first, 1.0, st.k > 0u);
        for (var i = lid; i < d; i += WG) {
            t_set(i, h0 * g[off + i]);
        }
        two_loop(lid, d, GUARD_MEMORY, st.k, st.head);
    }
    for (var i = lid; i < d; i += WG) {
        let xi = x[off + i];
        if fallback_next {
            gmem[vi(R_XF, i)] = xi - tau * t_get(i);
        }
        gmem[vi(R_XP, i)] = xi;
        gmem[vi(R_GP, i)] = g[off + i];
    }
    if lid == 0u {
        gmem[pa] = first;
        gmem[pa + 1u] = tau;
        state[p] = st;
    }
}
