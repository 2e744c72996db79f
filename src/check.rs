//! `optimus-gpu check`: a user objective's hand-written gradient against central finite
//! differences of its own f, evaluated on the GPU (user objectives have no CPU twin), at
//! seeded random points of its domain, with reads of `coord(j)` past the problem's d
//! caught (they give NaN in this mode). Users write `user_grad` by hand; this is where
//! they find its mistakes before a run or a meta-training goes wrong quietly.

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::objective::{evaluate, ObjectiveStage};
use crate::problem::{mix_seed, Objective, ProblemSpec, SampleOptions};
use crate::user_objective::UserObjective;
use std::sync::Arc;

/// Finite-difference steps, as fractions of the domain's width. f is evaluated in f32,
/// so no single step suits every objective: each coordinate keeps the step that agrees
/// best with the user's derivative (a wrong derivative agrees with none).
pub const STEPS: [f64; 4] = [1e-1, 1e-2, 1e-3, 1e-4];

/// Above this relative difference a derivative is reported as wrong. Central
/// differences of an f32 objective agree with a correct derivative to about 1e-3 at
/// the best of [`STEPS`] on smooth objectives.
pub const TOLERANCE: f64 = 1e-2;

/// One coordinate's comparison at one point.
#[derive(Clone, Debug)]
pub struct Coordinate {
    pub index: usize,
    /// ∂f/∂x_i as `user_grad` returns it, and as central differences of f give it.
    pub user: f64,
    pub finite_difference: f64,
    /// |user − fd| / max(|user|, |fd|, 1e-3·max_j |user_j|, 1e-6), at the best step.
    pub error: f64,
}

/// One random point of one dimension: its coordinates, worst first.
#[derive(Clone, Debug)]
pub struct PointCheck {
    pub dim: usize,
    pub point: usize,
    pub coordinates: Vec<Coordinate>,
}

impl PointCheck {
    /// The coordinates whose derivative disagrees with the finite differences.
    pub fn wrong(&self) -> impl Iterator<Item = &Coordinate> {
        self.coordinates.iter().filter(|c| c.error > TOLERANCE)
    }
}

/// Checks `user`'s gradient at `points` seeded random points of its domain for every
/// dimension in `dims`.
pub fn check_gradient(
    ctx: &GpuContext,
    user: &Arc<UserObjective>,
    dims: &[usize],
    points: usize,
    seed: u64,
) -> Result<Vec<PointCheck>> {
    if dims.is_empty() || points == 0 {
        return Err(Error::Config(
            "name at least one dimension (--dims) and one point (--points)".into(),
        ));
    }
    let stage = ObjectiveStage::checking(ctx, user)?;
    let width = user.domain.1 - user.domain.0;
    let mut out = Vec::new();
    for &d in dims {
        for k in 0..points {
            let base = ProblemSpec::sample(
                Objective::User(user.clone()),
                d,
                &SampleOptions::default(),
                mix_seed(seed, &[d as u64, k as u64]),
            )?;
            // The point itself, then x ± h e_j for every step h and coordinate j.
            let mut batch = vec![base.clone()];
            for h in STEPS.map(|s| s * width) {
                for j in 0..d {
                    for sign in [1.0, -1.0] {
                        let mut p = base.clone();
                        p.x0[j] += sign * h;
                        batch.push(p);
                    }
                }
            }
            let values = evaluate(ctx, &stage, &batch)?;
            let (f0, g) = &values[0];
            let finite = |f: &f64, g: &[f64]| f.is_finite() && g.iter().all(|v| v.is_finite());
            if !finite(f0, g) {
                // Without the bounds check: finite there means an out-of-range read.
                let plain = ObjectiveStage::new(ctx, Some(user))?;
                let (pf, pg) = &evaluate(ctx, &plain, std::slice::from_ref(&base))?[0];
                let what = if finite(pf, pg) {
                    "user_term or user_grad reads coord(j) with j ≥ d (past the problem's \
                     last coordinate; in a run that reads another problem's coordinates); \
                     bound every index by d"
                } else {
                    "f or its gradient is not finite there; fix the objective or narrow \
                     USER_DOMAIN_LO/HI"
                };
                return Err(Error::Problem(format!(
                    "{} at d = {d}, x = {:?}: {what}",
                    user.path, base.x0
                )));
            }
            let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let mut coordinates: Vec<Coordinate> = (0..d)
                .map(|j| {
                    STEPS
                        .iter()
                        .enumerate()
                        .map(|(s, frac)| {
                            let i = 1 + 2 * (s * d + j);
                            let fd = (values[i].0 - values[i + 1].0) / (2.0 * frac * width);
                            let scale = g[j].abs().max(fd.abs()).max(1e-3 * gmax).max(1e-6);
                            let error = (g[j] - fd).abs() / scale;
                            Coordinate {
                                index: j,
                                user: g[j],
                                finite_difference: fd,
                                error: if error.is_finite() {
                                    error
                                } else {
                                    f64::INFINITY
                                },
                            }
                        })
                        .min_by(|a, b| a.error.total_cmp(&b.error))
                        .expect("STEPS is not empty")
                })
                .collect();
            coordinates.sort_by(|a, b| b.error.total_cmp(&a.error));
            out.push(PointCheck {
                dim: d,
                point: k,
                coordinates,
            });
        }
    }
    Ok(out)
}

/// The report `optimus-gpu check` prints: per point the worst coordinates, then a verdict.
pub fn report(user: &UserObjective, checks: &[PointCheck]) -> String {
    let mut s = format!(
        "{}: user_grad against central differences of user_term (f32, steps {:?} of the \
         domain's width, the best per coordinate)\n",
        user.path, STEPS
    );
    s += "     d  point  worst coordinate   user_grad   finite diff.   rel. error\n";
    for c in checks {
        let w = &c.coordinates[0];
        s += &format!(
            "{:>6} {:>6} {:>17} {:>11.4e} {:>14.4e} {:>12.1e}{}\n",
            c.dim,
            c.point,
            w.index,
            w.user,
            w.finite_difference,
            w.error,
            if w.error > TOLERANCE { "  WRONG" } else { "" }
        );
    }
    let wrong: Vec<&PointCheck> = checks
        .iter()
        .filter(|c| c.wrong().next().is_some())
        .collect();
    if wrong.is_empty() {
        s += &format!("every derivative agrees with the finite differences within {TOLERANCE:e}\n");
    } else {
        s += &format!(
            "{} of {} points have derivatives that disagree by more than {TOLERANCE:e}:\n",
            wrong.len(),
            checks.len()
        );
        for c in wrong {
            let idx: Vec<String> = c.wrong().take(8).map(|w| w.index.to_string()).collect();
            s += &format!(
                "  d = {}, point {}: coordinates {}{}\n",
                c.dim,
                c.point,
                idx.join(", "),
                if c.wrong().count() > 8 { ", ..." } else { "" }
            );
        }
        s += "check user_grad(i, d) against the derivative of Σ_k user_term(k, d) with \
              respect to coordinate i (terms that read coord(i) count too)\n";
    }
    s
}
