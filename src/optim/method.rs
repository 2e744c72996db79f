//! The methods the engine runs and their hyperparameters ([`OptimizerConfig`]).

use crate::error::{Error, Result};
use crate::learned::model::{Model, ModelKind};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The optimization methods the engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Gradient descent.
    Gd,
    /// Heavy-ball momentum.
    Momentum,
    /// Nesterov momentum.
    Nesterov,
    Adam,
    /// BFGS with a dense inverse Hessian and a strong-Wolfe line search.
    Bfgs,
    /// L-BFGS with a strong-Wolfe line search.
    Lbfgs,
    /// The Transformer-based learned optimizer with its rank-one preconditioner.
    Optimus,
    /// Optimus without the preconditioner.
    #[serde(rename = "optimus-0")]
    Optimus0,
    /// The per-parameter MLP learned optimizer.
    Lopt,
    /// Optimus behind a loss guard: each step evaluates its candidate and an L-BFGS
    /// step's (no line search); the fallback is taken where it is the lower and no higher
    /// than the current point, backtracked where it is the lower but uphill, and
    /// Optimus's candidate is taken otherwise (two evaluations a step).
    #[serde(rename = "optimus-guard")]
    OptimusGuard,
    /// Optimus taking turns with an L-BFGS step (no line search): one candidate and one
    /// evaluation a step, kept only where it is no higher than the current point.
    #[serde(rename = "optimus-hybrid")]
    OptimusHybrid,
}

/// How a learned run uses its L-BFGS fallback (`learned/guard.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarding {
    /// Both candidates evaluated every step; the loss guard chooses.
    Guard,
    /// The fallback and the learned optimizer propose in turn, one evaluation a step;
    /// a candidate higher than the current point is rejected.
    Hybrid,
}

impl Guarding {
    /// The method that runs Optimus this way.
    pub fn method(self) -> Method {
        match self {
            Guarding::Guard => Method::OptimusGuard,
            Guarding::Hybrid => Method::OptimusHybrid,
        }
    }
}

impl Method {
    pub const ALL: [Method; 11] = [
        Method::Gd,
        Method::Momentum,
        Method::Nesterov,
        Method::Adam,
        Method::Bfgs,
        Method::Lbfgs,
        Method::Optimus,
        Method::Optimus0,
        Method::Lopt,
        Method::OptimusGuard,
        Method::OptimusHybrid,
    ];

    /// The classic methods, which need no model: the first six of [`Method::ALL`].
    pub const CLASSIC: &[Method] = Method::ALL.split_at(6).0;

    pub fn name(self) -> &'static str {
        match self {
            Method::Gd => "gd",
            Method::Momentum => "momentum",
            Method::Nesterov => "nesterov",
            Method::Adam => "adam",
            Method::Bfgs => "bfgs",
            Method::Lbfgs => "lbfgs",
            Method::Optimus => "optimus",
            Method::Optimus0 => "optimus-0",
            Method::Lopt => "lopt",
            Method::OptimusGuard => "optimus-guard",
            Method::OptimusHybrid => "optimus-hybrid",
        }
    }

    /// The learned method that runs models of `kind`.
    pub fn for_model(kind: ModelKind) -> Method {
        match kind {
            ModelKind::Optimus => Method::Optimus,
            ModelKind::Optimus0 => Method::Optimus0,
            ModelKind::Lopt => Method::Lopt,
        }
    }

    /// What the method runs. Every other fact about a method follows from this one
    /// match, so a new method is a new arm here and a name in [`Method::name`] (and
    /// [`Method::ALL`]); the compiler points at the rest.
    pub fn family(self) -> Family {
        match self {
            Method::Gd => Family::FirstOrder(FirstOrder::Gd),
            Method::Momentum => Family::FirstOrder(FirstOrder::Momentum),
            Method::Nesterov => Family::FirstOrder(FirstOrder::Nesterov),
            Method::Adam => Family::FirstOrder(FirstOrder::Adam),
            Method::Bfgs | Method::Lbfgs => Family::QuasiNewton,
            Method::Optimus => Family::Learned(ModelKind::Optimus, None),
            Method::Optimus0 => Family::Learned(ModelKind::Optimus0, None),
            Method::Lopt => Family::Learned(ModelKind::Lopt, None),
            Method::OptimusGuard => Family::Learned(ModelKind::Optimus, Some(Guarding::Guard)),
            Method::OptimusHybrid => Family::Learned(ModelKind::Optimus, Some(Guarding::Hybrid)),
        }
    }

    /// The model kind a learned method runs, None for classic methods.
    pub fn model_kind(self) -> Option<ModelKind> {
        match self.family() {
            Family::Learned(kind, _) => Some(kind),
            Family::FirstOrder(_) | Family::QuasiNewton => None,
        }
    }

    pub fn parse(s: &str) -> Result<Method, String> {
        let n = s.trim().to_ascii_lowercase().replace(['_', '-'], "");
        Method::ALL
            .into_iter()
            .find(|m| m.name().replace('-', "") == n)
            .ok_or_else(|| {
                format!(
                    "unknown optimizer '{s}'; known: {}",
                    Method::ALL.map(|m| m.name()).join(", ")
                )
            })
    }

    /// Whether the learning rate is a tuned hyperparameter (the first-order methods).
    pub fn has_lr(self) -> bool {
        self.first_order().is_some()
    }

    /// The update rule of a first-order method.
    pub fn first_order(self) -> Option<FirstOrder> {
        match self.family() {
            Family::FirstOrder(rule) => Some(rule),
            Family::QuasiNewton | Family::Learned(..) => None,
        }
    }

    /// How the learned step uses the L-BFGS fallback of `learned/guard.wgsl`, if at all.
    pub fn guarding(self) -> Option<Guarding> {
        match self.family() {
            Family::Learned(_, guarding) => guarding,
            Family::FirstOrder(_) | Family::QuasiNewton => None,
        }
    }

    pub(super) fn is_quasi_newton(self) -> bool {
        self.family() == Family::QuasiNewton
    }

    /// Variant index inside `first_order.wgsl` (0, unused, for the other methods).
    pub(super) fn variant(self) -> u32 {
        self.first_order().map_or(0, |rule| rule as u32)
    }
}

/// What a method runs ([`Method::family`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `first_order.wgsl` with this update rule; the learning rate is tuned.
    FirstOrder(FirstOrder),
    /// BFGS or L-BFGS with the strong-Wolfe line search (`bfgs.wgsl`, `lbfgs.wgsl`).
    QuasiNewton,
    /// A learned model of this kind, with the L-BFGS fallback of `learned/guard.wgsl`
    /// for the guarded and hybrid methods.
    Learned(ModelKind, Option<Guarding>),
}

/// The update rules of `first_order.wgsl`; the discriminant is its `V_*` constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstOrder {
    Gd = 0,
    Momentum = 1,
    Nesterov = 2,
    Adam = 3,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A method and its hyperparameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    pub method: Method,
    /// Learning rate (first-order methods); per problem values override it.
    pub lr: f64,
    /// Momentum coefficient, or Adam's β₁.
    pub beta1: f64,
    /// Adam's β₂.
    pub beta2: f64,
    /// Adam's ε.
    pub eps: f64,
    /// Quasi-Newton methods stop when ‖∇f‖₂ ≤ gtol.
    pub gtol: f64,
    /// L-BFGS memory (pairs kept).
    pub memory: u32,
    /// Weights of a learned method (loaded from a model file, not part of a config).
    #[serde(skip)]
    pub model: Option<Arc<Model>>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            method: Method::Adam,
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            gtol: 1e-7,
            memory: 10,
            model: None,
        }
    }
}

impl OptimizerConfig {
    pub fn new(method: Method) -> Self {
        Self {
            method,
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("{}: {m}", self.method)));
        if self.method.has_lr() && !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("beta1 and beta2 must lie in [0, 1)".into());
        }
        if self.method == Method::Lbfgs && !(1..=64).contains(&self.memory) {
            return bad(format!("memory must be in 1..=64, got {}", self.memory));
        }
        if let Some(kind) = self.method.model_kind() {
            match &self.model {
                None => {
                    return bad(
                        "needs a model: pass --model DIR (see `optimus-gpu init-model`)".into(),
                    )
                }
                Some(m) if m.config.kind != kind => {
                    return bad(format!("the model given is a {:?} model", m.config.kind))
                }
                Some(m) => m.config.validate()?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The discriminants of [`FirstOrder`] are the variant constants of the kernel.
    #[test]
    fn first_order_rules_match_the_kernel_constants() {
        let src = crate::kernel::compose("first_order.wgsl").unwrap();
        for (rule, name) in [
            (FirstOrder::Gd, "V_GD"),
            (FirstOrder::Momentum, "V_MOMENTUM"),
            (FirstOrder::Nesterov, "V_NESTEROV"),
            (FirstOrder::Adam, "V_ADAM"),
        ] {
            let decl = format!("const {name}: u32 = {}u;", rule as u32);
            assert!(src.contains(&decl), "first_order.wgsl lacks `{decl}`");
        }
        let rules: Vec<FirstOrder> = Method::ALL.iter().filter_map(|m| m.first_order()).collect();
        assert_eq!(rules.len(), 4, "every rule is some method's");
    }

    /// `CLASSIC` is every method that needs no model.
    #[test]
    fn classic_methods_are_those_without_a_model() {
        let classic: Vec<Method> = Method::ALL
            .into_iter()
            .filter(|m| m.model_kind().is_none())
            .collect();
        assert_eq!(classic, Method::CLASSIC);
    }
}
