//! The `optimus-gpu` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use optimus_gpu::eval::{self, report, EvalConfig};
use optimus_gpu::GpuContext;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "optimus-gpu",
    version,
    about = "GPU-first engine for learned and classic optimizers on batched problems",
    long_about = "GPU-first engine for learned and classic optimizers, with hand-written WGSL \
                  kernels on wgpu. The adapter is picked from WGPU_BACKEND / WGPU_ADAPTER_NAME \
                  (e.g. WGPU_BACKEND=vulkan); on a machine without a GPU install Mesa's lavapipe \
                  (apt-get install mesa-vulkan-drivers)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the GPU adapter, backend, limits and features the engine uses.
    Info,
    /// Compare optimizers on benchmark functions (or a user WGSL objective):
    /// functions × dimensions × seeded start points, a step budget, learning rates of
    /// GD, momentum and Adam tuned per function. Prints a table and writes JSON, CSV and
    /// SVG plots to the output folder.
    Eval(Box<EvalArgs>),
}

#[derive(clap::Args)]
struct EvalArgs {
    /// RON config file (see assets/eval.ron); flags override its fields.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Functions, comma-separated (default: all 13).
    #[arg(long, value_delimiter = ',')]
    functions: Option<Vec<String>>,
    /// Dimensions, comma-separated (default: 2,10,30,100).
    #[arg(long, value_delimiter = ',')]
    dims: Option<Vec<usize>>,
    /// Seeded start points per function and dimension (default: 8).
    #[arg(long)]
    starts: Option<usize>,
    /// Step budget T (default: 200).
    #[arg(long)]
    steps: Option<u32>,
    /// Optimizers, comma-separated: gd, momentum, nesterov, adam, bfgs, lbfgs.
    #[arg(long, value_delimiter = ',')]
    optimizers: Option<Vec<String>>,
    /// Seed of the start points (and of shifts and rotations).
    #[arg(long)]
    seed: Option<u64>,
    /// Use this learning rate instead of tuning one per function.
    #[arg(long)]
    lr: Option<f64>,
    /// Rotate each problem by a random orthogonal matrix (couples the coordinates).
    #[arg(long)]
    rotate: bool,
    /// Shift each minimizer by up to this fraction of the domain's half-width.
    #[arg(long)]
    shift: Option<f64>,
    /// User WGSL objective instead of the benchmark functions (see
    /// assets/objectives/quadratic.wgsl for the signature).
    #[arg(long)]
    objective: Option<PathBuf>,
    /// Output folder for results.json, results.csv and plots (default: results/eval).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

impl EvalArgs {
    fn config(&self) -> Result<EvalConfig> {
        let mut cfg = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config {}", p.display()))?;
                EvalConfig::from_ron(&text, &p.display().to_string())?
            }
            None => EvalConfig::default(),
        };
        macro_rules! take {
            ($($f:ident),*) => { $(if let Some(v) = &self.$f { cfg.$f = v.clone(); })* };
        }
        take!(functions, dims, starts, steps, optimizers, seed, out);
        if self.lr.is_some() {
            cfg.lr = self.lr;
        }
        if self.objective.is_some() {
            cfg.objective = self.objective.clone();
        }
        if self.rotate {
            cfg.sample.rotate = true;
        }
        if let Some(s) = self.shift {
            cfg.sample.shift = s;
        }
        Ok(cfg)
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info => {
            let ctx = GpuContext::new()?;
            print!("{}", ctx.describe());
        }
        Command::Eval(args) => {
            let cfg = args.config()?;
            let ctx = GpuContext::new()?;
            let res = eval::run(&ctx, &cfg, args.quiet)?;
            print!("{}", report::table(&res));
            let files = report::write_all(&res, &cfg.out)?;
            println!(
                "wrote {} files to {} ({:.1} s on {})",
                files.len(),
                cfg.out.display(),
                res.seconds,
                res.adapter
            );
        }
    }
    Ok(())
}
