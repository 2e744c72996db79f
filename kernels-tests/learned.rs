use crate::common::{ctx, max_abs_diff};
use optimus_gpu::learned::cpu;
use optimus_gpu::learned::linear::Tiling;
use optimus_gpu::learned::model::{
    Model, ModelConfig, ModelKind, StepRule, LOG_SCALE_MAX, N_FEATURES, N_FEATURES_WITH_LOSS,
    N_FEATURES_WITH_SCALE, N_FEATURES_WITH_SECANT,
};
use optimus_gpu::objective::ObjectiveStage;
use optimus_gpu::optim::cpu::{run_guarded, run_learned};
use optimus_gpu::optim::{GpuRun, Guarding, Kernels, Method, OptimizerConfig, ProblemResult};
use optimus_gpu::problem::{Objective, ProblemSpec, SampleOptions};
use optimus_gpu::Function;
use std::sync::Arc;

/// A small random model whose output scales are large enough that steps matter.
pub fn model(kind: ModelKind, seed: u64) -> Arc<Model> {
    let cfg = ModelConfig {
        kind,
        width: 32,
        heads: 4,
        mlp_hidden: 48,
        layers: 2,
        lambda_mu: 0.1,
        lambda_s: 0.05,
        lambda_u: 0.5,
        ..ModelConfig::for_kind(kind)
    };
    Arc::new(Model::init(cfg, seed).unwrap())
}

/// [`model`] with the loss-change input (34 features).
pub fn loss_model(kind: ModelKind, seed: u64) -> Arc<Model> {
    let cfg = ModelConfig {
        features: N_FEATURES_WITH_LOSS,
        ..model(kind, seed).config.clone()
    };
    Arc::new(Model::init(cfg, seed).unwrap())
}

/// [`model`] with a learned step scale of rate `rate` and step scale λ_s. `Model::init`
/// leaves ρ's weights at 0; here they are μ's, and ρ's bias is `bias`, so ℓ moves.
pub fn scale_model(kind: ModelKind, seed: u64, rate: f64, bias: f32, lambda_s: f64) -> Arc<Model> {
    let cfg = ModelConfig {
        features: N_FEATURES_WITH_SCALE,
        lambda_scale: rate,
        lambda_s,
        ..model(kind, seed).config.clone()
    };
    let mut m = Model::init(cfg, seed).unwrap();
    let c = m.config.scale_output().unwrap();
    set_head_column(&mut m, c, |row| row[1]);
    let b = m.config.tensor("head.bias").unwrap();
    m.weights[b.offset + c] = bias;
    Arc::new(m)
}

/// [`model`] with steps in units of the secant step length, and with an absolute part.
pub fn secant_model(kind: ModelKind, seed: u64, absolute_steps: bool) -> Arc<Model> {
    let cfg = ModelConfig {
        secant_scale: true,
        absolute_steps,
        lambda_s: 0.2,
        ..model(kind, seed).config.clone()
    };
    Arc::new(Model::init(cfg, seed).unwrap())
}

/// [`secant_model`] with absolute steps whose first step has L-BFGS's first length.
pub fn unit_first_model(kind: ModelKind, seed: u64) -> Arc<Model> {
    let cfg = ModelConfig {
        unit_first_step: true,
        ..secant_model(kind, seed, true).config.clone()
    };
    Arc::new(Model::init(cfg, seed).unwrap())
}

/// [`secant_model`] with absolute steps that also reads the last step s and gradient
/// change y (37 features).
pub fn secant_feature_model(kind: ModelKind, seed: u64) -> Arc<Model> {
    let cfg = ModelConfig {
        features: N_FEATURES_WITH_SECANT,
        ..secant_model(kind, seed, true).config.clone()
    };
    Arc::new(Model::init(cfg, seed).unwrap())
}

/// A model with the quasi-Newton step. `Model::init` draws its head at 1 % of the usual
/// scale, so a fresh one is nearly the Barzilai–Borwein method; here the head is
/// `head_scale` times that draw, so the network's corrections are large enough to check.
pub fn qn_model(kind: ModelKind, rule: StepRule, seed: u64, head_scale: f32) -> Arc<Model> {
    let cfg = ModelConfig {
        step: rule,
        features: N_FEATURES_WITH_SECANT,
        lambda_s: 0.5,
        ..model(kind, seed).config.clone()
    };
    let mut m = Model::init(cfg, seed).unwrap();
    let head = m.config.tensor("head.weight").unwrap();
    for v in &mut m.weights[head.range()] {
        *v *= head_scale;
    }
    Arc::new(m)
}

/// The name of a model's first layer, which reads the features.
fn first_layer(kind: ModelKind) -> &'static str {
    if kind == ModelKind::Lopt {
        "mlp.fc1.weight"
    } else {
        "embed.weight"
    }
}

/// `m` with the first layer's weight rows of input features `rows` zeroed.
fn blind_to(m: &Model, rows: std::ops::Range<usize>) -> Model {
    let mut blind = m.clone();
    let spec = blind.config.tensor(first_layer(m.config.kind)).unwrap();
    let w = spec.shape[1];
    blind.weights[spec.offset + rows.start * w..spec.offset + rows.end * w].fill(0.0);
    blind
}

/// Sets the weight of head output `c` in every row of the head from that row.
fn set_head_column(m: &mut Model, c: usize, value: impl Fn(&[f32]) -> f32) {
    let o = m.config.head_outputs();
    let w = m.config.tensor("head.weight").unwrap();
    for row in m.weights[w.range()].chunks_mut(o) {
        row[c] = value(row);
    }
}

/// Largest difference between where the twin takes `p` under `a` and under `b`, for
/// checks that an input or output is live.
fn twin_difference(a: &Model, b: &Model, p: &ProblemSpec, steps: u32) -> f64 {
    max_abs_diff(
        &run_learned(a, p, steps).unwrap().x,
        &run_learned(b, p, steps).unwrap().x,
    )
}

fn run_gpu(
    problems: &[ProblemSpec],
    m: &Arc<Model>,
    steps: u32,
    tiling: Tiling,
) -> Vec<ProblemResult> {
    run_method(problems, m, Method::for_model(m.config.kind), steps, tiling)
}

fn run_method(
    problems: &[ProblemSpec],
    m: &Arc<Model>,
    method: Method,
    steps: u32,
    tiling: Tiling,
) -> Vec<ProblemResult> {
    let kernels = Kernels::with_tiling(ctx(), tiling).unwrap();
    let stage = ObjectiveStage::new(ctx(), None).unwrap();
    let cfg = OptimizerConfig {
        model: Some(m.clone()),
        ..OptimizerConfig::new(method)
    };
    GpuRun::new(ctx(), &kernels, &stage, problems, &cfg, None, steps)
        .unwrap()
        .run(ctx())
        .unwrap()
}

pub fn problems(dims: &[usize]) -> Vec<ProblemSpec> {
    let funcs = [
        Function::Sphere,
        Function::Rosenbrock,
        Function::Levy,
        Function::Zakharov,
    ];
    dims.iter()
        .enumerate()
        .map(|(k, &d)| {
            let opts = SampleOptions {
                shift: 0.2,
                rotate: k % 2 == 1 && d <= 64,
                log10_scale: (0.0, 0.0),
                log10_width: (0.0, 0.0),
                start_fraction: 1.0,
            };
            let mut p = ProblemSpec::sample(
                Objective::Builtin(funcs[k % funcs.len()]),
                d,
                &opts,
                40 + k as u64,
            )
            .unwrap();
            // Stay in a calm region so f32 and f64 see the same features.
            for i in 0..d {
                p.x0[i] = p.center[i]
                    + 0.5 * (p.x0[i] - p.center[i]) / (1.0 + (p.x0[i] - p.center[i]).abs());
            }
            p
        })
        .collect()
}

/// Both layouts of the linear layers run on every device, so both are checked here.
const TILINGS: [Tiling; 2] = [Tiling::Lanes, Tiling::Blocks];

fn check_against_twin(problems: &[ProblemSpec], m: &Arc<Model>, steps: u32) {
    for tiling in TILINGS {
        check_tiling_against_twin(problems, m, steps, tiling);
    }
}

fn check_tiling_against_twin(problems: &[ProblemSpec], m: &Arc<Model>, steps: u32, tiling: Tiling) {
    let gpu = run_gpu(problems, m, steps, tiling);
    for (p, g) in problems.iter().zip(&gpu) {
        let c = run_learned(m, p, steps).unwrap();
        let what = format!(
            "{:?} ({tiling:?}) on {} d={}",
            m.config.kind,
            p.objective.name(),
            p.dim
        );
        assert_eq!(g.status, c.status, "{what}");
        let moved = max_abs_diff(&c.x, &p.x0);
        assert!(
            moved > 1e-4,
            "{what}: the twin barely moved ({moved}); the test would be vacuous"
        );
        for i in 0..p.dim {
            let (dg, dc) = (g.x[i] - p.x0[i], c.x[i] - p.x0[i]);
            assert!(
                (dg - dc).abs() <= 2e-3 * moved + 1e-5,
                "{what}: coordinate {i} moved {dg} on the GPU, {dc} in the twin (largest move {moved})"
            );
        }
    }
}

#[test]
fn learned_steps_match_the_twin_for_awkward_dimensions() {
    for kind in [ModelKind::Optimus, ModelKind::Optimus0, ModelKind::Lopt] {
        let m = model(kind, 7);
        for d in [1usize, 3, 17, 64, 300] {
            check_against_twin(&problems(&[d]), &m, 4);
        }
    }
}

/// The batch's largest problem sets how many invocations the features and step
/// kernels take per problem, how many queries an attention invocation holds and how
/// many invocations share a preconditioner block; none changes a bit of a problem's
/// steps (the secant length's and the learned scale's sums included). Small problems
/// (d ≤ 30) alone against the same with a d = 100 one.
#[test]
fn learned_steps_do_not_depend_on_the_batchs_largest_problem() {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let small = problems(&[1, 2, 5, 8, 13, 24, 30]);
    let mut mixed = small.clone();
    mixed.extend(problems(&[100]));
    for m in [
        model(ModelKind::Optimus, 11),
        model(ModelKind::Lopt, 11),
        secant_model(ModelKind::Optimus, 11, true),
        scale_model(ModelKind::Optimus0, 11, 0.5, 0.0, 0.05),
    ] {
        let kind = m.config.kind;
        let (a, b) = (
            run_gpu(&small, &m, 6, Tiling::for_device(ctx())),
            run_gpu(&mixed, &m, 6, Tiling::for_device(ctx())),
        );
        for (k, p) in small.iter().enumerate() {
            let what = format!("{kind:?} on {} d={}", p.objective.name(), p.dim);
            assert_eq!(bits(&a[k].gaps), bits(&b[k].gaps), "{what}: gaps");
            assert_eq!(bits(&a[k].x), bits(&b[k].x), "{what}: final point");
        }
    }
}

/// A lane layout whose MLP is too wide for a lane kernel runs those layers with the
/// block kernel (and their LayerNorm as its own pass); the step must not change.
#[test]
fn layers_too_wide_for_lanes_fall_back_to_blocks() {
    let cfg = ModelConfig {
        mlp_hidden: 1040,
        ..model(ModelKind::Optimus, 11).config.clone()
    };
    let m = Arc::new(Model::init(cfg, 11).unwrap());
    check_tiling_against_twin(&problems(&[3, 17]), &m, 2, Tiling::Lanes);
}

/// Models with the loss-change input (34 features) match the twin, and the input is
/// live: zeroing its weight row changes the twin's steps.
#[test]
fn the_loss_change_feature_matches_the_twin() {
    for kind in [ModelKind::Optimus, ModelKind::Optimus0, ModelKind::Lopt] {
        let m = loss_model(kind, 5);
        let ps = problems(&[5, 1, 33, 2]);
        check_against_twin(&ps, &m, 5);
        let blind = blind_to(&m, N_FEATURES..N_FEATURES + 1);
        let diff = twin_difference(&m, &blind, &ps[0], 5);
        assert!(
            diff > 1e-6,
            "{kind:?}: the loss-change input changed nothing ({diff})"
        );
    }
}

/// Models with a learned step scale match the twin, ℓ is live (zeroing ρ's weights
/// changes the steps), and ℓ stops at ±LOG_SCALE_MAX: there ρ's bias pushes ℓ up by 4
/// per step with λ_s = 1e-6, so steps are visible only once ℓ is at the bound, and the
/// run would leave the calm region if ℓ went past it.
#[test]
fn the_learned_step_scale_matches_the_twin() {
    let ps = problems(&[5, 1, 33, 2]);
    for kind in [ModelKind::Optimus, ModelKind::Optimus0, ModelKind::Lopt] {
        let m = scale_model(kind, 5, 0.5, 0.0, 0.05);
        check_against_twin(&ps, &m, 5);
        let mut blind = (*m).clone();
        set_head_column(&mut blind, m.config.scale_output().unwrap(), |_| 0.0);
        let diff = twin_difference(&m, &blind, &ps[0], 5);
        assert!(
            diff > 1e-6,
            "{kind:?}: the step scale changed nothing ({diff})"
        );
    }
    let m = scale_model(ModelKind::Optimus, 6, 4.0, 10.0, 1e-6);
    check_tiling_against_twin(&ps, &m, 5, Tiling::Lanes);
    let p = &ps[0];
    let mut st = cpu::LearnedState::new(ModelKind::Optimus, &p.x0);
    let mut g = vec![0.0; p.dim];
    for _ in 0..4 {
        let f = p.cpu_gap_grad(&st.x, &mut g).unwrap();
        cpu::step(&m, &mut st, f, &g);
    }
    assert_eq!(st.log_scale, LOG_SCALE_MAX);
}

/// On problems with |g| ≈ 1e12 (as on Perm at d ≥ 30; here Sphere scaled by 1e11 and
/// Rosenbrock by 1e8) the accumulators v and r_k reach 1e21–1e25, whose squares overflow
/// f32: the GPU's channel normalization must still match the twin's.
#[test]
fn features_of_steep_problems_do_not_overflow() {
    let ps: Vec<ProblemSpec> = [(Function::Sphere, 6, 11.0), (Function::Rosenbrock, 33, 8.0)]
        .into_iter()
        .map(|(f, d, log10_scale)| {
            let opts = SampleOptions {
                shift: 0.0,
                rotate: false,
                log10_scale: (log10_scale, log10_scale),
                log10_width: (0.0, 0.0),
                start_fraction: 1.0,
            };
            ProblemSpec::sample(Objective::Builtin(f), d, &opts, 5).unwrap()
        })
        .collect();
    for kind in [ModelKind::Optimus, ModelKind::Lopt] {
        check_against_twin(&ps, &model(kind, 2), 3);
    }
}

/// Models that read the last step s and gradient change y (input slots 35 and 36) match
/// the twin in a mixed batch (d = 1 included; s and y are 0 at the first step), and
/// those inputs are live: zeroing their weight rows changes the steps.
#[test]
fn the_secant_features_match_the_twin() {
    let ps = problems(&[5, 1, 33, 2, 70]);
    for kind in [ModelKind::Optimus, ModelKind::Optimus0, ModelKind::Lopt] {
        let m = secant_feature_model(kind, 3);
        check_against_twin(&ps, &m, 6);
        let blind = blind_to(&m, N_FEATURES_WITH_SCALE..N_FEATURES_WITH_SECANT);
        let diff = twin_difference(&m, &blind, &ps[0], 6);
        assert!(
            diff > 1e-6,
            "{kind:?}: the secant inputs changed nothing ({diff})"
        );
    }
}

/// Models with the secant step length, without and with absolute steps and with the
/// unit first step, match the twin in a mixed batch (d = 1 included), and the absolute
/// part is live; on Sphere, f = ‖x − c‖², whose γ = sᵀy / yᵀy is 1/2 exactly, the twin's
/// ℓ is log rms(x − c) at the point where it was measured, and on the first step 0, or
/// log min(rms(g), 1/√d) with the unit first step.
#[test]
fn the_secant_step_length_matches_the_twin() {
    let ps = problems(&[5, 1, 33, 2, 70]);
    for kind in [ModelKind::Optimus, ModelKind::Optimus0, ModelKind::Lopt] {
        check_against_twin(&ps, &secant_model(kind, 9, false), 6);
        let m = secant_model(kind, 9, true);
        check_against_twin(&ps, &m, 6);
        check_against_twin(&ps, &unit_first_model(kind, 9), 6);
        // ν = −1000 everywhere: no absolute part.
        let mut relative = (*m).clone();
        let c = m.config.absolute_output().unwrap();
        set_head_column(&mut relative, c, |_| 0.0);
        let b = relative.config.tensor("head.bias").unwrap().offset;
        relative.weights[b + c] = -1e3;
        let diff = twin_difference(&m, &relative, &ps[0], 6);
        assert!(
            diff > 1e-6,
            "{kind:?}: the absolute part changed nothing ({diff})"
        );
    }
    let opts = SampleOptions {
        shift: 0.0,
        rotate: false,
        log10_scale: (0.0, 0.0),
        log10_width: (0.0, 0.0),
        start_fraction: 0.5,
    };
    // d = 7 starts with rms(g) > 1/√d, d = 1 below it: both sides of the min.
    for (d, unit_first) in [(7, false), (7, true), (1, true)] {
        let m = if unit_first {
            unit_first_model(ModelKind::Optimus, 4)
        } else {
            secant_model(ModelKind::Optimus, 4, false)
        };
        let p = ProblemSpec::sample(Objective::Builtin(Function::Sphere), d, &opts, 3).unwrap();
        check_secant_lengths(&m, &p, unit_first);
    }
}

/// The quasi-Newton step matches the twin for every kind in a mixed batch (d = 1 and
/// d = 70, past one workgroup, included), and the network's correction is live: with
/// the head zeroed the steps differ.
#[test]
fn the_quasi_newton_step_matches_the_twin() {
    let ps = problems(&[5, 1, 33, 2, 70]);
    for rule in QN_RULES {
        for kind in [ModelKind::Optimus, ModelKind::Optimus0, ModelKind::Lopt] {
            let m = qn_model(kind, rule, 5, 100.0);
            check_against_twin(&ps, &m, 6);
            let prior = qn_model(kind, rule, 5, 0.0);
            // Levy at d = 33: away from the minimizer, where the correction shows.
            let diff = twin_difference(&m, &prior, &ps[2], 6);
            assert!(
                diff > 1e-6,
                "{kind:?} {rule:?}: the network's correction changed nothing ({diff})"
            );
        }
    }
    // The metric is live: the two priors step differently.
    let [a, b] = QN_RULES.map(|r| qn_model(ModelKind::Optimus0, r, 5, 0.0));
    let diff = twin_difference(&a, &b, &ps[2], 6);
    assert!(diff > 1e-6, "the diagonal metric changed nothing ({diff})");
}

/// Both metrics of the quasi-Newton step.
const QN_RULES: [StepRule; 2] = [StepRule::QuasiNewton, StepRule::DiagonalQuasiNewton];

/// Known answer of the diagonal metric: on the first step h_i g_i = g_i/√(0.01 g_i²)
/// = 10·sign(g_i), so L-BFGS's first trial length min(rms(h∘g), 1/√d) = 1/√d makes it a
/// sign step x − sign(g)/√d of length 1, whatever the coordinates' scales (here Sphere
/// stretched by 1e3: gradients of 1e3 and more).
#[test]
fn the_diagonal_quasi_newton_step_starts_with_a_sign_step() {
    let opts = SampleOptions {
        shift: 0.3,
        log10_width: (3.0, 3.0),
        ..Default::default()
    };
    for kind in [ModelKind::Optimus, ModelKind::Optimus0, ModelKind::Lopt] {
        let m = qn_model(kind, StepRule::DiagonalQuasiNewton, 2, 0.0);
        for d in [1, 7, 40] {
            let p = ProblemSpec::sample(Objective::Builtin(Function::Sphere), d, &opts, 9).unwrap();
            let (st, g) = first_twin_step(&m, &p);
            let want: Vec<f64> = (0..d)
                .map(|i| p.x0[i] - g[i].signum() / (d as f64).sqrt())
                .collect();
            assert!(
                max_abs_diff(&st.x, &want) < 1e-9,
                "{kind:?} d = {d}: the first diagonal step is not a sign step of length 1"
            );
        }
    }
}

/// The twin's state after `m`'s first step on `p`, and the gradient at the start point.
fn first_twin_step(m: &Model, p: &ProblemSpec) -> (cpu::LearnedState, Vec<f64>) {
    let mut st = cpu::LearnedState::new(m.config.kind, &p.x0);
    let mut g = vec![0.0; p.dim];
    let f0 = p.cpu_gap_grad(&st.x, &mut g).unwrap();
    cpu::step(m, &mut st, f0, &g);
    (st, g)
}

/// Known answer: with a zero head the quasi-Newton step is the Barzilai–Borwein method,
/// so on Sphere, f = ‖x − c‖² with γ = sᵀy / yᵀy = 1/2 exactly, the first step (L-BFGS's
/// first trial, length min(1, 1/‖g‖) along g) is followed by one that lands on c.
#[test]
fn a_zero_head_quasi_newton_step_is_barzilai_borwein() {
    let opts = SampleOptions {
        shift: 0.3,
        ..Default::default()
    };
    for kind in [ModelKind::Optimus, ModelKind::Optimus0, ModelKind::Lopt] {
        let m = qn_model(kind, StepRule::QuasiNewton, 2, 0.0);
        for d in [1, 7, 40] {
            let p = ProblemSpec::sample(Objective::Builtin(Function::Sphere), d, &opts, 9).unwrap();
            let (mut st, mut g) = first_twin_step(&m, &p);
            let norm_g = g.iter().map(|v| v * v).sum::<f64>().sqrt();
            let first: Vec<f64> = (0..d)
                .map(|i| p.x0[i] - g[i] * (1.0 / norm_g).min(1.0))
                .collect();
            assert!(
                max_abs_diff(&st.x, &first) < 1e-12,
                "{kind:?} d = {d}: the first step is not L-BFGS's first trial"
            );
            let f1 = p.cpu_gap_grad(&st.x, &mut g).unwrap();
            cpu::step(&m, &mut st, f1, &g);
            assert!(
                max_abs_diff(&st.x, &p.center) < 1e-12,
                "{kind:?} d = {d}: the Barzilai–Borwein step did not land on the minimizer"
            );
        }
    }
}

/// Known answer on the GPU: a fresh quasi-Newton model (head at 1 % of the usual draw,
/// either metric) takes shifted Sphere at d = 2, 10 and 100 to a relative gap ≤ 1e-8
/// within 50 steps,
/// the precision that the paper's step, whose length cannot go to zero, never reaches.
#[test]
fn a_fresh_quasi_newton_model_converges_on_sphere() {
    let opts = SampleOptions {
        shift: 0.5,
        ..Default::default()
    };
    let ps: Vec<ProblemSpec> = [2, 10, 100]
        .iter()
        .map(|&d| ProblemSpec::sample(Objective::Builtin(Function::Sphere), d, &opts, 4).unwrap())
        .collect();
    for (rule, kind) in QN_RULES
        .into_iter()
        .flat_map(|r| [ModelKind::Optimus, ModelKind::Optimus0, ModelKind::Lopt].map(|k| (r, k)))
    {
        let cfg = ModelConfig {
            step: rule,
            features: N_FEATURES_WITH_SECANT,
            lambda_mu: 1.0,
            lambda_s: 1.0,
            ..model(kind, 0).config.clone()
        };
        let m = Arc::new(Model::init(cfg, 1).unwrap());
        for (p, r) in ps.iter().zip(run_gpu(&ps, &m, 50, Tiling::Lanes)) {
            let rel = r.final_gap() / r.gaps[0];
            assert!(
                rel <= 1e-8,
                "{kind:?} {rule:?} d = {}: relative gap {rel:e} after 50 steps",
                p.dim
            );
        }
    }
}

/// Steps `m` on the Sphere problem `p` with the twin and checks ℓ after each step.
fn check_secant_lengths(m: &Model, p: &ProblemSpec, unit_first: bool) {
    let mut st = cpu::LearnedState::new(ModelKind::Optimus, &p.x0);
    let mut g = vec![0.0; p.dim];
    for t in 0..4 {
        let f = p.cpu_gap_grad(&st.x, &mut g).unwrap();
        let rms = (f / p.dim as f64).sqrt();
        let rms_g = 2.0 * rms;
        cpu::step(m, &mut st, f, &g);
        if t == 0 && unit_first {
            let want = rms_g.min(1.0 / (p.dim as f64).sqrt()).ln();
            assert!(
                (st.log_scale - want).abs() < 1e-9,
                "d = {}: first ℓ = {}, log min(rms(g), 1/√d) = {want}",
                p.dim,
                st.log_scale
            );
        } else if t == 0 {
            assert_eq!(st.log_scale, 0.0, "the first step has no secant pair");
        } else {
            assert!(
                (st.log_scale - rms.ln()).abs() < 1e-9,
                "step {t}: ℓ = {}, log rms(x − c) = {}",
                st.log_scale,
                rms.ln()
            );
        }
    }
}

#[test]
fn learned_steps_match_the_twin_in_a_mixed_batch() {
    for kind in [ModelKind::Optimus, ModelKind::Optimus0, ModelKind::Lopt] {
        check_against_twin(&problems(&[5, 1, 33, 70, 2, 12]), &model(kind, 3), 4);
    }
}

#[test]
fn optimus_is_permutation_equivariant() {
    // The same sphere problem twice, the second with its coordinates permuted.
    let d = 9;
    let base = ProblemSpec::sample(
        Objective::Builtin(Function::Sphere),
        d,
        &SampleOptions {
            shift: 0.3,
            ..Default::default()
        },
        5,
    )
    .unwrap();
    let perm: Vec<usize> = (0..d).map(|i| (i * 4 + 3) % d).collect();
    let mut permuted = base.clone();
    for i in 0..d {
        permuted.x0[i] = base.x0[perm[i]];
        permuted.center[i] = base.center[perm[i]];
    }
    let m = model(ModelKind::Optimus, 11);
    let res = run_gpu(&[base.clone(), permuted], &m, 5, Tiling::for_device(ctx()));
    for i in 0..d {
        assert!(
            (res[1].x[i] - res[0].x[perm[i]]).abs() <= 1e-5 * (1.0 + res[0].x[perm[i]].abs()),
            "coordinate {i}"
        );
    }
    let twin_a = run_learned(&m, &base, 5).unwrap();
    for i in 0..d {
        assert!((twin_a.x[i] - res[0].x[i]).abs() < 1e-3);
    }
}

#[test]
fn the_preconditioner_stays_symmetric_positive_semidefinite() {
    let m = model(ModelKind::Optimus, 2);
    let p = &problems(&[6])[0];
    let mut st = cpu::LearnedState::new(ModelKind::Optimus, &p.x0);
    let mut g = vec![0.0; 6];
    for _ in 0..10 {
        let f = p.cpu_gap_grad(&st.x, &mut g).unwrap();
        cpu::step(&m, &mut st, f, &g);
    }
    let b = st.b.unwrap();
    let d = 6;
    for i in 0..d {
        for j in 0..d {
            assert_eq!(b[i * d + j], b[j * d + i]);
        }
    }
    // Cholesky of B succeeds (B = I + Σ u uᵀ is positive definite).
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = b[i * d + i] - s;
                assert!(v >= 1.0 - 1e-9, "pivot {v}: B − I should be PSD");
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (b[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    assert!(
        b.iter()
            .enumerate()
            .any(|(k, &v)| k % (d + 1) != 0 && v != 0.0),
        "B was updated"
    );
}

#[test]
fn learned_methods_need_a_model_of_their_kind() {
    let e = OptimizerConfig::new(Method::Optimus)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs a model"), "{e}");
    let cfg = OptimizerConfig {
        model: Some(model(ModelKind::Lopt, 1)),
        ..OptimizerConfig::new(Method::Optimus)
    };
    assert!(cfg.validate().unwrap_err().to_string().contains("Lopt"));
}

/// The caller's side of an embedding: p textbook Sphere problems of dimension d (starts
/// scaled by 0.2), the caller's buffers x, ∇f and f, and the caller's own kernel (f = Σ x²,
/// ∇f = 2x, one invocation per problem) with its bind group.
struct Caller {
    problems: Vec<ProblemSpec>,
    x: wgpu::Buffer,
    g: wgpu::Buffer,
    f: wgpu::Buffer,
    kernel: Arc<optimus_gpu::kernel::Kernel>,
    group: wgpu::BindGroup,
    _dims: wgpu::Buffer,
}

impl Caller {
    fn new(p: usize, d: usize) -> Self {
        let src = "@group(0) @binding(0) var<uniform> dims: vec4<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> f: array<f32>;
@compute @workgroup_size(1) fn main(@builtin(workgroup_id) w: vec3<u32>) {
    let d = dims.x; var s = 0.0;
    for (var i = 0u; i < d; i++) { let v = x[w.x * d + i]; s += v * v; g[w.x * d + i] = 2.0 * v; }
    f[w.x] = s;
}";
        let problems: Vec<ProblemSpec> = (0..p)
            .map(|k| {
                let mut s = ProblemSpec::sample(
                    Objective::Builtin(Function::Sphere),
                    d,
                    &SampleOptions::default(),
                    k as u64,
                )
                .unwrap();
                s.x0.iter_mut().for_each(|v| *v *= 0.2);
                s
            })
            .collect();
        let x0: Vec<f32> = problems
            .iter()
            .flat_map(|s| s.x0.iter().map(|&v| v as f32))
            .collect();
        let x = ctx().storage("x", &x0).unwrap();
        let g = ctx().storage_zeroed("g", p * d).unwrap();
        let f = ctx().storage_zeroed("f", p).unwrap();
        let dims = ctx().uniform("dims", &[d as u32, 0, 0, 0]);
        let kernel = optimus_gpu::kernel::Kernel::new(ctx(), "caller", src).unwrap();
        let group = kernel.bind(ctx(), &[&dims, &x, &g, &f]);
        Self {
            problems,
            x,
            g,
            f,
            kernel,
            group,
            _dims: dims,
        }
    }

    /// `passes` iterations of the caller's loop: its kernel, then the optimizer's step.
    fn run(&self, opt: &optimus_gpu::embed::EmbeddedOptimizer, passes: u32) {
        for _ in 0..passes {
            let mut enc = ctx().device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&self.kernel.pipeline);
                pass.set_bind_group(0, &self.group, &[]);
                pass.dispatch_workgroups(self.problems.len() as u32, 1, 1);
                opt.record(&mut pass);
            }
            ctx().queue.submit([enc.finish()]);
        }
    }
}

/// The caller's x of problem `k` is the twin's to 1e-4 in every coordinate.
fn assert_x_is(x: &[f32], twin: &[f64], k: usize) {
    for (i, (a, b)) in x.iter().zip(twin).enumerate() {
        assert!(
            (*a as f64 - b).abs() < 1e-4,
            "problem {k} coordinate {i}: {a} vs {b}"
        );
    }
}

#[test]
fn embedded_optimizer_drives_a_callers_buffers_like_the_twin() {
    use optimus_gpu::embed::EmbeddedOptimizer;
    let (p, d, steps) = (3usize, 7usize, 4u32);
    // With the loss-change input, so the caller's f reaches the features too.
    let m = loss_model(ModelKind::Optimus, 21);
    let c = Caller::new(p, d);
    let dims = vec![d; p];
    let e = EmbeddedOptimizer::new(ctx(), &m, &dims, &c.x, &c.g, None, steps)
        .err()
        .expect("a loss-reading model needs f")
        .to_string();
    assert!(e.contains("features: 34"), "{e}");
    let opt = EmbeddedOptimizer::new(ctx(), &m, &dims, &c.x, &c.g, Some(&c.f), steps).unwrap();
    c.run(&opt, steps + 1);
    let xs: Vec<f32> = ctx().read(&c.x, p * d).unwrap();
    let hist = opt.history(ctx()).unwrap();
    for (k, s) in c.problems.iter().enumerate() {
        assert_eq!(hist[k].1, steps, "every problem took its steps");
        let t = run_learned(&m, s, steps).unwrap();
        assert_x_is(&xs[k * d..(k + 1) * d], &t.x, k);
        assert!((hist[k].2[0] - t.gaps[0]).abs() < 1e-4 * (1.0 + t.gaps[0]));
    }
}

/// The hybrid embedded in a caller's loop follows its twin: the accepted points' f in
/// the history, x at the last accepted point; a model that is not Optimus is refused.
#[test]
fn embedded_hybrid_drives_a_callers_buffers_like_the_twin() {
    use optimus_gpu::embed::EmbeddedOptimizer;
    let (p, d, steps) = (3usize, 7usize, 6u32);
    let m = loss_model(ModelKind::Optimus, 21);
    let c = Caller::new(p, d);
    let dims = vec![d; p];
    let lopt = model(ModelKind::Lopt, 1);
    let e = EmbeddedOptimizer::hybrid(ctx(), &lopt, &dims, &c.x, &c.g, &c.f, steps)
        .err()
        .expect("the hybrid runs Optimus")
        .to_string();
    assert!(e.contains("Optimus") && e.contains("lopt"), "{e}");
    let opt = EmbeddedOptimizer::hybrid(ctx(), &m, &dims, &c.x, &c.g, &c.f, steps).unwrap();
    c.run(&opt, steps + 1);
    let xs: Vec<f32> = ctx().read(&c.x, p * d).unwrap();
    let hist = opt.history(ctx()).unwrap();
    for (k, s) in c.problems.iter().enumerate() {
        assert_eq!(hist[k].1, steps, "every problem took its steps");
        let t = run_guarded(&m, s, steps, Guarding::Hybrid).unwrap();
        for (i, (a, b)) in hist[k].2.iter().zip(&t.gaps).enumerate() {
            assert!(
                (a - b).abs() <= 1e-3 * b.abs() + 1e-6 * t.gaps[0],
                "problem {k} step {i}: f {a} embedded, {b} in the twin"
            );
        }
        assert_x_is(&xs[k * d..(k + 1) * d], &t.x, k);
    }
}

#[test]
fn learned_step_loop_reads_nothing_back() {
    // Its own device: other tests read back from the shared one concurrently.
    let ctx = optimus_gpu::GpuContext::new().unwrap();
    let kernels = Kernels::new(&ctx).unwrap();
    let stage = ObjectiveStage::new(&ctx, None).unwrap();
    let m = model(ModelKind::Optimus, 4);
    let cfg = OptimizerConfig {
        model: Some(m),
        ..OptimizerConfig::new(Method::Optimus)
    };
    let run = GpuRun::new(
        &ctx,
        &kernels,
        &stage,
        &problems(&[3, 40, 9]),
        &cfg,
        None,
        10,
    )
    .unwrap();
    let before = ctx.readback_count();
    run.submit_passes(&ctx, 11);
    assert_eq!(
        ctx.readback_count(),
        before,
        "the learned step loop must not read back"
    );
    assert!(run.results(&ctx).unwrap().iter().all(|r| r.iters == 10));
}

#[test]
fn optimus_reaches_d_1024_on_one_problem() {
    // Attention streams keys through workgroup memory, and the preconditioner works
    // row by row: neither is bounded by workgroup memory or by per-invocation loop
    // limits (lavapipe stops an invocation after 65 535 loop iterations).
    check_against_twin(&problems(&[1024]), &model(ModelKind::Optimus, 13), 2);
    check_against_twin(&problems(&[1100, 3]), &model(ModelKind::Optimus, 14), 2);
}

#[test]
fn a_diverging_problem_is_flagged_and_the_learned_batch_goes_on() {
    let m = model(ModelKind::Optimus, 6);
    let mut ps = problems(&[5, 8, 5]);
    // An overflowing objective: f and ∇f become infinite at the first evaluation.
    ps[1].scale = 1e38;
    ps[1].x0.iter_mut().for_each(|v| *v += 1e3);
    let res = run_gpu(&ps, &m, 6, Tiling::for_device(ctx()));
    assert_eq!(res[1].status, optimus_gpu::optim::Status::Diverged);
    for k in [0, 2] {
        assert_eq!(
            res[k].status,
            optimus_gpu::optim::Status::Done,
            "problem {k}"
        );
        assert_eq!(res[k].iters, 6);
        let c = run_learned(&m, &ps[k], 6).unwrap();
        assert!(
            (res[k].final_gap() - c.final_gap()).abs() <= 1e-3 * c.gaps[0],
            "problem {k} unaffected by its neighbour"
        );
    }
}

fn run_guarded_gpu(problems: &[ProblemSpec], m: &Arc<Model>, steps: u32) -> Vec<ProblemResult> {
    let tiling = Tiling::for_device(ctx());
    run_method(problems, m, Method::OptimusGuard, steps, tiling)
}

#[test]
fn the_guarded_step_matches_the_twin() {
    let m = model(ModelKind::Optimus, 8);
    let ps = problems(&[1, 3, 17, 70]);
    let steps = 6;
    let gpu = run_guarded_gpu(&ps, &m, steps);
    let mut fallback_taken = false;
    for (p, g) in ps.iter().zip(&gpu) {
        let c = run_guarded(&m, p, steps, Guarding::Guard).unwrap();
        let what = format!("{} d={}", p.objective.name(), p.dim);
        assert_eq!((g.status, g.iters), (c.status, c.iters), "{what}");
        // Two evaluations a step after the first evaluation.
        assert_eq!((g.evals, c.evals), (1 + 2 * steps, 1 + 2 * steps), "{what}");
        let moved = max_abs_diff(&c.x, &p.x0);
        assert!(moved > 1e-4, "{what}: the twin barely moved ({moved})");
        for i in 0..p.dim {
            let (dg, dc) = (g.x[i] - p.x0[i], c.x[i] - p.x0[i]);
            assert!(
                (dg - dc).abs() <= 2e-3 * moved + 1e-5,
                "{what}: coordinate {i} moved {dg} on the GPU, {dc} in the twin"
            );
        }
        fallback_taken |= max_abs_diff(&run_learned(&m, p, steps).unwrap().x, &c.x) > 1e-6;
    }
    assert!(
        fallback_taken,
        "the guard never left the learned path (fallback or backtracking): the test is vacuous"
    );
}

/// The hybrid (Optimus and L-BFGS in turn, one evaluation a step) follows its twin gap
/// by gap on a mixed batch, through accepted proposals of both kinds and rejected ones:
/// the random model's short steps are accepted, and the same model with steps of about
/// 5 per coordinate (`lambda_s` 100) is rejected where it lands uphill, and the first
/// fallback (a unit step along −g) overshoots on the quadratics started off centre.
#[test]
fn the_hybrid_step_matches_the_twin() {
    let steps = 8;
    let small = model(ModelKind::Optimus, 8);
    let mut big = (*small).clone();
    big.config.lambda_s = 100.0;
    let mut ps = problems(&[1, 3, 17, 70]);
    for d in [1usize, 3] {
        let mut p = ProblemSpec::sample(
            Objective::Builtin(Function::Sphere),
            d,
            &SampleOptions::default(),
            d as u64,
        )
        .unwrap();
        p.scale = 100.0;
        p.x0 = p.center.iter().map(|c| c + 0.3).collect();
        ps.push(p);
    }
    let (mut learned_taken, mut rejected) = (false, false);
    for m in [small, Arc::new(big)] {
        let gpu = run_method(
            &ps,
            &m,
            Method::OptimusHybrid,
            steps,
            Tiling::for_device(ctx()),
        );
        for (p, g) in ps.iter().zip(&gpu) {
            let c = run_guarded(&m, p, steps, Guarding::Hybrid).unwrap();
            let what = format!(
                "{} d={} λ_s={}",
                p.objective.name(),
                p.dim,
                m.config.lambda_s
            );
            assert_eq!((g.status, g.iters), (c.status, c.iters), "{what}");
            // One evaluation a step.
            assert_eq!((g.evals, c.evals), (1 + steps, 1 + steps), "{what}");
            for (t, (a, b)) in g.gaps.iter().zip(&c.gaps).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-3 * b.abs() + 1e-6 * c.gaps[0],
                    "{what} step {t}: gap {a} on the GPU, {b} in the twin"
                );
            }
            // Step t + 1's gap comes from proposal t, Optimus's for odd t.
            for t in 0..steps as usize {
                learned_taken |= t % 2 == 1 && c.gaps[t + 1] < c.gaps[t];
                rejected |= c.gaps[t + 1] == c.gaps[t] && c.gaps[t] > 0.0;
            }
            // Never uphill.
            assert!(
                c.gaps.windows(2).all(|w| w[1] <= w[0]),
                "{what}: {:?}",
                c.gaps
            );
        }
    }
    assert!(
        learned_taken,
        "no Optimus proposal was accepted: the test is vacuous"
    );
    assert!(rejected, "no proposal was rejected: the test is vacuous");
}

#[test]
fn the_guard_solves_sphere_with_its_fallback() {
    // Known answer: on Σ z² the first (s, y) pair has y = 2s, so the fallback's
    // L-BFGS H is I/2 and its second step lands on the minimizer; the guard keeps it.
    let m = model(ModelKind::Optimus, 9);
    let ps: Vec<ProblemSpec> = [2usize, 10, 100]
        .iter()
        .map(|&d| {
            ProblemSpec::sample(
                Objective::Builtin(Function::Sphere),
                d,
                &SampleOptions::default(),
                d as u64,
            )
            .unwrap()
        })
        .collect();
    for (p, r) in ps.iter().zip(run_guarded_gpu(&ps, &m, 4)) {
        assert!(
            r.final_gap() <= 1e-8 * r.gaps[0],
            "d = {}: gap {} from {}",
            p.dim,
            r.final_gap(),
            r.gaps[0]
        );
    }
}

#[test]
fn the_guard_keeps_a_start_that_blows_up_finite() {
    // A sphere scaled to within two orders of f32's largest value: the random model's
    // steps overflow it, and the plain learned run is flagged as diverged; behind the
    // guard the problem stays finite and ends no higher than it started.
    let m = model(ModelKind::Optimus, 6);
    let mut p = ProblemSpec::sample(
        Objective::Builtin(Function::Sphere),
        5,
        &SampleOptions::default(),
        3,
    )
    .unwrap();
    p.scale = 1e36;
    let plain = run_gpu(std::slice::from_ref(&p), &m, 8, Tiling::for_device(ctx()));
    assert_eq!(plain[0].status, optimus_gpu::optim::Status::Diverged);
    let guarded = &run_guarded_gpu(std::slice::from_ref(&p), &m, 8)[0];
    assert_eq!(guarded.status, optimus_gpu::optim::Status::Done);
    assert!(guarded.final_gap().is_finite() && guarded.final_gap() <= guarded.gaps[0]);
    let c = run_guarded(&m, &p, 8, Guarding::Guard).unwrap();
    assert_eq!(c.status, optimus_gpu::optim::Status::Done);
}

/// Known answers of the meta-training issue, for the committed Optimus behind the guard
/// (the pure Optimus does not meet them; docs/RESULTS.md): Sphere and the shipped
/// quadratic example (condition 1e3) reach a relative gap of 1e-8 within 200 steps at
/// d = 2, 10, 100, and no start of any of the 13 functions diverges at d = 2, 10, 30,
/// 100 (Perm's long first steps included).
#[test]
fn the_committed_optimus_behind_the_guard_meets_the_known_answers() {
    committed_optimus_meets_the_known_answers(Method::OptimusGuard);
}

/// The same known answers for the committed Optimus taking turns with L-BFGS (one
/// evaluation a step).
#[test]
fn the_committed_optimus_hybrid_meets_the_known_answers() {
    committed_optimus_meets_the_known_answers(Method::OptimusHybrid);
}

fn committed_optimus_meets_the_known_answers(method: Method) {
    let dir = optimus_gpu::eval::default_model_dir(ModelKind::Optimus)
        .expect("assets/models/optimus is committed");
    let m = Arc::new(Model::load(&dir).unwrap());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let user = Arc::new(
        optimus_gpu::user_objective::UserObjective::load(
            &root.join("assets/objectives/quadratic.wgsl"),
        )
        .unwrap(),
    );
    let run = |stage: &ObjectiveStage, ps: &[ProblemSpec]| {
        let kernels = Kernels::new(ctx()).unwrap();
        let cfg = OptimizerConfig {
            model: Some(m.clone()),
            ..OptimizerConfig::new(method)
        };
        GpuRun::new(ctx(), &kernels, stage, ps, &cfg, None, 200)
            .unwrap()
            .run(ctx())
            .unwrap()
    };
    let sample = |o: Objective, d: usize, seed: u64| {
        ProblemSpec::sample(o, d, &SampleOptions::default(), seed).unwrap()
    };
    let dims = [2usize, 10, 100];
    let spheres: Vec<_> = dims
        .iter()
        .map(|&d| sample(Objective::Builtin(Function::Sphere), d, 7))
        .collect();
    let quadratics: Vec<_> = dims
        .iter()
        .map(|&d| sample(Objective::User(user.clone()), d, 7))
        .collect();
    let builtin = ObjectiveStage::new(ctx(), None).unwrap();
    let users = ObjectiveStage::new(ctx(), Some(&user)).unwrap();
    for (ps, stage) in [(&spheres, &builtin), (&quadratics, &users)] {
        for (p, r) in ps.iter().zip(run(stage, ps)) {
            assert!(
                r.final_gap() <= 1e-8 * r.gaps[0],
                "{} d = {} under {}: gap {} from {}",
                p.objective.name(),
                p.dim,
                method.name(),
                r.final_gap(),
                r.gaps[0]
            );
        }
    }
    let all: Vec<ProblemSpec> = Function::ALL
        .iter()
        .flat_map(|&f| [2usize, 10, 30, 100].map(move |d| (f, d)))
        .filter(|&(f, d)| f != Function::Powell || d % 4 == 0)
        .map(|(f, d)| sample(Objective::Builtin(f), d, 11))
        .collect();
    for (p, r) in all.iter().zip(run(&builtin, &all)) {
        assert_ne!(
            r.status,
            optimus_gpu::optim::Status::Diverged,
            "{} d = {} diverged under {}",
            p.objective.name(),
            p.dim,
            method.name()
        );
    }
}

/// The guard's constants are written twice, in `learned/guard.wgsl` and in its twin.
#[test]
fn the_guard_kernel_and_its_twin_share_their_constants() {
    let src = optimus_gpu::kernel::SHADERS
        .iter()
        .find(|(p, _)| *p == "learned/guard.wgsl")
        .unwrap()
        .1;
    let value = |name: &str| -> f64 {
        let line = src
            .lines()
            .find(|l| l.starts_with(&format!("const {name}:")))
            .unwrap_or_else(|| panic!("guard.wgsl has no const {name}"));
        let v = line.split('=').nth(1).unwrap().trim().trim_end_matches(';');
        v.trim_end_matches('u').parse().unwrap()
    };
    use optimus_gpu::optim::cpu::{GUARD_MEMORY, GUARD_RETREAT};
    assert_eq!(value("GUARD_MEMORY"), GUARD_MEMORY as f64);
    assert_eq!(value("RETREAT"), GUARD_RETREAT);
}

/// Through a backtracking step (the fallback the lower candidate but uphill: the point
/// stays, τ shrinks), the GPU follows the twin. Quadratics started 0.3 off centre make
/// the first fallback (a unit step along −g) overshoot uphill, and a model with long
/// steps puts Optimus's candidate higher still; the twin's history shows a retreat as a
/// repeated gap.
#[test]
fn the_guard_backtracks_like_the_twin() {
    let steps = 6;
    let mut checked = 0;
    for seed in 0..12u64 {
        // Steps of about 5 per coordinate: Optimus's candidate lands far uphill.
        let mut big = (*model(ModelKind::Optimus, 30 + seed)).clone();
        big.config.lambda_s = 100.0;
        let m = Arc::new(big);
        let mut ps: Vec<ProblemSpec> = [1usize, 3]
            .iter()
            .map(|&d| {
                let mut p = ProblemSpec::sample(
                    Objective::Builtin(Function::Sphere),
                    d,
                    &SampleOptions::default(),
                    seed,
                )
                .unwrap();
                p.scale = 100.0;
                p.x0 = p.center.iter().map(|c| c + 0.3).collect();
                p
            })
            .collect();
        ps.retain(|p| {
            let c = run_guarded(&m, p, steps, Guarding::Guard).unwrap();
            c.gaps.windows(2).any(|w| w[0] == w[1] && w[0] > 0.0)
        });
        if ps.is_empty() {
            continue;
        }
        for (p, g) in ps.iter().zip(run_guarded_gpu(&ps, &m, steps)) {
            let c = run_guarded(&m, p, steps, Guarding::Guard).unwrap();
            for (t, (a, b)) in g.gaps.iter().zip(&c.gaps).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-3 * b.abs() + 1e-6,
                    "d = {} seed {seed} step {t}: gap {a} on the GPU, {b} in the twin",
                    p.dim
                );
            }
            assert!(max_abs_diff(&g.x, &c.x) < 1e-4);
            checked += 1;
        }
        if checked > 0 {
            break;
        }
    }
    assert!(checked > 0, "no problem backtracked: the test is vacuous");
}

/// `bench --guard` times the guarded and hybrid steps beside the plain one (positive,
/// finite times, the ratios in the table; their values are not asserted) and refuses a
/// non-Optimus model.
#[test]
fn the_step_bench_times_the_guard_beside_the_plain_step() {
    let m = model(ModelKind::Optimus, 2);
    let r = optimus_gpu::bench::learned_step(ctx(), &m, 4, 9, 2, true).unwrap();
    for t in [
        r.guarded_seconds_per_step,
        r.hybrid_seconds_per_step,
        Some(r.seconds_per_step),
    ] {
        let t = t.unwrap();
        assert!(t > 0.0 && t.is_finite(), "{r:?}");
    }
    let table = optimus_gpu::bench::table(&[r]);
    assert!(table.contains("guarded / plain") && table.contains("hybrid / plain"));
    let lopt = model(ModelKind::Lopt, 2);
    let e = optimus_gpu::bench::learned_step(ctx(), &lopt, 4, 9, 2, true).unwrap_err();
    assert!(e.to_string().contains("--guard"), "{e}");
}
