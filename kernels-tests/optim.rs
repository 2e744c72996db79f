use crate::common::ctx;
use optimus_gpu::objective::ObjectiveStage;
use optimus_gpu::optim::{cpu, GpuRun, Kernels, Method, OptimizerConfig, ProblemResult, Status};
use optimus_gpu::problem::{Objective, ProblemSpec, SampleOptions};
use optimus_gpu::user_objective::UserObjective;
use optimus_gpu::Function;
use std::sync::Arc;

fn run_gpu(
    problems: &[ProblemSpec],
    cfg: &OptimizerConfig,
    steps: u32,
    user: Option<&UserObjective>,
) -> Vec<ProblemResult> {
    let kernels = Kernels::new(ctx()).unwrap();
    let stage = ObjectiveStage::new(ctx(), user).unwrap();
    let run = GpuRun::new(ctx(), &kernels, &stage, problems, cfg, None, steps).unwrap();
    run.run(ctx()).unwrap()
}

fn rosenbrock_classic() -> ProblemSpec {
    ProblemSpec {
        objective: Objective::Builtin(Function::Rosenbrock),
        dim: 2,
        scale: 1.0,
        width: 1.0,
        center: vec![1.0, 1.0],
        rotation: None,
        x0: vec![-1.2, 1.0],
    }
}

#[test]
fn bfgs_solves_rosenbrock_from_the_classic_start() {
    let cfg = OptimizerConfig::new(Method::Bfgs);
    let p = rosenbrock_classic();
    let c = cpu::run(&p, &cfg, 0.0, 60).unwrap();
    let iters_cpu = c.reached(1e-10).map(|r| r.0);
    assert!(
        iters_cpu.is_some(),
        "cpu twin: final gap {} after {} iterations ({:?})",
        c.final_gap(),
        c.iters,
        c.status
    );
    let g = &run_gpu(&[p], &cfg, 60, None)[0];
    let iters_gpu = g.reached(1e-10).map(|r| r.0);
    assert!(
        iters_gpu.is_some(),
        "gpu: final gap {} after {} iterations ({:?})",
        g.final_gap(),
        g.iters,
        g.status
    );
    eprintln!("rosenbrock BFGS: cpu {iters_cpu:?} gpu {iters_gpu:?} iterations to f < 1e-10");
}

fn quadratic_user() -> Arc<UserObjective> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/objectives/quadratic.wgsl");
    Arc::new(UserObjective::load(&path).unwrap())
}

#[test]
fn lbfgs_solves_an_ill_conditioned_quadratic() {
    let d = 50;
    let user = quadratic_user();
    let p = ProblemSpec::sample(
        Objective::User(user.clone()),
        d,
        &SampleOptions::default(),
        7,
    )
    .unwrap();
    let lam = |i: usize| 1.0 + 999.0 * i as f64 / (d - 1) as f64;
    let f0: f64 = (0..d).map(|i| 0.5 * lam(i) * p.x0[i] * p.x0[i]).sum();
    let cfg = OptimizerConfig::new(Method::Lbfgs);
    let quad = |x: &[f64], g: &mut [f64]| -> f64 {
        for i in 0..d {
            g[i] = lam(i) * x[i];
        }
        (0..d).map(|i| 0.5 * lam(i) * x[i] * x[i]).sum()
    };
    let c = cpu::run_fn(quad, &p.x0, &cfg, 0.0, 100).unwrap();
    let rel = |r: &ProblemResult| r.reached(1e-8 * f0).map(|x| x.0);
    assert!(
        rel(&c).is_some(),
        "cpu twin: relative error {} after 100 iterations",
        c.final_gap() / f0
    );
    let g = &run_gpu(&[p], &cfg, 100, Some(&user))[0];
    assert!(
        rel(g).is_some(),
        "gpu: relative error {} after 100 iterations ({:?})",
        g.final_gap() / f0,
        g.status
    );
    eprintln!(
        "quadratic L-BFGS: cpu {:?} gpu {:?} iterations to relative error 1e-8",
        rel(&c),
        rel(g)
    );
}

/// Problems of mixed dimension (d = 1, d not a multiple of the workgroup) in one batch.
fn mixed_batch() -> Vec<ProblemSpec> {
    let cases = [
        (Function::Sphere, 1usize),
        (Function::Rosenbrock, 2),
        (Function::Zakharov, 7),
        (Function::DixonPrice, 65),
        (Function::Trid, 10),
        (Function::StyblinskiTang, 3),
    ];
    cases
        .iter()
        .enumerate()
        .map(|(k, &(f, d))| {
            let opts = SampleOptions {
                shift: 0.2,
                rotate: k % 2 == 1,
                log10_scale: (0.0, 0.0),
                log10_width: (0.0, 0.0),
                start_fraction: 1.0,
            };
            let mut p =
                ProblemSpec::sample(Objective::Builtin(f), d, &opts, 100 + k as u64).unwrap();
            // Start near the minimizer so f32 and f64 take the same branches.
            for i in 0..d {
                p.x0[i] = p.center[i]
                    + 0.3 * (p.x0[i] - p.center[i]) / (1.0 + (p.x0[i] - p.center[i]).abs());
            }
            p
        })
        .collect()
}

#[test]
fn gpu_trajectories_match_cpu_twins() {
    let problems = mixed_batch();
    for &method in Method::CLASSIC {
        let mut cfg = OptimizerConfig::new(method);
        cfg.lr = if method == Method::Adam { 1e-2 } else { 1e-4 };
        let steps = if method.has_lr() { 30 } else { 8 };
        let gpu = run_gpu(&problems, &cfg, steps, None);
        for (p, g) in problems.iter().zip(&gpu) {
            let c = cpu::run(p, &cfg, cfg.lr, steps).unwrap();
            let what = format!("{method} on {} d={}", p.objective.name(), p.dim);
            assert_ne!(
                c.status,
                Status::Diverged,
                "{what}: pick settings that converge"
            );
            // Where both stopped at working precision, f32 and f64 may name it differently
            // (gradient tolerance vs. no decrease) and at different iterations.
            let at_precision = |s| matches!(s, Status::Converged | Status::Stalled);
            if !(at_precision(g.status) && at_precision(c.status)) {
                assert_eq!(g.status, c.status, "{what}: status");
                assert_eq!(g.iters, c.iters, "{what}: iterations");
                assert_eq!(g.evals, c.evals, "{what}: evaluations");
            }
            let f0 = c.gaps[0].abs().max(1e-12);
            for (t, (a, b)) in g.gaps.iter().zip(&c.gaps).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-3 * f0 + 1e-3 * b.abs(),
                    "{what}: iteration {t}: gpu gap {a} vs cpu {b}"
                );
            }
        }
    }
}

#[test]
fn a_diverging_problem_is_flagged_and_the_batch_goes_on() {
    let sphere = |seed| {
        ProblemSpec::sample(
            Objective::Builtin(Function::Sphere),
            5,
            &SampleOptions::default(),
            seed,
        )
        .unwrap()
    };
    let mut wild = sphere(1);
    wild.scale = 1e30; // gradient descent overflows within a few steps
    let problems = vec![sphere(2), wild, sphere(3)];
    let cfg = OptimizerConfig {
        lr: 0.1,
        ..OptimizerConfig::new(Method::Gd)
    };
    let res = run_gpu(&problems, &cfg, 50, None);
    assert_eq!(res[1].status, Status::Diverged);
    for r in [&res[0], &res[2]] {
        assert_eq!(r.status, Status::Done);
        assert_eq!(r.evals, 51);
        assert!(
            r.final_gap() < 1e-6 * r.gaps[0],
            "healthy problems keep converging"
        );
    }
}

#[test]
fn step_loop_reads_nothing_back() {
    // Its own device: other tests read back from the shared one concurrently.
    let ctx = optimus_gpu::GpuContext::new().unwrap();
    let problems = mixed_batch();
    let kernels = Kernels::new(&ctx).unwrap();
    let stage = ObjectiveStage::new(&ctx, None).unwrap();
    let cfg = OptimizerConfig::new(Method::Adam);
    let run = GpuRun::new(&ctx, &kernels, &stage, &problems, &cfg, None, 20).unwrap();
    let before = ctx.readback_count();
    run.submit_passes(&ctx, 21);
    assert_eq!(
        ctx.readback_count(),
        before,
        "the step loop must not read back"
    );
    let res = run.results(&ctx).unwrap();
    assert_eq!(
        ctx.readback_count(),
        before + 3,
        "results are read back once, at the end"
    );
    assert!(res
        .iter()
        .all(|r| r.status == Status::Done && r.iters == 20));
}

#[test]
fn bad_optimizer_settings_get_clear_errors() {
    let e = Method::parse("adamw").unwrap_err();
    assert!(
        e.contains("unknown optimizer 'adamw'") && e.contains("lbfgs"),
        "{e}"
    );
    let cfg = OptimizerConfig {
        lr: -1.0,
        ..OptimizerConfig::new(Method::Adam)
    };
    assert!(cfg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("learning rate"));
    let cfg = OptimizerConfig {
        memory: 0,
        ..OptimizerConfig::new(Method::Lbfgs)
    };
    assert!(cfg.validate().unwrap_err().to_string().contains("memory"));
}

#[test]
fn runs_on_a_device_the_caller_owns() {
    // An application's own device and queue, handed to the engine.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))
    .unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).unwrap();
    let ctx = optimus_gpu::GpuContext::from_device(device, queue);
    let kernels = Kernels::new(&ctx).unwrap();
    let stage = ObjectiveStage::new(&ctx, None).unwrap();
    let problems = mixed_batch();
    let cfg = OptimizerConfig::new(Method::Lbfgs);
    let res = GpuRun::new(&ctx, &kernels, &stage, &problems, &cfg, None, 30)
        .unwrap()
        .run(&ctx)
        .unwrap();
    for (p, r) in problems.iter().zip(&res) {
        assert!(
            r.final_gap() < 1e-3 * r.gaps[0].max(1e-9),
            "{}: {:?}",
            p.objective.name(),
            r.gaps.last()
        );
    }
}

#[test]
fn near_the_drivers_loop_limit_results_stay_right_and_past_it_runs_are_refused() {
    // BFGS at d = 700 stays under lavapipe's per-invocation loop limit: check it.
    let opts = SampleOptions {
        shift: 0.1,
        rotate: false,
        log10_scale: (0.0, 0.0),
        log10_width: (0.0, 0.0),
        start_fraction: 1.0,
    };
    let mut p =
        ProblemSpec::sample(Objective::Builtin(Function::DixonPrice), 700, &opts, 1).unwrap();
    p.x0.iter_mut()
        .zip(&p.center)
        .for_each(|(x, c)| *x = c + 0.1 * (*x - c) / (1.0 + (*x - c).abs()));
    let cfg = OptimizerConfig::new(Method::Bfgs);
    let g = &run_gpu(std::slice::from_ref(&p), &cfg, 3, None)[0];
    let c = cpu::run(&p, &cfg, 0.0, 3).unwrap();
    for (a, b) in g.gaps.iter().zip(&c.gaps) {
        assert!(
            (a - b).abs() <= 1e-4 * c.gaps[0],
            "bfgs d=700: gpu {a} vs cpu {b}"
        );
    }
    // A rotated objective at d = 1000.
    let rot = SampleOptions {
        rotate: true,
        ..opts
    };
    let q = ProblemSpec::sample(Objective::Builtin(Function::Sphere), 1000, &rot, 2).unwrap();
    let stage = ObjectiveStage::new(ctx(), None).unwrap();
    let (fg, gg) =
        &optimus_gpu::objective::evaluate(ctx(), &stage, std::slice::from_ref(&q)).unwrap()[0];
    let mut gc = vec![0.0; 1000];
    let fc = q.cpu_gap_grad(&q.x0, &mut gc).unwrap();
    assert!((fg - fc).abs() <= 1e-4 * fc);
    let gmax = gc.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        gg.iter()
            .zip(&gc)
            .all(|(a, b)| (a - b).abs() <= 1e-3 * gmax),
        "rotated d=1000 gradient"
    );
    // Past the limit, a clear refusal instead of wrong numbers (only on such drivers).
    if ctx().loop_limit().is_some() {
        let big = ProblemSpec::sample(Objective::Builtin(Function::Sphere), 800, &opts, 3).unwrap();
        let kernels = Kernels::new(ctx()).unwrap();
        let e = GpuRun::new(ctx(), &kernels, &stage, &[big], &cfg, None, 3)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("loop iterations") && e.contains("L-BFGS"), "{e}");
    }
}

/// A batch of small problems runs the objective and the first-order kernels with fewer
/// invocations per problem (`kernel::lanes_for`: 4 up to d = 4, one subgroup up to
/// d = 64 on a CPU device), where a batch holding a d = 100 problem takes 32. Each
/// small problem gives the same values, bit for bit, in both: every function at d = 1
/// to 4, 7, 13, 32, 40 and 64, rotated and not, under all four first-order methods, and the
/// objective alone.
#[test]
fn small_problems_take_fewer_lanes_and_give_the_same_bits() {
    use optimus_gpu::kernel::lanes_for;
    use optimus_gpu::objective::evaluate;
    let opts = |rotate| SampleOptions {
        shift: 0.3,
        rotate,
        log10_scale: (-1.0, 1.0),
        log10_width: (0.0, 0.0),
        start_fraction: 1.0,
    };
    let mut small = Vec::new();
    for (k, f) in Function::ALL.iter().enumerate() {
        for d in [1usize, 2, 3, 4, 7, 13, 32, 40, 64] {
            for rotate in [false, true] {
                let seed = (100 * k + d) as u64 + 10_000 * rotate as u64;
                if let Ok(p) = ProblemSpec::sample(Objective::Builtin(*f), d, &opts(rotate), seed) {
                    small.push(p);
                }
            }
        }
    }
    let big =
        ProblemSpec::sample(Objective::Builtin(Function::Sphere), 100, &opts(false), 1).unwrap();
    let mut mixed = small.clone();
    mixed.push(big);
    assert_eq!((lanes_for(ctx(), 4), lanes_for(ctx(), 100)), (4, 32));
    assert!(small.len() > 150, "{} problems", small.len());

    let stage = ObjectiveStage::new(ctx(), None).unwrap();
    let (a, b) = (
        evaluate(ctx(), &stage, &small).unwrap(),
        evaluate(ctx(), &stage, &mixed).unwrap(),
    );
    for (k, p) in small.iter().enumerate() {
        assert!(a[k].0.is_finite(), "{} d={}", p.objective.name(), p.dim);
        assert_eq!(a[k], b[k], "{} d={}: objective", p.objective.name(), p.dim);
    }
    for method in [Method::Gd, Method::Momentum, Method::Nesterov, Method::Adam] {
        let mut cfg = OptimizerConfig::new(method);
        cfg.lr = 1e-3;
        let (a, b) = (
            run_gpu(&small, &cfg, 20, None),
            run_gpu(&mixed, &cfg, 20, None),
        );
        // Bits, so that a diverged run's NaNs compare too.
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (k, p) in small.iter().enumerate() {
            let what = format!("{method} on {} d={}", p.objective.name(), p.dim);
            assert_eq!(bits(&a[k].gaps), bits(&b[k].gaps), "{what}: gaps");
            assert_eq!(bits(&a[k].x), bits(&b[k].x), "{what}: final point");
            assert_eq!(a[k].status, b[k].status, "{what}: status");
        }
    }
}
