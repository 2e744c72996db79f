//! Architecture, weights and model files of the learned optimizers (docs/DESIGN.md §1).
//!
//! All weights live in one flat f32 vector θ, laid out in the canonical order of
//! [`ModelConfig::tensors`], so meta-training perturbs and updates a single buffer and
//! the kernels address tensors by offset. A model on disk is a directory holding
//! `model.ron` (the config a person can read and edit) and `weights.safetensors` (every
//! tensor by name, so the usual Python tools can read and write it).
//!
//! Linear layers compute y = x·W + b with W of shape [in, out], row-major.

use crate::error::{Error, Result};
use crate::files::write_atomic;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::path::Path;

/// Version of the model file format this build reads and writes; bumped when the
/// tensor layout or the meaning of a config field changes.
pub const FORMAT_VERSION: u32 = 1;

/// Input features per token: 22 per-dimension features and 11 time features (§1.3).
pub const N_FEATURES: usize = 33;

/// Input features of a model that also takes the loss-change feature (docs/DESIGN.md §1.3's
/// design choice): (f_t − f_{t−1}) / (|f_t| + |f_{t−1}|), one value shared by all of a
/// problem's tokens, in slot [`N_FEATURES`]. It is the only input that sees the
/// objective itself rather than its gradient, so the network can tell an overshooting
/// step from a good one, as a line search does.
pub const N_FEATURES_WITH_LOSS: usize = N_FEATURES + 1;

/// Input features of a model with a learned step scale (`lambda_scale > 0`): the loss
/// change, then the problem's log step scale ℓ / [`LOG_SCALE_MAX`] in slot
/// [`N_FEATURES_WITH_LOSS`], so the network knows how far it has already scaled its steps.
pub const N_FEATURES_WITH_SCALE: usize = N_FEATURES + 2;

/// Input features of a model that sees its last step and the gradient change it caused
/// (needs `secant_scale`, which keeps the previous x and g): the 35 above (slot
/// [`N_FEATURES_WITH_LOSS`] holds the log secant length ℓ / [`LOG_SCALE_MAX`]), then
/// s_i = x_i − x_i,prev and y_i = g_i − g_i,prev, each normalized over the problem like
/// the other per-coordinate channels. These are the pairs from which BFGS builds its
/// rank-one updates, so the rank-one head can learn curvature along the last step.
pub const N_FEATURES_WITH_SECANT: usize = N_FEATURES + 4;

/// Bound on the learned log step scale ℓ: steps are scaled by at most e^±12.
pub const LOG_SCALE_MAX: f64 = 12.0;

/// Bound on the log of the secant step length (`secant_scale`), wide enough for f32
/// iterates of any magnitude to converge to their precision.
pub const SECANT_LOG_MAX: f64 = 30.0;

/// Scale of a fresh quasi-Newton model's head weights against the usual N(0, 1/fan_in).
pub const QN_HEAD_INIT: f32 = 0.01;

/// Upper bound on the number of weights, so a typo in `model.ron` (say `width: 64000`)
/// gives an error instead of an attempt to allocate terabytes.
pub const MAX_PARAMS: usize = 1 << 28;

/// File names inside a model directory.
pub const CONFIG_FILE: &str = "model.ron";
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// How the network's outputs become a step (shared by all three kinds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepRule {
    /// The paper's step, s_i = δ_i·exp(λ_μ μ_i)·λ_s, the network's direction δ scaled as
    /// `secant_scale`, `absolute_steps`, `unit_first_step` and `lambda_scale` say.
    #[default]
    Network,
    /// A quasi-Newton prior: the secant-scaled gradient step, corrected by the network,
    /// s_i = σ·(exp(λ_μ μ_i)·g_i / rms(g) + λ_s·δ_i·exp(λ_μ ν_i)), with σ = γ·rms(g) the
    /// secant (Barzilai–Borwein) length of `secant_scale` and L-BFGS's first trial length
    /// on the first step. With μ = δ = 0 it is the Barzilai–Borwein gradient method (for
    /// Optimus preconditioned by B), which converges to f32 precision on smooth
    /// problems; every part of the step is in units of σ, which shrinks near a
    /// minimizer, so nothing holds the step away from zero. Needs all
    /// [`N_FEATURES_WITH_SECANT`] features; the legacy switches stay off.
    QuasiNewton,
    /// The quasi-Newton step in a diagonal metric: g_i/rms(g) becomes h_i g_i/rms(h∘g)
    /// with h_i = 1/√r_i, r_i the running mean of g_i² (decay 0.99, the features'
    /// accumulator), and γ = sᵀy / Σ h_i y_i², the Barzilai–Borwein length measured in
    /// that metric. Unknowns of different units (angles, metres, m/s in the motion task)
    /// then each move on their own scale, as under Adam, where one scalar length is set
    /// by the stiffest group. Otherwise as [`StepRule::QuasiNewton`].
    DiagonalQuasiNewton,
}

impl StepRule {
    /// Whether the step is the corrected secant-scaled gradient step (either metric).
    pub fn is_quasi_newton(self) -> bool {
        matches!(self, Self::QuasiNewton | Self::DiagonalQuasiNewton)
    }
}

/// Which learned optimizer a model file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Transformer over dimensions with direction, magnitude and rank-one heads.
    #[default]
    Optimus,
    /// Optimus with B fixed to I (no rank-one head).
    #[serde(rename = "optimus-0")]
    Optimus0,
    /// Per-dimension MLP baseline without interaction between dimensions.
    Lopt,
}

impl ModelKind {
    pub const ALL: [ModelKind; 3] = [ModelKind::Optimus, ModelKind::Optimus0, ModelKind::Lopt];

    /// The name used in config files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Optimus => "optimus",
            ModelKind::Optimus0 => "optimus-0",
            ModelKind::Lopt => "lopt",
        }
    }

    /// Parses a kind name; case, `_` and `-` are ignored (`Optimus_0`, `optimus0`).
    pub fn parse(s: &str) -> Result<ModelKind, String> {
        let key = |n: &str| n.trim().to_ascii_lowercase().replace(['_', '-'], "");
        let k = key(s);
        ModelKind::ALL
            .into_iter()
            .find(|m| key(m.name()) == k)
            .ok_or_else(|| {
                format!(
                    "unknown model kind '{s}'; known: {}",
                    ModelKind::ALL.map(|m| m.name()).join(", ")
                )
            })
    }

    /// Whether the network is the Transformer (width, heads and layers apply).
    pub fn is_transformer(self) -> bool {
        matches!(self, ModelKind::Optimus | ModelKind::Optimus0)
    }

    /// Whether the network predicts the rank-one preconditioner update u.
    pub fn has_rank_one(self) -> bool {
        self == ModelKind::Optimus
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Architecture and output scales of a learned optimizer, as stored in `model.ron`.
/// LOpt ignores `width`, `heads` and `layers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub format_version: u32,
    pub kind: ModelKind,
    /// Token width w of the Transformer.
    pub width: usize,
    /// Attention heads; must divide `width`.
    pub heads: usize,
    /// Hidden size of the per-token MLP (the Transformer's, or LOpt's two layers).
    pub mlp_hidden: usize,
    /// Transformer encoder blocks.
    pub layers: usize,
    /// Input features per token: [`N_FEATURES`], [`N_FEATURES_WITH_LOSS`] to add the
    /// loss-change feature, [`N_FEATURES_WITH_SCALE`] (required by `lambda_scale > 0`),
    /// or [`N_FEATURES_WITH_SECANT`] (with `secant_scale`, and always with
    /// `step: quasi_newton`).
    pub features: usize,
    /// Magnitude scale λ_μ in s_i = δ_i · exp(λ_μ μ_i) · λ_s.
    pub lambda_mu: f64,
    /// Step scale λ_s; small so a fresh network takes tiny steps.
    pub lambda_s: f64,
    /// Rank-one scale: u_i = λ_u · raw_i / √d, which keeps B independent of d; 0.1 so a
    /// fresh network's B grows by about 0.01 per step and stays near I over a horizon.
    pub lambda_u: f64,
    /// Rate of the learned per-problem step scale; 0 (the default) leaves it out. With
    /// λ > 0 the head has one more output ρ_i, and each problem keeps a log scale
    /// ℓ ← clamp(ℓ + λ·tanh(mean_i ρ_i), ±[`LOG_SCALE_MAX`]) that multiplies its steps by
    /// e^ℓ. Every per-coordinate feature is normalized over the problem, so without it
    /// the network cannot see how wide a problem is, and its steps are absolute; ℓ is a
    /// state that can grow or shrink them by orders of magnitude over a run, as a trust
    /// region's radius does.
    pub lambda_scale: f64,
    /// Measure steps in the problem's own units: s_i = δ_i·exp(λ_μ μ_i)·λ_s·σ with σ =
    /// γ·rms(g), γ = sᵀy / yᵀy over the last step (s = x_t − x_{t−1}, y = g_t − g_{t−1}),
    /// the Barzilai–Borwein scaling that L-BFGS gives its initial inverse Hessian. σ keeps
    /// its last value while the curvature sᵀy is not positive, and is 1 on the first
    /// step. Absolute steps cannot shrink as the iterate nears a minimizer (the network
    /// sees only normalized features), so they stall at a precision set by λ_s; σ shrinks
    /// with the distance to the minimizer on smooth problems and grows with the width of
    /// the problem. Not together with `lambda_scale`, which keeps the same state.
    pub secant_scale: bool,
    /// With `secant_scale`, add an absolute part to every step: a second magnitude
    /// output ν_i and s_i = δ_i·λ_s·(exp(λ_μ μ_i)·σ + exp(λ_μ ν_i)). Steps in secant
    /// units shrink into the nearest local minimum (Rastrigin's); the absolute part lets
    /// the network keep steps of a fixed size to leave it, and drop them to converge.
    pub absolute_steps: bool,
    /// With `secant_scale`, scale the first step, which has no secant pair yet, as
    /// L-BFGS scales its first trial: γ = min(1, 1/‖g‖), so σ = min(rms(g), 1/√d), at
    /// most unit length along g. Without it σ = 1 there: a step in absolute units, 2–4x
    /// longer than the next ones on the evaluation's problems, that throws held-out Perm
    /// at d ≥ 30 from a gap of 1e5 to 1e36.
    pub unit_first_step: bool,
    /// How outputs become a step; `quasi_newton` replaces the four switches above.
    pub step: StepRule,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            format_version: FORMAT_VERSION,
            kind: ModelKind::Optimus,
            width: 64,
            heads: 4,
            mlp_hidden: 128,
            layers: 3,
            features: N_FEATURES,
            lambda_mu: 1e-3,
            lambda_s: 1e-3,
            lambda_u: 0.1,
            lambda_scale: 0.0,
            secant_scale: false,
            absolute_steps: false,
            unit_first_step: false,
            step: StepRule::Network,
        }
    }
}

/// One named tensor inside the flat weight vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    /// Offset in f32 elements into the flat weight vector.
    pub offset: usize,
}

impl TensorSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element range of this tensor in the flat weight vector.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

impl ModelConfig {
    /// The default config for `kind`.
    pub fn for_kind(kind: ModelKind) -> Self {
        ModelConfig {
            kind,
            ..ModelConfig::default()
        }
    }

    /// Reads a RON config and validates it; `origin` names the file in errors.
    pub fn from_ron(text: &str, origin: &str) -> Result<Self> {
        let config: ModelConfig =
            ron::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        config
            .validate()
            .map_err(|e| Error::Config(format!("{origin}: {}", config_message(e))))?;
        Ok(config)
    }

    /// The config as pretty RON with a header comment, as written to `model.ron`.
    pub fn to_ron(&self) -> Result<String> {
        let body = ron::ser::to_string_pretty(self, ron::ser::PrettyConfig::default())
            .map_err(|e| Error::Config(format!("cannot write the model config as RON: {e}")))?;
        Ok(format!(
            "// optimus-gpu model config (format {FORMAT_VERSION}); the weights are in \
             {WEIGHTS_FILE}.\n// kind: optimus, r#optimus-0 or lopt.\n{body}\n"
        ))
    }

    /// Checks the config against what this build can run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.format_version != FORMAT_VERSION {
            return bad(format!(
                "the model file has format_version {}, but this build reads format_version \
                 {FORMAT_VERSION}; convert the model or use a matching optimus-gpu version",
                self.format_version
            ));
        }
        if self.kind.is_transformer() {
            if self.width == 0 {
                return bad("width must be at least 1 (the default is 64)".into());
            }
            if self.heads == 0 {
                return bad("heads must be at least 1 (the default is 4)".into());
            }
            if !self.width.is_multiple_of(self.heads) {
                return bad(format!(
                    "heads ({}) must divide width ({}); pick heads among the divisors of \
                     width, e.g. width 64 with 4 heads",
                    self.heads, self.width
                ));
            }
            if self.layers == 0 {
                return bad("layers must be at least 1 (the default is 3)".into());
            }
        }
        if self.mlp_hidden == 0 {
            return bad("mlp_hidden must be at least 1 (the default is 128)".into());
        }
        let known = [
            N_FEATURES,
            N_FEATURES_WITH_LOSS,
            N_FEATURES_WITH_SCALE,
            N_FEATURES_WITH_SECANT,
        ];
        if !known.contains(&self.features) {
            return bad(format!(
                "features is {}, but the engine computes {N_FEATURES} input features per \
                 dimension, {N_FEATURES_WITH_LOSS} with the loss-change feature, \
                 {N_FEATURES_WITH_SCALE} with the loss change and the step scale, or \
                 {N_FEATURES_WITH_SECANT} with the last step and gradient change too \
                 (secant_scale); set features: {N_FEATURES}, {N_FEATURES_WITH_LOSS}, \
                 {N_FEATURES_WITH_SCALE} or {N_FEATURES_WITH_SECANT}",
                self.features
            ));
        }
        if self.step.is_quasi_newton() {
            if self.secant_scale
                || self.absolute_steps
                || self.unit_first_step
                || self.has_step_scale()
            {
                return bad(
                    "step: quasi_newton scales steps by the secant length itself; leave \
                     secant_scale, absolute_steps, unit_first_step and lambda_scale unset"
                        .into(),
                );
            }
            if self.features != N_FEATURES_WITH_SECANT {
                return bad(format!(
                    "step: quasi_newton reads all {N_FEATURES_WITH_SECANT} features (the \
                     loss change, the log secant length and the last step and gradient \
                     change); set features: {N_FEATURES_WITH_SECANT}"
                ));
            }
        }
        if self.features == N_FEATURES_WITH_SECANT && !self.secant() {
            return bad(format!(
                "features: {N_FEATURES_WITH_SECANT} reads the last step and gradient change, \
                 which only secant_scale keeps; set secant_scale: true with it"
            ));
        }
        if !(self.lambda_scale >= 0.0 && self.lambda_scale.is_finite()) {
            return bad(format!(
                "lambda_scale must be 0 (no learned step scale) or positive and finite, got {}",
                self.lambda_scale
            ));
        }
        if self.has_step_scale() != (self.features == N_FEATURES_WITH_SCALE) {
            return bad(format!(
                "lambda_scale is {} and features is {}: a learned step scale (lambda_scale \
                 > 0) reads its log scale as input {N_FEATURES_WITH_SCALE}, so set both \
                 (e.g. lambda_scale: 0.05, features: {N_FEATURES_WITH_SCALE}) or neither",
                self.lambda_scale, self.features
            ));
        }
        if self.secant_scale && self.has_step_scale() {
            return bad(format!(
                "secant_scale and lambda_scale ({}) both set the step scale; choose one \
                 (lambda_scale: 0 with secant_scale: true, or secant_scale: false)",
                self.lambda_scale
            ));
        }
        if self.absolute_steps && !self.secant_scale {
            return bad(
                "absolute_steps adds an absolute part to steps in secant units; set \
                 secant_scale: true with it (steps without the secant scale are absolute \
                 already)"
                    .into(),
            );
        }
        if self.unit_first_step && !self.secant_scale {
            return bad(
                "unit_first_step scales the first step in secant units; set secant_scale: \
                 true with it"
                    .into(),
            );
        }
        for (name, v, default) in [
            ("lambda_mu", self.lambda_mu, "1e-3"),
            ("lambda_s", self.lambda_s, "1e-3"),
            ("lambda_u", self.lambda_u, "0.1"),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return bad(format!(
                    "{name} must be positive and finite, got {v} (the default is {default})"
                ));
            }
        }
        let n = self.param_count_u128();
        if n > MAX_PARAMS as u128 {
            return bad(format!(
                "the model would have {n} weights, more than the limit of {MAX_PARAMS}; \
                 reduce width, mlp_hidden or layers"
            ));
        }
        Ok(())
    }

    /// Kind, sizes and output scales in one line, for messages.
    fn summary(&self) -> String {
        format!(
            "({}, width {}, {} heads, mlp_hidden {}, {} layers, {} features, lambda_mu {}, \
             lambda_s {}, lambda_u {}, lambda_scale {}, secant_scale {}, absolute_steps {}, \
             unit_first_step {}, step {:?})",
            self.kind,
            self.width,
            self.heads,
            self.mlp_hidden,
            self.layers,
            self.features,
            self.lambda_mu,
            self.lambda_s,
            self.lambda_u,
            self.lambda_scale,
            self.secant_scale,
            self.absolute_steps,
            self.unit_first_step,
            self.step
        )
    }

    /// Whether the model keeps a learned per-problem step scale.
    pub fn has_step_scale(&self) -> bool {
        self.lambda_scale > 0.0
    }

    /// Whether ℓ is the log secant step length, for which the previous x and g are kept
    /// (`secant_scale`, or the quasi-Newton step).
    pub fn secant(&self) -> bool {
        self.secant_scale || self.step.is_quasi_newton()
    }

    /// Whether the first step, which has no secant pair, gets L-BFGS's first trial
    /// length.
    pub fn unit_first(&self) -> bool {
        self.unit_first_step || self.step.is_quasi_newton()
    }

    /// Whether the head has the second magnitude output ν (absolute steps, or the
    /// quasi-Newton step's correction).
    fn has_nu(&self) -> bool {
        self.absolute_steps || self.step.is_quasi_newton()
    }

    /// Outputs per token: direction and magnitude, then u for Optimus, then ρ for a
    /// learned step scale or ν (never both).
    pub fn head_outputs(&self) -> usize {
        2 + self.kind.has_rank_one() as usize
            + self.has_step_scale() as usize
            + self.has_nu() as usize
    }

    /// Column of ν, the magnitude of the absolute part of a step (or of the
    /// quasi-Newton step's correction), among the head's outputs.
    pub fn absolute_output(&self) -> Option<usize> {
        self.has_nu().then(|| self.head_outputs() - 1)
    }

    /// Column of ρ, the step-scale output, among the head's outputs.
    pub fn scale_output(&self) -> Option<usize> {
        self.has_step_scale().then(|| self.head_outputs() - 1)
    }

    /// Name and shape of every tensor, in canonical order (without offsets).
    fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (f, w, h, o) = (
            self.features,
            self.width,
            self.mlp_hidden,
            self.head_outputs(),
        );
        let mut t: Vec<(String, Vec<usize>)> = Vec::new();
        let mut push = |name: String, shape: &[usize]| t.push((name, shape.to_vec()));
        if self.kind.is_transformer() {
            push("embed.weight".into(), &[f, w]);
            push("embed.bias".into(), &[w]);
            for l in 0..self.layers {
                let p = format!("blocks.{l}");
                push(format!("{p}.ln1.weight"), &[w]);
                push(format!("{p}.ln1.bias"), &[w]);
                push(format!("{p}.attn.qkv.weight"), &[w, 3 * w]);
                push(format!("{p}.attn.qkv.bias"), &[3 * w]);
                push(format!("{p}.attn.out.weight"), &[w, w]);
                push(format!("{p}.attn.out.bias"), &[w]);
                push(format!("{p}.ln2.weight"), &[w]);
                push(format!("{p}.ln2.bias"), &[w]);
                push(format!("{p}.mlp.fc1.weight"), &[w, h]);
                push(format!("{p}.mlp.fc1.bias"), &[h]);
                push(format!("{p}.mlp.fc2.weight"), &[h, w]);
                push(format!("{p}.mlp.fc2.bias"), &[w]);
            }
            push("ln_f.weight".into(), &[w]);
            push("ln_f.bias".into(), &[w]);
            push("head.weight".into(), &[w, o]);
            push("head.bias".into(), &[o]);
        } else {
            push("mlp.fc1.weight".into(), &[f, h]);
            push("mlp.fc1.bias".into(), &[h]);
            push("mlp.fc2.weight".into(), &[h, h]);
            push("mlp.fc2.bias".into(), &[h]);
            push("head.weight".into(), &[h, o]);
            push("head.bias".into(), &[o]);
        }
        t
    }

    /// Weight count without overflow, for validating absurd sizes.
    fn param_count_u128(&self) -> u128 {
        let (f, w, h, o, l) = (
            self.features as u128,
            self.width as u128,
            self.mlp_hidden as u128,
            self.head_outputs() as u128,
            self.layers as u128,
        );
        if self.kind.is_transformer() {
            let block = 4 * w + (w * 3 * w + 3 * w) + (w * w + w) + (w * h + h) + (h * w + w);
            (f * w + w) + l * block + 2 * w + (w * o + o)
        } else {
            (f * h + h) + (h * h + h) + (h * o + o)
        }
    }

    /// The canonical tensor list: offsets into one flat f32 vector, contiguous in this
    /// order. Call on a validated config (sizes are then known not to overflow).
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let mut offset = 0;
        self.shapes()
            .into_iter()
            .map(|(name, shape)| {
                let spec = TensorSpec {
                    name,
                    shape,
                    offset,
                };
                offset += spec.len();
                spec
            })
            .collect()
    }

    /// Total number of weights (the length of θ).
    pub fn n_params(&self) -> usize {
        self.shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// The spec of one tensor by name.
    pub fn tensor(&self, name: &str) -> Option<TensorSpec> {
        self.tensors().into_iter().find(|t| t.name == name)
    }
}

/// Strips the "invalid configuration: " prefix so a wrapped message reads once.
pub(crate) fn config_message(e: Error) -> String {
    match e {
        Error::Config(m) => m,
        other => other.to_string(),
    }
}

/// A learned optimizer: its config and all weights, flat in [`ModelConfig::tensors`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub config: ModelConfig,
    pub weights: Vec<f32>,
}

impl Model {
    /// A freshly initialized model: matrices ~ N(0, 1/fan_in), LayerNorm gains 1, biases
    /// 0, the step-scale output's weights 0, and a quasi-Newton model's head scaled by
    /// [`QN_HEAD_INIT`]. The draw is ChaCha8 from `seed`, so it
    /// is the same on every platform.
    pub fn init(config: ModelConfig, seed: u64) -> Result<Model> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut weights = vec![0.0f32; config.n_params()];
        for spec in config.tensors() {
            let leaf = spec.name.rsplit('.').nth(1).unwrap_or("");
            let out = &mut weights[spec.range()];
            if spec.name.ends_with(".weight") && spec.shape.len() == 2 {
                let std = 1.0 / (spec.shape[0] as f64).sqrt();
                for v in out {
                    let z: f64 = rng.sample(StandardNormal);
                    *v = (z * std) as f32;
                }
            } else if spec.name.ends_with(".weight") && leaf.starts_with("ln") {
                out.fill(1.0);
            }
        }
        // A quasi-Newton model starts near its prior (the Barzilai–Borwein step): its head
        // is 1 % of the usual draw, so PES perturbs the prior instead of noise.
        if let (true, Some(head)) = (config.step.is_quasi_newton(), config.tensor("head.weight")) {
            for v in &mut weights[head.range()] {
                *v *= QN_HEAD_INIT;
            }
        }
        // ρ starts at 0, so a fresh model's step scale stays at 1 until training moves it.
        if let (Some(c), Some(head)) = (config.scale_output(), config.tensor("head.weight")) {
            let o = config.head_outputs();
            for row in weights[head.range()].chunks_mut(o) {
                row[c] = 0.0;
            }
        }
        Ok(Model { config, weights })
    }

    /// A model from a flat weight vector (e.g. θ after meta-training).
    pub fn from_weights(config: ModelConfig, weights: Vec<f32>) -> Result<Model> {
        config.validate()?;
        let n = config.n_params();
        if weights.len() != n {
            return Err(Error::Config(format!(
                "this {} config needs {n} weights, got {}",
                config.kind,
                weights.len()
            )));
        }
        Ok(Model { config, weights })
    }

    /// This model under `config`, which may add inputs (more `features`) or the
    /// step-scale output: their weights start at 0, so the grown model takes the same
    /// steps as this one until training moves them. Everything else must match. Lets a
    /// trained model be fine-tuned with a new input instead of retrained from scratch.
    pub fn grown_to(&self, config: &ModelConfig) -> Result<Model> {
        config.validate()?;
        let old = &self.config;
        let same_rest = ModelConfig {
            features: old.features,
            lambda_scale: old.lambda_scale,
            ..config.clone()
        } == *old;
        let grows =
            config.features >= old.features && (config.has_step_scale() || !old.has_step_scale());
        if !(same_rest && grows) {
            return Err(Error::Config(format!(
                "a model {} cannot become one {}; only features and lambda_scale may grow",
                old.summary(),
                config.summary()
            )));
        }
        let mut weights = vec![0.0f32; config.n_params()];
        for new in config.tensors() {
            let from = old
                .tensor(&new.name)
                .expect("the same kind and sizes have the same tensor names");
            let src = &self.weights[from.range()];
            let dst = &mut weights[new.range()];
            // Rows (inputs) are appended, and columns (outputs) are appended to each row.
            let (src_cols, dst_cols) = (
                *from.shape.last().expect("tensors have a shape"),
                *new.shape.last().expect("tensors have a shape"),
            );
            for (s_row, d_row) in src.chunks(src_cols).zip(dst.chunks_mut(dst_cols)) {
                d_row[..src_cols].copy_from_slice(s_row);
            }
        }
        Ok(Model {
            config: config.clone(),
            weights,
        })
    }

    /// The weights of one tensor by name (row-major).
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        let spec = self.config.tensor(name)?;
        self.weights.get(spec.range())
    }

    /// Writes `dir/model.ron` and `dir/weights.safetensors`, creating `dir` if needed.
    /// Each file goes to a temporary name first and is renamed into place, so an
    /// interrupted save never leaves a damaged file behind.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.config.validate()?;
        if self.weights.len() != self.config.n_params() {
            return Err(Error::Config(format!(
                "cannot save: the model has {} weights but its config needs {}",
                self.weights.len(),
                self.config.n_params()
            )));
        }
        fs::create_dir_all(dir).map_err(|e| {
            Error::Config(format!(
                "cannot create model directory {}: {e}",
                dir.display()
            ))
        })?;
        let weights = self.safetensors_bytes()?;
        let config = self.config.to_ron()?;
        // Weights first: a crash between the two renames leaves the old model.ron, whose
        // shape check on load then reports the mismatch rather than running it.
        write_atomic(&dir.join(WEIGHTS_FILE), &weights)?;
        write_atomic(&dir.join(CONFIG_FILE), config.as_bytes())?;
        Ok(())
    }

    fn safetensors_bytes(&self) -> Result<Vec<u8>> {
        let specs = self.config.tensors();
        let bytes: Vec<Vec<u8>> = specs
            .iter()
            .map(|s| {
                self.weights[s.range()]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
            .collect();
        let views = specs
            .iter()
            .zip(&bytes)
            .map(|(s, b)| {
                TensorView::new(Dtype::F32, s.shape.clone(), b)
                    .map(|v| (s.name.clone(), v))
                    .map_err(|e| Error::Config(format!("cannot write tensor {}: {e}", s.name)))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = HashMap::from([
            ("format".to_string(), "optimus-gpu".to_string()),
            ("format_version".to_string(), FORMAT_VERSION.to_string()),
            ("kind".to_string(), self.config.kind.name().to_string()),
        ]);
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::Config(format!("cannot write {WEIGHTS_FILE}: {e}")))
    }

    /// Reads a model directory written by [`Model::save`] (or by Python tools using the
    /// same tensor names). Every mismatch between the weights and `model.ron` is
    /// reported at once.
    pub fn load(dir: &Path) -> Result<Model> {
        let hint = "create one with `optimus-gpu init-model`";
        if !dir.is_dir() {
            return Err(Error::Config(format!(
                "model directory {} does not exist (a model is a directory holding \
                 {CONFIG_FILE} and {WEIGHTS_FILE}); {hint}",
                dir.display()
            )));
        }
        let config_path = dir.join(CONFIG_FILE);
        let weights_path = dir.join(WEIGHTS_FILE);
        let text =
            fs::read_to_string(&config_path).map_err(|e| read_error(&config_path, hint, e))?;
        let config = ModelConfig::from_ron(&text, &config_path.display().to_string())?;
        let bytes = fs::read(&weights_path).map_err(|e| read_error(&weights_path, hint, e))?;
        let wp = weights_path.display();
        let bad_file = |e: safetensors::SafeTensorError| {
            Error::Config(format!(
                "{wp} is not a valid safetensors file ({e}); save the model again or \
                 recreate it with `optimus-gpu init-model`"
            ))
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(bad_file)?;
        let file = SafeTensors::deserialize(&bytes).map_err(bad_file)?;

        let mut problems: Vec<String> = Vec::new();
        let mut missing: Vec<&str> = Vec::new();
        if let Some(kind) = header.metadata().as_ref().and_then(|m| m.get("kind")) {
            if kind != config.kind.name() {
                problems.push(format!(
                    "its metadata says kind {kind}, model.ron says {}",
                    config.kind
                ));
            }
        }
        let specs = config.tensors();
        let mut weights = vec![0.0f32; config.n_params()];
        for spec in &specs {
            let view = match file.tensor(&spec.name) {
                Ok(v) => v,
                Err(_) => {
                    missing.push(spec.name.as_str());
                    continue;
                }
            };
            let mut ok = true;
            if view.dtype() != Dtype::F32 {
                problems.push(format!(
                    "{} has dtype {}, expected F32",
                    spec.name,
                    view.dtype()
                ));
                ok = false;
            }
            if view.shape() != spec.shape.as_slice() {
                problems.push(format!(
                    "{} has shape {:?}, expected {:?}",
                    spec.name,
                    view.shape(),
                    spec.shape
                ));
                ok = false;
            }
            if ok {
                for (w, b) in weights[spec.range()]
                    .iter_mut()
                    .zip(view.data().chunks_exact(4))
                {
                    *w = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        let expected: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let mut unexpected: Vec<&str> = file
            .names()
            .into_iter()
            .filter(|n| !expected.contains(n))
            .collect();
        unexpected.sort_unstable();
        // Missing and unexpected names are grouped: a model of another kind has dozens.
        if !missing.is_empty() {
            problems.push(format!("missing {}", missing.join(", ")));
        }
        if !unexpected.is_empty() {
            let s = if unexpected.len() == 1 { "" } else { "s" };
            problems.push(format!("unexpected tensor{s} {}", unexpected.join(", ")));
        }

        if !problems.is_empty() {
            return Err(Error::Config(format!(
                "{wp} does not match {}: {}. The weights belong to a model of another kind \
                 or size: set kind, width, heads, mlp_hidden and layers in {CONFIG_FILE} to \
                 the ones the weights were trained with, or recreate the model with \
                 `optimus-gpu init-model`",
                config_path.display(),
                problems.join("; ")
            )));
        }
        Ok(Model { config, weights })
    }
}

/// A failed read of a model file; a missing file names the path and the fix.
fn read_error(path: &Path, hint: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::Config(format!(
            "{} not found (a model directory holds {CONFIG_FILE} and {WEIGHTS_FILE}); {hint}",
            path.display()
        ))
    } else {
        Error::Config(format!("cannot read {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A temporary directory removed on drop, unique per test and process.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "optimus-gpu-model-test-{}-{tag}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn small(kind: ModelKind) -> ModelConfig {
        ModelConfig {
            kind,
            width: 8,
            heads: 2,
            mlp_hidden: 12,
            layers: 2,
            ..ModelConfig::default()
        }
    }

    #[test]
    fn kind_names_parse_and_errors_list_known_kinds() {
        for k in ModelKind::ALL {
            assert_eq!(ModelKind::parse(k.name()), Ok(k));
        }
        assert_eq!(ModelKind::parse(" Optimus_0 "), Ok(ModelKind::Optimus0));
        assert_eq!(ModelKind::parse("LOPT"), Ok(ModelKind::Lopt));
        let e = ModelKind::parse("adam").unwrap_err();
        assert!(
            e.contains("adam") && e.contains("optimus, optimus-0, lopt"),
            "{e}"
        );
    }

    #[test]
    fn default_optimus_layout() {
        let c = ModelConfig::default();
        c.validate().unwrap();
        let (f, w, h) = (33, 64, 128);
        let per_layer =
            2 * w + (w * 3 * w + 3 * w) + (w * w + w) + 2 * w + (w * h + h) + (h * w + w);
        let expected = (f * w + w) + 3 * per_layer + 2 * w + (w * 3 + 3);
        assert_eq!(expected, 102_915);
        assert_eq!(c.n_params(), expected);
        assert_eq!(c.head_outputs(), 3);

        let t = c.tensors();
        assert_eq!(t.len(), 2 + 3 * 12 + 4);
        assert_eq!(t[0].name, "embed.weight");
        assert_eq!(t[0].shape, vec![33, 64]);
        assert_eq!(t.last().unwrap().name, "head.bias");
        assert_eq!(t.last().unwrap().shape, vec![3]);
        let mut next = 0;
        for s in &t {
            assert_eq!(s.offset, next, "{} is not contiguous", s.name);
            next += s.len();
        }
        assert_eq!(next, c.n_params());
        let qkv = c.tensor("blocks.2.attn.qkv.weight").unwrap();
        assert_eq!(qkv.shape, vec![64, 192]);
        assert!(c.tensor("blocks.3.ln1.weight").is_none());

        let o0 = ModelConfig::for_kind(ModelKind::Optimus0);
        assert_eq!(o0.head_outputs(), 2);
        assert_eq!(o0.n_params(), expected - (w + 1));

        let lopt = ModelConfig::for_kind(ModelKind::Lopt);
        let names: Vec<String> = lopt.tensors().into_iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "mlp.fc1.weight",
                "mlp.fc1.bias",
                "mlp.fc2.weight",
                "mlp.fc2.bias",
                "head.weight",
                "head.bias"
            ]
        );
        assert_eq!(lopt.n_params(), (f * h + h) + (h * h + h) + (h * 2 + 2));
    }

    /// The quasi-Newton step needs all 37 inputs and none of the paper step's switches;
    /// a fresh one's head is 1 % of the usual draw (every other tensor as usual), and it
    /// has the ν column.
    #[test]
    fn quasi_newton_configs_are_checked_and_start_near_the_prior() {
        let qn = ModelConfig {
            step: StepRule::QuasiNewton,
            features: N_FEATURES_WITH_SECANT,
            ..small(ModelKind::Optimus)
        };
        qn.validate().unwrap();
        assert_eq!(qn.head_outputs(), 4);
        assert!(qn.secant() && qn.unit_first());
        for bad in [
            ModelConfig {
                secant_scale: true,
                ..qn.clone()
            },
            ModelConfig {
                absolute_steps: true,
                ..qn.clone()
            },
            ModelConfig {
                unit_first_step: true,
                ..qn.clone()
            },
            ModelConfig {
                lambda_scale: 0.1,
                ..qn.clone()
            },
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains("step: quasi_newton"), "{e}");
        }
        let e = ModelConfig {
            features: N_FEATURES_WITH_LOSS,
            ..qn.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("features: 37"), "{e}");
        let fresh = Model::init(qn.clone(), 3).unwrap();
        let plain = Model::init(
            ModelConfig {
                step: StepRule::Network,
                features: N_FEATURES_WITH_SECANT,
                secant_scale: true,
                absolute_steps: true,
                ..qn.clone()
            },
            3,
        )
        .unwrap();
        for spec in qn.tensors() {
            let (a, b) = (&fresh.weights[spec.range()], &plain.weights[spec.range()]);
            let scale = if spec.name == "head.weight" {
                QN_HEAD_INIT
            } else {
                1.0
            };
            for (x, y) in a.iter().zip(b) {
                assert_eq!(*x, y * scale, "{}", spec.name);
            }
        }
    }

    #[test]
    fn validate_rejects_bad_configs_with_the_field_named() {
        let err = |c: ModelConfig| c.validate().unwrap_err().to_string();
        let e = err(ModelConfig {
            heads: 5,
            ..ModelConfig::default()
        });
        assert!(e.contains("heads (5) must divide width (64)"), "{e}");
        let e = err(ModelConfig {
            features: 30,
            ..ModelConfig::default()
        });
        assert!(e.contains("features: 33"), "{e}");
        let e = err(ModelConfig {
            lambda_s: f64::NAN,
            ..ModelConfig::default()
        });
        assert!(e.contains("lambda_s"), "{e}");
        let e = err(ModelConfig {
            layers: 0,
            ..ModelConfig::default()
        });
        assert!(e.contains("layers"), "{e}");
        let e = err(ModelConfig {
            width: 1 << 20,
            heads: 1,
            ..ModelConfig::default()
        });
        assert!(e.contains("limit"), "{e}");
        let e = err(ModelConfig {
            lambda_scale: 0.05,
            ..ModelConfig::default()
        });
        assert!(e.contains("features: 35"), "{e}");
        let e = err(ModelConfig {
            features: N_FEATURES_WITH_SCALE,
            ..ModelConfig::default()
        });
        assert!(e.contains("lambda_scale is 0"), "{e}");
        let e = err(ModelConfig {
            lambda_scale: -1.0,
            features: N_FEATURES_WITH_SCALE,
            ..ModelConfig::default()
        });
        assert!(e.contains("lambda_scale must be 0"), "{e}");
        let e = err(ModelConfig {
            features: N_FEATURES_WITH_SECANT,
            ..ModelConfig::default()
        });
        assert!(e.contains("set secant_scale: true"), "{e}");
        ModelConfig {
            features: N_FEATURES_WITH_SECANT,
            secant_scale: true,
            ..ModelConfig::default()
        }
        .validate()
        .unwrap();
        let e = err(ModelConfig {
            lambda_scale: 0.1,
            features: N_FEATURES_WITH_SCALE,
            secant_scale: true,
            ..ModelConfig::default()
        });
        assert!(e.contains("choose one"), "{e}");
        let e = err(ModelConfig {
            absolute_steps: true,
            ..ModelConfig::default()
        });
        assert!(e.contains("set secant_scale: true"), "{e}");
        let e = err(ModelConfig {
            unit_first_step: true,
            ..ModelConfig::default()
        });
        assert!(
            e.contains("unit_first_step") && e.contains("secant_scale: true"),
            "{e}"
        );
        // LOpt has no attention, so heads and layers do not matter.
        ModelConfig {
            kind: ModelKind::Lopt,
            heads: 0,
            layers: 0,
            ..ModelConfig::default()
        }
        .validate()
        .unwrap();
    }

    fn with_scale(c: ModelConfig) -> ModelConfig {
        ModelConfig {
            features: N_FEATURES_WITH_SCALE,
            lambda_scale: 0.1,
            ..c
        }
    }

    /// The step-scale output is the last column, and a fresh model's is 0 (ℓ stays 0).
    #[test]
    fn the_step_scale_output_is_a_last_column_that_starts_at_zero() {
        for kind in ModelKind::ALL {
            let c = with_scale(small(kind));
            let base = small(kind).head_outputs();
            assert_eq!(c.head_outputs(), base + 1);
            assert_eq!(c.scale_output(), Some(base));
            assert_eq!(small(kind).scale_output(), None);
            let m = Model::init(c.clone(), 3).unwrap();
            let head: Vec<&[f32]> = m.tensor("head.weight").unwrap().chunks(base + 1).collect();
            assert!(head.iter().all(|row| row[base] == 0.0));
            assert!(head.iter().any(|row| row[0] != 0.0));
        }
    }

    /// A model grown by the loss input and the step scale takes the same steps as the
    /// original until its new weights move; other changes are refused.
    #[test]
    fn a_grown_model_steps_like_the_original() {
        use crate::learned::cpu::{step, LearnedState};
        for kind in ModelKind::ALL {
            let m = Model::init(small(kind), 4).unwrap();
            let grown = m.grown_to(&with_scale(small(kind))).unwrap();
            assert_eq!(grown.config.features, N_FEATURES_WITH_SCALE);
            let x0 = [0.3, -1.2, 2.0];
            let (mut a, mut b) = (LearnedState::new(kind, &x0), LearnedState::new(kind, &x0));
            for t in 0..3 {
                let f = 5.0 - t as f64;
                let g = [0.1 * f, -0.2, 0.3 + t as f64];
                step(&m, &mut a, f, &g);
                step(&grown, &mut b, f, &g);
            }
            assert_eq!(a.x, b.x, "{kind}");
            let wider = ModelConfig {
                mlp_hidden: 16,
                ..with_scale(small(kind))
            };
            let e = m.grown_to(&wider).unwrap_err().to_string();
            assert!(e.contains("only features and lambda_scale may grow"), "{e}");
            let e = grown.grown_to(&small(kind)).unwrap_err().to_string();
            assert!(e.contains("only features and lambda_scale may grow"), "{e}");
        }
    }

    #[test]
    fn init_is_seeded_and_follows_the_scheme() {
        let c = small(ModelKind::Optimus);
        let a = Model::init(c.clone(), 7).unwrap();
        let b = Model::init(c.clone(), 7).unwrap();
        let d = Model::init(c.clone(), 8).unwrap();
        assert_eq!(a.weights.len(), c.n_params());
        assert_eq!(a.weights, b.weights);
        assert_ne!(a.weights, d.weights);
        assert!(a
            .tensor("blocks.1.ln2.weight")
            .unwrap()
            .iter()
            .all(|&v| v == 1.0));
        assert!(a.tensor("ln_f.weight").unwrap().iter().all(|&v| v == 1.0));
        assert!(a
            .tensor("blocks.0.attn.qkv.bias")
            .unwrap()
            .iter()
            .all(|&v| v == 0.0));
        assert!(a.tensor("head.bias").unwrap().iter().all(|&v| v == 0.0));
        assert!(a.tensor("head.weight").unwrap().iter().any(|&v| v != 0.0));

        // N(0, 1/fan_in): the variance of a large matrix is close to 1/fan_in.
        let big = Model::init(ModelConfig::default(), 1).unwrap();
        let qkv = big.tensor("blocks.0.attn.qkv.weight").unwrap();
        let var = qkv.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / qkv.len() as f64;
        assert!((var * 64.0 - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn save_load_round_trip_for_every_kind() {
        for kind in ModelKind::ALL {
            let dir = TempDir::new(&format!("roundtrip-{kind}"));
            let m = Model::init(small(kind), 3).unwrap();
            m.save(&dir.0).unwrap();
            let back = Model::load(&dir.0).unwrap();
            assert_eq!(back.config, m.config);
            assert_eq!(back.weights, m.weights, "{kind}");
            // Saving again over an existing model works and leaves no temporary files.
            m.save(&dir.0).unwrap();
            let mut files: Vec<String> = fs::read_dir(&dir.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            assert_eq!(files, [CONFIG_FILE, WEIGHTS_FILE]);
        }
    }

    #[test]
    fn load_reports_every_shape_mismatch_at_once() {
        let dir = TempDir::new("mismatch");
        Model::init(ModelConfig::default(), 0)
            .unwrap()
            .save(&dir.0)
            .unwrap();
        let narrow = ModelConfig {
            width: 32,
            ..ModelConfig::default()
        };
        fs::write(dir.0.join(CONFIG_FILE), narrow.to_ron().unwrap()).unwrap();
        let e = Model::load(&dir.0).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        assert!(
            e.contains("embed.weight has shape [33, 64], expected [33, 32]"),
            "{e}"
        );
        assert!(
            e.contains("blocks.2.attn.qkv.weight has shape [64, 192], expected [32, 96]"),
            "{e}"
        );
        // head.bias has the same shape at both widths, so it is not reported.
        assert!(!e.contains("head.bias"), "{e}");
        assert!(e.contains(CONFIG_FILE) && e.contains("init-model"), "{e}");
    }

    #[test]
    fn load_reports_missing_and_unexpected_tensors() {
        let dir = TempDir::new("missing");
        let m = Model::init(small(ModelKind::Lopt), 0).unwrap();
        m.save(&dir.0).unwrap();
        // Rewrite the weights without head.bias, with an extra tensor and an F64 tensor.
        let specs = m.config.tensors();
        let data: Vec<Vec<u8>> = specs
            .iter()
            .map(|s| {
                m.weights[s.range()]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
            .collect();
        let extra = vec![0u8; 8];
        let mut views: Vec<(String, TensorView)> = specs
            .iter()
            .zip(&data)
            .filter(|(s, _)| s.name != "head.bias" && s.name != "mlp.fc1.bias")
            .map(|(s, d)| {
                (
                    s.name.clone(),
                    TensorView::new(Dtype::F32, s.shape.clone(), d).unwrap(),
                )
            })
            .collect();
        views.push((
            "foo".into(),
            TensorView::new(Dtype::F32, vec![2], &extra).unwrap(),
        ));
        let fc1_bias = vec![0u8; 12 * 8];
        views.push((
            "mlp.fc1.bias".into(),
            TensorView::new(Dtype::F64, vec![12], &fc1_bias).unwrap(),
        ));
        let bytes = safetensors::serialize(views, None).unwrap();
        fs::write(dir.0.join(WEIGHTS_FILE), bytes).unwrap();
        let e = Model::load(&dir.0).unwrap_err().to_string();
        assert!(e.contains("missing head.bias"), "{e}");
        assert!(e.contains("unexpected tensor foo"), "{e}");
        assert!(
            e.contains("mlp.fc1.bias has dtype F64, expected F32"),
            "{e}"
        );
    }

    #[test]
    fn load_rejects_a_newer_format_version() {
        let dir = TempDir::new("version");
        Model::init(small(ModelKind::Optimus0), 0)
            .unwrap()
            .save(&dir.0)
            .unwrap();
        let path = dir.0.join(CONFIG_FILE);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(
            &path,
            text.replace("format_version: 1", "format_version: 99"),
        )
        .unwrap();
        let e = Model::load(&dir.0).unwrap_err().to_string();
        assert!(e.contains("format_version 99"), "{e}");
        assert!(e.contains("reads format_version 1"), "{e}");
        assert!(e.contains(CONFIG_FILE), "{e}");
    }

    #[test]
    fn load_names_the_file_on_parse_errors_and_unknown_fields() {
        let dir = TempDir::new("parse");
        Model::init(small(ModelKind::Optimus), 0)
            .unwrap()
            .save(&dir.0)
            .unwrap();
        let path = dir.0.join(CONFIG_FILE);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("width:", "widht:")).unwrap();
        let e = Model::load(&dir.0).unwrap_err().to_string();
        assert!(e.contains(CONFIG_FILE) && e.contains("widht"), "{e}");
        fs::write(&path, "(kind: optimus, width: ").unwrap();
        let e = Model::load(&dir.0).unwrap_err().to_string();
        assert!(e.contains(CONFIG_FILE), "{e}");
    }

    #[test]
    fn load_of_a_missing_model_points_to_init_model() {
        let dir = TempDir::new("absent");
        let e = Model::load(&dir.0).unwrap_err().to_string();
        assert!(
            e.contains("does not exist") && e.contains("init-model"),
            "{e}"
        );
        fs::create_dir_all(&dir.0).unwrap();
        let e = Model::load(&dir.0).unwrap_err().to_string();
        assert!(e.contains(CONFIG_FILE) && e.contains("init-model"), "{e}");
    }

    #[test]
    fn model_ron_is_readable_and_defaults_fill_missing_fields() {
        let c = ModelConfig::from_ron("(kind: r#optimus-0, width: 32)", "test").unwrap();
        assert_eq!(c.kind, ModelKind::Optimus0);
        assert_eq!(c.width, 32);
        assert_eq!(c.heads, 4);
        let text = small(ModelKind::Lopt).to_ron().unwrap();
        assert!(
            text.starts_with("//") && text.contains("kind: lopt"),
            "{text}"
        );
        assert_eq!(
            ModelConfig::from_ron(&text, "test").unwrap(),
            small(ModelKind::Lopt)
        );
    }

    #[test]
    fn from_weights_checks_the_length() {
        let c = small(ModelKind::Lopt);
        assert!(Model::from_weights(c.clone(), vec![0.0; c.n_params()]).is_ok());
        let e = Model::from_weights(c, vec![0.0; 3])
            .unwrap_err()
            .to_string();
        assert!(e.contains("got 3"), "{e}");
    }
}
