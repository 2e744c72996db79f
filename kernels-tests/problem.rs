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
