//! PES meta-training: each kernel against its twin, the perturbed step against the
//! straightforward dense-perturbation route, the estimate against finite differences,
//! and the trainer's resume, errors and progress.

use crate::common::{assert_close, ctx, max_abs_diff};
use crate::learned::{
    loss_model, model, problems, scale_model, secant_feature_model, secant_model, unit_first_model,
};
use optimus_gpu::learned::cpu as lcpu;
use optimus_gpu::learned::linear::Tiling;
use optimus_gpu::learned::model::{Model, ModelConfig, ModelKind};
use optimus_gpu::objective::ObjectiveStage;
use optimus_gpu::optim::cpu::run_learned;
use optimus_gpu::optim::Kernels;
use optimus_gpu::problem::{Objective, ProblemSpec, SampleOptions};
use optimus_gpu::train::checkpoint::CHECKPOINT_FILE;
use optimus_gpu::train::config::TrainConfig;
use optimus_gpu::train::noise::{draw, perturbed_model};
use optimus_gpu::train::pes::{PesEngine, PesKernels, PesSettings};
use optimus_gpu::train::{self, cpu, TrainOptions};
use optimus_gpu::Function;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn settings(k: u32, horizon: u32, sigma: f32) -> PesSettings {
    PesSettings {
        truncation: k,
        horizon,
        sigma,
        seed: 1234,
        loss_clip: 3.0,
        soft_clip: false,
        loss_ramp: 0.0,
        use_sign: false,
        guarding: None,
        beta1: 0.9,
        beta2: 0.999,
        adam_eps: 1e-8,
        clip_norm: 1e9,
        trainable: Vec::new(),
        rotations: true,
    }
}

/// `m` with every LayerNorm's γ drawn from [0.5, 1.5] and β from [−0.5, 0.5] (seeded),
/// as after training: at their initial 1 and 0 a LayerNorm's γ and β (folded, or
/// perturbed per particle) would go untested.
fn drawn_layernorms(m: &Model) -> Arc<Model> {
    let mut m = m.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    for spec in m.config.tensors() {
        let leaf = spec.name.rsplit('.').nth(1).unwrap_or("");
        if leaf.starts_with("ln") {
            let centre = if spec.name.ends_with(".weight") {
                1.0
            } else {
                0.0
            };
            for v in &mut m.weights[spec.range()] {
                *v = centre + rng.random_range(-0.5..0.5);
            }
        }
    }
    Arc::new(m)
}

/// Each task twice (the two particles of a pair).
fn paired(tasks: &[ProblemSpec]) -> Vec<ProblemSpec> {
    tasks.iter().flat_map(|t| [t.clone(), t.clone()]).collect()
}

struct Fixture {
    kernels: Kernels,
    pes: PesKernels,
    stage: ObjectiveStage,
}

fn fixture() -> Fixture {
    fixture_tiled(Tiling::for_device(ctx()))
}

fn fixture_tiled(tiling: Tiling) -> Fixture {
    Fixture {
        kernels: Kernels::with_tiling(ctx(), tiling).unwrap(),
        pes: PesKernels::new(ctx()).unwrap(),
        stage: ObjectiveStage::new(ctx(), None).unwrap(),
    }
}

fn engine<'a>(fx: &'a Fixture, m: &Model, specs: &[ProblemSpec], s: PesSettings) -> PesEngine<'a> {
    PesEngine::new(ctx(), &fx.kernels, &fx.pes, &fx.stage, m, specs, s).unwrap()
}

#[test]
fn noise_kernel_matches_its_twin() {
    let fx = fixture();
    let m = model(ModelKind::Optimus, 1);
    let e = engine(
        &fx,
        &m,
        &paired(&problems(&[3, 1, 5])),
        settings(4, 40, 0.1),
    );
    e.begin_truncation(ctx(), 6);
    let stride = e.noise_layout.stride;
    let gpu: Vec<f32> = ctx().read(&e.noise, 3 * stride).unwrap();
    for pair in 0..3u32 {
        let cpu = draw(&e.noise_layout, 1234, 6, pair);
        for (j, &c) in cpu.iter().enumerate() {
            assert_close(
                gpu[pair as usize * stride + j] as f64,
                c as f64,
                1e-4,
                1.0,
                "noise",
            );
        }
    }
    let nonzero = gpu.iter().filter(|v| **v != 0.0).count();
    let real = e.noise_layout.mask.iter().filter(|&&m| m != 0).count();
    assert_eq!(
        nonzero,
        3 * real,
        "noise only (and everywhere) on real factors"
    );
    let mean = gpu.iter().map(|&v| v as f64).sum::<f64>() / nonzero as f64;
    let var = gpu.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / nonzero as f64;
    assert!(
        mean.abs() < 0.05 && (var - 1.0).abs() < 0.1,
        "N(0,1): mean {mean}, var {var}"
    );
}

/// Perturbed steps of every particle against the CPU twin run with the dense weights
/// θ ± σ a bᵀ: the rank-one kernels must equal per-particle weight copies, in both
/// layouts of the linear layers. One step for each kind, and two for models with the
/// loss-change input, whose input is 0 at the first step, and with the learned step
/// scale, whose ℓ first moves in the first step; three with the secant length and
/// absolute steps, whose ℓ is first measured at the second step, and with the last-step
/// inputs (37 features), which are first nonzero there too. With drawn LayerNorm γ and β
/// the transformers again, perturbed (the lane kernels normalize per token with each
/// particle's γ and β) and left out of `trainable` (they fold each LayerNorm into its
/// layer, as in the plain step).
#[test]
fn perturbed_step_matches_dense_perturbed_twin() {
    for tiling in [Tiling::Lanes, Tiling::Blocks] {
        perturbed_step_matches_dense_perturbed_twin_with(tiling);
    }
}

fn perturbed_step_matches_dense_perturbed_twin_with(tiling: Tiling) {
    let fx = fixture_tiled(tiling);
    let kinds = [ModelKind::Optimus, ModelKind::Optimus0, ModelKind::Lopt];
    let cases = kinds
        .map(|k| (model(k, 5), 1, false))
        .into_iter()
        .chain(kinds.map(|k| (loss_model(k, 5), 2, false)))
        .chain(kinds.map(|k| (scale_model(k, 5, 0.5, 0.0, 0.05), 2, false)))
        .chain(kinds.map(|k| (secant_model(k, 5, true), 3, false)))
        .chain(kinds.map(|k| (unit_first_model(k, 5), 3, false)))
        .chain(kinds.map(|k| (secant_feature_model(k, 5), 3, false)))
        .chain(
            kinds[..2]
                .iter()
                .flat_map(|&k| [true, false].map(|f| (drawn_layernorms(&model(k, 5)), 1, f))),
        )
        .chain(
            kinds[..2]
                .iter()
                .map(|&k| (drawn_layernorms(&secant_feature_model(k, 5)), 3, true)),
        );
    for (m, steps, freeze) in cases {
        let kind = m.config.kind;
        let tasks = problems(&[1, 3, 9, 33, 2]);
        let specs = paired(&tasks);
        let sigma = 0.2;
        // Every tensor but the LayerNorms' γ and β, by its whole name.
        let trainable = match freeze {
            true => m
                .config
                .tensors()
                .into_iter()
                .map(|t| t.name)
                .filter(|n| !(n.starts_with("ln_f") || n.contains(".ln")))
                .collect(),
            false => Vec::new(),
        };
        let s = PesSettings {
            trainable,
            ..settings(3, 30, sigma)
        };
        let e = engine(&fx, &m, &specs, s);
        // Lane kernels project their input onto a themselves and normalize it
        // themselves (folded into W when γ and β are not trained, per token with the
        // particle's γ and β otherwise): no projection or LayerNorm pass.
        let stages = e.stage_names();
        if tiling == Tiling::Lanes {
            assert!(!stages.contains(&"perturbation"), "{kind}: {stages:?}");
            assert!(!stages.contains(&"layernorm"), "{kind}: {stages:?}");
        }
        e.begin_truncation(ctx(), 2);
        e.steps(ctx(), steps);
        let x: Vec<f32> = ctx().read(&e.x, e.problems.n_total as usize).unwrap();
        let xs = e.problems.split(&x);
        let mut max_sep: f64 = 0.0;
        for (p, spec) in specs.iter().enumerate() {
            let noise = draw(&e.noise_layout, 1234, 2, (p / 2) as u32);
            let sign = if p % 2 == 0 { sigma } else { -sigma };
            let mp = perturbed_model(&m, &e.noise_layout, &noise, sign);
            let mut st = lcpu::LearnedState::new(kind, &spec.x0);
            let mut plain = lcpu::LearnedState::new(kind, &spec.x0);
            let mut g = vec![0.0; spec.dim];
            for _ in 0..steps {
                let f = spec.cpu_gap_grad(&st.x, &mut g).unwrap();
                lcpu::step(&mp, &mut st, f, &g);
                let f = spec.cpu_gap_grad(&plain.x, &mut g).unwrap();
                lcpu::step(&m, &mut plain, f, &g);
            }
            let moved = max_abs_diff(&st.x, &spec.x0);
            for i in 0..spec.dim {
                max_sep = max_sep.max((st.x[i] - plain.x[i]).abs() / moved.max(1e-12));
                let (dg, dc) = (xs[p][i] as f64 - spec.x0[i], st.x[i] - spec.x0[i]);
                assert!(
                    (dg - dc).abs() <= 2e-3 * moved + 1e-5,
                    "{kind} ({tiling:?}, {} features, LayerNorms untrained: {freeze}) particle {p} (d = {}) coordinate {i}: GPU moved {dg}, dense twin {dc}",
                    m.config.features,
                    spec.dim
                );
            }
        }
        assert!(
            max_sep > 0.05,
            "{kind}: the perturbation barely changes the step ({max_sep}); the test would be vacuous"
        );
    }
}

/// The meta-loss kernel against its twin: three perturbed steps of every particle, then
/// each particle's sum of w_t·l_t, l_t = ln(f_t + 1e-10) − ln(f_0 + 1e-10), over the
/// evaluations, against the dense-perturbed CPU run's gaps; uniform weights, a ramp,
/// and the soft clip with a bound low enough that some steps rise above it.
#[test]
fn meta_loss_sums_match_the_twin() {
    let fx = fixture();
    let kind = ModelKind::Lopt;
    let m = model(kind, 9);
    let specs = paired(&problems(&[1, 4, 7, 2]));
    let (sigma, steps, horizon) = (0.2, 3u32, 5u32);
    for (ramp, clip, soft) in [(0.0, 3.0, false), (1.5, 3.0, false), (0.0, 0.001, true)] {
        let s = PesSettings {
            loss_ramp: ramp as f32,
            loss_clip: clip as f32,
            soft_clip: soft,
            ..settings(steps, horizon, sigma)
        };
        let mut above = 0;
        let e = engine(&fx, &m, &specs, s);
        e.begin_truncation(ctx(), 0);
        e.steps(ctx(), steps);
        let loss: Vec<f32> = ctx().read(&e.loss, 2 * specs.len()).unwrap();
        let mut spread: f64 = 0.0;
        for (p, spec) in specs.iter().enumerate() {
            let noise = draw(&e.noise_layout, 1234, 0, (p / 2) as u32);
            let sign = if p % 2 == 0 { sigma } else { -sigma };
            let mp = perturbed_model(&m, &e.noise_layout, &noise, sign);
            let r = run_learned(&mp, spec, steps - 1).unwrap();
            let l0 = cpu::log_gap(r.gaps[0]);
            let want: f64 = r
                .gaps
                .iter()
                .enumerate()
                .map(|(t, &f)| {
                    above += usize::from(cpu::log_gap(f) - l0 > clip);
                    cpu::step_weight(t as u32, horizon, ramp)
                        * cpu::meta_loss_term(f, l0, clip, soft, false)
                })
                .sum();
            spread = spread.max(want.abs());
            assert_close(
                loss[2 * p] as f64,
                want,
                1e-3,
                1e-3,
                &format!("meta-loss before the reset (ramp {ramp}, soft {soft})"),
            );
            assert_eq!(loss[2 * p + 1], 0.0, "no reset, nothing after it");
        }
        assert!(
            spread > 1e-3,
            "the runs barely moved ({spread}); the test would be vacuous"
        );
        assert!(!soft || above > 0, "no step above the soft clip; vacuous");
    }
}

/// The gradient reduction, statistics and Adam step against their twins, from random
/// meta-losses and accumulation starts, with each pair weighted by Δ and by sign(Δ).
#[test]
fn pes_reduction_and_adam_match_their_twins() {
    for use_sign in [false, true] {
        pes_reduction_and_adam_match_their_twins_with(use_sign);
    }
}

fn pes_reduction_and_adam_match_their_twins_with(use_sign: bool) {
    let fx = fixture();
    let m = model(ModelKind::Optimus, 2);
    let specs = paired(&problems(&[2, 4, 3, 1, 6, 2, 5]));
    let s = PesSettings {
        use_sign,
        ..settings(5, 12, 0.05)
    };
    let e = engine(&fx, &m, &specs, s.clone());
    let n = 5u32;
    let pairs = specs.len() / 2;
    let since: Vec<u32> = (0..pairs).map(|i| [5, 4, 3, 2, 5, 0, 4][i]).collect();
    let loss: Vec<f32> = (0..2 * specs.len())
        .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1)
        .collect();
    e.begin_truncation(ctx(), n);
    ctx()
        .queue
        .write_buffer(&e.loss, 0, bytemuck::cast_slice(&loss));
    let theta0: Vec<f32> = ctx().read(&e.theta, e.packed.len).unwrap();
    e.finish_truncation(ctx(), n, &since, 0.01, 1);
    let grad: Vec<f32> = ctx().read(&e.grad, e.packed.len).unwrap();
    let first = (n + 1).saturating_sub(s.window());
    let slots = n - first + 1;
    let inv_k = 1.0 / s.truncation as f32;
    let scale = 1.0 / (pairs as f32 * 2.0 * s.sigma);
    let coef = cpu::coefficients(&loss, &since, first, slots, inv_k, scale, use_sign);
    let want = cpu::accumulate_gradient(&e.noise_layout, &e.packed, 1234, first, &coef, pairs);
    let gmax = want.iter().fold(0f32, |a, b| a.max(b.abs())) as f64;
    assert!(gmax > 0.1, "vacuous gradient {gmax}");
    for q in 0..want.len() {
        assert_close(grad[q] as f64, want[q] as f64, 1e-4, gmax, "gradient");
    }
    let st = cpu::stats(&want, &loss, inv_k);
    let gs = e.stats(ctx()).unwrap();
    assert_close(gs.grad_norm, st[0].sqrt(), 1e-4, 0.0, "gradient norm");
    assert_close(gs.train_loss, st[1], 1e-5, 1.0, "training loss");
    let mut theta = theta0.clone();
    let (mut mm, mut vv) = (vec![0f32; theta.len()], vec![0f32; theta.len()]);
    let adam = cpu::AdamStep {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        clip_norm: 1e9,
        t: 1,
    };
    cpu::adam_step(&mut theta, &mut mm, &mut vv, &grad, st[0], adam);
    let got: Vec<f32> = ctx().read(&e.theta, e.packed.len).unwrap();
    for q in 0..theta.len() {
        assert_close(got[q] as f64, theta[q] as f64, 1e-5, 1e-2, "θ after Adam");
    }
    // Padding stays zero.
    for t in &e.packed.tensors {
        for r in 0..t.rows_p {
            for c in 0..t.cols_p {
                if r >= t.rows || c >= t.cols {
                    assert_eq!(got[t.offset + r * t.cols_p + c], 0.0, "{} padding", t.name);
                }
            }
        }
    }
}

/// Total meta-loss of θ over a horizon of `t` steps (the quantity PES summed over the
/// horizon's truncations estimates the gradient of), by the f64 twin: mean over tasks of
/// (1/K) Σ_{s<t} l_s.
fn total_meta_loss(m: &Model, tasks: &[ProblemSpec], t: u32, k: u32) -> f64 {
    tasks
        .iter()
        .map(|p| {
            let r = run_learned(m, p, t - 1).unwrap();
            let l0 = cpu::log_gap(r.gaps[0]);
            r.gaps
                .iter()
                .map(|&f| cpu::meta_loss_term(f, l0, 3.0, false, false))
                .sum::<f64>()
                / k as f64
        })
        .sum::<f64>()
        / tasks.len() as f64
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// The known answer: on a tiny meta-problem (a small LOpt on shifted 2-d spheres, θ held
/// fixed; smooth at the scale of σ, so the smoothed and the plain gradient agree),
/// PES summed over the truncations of one horizon estimates the gradient of the
/// horizon's meta-loss, which central finite differences of the f64 twin give
/// precisely. Truncated ES, which credits each truncation to its own noise only, misses
/// how earlier perturbations shape later losses, and agrees visibly less.
#[test]
fn pes_estimate_agrees_with_finite_differences() {
    let fx = fixture();
    let cfg = ModelConfig {
        kind: ModelKind::Lopt,
        mlp_hidden: 8,
        lambda_mu: 0.1,
        lambda_s: 0.05,
        ..ModelConfig::for_kind(ModelKind::Lopt)
    };
    let m = Model::init(cfg, 11).unwrap();
    let tasks: Vec<ProblemSpec> = (0..8)
        .map(|k| {
            let opts = SampleOptions {
                shift: 0.3,
                rotate: false,
                log10_scale: (0.0, 0.0),
                log10_width: (0.0, 0.0),
                start_fraction: 1.0,
            };
            let mut p = ProblemSpec::sample(
                Objective::Builtin(Function::Sphere),
                2,
                &opts,
                70 + k as u64,
            )
            .unwrap();
            for i in 0..2 {
                p.x0[i] = p.center[i] + 0.5 * (p.x0[i] - p.center[i]).clamp(-1.0, 1.0);
            }
            p
        })
        .collect();
    let (k, truncs, pairs) = (4u32, 3u32, 8192usize);
    let specs: Vec<ProblemSpec> = (0..pairs)
        .flat_map(|i| [tasks[i % 8].clone(), tasks[i % 8].clone()])
        .collect();
    let estimate = |truncated: bool| -> Vec<f64> {
        let e = engine(&fx, &m, &specs, settings(k, 100, 0.01));
        let mut sum = vec![0f64; e.packed.len];
        for n in 0..truncs {
            e.begin_truncation(ctx(), n);
            e.steps(ctx(), k);
            let since = vec![if truncated { n } else { 0 }; pairs];
            e.finish_truncation(ctx(), n, &since, 0.0, n + 1);
            let g: Vec<f32> = ctx().read(&e.grad, e.packed.len).unwrap();
            for (s, v) in sum.iter_mut().zip(g) {
                *s += v as f64;
            }
        }
        let packed: Vec<f32> = sum.iter().map(|&v| v as f32).collect();
        e.packed.unpack(&packed).iter().map(|&v| v as f64).collect()
    };
    let pes = estimate(false);
    let tes = estimate(true);
    let h = 1e-3;
    let fd: Vec<f64> = (0..m.weights.len())
        .map(|q| {
            let mut mp = m.clone();
            mp.weights[q] += h as f32;
            let up = total_meta_loss(&mp, &tasks, k * truncs, k);
            mp.weights[q] -= 2.0 * h as f32;
            let down = total_meta_loss(&mp, &tasks, k * truncs, k);
            (up - down) / (2.0 * h)
        })
        .collect();
    let (c_pes, c_tes) = (cosine(&pes, &fd), cosine(&tes, &fd));
    println!("cosine with finite differences: PES {c_pes:.3}, truncated ES {c_tes:.3}");
    assert!(
        c_pes > 0.9,
        "PES estimate has cosine {c_pes} with the true gradient"
    );
    assert!(
        c_tes < c_pes - 0.05,
        "truncated ES ({c_tes}) should be visibly worse than PES ({c_pes})"
    );
}

/// A tiny run: a small Optimus on low-dimensional tasks.
fn tiny_config(iterations: u32) -> TrainConfig {
    let text = format!(
        r#"(
            tasks: (functions: ["sphere", "rosenbrock", "zakharov", "styblinski-tang"], dims: (2, 6),
                    held_out_functions: ["levy"], held_out_dims: [4]),
            truncation: 4, horizon: 12, iterations: {iterations}, meta_lr: 0.01, warmup: 2,
            log_every: 2, checkpoint_every: 3, sigma: 0.02,
            validation: (problems: 12, steps: 12),
            model: (kind: optimus, width: 16, heads: 2, mlp_hidden: 16, layers: 1),
        )"#
    );
    TrainConfig::from_ron(&text, "tiny.ron").unwrap()
}

fn options(cfg: TrainConfig, out: &std::path::Path, resume: bool) -> TrainOptions {
    TrainOptions {
        config: Some(cfg),
        iterations: None,
        kind: Some(ModelKind::Optimus),
        batch: Some(24),
        motion: false,
        init: None,
        out: out.to_path_buf(),
        resume,
        progress: false,
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("optimus-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn short_training_lowers_the_validation_meta_loss() {
    let out = tempdir("lowers");
    let s = train::train(
        ctx(),
        &options(tiny_config(24), &out, false),
        &AtomicBool::new(false),
    )
    .unwrap();
    let (first, last) = (s.log[0].val_loss, s.log.last().unwrap().val_loss);
    assert!(
        last < first - 0.002,
        "validation meta-loss went from {first} to {last}"
    );
    for f in [
        "log.csv",
        "meta_loss.svg",
        CHECKPOINT_FILE,
        "model/model.ron",
    ] {
        assert!(out.join(f).exists(), "{f} written");
    }
    let trained = Model::load(&out.join("model")).unwrap();
    assert_eq!(trained.config.width, 16);
    // best-model/ holds θ of the lowest logged validation, not the initial one (the
    // loss went down): the final θ if the last row is the lowest, else another.
    let best = train::best_row(&s.log).unwrap();
    assert!(best.val_loss <= last && best.iteration > 0, "{best:?}");
    let kept = Model::load(&s.best_dir).unwrap();
    assert_eq!(
        kept.weights == trained.weights,
        best.iteration == s.iterations,
        "best-model/ is the final θ exactly when the last validation is the lowest ({best:?})"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Stopping after 3 iterations and resuming to 6 gives θ bit for bit equal to an
/// uninterrupted 6-iteration run with the same seed. The resume takes the checkpoint's
/// batch when none is named and refuses another.
#[test]
fn resume_continues_to_the_same_result() {
    let (a, b) = (tempdir("resume-a"), tempdir("resume-b"));
    let stop = AtomicBool::new(false);
    train::train(ctx(), &options(tiny_config(6), &a, false), &stop).unwrap();
    train::train(ctx(), &options(tiny_config(3), &b, false), &stop).unwrap();
    let mut other = options(tiny_config(3), &b, true);
    other.batch = Some(26);
    let e = train::train(ctx(), &other, &stop).unwrap_err().to_string();
    assert!(e.contains("--batch 24"), "{e}");
    // Without --batch a resumed run takes the checkpoint's (24, not the default 256).
    let mut again = options(tiny_config(3), &b, true);
    again.config = None;
    again.batch = None;
    again.iterations = Some(6);
    let s = train::train(ctx(), &again, &stop).unwrap();
    assert_eq!(s.iterations, 6);
    let (ma, mb) = (
        Model::load(&a.join("model")).unwrap(),
        Model::load(&b.join("model")).unwrap(),
    );
    let init = Model::init(ma.config.clone(), 0).unwrap();
    assert_ne!(ma.weights, init.weights);
    assert_eq!(
        ma.weights, mb.weights,
        "resumed run differs from the uninterrupted one"
    );
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn bad_training_input_gets_clear_errors() {
    let err = |text: &str| {
        TrainConfig::from_ron(text, "t.ron")
            .unwrap_err()
            .to_string()
    };
    let e = err(r#"(tasks: (functions: ["sphere", "banana"]))"#);
    assert!(e.contains("banana") && e.contains("t.ron"), "{e}");
    let e = err("(tasks: (dims: (9, 3)))");
    assert!(e.contains("dims (9, 3)"), "{e}");
    let e = err(r#"(tasks: (functions: ["sphere"], held_out_functions: ["sphere"]))"#);
    assert!(e.contains("both a training function and held out"), "{e}");
    let e = err(r#"(tasks: (functions: ["powell"], dims: (2, 3)))"#);
    assert!(e.contains("powell"), "{e}");
    let e = err("(truncation: 20, horizon: 10)");
    assert!(e.contains("horizon"), "{e}");
    let e = err("(loss_ramp: -1.0)");
    assert!(e.contains("loss_ramp must be in [0, 8]"), "{e}");
    let e = err("(tasks: (log10_width: (0.0, 9.0)))");
    assert!(e.contains("log10_width (0, 9)") && e.contains("±4"), "{e}");

    // A checkpoint of another model size is refused, and a failed checkpoint write
    // leaves the last good one intact.
    let out = tempdir("bad");
    let stop = AtomicBool::new(false);
    train::train(ctx(), &options(tiny_config(3), &out, false), &stop).unwrap();
    let mut wider = tiny_config(6);
    wider.model.as_mut().unwrap().width = 32;
    let e = train::train(ctx(), &options(wider, &out, true), &stop)
        .unwrap_err()
        .to_string();
    assert!(e.contains("width 16") && e.contains("width 32"), "{e}");
    let mut odd = options(tiny_config(3), &out, false);
    odd.batch = Some(7);
    let e = train::train(ctx(), &odd, &stop).unwrap_err().to_string();
    assert!(e.contains("even"), "{e}");
    let ckpt = out.join(CHECKPOINT_FILE);
    let before = std::fs::read(&ckpt).unwrap();
    // A directory where the atomic write puts its temporary file makes the write fail.
    let tmp = format!(".{CHECKPOINT_FILE}.tmp-{}", std::process::id());
    std::fs::create_dir_all(out.join(tmp)).unwrap();
    let mut more = options(tiny_config(3), &out, true);
    more.config = None;
    more.iterations = Some(6);
    let e = train::train(ctx(), &more, &stop).unwrap_err().to_string();
    assert!(e.contains("previous file there is unchanged"), "{e}");
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        before,
        "the last good checkpoint was damaged"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Ctrl-C sets the stop flag: the run ends after the current meta-iteration with a
/// checkpoint to resume from.
#[test]
fn interruption_ends_with_a_checkpoint() {
    let out = tempdir("interrupt");
    let s = train::train(
        ctx(),
        &options(tiny_config(50), &out, false),
        &AtomicBool::new(true),
    )
    .unwrap();
    assert!(s.interrupted);
    assert_eq!(s.iterations, 1);
    let mut again = options(tiny_config(50), &out, true);
    again.config = None;
    again.iterations = Some(2);
    let s = train::train(ctx(), &again, &AtomicBool::new(false)).unwrap();
    assert_eq!((s.iterations, s.interrupted), (2, false));
    let _ = std::fs::remove_dir_all(&out);
}

/// Meta-training on walking windows of the motion task: it runs, logs finite
/// meta-losses, and resumes to the same θ (the windows are part of the checkpoint; the
/// learning-rate schedule of iterations 0..3 does not depend on the total with a
/// warm-up of 2).
#[test]
fn motion_training_runs_and_resumes() {
    let config = |iterations: u32| {
        let text = format!(
            r#"(
                motion: (sim: (keyframes: 3, steps_per_key: 20), obs_every: 10),
                truncation: 2, horizon: 4, iterations: {iterations}, meta_lr: 0.01, warmup: 2,
                log_every: 2, checkpoint_every: 2, sigma: 0.02,
                validation: (problems: 2, steps: 4),
                model: (kind: optimus, width: 16, heads: 2, mlp_hidden: 16, layers: 1),
            )"#
        );
        TrainConfig::from_ron(&text, "motion.ron").unwrap()
    };
    let motion = |cfg, out: &std::path::Path, resume| TrainOptions {
        batch: Some(4),
        motion: true,
        ..options(cfg, out, resume)
    };
    let (a, b) = (tempdir("motion-a"), tempdir("motion-b"));
    let stop = AtomicBool::new(false);
    let s = train::train(ctx(), &motion(config(5), &a, false), &stop).unwrap();
    assert!(s.log.iter().all(|r| r.val_loss.is_finite()), "{:?}", s.log);
    train::train(ctx(), &motion(config(3), &b, false), &stop).unwrap();
    let (ma, mb) = (
        Model::load(&a.join("model")).unwrap(),
        resume_to(motion(config(3), &b, true), 5),
    );
    assert!(ma.weights == mb.weights, "resumed motion run differs");
    // A functions checkpoint is not resumed as a motion run.
    let c = tempdir("motion-c");
    train::train(ctx(), &options(tiny_config(2), &c, false), &stop).unwrap();
    let mut wrong = motion(tiny_config(2), &c, true);
    wrong.config = None;
    let e = train::train(ctx(), &wrong, &stop).unwrap_err().to_string();
    assert!(e.contains("benchmark functions"), "{e}");
    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// Every committed training config (the shipped models' and the top-level ones in
/// assets/, each experiment run's in docs/experiments/) still parses, and every committed
/// model directory still loads: a config field or model change must not orphan the
/// records of how the models were made.
#[test]
fn committed_configs_and_models_still_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("assets"), root.join("docs/experiments")];
    let (mut configs, mut models) = (0, 0);
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                dirs.push(path);
            } else if name == "train.ron" || name == "train_motion.ron" {
                let text = std::fs::read_to_string(&path).unwrap();
                TrainConfig::from_ron(&text, &path.display().to_string())
                    .unwrap_or_else(|e| panic!("{e}"));
                configs += 1;
            } else if name == "model.ron" {
                Model::load(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
                models += 1;
            }
        }
    }
    assert!(
        configs >= 20 && models >= 6,
        "{configs} configs, {models} models found"
    );
}

/// `bench --task pes` runs whole meta-iterations, perturbed steps and plain steps on a
/// small batch and reports positive, finite times (their values are not asserted); an
/// odd batch and more steps than a horizon holds are refused with a message.
#[test]
fn pes_bench_times_iterations_and_steps() {
    let m = model(ModelKind::Optimus, 1);
    let cfg = TrainConfig {
        truncation: 2,
        horizon: 20,
        ..TrainConfig::default()
    };
    let r = optimus_gpu::bench::pes(ctx(), &m, 8, 5, &cfg, 2).unwrap();
    for v in [
        r.seconds_per_iteration,
        r.perturbed_step_seconds,
        r.plain_step_seconds,
        r.particle_steps_per_second,
    ] {
        assert!(v > 0.0 && v.is_finite(), "{r:?}");
    }
    assert_eq!((r.particles, r.dim, r.truncation), (8, 5, 2));
    assert!(optimus_gpu::bench::pes_table(&r).contains("perturbed / plain"));
    let odd = optimus_gpu::bench::pes(ctx(), &m, 7, 5, &cfg, 2).unwrap_err();
    assert!(odd.to_string().contains("even number"), "{odd}");
    let long = optimus_gpu::bench::pes(ctx(), &m, 8, 5, &cfg, 10).unwrap_err();
    assert!(long.to_string().contains("horizon"), "{long}");
}

/// With `trainable` naming some tensors, a meta-iteration moves exactly those: the others'
/// noise is zero, so their gradient and Adam step are too. A name that matches no tensor
/// is refused with the list of tensors.
#[test]
fn only_trainable_tensors_move() {
    let fx = fixture();
    let m = model(ModelKind::Optimus, 3);
    let specs = paired(&problems(&[4, 2, 7]));
    let mut s = settings(3, 30, 0.05);
    s.trainable = vec!["head".into(), "blocks.1.mlp".into()];
    let moves = |s: &PesSettings, trains: &dyn Fn(&str) -> bool| {
        let e = engine(&fx, &m, &specs, s.clone());
        let theta0: Vec<f32> = ctx().read(&e.theta, e.packed.len).unwrap();
        e.begin_truncation(ctx(), 0);
        e.steps(ctx(), 3);
        e.finish_truncation(ctx(), 0, &[0, 0, 0], 0.01, 1);
        let theta: Vec<f32> = ctx().read(&e.theta, e.packed.len).unwrap();
        for t in &e.packed.tensors {
            let range = t.offset..t.offset + t.rows_p * t.cols_p;
            let moved = range.clone().any(|q| theta[q] != theta0[q]);
            assert_eq!(moved, trains(&t.name), "{}: moved {moved}", t.name);
        }
    };
    moves(&s, &|n| {
        n.starts_with("head") || n.starts_with("blocks.1.mlp")
    });
    s.trainable = vec!["blocks.1".into(), "ln_f".into()];
    moves(&s, &|n| n.starts_with("blocks.1") || n.starts_with("ln_f"));
    s.trainable = vec!["heads".into()];
    let err = PesEngine::new(ctx(), &fx.kernels, &fx.pes, &fx.stage, &m, &specs, s)
        .err()
        .expect("an unknown tensor name is refused")
        .to_string();
    assert!(
        err.contains("'heads'") && err.contains("head.weight"),
        "{err}"
    );
}

/// `tasks.objective` meta-trains on a user objective (the shipped quadratic): pairs are
/// reset onto new start points of it past the horizon, the validation meta-loss stays
/// finite, the checkpoint's config keeps the objective, and resuming from it gives the
/// same θ as the uninterrupted run.
#[test]
fn training_on_a_user_objective_runs_and_resumes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cfg = tiny_config(8);
    cfg.tasks.objective = Some(root.join("assets/objectives/quadratic.wgsl"));
    runs_and_resumes(cfg, "user");
}

/// A run on a user objective refuses to resume once the file has changed: it would go
/// on training on another objective.
#[test]
fn resuming_after_the_objective_changed_is_refused() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempdir("user-edited");
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join("objective.wgsl");
    let source = std::fs::read_to_string(root.join("assets/objectives/quadratic.wgsl")).unwrap();
    std::fs::write(&file, &source).unwrap();
    let mut cfg = tiny_config(3);
    cfg.tasks.objective = Some(file.clone());
    let stop = AtomicBool::new(false);
    train::train(ctx(), &options(cfg.clone(), &out, false), &stop).unwrap();
    std::fs::write(&file, source.replace("0.5 *", "0.25 *")).unwrap();
    let mut resume = options(cfg, &out, true);
    resume.config = None;
    resume.iterations = Some(5);
    let e = train::train(ctx(), &resume, &stop).unwrap_err().to_string();
    // One sentence: no runs of spaces from a string continued across source lines.
    assert!(e.contains("has changed") && !e.contains("  "), "{e}");
    std::fs::remove_dir_all(&out).unwrap();
}

/// PES behind the loss guard (`guard: true`): runs, validates the guarded optimizer,
/// learns something else than the same run without the guard, and resumes bit for bit
/// (the guard's state is in the checkpoint).
#[test]
fn training_behind_the_guard_runs_and_resumes() {
    let mut cfg = tiny_config(8);
    cfg.guard = true;
    let guarded = runs_and_resumes(cfg.clone(), "guard");
    cfg.guard = false;
    let out = tempdir("unguarded");
    train::train(
        ctx(),
        &options(cfg.clone(), &out, false),
        &AtomicBool::new(false),
    )
    .unwrap();
    let plain = Model::load(&out.join("model")).unwrap();
    std::fs::remove_dir_all(out).unwrap();
    assert_ne!(guarded.weights, plain.weights, "the guard changed nothing");
    // Only Optimus runs behind the guard.
    let mut opts = options(
        TrainConfig { guard: true, ..cfg },
        &tempdir("guard-lopt"),
        false,
    );
    opts.kind = Some(ModelKind::Lopt);
    let e = train::train(ctx(), &opts, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("guard") && e.contains("optimus"), "{e}");
    let _ = std::fs::remove_dir_all(&opts.out);
}

/// PES as the hybrid (`hybrid: true`): runs, validates `optimus-hybrid`, resumes bit for
/// bit (the fallback's state is in the checkpoint), learns something else than the
/// guarded run, and is refused together with `guard` and for a non-Optimus model.
#[test]
fn training_as_the_hybrid_runs_and_resumes() {
    let mut cfg = tiny_config(8);
    cfg.hybrid = true;
    let hybrid = runs_and_resumes(cfg.clone(), "hybrid");
    let mut guarded = cfg.clone();
    (guarded.guard, guarded.hybrid) = (true, false);
    let out = tempdir("hybrid-vs-guard");
    train::train(
        ctx(),
        &options(guarded, &out, false),
        &AtomicBool::new(false),
    )
    .unwrap();
    let g = Model::load(&out.join("model")).unwrap();
    std::fs::remove_dir_all(out).unwrap();
    assert_ne!(
        hybrid.weights, g.weights,
        "the hybrid trained as the guard does"
    );
    let both = options(
        TrainConfig {
            guard: true,
            ..cfg.clone()
        },
        &tempdir("hybrid-and-guard"),
        false,
    );
    let e = train::train(ctx(), &both, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("guard") && e.contains("hybrid"), "{e}");
    let _ = std::fs::remove_dir_all(&both.out);
    let mut opts = options(cfg, &tempdir("hybrid-lopt"), false);
    opts.kind = Some(ModelKind::Lopt);
    let e = train::train(ctx(), &opts, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("hybrid") && e.contains("optimus"), "{e}");
    let _ = std::fs::remove_dir_all(&opts.out);
}

/// Trains `cfg` for its iterations in one go and in two (3, then resumed), checks that
/// both end with the same θ and that every validation was finite, and returns the model.
fn runs_and_resumes(cfg: TrainConfig, name: &str) -> Model {
    let stop = AtomicBool::new(false);
    let whole = tempdir(&format!("{name}-whole"));
    let s = train::train(ctx(), &options(cfg.clone(), &whole, false), &stop).unwrap();
    assert_eq!(s.iterations, cfg.iterations);
    assert!(s.log.iter().all(|r| r.val_loss.is_finite()), "{:?}", s.log);
    let split = tempdir(&format!("{name}-split"));
    let mut first = cfg.clone();
    first.iterations = 3;
    train::train(ctx(), &options(first, &split, false), &stop).unwrap();
    let (a, b) = (
        Model::load(&whole.join("model")).unwrap(),
        resume_to(options(cfg.clone(), &split, true), cfg.iterations),
    );
    assert_eq!(a.weights, b.weights, "a resumed {name} run differs");
    for d in [whole, split] {
        std::fs::remove_dir_all(d).unwrap();
    }
    a
}

/// Resumes the run in `opts.out` from its checkpoint (its own config) up to
/// `iterations` meta-iterations and returns the model it ends with.
fn resume_to(mut opts: TrainOptions, iterations: u32) -> Model {
    opts.config = None;
    opts.iterations = Some(iterations);
    train::train(ctx(), &opts, &AtomicBool::new(false)).unwrap();
    Model::load(&opts.out.join("model")).unwrap()
}
