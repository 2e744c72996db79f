// Meta-loss of every particle, one inner step at a time (docs/DESIGN.md §2): after the
// objective stage, l_t = ln(f_t + 1e-10) − ln(f_0 + 1e-10), the log-gap relative to the
// horizon's start point, so every task counts the same whatever its scale. A diverged or
// non-finite particle gets the bounded penalty `clip` (and l_t is clipped above by it),
// so it never poisons the batch. Steps before the pair's reset in this truncation add
// to slot 0, steps after it to slot 1 (PES credits them to different noise). With
// `ramp` p > 0, step t of the horizon T counts (p + 1)·(t/T)^p times, so the final
// steps, which the evaluation scores, weigh more. With `soft`, l above the clip grows as
// clip + ln(1 + l − clip) and a diverged particle counts as LOG_GAP_MAX, so a pair whose
// two particles both ran off still ranks them.
// CPU twins: `train::cpu::meta_loss_term` and `train::cpu::step_weight`.

#include "shared/opt_state.wgsl"

struct LossParams {
    n_particles: u32,
    clip: f32,
    horizon: u32,
    ramp: f32,
    soft: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// ln(f32::MAX) − ln(1e-10): no finite gap rises further above any start.
const LOG_GAP_MAX: f32 = 112.0;

@group(0) @binding(0) var<uniform> params: LossParams;
@group(0) @binding(1) var<storage, read> f: array<f32>;
@group(0) @binding(2) var<storage, read> state: array<OptState>;
// Per pair: 0 before its reset in this truncation, 1 after.
@group(0) @binding(3) var<storage, read> phase: array<u32>;
@group(0) @binding(4) var<storage, read_write> logf0: array<f32>;
// Per particle: [before, after] sums of l_t over this truncation.
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;

fn log_gap(v: f32) -> f32 {
    return log(max(v, 0.0) + 1e-10);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let p = gid.x;
    if p >= params.n_particles {
        return;
    }
    let st = state[p];
    let fv = f[p];
    if st.iter == 0u && st.status == ST_RUNNING {
        logf0[p] = log_gap(fv);
    }
    var l = log_gap(fv) - logf0[p];
    let bad = st.status == ST_DIVERGED || !is_finite(fv) || !is_finite(l);
    if params.soft == 0u {
        l = select(min(l, params.clip), params.clip, bad);
    } else {
        l = select(min(l, LOG_GAP_MAX), LOG_GAP_MAX, bad);
        if l > params.clip {
            l = params.clip + log(1.0 + (l - params.clip));
        }
    }
    if params.ramp > 0.0 {
        // pow(0, p) is undefined in WGSL; the weight at t = 0 is 0.
        let u = f32(st.iter) / f32(params.horizon);
        l *= select(0.0, (params.ramp + 1.0) * pow(u, params.ramp), u > 0.0);
    }
    let slot = 2u * p + phase[p >> 1u];
    loss[slot] += l;
}
