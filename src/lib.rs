//! optimus-gpu: a GPU-first engine for learned and classic optimizers, batched over
//! thousands of problems, with hand-written WGSL kernels on wgpu.
//!
//! Data flow of one step: [`objective`] (f and ∇f of every problem) → an optimizer in
//! [`optim`] (state update, line search) → the next evaluation point. [`problem`] lays a
//! batch of problems out on the GPU; [`functions`] defines the benchmark suite and its CPU
//! twin; [`eval`] runs the comparison behind `optimus-gpu eval`.

// Index loops mirror the WGSL kernels (and their neighbour terms) one to one.
#![allow(clippy::needless_range_loop)]

pub mod bench;
pub mod check;
pub mod context;
pub mod embed;
pub mod error;
pub mod eval;
pub mod files;
pub mod functions;
pub mod kernel;
pub mod learned;
pub mod motion;
pub mod objective;
pub mod optim;
pub mod problem;
pub mod train;
pub mod user_objective;

pub use context::GpuContext;
pub use error::{Error, Result};
pub use functions::Function;
/// The wgpu this engine is built on, so embedders use the same version.
pub use wgpu;
