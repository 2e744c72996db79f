//! Loop budgets: runs that would pass lavapipe's per-invocation loop limit are
//! refused before they start.

use super::{cpu, Family, Method, OptimizerConfig};
use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::problem::ProblemSpec;

/// Loop iterations one invocation of the objective kernel runs for `p` (an upper
/// estimate: rows per invocation times the work per row, plus the reductions).
fn objective_loop_iterations(p: &ProblemSpec) -> u64 {
    let d = p.dim as u64;
    let rows = d.div_ceil(crate::kernel::fewest_lanes(p.dim as u32) as u64);
    let mut it = 4 * rows + 64;
    if p.rotation.is_some() {
        // x − c, then per four rows of R (x − c) a pass over its d/4 vec4s, and per
        // four columns of Rᵀ∇F a pass over the d rows.
        let s4 = d.div_ceil(4);
        let rows4 = s4.div_ceil(crate::kernel::fewest_lanes(p.dim as u32) as u64);
        it += rows + rows4 * (s4 + d + 2);
    }
    if matches!(
        p.objective,
        crate::problem::Objective::Builtin(crate::Function::Perm)
    ) {
        // Inner sums with a binary power each, then the gradient's sum.
        let bits = 64 - d.leading_zeros() as u64;
        it += rows * d * (bits + 1) + rows * d;
    }
    it
}

/// Loop iterations one invocation of `method`'s own kernel runs at dimension d.
fn method_loop_iterations(method: Method, d: u64, config: &OptimizerConfig) -> u64 {
    let rows = d.div_ceil(crate::kernel::WORKGROUP as u64);
    match (method.family(), method) {
        // The first-order kernel may run with fewer invocations (`kernel::lanes_for`).
        (Family::FirstOrder(_), _) => {
            4 * d.div_ceil(crate::kernel::fewest_lanes(d as u32) as u64) + 64
        }
        // H y, the scaling of H₀ and the rank-two update (d² entries each), and −H g.
        (Family::QuasiNewton, Method::Bfgs) => {
            2 * rows * d + 2 * (d * d).div_ceil(crate::kernel::WORKGROUP as u64) + 16 * rows + 64
        }
        (Family::QuasiNewton, _) => {
            (4 * config.memory as u64 + 8) * rows + 64 * config.memory as u64
        }
        // The guard's two-loop over its pairs, plus its own passes over the coordinates.
        (Family::Learned(_, Some(_)), _) => {
            let m = cpu::GUARD_MEMORY as u64;
            (4 * m + 14) * rows + 64 * m
        }
        (Family::Learned(_, None), _) => 4 * rows + 64,
    }
}

/// Refuses runs that would pass the driver's per-invocation loop limit (lavapipe), which
/// would otherwise end kernels early and give silently wrong results.
pub fn check_loop_budget(
    ctx: &GpuContext,
    problems: &[ProblemSpec],
    config: &OptimizerConfig,
) -> Result<()> {
    let Some(limit) = ctx.loop_limit() else {
        return Ok(());
    };
    for (k, p) in problems.iter().enumerate() {
        let d = p.dim as u64;
        for (kernel, it) in [
            ("objective", objective_loop_iterations(p)),
            (
                config.method.name(),
                method_loop_iterations(config.method, d, config),
            ),
        ] {
            if it > limit {
                return Err(Error::TooLarge(format!(
                    "problem {k} ({}, d = {d}) needs about {it} loop iterations per invocation in the \
                     {kernel} kernel; this driver (llvmpipe) stops an invocation after {limit}, which \
                     would give wrong results. Use a smaller d{}, or a GPU",
                    p.objective.name(),
                    if config.method == Method::Bfgs { ", L-BFGS instead of BFGS" } else { "" }
                )));
            }
        }
    }
    Ok(())
}
