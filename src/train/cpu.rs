//! f64/f32 CPU twins of the PES kernels (`shaders/pes/`), for the tests that compare
//! them and for reading the meta-loss of runs made elsewhere (validation).

use crate::learned::layout::NoiseLayout;
use crate::learned::layout::PackedLayout;

/// ln(f + 1e-10) of a gap f (negative rounding clamped to 0).
pub fn log_gap(f: f64) -> f64 {
    (f.max(0.0) + 1e-10).ln()
}

/// One step's meta-loss (twin of `pes/loss.wgsl`): the log-gap relative to the start,
/// clipped above by `clip`, which is also the penalty of a diverged or non-finite step.
/// With `soft`, l above the clip becomes clip + ln(1 + l − clip) and a diverged step
/// counts as [`LOG_GAP_MAX`] would (see `TrainConfig::soft_clip`).
pub fn meta_loss_term(f: f64, logf0: f64, clip: f64, soft: bool, diverged: bool) -> f64 {
    let l = log_gap(f) - logf0;
    let bad = diverged || !f.is_finite() || !l.is_finite();
    match (bad, soft) {
        (true, false) => clip,
        (false, false) => l.min(clip),
        (true, true) => soft_above(LOG_GAP_MAX, clip),
        (false, true) => soft_above(l.min(LOG_GAP_MAX), clip),
    }
}

/// ln(f32::MAX) − ln(1e-10): no finite f32 gap rises further above any start.
pub const LOG_GAP_MAX: f64 = 112.0;

fn soft_above(l: f64, clip: f64) -> f64 {
    if l > clip {
        clip + (l - clip).ln_1p()
    } else {
        l
    }
}

/// Weight of step `t` of a horizon in the training meta-loss (twin of `pes/loss.wgsl`):
/// (p + 1)·(t/T)^p, which averages 1 over the horizon; 1 for p = 0 (Rust's powf has
/// 0⁰ = 1, so unlike the shader this needs no special case).
pub fn step_weight(t: u32, horizon: u32, ramp: f64) -> f64 {
    (ramp + 1.0) * (t as f64 / horizon as f64).powf(ramp)
}

/// Mean meta-loss of one run's gap history f_0..f_T (validation): steps after a
/// divergence count as the penalty.
pub fn run_meta_loss(gaps: &[f64], diverged_from: Option<usize>, clip: f64) -> f64 {
    let logf0 = log_gap(gaps[0]);
    let total: f64 = gaps
        .iter()
        .enumerate()
        .map(|(t, &f)| meta_loss_term(f, logf0, clip, false, diverged_from.is_some_and(|d| t >= d)))
        .sum();
    total / gaps.len() as f64
}

/// PES coefficients (twin of `pes/coef.wgsl`): `[slot][pair]` for truncations
/// k = first .. first + n_slots − 1, from the per-particle [before, after] loss sums.
pub fn coefficients(
    loss: &[f32],
    since: &[u32],
    first: u32,
    n_slots: u32,
    inv_k: f32,
    scale: f32,
    use_sign: bool,
) -> Vec<f32> {
    let n_pairs = since.len();
    let clean = |v: f32| if v.is_finite() { v } else { 0.0 };
    let mut out = vec![0f32; n_slots as usize * n_pairs];
    let n = first + n_slots - 1;
    for i in 0..n_pairs {
        let mut before = clean((loss[4 * i] - loss[4 * i + 2]) * inv_k);
        let mut after = clean((loss[4 * i + 1] - loss[4 * i + 3]) * inv_k);
        if use_sign {
            before = sign(before);
            after = sign(after);
        }
        for s in 0..n_slots {
            let k = first + s;
            let mut c = 0.0;
            if since[i] <= k {
                c += before;
            }
            if k == n {
                c += after;
            }
            out[s as usize * n_pairs + i] = c * scale;
        }
    }
    out
}

/// WGSL's sign: 0 at 0.
fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The gradient estimate Σ_k Σ_i c_{k,i} ε_i^(k) in packed layout, with the dense ε of
/// every pair and credited truncation (twin of the `pes/noise.wgsl` + `pes/grad.wgsl`
/// loop, by the straightforward route).
pub fn accumulate_gradient(
    noise: &NoiseLayout,
    packed: &PackedLayout,
    seed: u32,
    first: u32,
    coef: &[f32],
    n_pairs: usize,
) -> Vec<f32> {
    let mut g = vec![0f32; packed.len];
    for (s, row) in coef.chunks(n_pairs).enumerate() {
        for (i, &c) in row.iter().enumerate() {
            if c == 0.0 {
                continue;
            }
            let e = noise.dense(
                packed,
                &super::noise::draw(noise, seed, first + s as u32, i as u32),
            );
            for (gq, eq) in g.iter_mut().zip(e) {
                *gq += c * eq;
            }
        }
    }
    g
}

/// [‖g‖² over finite entries, mean per-particle loss, non-finite entries] (twin of
/// `pes/stats.wgsl`).
pub fn stats(grad: &[f32], loss: &[f32], inv_k: f32) -> [f64; 3] {
    let mut out = [0.0; 3];
    for &g in grad {
        if g.is_finite() {
            out[0] += (g as f64) * (g as f64);
        } else {
            out[2] += 1.0;
        }
    }
    let np = loss.len() / 2;
    out[1] = loss
        .chunks(2)
        .map(|c| (c[0] as f64 + c[1] as f64) * inv_k as f64)
        .sum::<f64>()
        / np as f64;
    out
}

/// Adam hyperparameters of one step (twin of `pes/adam.wgsl`'s uniform).
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub clip_norm: f64,
    /// Step number, from 1.
    pub t: u32,
}

/// One Adam step on θ with the clipped gradient (twin of `pes/adam.wgsl`).
pub fn adam_step(
    theta: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grad: &[f32],
    norm2: f64,
    a: AdamStep,
) {
    let norm = norm2.sqrt();
    let c1 = 1.0 - a.beta1.powi(a.t as i32);
    let c2 = 1.0 - a.beta2.powi(a.t as i32);
    for q in 0..theta.len() {
        let mut g = if grad[q].is_finite() {
            grad[q] as f64
        } else {
            0.0
        };
        if norm > a.clip_norm {
            g *= a.clip_norm / norm;
        }
        let mq = a.beta1 * m[q] as f64 + (1.0 - a.beta1) * g;
        let vq = a.beta2 * v[q] as f64 + (1.0 - a.beta2) * g * g;
        m[q] = mq as f32;
        v[q] = vq as f32;
        theta[q] -= (a.lr * (mq / c1) / ((vq / c2).sqrt() + a.eps)) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hard clip ties every step far above the start with a diverged one; the soft
    /// one ranks them (higher is worse) and still ranks a diverged step last.
    #[test]
    fn soft_clip_ranks_what_the_hard_clip_ties() {
        let l0 = log_gap(1.0);
        let hard = |f: f64, div| meta_loss_term(f, l0, 3.0, false, div);
        let soft = |f: f64, div| meta_loss_term(f, l0, 3.0, true, div);
        let (far, farther) = (1e6, 1e30);
        assert_eq!(hard(far, false), 3.0);
        assert_eq!(hard(farther, false), hard(f64::NAN, false));
        assert!(soft(far, false) < soft(farther, false));
        assert!(soft(farther, false) < soft(f32::MAX as f64, false) + 1e-12);
        assert!(soft(f32::MAX as f64, false) <= soft(0.5, true));
        assert_eq!(soft(f64::INFINITY, false), soft(0.5, true));
        // Below the clip both are the log-gap itself.
        assert!((soft(10.0, false) - 10f64.ln()).abs() < 1e-8);
        assert_eq!(hard(10.0, false), soft(10.0, false));
        assert!((soft(far, false) - (3.0 + (far.ln() - 3.0).ln_1p())).abs() < 1e-8);
    }
}
