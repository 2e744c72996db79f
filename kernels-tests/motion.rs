//! Motion simulation kernels against the f64 twin: forward states and the adjoint
//! gradient for several windows in one batch, across dispatch chunks.

use crate::common::{ctx, relative_error};
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
        steps_per_key: 90,
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

/// The batch on the GPU: its simulation, gradient buffer and flat parameters.
fn bind(b: &Batch) -> (GpuSim, wgpu::Buffer, Vec<f32>) {
    let ctx = ctx();
    let kernels = MotionKernels::new(ctx, &b.body, &b.cfg).unwrap();
    let flat: Vec<f32> = b.params.iter().flatten().map(|v| *v as f32).collect();
    let theta = ctx.storage("theta", &flat).unwrap();
    let grad = ctx.storage_zeroed("grad", flat.len()).unwrap();
    let init = GpuSim::initial_buffer(ctx, &b.body, &b.init).unwrap();
    let n = b.init.len();
    let sim = GpuSim::new(ctx, &kernels, &b.body, &b.cfg, n, &init, &theta, &grad).unwrap();
    (sim, grad, flat)
}

#[test]
fn forward_and_adjoint_match_twin() {
    let ctx = ctx();
    let b = batch(3, 11);
    let (sim, grad, flat) = bind(&b);
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
    sim.write_seeds(ctx, &seeds).unwrap();
    if ctx.loop_limit().is_some() {
        // The state crosses dispatch boundaries in both passes.
        let (f, a) = sim.dispatches();
        assert!(f > 1 && a > 1, "{f} forward and {a} adjoint dispatches");
    }
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        sim.record_forward(&mut pass);
        sim.record_adjoint(&mut pass);
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
        let err = relative_error(&gpu_grad[w * d..(w + 1) * d], &g);
        assert!(err < 1e-4, "window {w}: relative gradient error {err}");
    }
}

#[test]
fn diverging_window_is_flagged_and_the_batch_goes_on() {
    let ctx = ctx();
    let mut b = batch(3, 13);
    let root = b.cfg.keyframes * b.body.n_channels();
    // Window 1 is thrown upwards at 1e5 m/s: it leaves the simulated range.
    b.params[1][root + 4] = 1.0e5;
    let (sim, _grad, _) = bind(&b);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        sim.record_forward(&mut pass);
    }
    ctx.queue.submit([enc.finish()]);
    let status: Vec<u32> = ctx.read(&sim.status, 3).unwrap();
    assert_eq!(status, vec![0, 1, 0]);
    let gpu = sim.read_trajectories(ctx).unwrap();
    let cpu = simulate(&b.body, &b.cfg, &b.params[2], &b.init[2]);
    let last = b.cfg.n_steps() * b.body.masses.len();
    // A neighbour of the diverged window is simulated as on its own (f32 against f64
    // over 180 steps).
    let off = (gpu[2].x[last] - cpu.x[last]).length();
    assert!(off < 1e-4, "window 2 is {off} m off its twin");
}

#[test]
fn unstable_time_step_is_refused() {
    let ctx = ctx();
    let mut b = batch(1, 14);
    let kernels = MotionKernels::new(ctx, &b.body, &b.cfg).unwrap();
    b.cfg.dt = 1.0 / 100.0;
    let theta = ctx
        .storage_zeroed("theta", b.cfg.n_params(&b.body))
        .unwrap();
    let init = GpuSim::initial_buffer(ctx, &b.body, &b.init).unwrap();
    let err = GpuSim::new(ctx, &kernels, &b.body, &b.cfg, 1, &init, &theta, &theta)
        .err()
        .expect("dt = 10 ms must be refused")
        .to_string();
    assert!(
        err.contains("unstable") && err.contains("lower dt"),
        "{err}"
    );
}

fn task_windows(
    n_per: usize,
) -> (
    optimus_gpu::motion::task::TaskConfig,
    Vec<optimus_gpu::motion::task::Window>,
) {
    use optimus_gpu::motion::clip::Family;
    use optimus_gpu::motion::task::{TaskConfig, Window};
    let cfg = TaskConfig {
        sim: SimConfig {
            keyframes: 3,
            steps_per_key: 20,
            ..Default::default()
        },
        obs_every: 10,
        ..Default::default()
    };
    let body = Body::new(&cfg.gains);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut windows = Vec::new();
    for family in [Family::Walk, Family::Dance, Family::Jump] {
        for _ in 0..n_per {
            let clip = family.clip(&mut rng, 1.0);
            let start = rng.random_range(0.1..0.8);
            windows.push(Window::new(&body, &cfg, &clip, start, rng.random()).unwrap());
        }
    }
    (cfg, windows)
}

#[test]
fn motion_objective_matches_twin() {
    use optimus_gpu::motion::gpu::MotionEvaluator;
    use optimus_gpu::motion::task::objective;
    use optimus_gpu::objective::Evaluation;
    let ctx = ctx();
    let (cfg, windows) = task_windows(1);
    let body = Body::new(&cfg.gains);
    let eval = MotionEvaluator::new(ctx, &cfg, &windows).unwrap();
    // Evaluate away from the start so the limit penalty takes part in one window.
    let mut params: Vec<Vec<f64>> = windows.iter().map(|w| w.x0.clone()).collect();
    params[1][5] = -1.05;
    let flat: Vec<f32> = params.iter().flatten().map(|v| *v as f32).collect();
    let x = ctx.storage("x", &flat).unwrap();
    let f = ctx.storage_zeroed("f", windows.len()).unwrap();
    let g = ctx.storage_zeroed("g", flat.len()).unwrap();
    let bound = eval.bind_windows(ctx, &x, &f, &g).unwrap();
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        bound.record(&mut pass);
    }
    ctx.queue.submit([enc.finish()]);
    let fs: Vec<f32> = ctx.read(&f, windows.len()).unwrap();
    let gs: Vec<f32> = ctx.read(&g, flat.len()).unwrap();
    let d = params[0].len();
    for (k, w) in windows.iter().enumerate() {
        let (fc, gc) = objective(&body, &cfg, w, &params[k]);
        assert!(
            (fs[k] as f64 - fc).abs() < 1e-4 * fc,
            "window {k}: f {} vs {fc}",
            fs[k]
        );
        let err = relative_error(&gs[k * d..(k + 1) * d], &gc);
        assert!(err < 1e-3, "window {k}: relative gradient error {err}");
    }
}

#[test]
fn optimizers_reduce_the_motion_objective() {
    use optimus_gpu::motion::gpu::MotionEvaluator;
    use optimus_gpu::optim::{GpuRun, Kernels, Method, OptimizerConfig};
    let ctx = ctx();
    let (cfg, windows) = task_windows(1);
    let eval = MotionEvaluator::new(ctx, &cfg, &windows).unwrap();
    let problems = MotionEvaluator::problems(&windows);
    let kernels = Kernels::new(ctx).unwrap();
    for (method, lr) in [(Method::Adam, 0.01), (Method::Lbfgs, 1.0)] {
        let ocfg = OptimizerConfig {
            lr,
            ..OptimizerConfig::new(method)
        };
        let run = GpuRun::new(ctx, &kernels, &eval, &problems, &ocfg, None, 30).unwrap();
        for (k, r) in run.run(ctx).unwrap().iter().enumerate() {
            let first = r.gaps[0];
            let last = r.final_gap();
            assert!(
                last < 0.7 * first,
                "{method:?} window {k}: {first} → {last}"
            );
        }
    }
}
