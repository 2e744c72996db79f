//! Motion reconstruction problems (docs/DESIGN.md §5): ground truth by simulating the body
//! from a clip's poses, 2d observations from a random camera with pixel noise and
//! dropped joints, the objective (robust reprojection error plus regularizers) and the
//! initialization a user would have (a noisy kinematic 3d estimate). The objective's
//! f64 twin is here; the GPU version is `shaders/motion/loss.wgsl` and `finish.wgsl`.

use super::body::{Body, Gains, Measure, Pose, CHEST, L_HIP, N_POINTS, R_HIP};
use super::clip::Clip;
use super::sim::{adjoint, simulate, Initial, SimConfig, Trajectory};
use crate::error::{Error, Result};
use glam::{DMat3, DVec3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// Everything that defines the task besides the motions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskConfig {
    pub sim: SimConfig,
    pub gains: Gains,
    /// Simulation steps between two observed frames (20 at 600 Hz: 30 frames/s).
    pub obs_every: usize,
    /// Camera distance from the window's mean root (m) and height (m), focal length
    /// (px); the image is 1000 × 1000 px around the principal point.
    pub camera_distance: (f64, f64),
    pub camera_height: (f64, f64),
    pub focal: f64,
    /// Pixel noise (standard deviation, px) and probability that a joint is not seen.
    pub pixel_noise: f64,
    pub drop_prob: f64,
    /// Scale (px) of the robust reprojection penalty s² ln(1 + r²/s²).
    pub robust_scale: f64,
    /// Weights of the smoothness (squared keyframe differences) and joint-limit
    /// (angle measures outside [−1, 1]) regularizers.
    pub smooth_weight: f64,
    pub limit_weight: f64,
    /// Noise of the kinematic initialization: joint rotations (rad) and root (m).
    pub init_angle_noise: f64,
    pub init_root_noise: f64,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            sim: SimConfig::default(),
            gains: Gains::default(),
            obs_every: 20,
            camera_distance: (4.0, 6.0),
            camera_height: (0.8, 1.8),
            focal: 1000.0,
            pixel_noise: 2.0,
            drop_prob: 0.1,
            robust_scale: 10.0,
            smooth_weight: 0.1,
            limit_weight: 100.0,
            init_angle_noise: 0.15,
            init_root_noise: 0.05,
        }
    }
}

impl TaskConfig {
    pub fn validate(&self, body: &Body) -> Result<()> {
        self.sim.validate(body)?;
        if self.obs_every == 0 || !self.sim.n_steps().is_multiple_of(self.obs_every) {
            return Err(Error::Config(format!(
                "motion task: obs_every ({}) must divide the window's {} steps",
                self.obs_every,
                self.sim.n_steps()
            )));
        }
        let ranges = [
            ("camera_distance", self.camera_distance),
            ("camera_height", self.camera_height),
        ];
        for (name, (lo, hi)) in ranges {
            if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
                return Err(Error::Config(format!(
                    "motion task: {name} must be a range (lo, hi) with 0 < lo ≤ hi"
                )));
            }
        }
        if !(0.0..1.0).contains(&self.drop_prob) || self.focal <= 0.0 || self.robust_scale <= 0.0 {
            return Err(Error::Config(
                "motion task: need 0 ≤ drop_prob < 1, focal > 0 and robust_scale > 0".into(),
            ));
        }
        Ok(())
    }

    /// Observed frames per window (state 0 included).
    pub fn n_obs(&self) -> usize {
        self.sim.n_steps() / self.obs_every + 1
    }

    /// Window length in seconds.
    pub fn window_seconds(&self) -> f64 {
        self.sim.n_steps() as f64 * self.sim.dt
    }
}

/// A pinhole camera: p_cam = R (x − c); u = f p.x / p.z, v = f p.y / p.z (px from the
/// principal point; camera y points down in the image).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Camera {
    pub rot: DMat3,
    pub centre: DVec3,
    pub focal: f64,
}

impl Camera {
    /// A camera at `centre` looking at `target`, upright.
    pub fn looking_at(centre: DVec3, target: DVec3, focal: f64) -> Self {
        let fwd = (target - centre).normalize();
        let right = fwd.cross(DVec3::Y).normalize();
        let down = fwd.cross(right);
        Self {
            rot: DMat3::from_cols(right, down, fwd).transpose(),
            centre,
            focal,
        }
    }

    pub fn project(&self, x: DVec3) -> (f64, f64) {
        let p = self.rot * (x - self.centre);
        (self.focal * p.x / p.z, self.focal * p.y / p.z)
    }

    /// Gradient with respect to x of a·u + b·v.
    pub fn project_vjp(&self, x: DVec3, a: f64, b: f64) -> DVec3 {
        let p = self.rot * (x - self.centre);
        let dp = DVec3::new(a / p.z, b / p.z, -(a * p.x + b * p.y) / (p.z * p.z)) * self.focal;
        self.rot.transpose() * dp
    }

    /// Flat f32 layout of the GPU kernels: rows of R, centre, focal.
    pub fn to_gpu(&self) -> [f32; 16] {
        let r = self.rot.transpose();
        let mut out = [0f32; 16];
        for (k, c) in [r.x_axis, r.y_axis, r.z_axis, self.centre]
            .iter()
            .enumerate()
        {
            out[4 * k..4 * k + 3].copy_from_slice(&c.to_array().map(|v| v as f32));
        }
        out[15] = self.focal as f32;
        out
    }
}

/// One reconstruction problem: a motion window seen by one camera.
#[derive(Clone, Debug)]
pub struct Window {
    /// The clip it comes from and its start time there.
    pub source: String,
    pub start: f64,
    /// Ground-truth parameters and initial state, and the simulated truth.
    pub true_params: Vec<f64>,
    pub true_init: Initial,
    pub truth: Trajectory,
    /// What the optimizer starts from: the kinematic estimate's parameters and state.
    pub x0: Vec<f64>,
    pub init: Initial,
    pub camera: Camera,
    /// Per observed frame and point: (u, v, weight); weight 0 where not seen.
    pub obs: Vec<[f64; 3]>,
    /// The clip's own (kinematic) body points at each observed frame, which the
    /// simulated truth should follow ([`Window::truth_vs_clip`]).
    pub clip_points: Vec<DVec3>,
}

/// Times of the initial velocity's difference quotient at t: t ± 1/120 s, one-sided at
/// the clip's ends (a window may start on its first frame), and the time they span.
fn stencil(clip: &Clip, t: f64) -> ([f64; 3], f64) {
    let h: f64 = 1.0 / 120.0;
    let (back, ahead) = (h.min(t), h.min(clip.duration() - t));
    ([t - back, t, t + ahead], back + ahead)
}

impl Window {
    /// How far the simulated truth is from the clip that drives it, over the observed
    /// frames: the mean distance of a body point from the clip's (m), and the largest
    /// angle between the two trunks (hips' midpoint to chest, rad). The clip is what a
    /// reconstruction should recover, so the simulation should track it closely.
    pub fn truth_vs_clip(&self, cfg: &TaskConfig) -> (f64, f64) {
        let np = N_POINTS;
        let (mut dist, mut tilt) = (0.0, 0.0f64);
        let frames = self.clip_points.len() / np;
        for j in 0..frames {
            let sim = &self.truth.x[j * cfg.obs_every * np..][..np];
            let kin = &self.clip_points[j * np..][..np];
            dist += sim
                .iter()
                .zip(kin)
                .map(|(a, b)| (*a - *b).length())
                .sum::<f64>()
                / np as f64;
            let trunk = |p: &[DVec3]| p[CHEST] - 0.5 * (p[R_HIP] + p[L_HIP]);
            tilt = tilt.max(trunk(sim).angle_between(trunk(kin)));
        }
        (dist / frames as f64, tilt)
    }
}

/// Positions and velocities of the body points of poses at the times of [`stencil`].
fn kinematic_state(poses: &[Pose; 3], gap: f64) -> Initial {
    let [a, b, c] = poses.map(|p| p.points());
    Initial {
        x: b.to_vec(),
        v: (0..N_POINTS).map(|i| (c[i] - a[i]) / gap).collect(),
    }
}

/// Parameters that hold the clip's pose at every keyframe (root offsets zero).
fn params_of(body: &Body, cfg: &TaskConfig, pose_at: impl Fn(f64) -> Pose, t0: f64) -> Vec<f64> {
    let key = cfg.sim.steps_per_key as f64 * cfg.sim.dt;
    let mut p = Vec::with_capacity(cfg.sim.n_params(body));
    for k in 0..cfg.sim.keyframes {
        p.extend(body.channel_values(&pose_at(t0 + k as f64 * key).points()));
    }
    p.extend([0.0; 6]);
    p
}

/// A pose with joint and root noise, the same noise for nearby times (`seed`).
fn noisy(pose: &Pose, cfg: &TaskConfig, seed: u64) -> Pose {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut p = pose.perturbed(&mut rng, cfg.init_angle_noise);
    let n = Normal::new(0.0, cfg.init_root_noise).expect("finite noise");
    p.root += DVec3::new(n.sample(&mut rng), n.sample(&mut rng), n.sample(&mut rng));
    p
}

impl Window {
    /// Cuts the window starting at `start` from `clip`, simulates the truth, places a
    /// random camera and observes; all draws from `seed`.
    pub fn new(body: &Body, cfg: &TaskConfig, clip: &Clip, start: f64, seed: u64) -> Result<Self> {
        let span = cfg.window_seconds();
        if start < 0.0 || start + span > clip.duration() + 1e-9 {
            return Err(Error::Problem(format!(
                "clip '{}' lasts {:.2} s; a window of {span:.2} s cannot start at {start:.2} s",
                clip.name,
                clip.duration()
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let true_params = params_of(body, cfg, |t| clip.sample(t), start);
        let (times, gap) = stencil(clip, start);
        let true_init = kinematic_state(&times.map(|t| clip.sample(t)), gap);
        let truth = simulate(body, &cfg.sim, &true_params, &true_init);
        if !truth.is_finite() {
            return Err(Error::Problem(format!(
                "clip '{}' at {start:.2} s: the ground-truth simulation diverged",
                clip.name
            )));
        }
        // Camera around the window's mean root, looking at it.
        let np = N_POINTS;
        let n = cfg.sim.n_steps();
        let mean: DVec3 = (0..=n)
            .map(|s| 0.5 * (truth.x[s * np + R_HIP] + truth.x[s * np + L_HIP]))
            .sum::<DVec3>()
            / (n + 1) as f64;
        let az = rng.random_range(0.0..std::f64::consts::TAU);
        let dist = rng.random_range(cfg.camera_distance.0..=cfg.camera_distance.1);
        let height = rng.random_range(cfg.camera_height.0..=cfg.camera_height.1);
        let centre = DVec3::new(mean.x + dist * az.cos(), height, mean.z + dist * az.sin());
        let camera = Camera::looking_at(centre, DVec3::new(mean.x, 0.9, mean.z), cfg.focal);
        let pix = Normal::new(0.0, cfg.pixel_noise).expect("finite noise");
        let mut obs = Vec::with_capacity(cfg.n_obs() * np);
        for j in 0..cfg.n_obs() {
            for i in 0..np {
                let (u, v) = camera.project(truth.x[j * cfg.obs_every * np + i]);
                let seen = !rng.random_bool(cfg.drop_prob);
                obs.push([
                    u + pix.sample(&mut rng),
                    v + pix.sample(&mut rng),
                    if seen { 1.0 } else { 0.0 },
                ]);
            }
        }
        let clip_points: Vec<DVec3> = (0..cfg.n_obs())
            .flat_map(|j| {
                let t = start + (j * cfg.obs_every) as f64 * cfg.sim.dt;
                clip.sample(t).points()
            })
            .collect();
        // The kinematic estimate: the clip with smooth noise (one noise draw per
        // keyframe, interpolated in between by the simulation's own interpolation).
        let base: u64 = rng.random();
        let key = cfg.sim.steps_per_key as f64 * cfg.sim.dt;
        let noisy_at = |t: f64| {
            let k = ((t - start) / key).round().max(0.0) as u64;
            noisy(&clip.sample(t), cfg, base.wrapping_add(k))
        };
        let x0 = params_of(body, cfg, noisy_at, start);
        let init = kinematic_state(&times.map(|t| noisy(&clip.sample(t), cfg, base)), gap);
        Ok(Self {
            source: clip.name.clone(),
            start,
            true_params,
            true_init,
            truth,
            x0,
            init,
            camera,
            obs,
            clip_points,
        })
    }
}

/// Where a window's motion comes from: a procedural family (a fresh clip per window)
/// or a fixed clip.
#[derive(Clone, Debug)]
pub enum Source {
    Family(super::clip::Family),
    Clip(Clip),
}

/// How far into a clip windows start where the clip has room. The start state needs
/// the clip only 1/120 s around the start ([`stencil`]), so a clip one window long is
/// enough; the lead-in keeps the windows of every seed (training runs, the README's
/// results) what they were when it was a requirement.
const LEAD_IN: f64 = 0.1;

impl Source {
    /// A window at a random start, every draw from `seed`.
    pub fn window(&self, body: &Body, cfg: &TaskConfig, seed: u64) -> Result<Window> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let span = cfg.window_seconds();
        let clip = match self {
            Source::Family(f) => f.clip(&mut rng, span + 1.2),
            Source::Clip(c) => c.clone(),
        };
        let room = clip.duration() - span;
        if room < -1e-9 {
            return Err(Error::Config(format!(
                "clip '{}' lasts {:.3} s from its first frame to its last, shorter than a \
                 {span:.3} s window; use a longer clip or a shorter window (sim.keyframes)",
                clip.name,
                clip.duration()
            )));
        }
        let room = room.max(0.0);
        let lead = LEAD_IN.min(room);
        let start = lead + rng.random_range(0.0..=room - lead);
        Window::new(body, cfg, &clip, start, rng.random())
    }
}

/// Whether channel c of `body` is an angle measure in [−1, 1] (limits apply).
pub fn bounded_channels(body: &Body) -> Vec<bool> {
    let mut out = vec![false; body.n_channels()];
    for t in &body.terms {
        if let super::body::Target::Channel(c) = t.target {
            out[c] = !matches!(t.measure, Measure::Midpoint { .. });
        }
    }
    out
}

/// The reprojection term of one window at its trajectory: value and ∂/∂xₙ (seeds).
pub fn data_term(cfg: &TaskConfig, w: &Window, traj: &Trajectory) -> (f64, Vec<DVec3>) {
    let np = N_POINTS;
    let s2 = cfg.robust_scale * cfg.robust_scale;
    let seen: f64 = w.obs.iter().map(|o| o[2]).sum::<f64>().max(1.0);
    let mut seeds = vec![DVec3::ZERO; traj.x.len()];
    let mut value = 0.0;
    for j in 0..cfg.n_obs() {
        for i in 0..np {
            let o = w.obs[j * np + i];
            let k = j * cfg.obs_every * np + i;
            let (u, v) = w.camera.project(traj.x[k]);
            let (du, dv) = (u - o[0], v - o[1]);
            let r2 = du * du + dv * dv;
            value += o[2] * s2 * (r2 / s2).ln_1p() / seen;
            let dr2 = o[2] / (1.0 + r2 / s2) / seen;
            seeds[k] = w
                .camera
                .project_vjp(traj.x[k], 2.0 * dr2 * du, 2.0 * dr2 * dv);
        }
    }
    (value, seeds)
}

/// The regularizers of one window's parameters: value, and their gradient added to
/// `grad`.
pub fn regularizer(cfg: &TaskConfig, bounded: &[bool], params: &[f64], grad: &mut [f64]) -> f64 {
    let c = bounded.len();
    let mut value = 0.0;
    for k in 0..cfg.sim.keyframes {
        for j in 0..c {
            let i = k * c + j;
            if k + 1 < cfg.sim.keyframes {
                let d = params[i + c] - params[i];
                value += cfg.smooth_weight * d * d;
                grad[i] -= 2.0 * cfg.smooth_weight * d;
                grad[i + c] += 2.0 * cfg.smooth_weight * d;
            }
            let over = params[i].abs() - 1.0;
            if bounded[j] && over > 0.0 {
                value += cfg.limit_weight * over * over;
                grad[i] += 2.0 * cfg.limit_weight * over * params[i].signum();
            }
        }
    }
    value
}

/// The whole objective and its gradient on the CPU (f64 twin of the GPU evaluation).
pub fn objective(body: &Body, cfg: &TaskConfig, w: &Window, params: &[f64]) -> (f64, Vec<f64>) {
    let traj = simulate(body, &cfg.sim, params, &w.init);
    let (data, seeds) = data_term(cfg, w, &traj);
    let mut grad = adjoint(body, &cfg.sim, params, &traj, &seeds);
    let reg = regularizer(cfg, &bounded_channels(body), params, &mut grad);
    (data + reg, grad)
}

/// Mean per-joint position error (m) over the observed frames, and the same after the
/// best similarity transform per frame (Procrustes-aligned).
pub fn mpjpe(cfg: &TaskConfig, truth: &Trajectory, est: &Trajectory) -> (f64, f64) {
    let np = N_POINTS;
    let (mut raw, mut aligned) = (0.0, 0.0);
    let frames = cfg.n_obs();
    for j in 0..frames {
        let k = j * cfg.obs_every;
        let a = truth.x_at(k);
        let b = est.x_at(k);
        raw += (0..np).map(|i| (a[i] - b[i]).length()).sum::<f64>() / np as f64;
        let b2 = procrustes(a, b);
        aligned += (0..np).map(|i| (a[i] - b2[i]).length()).sum::<f64>() / np as f64;
    }
    (raw / frames as f64, aligned / frames as f64)
}

/// `b` moved onto `a` by the best rotation, scale and translation (Umeyama).
fn procrustes(a: &[DVec3], b: &[DVec3]) -> Vec<DVec3> {
    let n = a.len() as f64;
    let ma = a.iter().sum::<DVec3>() / n;
    let mb = b.iter().sum::<DVec3>() / n;
    let mut cov = DMat3::ZERO;
    let mut var_b = 0.0;
    for (p, q) in a.iter().zip(b) {
        let (p, q) = (*p - ma, *q - mb);
        cov += DMat3::from_cols(p * q.x, p * q.y, p * q.z);
        var_b += q.length_squared();
    }
    let (u, s, v) = svd3(cov / n);
    let mut d = DVec3::ONE;
    if (u * v.transpose()).determinant() < 0.0 {
        d.z = -1.0;
    }
    let rot = u * DMat3::from_diagonal(d) * v.transpose();
    let scale = (s * d).element_sum() / (var_b / n).max(1e-12);
    b.iter().map(|q| ma + scale * (rot * (*q - mb))).collect()
}

/// SVD of a 3×3 matrix by Jacobi sweeps on AᵀA: A = U diag(s) Vᵀ.
fn svd3(a: DMat3) -> (DMat3, DVec3, DMat3) {
    let mut ata = a.transpose() * a;
    let mut v = DMat3::IDENTITY;
    for _ in 0..30 {
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            let apq = ata.col(q)[p];
            if apq.abs() < 1e-300 {
                continue;
            }
            let (app, aqq) = (ata.col(p)[p], ata.col(q)[q]);
            let theta = 0.5 * (2.0 * apq).atan2(aqq - app);
            let (s, c) = theta.sin_cos();
            let mut j = DMat3::IDENTITY;
            j.col_mut(p)[p] = c;
            j.col_mut(q)[q] = c;
            j.col_mut(q)[p] = s;
            j.col_mut(p)[q] = -s;
            ata = j.transpose() * ata * j;
            v *= j;
        }
    }
    let s = DVec3::new(ata.x_axis.x, ata.y_axis.y, ata.z_axis.z)
        .max(DVec3::ZERO)
        .map(f64::sqrt);
    let mut u_cols = [DVec3::ZERO; 3];
    for k in 0..3 {
        let av = a * v.col(k);
        u_cols[k] = if s[k] > 1e-12 {
            av / s[k]
        } else {
            // Complete an orthonormal basis for a rank-deficient A.
            let other = u_cols[(k + 1) % 3].cross(u_cols[(k + 2) % 3]);
            other.normalize_or(DVec3::X)
        };
    }
    (DMat3::from_cols(u_cols[0], u_cols[1], u_cols[2]), s, v)
}
