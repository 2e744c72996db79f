// Step of the learned optimizers, after the network wrote its per-token outputs:
// s_i = δ_i·exp(λ_μ μ_i + ℓ)·λ_s and x ← x − s; for Optimus it writes s and the rank-one
// vector u (u_i = λ_u·raw_i/√d) for `precondition.wgsl`, which applies B instead. ℓ is
// the problem's learned log step scale, ℓ ← clamp(ℓ + λ_ℓ·tanh(mean_i ρ_i), ±12), or,
// with the secant scale, the log of σ = γ·rms(g), γ = sᵀy / yᵀy over the last step (kept
// while sᵀy ≤ 0; on the first step 0, or with `unit_first` log min(rms(g), 1/√d), the
// length of L-BFGS's first trial), or 0 for models with neither. Models with
// absolute steps add δ_i·λ_s·exp(λ_μ ν_i) to s_i. The quasi-Newton rule instead takes
// s_i = exp(λ_μ μ_i + ℓ)·g_i/rms(g) + λ_s·δ_i·exp(λ_μ ν_i + ℓ): the secant-scaled
// gradient step, corrected; in the diagonal metric g_i is h_i g_i and yᵀy is Σ h_i y_i².
// Records history and flags non-finite problems like the classic optimizers.
// CPU twin: `learned::cpu::step`.

#include "shared/problem.wgsl"
#include "shared/reduce.wgsl"

struct LearnedParams {
    // Row width of the head's outputs (δ, μ, and u for Optimus), padded to 4.
    out_stride: u32,
    // 1 when B is kept (Optimus).
    precondition: u32,
    // Start of the s | u scratch regions in `mat`, after every problem's B.
    scratch_off: u32,
    // Column of ρ in a head row (read only when lambda_scale > 0).
    scale_col: u32,
    lambda_mu: f32,
    lambda_s: f32,
    lambda_u: f32,
    // Rate of the learned step scale; 0 keeps ℓ = 0.
    lambda_scale: f32,
    // 1 when ℓ is the log secant step length; the previous x and g are then kept in
    // `mat` after the s | u scratch.
    secant: u32,
    // 1 when steps have an absolute part δ_i·λ_s·exp(λ_μ ν_i), ν in column `abs_col`.
    absolute: u32,
    abs_col: u32,
    // 1 when the first step's secant length is L-BFGS's first trial, min(rms(g), 1/√d).
    unit_first: u32,
    // 1 for the quasi-Newton rule (`model::StepRule::QuasiNewton`):
    // s_i = exp(λ_μ μ_i + ℓ)·g_i/rms(g) + λ_s·δ_i·exp(λ_μ ν_i + ℓ), ν in column `abs_col`.
    quasi_newton: u32,
    // 1 for the diagonal metric (`model::StepRule::DiagonalQuasiNewton`): g_i becomes
    // h_i g_i and yᵀy becomes Σ h_i y_i², h from `features.wgsl` in `mat` at metric_off.
    diagonal: u32,
    metric_off: u32,
    pad0: u32,
}

// Bound on the log secant step length (`model::SECANT_LOG_MAX`).
const SECANT_LOG_MAX: f32 = 30.0;

@group(0) @binding(0) var<uniform> params: OptParams;
@group(0) @binding(1) var<uniform> lp: LearnedParams;
@group(0) @binding(2) var<storage, read> problems: array<Problem>;
@group(0) @binding(3) var<storage, read> f_in: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;
@group(0) @binding(5) var<storage, read> net_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> x: array<f32>;
@group(0) @binding(7) var<storage, read_write> state: array<OptState>;
@group(0) @binding(8) var<storage, read_write> history: array<f32>;
// Every problem's B (d×d at state.moff), then s and u (n_total each), written here
// and used by `precondition.wgsl`.
@group(0) @binding(9) var<storage, read_write> mat: array<f32>;

#include "shared/opt_state.wgsl"
#include "shared/history.wgsl"

// Coordinate j's metric weight h_j: 1, or 1/√r_j for the diagonal step.
fn metric(j: u32) -> f32 {
    if lp.diagonal == 1u {
        return mat[lp.metric_off + j];
    }
    return 1.0;
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
    let n = params.n_total;
    st = evaluation_bookkeeping(p, lid, st, off, d);
    if st.status == ST_RUNNING {
        let o = lp.out_stride;
        let su = lp.scratch_off;
        let inv_sqrt_d = inverseSqrt(f32(d));
        if lp.lambda_scale > 0.0 {
            var r = slots_new();
            for (var i = lid; i < d; i += WG) {
                slot_add(&r, i, vec4<f32>(net_out[(off + i) * o + lp.scale_col]));
            }
            let mean = slots_sum(lid, r).x / f32(d);
            st.log_scale = clamp(
                st.log_scale + lp.lambda_scale * tanh(mean), -LOG_SCALE_MAX, LOG_SCALE_MAX
            );
        }
        // 1/rms(h∘g), or 0 where g = 0 (then the quasi-Newton base step is 0); h = 1
        // unless the metric is diagonal.
        var inv_rms_g = 0.0;
        if lp.secant == 1u {
            let px = su + 2u * n + off;
            let pg = su + 3u * n + off;
            // sᵀy, Σ h y², Σ (h g)².
            var acc = slots_new();
            for (var i = lid; i < d; i += WG) {
                let gi = g[off + i];
                let xi = x[off + i];
                let si = xi - mat[px + i];
                let yi = gi - mat[pg + i];
                let hi = metric(off + i);
                let hg = hi * gi;
                slot_add(&acc, i, vec4<f32>(si * yi, hi * yi * yi, hg * hg, 0.0));
                mat[px + i] = xi;
                mat[pg + i] = gi;
            }
            let r = slots_sum(lid, acc);
            let log_rms_g = 0.5 * log(r.z / f32(d));
            inv_rms_g = select(0.0, exp(-log_rms_g), r.z > 0.0);
            if st.iter > 0u && r.x > 0.0 && r.y > 0.0 && r.z > 0.0 {
                st.log_scale = clamp(log(r.x / r.y) + log_rms_g, -SECANT_LOG_MAX, SECANT_LOG_MAX);
            } else if st.iter == 0u && lp.unit_first == 1u && r.z > 0.0 {
                st.log_scale = clamp(
                    min(log_rms_g, -0.5 * log(f32(d))), -SECANT_LOG_MAX, SECANT_LOG_MAX
                );
            }
        }
        for (var i = lid; i < d; i += WG) {
            let t = (off + i) * o;
            var s: f32;
            if lp.quasi_newton == 1u {
                s = exp(lp.lambda_mu * net_out[t + 1u] + st.log_scale) * metric(off + i)
                    * g[off + i] * inv_rms_g
                    + lp.lambda_s * net_out[t]
                    * exp(lp.lambda_mu * net_out[t + lp.abs_col] + st.log_scale);
            } else {
                var m = exp(lp.lambda_mu * net_out[t + 1u] + st.log_scale);
                if lp.absolute == 1u {
                    m += exp(lp.lambda_mu * net_out[t + lp.abs_col]);
                }
                s = net_out[t] * m * lp.lambda_s;
            }
            if lp.precondition == 1u {
                mat[su + off + i] = s;
                mat[su + n + off + i] = lp.lambda_u * net_out[t + 2u] * inv_sqrt_d;
            } else {
                x[off + i] -= s;
            }
        }
        st.iter += 1u;
    }
    if lid == 0u {
        state[p] = st;
    }
}
