//! A batch of problems: what each one is (function, dimension, shift, rotation, scale,
//! start point), how it is sampled, and how the batch is laid out on the GPU.
//!
//! Problem p minimizes f(x) = scale · F(z* + R (x − c) / w) where F is a benchmark
//! function with minimizer z*, R an orthogonal matrix (identity unless rotated), c the
//! problem's minimizer in x-space and w its width (x-space is z-space stretched by w).
//! With no shift, no rotation and w = 1, c = z* and x = z: the textbook function.

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::functions::{Function, MAX_DIM};
use crate::user_objective::UserObjective;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::sync::Arc;

/// Kernel id of a user objective (`FUNC_USER` in `shaders/shared/problem.wgsl`): the
/// one after the benchmark functions'.
pub const FUNC_USER: u32 = Function::ALL.len() as u32;

/// What a problem minimizes.
#[derive(Clone, Debug)]
pub enum Objective {
    Builtin(Function),
    /// A user WGSL objective (see `assets/objectives/`); one per batch.
    User(Arc<UserObjective>),
    /// f and ∇f come from another [`crate::objective::Evaluator`] (the motion task),
    /// with f* = 0; the name is for results.
    Pipeline(String),
}

impl Objective {
    pub fn name(&self) -> String {
        match self {
            Objective::Builtin(f) => f.name().to_string(),
            Objective::User(u) => u.name.clone(),
            Objective::Pipeline(n) => n.clone(),
        }
    }

    /// Kernel id: the function's, [`FUNC_USER`] for user objectives, one past it for
    /// pipelines (no kernel of their own).
    pub fn id(&self) -> u32 {
        match self {
            Objective::Builtin(f) => f.id(),
            Objective::User(_) => FUNC_USER,
            Objective::Pipeline(_) => FUNC_USER + 1,
        }
    }

    /// Known minimum F* of the unscaled function.
    pub fn f_star(&self, d: usize) -> f64 {
        match self {
            Objective::Builtin(f) => f.f_star(d),
            Objective::User(u) => u.f_star,
            Objective::Pipeline(_) => 0.0,
        }
    }

    pub(crate) fn minimizer(&self, i: usize, d: usize) -> f64 {
        match self {
            Objective::Builtin(f) => f.minimizer(i, d),
            Objective::User(_) | Objective::Pipeline(_) => 0.0,
        }
    }

    fn start_domain(&self, d: usize) -> (f64, f64) {
        match self {
            Objective::Builtin(f) => f.start_domain(d),
            Objective::User(u) => u.domain,
            Objective::Pipeline(_) => (-1.0, 1.0),
        }
    }
}

/// How problems are drawn around a benchmark function.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleOptions {
    /// Shift of the minimizer, as a fraction of the start domain's half-width.
    pub shift: f64,
    /// Apply a random orthogonal rotation (couples the coordinates).
    pub rotate: bool,
    /// log10 of the objective scale is drawn uniformly from this range.
    pub log10_scale: (f64, f64),
    /// log10 of the width w (x = w·z around the origin) is drawn uniformly from this
    /// range: how far apart start and minimizer are, which a scale-free optimizer must
    /// find out for itself, since its inputs are normalized per problem.
    pub log10_width: (f64, f64),
    /// Start points are drawn from this fraction (0, 1] of the function's start domain,
    /// around its centre.
    pub start_fraction: f64,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            shift: 0.0,
            rotate: false,
            log10_scale: (0.0, 0.0),
            log10_width: (0.0, 0.0),
            start_fraction: 1.0,
        }
    }
}

/// One problem of a batch.
#[derive(Clone, Debug)]
pub struct ProblemSpec {
    pub objective: Objective,
    pub dim: usize,
    pub scale: f64,
    /// Width w: f(x) = scale · F(z* + R (x − center) / w).
    pub width: f64,
    /// Minimizer in x-space.
    pub center: Vec<f64>,
    /// Row-major d×d orthogonal matrix, or None for the identity.
    pub rotation: Option<Vec<f64>>,
    /// Start point.
    pub x0: Vec<f64>,
}

impl ProblemSpec {
    /// Draws a problem of `objective` at dimension `d`: a start point uniform in the
    /// function's start domain (in z-space), and shift, rotation and scale as `opts` say.
    pub fn sample(objective: Objective, d: usize, opts: &SampleOptions, seed: u64) -> Result<Self> {
        if let Objective::Builtin(f) = &objective {
            f.check_dim(d).map_err(Error::Problem)?;
        } else if d == 0 || d > MAX_DIM {
            return Err(Error::Problem(format!(
                "dimension {d} is out of range 1..={MAX_DIM}"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let domain = objective.start_domain(d);
        let half = 0.5 * (domain.1 - domain.0);
        let (lo, hi) = match domain {
            (lo, hi) if opts.start_fraction < 1.0 => {
                let (mid, h) = (0.5 * (lo + hi), half * opts.start_fraction);
                (mid - h, mid + h)
            }
            domain => domain,
        };
        let z0: Vec<f64> = (0..d).map(|_| rng.random_range(lo..=hi)).collect();
        let user = matches!(objective, Objective::User(_));
        let center: Vec<f64> = (0..d)
            .map(|i| {
                let shift = if user || opts.shift == 0.0 {
                    0.0
                } else {
                    opts.shift * half * rng.random_range(-1.0..=1.0)
                };
                objective.minimizer(i, d) + shift
            })
            .collect();
        let rotation = (opts.rotate && !user && d > 1).then(|| random_orthogonal(d, &mut rng));
        // A fixed value draws nothing, so adding an option leaves older draws as they were.
        let mut log_uniform = |(a, b): (f64, f64)| {
            if a == b {
                10f64.powf(a)
            } else {
                10f64.powf(rng.random_range(a.min(b)..=a.max(b)))
            }
        };
        let scale = log_uniform(opts.log10_scale);
        let width = if user {
            1.0
        } else {
            log_uniform(opts.log10_width)
        };
        let center: Vec<f64> = center.iter().map(|c| width * c).collect();
        // x0 = c + w Rᵀ (z0 − z*), so that z(x0) = z0.
        let dz: Vec<f64> = (0..d).map(|i| z0[i] - objective.minimizer(i, d)).collect();
        let x0 = (0..d)
            .map(|j| {
                let rdz = match &rotation {
                    Some(r) => (0..d).map(|i| r[i * d + j] * dz[i]).sum(),
                    None => dz[j],
                };
                center[j] + width * rdz
            })
            .collect();
        let spec = Self {
            objective,
            dim: d,
            scale,
            width,
            center,
            rotation,
            x0,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what a hand-made problem could get wrong.
    pub fn validate(&self) -> Result<()> {
        let name = self.objective.name();
        if let Objective::Builtin(f) = &self.objective {
            f.check_dim(self.dim).map_err(Error::Problem)?;
        }
        let d = self.dim;
        if self.x0.len() != d || self.center.len() != d {
            return Err(Error::Problem(format!(
                "{name}: start point has {} and center {} coordinates, expected {d}",
                self.x0.len(),
                self.center.len()
            )));
        }
        if let Some(i) = self.x0.iter().position(|v| !v.is_finite()) {
            return Err(Error::Problem(format!(
                "{name} (d = {d}): start point coordinate {i} is {}; start points must be finite",
                self.x0[i]
            )));
        }
        for (what, v) in [("scale", self.scale), ("width", self.width)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::Problem(format!(
                    "{name}: {what} must be positive and finite, got {v}"
                )));
            }
        }
        if let Some(r) = &self.rotation {
            if r.len() != d * d {
                return Err(Error::Problem(format!(
                    "{name}: rotation has {} entries, expected {}",
                    r.len(),
                    d * d
                )));
            }
        }
        Ok(())
    }

    /// Scaled f* of this problem (what `gap + f_star` reports as f).
    pub fn f_star(&self) -> f64 {
        self.scale * self.objective.f_star(self.dim)
    }

    /// CPU twin of the objective stage: the gap f(x) − f* and ∇f at `x`, in f64.
    /// None for user objectives, which exist only as WGSL.
    pub fn cpu_gap_grad(&self, x: &[f64], grad: &mut [f64]) -> Option<f64> {
        let Objective::Builtin(func) = &self.objective else {
            return None;
        };
        let d = self.dim;
        let dx: Vec<f64> = (0..d)
            .map(|j| (x[j] - self.center[j]) / self.width)
            .collect();
        let e: Vec<f64> = match &self.rotation {
            Some(r) => (0..d)
                .map(|i| (0..d).map(|j| r[i * d + j] * dx[j]).sum())
                .collect(),
            None => dx,
        };
        let mut gz = vec![0.0; d];
        let gap = func.gap_grad(&e, &mut gz);
        for j in 0..d {
            grad[j] = self.scale / self.width
                * match &self.rotation {
                    Some(r) => (0..d).map(|i| r[i * d + j] * gz[i]).sum(),
                    None => gz[j],
                };
        }
        Some(self.scale * gap)
    }
}

/// A Haar-random orthogonal matrix (QR of a Gaussian matrix with the sign fix), row-major.
fn random_orthogonal(d: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut cols: Vec<Vec<f64>> = (0..d)
        .map(|_| {
            (0..d)
                .map(|_| rng.sample::<f64, _>(StandardNormal))
                .collect()
        })
        .collect();
    // Modified Gram–Schmidt on the columns, twice for orthogonality to round-off.
    for _ in 0..2 {
        for k in 0..d {
            for j in 0..k {
                let dot: f64 = (0..d).map(|i| cols[k][i] * cols[j][i]).sum();
                for i in 0..d {
                    cols[k][i] -= dot * cols[j][i];
                }
            }
            let norm = cols[k].iter().map(|v| v * v).sum::<f64>().sqrt();
            for v in cols[k].iter_mut() {
                *v /= norm;
            }
        }
    }
    let mut r = vec![0.0; d * d];
    for (j, col) in cols.iter().enumerate() {
        for i in 0..d {
            r[i * d + j] = col[i];
        }
    }
    r
}

/// Floats a d×d rotation takes on the GPU: rows and columns padded with zeros to a
/// multiple of 4, so the objective kernel reads rows as vec4s (4x fewer loads, which
/// are what its rotation products cost on lavapipe).
pub fn rotation_len(d: usize) -> usize {
    d.next_multiple_of(4).pow(2)
}

/// The row-major d×d rotation `r` in the GPU's padded layout ([`rotation_len`]).
fn padded_rotation(r: &[f64], d: usize) -> Vec<f32> {
    let stride = d.next_multiple_of(4);
    let mut out = vec![0f32; rotation_len(d)];
    for i in 0..d {
        for j in 0..d {
            out[i * stride + j] = r[i * d + j] as f32;
        }
    }
    out
}

/// GPU-side description of one problem; mirrors `struct Problem` in
/// `shaders/shared/problem.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ProblemDesc {
    pub offset: u32,
    pub dim: u32,
    pub func: u32,
    pub rot: u32,
    pub scale: f32,
    pub inv_width: f32,
    pub pad: [u32; 2],
}

/// A batch of problems laid out on the GPU: coordinates back to back (ragged), so
/// problems of different dimensions share one batch without padding.
pub struct GpuProblems {
    pub n_problems: u32,
    /// Σ d_p.
    pub n_total: u32,
    pub offsets: Vec<u32>,
    pub dims: Vec<u32>,
    pub desc: wgpu::Buffer,
    pub center: wgpu::Buffer,
    pub rot: wgpu::Buffer,
    /// Start points, ragged.
    pub x0: wgpu::Buffer,
    /// The kernel id shared by every problem, if they share one.
    pub single_func: Option<u32>,
    /// The user objective the batch was made with, if any: [`GpuProblems::write_problem`]
    /// can put in problems of that objective only (the stage that binds the batch was
    /// compiled with it).
    user: Option<Arc<UserObjective>>,
    /// Start of each problem's d×d rotation slot when the batch was made with
    /// [`GpuProblems::with_slots`] (meta-training redraws problems in place); all
    /// `u32::MAX` when it was made without room for rotations.
    rot_slots: Vec<u32>,
}

impl GpuProblems {
    /// The largest problem's dimension.
    pub fn max_dim(&self) -> u32 {
        self.dims.iter().copied().max().unwrap_or(1)
    }

    /// Uploads `problems`; all user objectives in one batch must be the same one.
    pub fn new(ctx: &GpuContext, problems: &[ProblemSpec]) -> Result<Self> {
        Self::build(ctx, problems, None)
    }

    /// Like [`GpuProblems::new`], with no pipeline specialised to one function, so
    /// [`GpuProblems::write_problem`] can later put any problem of the same dimension in
    /// a slot; with `rotations`, room for a d×d rotation in every slot (without, a
    /// rotated problem is refused: tasks that are never rotated, such as motion windows
    /// of hundreds of unknowns, do not pay d² floats per particle).
    pub fn with_slots(ctx: &GpuContext, problems: &[ProblemSpec], rotations: bool) -> Result<Self> {
        Self::build(ctx, problems, Some(rotations))
    }

    /// The GPU description of `p` at `offset` with its rotation at `rot` (if rotated).
    fn desc_of(p: &ProblemSpec, offset: u32, rot: u32) -> ProblemDesc {
        ProblemDesc {
            offset,
            dim: p.dim as u32,
            func: p.objective.id(),
            rot: if p.rotation.is_some() { rot } else { u32::MAX },
            scale: p.scale as f32,
            inv_width: (1.0 / p.width) as f32,
            pad: [0; 2],
        }
    }

    /// Replaces problem `slot` with `spec` (same dimension; a user objective only in a
    /// batch made with one) through queued writes, which land before the next submit.
    pub fn write_problem(&self, ctx: &GpuContext, slot: usize, spec: &ProblemSpec) -> Result<()> {
        spec.validate()?;
        let (off, d) = (self.offsets[slot], self.dims[slot] as usize);
        let foreign = match &spec.objective {
            Objective::User(u) => !self.user.as_ref().is_some_and(|v| Arc::ptr_eq(v, u)),
            _ => false,
        };
        let rot = self.rot_slots.get(slot).copied();
        if spec.rotation.is_some() && rot == Some(u32::MAX) {
            return Err(Error::Problem(format!(
                "slot {slot} was made without room for a rotation; cannot put a rotated {} \
                 there",
                spec.objective.name()
            )));
        }
        if rot.is_none() || spec.dim != d || foreign {
            return Err(Error::Problem(format!(
                "slot {slot} holds d = {d} problems {}; cannot put a d = {} {} there",
                if self.user.is_some() {
                    "of the batch's objectives"
                } else {
                    "of built-in functions"
                },
                spec.dim,
                spec.objective.name()
            )));
        }
        let rot = rot.unwrap_or(u32::MAX);
        let q = &ctx.queue;
        let desc = Self::desc_of(spec, off, rot);
        q.write_buffer(
            &self.desc,
            (slot * std::mem::size_of::<ProblemDesc>()) as u64,
            bytemuck::bytes_of(&desc),
        );
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        q.write_buffer(
            &self.center,
            off as u64 * 4,
            bytemuck::cast_slice(&f32s(&spec.center)),
        );
        q.write_buffer(
            &self.x0,
            off as u64 * 4,
            bytemuck::cast_slice(&f32s(&spec.x0)),
        );
        if let Some(r) = &spec.rotation {
            let padded = padded_rotation(r, d);
            q.write_buffer(&self.rot, rot as u64 * 4, bytemuck::cast_slice(&padded));
        }
        Ok(())
    }

    /// `slots`: None for a fixed batch, else whether every slot keeps room for a rotation.
    fn build(ctx: &GpuContext, problems: &[ProblemSpec], slots: Option<bool>) -> Result<Self> {
        if problems.is_empty() {
            return Err(Error::Problem("a batch needs at least one problem".into()));
        }
        let mut desc = Vec::with_capacity(problems.len());
        let (mut center, mut rot, mut x0) = (Vec::new(), Vec::new(), Vec::new());
        let (mut offsets, mut dims) = (Vec::new(), Vec::new());
        let mut user: Option<&Arc<UserObjective>> = None;
        let mut rot_slots = Vec::new();
        for p in problems {
            p.validate()?;
            if let Objective::User(u) = &p.objective {
                if user.is_some_and(|v| !Arc::ptr_eq(v, u)) {
                    return Err(Error::Problem(
                        "a batch can hold only one user objective".into(),
                    ));
                }
                user = Some(u);
            }
            let offset = x0.len() as u32;
            let mut rot_offset = rot.len() as u32;
            match (&p.rotation, slots) {
                (Some(_), Some(false)) => {
                    return Err(Error::Problem(format!(
                        "a rotated {} in a batch made without room for rotations",
                        p.objective.name()
                    )))
                }
                (Some(r), _) => rot.extend(padded_rotation(r, p.dim)),
                (None, Some(true)) => rot.extend(std::iter::repeat_n(0f32, rotation_len(p.dim))),
                (None, Some(false)) => rot_offset = u32::MAX,
                (None, None) => {}
            }
            if slots.is_some() {
                rot_slots.push(rot_offset);
            }
            desc.push(Self::desc_of(p, offset, rot_offset));
            offsets.push(offset);
            dims.push(p.dim as u32);
            center.extend(p.center.iter().map(|&v| v as f32));
            x0.extend(p.x0.iter().map(|&v| v as f32));
        }
        // The kernel reads rotations as vec4s: a binding of at least one.
        rot.resize(rot.len().max(4), 0.0);
        let first = problems[0].objective.id();
        let single_func = (slots.is_none() && problems.iter().all(|p| p.objective.id() == first))
            .then_some(first);
        Ok(Self {
            single_func,
            user: user.cloned(),
            n_problems: problems.len() as u32,
            n_total: x0.len() as u32,
            offsets,
            dims,
            desc: ctx.storage("problems", &desc)?,
            center: ctx.storage("center", &center)?,
            rot: ctx.storage("rotations", &rot)?,
            x0: ctx.storage("x0", &x0)?,
            rot_slots,
        })
    }

    /// The layout of problems whose objective lives outside the engine (embedding): only
    /// offsets and dimensions, coordinates back to back in the caller's buffers.
    pub fn layout(ctx: &GpuContext, dims: &[usize]) -> Result<Self> {
        if dims.is_empty() {
            return Err(Error::Problem("a batch needs at least one problem".into()));
        }
        let mut desc = Vec::with_capacity(dims.len());
        let mut offsets = Vec::with_capacity(dims.len());
        let mut offset = 0u32;
        for &d in dims {
            if d == 0 || d > MAX_DIM {
                return Err(Error::Problem(format!(
                    "dimension {d} is out of range 1..={MAX_DIM}"
                )));
            }
            desc.push(ProblemDesc {
                offset,
                dim: d as u32,
                func: FUNC_USER,
                rot: u32::MAX,
                scale: 1.0,
                inv_width: 1.0,
                pad: [0; 2],
            });
            offsets.push(offset);
            offset += d as u32;
        }
        Ok(Self {
            single_func: None,
            user: None,
            n_problems: dims.len() as u32,
            n_total: offset,
            offsets,
            dims: dims.iter().map(|&d| d as u32).collect(),
            desc: ctx.storage("problems", &desc)?,
            center: ctx.storage_zeroed("center", 1)?,
            rot: ctx.storage_zeroed("rotations", 4)?,
            x0: ctx.storage_zeroed("x0", 1)?,
            rot_slots: Vec::new(),
        })
    }

    /// Start of each problem's d×d block when one matrix per problem is stored back to
    /// back (BFGS's inverse Hessian, Optimus's preconditioner), and the total length.
    pub fn square_offsets(&self) -> (Vec<u32>, usize) {
        let mut total = 0usize;
        let offsets = self
            .dims
            .iter()
            .map(|&d| {
                let o = total as u32;
                total += (d as usize) * (d as usize);
                o
            })
            .collect();
        (offsets, total)
    }

    /// Splits a ragged per-coordinate array into one vector per problem.
    pub fn split<T: Copy>(&self, flat: &[T]) -> Vec<Vec<T>> {
        self.offsets
            .iter()
            .zip(&self.dims)
            .map(|(&o, &d)| flat[o as usize..(o + d) as usize].to_vec())
            .collect()
    }
}

/// Mixes a seed with indices into an independent seed (splitmix64 on each word), so
/// every draw of a run is a pure function of (seed, what, index) and a resumed run draws
/// the same tasks as an uninterrupted one.
pub fn mix_seed(seed: u64, words: &[u64]) -> u64 {
    let mut z = seed;
    for &w in words {
        z = z.wrapping_add(w).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::kernel::assert_wgsl_layout;

    /// A problem's GPU description matches `struct Problem`.
    #[test]
    fn desc_matches_its_wgsl() {
        assert_wgsl_layout!(
            ProblemDesc,
            "shared/problem.wgsl",
            "Problem",
            [offset, dim, func, rot, scale, inv_width]
        );
    }
}
