//! Traces a learned optimizer on the CPU twin: every 25 steps, the gap f − f* and, for a
//! model with a learned step scale, its log scale ℓ, on textbook benchmark problems (the
//! evaluation's start domains, seeded). It shows what a model does with its state, e.g.
//! whether ℓ follows the problem or a fixed schedule.
//!
//!     cargo run --release --example trace -- MODEL_DIR [FUNCTION:D ...]
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
        bail!("usage: trace MODEL_DIR [FUNCTION:D ...], e.g. trace assets/models/optimus levy:10");
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
        let (name, d) = spec
            .split_once(':')
            .with_context(|| format!("'{spec}' is not FUNCTION:D, e.g. levy:10"))?;
        let f = Function::parse(name).map_err(anyhow::Error::msg)?;
        let d: usize = d
            .parse()
            .with_context(|| format!("'{d}' in '{spec}' is not a dimension"))?;
        for seed in 0..STARTS {
            let p = ProblemSpec::sample(Objective::Builtin(f), d, &SampleOptions::default(), seed)?;
            let mut st = cpu::LearnedState::new(model.config.kind, &p.x0);
            let mut g = vec![0.0; d];
            let mut line = format!("{name:>11} d = {d:<3} start {seed}:");
            let mut gap = 0.0;
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
                cpu::step(&model, &mut st, gap, &g);
            }
            println!("{line}  (end {gap:.2e})");
        }
    }
    Ok(())
}
