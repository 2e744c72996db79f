//! WGSL sources, their composition (`#include`), validation with naga, and compute
//! kernels with explicit bind group layouts.
//!
//! Every shader lives in `shaders/` and is embedded at compile time, so the binary runs
//! from anywhere. WGSL has no include directive: a line `#include "shared/x.wgsl"` is
//! replaced by that file (once per shader), which keeps shared math in one place.

use crate::context::GpuContext;
use crate::error::{Error, Result};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Invocations per workgroup of the per-problem kernels (the `WG` override of
/// `shared/reduce.wgsl`). Each workgroup owns one problem and loops over its
/// coordinates; the objective, first-order, features and learned-step kernels take
/// fewer for small problems or CPU devices ([`lanes_for`]).
pub const WORKGROUP: u32 = 32;

/// Invocations per problem for a batch whose largest problem has `max_dim`
/// coordinates: the power of two that covers it, at most [`WORKGROUP`], and on a CPU
/// device at most one subgroup (but at least 8) up to d = [`NARROW_MAX_DIM`]. The
/// objective, first-order, features and learned-step kernels take it as `WG`. On
/// lavapipe a workgroup costs about its number of invocations whatever they do
/// (measured: Adam at d = 4 runs 2.5–2.8x faster with 4 than with 32), and one wider
/// than its 8-wide vectors switches between them at every barrier: at d = 32 the
/// objective runs 1.4x and an Adam step 1.8x faster with 8 than with 32 (`cargo bench
/// --bench engine`). Results do not depend on `WG`: sums over coordinates add in the
/// order of 32 invocations (`Slots` in `shared/reduce.wgsl`, and the features
/// kernel's slots), and the first-order kernels only count.
pub fn lanes_for(ctx: &GpuContext, max_dim: u32) -> u32 {
    let info = ctx.device.adapter_info();
    let cap = if info.device_type == wgpu::DeviceType::Cpu
        && info.subgroup_min_size >= 1
        && max_dim <= NARROW_MAX_DIM
    {
        // At least 8, so an invocation holds at most 8 of d ≤ 64 coordinates (the
        // objective's `Slots` in `shared/reduce.wgsl` keep 4 partial sums).
        info.subgroup_min_size
            .next_power_of_two()
            .clamp(MIN_NARROW_LANES, WORKGROUP)
    } else {
        WORKGROUP
    };
    max_dim.max(1).next_power_of_two().min(cap)
}

/// Fewest invocations [`lanes_for`] gives a problem that holds more than one coordinate
/// per invocation.
const MIN_NARROW_LANES: u32 = 8;

/// The fewest invocations [`lanes_for`] can give a problem of `d` coordinates on any
/// device: loop budgets are estimated with it, so they hold on every device.
pub fn fewest_lanes(d: u32) -> u32 {
    if d <= NARROW_MAX_DIM {
        d.max(1).next_power_of_two().min(MIN_NARROW_LANES)
    } else {
        WORKGROUP
    }
}

/// Largest d that runs one subgroup per problem on a CPU device ([`lanes_for`]): past
/// it, 32 invocations share the work, so that one invocation's loops stay under
/// lavapipe's limit ([`GpuContext::loop_limit`]; Perm at d = 300 takes d²/`WG` · log d
/// iterations).
pub const NARROW_MAX_DIM: u32 = 64;

/// Workgroups per dimension of a dispatch (the WebGPU default limit).
const MAX_GROUPS_X: u32 = 65535;

/// All WGSL files of the engine, by path relative to `shaders/`.
pub const SHADERS: &[(&str, &str)] = &[
    ("objective.wgsl", include_str!("../shaders/objective.wgsl")),
    (
        "first_order.wgsl",
        include_str!("../shaders/first_order.wgsl"),
    ),
    ("bfgs.wgsl", include_str!("../shaders/bfgs.wgsl")),
    ("lbfgs.wgsl", include_str!("../shaders/lbfgs.wgsl")),
    (
        "shared/problem.wgsl",
        include_str!("../shaders/shared/problem.wgsl"),
    ),
    (
        "shared/reduce.wgsl",
        include_str!("../shaders/shared/reduce.wgsl"),
    ),
    (
        "shared/math.wgsl",
        include_str!("../shaders/shared/math.wgsl"),
    ),
    (
        "shared/opt_state.wgsl",
        include_str!("../shaders/shared/opt_state.wgsl"),
    ),
    (
        "shared/history.wgsl",
        include_str!("../shaders/shared/history.wgsl"),
    ),
    (
        "learned/features.wgsl",
        include_str!("../shaders/learned/features.wgsl"),
    ),
    (
        "learned/linear.wgsl",
        include_str!("../shaders/learned/linear.wgsl"),
    ),
    (
        "learned/linear_blocks.wgsl",
        include_str!("../shaders/learned/linear_blocks.wgsl"),
    ),
    (
        "learned/norm.wgsl",
        include_str!("../shaders/learned/norm.wgsl"),
    ),
    (
        "learned/layernorm.wgsl",
        include_str!("../shaders/learned/layernorm.wgsl"),
    ),
    (
        "learned/attention.wgsl",
        include_str!("../shaders/learned/attention.wgsl"),
    ),
    (
        "learned/attention_tiles.wgsl",
        include_str!("../shaders/learned/attention_tiles.wgsl"),
    ),
    (
        "learned/step.wgsl",
        include_str!("../shaders/learned/step.wgsl"),
    ),
    (
        "learned/precondition.wgsl",
        include_str!("../shaders/learned/precondition.wgsl"),
    ),
    (
        "learned/guard.wgsl",
        include_str!("../shaders/learned/guard.wgsl"),
    ),
    (
        "shared/quasi_newton.wgsl",
        include_str!("../shaders/shared/quasi_newton.wgsl"),
    ),
    (
        "shared/two_loop.wgsl",
        include_str!("../shaders/shared/two_loop.wgsl"),
    ),
    (
        "shared/regions.wgsl",
        include_str!("../shaders/shared/regions.wgsl"),
    ),
    (
        "shared/line_search.wgsl",
        include_str!("../shaders/shared/line_search.wgsl"),
    ),
    (
        "shared/user_stub.wgsl",
        include_str!("../shaders/shared/user_stub.wgsl"),
    ),
    (
        "shared/rng.wgsl",
        include_str!("../shaders/shared/rng.wgsl"),
    ),
    ("pes/noise.wgsl", include_str!("../shaders/pes/noise.wgsl")),
    (
        "pes/project.wgsl",
        include_str!("../shaders/pes/project.wgsl"),
    ),
    ("pes/loss.wgsl", include_str!("../shaders/pes/loss.wgsl")),
    ("pes/coef.wgsl", include_str!("../shaders/pes/coef.wgsl")),
    ("pes/grad.wgsl", include_str!("../shaders/pes/grad.wgsl")),
    ("pes/stats.wgsl", include_str!("../shaders/pes/stats.wgsl")),
    ("pes/adam.wgsl", include_str!("../shaders/pes/adam.wgsl")),
    (
        "motion/body.wgsl",
        include_str!("../shaders/motion/body.wgsl"),
    ),
    (
        "motion/forward.wgsl",
        include_str!("../shaders/motion/forward.wgsl"),
    ),
    (
        "motion/adjoint.wgsl",
        include_str!("../shaders/motion/adjoint.wgsl"),
    ),
    (
        "motion/loss.wgsl",
        include_str!("../shaders/motion/loss.wgsl"),
    ),
    (
        "motion/finish.wgsl",
        include_str!("../shaders/motion/finish.wgsl"),
    ),
];

/// Top-level kernels (files with an entry point `main`), except `objective.wgsl`, which
/// is completed by a user objective or its stand-in (`objective::objective_source`).
pub const ENTRY_SHADERS: &[&str] = &[
    "first_order.wgsl",
    "bfgs.wgsl",
    "lbfgs.wgsl",
    "learned/features.wgsl",
    "learned/linear_blocks.wgsl",
    "learned/layernorm.wgsl",
    "learned/attention_tiles.wgsl",
    "learned/step.wgsl",
    "learned/precondition.wgsl",
    "learned/guard.wgsl",
    "pes/noise.wgsl",
    "pes/project.wgsl",
    "pes/loss.wgsl",
    "pes/coef.wgsl",
    "pes/grad.wgsl",
    "pes/stats.wgsl",
    "pes/adam.wgsl",
    "motion/loss.wgsl",
    "motion/finish.wgsl",
];

fn source_of(path: &str) -> Result<&'static str> {
    SHADERS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, s)| *s)
        .ok_or_else(|| Error::Shader {
            file: path.to_string(),
            message: "no such shader in shaders/".to_string(),
        })
}

/// The shader `path` with its includes expanded, each included file once.
pub fn compose(path: &str) -> Result<String> {
    let mut seen = Vec::new();
    let mut out = String::new();
    expand(path, &mut seen, &mut out)?;
    Ok(out)
}

fn expand(path: &str, seen: &mut Vec<String>, out: &mut String) -> Result<()> {
    if seen.iter().any(|s| s == path) {
        return Ok(());
    }
    seen.push(path.to_string());
    for line in source_of(path)?.lines() {
        match line.trim().strip_prefix("#include") {
            Some(rest) => expand(rest.trim().trim_matches('"'), seen, out)?,
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(())
}

/// Parses and validates WGSL with naga, with the capabilities the engine requests
/// (WebGPU's baseline, plus subgroup operations, which only the kernels for devices
/// that have them use). `file` names the source in error messages.
pub fn validate(file: &str, source: &str) -> Result<naga::Module> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| Error::Shader {
        file: file.to_string(),
        message: e.emit_to_string_with_path(source, file),
    })?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::SUBGROUP,
    )
    .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
    .subgroup_operations(naga::valid::SubgroupOperationSet::all())
    .validate(&module)
    .map_err(|e| Error::Shader {
        file: file.to_string(),
        message: e.emit_to_string_with_path(source, file),
    })?;
    Ok(module)
}

/// Environment variable naming a folder: every kernel the engine builds writes the exact
/// WGSL it compiles there (includes expanded, generated code in place, override values in
/// a header comment), to read or to feed to another WGSL tool.
pub const DUMP_ENV: &str = "OPTIMUS_DUMP_WGSL";

/// Writes `source` to `$OPTIMUS_DUMP_WGSL/<label>-<hash>.wgsl` when that variable is set.
fn dump(label: &str, source: &str, constants: &[(&str, f64)]) -> Result<()> {
    match std::env::var_os(DUMP_ENV) {
        Some(dir) => write_dump(std::path::Path::new(&dir), label, source, constants),
        None => Ok(()),
    }
}

/// Writes one kernel's source into `dir` as `<label>-<hash>.wgsl`: the label made a file
/// name, and a hash of the source and override values, since variants of one label
/// (per function, layer shape or override) would otherwise overwrite each other.
fn write_dump(
    dir: &std::path::Path,
    label: &str,
    source: &str,
    constants: &[(&str, f64)],
) -> Result<()> {
    let name: String = label
        .trim_end_matches(".wgsl")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut h = DefaultHasher::new();
    source.hash(&mut h);
    for (k, v) in constants {
        (k, v.to_bits()).hash(&mut h);
    }
    let name = format!("{name}-{:08x}", h.finish() as u32);
    let mut text = format!("// kernel '{label}'\n");
    for (k, v) in constants {
        text += &format!("// override {k} = {v}\n");
    }
    text += source;
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(dir.join(format!("{name}.wgsl")), text))
        .map_err(|e| {
            Error::Io(format!(
                "{DUMP_ENV}: cannot write kernel '{label}' to {} ({e}); unset {DUMP_ENV} or \
                 name a writable folder",
                dir.display()
            ))
        })
}

/// The bindings of group 0 as `module` declares them, in binding order: they must be
/// buffers numbered 0, 1, 2, … (the engine's kernels use one bind group).
fn reflect_binds(label: &str, module: &naga::Module) -> Result<Vec<Bind>> {
    let bad = |message: String| Error::Shader {
        file: label.to_string(),
        message,
    };
    let mut binds: Vec<(u32, Bind)> = Vec::new();
    for (_, g) in module.global_variables.iter() {
        let Some(rb) = &g.binding else { continue };
        let bind = match g.space {
            naga::AddressSpace::Uniform => Bind::Uniform,
            naga::AddressSpace::Storage { access } => {
                if access.contains(naga::StorageAccess::STORE) {
                    Bind::ReadWrite
                } else {
                    Bind::ReadOnly
                }
            }
            other => {
                return Err(bad(format!(
                    "binding {} is a {other:?} resource; kernels bind buffers only",
                    rb.binding
                )))
            }
        };
        if rb.group != 0 {
            return Err(bad(format!(
                "binding {} is in group {}; kernels use group 0 only",
                rb.binding, rb.group
            )));
        }
        binds.push((rb.binding, bind));
    }
    binds.sort_by_key(|(b, _)| *b);
    if let Some((i, (b, _))) = binds.iter().enumerate().find(|(i, (b, _))| *b != *i as u32) {
        return Err(bad(format!(
            "bindings must be numbered 0, 1, 2, …; binding {b} is at position {i}"
        )));
    }
    Ok(binds.into_iter().map(|(_, b)| b).collect())
}

/// How a kernel sees one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    Uniform,
    ReadOnly,
    ReadWrite,
}

/// A compute pipeline with an explicit bind group layout (so unused bindings are kept
/// and bind groups always match). Built once per device and kept in the device's one
/// kernel cache (`GpuContext::cached`), keyed by label, a hash of the exact source and
/// the override values, so generated kernels are shared wherever they recur.
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    binds: Vec<Bind>,
    label: String,
}

impl Kernel {
    /// The kernel of WGSL `source` with entry point `main` (validated with naga when it
    /// is first built; `label` names it in errors). Its bind group layout is read from
    /// the module: every `@group(0) @binding(i)` buffer, uniform or storage with its
    /// access, in binding order.
    pub fn new(ctx: &GpuContext, label: &str, source: &str) -> Result<Arc<Self>> {
        Self::with_constants(ctx, label, source, &[])
    }

    /// Like [`Kernel::new`], with values for the shader's `override` constants.
    pub fn with_constants(
        ctx: &GpuContext,
        label: &str,
        source: &str,
        constants: &[(&str, f64)],
    ) -> Result<Arc<Self>> {
        let mut h = DefaultHasher::new();
        source.hash(&mut h);
        let key = format!("{label}|{:016x}|{constants:?}", h.finish());
        ctx.cached(&key, || {
            let module = validate(label, source)?;
            let binds = reflect_binds(label, &module)?;
            Self::build(ctx, label, source, &binds, constants)
        })
    }

    fn build(
        ctx: &GpuContext,
        label: &str,
        source: &str,
        binds: &[Bind],
        constants: &[(&str, f64)],
    ) -> Result<Self> {
        dump(label, source, constants)?;
        let device = &ctx.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let entries: Vec<_> = binds
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match b {
                    Bind::Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Bind::ReadOnly | Bind::ReadWrite => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: *b == Bind::ReadOnly,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(label),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                ..Default::default()
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("could not build kernel '{label}': {e}")));
        }
        Ok(Self {
            pipeline,
            layout,
            binds: binds.to_vec(),
            label: label.to_string(),
        })
    }

    /// Builds the engine kernel `path` from `shaders/`.
    pub fn from_shader(ctx: &GpuContext, path: &str) -> Result<Arc<Self>> {
        Self::new(ctx, path, &compose(path)?)
    }

    /// A bind group over `buffers`, one per binding, in order.
    pub fn bind(&self, ctx: &GpuContext, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        assert_eq!(
            buffers.len(),
            self.binds.len(),
            "kernel '{}' takes {} bindings",
            self.label,
            self.binds.len()
        );
        let entries: Vec<_> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&self.label),
            layout: &self.layout,
            entries: &entries,
        })
    }

    /// Records one dispatch with one workgroup per problem (a 2-d grid past 65535).
    pub fn dispatch_problems(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        n_problems: u32,
    ) {
        pass.set_pipeline(&self.pipeline);
        dispatch_group(pass, group, n_problems);
    }
}

/// Binds `group` and dispatches one workgroup per problem (a 2-d grid past 65535) with
/// the pipeline already set.
pub fn dispatch_group(pass: &mut wgpu::ComputePass<'_>, group: &wgpu::BindGroup, n_problems: u32) {
    pass.set_bind_group(0, group, &[]);
    let x = n_problems.clamp(1, MAX_GROUPS_X);
    let y = n_problems.div_ceil(MAX_GROUPS_X).max(1);
    pass.dispatch_workgroups(x, y, 1);
}

/// Size and member offsets of WGSL struct `name` as declared in shader `path` (includes
/// expanded), for the tests that hold each `#[repr(C)]` mirror of a WGSL struct to it.
#[cfg(test)]
pub(crate) fn wgsl_layout(path: &str, name: &str) -> (u32, Vec<(String, u32)>) {
    let src = compose(path).expect("a shader of the table");
    let start = src
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("no struct {name} in {path}"));
    let end = start + src[start..].find("\n}").expect("a struct ends with '}'") + 2;
    // The declaration alone, so shaders completed by generated code parse too.
    let module = naga::front::wgsl::parse_str(&src[start..end])
        .unwrap_or_else(|e| panic!("struct {name} in {path}: {e}"));
    let ty = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .expect("the struct just parsed")
        .1;
    match &ty.inner {
        naga::TypeInner::Struct { members, span } => (
            *span,
            members
                .iter()
                .map(|m| (m.name.clone().unwrap_or_default(), m.offset))
                .collect(),
        ),
        other => panic!("{name} in {path} is not a struct: {other:?}"),
    }
}

/// Asserts that `#[repr(C)]` struct `$ty` mirrors WGSL struct `$name` of shader `$path`:
/// the same size, and the listed fields at the offsets of the WGSL members of the same
/// names, which must be all of them but padding (`pad…`, `_pad…`).
#[cfg(test)]
macro_rules! assert_wgsl_layout {
    ($ty:ty, $path:literal, $name:literal, [$($field:ident),* $(,)?]) => {{
        let (span, members) = $crate::kernel::wgsl_layout($path, $name);
        let named: Vec<(String, u32)> = members
            .into_iter()
            .filter(|(n, _)| !n.trim_start_matches('_').starts_with("pad"))
            .collect();
        let rust: Vec<(String, u32)> = vec![$(
            (stringify!($field).to_string(), std::mem::offset_of!($ty, $field) as u32)
        ),*];
        assert_eq!(
            rust, named,
            "{} against struct {} in {}: fields and offsets", stringify!($ty), $name, $path
        );
        assert_eq!(
            std::mem::size_of::<$ty>() as u32, span,
            "{} against struct {} in {}: size", stringify!($ty), $name, $path
        );
    }};
}
#[cfg(test)]
pub(crate) use assert_wgsl_layout;

#[cfg(test)]
mod tests {
    use super::*;

    /// Bindings come from the module: the step kernel's two uniforms, four read-only and
    /// four read-write buffers, in binding order; a second group is refused by name.
    #[test]
    fn bindings_are_read_from_the_module() {
        use Bind::*;
        let src = compose("learned/step.wgsl").unwrap();
        let binds = reflect_binds("step", &validate("step", &src).unwrap()).unwrap();
        assert_eq!(
            binds,
            [
                Uniform, Uniform, ReadOnly, ReadOnly, ReadOnly, ReadOnly, ReadWrite, ReadWrite,
                ReadWrite, ReadWrite
            ]
        );
        let bad = "@group(1) @binding(0) var<storage, read_write> a: array<f32>;\n\
                   @compute @workgroup_size(1) fn main() { a[0] = 1.0; }";
        let e = reflect_binds("bad", &validate("bad", bad).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("group 1"), "{e}");
    }

    /// A dumped kernel is its exact source under a file name made from its label, with
    /// its override values in a header.
    #[test]
    fn dumped_kernels_hold_their_source_and_overrides() {
        let dir = std::env::temp_dir().join(format!("optimus-dump-{}", std::process::id()));
        let src = compose("learned/step.wgsl").unwrap();
        write_dump(&dir, "learned/step.wgsl (lanes)", &src, &[("WG", 64.0)]).unwrap();
        // Another override value of the same label is another file.
        write_dump(&dir, "learned/step.wgsl (lanes)", &src, &[("WG", 32.0)]).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let texts: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy();
            assert!(name.starts_with("learned_step_wgsl__lanes_-"), "{name}");
        }
        let text = texts
            .iter()
            .find(|t| t.contains("// override WG = 64\n"))
            .unwrap();
        assert!(text.starts_with("// kernel 'learned/step.wgsl (lanes)'\n// override WG = 64\n"));
        assert!(text.ends_with(&src));
    }
}
