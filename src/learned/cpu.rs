//! f64 CPU twin of one step of the learned optimizers (docs/DESIGN.md §1), piece by piece so
//! each GPU stage has its own twin: accumulators and features, linear layers, LayerNorm,
//! self-attention over a problem's dimensions, output heads, step and preconditioner.
//!
//! Tokens are a problem's dimensions: a `[d][n]` row-major matrix holds one n-vector per
//! coordinate. Weights come from a [`Model`] by name, each linear layer computing
//! y = x·W + b with W of shape [in, out].

use super::model::{
    Model, ModelKind, StepRule, LOG_SCALE_MAX, N_FEATURES, N_FEATURES_WITH_LOSS,
    N_FEATURES_WITH_SCALE, N_FEATURES_WITH_SECANT, SECANT_LOG_MAX,
};

/// β of the three momentum accumulators.
pub const MOMENTUM_BETAS: [f64; 3] = [0.9, 0.99, 0.999];
/// Decay of the second-moment accumulator.
pub const RMS_BETA: f64 = 0.999;
/// Decays of the three Adafactor-style accumulators.
pub const ADAFACTOR_BETAS: [f64; 3] = [0.9, 0.99, 0.999];
/// Time scales τ of the features tanh(t/τ − 1).
pub const TIME_SCALES: [f64; 11] = [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5];
/// Per-dimension features before the time features.
pub const N_DIM_FEATURES: usize = 22;
/// Accumulators per coordinate: m (3), v, r (3).
pub const N_ACC: usize = 7;
/// LayerNorm's ε.
pub const LN_EPS: f64 = 1e-5;

/// Updates one coordinate's accumulators with its gradient g.
pub fn update_accumulators(acc: &mut [f64; N_ACC], g: f64) {
    for k in 0..3 {
        acc[k] = MOMENTUM_BETAS[k] * acc[k] + (1.0 - MOMENTUM_BETAS[k]) * g;
    }
    acc[3] = RMS_BETA * acc[3] + (1.0 - RMS_BETA) * g * g;
    for k in 0..3 {
        let c = ADAFACTOR_BETAS[k];
        acc[4 + k] = c * acc[4 + k] + (1.0 - c) * (g * g + 1e-30);
    }
}

/// The loss-change feature (f_t − f_{t−1}) / (|f_t| + |f_{t−1}|) in [−1, 1]: scale-free,
/// and for positive gaps tanh(½ ln(f_t / f_{t−1})). 0 at the first step (no f_{t−1}) and
/// where it is not finite (twin of `loss_change` in `features.wgsl`).
pub fn loss_change(f: f64, f_prev: Option<f64>) -> f64 {
    let Some(fp) = f_prev else { return 0.0 };
    let c = (f - fp) / (f.abs() + fp.abs() + 1e-30);
    if c.is_finite() {
        c
    } else {
        0.0
    }
}

/// Features of every coordinate of one problem: [`N_FEATURES_WITH_SECANT`] values.
pub type Features = [f64; N_FEATURES_WITH_SECANT];

/// The features of every coordinate of one problem (twin of `features.wgsl`), from its
/// updated accumulators, point x, gradient g, step count t, loss change, log step
/// scale ℓ and the previous x and g if kept (secant scale, after the first step): 22
/// per-dimension channels normalized over the problem's own coordinates (c ←
/// c·rsqrt(1e-5 + mean c²)), 11 time features, the loss change, ℓ / [`LOG_SCALE_MAX`],
/// then s = x − x_prev and y = g − g_prev, normalized the same way (0 without a previous
/// point); a model with `features` inputs reads the first `features`.
pub fn features(
    acc: &[[f64; N_ACC]],
    x: &[f64],
    g: &[f64],
    t: u32,
    loss_change: f64,
    log_scale: f64,
    prev: Option<(&[f64], &[f64])>,
) -> Vec<Features> {
    let d = x.len();
    let rs = |v: f64| 1.0 / v.sqrt();
    let mut out: Vec<Features> = (0..d)
        .map(|i| {
            let a = &acc[i];
            let (m, v, r) = ([a[0], a[1], a[2]], a[3], [a[4], a[5], a[6]]);
            let mut f = [0.0; N_FEATURES_WITH_SECANT];
            f[0] = g[i];
            f[1] = x[i];
            for k in 0..3 {
                f[2 + k] = m[k];
                f[6 + k] = m[k] * rs(v + 1e-6);
                f[10 + k] = g[i] * rs(r[k] + 1e-9);
                f[13 + k] = r[k];
                f[16 + k] = rs(r[k] + 1e-8);
                f[19 + k] = m[k] * rs(r[k] + 1e-6);
            }
            f[5] = v;
            f[9] = rs(v + 1e-6);
            if let Some((px, pg)) = prev {
                f[N_FEATURES_WITH_SCALE] = x[i] - px[i];
                f[N_FEATURES_WITH_SCALE + 1] = g[i] - pg[i];
            }
            f
        })
        .collect();
    let normalized = (0..N_DIM_FEATURES).chain(N_FEATURES_WITH_SCALE..N_FEATURES_WITH_SECANT);
    for c in normalized {
        let ms = out.iter().map(|f| f[c] * f[c]).sum::<f64>() / d as f64;
        let scale = rs(1e-5 + ms);
        for f in out.iter_mut() {
            f[c] *= scale;
        }
    }
    for f in out.iter_mut() {
        for (k, tau) in TIME_SCALES.iter().enumerate() {
            f[N_DIM_FEATURES + k] = (t as f64 / tau - 1.0).tanh();
        }
        f[N_FEATURES] = loss_change;
        f[N_FEATURES_WITH_LOSS] = log_scale / LOG_SCALE_MAX;
    }
    out
}

/// Activation of the MLPs.
pub fn relu(v: f64) -> f64 {
    v.max(0.0)
}

/// y = act(x·W + b) for every token, W [in, out] row-major (twin of `linear.wgsl`).
pub fn linear(x: &[f64], n_in: usize, w: &[f32], b: &[f32], relu_out: bool) -> Vec<f64> {
    let n_out = b.len();
    assert_eq!(w.len(), n_in * n_out);
    let tokens = x.len() / n_in;
    let mut y = vec![0.0; tokens * n_out];
    for t in 0..tokens {
        for j in 0..n_out {
            let mut acc = b[j] as f64;
            for i in 0..n_in {
                acc += x[t * n_in + i] * w[i * n_out + j] as f64;
            }
            y[t * n_out + j] = if relu_out { relu(acc) } else { acc };
        }
    }
    y
}

/// LayerNorm over each token's `n` channels (twin of `layernorm.wgsl`).
pub fn layernorm(x: &[f64], n: usize, gamma: &[f32], beta: &[f32]) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (row, out) in x.chunks(n).zip(y.chunks_mut(n)) {
        let mean = row.iter().sum::<f64>() / n as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + LN_EPS).sqrt();
        for j in 0..n {
            out[j] = (row[j] - mean) * inv * gamma[j] as f64 + beta[j] as f64;
        }
    }
    y
}

/// Multi-head self-attention over the d tokens of one problem, from the fused
/// projections qkv (`[d][3w]`: q | k | v, heads side by side). Softmax over all of the
/// problem's tokens, scaled by 1/√(head width); no positional encoding, so the result
/// is permutation-equivariant (twin of `attention.wgsl`).
pub fn attention(qkv: &[f64], w: usize, heads: usize) -> Vec<f64> {
    let d = qkv.len() / (3 * w);
    let hd = w / heads;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0.0; d * w];
    for h in 0..heads {
        for i in 0..d {
            let q = &qkv[i * 3 * w + h * hd..i * 3 * w + (h + 1) * hd];
            let scores: Vec<f64> = (0..d)
                .map(|j| {
                    let k = &qkv[j * 3 * w + w + h * hd..j * 3 * w + w + (h + 1) * hd];
                    scale * q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..hd {
                out[i * w + h * hd + c] = (0..d)
                    .map(|j| e[j] * qkv[j * 3 * w + 2 * w + h * hd + c])
                    .sum::<f64>()
                    / z;
            }
        }
    }
    out
}

fn weights<'a>(model: &'a Model, name: &str) -> &'a [f32] {
    model
        .tensor(name)
        .unwrap_or_else(|| panic!("model has no tensor {name}; Model::load checks this"))
}

fn add(a: &mut [f64], b: &[f64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// The network's per-token outputs (`[d][O]`: direction, magnitude, for Optimus the
/// rank-one component, and ρ for a learned step scale) for one problem's features.
pub fn forward(model: &Model, feats: &[Features]) -> Vec<f64> {
    let cfg = &model.config;
    let nf = cfg.features;
    let x: Vec<f64> = feats.iter().flat_map(|f| f[..nf].iter().copied()).collect();
    let lin = |x: &[f64], n_in: usize, name: &str, relu_out: bool| {
        linear(
            x,
            n_in,
            weights(model, &format!("{name}.weight")),
            weights(model, &format!("{name}.bias")),
            relu_out,
        )
    };
    let ln = |x: &[f64], name: &str| {
        layernorm(
            x,
            cfg.width,
            weights(model, &format!("{name}.weight")),
            weights(model, &format!("{name}.bias")),
        )
    };
    match cfg.kind {
        ModelKind::Lopt => {
            let h1 = lin(&x, nf, "mlp.fc1", true);
            let h2 = lin(&h1, cfg.mlp_hidden, "mlp.fc2", true);
            lin(&h2, cfg.mlp_hidden, "head", false)
        }
        ModelKind::Optimus | ModelKind::Optimus0 => {
            let w = cfg.width;
            let mut h = lin(&x, nf, "embed", false);
            for l in 0..cfg.layers {
                let b = format!("blocks.{l}");
                let a = ln(&h, &format!("{b}.ln1"));
                let qkv = lin(&a, w, &format!("{b}.attn.qkv"), false);
                let att = attention(&qkv, w, cfg.heads);
                add(&mut h, &lin(&att, w, &format!("{b}.attn.out"), false));
                let a = ln(&h, &format!("{b}.ln2"));
                let m = lin(&a, w, &format!("{b}.mlp.fc1"), true);
                add(
                    &mut h,
                    &lin(&m, cfg.mlp_hidden, &format!("{b}.mlp.fc2"), false),
                );
            }
            let a = ln(&h, "ln_f");
            lin(&a, w, "head", false)
        }
    }
}

/// State of one problem under a learned optimizer.
#[derive(Clone, Debug)]
pub struct LearnedState {
    pub x: Vec<f64>,
    pub acc: Vec<[f64; N_ACC]>,
    /// Steps taken.
    pub t: u32,
    /// Dense preconditioner B (d×d row-major), Optimus only; starts at the identity.
    pub b: Option<Vec<f64>>,
    /// Gap at the previous step, for the loss-change feature.
    pub f_prev: Option<f64>,
    /// Log step scale ℓ: learned, or the log secant step length (0 for models with
    /// neither).
    pub log_scale: f64,
    /// The previous x and g, for the secant step length.
    pub prev: Option<(Vec<f64>, Vec<f64>)>,
}

impl LearnedState {
    pub fn new(kind: ModelKind, x0: &[f64]) -> Self {
        let d = x0.len();
        let b = (kind == ModelKind::Optimus).then(|| {
            let mut b = vec![0.0; d * d];
            for i in 0..d {
                b[i * d + i] = 1.0;
            }
            b
        });
        Self {
            x: x0.to_vec(),
            acc: vec![[0.0; N_ACC]; d],
            t: 0,
            b,
            f_prev: None,
            log_scale: 0.0,
            prev: None,
        }
    }
}

/// One step of the learned optimizer given the gap f and ∇f at the current point (twin
/// of the whole GPU step): accumulators, features, network, the log step scale ℓ ←
/// clamp(ℓ + λ_ℓ·tanh(mean_i ρ_i), ±[`LOG_SCALE_MAX`]) if the model has one, or
/// ℓ = log(γ·rms(g)) with γ = sᵀy / yᵀy for the secant scale (kept while sᵀy ≤ 0; on the
/// first step γ = min(1, 1/‖g‖) with `unit_first_step`, else ℓ = 0), then
/// s_i = δ_i·exp(λ_μ μ_i + ℓ)·λ_s (plus δ_i·exp(λ_μ ν_i)·λ_s with absolute steps), or
/// for the quasi-Newton rule s_i = exp(λ_μ μ_i + ℓ)·g_i/rms(g) + λ_s·δ_i·exp(λ_μ ν_i + ℓ)
/// (in the diagonal metric h_i g_i/rms(h∘g), and γ = sᵀy / Σ h_i y_i²), and
/// for Optimus B ← B + u uᵀ with u_i = λ_u·raw_i/√d, then x ← x − B s (x − s otherwise).
pub fn step(model: &Model, st: &mut LearnedState, f: f64, g: &[f64]) {
    let cfg = &model.config;
    let d = st.x.len();
    for i in 0..d {
        update_accumulators(&mut st.acc[i], g[i]);
    }
    let lc = loss_change(f, st.f_prev);
    let prev = st
        .prev
        .as_ref()
        .map(|(px, pg)| (px.as_slice(), pg.as_slice()));
    let feats = features(&st.acc, &st.x, g, st.t, lc, st.log_scale, prev);
    st.f_prev = Some(f);
    let out = forward(model, &feats);
    let o = cfg.head_outputs();
    if let Some(c) = cfg.scale_output() {
        let mean = (0..d).map(|i| out[i * o + c]).sum::<f64>() / d as f64;
        st.log_scale =
            (st.log_scale + cfg.lambda_scale * mean.tanh()).clamp(-LOG_SCALE_MAX, LOG_SCALE_MAX);
    }
    // The step's metric: h_i = 1/√r_i (the 0.99 accumulator) in the diagonal one.
    let h: Vec<f64> = match cfg.step {
        StepRule::DiagonalQuasiNewton => st.acc.iter().map(|a| 1.0 / a[5].sqrt()).collect(),
        _ => vec![1.0; d],
    };
    let gg: f64 = g.iter().zip(&h).map(|(g, h)| (h * g).powi(2)).sum();
    let log_rms_g = 0.5 * (gg / d as f64).ln();
    if cfg.secant() {
        if let Some((px, pg)) = &st.prev {
            let (mut sy, mut yy) = (0.0, 0.0);
            for i in 0..d {
                let (s, y) = (st.x[i] - px[i], g[i] - pg[i]);
                sy += s * y;
                yy += h[i] * y * y;
            }
            if sy > 0.0 && yy > 0.0 && gg > 0.0 {
                st.log_scale = ((sy / yy).ln() + log_rms_g).clamp(-SECANT_LOG_MAX, SECANT_LOG_MAX);
            }
        } else if cfg.unit_first() && gg > 0.0 {
            st.log_scale = log_rms_g
                .min(-0.5 * (d as f64).ln())
                .clamp(-SECANT_LOG_MAX, SECANT_LOG_MAX);
        }
        st.prev = Some((st.x.clone(), g.to_vec()));
    }
    let nu = cfg.absolute_output();
    let s: Vec<f64> = (0..d)
        .map(|i| {
            let (delta, mu) = (out[i * o], out[i * o + 1]);
            let nu = nu.map(|c| out[i * o + c]);
            match (cfg.step.is_quasi_newton(), nu) {
                (true, Some(nu)) => {
                    let g_hat = if gg > 0.0 {
                        h[i] * g[i] * (-log_rms_g).exp()
                    } else {
                        0.0
                    };
                    (cfg.lambda_mu * mu + st.log_scale).exp() * g_hat
                        + cfg.lambda_s * delta * (cfg.lambda_mu * nu + st.log_scale).exp()
                }
                (_, nu) => {
                    let m = (cfg.lambda_mu * mu + st.log_scale).exp()
                        + nu.map_or(0.0, |nu| (cfg.lambda_mu * nu).exp());
                    delta * m * cfg.lambda_s
                }
            }
        })
        .collect();
    match &mut st.b {
        Some(b) => {
            let u: Vec<f64> = (0..d)
                .map(|i| cfg.lambda_u * out[i * o + 2] / (d as f64).sqrt())
                .collect();
            for i in 0..d {
                for j in 0..d {
                    b[i * d + j] += u[i] * u[j];
                }
            }
            for i in 0..d {
                let bs: f64 = (0..d).map(|j| b[i * d + j] * s[j]).sum();
                st.x[i] -= bs;
            }
        }
        None => {
            for i in 0..d {
                st.x[i] -= s[i];
            }
        }
    }
    st.t += 1;
}
