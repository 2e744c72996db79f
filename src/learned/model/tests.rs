use super::*;
use std::path::PathBuf;

/// A temporary directory removed on drop, unique per test and process.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "optimus-gpu-model-test-{}-{tag}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn small(kind: ModelKind) -> ModelConfig {
    ModelConfig {
        kind,
        width: 8,
        heads: 2,
        mlp_hidden: 12,
        layers: 2,
        ..ModelConfig::default()
    }
}

#[test]
fn kind_names_parse_and_errors_list_known_kinds() {
    for k in ModelKind::ALL {
        assert_eq!(ModelKind::parse(k.name()), Ok(k));
    }
    assert_eq!(ModelKind::parse(" Optimus_0 "), Ok(ModelKind::Optimus0));
    assert_eq!(ModelKind::parse("LOPT"), Ok(ModelKind::Lopt));
    let e = ModelKind::parse("adam").unwrap_err();
    assert!(
        e.contains("adam") && e.contains("optimus, optimus-0, lopt"),
        "{e}"
    );
}

#[test]
fn default_optimus_layout() {
    let c = ModelConfig::default();
    c.validate().unwrap();
    let (f, w, h) = (33, 64, 128);
    let per_layer = 2 * w + (w * 3 * w + 3 * w) + (w * w + w) + 2 * w + (w * h + h) + (h * w + w);
    let expected = (f * w + w) + 3 * per_layer + 2 * w + (w * 3 + 3);
    assert_eq!(expected, 102_915);
    assert_eq!(c.n_params(), expected);
    assert_eq!(c.head_outputs(), 3);

    let t = c.tensors();
    assert_eq!(t.len(), 2 + 3 * 12 + 4);
    assert_eq!(t[0].name, "embed.weight");
    assert_eq!(t[0].shape, vec![33, 64]);
    assert_eq!(t.last().unwrap().name, "head.bias");
    assert_eq!(t.last().unwrap().shape, vec![3]);
    let mut next = 0;
    for s in &t {
        assert_eq!(s.offset, next, "{} is not contiguous", s.name);
        next += s.len();
    }
    assert_eq!(next, c.n_params());
    let qkv = c.tensor("blocks.2.attn.qkv.weight").unwrap();
    assert_eq!(qkv.shape, vec![64, 192]);
    assert!(c.tensor("blocks.3.ln1.weight").is_none());

    let o0 = ModelConfig::for_kind(ModelKind::Optimus0);
    assert_eq!(o0.head_outputs(), 2);
    assert_eq!(o0.n_params(), expected - (w + 1));

    let lopt = ModelConfig::for_kind(ModelKind::Lopt);
    let names: Vec<String> = lopt.tensors().into_iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "mlp.fc1.weight",
            "mlp.fc1.bias",
            "mlp.fc2.weight",
            "mlp.fc2.bias",
            "head.weight",
            "head.bias"
        ]
    );
    assert_eq!(lopt.n_params(), (f * h + h) + (h * h + h) + (h * 2 + 2));
}

/// The quasi-Newton step needs all 37 inputs and none of the paper step's switches;
/// a fresh one's head is 1 % of the usual draw (every other tensor as usual), and it
/// has the ν column.
#[test]
fn quasi_newton_configs_are_checked_and_start_near_the_prior() {
    let qn = ModelConfig {
        step: StepRule::QuasiNewton,
        features: N_FEATURES_WITH_SECANT,
        ..small(ModelKind::Optimus)
    };
    qn.validate().unwrap();
    assert_eq!(qn.head_outputs(), 4);
    assert!(qn.secant() && qn.unit_first());
    for bad in [
        ModelConfig {
            secant_scale: true,
            ..qn.clone()
        },
        ModelConfig {
            absolute_steps: true,
            ..qn.clone()
        },
        ModelConfig {
            unit_first_step: true,
            ..qn.clone()
        },
        ModelConfig {
            lambda_scale: 0.1,
            ..qn.clone()
        },
    ] {
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("step: quasi_newton"), "{e}");
    }
    let e = ModelConfig {
        features: N_FEATURES_WITH_LOSS,
        ..qn.clone()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("features: 37"), "{e}");
    let fresh = Model::init(qn.clone(), 3).unwrap();
    let plain = Model::init(
        ModelConfig {
            step: StepRule::Network,
            features: N_FEATURES_WITH_SECANT,
            secant_scale: true,
            absolute_steps: true,
            ..qn.clone()
        },
        3,
    )
    .unwrap();
    for spec in qn.tensors() {
        let (a, b) = (&fresh.weights[spec.range()], &plain.weights[spec.range()]);
        let scale = if spec.name == "head.weight" {
            QN_HEAD_INIT
        } else {
            1.0
        };
        for (x, y) in a.iter().zip(b) {
            assert_eq!(*x, y * scale, "{}", spec.name);
        }
    }
}

#[test]
fn validate_rejects_bad_configs_with_the_field_named() {
    let err = |c: ModelConfig| c.validate().unwrap_err().to_string();
    let e = err(ModelConfig {
        heads: 5,
        ..ModelConfig::default()
    });
    assert!(e.contains("heads (5) must divide width (64)"), "{e}");
    let e = err(ModelConfig {
        features: 30,
        ..ModelConfig::default()
    });
    assert!(e.contains("features: 33"), "{e}");
    let e = err(ModelConfig {
        lambda_s: f64::NAN,
        ..ModelConfig::default()
    });
    assert!(e.contains("lambda_s"), "{e}");
    let e = err(ModelConfig {
        layers: 0,
        ..ModelConfig::default()
    });
    assert!(e.contains("layers"), "{e}");
    let e = err(ModelConfig {
        width: 1 << 20,
        heads: 1,
        ..ModelConfig::default()
    });
    assert!(e.contains("limit"), "{e}");
    let e = err(ModelConfig {
        lambda_scale: 0.05,
        ..ModelConfig::default()
    });
    assert!(e.contains("features: 35"), "{e}");
    let e = err(ModelConfig {
        features: N_FEATURES_WITH_SCALE,
        ..ModelConfig::default()
    });
    assert!(e.contains("lambda_scale is 0"), "{e}");
    let e = err(ModelConfig {
        lambda_scale: -1.0,
        features: N_FEATURES_WITH_SCALE,
        ..ModelConfig::default()
    });
    assert!(e.contains("lambda_scale must be 0"), "{e}");
    let e = err(ModelConfig {
        features: N_FEATURES_WITH_SECANT,
        ..ModelConfig::default()
    });
    assert!(e.contains("set secant_scale: true"), "{e}");
    ModelConfig {
        features: N_FEATURES_WITH_SECANT,
        secant_scale: true,
        ..ModelConfig::default()
    }
    .validate()
    .unwrap();
    let e = err(ModelConfig {
        lambda_scale: 0.1,
        features: N_FEATURES_WITH_SCALE,
        secant_scale: true,
        ..ModelConfig::default()
    });
    assert!(e.contains("choose one"), "{e}");
    let e = err(ModelConfig {
        absolute_steps: true,
        ..ModelConfig::default()
    });
    assert!(e.contains("set secant_scale: true"), "{e}");
    let e = err(ModelConfig {
        unit_first_step: true,
        ..ModelConfig::default()
    });
    assert!(
        e.contains("unit_first_step") && e.contains("secant_scale: true"),
        "{e}"
    );
    // LOpt has no attention, so heads and layers do not matter.
    ModelConfig {
        kind: ModelKind::Lopt,
        heads: 0,
        layers: 0,
        ..ModelConfig::default()
    }
    .validate()
    .unwrap();
}

fn with_scale(c: ModelConfig) -> ModelConfig {
    ModelConfig {
        features: N_FEATURES_WITH_SCALE,
        lambda_scale: 0.1,
        ..c
    }
}

/// The step-scale output is the last column, and a fresh model's is 0 (ℓ stays 0).
#[test]
fn the_step_scale_output_is_a_last_column_that_starts_at_zero() {
    for kind in ModelKind::ALL {
        let c = with_scale(small(kind));
        let base = small(kind).head_outputs();
        assert_eq!(c.head_outputs(), base + 1);
        assert_eq!(c.scale_output(), Some(base));
        assert_eq!(small(kind).scale_output(), None);
        let m = Model::init(c.clone(), 3).unwrap();
        let head: Vec<&[f32]> = m.tensor("head.weight").unwrap().chunks(base + 1).collect();
        assert!(head.iter().all(|row| row[base] == 0.0));
        assert!(head.iter().any(|row| row[0] != 0.0));
    }
}

/// A model grown by the loss input and the step scale takes the same steps as the
/// original until its new weights move; other changes are refused.
#[test]
fn a_grown_model_steps_like_the_original() {
    use crate::learned::cpu::{step, LearnedState};
    for kind in ModelKind::ALL {
        let m = Model::init(small(kind), 4).unwrap();
        let grown = m.grown_to(&with_scale(small(kind))).unwrap();
        assert_eq!(grown.config.features, N_FEATURES_WITH_SCALE);
        let x0 = [0.3, -1.2, 2.0];
        let (mut a, mut b) = (LearnedState::new(kind, &x0), LearnedState::new(kind, &x0));
        for t in 0..3 {
            let f = 5.0 - t as f64;
            let g = [0.1 * f, -0.2, 0.3 + t as f64];
            step(&m, &mut a, f, &g);
            step(&grown, &mut b, f, &g);
        }
        assert_eq!(a.x, b.x, "{kind}");
        let wider = ModelConfig {
            mlp_hidden: 16,
            ..with_scale(small(kind))
        };
        let e = m.grown_to(&wider).unwrap_err().to_string();
        assert!(e.contains("only features and lambda_scale may grow"), "{e}");
        let e = grown.grown_to(&small(kind)).unwrap_err().to_string();
        assert!(e.contains("only features and lambda_scale may grow"), "{e}");
    }
}

#[test]
fn init_is_seeded_and_follows_the_scheme() {
    let c = small(ModelKind::Optimus);
    let a = Model::init(c.clone(), 7).unwrap();
    let b = Model::init(c.clone(), 7).unwrap();
    let d = Model::init(c.clone(), 8).unwrap();
    assert_eq!(a.weights.len(), c.n_params());
    assert_eq!(a.weights, b.weights);
    assert_ne!(a.weights, d.weights);
    assert!(a
        .tensor("blocks.1.ln2.weight")
        .unwrap()
        .iter()
        .all(|&v| v == 1.0));
    assert!(a.tensor("ln_f.weight").unwrap().iter().all(|&v| v == 1.0));
    assert!(a
        .tensor("blocks.0.attn.qkv.bias")
        .unwrap()
        .iter()
        .all(|&v| v == 0.0));
    assert!(a.tensor("head.bias").unwrap().iter().all(|&v| v == 0.0));
    assert!(a.tensor("head.weight").unwrap().iter().any(|&v| v != 0.0));

    // N(0, 1/fan_in): the variance of a large matrix is close to 1/fan_in.
    let big = Model::init(ModelConfig::default(), 1).unwrap();
    let qkv = big.tensor("blocks.0.attn.qkv.weight").unwrap();
    let var = qkv.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / qkv.len() as f64;
    assert!((var * 64.0 - 1.0).abs() < 0.05, "variance {var}");
}

#[test]
fn save_load_round_trip_for_every_kind() {
    for kind in ModelKind::ALL {
        let dir = TempDir::new(&format!("roundtrip-{kind}"));
        let m = Model::init(small(kind), 3).unwrap();
        m.save(&dir.0).unwrap();
        let back = Model::load(&dir.0).unwrap();
        assert_eq!(back.config, m.config);
        assert_eq!(back.weights, m.weights, "{kind}");
        // Saving again over an existing model works and leaves no temporary files.
        m.save(&dir.0).unwrap();
        let mut files: Vec<String> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, [CONFIG_FILE, WEIGHTS_FILE]);
    }
}

#[test]
fn load_reports_every_shape_mismatch_at_once() {
    let dir = TempDir::new("mismatch");
    Model::init(ModelConfig::default(), 0)
        .unwrap()
        .save(&dir.0)
        .unwrap();
    let narrow = ModelConfig {
        width: 32,
        ..ModelConfig::default()
    };
    fs::write(dir.0.join(CONFIG_FILE), narrow.to_ron().unwrap()).unwrap();
    let e = Model::load(&dir.0).unwrap_err().to_string();
    assert!(e.contains("does not match"), "{e}");
    assert!(
        e.contains("embed.weight has shape [33, 64], expected [33, 32]"),
        "{e}"
    );
    assert!(
        e.contains("blocks.2.attn.qkv.weight has shape [64, 192], expected [32, 96]"),
        "{e}"
    );
    // head.bias has the same shape at both widths, so it is not reported.
    assert!(!e.contains("head.bias"), "{e}");
    assert!(e.contains(CONFIG_FILE) && e.contains("init-model"), "{e}");
}

#[test]
fn load_reports_missing_and_unexpected_tensors() {
    let dir = TempDir::new("missing");
    let m = Model::init(small(ModelKind::Lopt), 0).unwrap();
    m.save(&dir.0).unwrap();
    // Rewrite the weights without head.bias, with an extra tensor and an F64 tensor.
    let specs = m.config.tensors();
    let data = m.tensor_bytes();
    let extra = vec![0u8; 8];
    let mut views: Vec<(String, TensorView)> = specs
        .iter()
        .zip(&data)
        .filter(|(s, _)| s.name != "head.bias" && s.name != "mlp.fc1.bias")
        .map(|(s, d)| {
            (
                s.name.clone(),
                TensorView::new(Dtype::F32, s.shape.clone(), d).unwrap(),
            )
        })
        .collect();
    views.push((
        "foo".into(),
        TensorView::new(Dtype::F32, vec![2], &extra).unwrap(),
    ));
    let fc1_bias = vec![0u8; 12 * 8];
    views.push((
        "mlp.fc1.bias".into(),
        TensorView::new(Dtype::F64, vec![12], &fc1_bias).unwrap(),
    ));
    let bytes = safetensors::serialize(views, None).unwrap();
    fs::write(dir.0.join(WEIGHTS_FILE), bytes).unwrap();
    let e = Model::load(&dir.0).unwrap_err().to_string();
    assert!(e.contains("missing head.bias"), "{e}");
    assert!(e.contains("unexpected tensor foo"), "{e}");
    assert!(
        e.contains("mlp.fc1.bias has dtype F64, expected F32"),
        "{e}"
    );
}

#[test]
fn load_rejects_a_newer_format_version() {
    let dir = TempDir::new("version");
    Model::init(small(ModelKind::Optimus0), 0)
        .unwrap()
        .save(&dir.0)
        .unwrap();
    let path = dir.0.join(CONFIG_FILE);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(
        &path,
        text.replace("format_version: 1", "format_version: 99"),
    )
    .unwrap();
    let e = Model::load(&dir.0).unwrap_err().to_string();
    assert!(e.contains("format_version 99"), "{e}");
    assert!(e.contains("reads format_version 1"), "{e}");
    assert!(e.contains(CONFIG_FILE), "{e}");
}

#[test]
fn load_names_the_file_on_parse_errors_and_unknown_fields() {
    let dir = TempDir::new("parse");
    Model::init(small(ModelKind::Optimus), 0)
        .unwrap()
        .save(&dir.0)
        .unwrap();
    let path = dir.0.join(CONFIG_FILE);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("width:", "widht:")).unwrap();
    let e = Model::load(&dir.0).unwrap_err().to_string();
    assert!(e.contains(CONFIG_FILE) && e.contains("widht"), "{e}");
    fs::write(&path, "(kind: optimus, width: ").unwrap();
    let e = Model::load(&dir.0).unwrap_err().to_string();
    assert!(e.contains(CONFIG_FILE), "{e}");
}

#[test]
fn load_of_a_missing_model_points_to_init_model() {
    let dir = TempDir::new("absent");
    let e = Model::load(&dir.0).unwrap_err().to_string();
    assert!(
        e.contains("does not exist") && e.contains("init-model"),
        "{e}"
    );
    fs::create_dir_all(&dir.0).unwrap();
    let e = Model::load(&dir.0).unwrap_err().to_string();
    assert!(e.contains(CONFIG_FILE) && e.contains("init-model"), "{e}");
}

#[test]
fn model_ron_is_readable_and_defaults_fill_missing_fields() {
    let c = ModelConfig::from_ron("(kind: r#optimus-0, width: 32)", "test").unwrap();
    assert_eq!(c.kind, ModelKind::Optimus0);
    assert_eq!(c.width, 32);
    assert_eq!(c.heads, 4);
    let text = small(ModelKind::Lopt).to_ron().unwrap();
    assert!(
        text.starts_with("//") && text.contains("kind: lopt"),
        "{text}"
    );
    assert_eq!(
        ModelConfig::from_ron(&text, "test").unwrap(),
        small(ModelKind::Lopt)
    );
}

#[test]
fn from_weights_checks_the_length() {
    let c = small(ModelKind::Lopt);
    assert!(Model::from_weights(c.clone(), vec![0.0; c.n_params()]).is_ok());
    let e = Model::from_weights(c, vec![0.0; 3])
        .unwrap_err()
        .to_string();
    assert!(e.contains("got 3"), "{e}");
}
