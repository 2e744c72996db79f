//! Physics-based human motion reconstruction (docs/DESIGN.md §5): an articulated point-mass
//! body simulated in batches of motion windows on the GPU, with a hand-written adjoint
//! pass for the gradient of the reconstruction objective. `body` defines the body and
//! its kinematic skeleton, `measure` and `sim` are the f64 CPU twin.

pub mod body;
pub mod bvh;
pub mod clip;
pub mod codegen;
pub mod eval;
pub mod gpu;
pub mod measure;
pub mod render;
pub mod sim;
pub mod task;

#[cfg(test)]
mod tests;
