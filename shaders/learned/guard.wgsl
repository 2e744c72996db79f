// Loss guard of a learned optimizer (Prémont-Schwarz et al., "A Simple Guard for
// Learned Optimizers", ICML 2022: take whichever of the learned and a fallback
// optimizer's candidates has the lower loss). Runs after the objective has been
// evaluated at both candidates of the last step, and before the learned step:
//
// - x, f, g hold the learned candidate and its gap and gradient; `gmem` starts with
//   the fallback candidate x_F (so the objective reads it as a point) and ff, gf hold
//   its gap and gradient. Where the fallback is lower (or the learned candidate is not
//   finite and the fallback is), x, f and g become the fallback's: the learned step
//   then starts from the accepted point, whose (x, g) also feed its secant pair. Where
//   neither is finite, the last accepted point is taken again and the fallback's
//   length shrinks, so a problem whose start is finite never diverges.
// - The next fallback is a gradient step from the accepted point with the
//   Barzilai–Borwein length α = sᵀs / sᵀy over the accepted points (kept while
//   sᵀy ≤ 0; on the first step min(1, 1/‖g‖), L-BFGS's first trial).
// - The fallback's evaluation is counted from the second step on (the first step has
//   no candidates yet).
// gmem: [x_F (n_total) | previous accepted x (n_total) | its g (n_total) | α (one per
// problem)]. CPU twin: `optim::cpu::run_guarded`.

#include "shared/problem.wgsl"
#include "shared/reduce.wgsl"

// Factor on the fallback's length after a step whose candidates were both not finite
// (`optim::cpu::GUARD_RETREAT`).
const RETREAT: f32 = 0.25;

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
    let n = params.n_total;
    let pa = 3u * n + p;
    var retreat = false;
    if st.iter > 0u {
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
        if fallback_ok && (!learned_ok || f_f < f_l) {
            for (var i = lid; i < d; i += WG) {
                x[off + i] = gmem[off + i];
                g[off + i] = gf[off + i];
            }
            if lid == 0u {
                f[p] = f_f;
            }
        } else if !learned_ok {
            // Neither is finite: stay at the last accepted point (its gap is st.f) and
            // shorten the fallback, as a backtracking line search would.
            retreat = true;
            for (var i = lid; i < d; i += WG) {
                x[off + i] = gmem[n + off + i];
                g[off + i] = gmem[2u * n + off + i];
            }
            if lid == 0u {
                f[p] = st.f;
            }
        }
        st.n_evals += 1u;
        if lid == 0u {
            state[p] = st;
        }
    }
    // The next fallback: x − α g from the accepted point, α by Barzilai–Borwein.
    var acc = vec4<f32>(0.0);
    for (var i = lid; i < d; i += WG) {
        let xi = x[off + i];
        let gi = g[off + i];
        let si = xi - gmem[n + off + i];
        let yi = gi - gmem[2u * n + off + i];
        acc += vec4<f32>(si * si, si * yi, gi * gi, 0.0);
    }
    let r = wg_sum4(lid, acc);
    var alpha = gmem[pa];
    if st.iter == 0u {
        alpha = min(1.0, inverseSqrt(r.z));
    } else if retreat {
        alpha *= RETREAT;
    } else if r.y > 0.0 {
        alpha = r.x / r.y;
    }
    workgroupBarrier();
    for (var i = lid; i < d; i += WG) {
        let xi = x[off + i];
        let gi = g[off + i];
        gmem[off + i] = xi - alpha * gi;
        gmem[n + off + i] = xi;
        gmem[2u * n + off + i] = gi;
    }
    if lid == 0u {
        gmem[pa] = alpha;
    }
}
