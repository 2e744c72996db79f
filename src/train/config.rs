//! What a meta-training run samples and how it steps, as read from `train.ron`
//! (`assets/train.ron` is the documented default).

use crate::error::{Error, Result};
use crate::functions::{Function, MAX_DIM};
use crate::learned::model::ModelConfig;
use crate::optim::Guarding;
use crate::problem::{mix_seed, Objective, ProblemSpec, SampleOptions};
use crate::user_objective::UserObjective;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The task distribution (docs/DESIGN.md §2): benchmark functions at random dimensions,
/// shifted, optionally rotated and scaled, from random start points. Held-out functions
/// and dimensions are never sampled, so evaluation on them measures generalization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskConfig {
    /// Function names (as `optimus-gpu eval --functions` takes them).
    pub functions: Vec<String>,
    /// A user objective file (WGSL, as `eval --objective` takes it) to train on instead
    /// of `functions`: tasks are its start points in `dims`, scaled by `log10_scale`
    /// (shift, rotation, width and textbook tasks do not apply to user objectives).
    pub objective: Option<std::path::PathBuf>,
    pub held_out_functions: Vec<String>,
    /// Inclusive range of dimensions.
    pub dims: (usize, usize),
    /// Draw each slot's dimension log-uniformly from `dims` (then the nearest allowed
    /// one) instead of uniformly, so a wide range such as (2, 128) puts as many slots
    /// in 2–16 as in 16–128 and the evaluation's d = 100 is in distribution without
    /// spending most of the batch there.
    pub log_uniform_dims: bool,
    pub held_out_dims: Vec<usize>,
    /// Shift of the minimizer as a fraction of the start domain's half-width.
    pub shift: f64,
    /// Probability that a task is rotated (couples its coordinates).
    pub rotate_prob: f64,
    /// log10 of the objective scale is uniform in this range.
    pub log10_scale: (f64, f64),
    /// log10 of the problem's width is uniform in this range: x-space is the function's
    /// domain stretched by it, so start points lie that much farther from the minimizer.
    pub log10_width: (f64, f64),
    /// Start points are uniform in this fraction (0, 1] of each function's start
    /// domain, around its centre.
    pub start_fraction: f64,
    /// Probability that a task is the textbook function (no shift, rotation, scale or
    /// width), as the evaluation runs it by default.
    pub textbook_prob: f64,
}

impl Default for TaskConfig {
    fn default() -> Self {
        use Function::*;
        Self {
            functions: [
                Sphere,
                Rosenbrock,
                Rastrigin,
                Ackley,
                Levy,
                StyblinskiTang,
                DixonPrice,
                Powell,
                Zakharov,
                Trid,
            ]
            .map(|f| f.name().to_string())
            .to_vec(),
            objective: None,
            held_out_functions: [Griewank, Perm, Schwefel]
                .map(|f| f.name().to_string())
                .to_vec(),
            dims: (2, 24),
            held_out_dims: vec![10],
            shift: 0.5,
            rotate_prob: 0.5,
            log10_scale: (-1.0, 1.0),
            log10_width: (0.0, 0.0),
            start_fraction: 1.0,
            log_uniform_dims: false,
            textbook_prob: 0.0,
        }
    }
}

/// Validation: a fixed set of problems from the task distribution, run with the
/// unperturbed θ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    pub problems: usize,
    /// Steps per problem (default: the horizon).
    pub steps: Option<u32>,
    pub seed: u64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            problems: 64,
            steps: None,
            seed: 1_000_003,
        }
    }
}

/// A meta-training run (docs/DESIGN.md §2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub tasks: TaskConfig,
    /// Meta-train on walking windows of the motion task (docs/DESIGN.md §5) instead of
    /// `tasks`; `optimus-gpu train --task motion` sets the defaults.
    pub motion: Option<crate::motion::task::TaskConfig>,
    /// Inner steps per truncation K.
    pub truncation: u32,
    /// Inner steps per horizon T, after which a pair restarts on a new task.
    pub horizon: u32,
    /// Standard deviation σ of the perturbations.
    pub sigma: f64,
    /// Meta-iterations (one truncation each).
    pub iterations: u32,
    /// Peak meta learning rate of Adam on θ.
    pub meta_lr: f64,
    /// Linear warm-up, in iterations; then cosine decay to `min_lr_fraction`·peak.
    pub warmup: u32,
    pub min_lr_fraction: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    /// The gradient estimate is clipped to this global norm.
    pub clip_norm: f64,
    /// Bound on a step's meta-loss (and the penalty of a diverged particle).
    pub loss_clip: f64,
    /// Training only: above `loss_clip` a step's meta-loss keeps growing, as
    /// clip + ln(1 + l − clip), and a diverged step counts as the largest finite log-gap
    /// would. With a hard clip, two particles of a pair that both ran far above their
    /// start get the same loss and their pair says nothing (Δ = 0), so nothing teaches the
    /// network to take shorter steps where it blows up (Perm). Validation stays hard.
    pub soft_clip: bool,
    /// Weights step t of a horizon T by (p + 1)·(t/T)^p with this p, so the weights
    /// average 1: 0 counts every step the same (the mean log-gap, which pays a model
    /// for early gains); larger values count the final steps more, as the evaluation
    /// does (it scores the last point). Training only: the validation meta-loss stays
    /// the plain mean, comparable across runs.
    pub loss_ramp: f64,
    /// Use sign(Δ) instead of Δ (VeLO's variance reduction).
    pub use_sign: bool,
    /// Train Optimus behind the loss guard (`optimus-guard`, docs/DESIGN.md §1.7): every
    /// particle runs the guarded step, two evaluations a step, and validation runs
    /// `optimus-guard`, so the network learns what helps next to the L-BFGS fallback.
    /// Optimus models only.
    pub guard: bool,
    /// Train Optimus as `optimus-hybrid` (docs/DESIGN.md §1.7): every particle takes
    /// turns with the L-BFGS fallback, one evaluation a step, an uphill candidate
    /// rejected, and validation runs `optimus-hybrid`. Optimus models only; not with
    /// `guard`.
    pub hybrid: bool,
    /// Tensors PES perturbs and trains, by name or by a prefix that ends where a name
    /// part does (e.g. `["head"]`, or `["blocks.1", "ln_f", "head"]`, where "blocks.1" is
    /// not "blocks.10"); empty (the default) trains every tensor. The
    /// others keep their starting values. Fewer trained weights give each one a less
    /// noisy estimate from the same particles.
    pub trainable: Vec<String>,
    pub seed: u64,
    /// Log (and validate) every this many iterations.
    pub log_every: u32,
    /// Checkpoint every this many iterations (and on Ctrl-C and at the end).
    pub checkpoint_every: u32,
    pub validation: ValidationConfig,
    /// Architecture; None: the kind's defaults.
    pub model: Option<ModelConfig>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            tasks: TaskConfig::default(),
            motion: None,
            truncation: 10,
            horizon: 100,
            sigma: 0.01,
            iterations: 1000,
            meta_lr: 3e-3,
            warmup: 20,
            min_lr_fraction: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            clip_norm: 10.0,
            loss_clip: 3.0,
            soft_clip: false,
            loss_ramp: 0.0,
            use_sign: false,
            guard: false,
            hybrid: false,
            trainable: Vec::new(),
            seed: 0,
            log_every: 10,
            checkpoint_every: 50,
            validation: ValidationConfig::default(),
            model: None,
        }
    }
}

fn positive(name: &str, v: f64) -> Result<()> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{name} must be positive and finite, got {v}"
        )))
    }
}

impl TrainConfig {
    /// How the particles use the L-BFGS fallback (`guard`, `hybrid`), if at all
    /// ([`TrainConfig::validate`] refuses both).
    pub fn guarding(&self) -> Option<Guarding> {
        match (self.guard, self.hybrid) {
            (true, _) => Some(Guarding::Guard),
            (false, true) => Some(Guarding::Hybrid),
            (false, false) => None,
        }
    }

    /// Reads a RON config and validates it; `origin` names the file in errors.
    pub fn from_ron(text: &str, origin: &str) -> Result<Self> {
        // Implicit Some: `model: (width: 32)` and `steps: 100` read as set options.
        let cfg: TrainConfig = ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
            .from_str(text)
            .map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        cfg.validate().map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{origin}: {m}")),
            other => other,
        })?;
        Ok(cfg)
    }

    pub fn to_ron(&self) -> Result<String> {
        ron::ser::to_string_pretty(self, ron::ser::PrettyConfig::default())
            .map_err(|e| Error::Config(format!("cannot write the training config: {e}")))
    }

    pub fn validate(&self) -> Result<()> {
        TaskSampler::new(&self.tasks)?;
        if let Some(m) = &self.motion {
            m.validate(&crate::motion::body::Body::new(&m.gains))?;
        }
        let bad = |m: String| Err(Error::Config(m));
        if self.truncation == 0 {
            return bad("truncation (inner steps per meta-iteration) must be at least 1".into());
        }
        if self.horizon < self.truncation {
            return bad(format!(
                "horizon ({}) must be at least the truncation ({}), so a pair resets at most \
                 once per truncation",
                self.horizon, self.truncation
            ));
        }
        if self.iterations == 0 || self.log_every == 0 || self.checkpoint_every == 0 {
            return bad("iterations, log_every and checkpoint_every must be at least 1".into());
        }
        if self.guard && self.hybrid {
            return bad(
                "guard: true and hybrid: true both set; a run trains behind the loss guard or as the hybrid, not both".into(),
            );
        }
        for (n, v) in [
            ("sigma", self.sigma),
            ("meta_lr", self.meta_lr),
            ("adam_eps", self.adam_eps),
            ("clip_norm", self.clip_norm),
            ("loss_clip", self.loss_clip),
        ] {
            positive(n, v)?;
        }
        if !(0.0..=8.0).contains(&self.loss_ramp) {
            return bad(format!(
                "loss_ramp must be in [0, 8] (0: every step counts the same), got {}",
                self.loss_ramp
            ));
        }
        for (n, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(format!("{n} must be in [0, 1), got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&self.min_lr_fraction) {
            return bad(format!(
                "min_lr_fraction must be in [0, 1], got {}",
                self.min_lr_fraction
            ));
        }
        if self.validation.problems == 0 {
            return bad("validation.problems must be at least 1".into());
        }
        if self.validation.steps == Some(0) {
            return bad("validation.steps must be at least 1".into());
        }
        if let Some(m) = &self.model {
            m.validate()?;
        }
        Ok(())
    }

    /// Meta learning rate at iteration `n`: linear warm-up, then cosine decay.
    pub fn lr_at(&self, n: u32) -> f64 {
        let peak = self.meta_lr;
        if n < self.warmup {
            return peak * (n + 1) as f64 / self.warmup as f64;
        }
        let span = (self.iterations.saturating_sub(self.warmup)).max(1) as f64;
        let progress = ((n - self.warmup) as f64 / span).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        peak * (self.min_lr_fraction + (1.0 - self.min_lr_fraction) * cos)
    }

    pub fn validation_steps(&self) -> u32 {
        self.validation.steps.unwrap_or(self.horizon)
    }
}

/// Draws tasks from a [`TaskConfig`].
pub struct TaskSampler {
    cfg: TaskConfig,
    functions: Vec<Function>,
    /// The user objective tasks are drawn from instead of `functions`.
    pub user: Option<Arc<UserObjective>>,
    /// Dimensions that may be sampled.
    pub dims: Vec<usize>,
}

impl TaskSampler {
    /// Checks the config: known, non-overlapping functions; a possible range of
    /// dimensions with a function defined at each.
    pub fn new(cfg: &TaskConfig) -> Result<Self> {
        let bad = |m: String| Err(Error::Config(format!("tasks: {m}")));
        let user = cfg
            .objective
            .as_ref()
            .map(|p| UserObjective::load(p).map(Arc::new))
            .transpose()?;
        if cfg.functions.is_empty() && user.is_none() {
            return bad("functions is empty; name at least one benchmark function".into());
        }
        let parse = |names: &[String]| -> Result<Vec<Function>> {
            names
                .iter()
                .map(|n| Function::parse(n).map_err(|e| Error::Config(format!("tasks: {e}"))))
                .collect()
        };
        let functions = parse(&cfg.functions)?;
        let held_out = parse(&cfg.held_out_functions)?;
        if let Some(f) = functions.iter().find(|f| held_out.contains(f)) {
            return bad(format!(
                "{} is both a training function and held out; remove it from one of the lists",
                f.name()
            ));
        }
        let (lo, hi) = cfg.dims;
        if lo == 0 || lo > hi || hi > MAX_DIM {
            return bad(format!(
                "dims ({lo}, {hi}) is not a range of dimensions within 1..={MAX_DIM} (lo ≤ hi)"
            ));
        }
        let dims: Vec<usize> = (lo..=hi)
            .filter(|d| !cfg.held_out_dims.contains(d))
            .filter(|&d| user.is_some() || functions.iter().any(|f| f.check_dim(d).is_ok()))
            .collect();
        if dims.is_empty() {
            return bad(format!(
                "no dimension in ({lo}, {hi}) is both not held out and valid for one of the \
                 functions (powell needs multiples of 4)"
            ));
        }
        if !(cfg.shift >= 0.0 && cfg.shift.is_finite()) {
            return bad(format!("shift must be ≥ 0, got {}", cfg.shift));
        }
        for (name, p) in [
            ("rotate_prob", cfg.rotate_prob),
            ("textbook_prob", cfg.textbook_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} must be in [0, 1], got {p}"));
            }
        }
        if !(cfg.start_fraction > 0.0 && cfg.start_fraction <= 1.0) {
            return bad(format!(
                "start_fraction must be in (0, 1], got {}",
                cfg.start_fraction
            ));
        }
        for (name, (a, b), bound) in [
            ("log10_scale", cfg.log10_scale, 10.0),
            ("log10_width", cfg.log10_width, 4.0),
        ] {
            if !(a.is_finite() && b.is_finite() && a.abs() <= bound && b.abs() <= bound) {
                return bad(format!(
                    "{name} ({a}, {b}) must be finite and within ±{bound}"
                ));
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            functions,
            user,
            dims,
        })
    }

    /// The dimension of slot `slot` (fixed for the whole run: the batch's memory layout
    /// does not change; the slots together cover the range).
    pub fn slot_dim(&self, seed: u64, slot: usize) -> usize {
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, &[1, slot as u64]));
        if !self.cfg.log_uniform_dims {
            return self.dims[rng.random_range(0..self.dims.len())];
        }
        let (lo, hi) = (self.cfg.dims.0 as f64, self.cfg.dims.1 as f64 + 1.0);
        let want = (rng.random_range(lo.ln()..hi.ln())).exp().floor();
        *self
            .dims
            .iter()
            .min_by(|a, b| {
                ((**a as f64) - want)
                    .abs()
                    .total_cmp(&((**b as f64) - want).abs())
            })
            .expect("TaskSampler::new checks that some dimension is allowed")
    }

    /// A task at dimension `d` from `seed`: a function defined at d, then shift,
    /// rotation (with probability `rotate_prob`), scale and start point.
    pub fn sample(&self, d: usize, seed: u64) -> Result<ProblemSpec> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        if let Some(u) = &self.user {
            let opts = SampleOptions {
                log10_scale: self.cfg.log10_scale,
                start_fraction: self.cfg.start_fraction,
                ..SampleOptions::default()
            };
            return ProblemSpec::sample(Objective::User(u.clone()), d, &opts, rng.random());
        }
        let funcs: Vec<Function> = self
            .functions
            .iter()
            .copied()
            .filter(|f| f.check_dim(d).is_ok())
            .collect();
        let f = funcs[rng.random_range(0..funcs.len())];
        let rotate = rng.random_bool(self.cfg.rotate_prob);
        // Drawn only when asked for, so configs without it sample what they did.
        let textbook = self.cfg.textbook_prob > 0.0 && rng.random_bool(self.cfg.textbook_prob);
        let opts = if textbook {
            SampleOptions {
                shift: 0.0,
                rotate: false,
                log10_scale: (0.0, 0.0),
                log10_width: (0.0, 0.0),
                start_fraction: self.cfg.start_fraction,
            }
        } else {
            SampleOptions {
                shift: self.cfg.shift,
                rotate,
                log10_scale: self.cfg.log10_scale,
                log10_width: self.cfg.log10_width,
                start_fraction: self.cfg.start_fraction,
            }
        };
        ProblemSpec::sample(Objective::Builtin(f), d, &opts, rng.random())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log-uniform slot dimensions cover the range with as many slots per octave at the
    /// top as at the bottom, never a held-out one, and the same seed gives the same draw.
    #[test]
    fn log_uniform_dims_cover_each_octave_alike() {
        let cfg = TaskConfig {
            dims: (2, 128),
            held_out_dims: vec![10],
            log_uniform_dims: true,
            ..TaskConfig::default()
        };
        let s = TaskSampler::new(&cfg).unwrap();
        let dims: Vec<usize> = (0..3000).map(|k| s.slot_dim(7, k)).collect();
        assert_eq!(
            dims,
            (0..3000).map(|k| s.slot_dim(7, k)).collect::<Vec<_>>()
        );
        assert!(dims.iter().all(|d| (2..=128).contains(d) && *d != 10));
        let share = |lo: usize, hi: usize| {
            dims.iter().filter(|&&d| d >= lo && d < hi).count() as f64 / dims.len() as f64
        };
        // Six octaves, 2–4 … 64–128: each about 1/6.
        for (lo, hi) in [(2, 4), (16, 32), (64, 129)] {
            let p = share(lo, hi);
            assert!((p - 1.0 / 6.0).abs() < 0.03, "{lo}..{hi}: {p}");
        }
    }

    /// With textbook_prob = 1 every task is unshifted and unrotated.
    #[test]
    fn textbook_tasks_are_the_plain_functions() {
        let plain = TaskSampler::new(&TaskConfig {
            textbook_prob: 1.0,
            ..TaskConfig::default()
        })
        .unwrap();
        for seed in 0..20 {
            let p = plain.sample(6, seed).unwrap();
            assert!(p.rotation.is_none());
            for i in 0..6 {
                assert_eq!(p.center[i], p.objective.minimizer(i, 6));
            }
        }
    }
}
