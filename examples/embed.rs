//! Embedding: an application with its own wgpu device, its own buffers and its own
//! WGSL gradient kernel lets Optimus drive its problems for a number of steps, with no
//! round trip through the host between steps.
//!
//!     cargo run --release --example embed -- [MODEL_DIR]
//!
//! Without a model directory a seeded random Optimus model is used: it takes tiny
//! steps, so the objective barely moves; the point is the plumbing. With a trained
//! model (`assets/models/optimus`, once meta-trained) the same code optimizes.

use optimus_gpu::embed::EmbeddedOptimizer;
use optimus_gpu::learned::model::{Model, ModelConfig, ModelKind};
use optimus_gpu::wgpu;
use optimus_gpu::wgpu::util::DeviceExt;
use optimus_gpu::GpuContext;

/// The application's objective: per problem p, f(x) = Σ_i c_i (x_i − t_i)², with its
/// gradient, one invocation per problem.
const APP_KERNEL: &str = r#"
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> f: array<f32>;
const D: u32 = 24u;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let p = id.x;
    if p >= arrayLength(&f) { return; }
    var total = 0.0;
    for (var i = 0u; i < D; i++) {
        let c = 1.0 + f32(i % 5u);
        let t = sin(f32(i + p));
        let r = x[p * D + i] - t;
        total += c * r * r;
        grad[p * D + i] = 2.0 * c * r;
    }
    f[p] = total;
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const P: usize = 128;
    const D: usize = 24;
    const STEPS: u32 = 50;

    // The application's own device.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))?;
    // Subgroups where the adapter has them: on a CPU device the engine's fast layout
    // needs them.
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: adapter.features() & wgpu::Features::SUBGROUP,
        ..Default::default()
    }))?;

    // Its buffers and its gradient kernel.
    let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let x = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("app x"),
        contents: bytemuck::cast_slice(&vec![2.0f32; P * D]),
        usage: storage,
    });
    let zeros = |label, n: usize| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(&vec![0f32; n]),
            usage: storage,
        })
    };
    let grad = zeros("app grad", P * D);
    let f = zeros("app f", P);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("app gradient"),
        source: wgpu::ShaderSource::Wgsl(APP_KERNEL.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("app gradient"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: x.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: grad.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: f.as_entire_binding(),
            },
        ],
    });

    // The optimizer, on the application's device, over its buffers.
    let model = match std::env::args().nth(1) {
        Some(dir) => Model::load(std::path::Path::new(&dir))?,
        None => Model::init(ModelConfig::for_kind(ModelKind::Optimus), 0)?,
    };
    let ctx = GpuContext::from_device(device.clone(), queue.clone());
    let opt = EmbeddedOptimizer::new(&ctx, &model, &[D; P], &x, &grad, Some(&f), STEPS)?;

    let before = ctx.readback_count();
    for _ in 0..=STEPS {
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups((P as u32).div_ceil(64), 1, 1);
            opt.record(&mut pass);
        }
        queue.submit([encoder.finish()]);
    }
    assert_eq!(ctx.readback_count(), before, "no readback inside the loop");

    let hist = opt.history(&ctx)?;
    let mean = |k: usize| {
        hist.iter()
            .map(|(_, _, f)| f[k.min(f.len() - 1)])
            .sum::<f64>()
            / P as f64
    };
    println!(
        "{} model on {} problems of d = {D}: mean f {:.6} -> {:.6} after {} steps, no host round trip",
        model.config.kind,
        P,
        mean(0),
        mean(STEPS as usize),
        hist[0].1
    );
    Ok(())
}
