//! The learned optimizers (docs/DESIGN.md §1): Optimus, Optimus-0 and LOpt. `model` holds
//! their architecture, weights and model files.

pub mod attention;
pub mod cpu;
pub mod gpu;
pub mod layout;
pub mod linear;
pub mod model;
