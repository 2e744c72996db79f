//! Every GPU kernel against its CPU twin, gradient checks, and the optimizers' known
//! answers. They run on any wgpu adapter (lavapipe on CI) and fail, never skip, when
//! there is none.

mod common;
mod objective;
mod optim;
mod problem;
mod shaders;
