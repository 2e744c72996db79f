//! Traces a learned optimizer on one motion reconstruction window with the f64 CPU twins
//! (the learned step and the simulation with its adjoint): every few steps the
//! objective, the MPJPE against the simulated truth, the log step length ℓ, and the rms
//! of the gradient and of the step over each group of unknowns. The groups are what the
//! unknowns measure: joint angle measures (cosines and triple products, in [−1, 1]), the
//! root's targets (metres), and the window's initial root offset (metres) and velocity
//! (m/s). It shows whether a model's steps follow each group's scale.
//!
//!     cargo run --release --example motion_trace -- MODEL_DIR [FAMILY] [WINDOW] [STEPS]
//!
//! The window is the one `optimus-gpu eval --task motion` tests as window WINDOW of
//! FAMILY (default: walk 0, 100 steps).

use anyhow::{bail, Context, Result};
use optimus_gpu::learned::{cpu, model::Model};
use optimus_gpu::motion::body::Body;
use optimus_gpu::motion::eval::{test_windows, MotionEvalConfig};
use optimus_gpu::motion::sim::simulate;
use optimus_gpu::motion::task::{bounded_channels, mpjpe, objective};
use std::path::Path;

const EVERY: usize = 5;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        bail!("usage: motion_trace MODEL_DIR [FAMILY] [WINDOW] [STEPS], e.g. motion_trace assets/models/optimus-motion dance 0");
    };
    let model = Model::load(Path::new(dir))?;
    let family = args.get(1).cloned().unwrap_or_else(|| "walk".into());
    let index: usize = args
        .get(2)
        .map_or(Ok(0), |s| s.parse())
        .context("WINDOW is a number")?;
    let steps: usize = args
        .get(3)
        .map_or(Ok(100), |s| s.parse())
        .context("STEPS is a number")?;
    let cfg = MotionEvalConfig {
        families: vec![family.clone()],
        windows: index + 1,
        ..MotionEvalConfig::default()
    };
    let body = Body::new(&cfg.task.gains);
    let windows = test_windows(&cfg, &body)?;
    let w = &windows[0].1[index];
    // Group of every unknown: keyframe channels, then the six root offsets.
    let bounded = bounded_channels(&body);
    let nc = body.n_channels();
    let n = w.x0.len();
    let group = |i: usize| -> usize {
        if i >= n - 6 {
            if i < n - 3 {
                2
            } else {
                3
            }
        } else if bounded[i % nc] {
            0
        } else {
            1
        }
    };
    let names = [
        "angles",
        "root target m",
        "root offset m",
        "root velocity m/s",
    ];
    let rms = |v: &[f64], k: usize| -> f64 {
        let (s, c) = v
            .iter()
            .enumerate()
            .filter(|(i, _)| group(*i) == k)
            .fold((0.0, 0), |(s, c), (_, x)| (s + x * x, c + 1));
        (s / c.max(1) as f64).sqrt()
    };
    let dist =
        |x: &[f64]| -> Vec<f64> { x.iter().zip(&w.true_params).map(|(a, b)| a - b).collect() };
    println!(
        "{family} window {index}: {n} unknowns ({} per keyframe + 6); columns: step, objective, MPJPE mm, ℓ, then per group rms of g / step / distance to the truth's parameters",
        nc
    );
    println!("groups: {}", names.join(", "));
    let mut st = cpu::LearnedState::new(model.config.kind, &w.x0);
    for t in 0..=steps {
        let (f, g) = objective(&body, &cfg.task, w, &st.x);
        if !f.is_finite() || g.iter().any(|v| !v.is_finite()) {
            println!("{t:>4}  diverged (objective {f})");
            break;
        }
        let before = st.x.clone();
        if t < steps {
            cpu::step(&model, &mut st, f, &g);
        }
        if t % EVERY == 0 || t == steps {
            let est = simulate(&body, &cfg.task.sim, &before, &w.init);
            let (e, _) = mpjpe(&cfg.task, &w.truth, &est);
            let s: Vec<f64> = st.x.iter().zip(&before).map(|(a, b)| a - b).collect();
            let dx = dist(&before);
            let cols: Vec<String> = (0..4)
                .map(|k| format!("{:.1e}/{:.1e}/{:.1e}", rms(&g, k), rms(&s, k), rms(&dx, k)))
                .collect();
            println!(
                "{t:>4} {f:>10.3} {:>7.1} {:>6.2}  {}",
                1e3 * e,
                st.log_scale,
                cols.join("  ")
            );
        }
    }
    Ok(())
}
