//! WGSL generated from a [`Body`]: the straight-line code that completes
//! `shaders/motion/forward.wgsl` and `adjoint.wgsl`. Every point and channel index is a
//! literal, so a window's positions, velocities and adjoints are private arrays indexed
//! only by constants, which compilers keep in registers (dynamic indexing would put
//! them in per-invocation memory: measured 0.9x the CPU twin's speed on lavapipe
//! before). The math itself stays in `body.wgsl`, shared by both passes.

use super::body::{Body, Measure, Target, Term, Vector};
use super::sim::SimConfig;
use std::fmt::Write;

fn f(v: f64) -> String {
    format!("{:?}", v as f32)
}

fn axis(a: usize) -> &'static str {
    [
        "vec3<f32>(1.0, 0.0, 0.0)",
        "vec3<f32>(0.0, 1.0, 0.0)",
        "vec3<f32>(0.0, 0.0, 1.0)",
    ][a]
}

/// The target of a term at the current step (`t0`: θ offset of keyframe k, `kw`: weight).
fn goal(t: &Term, nc: usize) -> String {
    match t.target {
        Target::Fixed(q) => f(q),
        Target::Channel(c) => {
            format!(
                "((1.0 - kw) * theta[t0 + {c}u] + kw * theta[t0 + {}u])",
                nc + c
            )
        }
    }
}

/// Vectors of a multilinear or length term: (kind, vectors).
fn vectors(m: &Measure) -> Option<(u32, Vec<Vector>)> {
    match *m {
        Measure::Length(u) => Some((0, vec![u])),
        Measure::Cos(u, v) => Some((1, vec![u, v])),
        Measure::Triple(u, v, w) => Some((2, vec![u, v, w])),
        Measure::Midpoint { .. } => None,
    }
}

/// `array<vec3<f32>, 3>(...)` of the differences of a per-point value (`at(i)` reads
/// point i) along the vectors (axes give the axis itself for positions, zero otherwise).
fn diffs(vs: &[Vector], at: impl Fn(usize) -> String, positions: bool) -> String {
    let mut items: Vec<String> = vs
        .iter()
        .map(|v| match *v {
            Vector::Points { from, to } => format!("{} - {}", at(to), at(from)),
            Vector::Axis(a) if positions => axis(a).to_string(),
            Vector::Axis(_) => "vec3<f32>(0.0)".into(),
        })
        .collect();
    items.resize(3, "vec3<f32>(0.0)".into());
    format!("array<vec3<f32>, 3>({})", items.join(", "))
}

fn moving(vs: &[Vector]) -> String {
    let m: Vec<&str> = (0..3)
        .map(|k| match vs.get(k) {
            Some(Vector::Points { .. }) => "true",
            _ => "false",
        })
        .collect();
    format!("vec3<bool>({})", m.join(", "))
}

/// Constants, private state and its load, shared by both passes.
fn common(body: &Body, out: &mut String) {
    let np = body.masses.len();
    let _ = writeln!(out, "const N_POINTS: u32 = {np}u;");
    let _ = writeln!(out, "const N_CHANNELS: u32 = {}u;", body.n_channels());
    for name in ["xs", "vs"] {
        let _ = writeln!(out, "var<private> {name}: array<vec3<f32>, {np}>;");
    }
    let _ = writeln!(
        out,
        "fn load_state(b: u32) {{\n    let P = params.n_windows;"
    );
    for i in 0..np {
        for (arr, off) in [("xs", 3 * i), ("vs", 3 * (np + i))] {
            let _ = writeln!(out, "    {arr}[{i}] = {};", soa("traj", off));
        }
    }
    let _ = writeln!(out, "}}");
}

/// `vec3<f32>(buf[b + k·P], …)` for components k = off, off + 1, off + 2 of a state
/// laid out window-minor (component-major, so neighbouring windows are adjacent).
fn soa(buf: &str, off: usize) -> String {
    format!(
        "vec3<f32>({buf}[b + {off}u * P], {buf}[b + {}u * P], {buf}[b + {}u * P])",
        off + 1,
        off + 2
    )
}

/// The forward pass's generated half.
pub fn forward(body: &Body, cfg: &SimConfig) -> String {
    let np = body.masses.len();
    let nc = body.n_channels();
    let mut s = String::new();
    common(body, &mut s);
    let _ = writeln!(
        s,
        "fn store_state(b: u32) {{\n    let P = params.n_windows;"
    );
    for i in 0..np {
        for (arr, off) in [("xs", 3 * i), ("vs", 3 * (np + i))] {
            let _ = writeln!(
                s,
                "    traj[b + {off}u * P] = {arr}[{i}].x; traj[b + {}u * P] = {arr}[{i}].y; traj[b + {}u * P] = {arr}[{i}].z;",
                off + 1,
                off + 2
            );
        }
    }
    let _ = writeln!(s, "}}");
    let _ = writeln!(s, "fn init_state(b: u32, p0: vec3<f32>, v0: vec3<f32>) {{");
    for i in 0..np {
        for (arr, off, add) in [("xs", 3 * i, "p0"), ("vs", 3 * (np + i), "v0")] {
            let _ = writeln!(
                s,
                "    {arr}[{i}] = vec3<f32>(init[b + {off}u], init[b + {}u], init[b + {}u]) + {add};",
                off + 1,
                off + 2
            );
        }
    }
    let _ = writeln!(s, "}}");
    let ok: Vec<String> = (0..np)
        .map(|i| {
            format!("all(abs(xs[{i}]) < vec3<f32>(1000.0)) && all(abs(vs[{i}]) < vec3<f32>(1.0e6))")
        })
        .collect();
    let _ = writeln!(
        s,
        "fn state_ok() -> bool {{\n    return {};\n}}",
        ok.join("\n        && ")
    );
    let _ = writeln!(s, "fn forward_step(p: SimParams, t0: u32, kw: f32) {{");
    let _ = writeln!(s, "    var fs: array<vec3<f32>, {np}>;");
    for i in 0..np {
        let _ = writeln!(
            s,
            "    fs[{i}] = vec3<f32>(0.0, {}, 0.0) + contact_force(p, xs[{i}], vs[{i}]);",
            f(-cfg.gravity * body.masses[i])
        );
    }
    for t in &body.terms {
        let g = goal(t, nc);
        let (kp, kd) = (f(t.kp), f(t.kd));
        match vectors(&t.measure) {
            Some((kind, vs)) => {
                let _ = writeln!(
                    s,
                    "    {{\n        let f = term_force({kind}u, {}, {}, {}, {kp}, {kd}, {g});",
                    diffs(&vs, |i| format!("xs[{i}]"), true),
                    diffs(&vs, |i| format!("vs[{i}]"), false),
                    moving(&vs)
                );
                for (k, v) in vs.iter().enumerate() {
                    if let Vector::Points { from, to } = *v {
                        let _ = writeln!(
                            s,
                            "        fs[{to}] += f[{k}];\n        fs[{from}] -= f[{k}];"
                        );
                    }
                }
                let _ = writeln!(s, "    }}");
            }
            None => {
                let Measure::Midpoint { a, b, axis: ax } = t.measure else {
                    unreachable!("only midpoints have no vectors")
                };
                let _ = writeln!(
                    s,
                    "    {{\n        let e = {};\n        let q = 0.5 * dot(xs[{a}] + xs[{b}], e);\n        let qd = 0.5 * dot(vs[{a}] + vs[{b}], e);\n        let f = -0.5 * ({kp} * (q - {g}) + {kd} * qd) * e;\n        fs[{a}] += f;\n        fs[{b}] += f;\n    }}",
                    axis(ax)
                );
            }
        }
    }
    for i in 0..np {
        let _ = writeln!(
            s,
            "    vs[{i}] += p.dt * {} * fs[{i}];\n    xs[{i}] += p.dt * vs[{i}];",
            f(1.0 / body.masses[i])
        );
    }
    let _ = writeln!(s, "}}");
    s
}

/// The adjoint pass's generated half.
pub fn adjoint(body: &Body) -> String {
    let np = body.masses.len();
    let nc = body.n_channels();
    let mut s = String::new();
    common(body, &mut s);
    let x = |i: usize| format!("xs[{i}]");
    let v = |i: usize| format!("vs[{i}]");
    for name in ["lam", "xb", "vb"] {
        let _ = writeln!(s, "var<private> {name}: array<vec3<f32>, {np}>;");
    }
    let _ = writeln!(s, "fn seed_final(b: u32) {{\n    let P = params.n_windows;");
    for i in 0..np {
        let _ = writeln!(
            s,
            "    xb[{i}] = {};\n    vb[{i}] = vec3<f32>(0.0);",
            soa("seeds", 3 * i)
        );
    }
    let _ = writeln!(s, "}}");
    for (name, load) in [("load_adjoint", true), ("store_adjoint", false)] {
        let _ = writeln!(s, "fn {name}(b: u32) {{");
        for i in 0..np {
            for (arr, off) in [("xb", 3 * i), ("vb", 3 * (np + i))] {
                if load {
                    let _ = writeln!(
                        s,
                        "    {arr}[{i}] = vec3<f32>(adj[b + {off}u], adj[b + {}u], adj[b + {}u]);",
                        off + 1,
                        off + 2
                    );
                } else {
                    let _ = writeln!(
                        s,
                        "    adj[b + {off}u] = {arr}[{i}].x; adj[b + {}u] = {arr}[{i}].y; adj[b + {}u] = {arr}[{i}].z;",
                        off + 1,
                        off + 2
                    );
                }
            }
        }
        let _ = writeln!(s, "}}");
    }
    let sum = |arr: &str| {
        (0..np)
            .map(|i| format!("{arr}[{i}]"))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let _ = writeln!(
        s,
        "fn root_gradient(r: u32) {{\n    let px = {};\n    let pv = {};\n    grad[r] = px.x; grad[r + 1u] = px.y; grad[r + 2u] = px.z;\n    grad[r + 3u] = pv.x; grad[r + 4u] = pv.y; grad[r + 5u] = pv.z;\n}}",
        sum("xb"),
        sum("vb")
    );
    let _ = writeln!(
        s,
        "fn adjoint_step(p: SimParams, tb: u32, sb: u32, t0: u32, kw: f32) {{"
    );
    let _ = writeln!(
        s,
        "    load_state(tb);\n    let P = p.n_windows;\n    let b = sb;"
    );
    for i in 0..np {
        let _ = writeln!(
            s,
            "    {{\n        let vp = vb[{i}] + p.dt * xb[{i}];\n        lam[{i}] = p.dt * {} * vp;\n        xb[{i}] += {};\n        vb[{i}] = vp;\n    }}",
            f(1.0 / body.masses[i]),
            soa("seeds", 3 * i)
        );
    }
    let _ = writeln!(s, "    var ub: array<f32, {nc}>;");
    for t in &body.terms {
        let g = goal(t, nc);
        let (kp, kd) = (f(t.kp), f(t.kd));
        let ub = match t.target {
            Target::Channel(c) => Some(c),
            Target::Fixed(_) => None,
        };
        match vectors(&t.measure) {
            Some((kind, vs)) => {
                let _ = writeln!(
                    s,
                    "    {{\n        let r = term_adjoint({kind}u, {}, {}, {}, {}, {kp}, {kd}, {g});",
                    diffs(&vs, x, true),
                    diffs(&vs, v, false),
                    diffs(&vs, |i| format!("lam[{i}]"), false),
                    moving(&vs)
                );
                for (k, v) in vs.iter().enumerate() {
                    if let Vector::Points { from, to } = *v {
                        let _ = writeln!(
                            s,
                            "        xb[{to}] -= r.dx[{k}];\n        xb[{from}] += r.dx[{k}];\n        vb[{to}] -= r.dv[{k}];\n        vb[{from}] += r.dv[{k}];"
                        );
                    }
                }
                if let Some(c) = ub {
                    let _ = writeln!(s, "        ub[{c}] += r.ub;");
                }
                let _ = writeln!(s, "    }}");
            }
            None => {
                let Measure::Midpoint { a, b, axis: ax } = t.measure else {
                    unreachable!("only midpoints have no vectors")
                };
                let _ = writeln!(
                    s,
                    "    {{\n        let e = {};\n        let a = 0.5 * dot(lam[{a}] + lam[{b}], e);\n        xb[{a}] -= 0.5 * a * {kp} * e;\n        xb[{b}] -= 0.5 * a * {kp} * e;\n        vb[{a}] -= 0.5 * a * {kd} * e;\n        vb[{b}] -= 0.5 * a * {kd} * e;",
                    axis(ax)
                );
                if let Some(c) = ub {
                    let _ = writeln!(s, "        ub[{c}] += a * {kp};");
                }
                let _ = writeln!(s, "    }}");
            }
        }
    }
    for i in 0..np {
        let _ = writeln!(
            s,
            "    {{\n        let c = contact_adjoint(p, {}, {}, lam[{i}]);\n        xb[{i}] += c[0];\n        vb[{i}] += c[1];\n    }}",
            x(i),
            v(i)
        );
    }
    for c in 0..nc {
        let _ = writeln!(
            s,
            "    grad[t0 + {c}u] += (1.0 - kw) * ub[{c}];\n    grad[t0 + {}u] += kw * ub[{c}];",
            nc + c
        );
    }
    let _ = writeln!(s, "}}");
    s
}
