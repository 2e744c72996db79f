//! Every GPU kernel against its CPU twin, gradient checks, and the optimizers' known
//! answers. They run on any wgpu adapter (lavapipe on CI) and fail, never skip, when
//! there is none.

// Index loops compare GPU and CPU values coordinate by coordinate.
#![allow(clippy::needless_range_loop)]

mod common;
mod eval;
mod learned;
mod motion;
mod objective;
mod optim;
mod problem;
mod shaders;
mod train;
