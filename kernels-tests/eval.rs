use crate::common::ctx;
use optimus_gpu::eval::{report, run, EvalConfig};

fn tiny() -> EvalConfig {
    EvalConfig {
        functions: vec!["sphere".into(), "rosenbrock".into(), "powell".into()],
        dims: vec![2, 4],
        starts: 2,
        steps: 30,
        optimizers: vec!["gd".into(), "adam".into(), "bfgs".into(), "lbfgs".into()],
        lr_grid: vec![1e-3, 1e-2, 1e-1],
        tune_starts: 2,
        ..EvalConfig::default()
    }
}

#[test]
fn a_small_evaluation_produces_every_cell_and_file() {
    let cfg = tiny();
    let res = run(ctx(), &cfg, true).unwrap();
    // Powell is skipped at d = 2 (not a multiple of 4) and reported as such.
    assert_eq!(res.cells.len(), 5 * 4);
    assert_eq!(res.skipped.len(), 1);
    assert_eq!(
        res.tuned.len(),
        2 * 3,
        "gd and adam tuned for each function"
    );
    let sphere_bfgs = res
        .cells
        .iter()
        .find(|c| c.function == "sphere" && c.optimizer == "bfgs" && c.dim == 4)
        .unwrap();
    assert_eq!(sphere_bfgs.success_rate, 1.0);
    assert!(sphere_bfgs.steps_to_threshold.unwrap() <= 3.0);
    assert_eq!(sphere_bfgs.reached_threshold, cfg.starts);
    // A start that ends at or below the threshold has reached it (one above it may have
    // reached it and left again), and the mean steps exist exactly when one did.
    for c in &res.cells {
        let below = c.final_gaps.iter().filter(|&&g| g <= cfg.threshold).count();
        assert!(
            c.reached_threshold >= below && c.reached_threshold <= cfg.starts,
            "{c:?}"
        );
        assert_eq!(c.steps_to_threshold.is_some(), c.reached_threshold > 0);
    }
    let dir = std::env::temp_dir().join(format!("optimus-eval-test-{}", std::process::id()));
    let files = report::write_all(&res, &dir).unwrap();
    assert!(files.iter().any(|f| f.ends_with("results.json")));
    assert!(report::table(&res).contains("rosenbrock"));
    std::fs::remove_dir_all(&dir).ok();
    // Same seed, same numbers.
    let again = run(ctx(), &cfg, true).unwrap();
    for (a, b) in res.cells.iter().zip(&again.cells) {
        assert_eq!(
            a.final_gaps.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.final_gaps.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn bad_eval_configs_are_explained() {
    let e = EvalConfig::from_ron("(dims: [2, 10], stepz: 5)", "bad.ron")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.ron") && e.contains("stepz"), "{e}");
    let cfg = EvalConfig {
        functions: vec!["nope".into()],
        ..tiny()
    };
    let e = run(ctx(), &cfg, true).unwrap_err().to_string();
    assert!(e.contains("unknown function 'nope'"), "{e}");
    let cfg = EvalConfig {
        dims: vec![0],
        ..tiny()
    };
    assert!(run(ctx(), &cfg, true)
        .unwrap_err()
        .to_string()
        .contains("dimension 0"));
    let cfg = EvalConfig {
        optimizers: vec!["sgd2".into()],
        ..tiny()
    };
    assert!(run(ctx(), &cfg, true)
        .unwrap_err()
        .to_string()
        .contains("unknown optimizer"));
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/eval.ron")).unwrap();
    let shipped = EvalConfig::from_ron(&text, "assets/eval.ron").unwrap();
    assert_eq!(
        shipped,
        EvalConfig::default(),
        "assets/eval.ron documents the defaults"
    );
}

#[test]
fn learned_optimizers_join_an_evaluation_through_model_files() {
    use optimus_gpu::learned::model::{Model, ModelConfig, ModelKind};
    let dir = std::env::temp_dir().join(format!("optimus-eval-model-{}", std::process::id()));
    let cfg = ModelConfig {
        width: 16,
        heads: 2,
        mlp_hidden: 16,
        layers: 1,
        ..ModelConfig::for_kind(ModelKind::Optimus)
    };
    Model::init(cfg, 3).unwrap().save(&dir).unwrap();
    let eval_cfg = EvalConfig {
        optimizers: vec!["adam".into(), "optimus".into()],
        models: vec![dir.clone()],
        ..tiny()
    };
    let res = run(ctx(), &eval_cfg, true).unwrap();
    assert!(res.cells.iter().any(|c| c.optimizer == "optimus"));
    assert!(res
        .cells
        .iter()
        .filter(|c| c.optimizer == "optimus")
        .all(|c| c.curve.len() == 31));
    // A learned optimizer without a model on the command line uses the committed one.
    let fallback = EvalConfig {
        optimizers: vec!["lopt".into()],
        models: vec![dir.clone()],
        ..tiny()
    };
    let committed = optimus_gpu::eval::default_model_dir(ModelKind::Lopt)
        .expect("assets/models/lopt is committed");
    assert_eq!(
        Model::load(&committed).unwrap().config.kind,
        ModelKind::Lopt
    );
    let res = run(ctx(), &fallback, true).unwrap();
    assert!(res.cells.iter().any(|c| c.optimizer == "lopt"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cells_past_the_drivers_loop_limit_are_skipped_and_reported() {
    if ctx().loop_limit().is_none() {
        return; // only drivers with such a limit (lavapipe) refuse these cells
    }
    let cfg = EvalConfig {
        functions: vec!["sphere".into()],
        dims: vec![4, 800],
        starts: 1,
        steps: 3,
        optimizers: vec!["bfgs".into(), "lbfgs".into()],
        ..tiny()
    };
    let res = run(ctx(), &cfg, true).unwrap();
    assert_eq!(
        res.cells.len(),
        3,
        "bfgs at d = 800 is skipped, the rest runs"
    );
    assert!(
        res.skipped
            .iter()
            .any(|s| s.contains("bfgs on sphere at d = 800") && s.contains("loop iterations")),
        "{:?}",
        res.skipped
    );
}
