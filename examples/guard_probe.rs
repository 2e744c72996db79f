//! Scratch probe (not committed): loss guard with an L-BFGS fallback, f64 twin.
use optimus_gpu::functions::Function;
use optimus_gpu::learned::cpu::{self, LearnedState};
use optimus_gpu::learned::model::Model;
use optimus_gpu::optim::{cpu as ocpu, Method, OptimizerConfig};
use optimus_gpu::problem::{Objective, ProblemSpec, SampleOptions};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = Model::load(Path::new(&args[1])).unwrap();
    let mem: usize = args[2].parse().unwrap();
    let fns: Vec<&str> = args[3].split(',').collect();
    let steps = 200u32;
    let mut wins = (0, 0, 0);
    for f in fns {
        let func = Function::parse(f).unwrap();
        for d in [2usize, 10, 30, 100] {
            if f == "powell" && d % 4 != 0 {
                continue;
            }
            let (mut mg, mut ml, mut mb) = (0.0, 0.0, 0.0);
            for r in 0..8u64 {
                let p = ProblemSpec::sample(
                    Objective::Builtin(func),
                    d,
                    &SampleOptions::default(),
                    1000 + r * 7919 + d as u64,
                )
                .unwrap();
                let lb = ocpu::run(&p, &OptimizerConfig::new(Method::Lbfgs), 0.0, steps).unwrap();
                let sc = |v: f64| if v.is_finite() { v } else { f64::INFINITY };
                mg += sc(guarded(&model, &p, steps, mem)) / 8.0;
                mb += sc(guarded(
                    &model,
                    &p,
                    steps,
                    if std::env::var("ABL").is_ok() {
                        1000 + mem
                    } else {
                        0
                    },
                )) / 8.0;
                ml += sc(lb.final_gap()) / 8.0;
            }
            wins.0 += (mb < ml) as u32;
            wins.1 += (mg < ml) as u32;
            wins.2 += (mg < mb) as u32;
            println!(
                "{f:12} {d:4} lbfgs {ml:9.2e} bb-guard {mb:9.2e} lbfgs-guard {mg:9.2e}{}",
                if mg < ml { " <" } else { "" }
            );
        }
    }
    println!(
        "lower than lbfgs: bb-guard {} lbfgs-guard {}; lbfgs-guard lower than bb-guard {}",
        wins.0, wins.1, wins.2
    );
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// mem = 0: BB gradient fallback; else L-BFGS two-loop direction with `mem` pairs.
fn guarded(model: &Model, p: &ProblemSpec, steps: u32, mem: usize) -> f64 {
    let nolearn = mem >= 1000;
    let mem = mem % 1000;
    let d = p.dim;
    let mut st = LearnedState::new(model.config.kind, &p.x0);
    let mut g = vec![0.0; d];
    let mut f = p.cpu_gap_grad(&st.x, &mut g).unwrap();
    let mut prev: Option<(Vec<f64>, Vec<f64>)> = None;
    let mut pairs: Vec<(Vec<f64>, Vec<f64>)> = vec![];
    let mut alpha = 0.0;
    for _ in 0..steps {
        if !f.is_finite() {
            return f64::INFINITY;
        }
        let x_t = st.x.clone();
        let g_t = g.clone();
        let f_t = f;
        let mut gamma = None;
        if let Some((px, pg)) = &prev {
            let s: Vec<f64> = (0..d).map(|i| x_t[i] - px[i]).collect();
            let y: Vec<f64> = (0..d).map(|i| g[i] - pg[i]).collect();
            let sy = dot(&s, &y);
            if sy > 0.0 {
                alpha = dot(&s, &s) / sy;
                gamma = Some(sy / dot(&y, &y));
                if mem > 0 {
                    pairs.push((s, y));
                    if pairs.len() > mem {
                        pairs.remove(0);
                    }
                }
            }
        } else {
            alpha = (1.0 / dot(&g, &g).sqrt()).min(1.0);
        }
        let dir: Vec<f64> = if mem == 0 || pairs.is_empty() {
            g.iter().map(|v| alpha * v).collect()
        } else {
            let mut q = g.clone();
            let mut a = vec![0.0; pairs.len()];
            for (k, (s, y)) in pairs.iter().enumerate().rev() {
                a[k] = dot(s, &q) / dot(s, y);
                for i in 0..d {
                    q[i] -= a[k] * y[i];
                }
            }
            let h0 = gamma.unwrap_or_else(|| {
                let (s, y) = pairs.last().unwrap();
                dot(s, y) / dot(y, y)
            });
            for v in q.iter_mut() {
                *v *= h0;
            }
            for (k, (s, y)) in pairs.iter().enumerate() {
                let b = dot(y, &q) / dot(s, y);
                for i in 0..d {
                    q[i] += (a[k] - b) * s[i];
                }
            }
            q
        };
        let xf: Vec<f64> = (0..d).map(|i| x_t[i] - dir[i]).collect();
        prev = Some((x_t.clone(), g.clone()));
        cpu::step(model, &mut st, f, &g);
        let mut gl = vec![0.0; d];
        let fl = p.cpu_gap_grad(&st.x, &mut gl).unwrap();
        let mut gf = vec![0.0; d];
        let ff = p.cpu_gap_grad(&xf, &mut gf).unwrap();
        let lok = !nolearn && fl.is_finite() && gl.iter().all(|v| v.is_finite());
        let fok = ff.is_finite() && gf.iter().all(|v| v.is_finite());
        if fok && (!lok || ff < fl) {
            st.x = xf;
            g = gf;
            f = ff;
        } else if lok {
            g = gl;
            f = fl;
        } else {
            st.x = x_t;
            g = g_t;
            f = f_t;
            alpha *= 0.25;
        }
    }
    f
}
