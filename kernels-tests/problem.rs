use optimus_gpu::problem::{Objective, ProblemSpec, SampleOptions};
use optimus_gpu::Function;

#[test]
fn bad_input_gets_clear_errors() {
    let o = SampleOptions::default();
    let e = Function::parse("rosenbrok").unwrap_err();
    assert!(
        e.contains("unknown function 'rosenbrok'") && e.contains("rosenbrock"),
        "{e}"
    );
    let e = ProblemSpec::sample(Objective::Builtin(Function::Sphere), 0, &o, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 1"), "{e}");
    let e = ProblemSpec::sample(Objective::Builtin(Function::Sphere), 100_000, &o, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("over the engine's limit"), "{e}");
    let e = ProblemSpec::sample(Objective::Builtin(Function::Powell), 6, &o, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiples of 4"), "{e}");
    let mut p = ProblemSpec::sample(Objective::Builtin(Function::Sphere), 3, &o, 1).unwrap();
    p.x0[1] = f64::NAN;
    let e = p.validate().unwrap_err().to_string();
    assert!(e.contains("coordinate 1") && e.contains("finite"), "{e}");
}

#[test]
fn sampling_is_seeded_and_rotations_are_orthogonal() {
    let opts = SampleOptions {
        shift: 0.5,
        rotate: true,
        log10_scale: (-2.0, 2.0),
        log10_width: (0.0, 0.0),
        start_fraction: 1.0,
    };
    let a = ProblemSpec::sample(Objective::Builtin(Function::Levy), 9, &opts, 42).unwrap();
    let b = ProblemSpec::sample(Objective::Builtin(Function::Levy), 9, &opts, 42).unwrap();
    let c = ProblemSpec::sample(Objective::Builtin(Function::Levy), 9, &opts, 43).unwrap();
    assert_eq!(a.x0, b.x0);
    assert_eq!(a.rotation, b.rotation);
    assert_ne!(a.x0, c.x0);
    let r = a.rotation.unwrap();
    for i in 0..9 {
        for j in 0..9 {
            let dot: f64 = (0..9).map(|k| r[i * 9 + k] * r[j * 9 + k]).sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((dot - want).abs() < 1e-12);
        }
    }
}

/// A problem of width w is the same problem stretched by w: drawn from the same seed,
/// its start point and minimizer are w times farther out, its gap at the start is the
/// same and its gradient w times smaller, and its minimizer still has gap 0.
#[test]
fn width_stretches_the_problem() {
    for (f, d) in [
        (Function::Rosenbrock, 5),
        (Function::Levy, 3),
        (Function::Ackley, 1),
    ] {
        let opts = |w: f64| SampleOptions {
            shift: 0.4,
            rotate: true,
            log10_scale: (-1.0, 1.0),
            log10_width: (w, w),
            start_fraction: 1.0,
        };
        let a = ProblemSpec::sample(Objective::Builtin(f), d, &opts(0.0), 7).unwrap();
        let b = ProblemSpec::sample(Objective::Builtin(f), d, &opts(1.5), 7).unwrap();
        let w = 10f64.powf(1.5);
        assert_eq!(b.width, w);
        let (mut ga, mut gb) = (vec![0.0; d], vec![0.0; d]);
        let fa = a.cpu_gap_grad(&a.x0, &mut ga).unwrap();
        let fb = b.cpu_gap_grad(&b.x0, &mut gb).unwrap();
        assert!(fa > 1e-3, "{f:?}: vacuous start gap {fa}");
        assert!(
            (fa - fb).abs() <= 1e-9 * fa,
            "{f:?}: start gap {fa} vs {fb}"
        );
        for i in 0..d {
            assert!((b.x0[i] - w * a.x0[i]).abs() <= 1e-9 * w * (1.0 + a.x0[i].abs()));
            assert!((b.center[i] - w * a.center[i]).abs() <= 1e-9 * w * (1.0 + a.center[i].abs()));
            assert!(
                (gb[i] * w - ga[i]).abs() <= 1e-9 * (1.0 + ga[i].abs()),
                "{f:?}: gradient {i}"
            );
        }
        let at_min = b.cpu_gap_grad(&b.center.clone(), &mut gb).unwrap();
        assert!(at_min.abs() < 1e-9, "{f:?}: gap {at_min} at the minimizer");
    }
}
