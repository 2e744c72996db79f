//! Traces a learned optimizer on the CPU twin: every 25 steps, the gap f − f* and, for a
//! model with a learned step scale, its log scale ℓ, on textbook benchmark problems (the
//! evaluation's start domains, seeded). It shows what a model does with its state, e.g.
//! whether ℓ follows the problem or a fixed schedule, and the rms per coordinate of the
//! first two steps (the first has no secant length to scale it).
//!
//!     cargo run --release --example trace -- MODEL_DIR [FUNCTION:D[:WIDTH] ...]
//!
//! WIDTH stretches the problem's domain (as `eval --width`), e.g. `rosenbrock:10:10`.
//!
//! Default problems: rastrigin:2 rastrigin:10 levy:10 rosenbrock:10 dixon-price:10
//! perm:10 ackley:10 griewank:10, three start points each, 200 steps.

use anyhow::{bail, Context, Result};
use optimus_gpu::learned::{cpu, model::Model};
use optimus_gpu::problem::{Objective, ProblemSpec, SampleOptions};
use optimus_gpu::Function;
use std::path::Path;

const STEPS: u32 = 200;
const EVERY: u32 = 25;
const STARTS: u64 = 3;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        bail!(
            "usage: trace MODEL_DIR [FUNCTION:D[:WIDTH] ...], e.g. trace assets/models/optimus levy:10"
        );
    };
    let model = Model::load(Path::new(dir))?;
    let defaults = [
        "rastrigin:2",
        "rastrigin:10",
        "levy:10",
        "rosenbrock:10",
        "dixon-price:10",
        "perm:10",
        "ackley:10",
        "griewank:10",
    ];
    let problems: Vec<String> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        defaults.iter().map(|s| s.to_string()).collect()
    };
    println!("columns: t = ℓ / f − f* every {EVERY} steps");
    for spec in &problems {
        let parts: Vec<&str> = spec.split(':').collect();
        let (name, d, width) = match parts[..] {
            [name, d] => (name, d, "1"),
            [name, d, w] => (name, d, w),
            _ => bail!("'{spec}' is not FUNCTION:D or FUNCTION:D:WIDTH, e.g. levy:10"),
        };
        let f = Function::parse(name).map_err(anyhow::Error::msg)?;
        let d: usize = d
            .parse()
            .with_context(|| format!("'{d}' in '{spec}' is not a dimension"))?;
        let width: f64 = width
            .parse()
            .ok()
            .filter(|w: &f64| w.is_finite() && *w > 0.0)
            .with_context(|| format!("'{width}' in '{spec}' is not a positive width"))?;
        let opts = SampleOptions {
            log10_width: (width.log10(), width.log10()),
            ..SampleOptions::default()
        };
        for seed in 0..STARTS {
            let p = ProblemSpec::sample(Objective::Builtin(f), d, &opts, seed)?;
            let mut st = cpu::LearnedState::new(model.config.kind, &p.x0);
            let mut g = vec![0.0; d];
            let mut line = format!("{name:>11} d = {d:<3} w = {width} start {seed}:");
            let mut gap = 0.0;
            let mut first = Vec::new();
            for t in 0..=STEPS {
                gap = p
                    .cpu_gap_grad(&st.x, &mut g)
                    .context("builtin functions have a twin")?;
                if t % EVERY == 0 {
                    line += &format!("  {t}: {:.1} / {gap:.2e}", st.log_scale);
                }
                if !gap.is_finite() || t == STEPS {
                    break;
                }
                let before = (t < 2).then(|| st.x.clone());
                cpu::step(&model, &mut st, gap, &g);
                if let Some(before) = before {
                    let ss: f64 = st.x.iter().zip(&before).map(|(a, b)| (a - b).powi(2)).sum();
                    first.push(format!("{:.2}", (ss / d as f64).sqrt()));
                }
            }
            println!(
                "{line}  (end {gap:.2e}; first steps rms {})",
                first.join(", ")
            );
        }
    }
    Ok(())
}
