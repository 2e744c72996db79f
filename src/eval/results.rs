//! What an evaluation produces: one cell per (function, dimension, optimizer), with
//! the statistics over its start points. Written by `eval::run`, read by `report`.

use serde::{Deserialize, Serialize};

/// Results of one optimizer on one function at one dimension, over R start points.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    pub function: String,
    pub dim: usize,
    pub optimizer: String,
    /// Tuned learning rate, for methods that have one.
    pub lr: Option<f64>,
    /// Final gap f(x_T) − f* of each start point (NaN where the run diverged).
    pub final_gaps: Vec<f64>,
    /// Mean and median over all start points, a diverged start counting as +∞ (so one
    /// diverged start makes the mean +∞; written as null in JSON).
    pub mean_gap: f64,
    pub median_gap: f64,
    /// Mean over the start points that did not diverge (NaN if none), shown beside the
    /// diverged count.
    pub finite_mean_gap: f64,
    /// Fraction of start points with final gap ≤ the success tolerance.
    pub success_rate: f64,
    /// Mean iterations to reach the threshold, over the start points that reached it.
    pub steps_to_threshold: Option<f64>,
    /// Mean objective/gradient evaluations to reach the threshold, likewise.
    pub evals_to_threshold: Option<f64>,
    /// Start points that reached the threshold (the two means above are over these).
    #[serde(default)]
    pub reached_threshold: usize,
    /// Start points whose run hit NaN or infinity (flagged, +∞ in every statistic).
    pub diverged: usize,
    /// Median gap over start points at each iteration 0..=T (convergence curve), a
    /// diverged start counting as +∞ from the step it diverged on.
    pub curve: Vec<f64>,
    /// Median objective/gradient evaluations spent by each iteration 0..=T, over the
    /// same start points: a line search spends several per iteration, a learned step
    /// one. Empty in results written before it was recorded.
    #[serde(default)]
    pub evals_curve: Vec<f64>,
    /// Wall time of this cell's share of the optimizer's batch, in seconds.
    pub seconds: f64,
}

/// A tuned learning rate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TunedLr {
    pub optimizer: String,
    pub function: String,
    pub lr: f64,
}

/// Everything `optimus-gpu eval` measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalResults {
    /// Adapter the run used.
    pub adapter: String,
    pub steps: u32,
    pub starts: usize,
    /// Success means final gap ≤ this.
    pub success_tol: f64,
    /// Threshold for steps/evaluations to reach.
    pub threshold: f64,
    pub optimizers: Vec<String>,
    pub functions: Vec<String>,
    pub dims: Vec<usize>,
    pub cells: Vec<Cell>,
    pub tuned: Vec<TunedLr>,
    /// Problems skipped, with the reason (e.g. Powell at a d not a multiple of 4).
    pub skipped: Vec<String>,
    /// Total wall time, seconds.
    pub seconds: f64,
}
