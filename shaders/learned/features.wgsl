// Accumulators and features of the learned optimizers (shared by Optimus, Optimus-0 and
// LOpt): updates each coordinate's momenta, second moment and Adafactor-style
// accumulators with its gradient, then writes its 35 features: 22 channels normalized
// over the problem's own coordinates, 11 time features, the loss change (read by models
// with 34 or 35 inputs) and the log step scale (read by models with 35). One workgroup
// per problem.
// CPU twin: `learned::cpu::update_accumulators`, `learned::cpu::features` and
// `learned::cpu::loss_change`.

#include "shared/problem.wgsl"
#include "shared/reduce.wgsl"

struct FeatParams {
    n_problems: u32,
    n_total: u32,
    pad0: u32,
    pad1: u32,
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
// [token][36] features: 35, then zeros up to a multiple of 4 for the vec4 loads of
// `linear.wgsl`.
@group(0) @binding(6) var<storage, read_write> feat: array<f32>;
// Gap f_t of each problem at the current point (state.f still holds f_{t−1}).
@group(0) @binding(7) var<storage, read> f_in: array<f32>;

#include "shared/opt_state.wgsl"

const NF: u32 = 35u;
const NF_STRIDE: u32 = 36u;
const ND: u32 = 22u;

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
    var sq: array<f32, 24>;
    for (var i = lid; i < d; i += WG) {
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
        let base = (off + i) * NF_STRIDE;
        for (var c = 0u; c < ND; c++) {
            feat[base + c] = f[c];
            sq[c] += f[c] * f[c];
        }
    }
    // Mean square of each channel over the problem's coordinates.
    var scale: array<f32, 24>;
    for (var c4 = 0u; c4 < 24u; c4 += 4u) {
        let s = wg_sum4(lid, vec4<f32>(sq[c4], sq[c4 + 1u], sq[c4 + 2u], sq[c4 + 3u]));
        for (var k = 0u; k < 4u; k++) {
            scale[c4 + k] = rs(1e-5 + s[k] / f32(d));
        }
    }
    let t = f32(st.iter);
    var taus = array<f32, 11>(1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5);
    let dl = loss_change(f_in[p], st.f, st.iter);
    for (var i = lid; i < d; i += WG) {
        let base = (off + i) * NF_STRIDE;
        for (var c = 0u; c < ND; c++) {
            feat[base + c] *= scale[c];
        }
        for (var k = 0u; k < 11u; k++) {
            feat[base + ND + k] = tanh(t / taus[k] - 1.0);
        }
        feat[base + NF - 2u] = dl;
        feat[base + NF - 1u] = st.log_scale / LOG_SCALE_MAX;
        for (var c = NF; c < NF_STRIDE; c++) {
            feat[base + c] = 0.0;
        }
    }
}
