use optimus_gpu::kernel::{compose, validate, ENTRY_SHADERS};
use optimus_gpu::user_objective::{objective_source, UserObjective};

#[test]
fn every_shader_parses_and_validates_with_naga() {
    for path in ENTRY_SHADERS {
        let src = compose(path).unwrap();
        validate(path, &src).unwrap_or_else(|e| panic!("{e}"));
    }
    let obj = objective_source(None).unwrap();
    validate("objective.wgsl", &obj).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn example_user_objective_validates_and_exposes_constants() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/objectives/quadratic.wgsl");
    let u = UserObjective::load(&path).unwrap();
    assert_eq!(u.f_star, 0.0);
    assert_eq!(u.domain, (-1.0, 1.0));
}

#[test]
fn user_objective_error_names_the_file_line() {
    let src = "const USER_F_STAR: f32 = 0.0;\nconst USER_DOMAIN_LO: f32 = -1.0;\nconst USER_DOMAIN_HI: f32 = 1.0;\nfn user_term(i: u32, d: u32) -> f32 { return coord(i) * ; }\nfn user_grad(i: u32, d: u32) -> f32 { return 1.0; }\n";
    let err = UserObjective::from_source("bad", "bad.wgsl", src.into())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.wgsl:4"),
        "error should point at line 4: {err}"
    );
    let missing = UserObjective::from_source("m", "m.wgsl", "fn f() {}".into())
        .unwrap_err()
        .to_string();
    assert!(missing.contains("user_term"), "{missing}");
}

#[test]
fn workgroup_size_in_wgsl_matches_the_host() {
    let src = compose("first_order.wgsl").unwrap();
    let module = validate("first_order.wgsl", &src).unwrap();
    // An override (the objective and first-order kernels set it per batch), whose
    // default is the host's.
    let wg = module
        .overrides
        .iter()
        .find(|(_, o)| o.name.as_deref() == Some("WG"))
        .and_then(|(_, o)| o.init)
        .map(|init| module.global_expressions[init].clone())
        .expect("WG override with a default");
    assert!(
        matches!(wg, naga::Expression::Literal(naga::Literal::U32(v)) if v == optimus_gpu::kernel::WORKGROUP),
        "{wg:?}"
    );
}

#[test]
fn every_wgsl_file_is_embedded() {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "wgsl") {
                out.push(
                    p.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    for f in files {
        assert!(
            optimus_gpu::kernel::SHADERS.iter().any(|(p, _)| *p == f),
            "shaders/{f} is not listed in kernel::SHADERS"
        );
    }
}
