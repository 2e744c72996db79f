// Accumulators and features of the learned optimizers (shared by Optimus, Optimus-0 and
// LOpt): updates each coordinate's momenta, second moment and Adafactor-style
// accumulators with its gradient, then writes its 37 features: 22 channels normalized
// over the problem's own coordinates, 11 time features, the loss change (read by models
// with 34 inputs or more), the log step scale (35 or more), and the last step
// s = x − x_prev and gradient change y = g − g_prev, normalized like the 22 (37; 0 at
// the first step and for models without the secant scale, which keeps x_prev and
// g_prev). For the diagonal quasi-Newton step it also writes that step's metric
// h_i = 1/√r_i. One workgroup per problem.
// CPU twin: `learned::cpu::update_accumulators`, `learned::cpu::features` and
// `learned::cpu::loss_change`.

#include "shared/problem.wgsl"
#include "shared/reduce.wgsl"

struct FeatParams {
    n_problems: u32,
    n_total: u32,
    // Whether `mat` holds the previous x | g (secant scale), and where they start.
    secant: u32,
    prev_off: u32,
    // The model's input features, and the row stride of `feat` (a multiple of 4 above).
    n_features: u32,
    stride: u32,
    // 1 for the diagonal quasi-Newton step: h = 1/√r (decay 0.99) goes to `mat` at
    // metric_off for `step.wgsl`.
    diagonal: u32,
    metric_off: u32,
}

@group(0) @binding(0) var<uniform> params: FeatParams;
@group(0) @binding(1) var<storage, read> problems: array<Problem>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
// Seven per-coordinate regions: m (β = 0.9, 0.99, 0.999) | v | r (c = 0.9, 0.99, 0.999).
@group(0) @binding(4) var<storage, read_write> acc: array<f32>;
// Steps taken per problem (the time feature's t), whether it still runs, and its log
// step scale.
@group(0) @binding(5) var<storage, read> state: array<OptState>;
// [token][stride] features: the model's n_features, then zeros up to a multiple of 4
// for the vec4 loads of `linear.wgsl` (so the zero padding rows of the input weights
// never meet a value).
@group(0) @binding(6) var<storage, read_write> feat: array<f32>;
// Gap f_t of each problem at the current point (state.f still holds f_{t−1}).
@group(0) @binding(7) var<storage, read> f_in: array<f32>;
// The learned step's storage (`step.wgsl`): x_prev at prev_off, g_prev n_total later,
// and the diagonal metric h at metric_off (written here).
@group(0) @binding(8) var<storage, read_write> mat: array<f32>;

#include "shared/opt_state.wgsl"

const ND: u32 = 22u;
// Channels are summed as (c·K)², K = 2^-40 (exact scaling), and scaled back in the
// normalization: v and r_k grow like g², so for |g| ≈ 1e10 (Perm or Zakharov at d ≥ 30)
// their plain squares overflow f32 and the channel would normalize to 0. What
// underflows instead (|c| < 1e-7) is hidden by the mean square's floor 1e-5.
const NORM_K: f32 = 9.094947017729282e-13;
// Slot of s; y follows it. Both are normalized, in channels 22 and 23 of `sq`.
const SECANT_SLOT: u32 = 35u;

// The channels' sums of squares per slot, for the tree of the normalization.
var<workgroup> sq_buf: array<array<vec4<f32>, 6>, SLOTS>;

fn rs(v: f32) -> f32 {
    return inverseSqrt(v);
}

// (f_t − f_{t−1}) / (|f_t| + |f_{t−1}|); 0 at the first step and where not finite.
fn loss_change(f: f32, f_prev: f32, t: u32) -> f32 {
    let c = (f - f_prev) / (abs(f) + abs(f_prev) + 1e-30);
    return select(0.0, c, t > 0u && is_finite(c));
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
    let st = state[p];
    if st.status != ST_RUNNING {
        return;
    }
    let prob = problems[p];
    let d = prob.dim;
    let off = prob.offset;
    let n = params.n_total;
    let has_prev = params.secant == 1u && st.iter > 0u;
    let nf = params.n_features;
    let want_sy = nf > SECANT_SLOT;
    // The channels' sums of squares add as 32 invocations would whatever WG is
    // (`kernel::lanes_for`): each of the 32 slots sums coordinates slot, slot + 32, ...
    // in order, and the slots then add as a tree, so the bits are the same on every
    // device. This invocation fills slots lid, lid + WG, ...
    for (var slot = lid; slot < SLOTS; slot += WG) {
        var sq: array<f32, 24>;
        for (var i = slot; i < d; i += SLOTS) {
            let gi = g[off + i];
            let betas = vec3<f32>(0.9, 0.99, 0.999);
            var m: array<f32, 3>;
            var r: array<f32, 3>;
            for (var k = 0u; k < 3u; k++) {
                let mk = betas[k] * acc[k * n + off + i] + (1.0 - betas[k]) * gi;
                acc[k * n + off + i] = mk;
                m[k] = mk;
                let rk = betas[k] * acc[(4u + k) * n + off + i] + (1.0 - betas[k]) * (gi * gi + 1e-30);
                acc[(4u + k) * n + off + i] = rk;
                r[k] = rk;
            }
            if params.diagonal == 1u {
                mat[params.metric_off + off + i] = rs(r[1]);
            }
            let v = 0.999 * acc[3u * n + off + i] + 0.001 * gi * gi;
            acc[3u * n + off + i] = v;
            var f: array<f32, 22>;
            f[0] = gi;
            f[1] = x[off + i];
            for (var k = 0u; k < 3u; k++) {
                f[2u + k] = m[k];
                f[6u + k] = m[k] * rs(v + 1e-6);
                f[10u + k] = gi * rs(r[k] + 1e-9);
                f[13u + k] = r[k];
                f[16u + k] = rs(r[k] + 1e-8);
                f[19u + k] = m[k] * rs(r[k] + 1e-6);
            }
            f[5] = v;
            f[9] = rs(v + 1e-6);
            let base = (off + i) * params.stride;
            for (var c = 0u; c < ND; c++) {
                feat[base + c] = f[c];
                let fk = f[c] * NORM_K;
                sq[c] += fk * fk;
            }
            if want_sy {
                var sy = vec2<f32>(0.0);
                if has_prev {
                    sy = vec2<f32>(
                        x[off + i] - mat[params.prev_off + off + i],
                        gi - mat[params.prev_off + n + off + i]
                    );
                }
                feat[base + SECANT_SLOT] = sy.x;
                feat[base + SECANT_SLOT + 1u] = sy.y;
                let syk = sy * NORM_K;
                sq[ND] += syk.x * syk.x;
                sq[ND + 1u] += syk.y * syk.y;
            }
        }
        for (var q = 0u; q < 6u; q++) {
            sq_buf[slot][q] = vec4<f32>(sq[4u * q], sq[4u * q + 1u], sq[4u * q + 2u], sq[4u * q + 3u]);
        }
    }
    // Normalization of each channel by its root mean square over the problem's
    // coordinates: the 24 channels' sums in one tree over the slots (a level whose
    // stride is a multiple of WG adds one invocation's own slots: no barrier).
    for (var s = SLOTS / 2u; s > 0u; s = s >> 1u) {
        if s < WG {
            workgroupBarrier();
        }
        for (var t = lid; t < s; t += WG) {
            for (var q = 0u; q < 6u; q++) {
                sq_buf[t][q] = sq_buf[t][q] + sq_buf[t + s][q];
            }
        }
    }
    workgroupBarrier();
    var scale: array<f32, 24>;
    for (var q = 0u; q < 6u; q++) {
        let s = sq_buf[0][q];
        for (var k = 0u; k < 4u; k++) {
            scale[4u * q + k] = NORM_K * rs(1e-5 * NORM_K * NORM_K + s[k] / f32(d));
        }
    }
    let t = f32(st.iter);
    var taus = array<f32, 11>(1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5);
    let dl = loss_change(f_in[p], st.f, st.iter);
    for (var i = lid; i < d; i += WG) {
        let base = (off + i) * params.stride;
        for (var c = 0u; c < ND; c++) {
            feat[base + c] *= scale[c];
        }
        for (var k = 0u; k < 11u; k++) {
            feat[base + ND + k] = tanh(t / taus[k] - 1.0);
        }
        feat[base + SECANT_SLOT - 2u] = dl;
        feat[base + SECANT_SLOT - 1u] = st.log_scale / LOG_SCALE_MAX;
        if want_sy {
            feat[base + SECANT_SLOT] *= scale[ND];
            feat[base + SECANT_SLOT + 1u] *= scale[ND + 1u];
        }
        for (var c = nf; c < params.stride; c++) {
            feat[base + c] = 0.0;
        }
    }
}
