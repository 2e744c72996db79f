//! Semi-implicit Euler simulation of a motion window and its adjoint, in f64: the CPU
//! twin of `shaders/motion/forward.wgsl` and `shaders/motion/adjoint.wgsl`.
//!
//! One window: K keyframes of control targets θₖ (one value per channel), linearly
//! interpolated over `steps_per_key` steps each, and an initial state x₀ = X + p₀,
//! v₀ = V + v₀' (X, V the window's initial pose and velocities; p₀, v₀' unknown root
//! offsets). The parameter vector is [θ₀ … θ_{K−1}, p₀, v₀'].
//!
//!   v_{n+1} = v_n + h M⁻¹ F(x_n, v_n, u(n)),   x_{n+1} = x_n + h v_{n+1}
//!
//! The adjoint walks back over the stored states: with v̄' = v̄_{n+1} + h x̄_{n+1} and
//! λ = h M⁻¹ v̄', x̄_n = x̄_{n+1} + (∂F/∂x)ᵀλ + ∂L/∂x_n and v̄_n = v̄' + (∂F/∂v)ᵀλ.

use super::body::{Body, Target, Term};
use super::measure::{gradient, hessian_times};
use crate::error::{Error, Result};
use glam::DVec3;
use serde::{Deserialize, Serialize};

/// Integration, ground and control timing of a window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Time step (s).
    pub dt: f64,
    pub gravity: f64,
    /// Ground penalty stiffness (N/m), softening length (m) of its softplus, and
    /// damping (N·s/m) while in contact.
    pub ground_stiffness: f64,
    pub ground_softness: f64,
    pub ground_damping: f64,
    /// Coulomb coefficient, and the sliding speed (m/s) below which friction is
    /// regularized (smooth, and stable for an explicit integrator).
    pub friction: f64,
    pub friction_speed: f64,
    /// Control keyframes per window and time steps between two keyframes.
    pub keyframes: usize,
    pub steps_per_key: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            dt: 1.0 / 600.0,
            gravity: 9.81,
            ground_stiffness: 5.0e4,
            ground_softness: 0.002,
            ground_damping: 150.0,
            friction: 0.9,
            friction_speed: 0.3,
            keyframes: 8,
            steps_per_key: 60,
        }
    }
}

/// Largest h·(rate) the explicit integrator is allowed (2 is the stability edge).
const STABLE: f64 = 1.0;

impl SimConfig {
    pub fn n_steps(&self) -> usize {
        (self.keyframes - 1) * self.steps_per_key
    }

    /// Parameters per window: K keyframes of every channel plus p₀ and v₀'.
    pub fn n_params(&self, body: &Body) -> usize {
        self.keyframes * body.n_channels() + 6
    }

    /// Keyframe k and weight w of step n: u(n) = (1 − w) θₖ + w θₖ₊₁.
    pub fn key_weight(&self, n: usize) -> (usize, f64) {
        let k = (n / self.steps_per_key).min(self.keyframes - 2);
        (
            k,
            (n - k * self.steps_per_key) as f64 / self.steps_per_key as f64,
        )
    }

    /// Checks ranges and that the time step is stable for `body`: h·ω and h·c/m of
    /// every term (at the neutral pose), of the ground and of friction (the body's
    /// weight on four foot points) stay below 1, half the stability edge. A step too large is reported, not simulated.
    pub fn validate(&self, body: &Body) -> Result<()> {
        let positive = [
            ("dt", self.dt),
            ("gravity", self.gravity + 1.0),
            ("ground_stiffness", self.ground_stiffness),
            ("ground_softness", self.ground_softness),
            ("ground_damping", self.ground_damping + 1.0),
            ("friction", self.friction + 1.0),
            ("friction_speed", self.friction_speed),
        ];
        for (name, v) in positive {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::Config(format!(
                    "simulation: {name} must be positive and finite"
                )));
            }
        }
        if self.keyframes < 2 || self.steps_per_key == 0 {
            return Err(Error::Config(
                "simulation: need at least 2 keyframes and 1 step per keyframe".into(),
            ));
        }
        let h = self.dt;
        let x = super::body::Pose::neutral().points();
        let mut worst = (0.0, String::new());
        let mut check = |rate: f64, what: String| {
            if rate > worst.0 {
                worst = (rate, what);
            }
        };
        for t in &body.terms {
            let (_, g) = gradient(&t.measure, &x);
            let inv_m: f64 = g
                .iter()
                .map(|(i, g)| g.length_squared() / body.masses[i])
                .sum();
            check(
                h * (t.kp * inv_m).sqrt(),
                format!("stiffness of {:?}", t.measure),
            );
            check(h * t.kd * inv_m, format!("damping of {:?}", t.measure));
        }
        let total: f64 = body.masses.iter().sum();
        let m_min = body.masses.iter().cloned().fold(f64::INFINITY, f64::min);
        check(
            h * (self.ground_stiffness / m_min).sqrt(),
            "ground stiffness".into(),
        );
        check(h * self.ground_damping / m_min, "ground damping".into());
        check(
            h * self.friction * total * self.gravity / (4.0 * self.friction_speed * m_min),
            "friction (raise friction_speed)".into(),
        );
        if worst.0 > STABLE {
            return Err(Error::Config(format!(
                "simulation: time step {} s is unstable for the {} (h·rate = {:.2} > {STABLE}); \
                 lower dt or soften that part",
                self.dt, worst.1, worst.0
            )));
        }
        Ok(())
    }
}

/// A window's initial pose and point velocities (before the root offsets).
#[derive(Clone, Debug, PartialEq)]
pub struct Initial {
    pub x: Vec<DVec3>,
    pub v: Vec<DVec3>,
}

/// States x_n, v_n for n = 0 ..= N, point-major within a step.
#[derive(Clone, Debug)]
pub struct Trajectory {
    pub n_points: usize,
    pub x: Vec<DVec3>,
    pub v: Vec<DVec3>,
}

impl Trajectory {
    pub fn x_at(&self, n: usize) -> &[DVec3] {
        &self.x[n * self.n_points..(n + 1) * self.n_points]
    }
    pub fn v_at(&self, n: usize) -> &[DVec3] {
        &self.v[n * self.n_points..(n + 1) * self.n_points]
    }
    /// Whether every state is finite.
    pub fn is_finite(&self) -> bool {
        self.x.iter().chain(&self.v).all(|p| p.is_finite())
    }
}

/// The controls u(n) from the parameters.
fn controls(cfg: &SimConfig, c: usize, params: &[f64], n: usize) -> Vec<f64> {
    let (k, w) = cfg.key_weight(n);
    (0..c)
        .map(|j| (1.0 - w) * params[k * c + j] + w * params[(k + 1) * c + j])
        .collect()
}

fn target(t: &Term, u: &[f64]) -> f64 {
    match t.target {
        Target::Fixed(q) => q,
        Target::Channel(c) => u[c],
    }
}

/// Ground contact force on one point: softplus penalty, damping gated by contact and
/// regularized Coulomb friction.
struct Contact {
    s: f64,
    ds: f64,
    sig: f64,
    dsig: f64,
    n: f64,
}

fn contact(cfg: &SimConfig, x: DVec3, v: DVec3) -> Contact {
    let z = -x.y / cfg.ground_softness;
    let sig = 1.0 / (1.0 + (-z).exp());
    let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
    Contact {
        s: cfg.ground_stiffness * cfg.ground_softness * softplus,
        ds: -cfg.ground_stiffness * sig,
        sig,
        dsig: -sig * (1.0 - sig) / cfg.ground_softness,
        n: (v.x * v.x + v.z * v.z + cfg.friction_speed * cfg.friction_speed).sqrt(),
    }
}

fn contact_force(cfg: &SimConfig, x: DVec3, v: DVec3) -> DVec3 {
    let c = contact(cfg, x, v);
    let ft = -cfg.friction * c.s / c.n;
    DVec3::new(ft * v.x, c.s - cfg.ground_damping * v.y * c.sig, ft * v.z)
}

/// Total force on every point.
pub fn forces(body: &Body, cfg: &SimConfig, x: &[DVec3], v: &[DVec3], u: &[f64]) -> Vec<DVec3> {
    let mut f: Vec<DVec3> = (0..x.len())
        .map(|i| {
            DVec3::new(0.0, -cfg.gravity * body.masses[i], 0.0) + contact_force(cfg, x[i], v[i])
        })
        .collect();
    for t in &body.terms {
        let (q, g) = gradient(&t.measure, x);
        let s = t.kp * (q - target(t, u)) + t.kd * g.dot(v);
        for (i, gi) in g.iter() {
            f[i] -= s * gi;
        }
    }
    f
}

/// Simulates one window from its parameters.
pub fn simulate(body: &Body, cfg: &SimConfig, params: &[f64], init: &Initial) -> Trajectory {
    let np = body.masses.len();
    let c = body.n_channels();
    let root = cfg.keyframes * c;
    let p0 = DVec3::from_slice(&params[root..root + 3]);
    let v0 = DVec3::from_slice(&params[root + 3..root + 6]);
    let n = cfg.n_steps();
    let mut traj = Trajectory {
        n_points: np,
        x: Vec::with_capacity((n + 1) * np),
        v: Vec::with_capacity((n + 1) * np),
    };
    traj.x.extend(init.x.iter().map(|p| *p + p0));
    traj.v.extend(init.v.iter().map(|p| *p + v0));
    for step in 0..n {
        let u = controls(cfg, c, params, step);
        let f = forces(body, cfg, traj.x_at(step), traj.v_at(step), &u);
        for i in 0..np {
            let v = traj.v[step * np + i] + cfg.dt * f[i] / body.masses[i];
            let x = traj.x[step * np + i] + cfg.dt * v;
            traj.v.push(v);
            traj.x.push(x);
        }
    }
    traj
}

/// Gradient of L with respect to the parameters, given ∂L/∂x_n at every step n
/// (`seeds`, laid out like `traj.x`).
pub fn adjoint(
    body: &Body,
    cfg: &SimConfig,
    params: &[f64],
    traj: &Trajectory,
    seeds: &[DVec3],
) -> Vec<f64> {
    let np = body.masses.len();
    let c = body.n_channels();
    let n_steps = cfg.n_steps();
    let h = cfg.dt;
    let mut grad = vec![0.0; cfg.n_params(body)];
    let mut xb: Vec<DVec3> = seeds[n_steps * np..].to_vec();
    let mut vb = vec![DVec3::ZERO; np];
    for n in (0..n_steps).rev() {
        let x = traj.x_at(n);
        let v = traj.v_at(n);
        let u = controls(cfg, c, params, n);
        let vp: Vec<DVec3> = (0..np).map(|i| vb[i] + h * xb[i]).collect();
        let lam: Vec<DVec3> = (0..np).map(|i| h * vp[i] / body.masses[i]).collect();
        for i in 0..np {
            xb[i] += seeds[n * np + i];
        }
        vb.copy_from_slice(&vp);
        let mut ub = vec![0.0; c];
        for t in &body.terms {
            let (q, g) = gradient(&t.measure, x);
            let a = g.dot(&lam);
            let s = t.kp * (q - target(t, &u)) + t.kd * g.dot(v);
            // H is linear, so a kd H v + s H λ is one product along a kd v + s λ.
            let dir: Vec<DVec3> = (0..np).map(|i| a * t.kd * v[i] + s * lam[i]).collect();
            let hd = hessian_times(&t.measure, x, &dir);
            for (i, gi) in g.iter() {
                xb[i] -= a * t.kp * gi;
                vb[i] -= a * t.kd * gi;
            }
            for (i, hi) in hd.iter() {
                xb[i] -= hi;
            }
            if let Target::Channel(j) = t.target {
                ub[j] += a * t.kp;
            }
        }
        for i in 0..np {
            let (xg, vg) = contact_vjp(cfg, x[i], v[i], lam[i]);
            xb[i] += xg;
            vb[i] += vg;
        }
        let (k, w) = cfg.key_weight(n);
        for j in 0..c {
            grad[k * c + j] += (1.0 - w) * ub[j];
            grad[(k + 1) * c + j] += w * ub[j];
        }
    }
    let root = cfg.keyframes * c;
    for i in 0..np {
        for a in 0..3 {
            grad[root + a] += xb[i][a];
            grad[root + 3 + a] += vb[i][a];
        }
    }
    grad
}

/// (∂F/∂x)ᵀλ and (∂F/∂v)ᵀλ of one point's contact force.
fn contact_vjp(cfg: &SimConfig, x: DVec3, v: DVec3, lam: DVec3) -> (DVec3, DVec3) {
    let c = contact(cfg, x, v);
    let lt = lam.x * v.x + lam.z * v.z;
    let dy = lam.y * (c.ds - cfg.ground_damping * v.y * c.dsig) - cfg.friction * lt / c.n * c.ds;
    let k = -cfg.friction * c.s / c.n;
    let r = lt / (c.n * c.n);
    let xg = DVec3::new(0.0, dy, 0.0);
    let vg = DVec3::new(
        k * (lam.x - r * v.x),
        -lam.y * cfg.ground_damping * c.sig,
        k * (lam.z - r * v.z),
    );
    (xg, vg)
}
