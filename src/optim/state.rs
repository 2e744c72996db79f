//! Per-problem state on the GPU, its status, and a problem's outcome.

use serde::{Deserialize, Serialize};

/// Why a problem stopped (or that it has not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Running,
    /// Used its step budget.
    Done,
    /// ‖∇f‖ fell below the tolerance.
    Converged,
    /// The line search found no decrease (usually: converged to working precision).
    Stalled,
    /// f or ∇f became NaN or infinite; the problem was stopped and flagged.
    Diverged,
}

impl Status {
    pub fn from_code(c: u32) -> Status {
        match c {
            0 => Status::Running,
            1 => Status::Done,
            2 => Status::Converged,
            3 => Status::Stalled,
            _ => Status::Diverged,
        }
    }
}

/// Per-problem optimizer state; mirrors `struct OptState` in
/// `shaders/shared/opt_state.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct OptState {
    pub status: u32,
    pub iter: u32,
    pub n_evals: u32,
    pub phase: u32,
    pub f: f32,
    pub lr: f32,
    pub moff: u32,
    pub n_ls: u32,
    /// The strong-Wolfe line search's bracket (kernels only; the host zeroes it).
    pub a: f32,
    pub f0: f32,
    pub dg0: f32,
    pub a_prev: f32,
    pub f_prev: f32,
    pub dg_prev: f32,
    pub a_lo: f32,
    pub f_lo: f32,
    pub dg_lo: f32,
    pub a_hi: f32,
    pub f_hi: f32,
    pub dg_hi: f32,
    pub k: u32,
    pub head: u32,
    /// Learned log step scale ℓ (learned optimizers with `lambda_scale > 0`); starts at 0.
    pub log_scale: f32,
    pub pad1: u32,
}

/// Mirrors `struct OptParams` in `shaders/shared/opt_state.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct OptParams {
    pub(super) n_problems: u32,
    pub(super) n_total: u32,
    pub(super) steps: u32,
    pub(super) variant: u32,
    pub(super) beta1: f32,
    pub(super) beta2: f32,
    pub(super) eps: f32,
    pub(super) gtol: f32,
    pub(super) memory: u32,
    pub(super) pad: [u32; 3],
}

impl OptParams {
    /// Parameters of a learned method (the first-order fields are unused).
    pub(crate) fn learned(n_problems: u32, n_total: u32, steps: u32) -> Self {
        Self {
            n_problems,
            n_total,
            steps,
            variant: 0,
            beta1: 0.0,
            beta2: 0.0,
            eps: 0.0,
            gtol: 0.0,
            memory: 0,
            pad: [0; 3],
        }
    }
}

/// Outcome of one problem.
#[derive(Clone, Debug, Serialize)]
pub struct ProblemResult {
    pub status: Status,
    /// Accepted steps.
    pub iters: u32,
    /// Objective and gradient evaluations.
    pub evals: u32,
    /// Gap f − f* at iterations 0..=T (held at the last value after a stop).
    pub gaps: Vec<f64>,
    /// Evaluations spent by each iteration of `gaps`.
    pub evals_at: Vec<u32>,
    /// Final iterate.
    pub x: Vec<f64>,
}

impl ProblemResult {
    /// Final gap f − f*.
    pub fn final_gap(&self) -> f64 {
        *self.gaps.last().unwrap_or(&f64::NAN)
    }

    /// First iteration whose gap is at most `threshold`, with its evaluation count.
    pub fn reached(&self, threshold: f64) -> Option<(u32, u32)> {
        self.gaps
            .iter()
            .position(|&g| g <= threshold)
            .map(|i| (i as u32, self.evals_at[i]))
    }

    /// Builds a result from raw history pairs (gap, evaluations), holding the last
    /// recorded value for the iterations after the problem stopped.
    pub fn from_history(
        status: Status,
        iters: u32,
        evals: u32,
        raw: &[(f64, u32)],
        x: Vec<f64>,
    ) -> Self {
        let mut gaps = Vec::with_capacity(raw.len());
        let mut evals_at = Vec::with_capacity(raw.len());
        let last = if status == Status::Diverged {
            iters as usize
        } else {
            (iters as usize).min(raw.len() - 1)
        };
        for (i, &(g, e)) in raw.iter().enumerate() {
            if i <= last {
                gaps.push(g);
                evals_at.push(e);
            } else {
                gaps.push(gaps[last]);
                evals_at.push(evals_at[last]);
            }
        }
        Self {
            status,
            iters,
            evals,
            gaps,
            evals_at,
            x,
        }
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::kernel::assert_wgsl_layout;

    /// The host's mirrors of the optimizer state and parameters match the WGSL structs.
    #[test]
    fn structs_match_their_wgsl() {
        assert_wgsl_layout!(
            OptState,
            "shared/opt_state.wgsl",
            "OptState",
            [
                status, iter, n_evals, phase, f, lr, moff, n_ls, a, f0, dg0, a_prev, f_prev,
                dg_prev, a_lo, f_lo, dg_lo, a_hi, f_hi, dg_hi, k, head, log_scale
            ]
        );
        assert_wgsl_layout!(
            OptParams,
            "shared/opt_state.wgsl",
            "OptParams",
            [n_problems, n_total, steps, variant, beta1, beta2, eps, gtol, memory]
        );
    }
}
