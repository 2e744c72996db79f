//! Throughput of the objective stage and of a full Adam step (objective + update) over
//! P = 4096 problems at d = 32, and of one Optimus step over P = 128 problems at d = 32,
//! in problem-steps per second, with the f64 CPU twin measured in the same run as the
//! reference; and one perturbed PES inner step by the engine's rank-one route against
//! per-particle weight copies (and shared, unperturbed weights as the floor).
//!
//! `cargo bench --bench engine` (set WGPU_BACKEND=vulkan on lavapipe).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use optimus_gpu::objective::{Evaluation, ObjectiveStage};
use optimus_gpu::optim::{cpu, GpuRun, Kernels, Method, OptimizerConfig};
use optimus_gpu::problem::{GpuProblems, Objective, ProblemSpec, SampleOptions};
use optimus_gpu::{Function, GpuContext};
use std::time::{Duration, Instant};

const P: usize = 4096;
const D: usize = 32;
/// Passes per measured iteration: amortizes the submit and wait.
const PASSES: u32 = 20;

/// P problems cycling through the functions that are defined at d = 32, rotated, so the
/// objective does its full work (a d×d product per problem).
fn problems() -> Vec<ProblemSpec> {
    let opts = SampleOptions {
        shift: 0.1,
        rotate: true,
        log10_scale: (0.0, 0.0),
        log10_width: (0.0, 0.0),
        start_fraction: 1.0,
    };
    (0..P)
        .map(|i| {
            let f = Function::ALL[i % Function::ALL.len()];
            ProblemSpec::sample(Objective::Builtin(f), D, &opts, i as u64).unwrap()
        })
        .collect()
}

/// Times `iters` iterations of `passes` passes each (`submit`), calling `reset` untimed
/// before any problem would use up its step `budget`; `done` carries the passes run
/// since the last reset across criterion's calls.
fn time_passes(
    ctx: &GpuContext,
    iters: u64,
    passes: u32,
    budget: u32,
    done: &mut u32,
    reset: &dyn Fn(),
    submit: &dyn Fn(),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        if *done + passes > budget {
            reset();
            ctx.wait().unwrap();
            *done = 0;
        }
        let t0 = Instant::now();
        submit();
        ctx.wait().unwrap();
        total += t0.elapsed();
        *done += passes;
    }
    total
}

/// [`time_passes`] for one run: `passes` passes per iteration, reset at its budget.
fn time_run(
    ctx: &GpuContext,
    run: &GpuRun,
    iters: u64,
    passes: u32,
    budget: u32,
    done: &mut u32,
) -> Duration {
    time_passes(
        ctx,
        iters,
        passes,
        budget,
        done,
        &|| run.reset(ctx),
        &|| run.submit_passes(ctx, passes),
    )
}

fn bench(c: &mut Criterion) {
    let ctx = GpuContext::new().expect("a GPU adapter (or lavapipe) is needed");
    let problems = problems();
    let stage = ObjectiveStage::new(&ctx, None).unwrap();
    let kernels = Kernels::new(&ctx).unwrap();

    let mut g = c.benchmark_group("objective_p4096_d32");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements((P as u64) * PASSES as u64));
    let gp = GpuProblems::new(&ctx, &problems).unwrap();
    let f = ctx.storage_zeroed("f", P).unwrap();
    let grad = ctx.storage_zeroed("g", P * D).unwrap();
    let binding = stage.bind(&ctx, &gp, &gp.x0, &f, &grad).unwrap();
    g.bench_function("gpu", |b| {
        b.iter(|| {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for _ in 0..PASSES {
                    binding.record(&mut pass);
                }
            }
            ctx.queue.submit([enc.finish()]);
            ctx.wait().unwrap();
        })
    });
    // A batch of one function (Rosenbrock) runs the specialized pipeline.
    let rosen: Vec<ProblemSpec> = (0..P)
        .map(|i| {
            let opts = SampleOptions {
                shift: 0.1,
                rotate: true,
                log10_scale: (0.0, 0.0),
                log10_width: (0.0, 0.0),
                start_fraction: 1.0,
            };
            ProblemSpec::sample(Objective::Builtin(Function::Rosenbrock), D, &opts, i as u64)
                .unwrap()
        })
        .collect();
    let gp1 = GpuProblems::new(&ctx, &rosen).unwrap();
    let binding1 = stage.bind(&ctx, &gp1, &gp1.x0, &f, &grad).unwrap();
    g.bench_function("gpu_one_function", |b| {
        b.iter(|| {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for _ in 0..PASSES {
                    binding1.record(&mut pass);
                }
            }
            ctx.queue.submit([enc.finish()]);
            ctx.wait().unwrap();
        })
    });
    g.throughput(Throughput::Elements(P as u64));
    g.bench_function("cpu_twin", |b| {
        let mut gbuf = vec![0.0; D];
        b.iter(|| {
            let mut s = 0.0;
            for p in &problems {
                s += p.cpu_gap_grad(&p.x0, &mut gbuf).unwrap();
            }
            s
        })
    });
    g.bench_function("cpu_twin_one_function", |b| {
        let mut gbuf = vec![0.0; D];
        b.iter(|| {
            let mut s = 0.0;
            for p in &rosen {
                s += p.cpu_gap_grad(&p.x0, &mut gbuf).unwrap();
            }
            s
        })
    });
    g.finish();

    let mut g = c.benchmark_group("adam_step_p4096_d32");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let cfg = OptimizerConfig {
        lr: 1e-3,
        ..OptimizerConfig::new(Method::Adam)
    };
    const BUDGET: u32 = 200;
    let run = GpuRun::new(&ctx, &kernels, &stage, &problems, &cfg, None, BUDGET).unwrap();
    g.throughput(Throughput::Elements((P as u64) * PASSES as u64));
    g.bench_function("gpu", |b| {
        let mut done = 0;
        b.iter_custom(|iters| time_run(&ctx, &run, iters, PASSES, BUDGET, &mut done))
    });
    g.throughput(Throughput::Elements(P as u64));
    g.bench_function("cpu_twin", |b| {
        let mut x: Vec<Vec<f64>> = problems.iter().map(|p| p.x0.clone()).collect();
        let mut m = vec![vec![0.0; D]; P];
        let mut v = vec![vec![0.0; D]; P];
        let mut grad = vec![0.0; D];
        let mut t = 0;
        b.iter(|| {
            t += 1;
            for (k, p) in problems.iter().enumerate() {
                p.cpu_gap_grad(&x[k], &mut grad).unwrap();
                cpu::first_order_step(&cfg, cfg.lr, t, &mut x[k], &grad, &mut m[k], &mut v[k]);
            }
        })
    });
    g.finish();
}

/// One Optimus step (default model size, seeded random weights) over P = 128 problems
/// at d = 32: the GPU step (objective included) against the f64 CPU twin.
fn bench_optimus(c: &mut Criterion) {
    use optimus_gpu::learned::cpu as lcpu;
    use optimus_gpu::learned::model::{Model, ModelConfig, ModelKind};
    use std::sync::Arc;
    const LP: usize = 128;
    let ctx = GpuContext::new().expect("a GPU adapter (or lavapipe) is needed");
    let model = Arc::new(Model::init(ModelConfig::for_kind(ModelKind::Optimus), 0).unwrap());
    let problems: Vec<ProblemSpec> = (0..LP)
        .map(|i| {
            ProblemSpec::sample(
                Objective::Builtin(Function::Sphere),
                D,
                &SampleOptions::default(),
                i as u64,
            )
            .unwrap()
        })
        .collect();
    let kernels = Kernels::new(&ctx).unwrap();
    let stage = ObjectiveStage::new(&ctx, None).unwrap();
    let cfg = OptimizerConfig {
        model: Some(model.clone()),
        ..OptimizerConfig::new(Method::Optimus)
    };
    const BUDGET: u32 = 100;
    let run = GpuRun::new(&ctx, &kernels, &stage, &problems, &cfg, None, BUDGET).unwrap();
    let mut g = c.benchmark_group("optimus_step_p128_d32");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(LP as u64));
    g.bench_function("gpu", |b| {
        let mut done = 0;
        b.iter_custom(|iters| time_run(&ctx, &run, iters, 1, BUDGET, &mut done))
    });
    g.bench_function("cpu_twin", |b| {
        let mut states: Vec<lcpu::LearnedState> = problems
            .iter()
            .map(|p| lcpu::LearnedState::new(ModelKind::Optimus, &p.x0))
            .collect();
        let mut grad = vec![0.0; D];
        b.iter(|| {
            for (p, st) in problems.iter().zip(states.iter_mut()) {
                let f = p.cpu_gap_grad(&st.x, &mut grad).unwrap();
                lcpu::step(&model, st, f, &grad);
            }
        })
    });
    g.finish();
}

/// One perturbed inner step of PES meta-training (all particles, objective included)
/// with the model size of `assets/train.ron`, P = 64 particles at d = 8, by three routes:
/// shared θ without perturbation (the floor), the engine's rank-one perturbations, and
/// the straightforward route: a materialized copy θ ± σε per particle, each particle's
/// step run with its own weights.
fn bench_pes(c: &mut Criterion) {
    use optimus_gpu::learned::model::{Model, ModelConfig, ModelKind};
    use optimus_gpu::train::config::TrainConfig;
    use optimus_gpu::train::noise::{draw, perturbed_model};
    use optimus_gpu::train::pes::{PesEngine, PesKernels, PesSettings};
    use std::sync::Arc;
    const NP: usize = 64;
    const PD: usize = 8;
    const BUDGET: u32 = 200;
    let ctx = GpuContext::new().expect("a GPU adapter (or lavapipe) is needed");
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/train.ron")).unwrap();
    let tc = TrainConfig::from_ron(&text, "assets/train.ron").unwrap();
    let cfg = ModelConfig {
        kind: ModelKind::Optimus,
        ..tc.model.clone().unwrap()
    };
    let model = Model::init(cfg, 0).unwrap();
    let tasks: Vec<ProblemSpec> = (0..NP / 2)
        .map(|i| {
            let f = [Function::Sphere, Function::Rosenbrock, Function::Levy][i % 3];
            ProblemSpec::sample(
                Objective::Builtin(f),
                PD,
                &SampleOptions::default(),
                i as u64,
            )
            .unwrap()
        })
        .collect();
    let specs: Vec<ProblemSpec> = tasks.iter().flat_map(|t| [t.clone(), t.clone()]).collect();
    let kernels = Kernels::new(&ctx).unwrap();
    let stage = ObjectiveStage::new(&ctx, None).unwrap();
    let pes = PesKernels::new(&ctx).unwrap();
    let sigma = 0.01f32;
    let settings = PesSettings {
        truncation: 10,
        horizon: 20_000,
        sigma,
        seed: 1,
        loss_clip: 3.0,
        soft_clip: false,
        loss_ramp: 0.0,
        use_sign: false,
        guarding: None,
        beta1: 0.9,
        beta2: 0.999,
        adam_eps: 1e-8,
        clip_norm: 10.0,
        trainable: Vec::new(),
        rotations: true,
    };
    let mut g = c.benchmark_group("pes_inner_step_p64_d8");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(NP as u64));
    let shared = GpuRun::new(
        &ctx,
        &kernels,
        &stage,
        &specs,
        &OptimizerConfig {
            model: Some(Arc::new(model.clone())),
            ..OptimizerConfig::new(Method::Optimus)
        },
        None,
        BUDGET,
    )
    .unwrap();
    let mut done = 0;
    g.bench_function("shared_weights", |b| {
        b.iter_custom(|iters| time_run(&ctx, &shared, iters, 1, BUDGET, &mut done))
    });
    let engine = PesEngine::new(
        &ctx,
        &kernels,
        &pes,
        &stage,
        &model,
        &specs,
        settings.clone(),
    )
    .unwrap();
    engine.begin_truncation(&ctx, 0);
    g.bench_function("rank_one_perturbations", |b| {
        b.iter(|| {
            engine.steps(&ctx, 1);
            ctx.wait().unwrap();
        })
    });
    // Per-particle copies: θ ± σ a bᵀ materialized for each particle (the same noise the
    // engine draws), one run per particle.
    let copies: Vec<GpuRun> = specs
        .iter()
        .enumerate()
        .map(|(p, spec)| {
            let noise = draw(&engine.noise_layout, 1, 0, (p / 2) as u32);
            let sign = if p % 2 == 0 { sigma } else { -sigma };
            let m = perturbed_model(&model, &engine.noise_layout, &noise, sign);
            let oc = OptimizerConfig {
                model: Some(Arc::new(m)),
                ..OptimizerConfig::new(Method::Optimus)
            };
            GpuRun::new(
                &ctx,
                &kernels,
                &stage,
                std::slice::from_ref(spec),
                &oc,
                None,
                BUDGET,
            )
            .unwrap()
        })
        .collect();
    let mut done = 0;
    g.bench_function("weight_copies", |b| {
        b.iter_custom(|iters| {
            let submit = || {
                let mut enc = ctx.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    for r in &copies {
                        r.record_pass(&mut pass);
                    }
                }
                ctx.queue.submit([enc.finish()]);
            };
            time_passes(
                &ctx,
                iters,
                1,
                BUDGET,
                &mut done,
                &|| copies.iter().for_each(|r| r.reset(&ctx)),
                &submit,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_optimus, bench_pes);
criterion_main!(benches);
