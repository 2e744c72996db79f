//! Objective stage (`shaders/objective.wgsl`): the gap f − f* and ∇f of every problem
//! of a batch at a point, one workgroup per problem. Its CPU twin is
//! [`crate::problem::ProblemSpec::cpu_gap_grad`].
//!
//! A user objective is a WGSL file that defines
//!
//! ```wgsl
//! const USER_F_STAR: f32 = 0.0;      // known minimum, for f − f* in the results
//! const USER_DOMAIN_LO: f32 = -5.0;  // start points are drawn from [LO, HI]^d
//! const USER_DOMAIN_HI: f32 = 5.0;
//! fn user_term(i: u32, d: u32) -> f32 // f(z) = Σ_i user_term(i, d)
//! fn user_grad(i: u32, d: u32) -> f32 // ∂f/∂z_i
//! ```
//!
//! where `coord(j)` reads coordinate j of the current problem. Each coordinate is handled
//! by one invocation, so terms may couple coordinates freely. The file is placed first in
//! the kernel, so naga's line numbers in error messages are the file's own.

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernel::{compose, validate, Bind, Kernel};
use crate::problem::GpuProblems;
use std::path::Path;
use std::sync::OnceLock;

/// A user objective: WGSL source plus the constants the host needs.
#[derive(Debug)]
pub struct UserObjective {
    pub name: String,
    pub path: String,
    pub source: String,
    pub f_star: f64,
    pub domain: (f64, f64),
}

const USER_ITEMS: [&str; 5] = [
    "fn user_term",
    "fn user_grad",
    "USER_F_STAR",
    "USER_DOMAIN_LO",
    "USER_DOMAIN_HI",
];

impl UserObjective {
    /// Reads and checks a user objective file.
    pub fn load(path: &Path) -> Result<Self> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read objective file {}: {e}",
                path.display()
            ))
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "user".into());
        Self::from_source(&name, &path.display().to_string(), source)
    }

    /// Checks `source` by compiling it into the objective kernel with naga.
    pub fn from_source(name: &str, path: &str, source: String) -> Result<Self> {
        let missing: Vec<_> = USER_ITEMS
            .iter()
            .filter(|item| !source.contains(*item))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Shader {
                file: path.to_string(),
                message: format!(
                    "a user objective must define {}; missing: {:?}. See assets/objectives/quadratic.wgsl",
                    USER_ITEMS.join(", "),
                    missing
                ),
            });
        }
        let full = objective_source(Some(&source))?;
        let module = validate(path, &full)?;
        let constant = |name: &str| -> Result<f64> {
            module
                .constants
                .iter()
                .find(|(_, c)| c.name.as_deref() == Some(name))
                .and_then(|(_, c)| match module.global_expressions[c.init] {
                    naga::Expression::Literal(naga::Literal::F32(v)) => Some(v as f64),
                    _ => None,
                })
                .ok_or_else(|| Error::Shader {
                    file: path.to_string(),
                    message: format!("declare `const {name}: f32 = <number>;`"),
                })
        };
        let f_star = constant("USER_F_STAR")?;
        let domain = (constant("USER_DOMAIN_LO")?, constant("USER_DOMAIN_HI")?);
        if domain.0.partial_cmp(&domain.1) != Some(std::cmp::Ordering::Less) || !f_star.is_finite()
        {
            return Err(Error::Shader {
                file: path.to_string(),
                message: format!(
                    "USER_DOMAIN_LO must be below USER_DOMAIN_HI and USER_F_STAR finite (got {domain:?}, {f_star})"
                ),
            });
        }
        Ok(Self {
            name: name.to_string(),
            path: path.to_string(),
            source,
            f_star,
            domain,
        })
    }
}

/// The objective kernel's WGSL, with the user file first (or the stand-in).
pub fn objective_source(user: Option<&str>) -> Result<String> {
    let stub = compose("shared/user_stub.wgsl")?;
    Ok(format!(
        "{}\n{}",
        user.unwrap_or(&stub),
        compose("objective.wgsl")?
    ))
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ObjParams {
    n_problems: u32,
    n_total: u32,
    pad: [u32; 2],
}

const BINDS: [Bind; 8] = [
    Bind::Uniform,
    Bind::ReadOnly,
    Bind::ReadOnly,
    Bind::ReadOnly,
    Bind::ReadOnly,
    Bind::ReadWrite,
    Bind::ReadWrite,
    Bind::ReadWrite,
];

/// Kernel ids: the 13 benchmark functions and the user objective.
const N_FUNCS: usize = 14;

/// The objective kernel, built once per batch kind (builtin or one user objective):
/// a generic pipeline for batches that mix functions, and, built on first use, one per
/// function with `FUNC_SPEC` set, whose dispatch on the function id folds away
/// (measured about 2x faster per problem on lavapipe at d = 32).
pub struct ObjectiveStage {
    generic: Kernel,
    special: Vec<OnceLock<Kernel>>,
    source: String,
}

/// What computes f − f* and ∇f of every problem of a batch on the GPU: the objective
/// kernel here, or a multi-pass pipeline (the motion task's simulation, loss and
/// adjoint). Runs bind it once and record it before every optimizer step.
pub trait Evaluator {
    /// Binds to `problems`: reads points from `x`, writes one value per problem to `f`
    /// and gradients (ragged, like x) to `grad`.
    fn bind(
        &self,
        ctx: &GpuContext,
        problems: &GpuProblems,
        x: &wgpu::Buffer,
        f: &wgpu::Buffer,
        grad: &wgpu::Buffer,
    ) -> Result<Box<dyn Evaluation>>;
}

/// An [`Evaluator`] bound to one batch and one set of buffers.
pub trait Evaluation {
    /// Records one evaluation of every problem.
    fn record(&self, pass: &mut wgpu::ComputePass<'_>);
}

/// The objective bound to one batch and one set of x / f / ∇f buffers.
pub struct ObjectiveBinding {
    pipeline: wgpu::ComputePipeline,
    group: wgpu::BindGroup,
    n_problems: u32,
    _scratch: wgpu::Buffer,
    _params: wgpu::Buffer,
}

impl Evaluation for ObjectiveBinding {
    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        crate::kernel::dispatch_group(pass, &self.group, self.n_problems);
    }
}

impl ObjectiveStage {
    pub fn new(ctx: &GpuContext, user: Option<&UserObjective>) -> Result<Self> {
        let source = objective_source(user.map(|u| u.source.as_str()))?;
        let file = user.map_or("objective.wgsl", |u| u.path.as_str());
        validate(file, &source)?;
        let generic = Kernel::new(ctx, "objective", &source, &BINDS)?;
        Ok(Self {
            generic,
            special: (0..N_FUNCS).map(|_| OnceLock::new()).collect(),
            source,
        })
    }

    /// The pipeline specialized to function `id`, built on first use.
    fn special(&self, ctx: &GpuContext, id: u32) -> Result<&Kernel> {
        let slot = &self.special[id as usize];
        if let Some(k) = slot.get() {
            return Ok(k);
        }
        let k = Kernel::with_constants(
            ctx,
            "objective (specialized)",
            &self.source,
            &BINDS,
            &[("FUNC_SPEC", id as f64)],
        )?;
        Ok(slot.get_or_init(|| k))
    }

    fn kernel(&self, func: Option<u32>) -> &Kernel {
        func.and_then(|id| self.special[id as usize].get())
            .unwrap_or(&self.generic)
    }

    /// Binds the stage: it reads points from `x` and writes gaps to `f` (one per
    /// problem) and gradients to `grad` (ragged).
    pub fn bind(
        &self,
        ctx: &GpuContext,
        problems: &GpuProblems,
        x: &wgpu::Buffer,
        f: &wgpu::Buffer,
        grad: &wgpu::Buffer,
    ) -> Result<ObjectiveBinding> {
        let scratch = ctx.storage_zeroed("objective scratch", 3 * problems.n_total as usize)?;
        let params = ctx.uniform(
            "objective params",
            &ObjParams {
                n_problems: problems.n_problems,
                n_total: problems.n_total,
                pad: [0; 2],
            },
        );
        let func = problems.single_func.filter(|&id| (id as usize) < N_FUNCS);
        if let Some(id) = func {
            self.special(ctx, id)?;
        }
        let kernel = self.kernel(func);
        let group = kernel.bind(
            ctx,
            &[
                &params,
                &problems.desc,
                &problems.center,
                &problems.rot,
                x,
                f,
                grad,
                &scratch,
            ],
        );
        Ok(ObjectiveBinding {
            pipeline: kernel.pipeline.clone(),
            group,
            n_problems: problems.n_problems,
            _scratch: scratch,
            _params: params,
        })
    }
}

impl Evaluator for ObjectiveStage {
    fn bind(
        &self,
        ctx: &GpuContext,
        problems: &GpuProblems,
        x: &wgpu::Buffer,
        f: &wgpu::Buffer,
        grad: &wgpu::Buffer,
    ) -> Result<Box<dyn Evaluation>> {
        Ok(Box::new(ObjectiveStage::bind(
            self, ctx, problems, x, f, grad,
        )?))
    }
}

/// Evaluates every problem at its start point on the GPU: (gap, gradient) per problem.
/// For tests, benchmarks and one-off checks; runs build their own bindings.
pub fn evaluate(
    ctx: &GpuContext,
    stage: &ObjectiveStage,
    problems: &[crate::problem::ProblemSpec],
) -> Result<Vec<(f64, Vec<f64>)>> {
    let gp = GpuProblems::new(ctx, problems)?;
    let f = ctx.storage_zeroed("f", gp.n_problems as usize)?;
    let g = ctx.storage_zeroed("gradient", gp.n_total as usize)?;
    let binding = stage.bind(ctx, &gp, &gp.x0, &f, &g)?;
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        binding.record(&mut pass);
    }
    ctx.queue.submit([enc.finish()]);
    let fs: Vec<f32> = ctx.read(&f, gp.n_problems as usize)?;
    let gs: Vec<f32> = ctx.read(&g, gp.n_total as usize)?;
    Ok(fs
        .iter()
        .zip(gp.split(&gs))
        .map(|(&f, g)| (f as f64, g.iter().map(|&v| v as f64).collect()))
        .collect())
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::kernel::assert_wgsl_layout;

    /// The objective kernel's parameters match the WGSL struct.
    #[test]
    fn params_match_their_wgsl() {
        assert_wgsl_layout!(
            ObjParams,
            "objective.wgsl",
            "ObjParams",
            [n_problems, n_total]
        );
    }
}
