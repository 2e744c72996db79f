//! Motion simulation kernels against the f64 twin: forward states and the adjoint
//! gradient for several windows in one batch, across dispatch chunks.

use crate::common::ctx;
use glam::DVec3;
use optimus_gpu::motion::body::{Body, Gains, Pose};
use optimus_gpu::motion::gpu::{GpuSim, MotionKernels};
use optimus_gpu::motion::sim::{adjoint, simulate, Initial, SimConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Batch {
    body: Body,
    cfg: SimConfig,
    params: Vec<Vec<f64>>,
    init: Vec<Initial>,
}

/// `p` windows: random bent target poses per keyframe, feet in the ground, random
/// initial velocities and root offsets.
fn batch(p: usize, seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let body = Body::new(&Gains::default());
    let cfg = SimConfig {
        keyframes: 3,
        steps_per_key: 30,
        ..Default::default()
    };
    let mut params = Vec::new();
    let mut init = Vec::new();
    for _ in 0..p {
        let mut w = Vec::new();
        for _ in 0..cfg.keyframes {
            w.extend(body.channel_values(&Pose::neutral().perturbed(&mut rng, 0.4).points()));
        }
        w.extend((0..6).map(|_| rng.random_range(-0.05..0.05)));
        params.push(w);
        let pose = Pose::neutral().perturbed(&mut rng, 0.1);
        init.push(Initial {
            x: pose
                .points()
                .iter()
                .map(|x| *x - DVec3::Y * 0.003)
                .collect(),
            v: pose
                .points()
                .iter()
                .map(|_| {
                    DVec3::new(
                        rng.random_range(-0.3..0.3),
                        0.0,
                        rng.random_range(-0.3..0.3),
                    )
                })
                .collect(),
        });
    }
    Batch {
        body,
        cfg,
        params,
        init,
    }
}

#[test]
fn forward_and_adjoint_match_twin() {
    let ctx = ctx();
    let kernels = MotionKernels::new(ctx).unwrap();
    let b = batch(3, 11);
    let flat: Vec<f32> = b.params.iter().flatten().map(|v| *v as f32).collect();
    let theta = ctx.storage("theta", &flat).unwrap();
    let grad = ctx.storage_zeroed("grad", flat.len()).unwrap();
    let sim = GpuSim::new(ctx, &kernels, &b.body, &b.cfg, &b.init, &theta, &grad).unwrap();
    let np = b.body.masses.len();
    let n = b.cfg.n_steps();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let seeds: Vec<Vec<DVec3>> = (0..3)
        .map(|_| {
            (0..(n + 1) * np)
                .map(|_| {
                    DVec3::new(
                        rng.random_range(-1.0..1.0),
                        rng.random_range(-1.0..1.0),
                        rng.random_range(-1.0..1.0),
                    )
                })
                .collect()
        })
        .collect();
    let flat_seeds: Vec<f32> = seeds
        .iter()
        .flatten()
        .flat_map(|v| v.to_array().map(|c| c as f32))
        .collect();
    ctx.queue
        .write_buffer(&sim.seeds, 0, bytemuck::cast_slice(&flat_seeds));
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        sim.record_forward(&kernels, &mut pass);
        sim.record_adjoint(&kernels, &mut pass);
    }
    ctx.queue.submit([enc.finish()]);
    let gpu = sim.read_trajectories(ctx).unwrap();
    let gpu_grad: Vec<f32> = ctx.read(&grad, flat.len()).unwrap();
    let status: Vec<u32> = ctx.read(&sim.status, 3).unwrap();
    assert_eq!(status, vec![0, 0, 0]);
    let d = b.cfg.n_params(&b.body);
    for w in 0..3 {
        let cpu = simulate(&b.body, &b.cfg, &b.params[w], &b.init[w]);
        let mut worst = 0.0f64;
        for (a, c) in gpu[w].x.iter().zip(&cpu.x) {
            worst = worst.max((*a - *c).length());
        }
        assert!(
            worst < 1e-5,
            "window {w}: positions differ by up to {worst} m"
        );
        let g = adjoint(&b.body, &b.cfg, &b.params[w], &cpu, &seeds[w]);
        let scale = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let err = g
            .iter()
            .zip(&gpu_grad[w * d..(w + 1) * d])
            .map(|(c, a)| (*a as f64 - c).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            err < 1e-4 * scale,
            "window {w}: gradient error {err} of norm {scale}"
        );
    }
}

#[test]
fn diverging_window_is_flagged_and_the_batch_goes_on() {
    let ctx = ctx();
    let kernels = MotionKernels::new(ctx).unwrap();
    let mut b = batch(3, 13);
    let root = b.cfg.keyframes * b.body.n_channels();
    // Window 1 is thrown upwards at 1e5 m/s: it leaves the simulated range.
    b.params[1][root + 4] = 1.0e5;
    let flat: Vec<f32> = b.params.iter().flatten().map(|v| *v as f32).collect();
    let theta = ctx.storage("theta", &flat).unwrap();
    let grad = ctx.storage_zeroed("grad", flat.len()).unwrap();
    let sim = GpuSim::new(ctx, &kernels, &b.body, &b.cfg, &b.init, &theta, &grad).unwrap();
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        sim.record_forward(&kernels, &mut pass);
    }
    ctx.queue.submit([enc.finish()]);
    let status: Vec<u32> = ctx.read(&sim.status, 3).unwrap();
    assert_eq!(status, vec![0, 1, 0]);
    let gpu = sim.read_trajectories(ctx).unwrap();
    let cpu = simulate(&b.body, &b.cfg, &b.params[2], &b.init[2]);
    let last = b.cfg.n_steps() * b.body.masses.len();
    assert!((gpu[2].x[last] - cpu.x[last]).length() < 1e-5);
}

#[test]
fn unstable_time_step_is_refused() {
    let ctx = ctx();
    let kernels = MotionKernels::new(ctx).unwrap();
    let mut b = batch(1, 14);
    b.cfg.dt = 1.0 / 100.0;
    let theta = ctx
        .storage_zeroed("theta", b.cfg.n_params(&b.body))
        .unwrap();
    let err = GpuSim::new(ctx, &kernels, &b.body, &b.cfg, &b.init, &theta, &theta)
        .err()
        .expect("dt = 10 ms must be refused")
        .to_string();
    assert!(
        err.contains("unstable") && err.contains("lower dt"),
        "{err}"
    );
}
