//! f64 CPU twins of the optimizer kernels: the same algorithms, branch for branch, so
//! GPU trajectories can be checked against them.

use super::{FirstOrder, Guarding, Method, OptimizerConfig, ProblemResult, Status};
use crate::error::{Error, Result};
use crate::learned::{cpu, model::Model};
use crate::problem::ProblemSpec;

/// Most evaluations one line search may take (`LS_MAX` in `line_search.wgsl`).
pub const LS_MAX: u32 = 25;
const LS_C1: f64 = 1e-4;
const LS_C2: f64 = 0.9;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Bracket,
    Zoom,
    Final,
}

/// What the line search wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Trial,
    Accept,
    Fail,
}

/// Twin of `shaders/shared/line_search.wgsl`: strong-Wolfe search as a state machine.
#[derive(Clone, Debug)]
pub struct LineSearch {
    phase: Phase,
    n_ls: u32,
    /// Current trial step.
    pub a: f64,
    f0: f64,
    dg0: f64,
    a_prev: f64,
    f_prev: f64,
    dg_prev: f64,
    a_lo: f64,
    f_lo: f64,
    dg_lo: f64,
    a_hi: f64,
    f_hi: f64,
    dg_hi: f64,
}

impl LineSearch {
    pub fn begin(f0: f64, dg0: f64, a0: f64) -> Self {
        Self {
            phase: Phase::Bracket,
            n_ls: 0,
            a: a0,
            f0,
            dg0,
            a_prev: 0.0,
            f_prev: f0,
            dg_prev: dg0,
            a_lo: 0.0,
            f_lo: f0,
            dg_lo: dg0,
            a_hi: 0.0,
            f_hi: f0,
            dg_hi: dg0,
        }
    }

    fn give_up(&mut self) -> Act {
        if self.a_lo > 0.0 && self.f_lo < self.f0 {
            self.a = self.a_lo;
            self.phase = Phase::Final;
            return Act::Trial;
        }
        Act::Fail
    }

    fn cubic(&self) -> f64 {
        let (a_lo, f_lo, g_lo) = (self.a_lo, self.f_lo, self.dg_lo);
        let (a_hi, f_hi, g_hi) = (self.a_hi, self.f_hi, self.dg_hi);
        let mid = 0.5 * (a_lo + a_hi);
        if !(f_hi.is_finite() && g_hi.is_finite()) {
            return mid;
        }
        let d1 = g_lo + g_hi - 3.0 * (f_lo - f_hi) / (a_lo - a_hi);
        let disc = d1 * d1 - g_lo * g_hi;
        if disc < 0.0 {
            return mid;
        }
        let d2 = (a_hi - a_lo).signum() * disc.sqrt();
        let a = a_hi - (a_hi - a_lo) * (g_hi + d2 - d1) / (g_hi - g_lo + 2.0 * d2);
        let lo = a_lo.min(a_hi);
        let w = (a_hi - a_lo).abs();
        if !a.is_finite() || a < lo + 0.1 * w || a > lo + 0.9 * w {
            return mid;
        }
        a
    }

    /// Takes φ(a), φ'(a) at the current trial.
    pub fn step(&mut self, phi: f64, dphi: f64) -> Act {
        let (phi, dphi) = if phi.is_finite() && dphi.is_finite() {
            (phi, dphi)
        } else {
            (3.0e38, 3.0e38)
        };
        self.n_ls += 1;
        let a = self.a;
        let armijo_fails = phi > self.f0 + LS_C1 * a * self.dg0;
        let curvature_holds = dphi.abs() <= -LS_C2 * self.dg0;
        match self.phase {
            Phase::Final => {
                return if phi < self.f0 {
                    Act::Accept
                } else {
                    Act::Fail
                };
            }
            Phase::Bracket => {
                if armijo_fails || (self.n_ls > 1 && phi >= self.f_prev) {
                    (self.a_lo, self.f_lo, self.dg_lo) = (self.a_prev, self.f_prev, self.dg_prev);
                    (self.a_hi, self.f_hi, self.dg_hi) = (a, phi, dphi);
                    self.phase = Phase::Zoom;
                } else if curvature_holds {
                    return Act::Accept;
                } else if dphi >= 0.0 {
                    (self.a_hi, self.f_hi, self.dg_hi) = (self.a_prev, self.f_prev, self.dg_prev);
                    (self.a_lo, self.f_lo, self.dg_lo) = (a, phi, dphi);
                    self.phase = Phase::Zoom;
                } else {
                    (self.a_prev, self.f_prev, self.dg_prev) = (a, phi, dphi);
                    (self.a_lo, self.f_lo, self.dg_lo) = (a, phi, dphi);
                    if self.n_ls >= LS_MAX {
                        return self.give_up();
                    }
                    self.a = 2.0 * a;
                    return Act::Trial;
                }
            }
            Phase::Zoom => {
                if armijo_fails || phi >= self.f_lo {
                    (self.a_hi, self.f_hi, self.dg_hi) = (a, phi, dphi);
                } else {
                    if curvature_holds {
                        return Act::Accept;
                    }
                    if dphi * (self.a_hi - self.a_lo) >= 0.0 {
                        (self.a_hi, self.f_hi, self.dg_hi) = (self.a_lo, self.f_lo, self.dg_lo);
                    }
                    (self.a_lo, self.f_lo, self.dg_lo) = (a, phi, dphi);
                }
            }
        }
        let width = (self.a_hi - self.a_lo).abs();
        if self.n_ls >= LS_MAX || width <= 1e-7 * self.a_lo.max(self.a_hi) {
            return self.give_up();
        }
        self.a = self.cubic();
        Act::Trial
    }
}

/// v > 0, false for NaN (as in the kernels' `!(v > 0.0)` tests).
fn positive(v: f64) -> bool {
    v > 0.0
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Curvature model of a quasi-Newton method (twin of `bfgs.wgsl` / `lbfgs.wgsl`).
enum Curvature {
    /// Dense inverse Hessian and the number of updates applied.
    Dense { h: Vec<f64>, k: usize },
    /// The last `memory` (s, y) pairs, oldest first.
    Limited {
        pairs: Vec<(Vec<f64>, Vec<f64>)>,
        memory: usize,
    },
}

impl Curvature {
    fn new(method: Method, d: usize, memory: usize) -> Self {
        match method {
            Method::Bfgs => Curvature::Dense {
                h: identity(d, 1.0),
                k: 0,
            },
            _ => Curvature::Limited {
                pairs: Vec::new(),
                memory,
            },
        }
    }

    fn reset(&mut self, d: usize) {
        match self {
            Curvature::Dense { h, k } => {
                *h = identity(d, 1.0);
                *k = 0;
            }
            Curvature::Limited { pairs, .. } => pairs.clear(),
        }
    }

    fn update(&mut self, s: &[f64], y: &[f64]) {
        let d = s.len();
        let sy = dot(s, y);
        match self {
            Curvature::Dense { h, k } => {
                let yy = dot(y, y);
                if !positive(sy) || !sy.is_finite() || !positive(yy) {
                    return;
                }
                if *k == 0 {
                    *h = identity(d, sy / yy);
                }
                let t: Vec<f64> = (0..d).map(|i| dot(&h[i * d..(i + 1) * d], y)).collect();
                let yhy = dot(y, &t);
                let rho = 1.0 / sy;
                let c = rho * rho * yhy + rho;
                for i in 0..d {
                    for j in 0..d {
                        h[i * d + j] += -rho * (t[i] * s[j] + s[i] * t[j]) + c * s[i] * s[j];
                    }
                }
                *k += 1;
            }
            Curvature::Limited { pairs, memory } => {
                if !positive(sy) || !sy.is_finite() {
                    return;
                }
                if pairs.len() == *memory {
                    pairs.remove(0);
                }
                pairs.push((s.to_vec(), y.to_vec()));
            }
        }
    }

    /// p = −H g.
    fn direction(&self, g: &[f64]) -> Vec<f64> {
        let d = g.len();
        match self {
            Curvature::Dense { h, .. } => (0..d).map(|i| -dot(&h[i * d..(i + 1) * d], g)).collect(),
            Curvature::Limited { pairs, .. } => {
                let mut q = g.to_vec();
                let mut alphas = vec![0.0; pairs.len()];
                for (c, (s, y)) in pairs.iter().enumerate().rev() {
                    alphas[c] = dot(s, &q) / dot(s, y);
                    for i in 0..d {
                        q[i] -= alphas[c] * y[i];
                    }
                }
                if let Some((s, y)) = pairs.last() {
                    let gamma = dot(s, y) / dot(y, y);
                    q.iter_mut().for_each(|v| *v *= gamma);
                }
                for (c, (s, y)) in pairs.iter().enumerate() {
                    let beta = dot(y, &q) / dot(s, y);
                    for i in 0..d {
                        q[i] += s[i] * (alphas[c] - beta);
                    }
                }
                q.iter().map(|v| -v).collect()
            }
        }
    }
}

fn identity(d: usize, gamma: f64) -> Vec<f64> {
    let mut h = vec![0.0; d * d];
    for i in 0..d {
        h[i * d + i] = gamma;
    }
    h
}

/// One update of the first-order method of `config` at step `t` (1-based), given ∇f in
/// `g`; `m` and `v` are the first and second moments (velocity for momentum). Twin of
/// `first_order.wgsl`.
pub fn first_order_step(
    config: &OptimizerConfig,
    lr: f64,
    t: u32,
    x: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
) {
    let (b1, b2) = (config.beta1, config.beta2);
    let rule = config
        .method
        .first_order()
        .expect("first_order_step runs first-order methods");
    for i in 0..x.len() {
        match rule {
            FirstOrder::Gd => x[i] -= lr * g[i],
            FirstOrder::Momentum => {
                m[i] = b1 * m[i] + g[i];
                x[i] -= lr * m[i];
            }
            FirstOrder::Nesterov => {
                m[i] = b1 * m[i] + g[i];
                x[i] -= lr * (g[i] + b1 * m[i]);
            }
            FirstOrder::Adam => {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let mh = m[i] / (1.0 - b1.powi(t as i32));
                let vh = v[i] / (1.0 - b2.powi(t as i32));
                x[i] -= lr * mh / (vh.sqrt() + config.eps);
            }
        }
    }
}

/// Runs `config` on one problem for `steps` iterations on the CPU, in f64.
pub fn run(
    problem: &ProblemSpec,
    config: &OptimizerConfig,
    lr: f64,
    steps: u32,
) -> Result<ProblemResult> {
    twin_gap_grad(problem, &problem.x0, &mut vec![0.0; problem.dim])?;
    let eval = |x: &[f64], g: &mut [f64]| problem.cpu_gap_grad(x, g).unwrap_or(f64::NAN);
    run_fn(eval, &problem.x0, config, lr, steps)
}

/// The gap and gradient of a problem in the f64 twin; user objectives have none.
fn twin_gap_grad(problem: &ProblemSpec, x: &[f64], g: &mut [f64]) -> Result<f64> {
    problem.cpu_gap_grad(x, g).ok_or_else(|| {
        Error::Problem("user objectives have no CPU twin; run them on the GPU".into())
    })
}

/// Runs a learned optimizer on one problem for `steps` steps on the CPU, in f64, with
/// the same bookkeeping as the GPU run (one evaluation per step, divergence flagged).
pub fn run_learned(model: &Model, problem: &ProblemSpec, steps: u32) -> Result<ProblemResult> {
    model.config.validate()?;
    let d = problem.dim;
    let mut st = cpu::LearnedState::new(model.config.kind, &problem.x0);
    let mut g = vec![0.0; d];
    let mut hist = vec![(f64::NAN, 0u32); steps as usize + 1];
    let mut evals = 0;
    let status = loop {
        let f = twin_gap_grad(problem, &st.x, &mut g)?;
        evals += 1;
        hist[st.t as usize] = (f, evals);
        if !(f.is_finite() && g.iter().all(|v| v.is_finite())) {
            break Status::Diverged;
        }
        if st.t >= steps {
            break Status::Done;
        }
        cpu::step(model, &mut st, f, &g);
    };
    Ok(ProblemResult::from_history(
        status, st.t, evals, &hist, st.x,
    ))
}

/// Factor on the fallback's length after the current point was kept instead of the
/// fallback's candidate: the guard's backtracking step, the hybrid's rejected fallback
/// candidate (`RETREAT` in `learned/guard.wgsl`).
pub const GUARD_RETREAT: f64 = 0.25;

/// (s, y) pairs of the guard's L-BFGS fallback (`GUARD_MEMORY` in `learned/guard.wgsl`).
pub const GUARD_MEMORY: usize = 10;

/// Runs a learned optimizer with an L-BFGS fallback on the CPU, in f64 (twin of
/// `learned/guard.wgsl` with the learned step). H is L-BFGS's over the last
/// [`GUARD_MEMORY`] pairs of accepted points, min(1, 1/‖g₀‖)·I before the first; the
/// fallback candidate is x − τ H g, and the learned state goes on from the accepted
/// point.
///
/// - [`Guarding::Guard`]: the learned candidate and the fallback are both evaluated (two
///   evaluations a step). The fallback is accepted where it is the lower finite one and
///   no higher than the current point; where it is the lower but higher than the current
///   point, or neither is finite, the current point is kept and τ shrinks by
///   [`GUARD_RETREAT`] (a backtracking step); otherwise the learned candidate is
///   accepted, uphill or not. τ is back to 1 after an accepted step.
/// - [`Guarding::Hybrid`]: one evaluation a step; the fallback proposes at steps 0, 2,
///   4, … and the learned optimizer at 1, 3, 5, … A candidate is accepted where it is
///   finite and no higher than the current point, else the point is kept; τ shrinks by
///   [`GUARD_RETREAT`] after a rejected fallback and is back to 1 after an accepted one.
pub fn run_guarded(
    model: &Model,
    problem: &ProblemSpec,
    steps: u32,
    guarding: Guarding,
) -> Result<ProblemResult> {
    model.config.validate()?;
    let d = problem.dim;
    let eval = |x: &[f64], g: &mut [f64]| {
        let f = twin_gap_grad(problem, x, g)?;
        Ok::<_, Error>((f, f.is_finite() && g.iter().all(|v| v.is_finite())))
    };
    let mut st = cpu::LearnedState::new(model.config.kind, &problem.x0);
    let mut g = vec![0.0; d];
    let (mut f, mut ok) = eval(&st.x, &mut g)?;
    let mut evals = 1;
    let mut hist = vec![(f64::NAN, 0u32); steps as usize + 1];
    hist[0] = (f, evals);
    let mut curvature = Curvature::new(Method::Lbfgs, d, GUARD_MEMORY);
    let mut prev: Option<(Vec<f64>, Vec<f64>)> = None;
    let (mut first, mut tau, mut retreat) = (1.0, 1.0, false);
    let status = loop {
        if !ok {
            break Status::Diverged;
        }
        if st.t >= steps {
            break Status::Done;
        }
        let x_t = st.x.clone();
        match &prev {
            None => first = (1.0 / dot(&g, &g).sqrt()).min(1.0),
            Some((px, pg)) if !retreat => {
                let s: Vec<f64> = (0..d).map(|i| x_t[i] - px[i]).collect();
                let y: Vec<f64> = (0..d).map(|i| g[i] - pg[i]).collect();
                curvature.update(&s, &y);
            }
            Some(_) => {}
        }
        let h_g = match &curvature {
            Curvature::Limited { pairs, .. } if pairs.is_empty() => {
                g.iter().map(|v| first * v).collect()
            }
            c => c.direction(&g).iter().map(|v| -v).collect::<Vec<f64>>(),
        };
        let x_f: Vec<f64> = (0..d).map(|i| x_t[i] - tau * h_g[i]).collect();
        let (f_t, g_t) = (f, g.clone());
        prev = Some((x_t.clone(), g.clone()));
        let proposal = st.t;
        cpu::step(model, &mut st, f, &g);
        match guarding {
            Guarding::Guard => {
                let mut g_f = vec![0.0; d];
                let (f_l, ok_l) = eval(&st.x, &mut g)?;
                let (f_f, ok_f) = eval(&x_f, &mut g_f)?;
                evals += 2;
                (f, ok, retreat) = (f_l, ok_l, false);
                let take_fallback = ok_f && (!ok_l || f_f < f_l);
                if take_fallback && f_f <= f_t {
                    (st.x, g, f, ok) = (x_f, g_f, f_f, true);
                } else if take_fallback || !ok_l {
                    (st.x, g, f, ok, retreat) = (x_t, g_t, f_t, true, true);
                }
                tau = if retreat { tau * GUARD_RETREAT } else { 1.0 };
            }
            Guarding::Hybrid => {
                let fallback = proposal.is_multiple_of(2);
                if fallback {
                    st.x = x_f;
                }
                let (f_c, ok_c) = eval(&st.x, &mut g)?;
                evals += 1;
                retreat = !(ok_c && f_c <= f_t);
                if retreat {
                    (st.x, g) = (x_t, g_t);
                } else {
                    f = f_c;
                }
                if fallback {
                    tau = if retreat { tau * GUARD_RETREAT } else { 1.0 };
                }
            }
        }
        hist[st.t as usize] = (f, evals);
    };
    Ok(ProblemResult::from_history(
        status, st.t, evals, &hist, st.x,
    ))
}

/// Runs `config` from `x0` on any objective `eval(x, ∇f) -> f − f*`.
pub fn run_fn(
    eval: impl Fn(&[f64], &mut [f64]) -> f64,
    x0: &[f64],
    config: &OptimizerConfig,
    lr: f64,
    steps: u32,
) -> Result<ProblemResult> {
    config.validate()?;
    let d = x0.len();
    let finite = |f: f64, g: &[f64]| f.is_finite() && g.iter().all(|v| v.is_finite());
    let mut x = x0.to_vec();
    let mut g = vec![0.0; d];
    let mut hist: Vec<(f64, u32)> = vec![(f64::NAN, 0); steps as usize + 1];
    let mut evals = 0u32;
    let mut iter = 0u32;
    let status;
    if config.method.has_lr() {
        let mut m = vec![0.0; d];
        let mut v = vec![0.0; d];
        loop {
            let f = eval(&x, &mut g);
            evals += 1;
            hist[iter as usize] = (f, evals);
            if !finite(f, &g) {
                status = Status::Diverged;
                break;
            }
            if iter >= steps {
                status = Status::Done;
                break;
            }
            first_order_step(config, lr, iter + 1, &mut x, &g, &mut m, &mut v);
            iter += 1;
        }
    } else {
        let mut f = eval(&x, &mut g);
        evals += 1;
        hist[0] = (f, evals);
        let mut curv = Curvature::new(config.method, d, config.memory as usize);
        if !finite(f, &g) {
            status = Status::Diverged;
        } else if dot(&g, &g).sqrt() <= config.gtol {
            status = Status::Converged;
        } else {
            let mut p: Vec<f64> = g.iter().map(|v| -v).collect();
            let a0 = (1.0 / dot(&g, &g).sqrt()).min(1.0);
            let mut ls = LineSearch::begin(f, dot(&g, &p), a0);
            let mut ge = vec![0.0; d];
            status = loop {
                let xe: Vec<f64> = (0..d).map(|i| x[i] + ls.a * p[i]).collect();
                let fe = eval(&xe, &mut ge);
                evals += 1;
                match ls.step(fe, dot(&ge, &p)) {
                    Act::Trial => continue,
                    Act::Fail => break Status::Stalled,
                    Act::Accept => {}
                }
                let s: Vec<f64> = (0..d).map(|i| xe[i] - x[i]).collect();
                let y: Vec<f64> = (0..d).map(|i| ge[i] - g[i]).collect();
                x = xe;
                g.copy_from_slice(&ge);
                f = fe;
                iter += 1;
                hist[iter as usize] = (f, evals);
                if iter >= steps {
                    break Status::Done;
                }
                let gg = dot(&g, &g);
                if gg.sqrt() <= config.gtol {
                    break Status::Converged;
                }
                curv.update(&s, &y);
                p = curv.direction(&g);
                let mut dg0 = dot(&g, &p);
                if !positive(-dg0) {
                    curv.reset(d);
                    p = g.iter().map(|v| -v).collect();
                    dg0 = -gg;
                }
                ls = LineSearch::begin(f, dg0, 1.0);
            };
        }
    }
    Ok(ProblemResult::from_history(status, iter, evals, &hist, x))
}
