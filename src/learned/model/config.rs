//! A learned optimizer's architecture: its kind, the step rule, the input features
//! and the layout of its tensors ([`ModelConfig`]), with the checks a config must pass.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

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
    pub(super) fn summary(&self) -> String {
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
