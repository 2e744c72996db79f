use crate::common::{assert_close, ctx};
use optimus_gpu::check::check_gradient;
use optimus_gpu::objective::{evaluate, Evaluation, ObjectiveStage};
use optimus_gpu::problem::{Objective, ProblemSpec, SampleOptions};
use optimus_gpu::user_objective::UserObjective;
use optimus_gpu::Function;
use std::sync::Arc;

const DIMS: [usize; 5] = [1, 2, 7, 64, 300];

fn dims_for(f: Function) -> Vec<usize> {
    if f == Function::Powell {
        vec![4, 8, 64, 300]
    } else {
        DIMS.to_vec()
    }
}

fn shifted_rotated() -> SampleOptions {
    SampleOptions {
        shift: 0.3,
        rotate: true,
        log10_scale: (-1.0, 1.0),
        log10_width: (-1.0, 1.0),
        start_fraction: 1.0,
    }
}

/// Compares the GPU objective with the CPU twin on a batch of problems.
fn check_batch(problems: &[ProblemSpec]) {
    let stage = ObjectiveStage::new(ctx(), None).unwrap();
    let gpu = evaluate(ctx(), &stage, problems).unwrap();
    for (p, (fg, gg)) in problems.iter().zip(&gpu) {
        let mut gc = vec![0.0; p.dim];
        let fc = p.cpu_gap_grad(&p.x0, &mut gc).unwrap();
        let what = format!(
            "{} d={} rot={}",
            p.objective.name(),
            p.dim,
            p.rotation.is_some()
        );
        // f32 sums of d terms, and trig of arguments up to ~400 rad (Griewank): the
        // tolerance grows with d.
        let tol = 1e-4 * (p.dim as f64).sqrt().max(1.0);
        assert_close(*fg, fc, tol, 1e-6 * p.scale, &format!("{what}: f"));
        let gmax = gc.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for i in 0..p.dim {
            assert_close(gg[i], gc[i], tol, gmax + 1e-6, &format!("{what}: g[{i}]"));
        }
    }
}

#[test]
fn gpu_matches_cpu_twin_for_every_function_and_dimension() {
    for f in Function::ALL {
        let problems: Vec<_> = dims_for(f)
            .into_iter()
            .enumerate()
            .map(|(k, d)| {
                ProblemSpec::sample(
                    Objective::Builtin(f),
                    d,
                    &SampleOptions::default(),
                    11 + k as u64,
                )
                .unwrap()
            })
            .collect();
        check_batch(&problems);
    }
}

#[test]
fn gpu_matches_cpu_twin_shifted_rotated_and_scaled() {
    for f in Function::ALL {
        let problems: Vec<_> = dims_for(f)
            .into_iter()
            .filter(|&d| d <= 64)
            .enumerate()
            .map(|(k, d)| {
                ProblemSpec::sample(Objective::Builtin(f), d, &shifted_rotated(), 99 + k as u64)
                    .unwrap()
            })
            .collect();
        check_batch(&problems);
    }
}

#[test]
fn one_batch_mixes_functions_and_dimensions() {
    let mut problems = Vec::new();
    for (k, f) in Function::ALL.into_iter().enumerate() {
        for d in [1usize, 3, 4, 65, 130] {
            if f.check_dim(d).is_ok() {
                let opts = if k % 2 == 0 {
                    SampleOptions::default()
                } else {
                    shifted_rotated()
                };
                problems.push(
                    ProblemSpec::sample(Objective::Builtin(f), d, &opts, (k * 7 + d) as u64)
                        .unwrap(),
                );
            }
        }
    }
    check_batch(&problems);
}

#[test]
fn value_at_the_minimizer_is_f_star() {
    let mut problems = Vec::new();
    for f in Function::ALL {
        for d in dims_for(f) {
            for opts in [SampleOptions::default(), shifted_rotated()] {
                let mut p =
                    ProblemSpec::sample(Objective::Builtin(f), d.min(64), &opts, 5).unwrap();
                p.x0 = p.center.clone();
                problems.push(p);
            }
        }
    }
    let stage = ObjectiveStage::new(ctx(), None).unwrap();
    let gpu = evaluate(ctx(), &stage, &problems).unwrap();
    for (p, (fg, _)) in problems.iter().zip(&gpu) {
        let mut g = vec![0.0; p.dim];
        let fc = p.cpu_gap_grad(&p.x0, &mut g).unwrap();
        let what = format!("{} d={}", p.objective.name(), p.dim);
        let fstar = p.f_star().abs();
        assert!(
            fc.abs() <= 1e-9 * (1.0 + fstar) * p.scale,
            "{what}: cpu gap {fc} at minimizer"
        );
        assert!(
            g.iter().all(|v| v.abs() <= 1e-6 * (1.0 + fstar)),
            "{what}: cpu gradient {g:?} at minimizer"
        );
        assert!(
            fg.abs() <= 1e-4 * p.scale * p.dim as f64,
            "{what}: gpu gap {fg} at minimizer"
        );
    }
}

#[test]
fn analytic_gradients_match_finite_differences() {
    for f in Function::ALL {
        for d in [1usize, 2, 4, 7, 12] {
            if f.check_dim(d).is_err() {
                continue;
            }
            for opts in [SampleOptions::default(), shifted_rotated()] {
                let p = ProblemSpec::sample(Objective::Builtin(f), d, &opts, 3 + d as u64).unwrap();
                // Move off the start point a little so no coordinate sits on a kink.
                let x: Vec<f64> = p.x0.iter().map(|v| v * 0.37 + 0.011).collect();
                let mut g = vec![0.0; d];
                p.cpu_gap_grad(&x, &mut g).unwrap();
                for i in 0..d {
                    let h = 1e-6 * x[i].abs().max(1.0);
                    let (mut xp, mut xm) = (x.clone(), x.clone());
                    xp[i] += h;
                    xm[i] -= h;
                    let mut tmp = vec![0.0; d];
                    let fd = (p.cpu_gap_grad(&xp, &mut tmp).unwrap()
                        - p.cpu_gap_grad(&xm, &mut tmp).unwrap())
                        / (2.0 * h);
                    let gmax = g.iter().fold(1e-8f64, |m, v| m.max(v.abs()));
                    assert!(
                        (fd - g[i]).abs() <= 1e-5 * gmax + 1e-6 * fd.abs(),
                        "{} d={d}: ∂f/∂x{i} analytic {} vs finite difference {fd}",
                        f.name(),
                        g[i]
                    );
                }
            }
        }
    }
}

#[test]
fn user_objective_runs_on_the_gpu() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/objectives/quadratic.wgsl");
    let user =
        std::sync::Arc::new(optimus_gpu::user_objective::UserObjective::load(&path).unwrap());
    let stage = ObjectiveStage::new(ctx(), Some(&user)).unwrap();
    let problems: Vec<_> = [1usize, 5, 70]
        .iter()
        .map(|&d| {
            ProblemSpec::sample(
                Objective::User(user.clone()),
                d,
                &SampleOptions::default(),
                d as u64,
            )
            .unwrap()
        })
        .collect();
    let gpu = evaluate(ctx(), &stage, &problems).unwrap();
    for (p, (fg, gg)) in problems.iter().zip(&gpu) {
        let d = p.dim;
        let lam = |i: usize| {
            if d <= 1 {
                1.0
            } else {
                1.0 + 999.0 * i as f64 / (d - 1) as f64
            }
        };
        let f: f64 = (0..d).map(|i| 0.5 * lam(i) * p.x0[i] * p.x0[i]).sum();
        assert_close(*fg, f, 1e-5, 1e-6, "user f");
        for i in 0..d {
            assert_close(gg[i], lam(i) * p.x0[i], 1e-5, 1e-6, "user g");
        }
    }
}

/// `check` passes the shipped quadratic, whose gradient is right, names exactly the
/// coordinate of a gradient that is wrong in one place (twice the derivative of
/// coordinate 3) at every point and dimension, and catches a read past the problem.
#[test]
fn gradient_check_names_the_wrong_coordinate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let good = good_src(root);
    let bad_src = good.replace(
        "return curvature(i, d) * coord(i);",
        "return select(1.0, 2.0, i == 3u) * curvature(i, d) * coord(i);",
    );
    assert_ne!(good, bad_src);
    for (src, want) in [(good, vec![]), (bad_src, vec![3])] {
        let user = Arc::new(UserObjective::from_source("q", "q.wgsl", src).unwrap());
        let checks = check_gradient(ctx(), &user, &[5, 8], 2, 7).unwrap();
        assert_eq!(checks.len(), 4);
        for c in &checks {
            let wrong: Vec<usize> = c.wrong().map(|w| w.index).collect();
            assert_eq!(wrong, want, "d = {}, point {}", c.dim, c.point);
        }
    }
    // A term that reads one coordinate past the problem is caught, with what to fix.
    let oob = UserObjective::from_source(
        "q",
        "q.wgsl",
        good_src(root).replace("let z = coord(i);", "let z = coord(i + 1u);"),
    )
    .unwrap();
    let e = check_gradient(ctx(), &Arc::new(oob), &[4], 1, 7)
        .unwrap_err()
        .to_string();
    assert!(e.contains("coord(j) with j ≥ d"), "{e}");
}

fn good_src(root: &std::path::Path) -> String {
    std::fs::read_to_string(root.join("assets/objectives/quadratic.wgsl")).unwrap()
}

/// A batch keeps the user objective it was made with: a slot takes a new problem of that
/// objective, but not one of another user objective (the stage binding the batch was
/// compiled with the first), nor one of another dimension.
#[test]
fn a_batch_refuses_problems_of_another_user_objective() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/objectives/quadratic.wgsl");
    let (a, b) = (
        Arc::new(UserObjective::load(&path).unwrap()),
        Arc::new(UserObjective::load(&path).unwrap()),
    );
    let spec = |u: &Arc<UserObjective>, d: usize, seed: u64| {
        ProblemSpec::sample(
            Objective::User(u.clone()),
            d,
            &SampleOptions::default(),
            seed,
        )
        .unwrap()
    };
    let batch = optimus_gpu::problem::GpuProblems::with_slots(
        ctx(),
        &[spec(&a, 4, 0), spec(&a, 4, 1)],
        true,
    )
    .unwrap();
    batch.write_problem(ctx(), 1, &spec(&a, 4, 2)).unwrap();
    let e = batch
        .write_problem(ctx(), 1, &spec(&b, 4, 2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot put"), "{e}");
    assert!(batch.write_problem(ctx(), 1, &spec(&a, 5, 2)).is_err());
}

/// A batch made without room for rotations (motion windows, unrotated task families)
/// holds no d×d storage per slot, takes unrotated problems of its dimension in any slot,
/// and refuses a rotated one with a message instead of writing past its buffer.
#[test]
fn a_batch_without_rotation_room_refuses_rotated_problems() {
    let f = Objective::Builtin(Function::Rastrigin);
    let plain = |seed| ProblemSpec::sample(f.clone(), 6, &SampleOptions::default(), seed).unwrap();
    let rotated = ProblemSpec::sample(f.clone(), 6, &shifted_rotated(), 3).unwrap();
    let batch =
        optimus_gpu::problem::GpuProblems::with_slots(ctx(), &[plain(0), plain(1)], false).unwrap();
    assert!(
        batch.rot.size() <= 16,
        "{} bytes of rotations",
        batch.rot.size()
    );
    batch.write_problem(ctx(), 1, &plain(2)).unwrap();
    let e = batch
        .write_problem(ctx(), 0, &rotated)
        .unwrap_err()
        .to_string();
    assert!(e.contains("without room for a rotation"), "{e}");
    let e =
        optimus_gpu::problem::GpuProblems::with_slots(ctx(), &[plain(0), rotated.clone()], false)
            .err()
            .expect("a rotated problem in a batch without rotation room")
            .to_string();
    assert!(e.contains("without room for rotations"), "{e}");
    let roomy =
        optimus_gpu::problem::GpuProblems::with_slots(ctx(), &[plain(0), plain(1)], true).unwrap();
    roomy.write_problem(ctx(), 1, &rotated).unwrap();
    // Two slots of d = 6, each padded to 8×8 (`problem::rotation_len`).
    assert_eq!(roomy.rot.size(), 2 * 64 * 4);
    // The rotation written in place gives the twin's gap and gradient.
    let stage = ObjectiveStage::new(ctx(), None).unwrap();
    let f = ctx().storage_zeroed("f", 2).unwrap();
    let g = ctx().storage_zeroed("g", 12).unwrap();
    let binding = stage.bind(ctx(), &roomy, &roomy.x0, &f, &g).unwrap();
    let mut enc = ctx().device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        binding.record(&mut pass);
    }
    ctx().queue.submit([enc.finish()]);
    let (fs, gs): (Vec<f32>, Vec<f32>) = (ctx().read(&f, 2).unwrap(), ctx().read(&g, 12).unwrap());
    let mut gc = vec![0.0; 6];
    let fc = rotated.cpu_gap_grad(&rotated.x0, &mut gc).unwrap();
    assert_close(fs[1] as f64, fc, 1e-4, 1e-6, "rotated in place: f");
    for i in 0..6 {
        assert_close(
            gs[6 + i] as f64,
            gc[i],
            1e-4,
            1.0,
            &format!("rotated in place: g[{i}]"),
        );
    }
}
