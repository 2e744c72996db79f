// Robust reprojection error of every motion window and its gradient with respect to
// the observed states (the adjoint pass's seeds), one invocation per window:
// E = Σ w s² ln(1 + r²/s²) / (seen joints), r the pixel error of a projected point.
// CPU twin: src/motion/task.rs `data_term`.

struct LossParams {
    n_windows: u32,
    n_points: u32,
    n_obs: u32,
    obs_every: u32,
    n_steps: u32,
    pad0: u32,
    pad1: u32,
    s2: f32,
}

@group(0) @binding(0) var<uniform> params: LossParams;
@group(0) @binding(1) var<storage, read> traj: array<f32>;
// Per window, observed frame and point: u, v, weight.
@group(0) @binding(2) var<storage, read> obs: array<f32>;
// Per window: rows of R (with 1/seen in slot 3), centre, focal (16 floats).
@group(0) @binding(3) var<storage, read> camera: array<f32>;
@group(0) @binding(4) var<storage, read_write> seeds: array<f32>;
@group(0) @binding(5) var<storage, read_write> data: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let p = params;
    if w >= p.n_windows {
        return;
    }
    let np = p.n_points;
    let cb = 16u * w;
    let r0 = vec3<f32>(camera[cb], camera[cb + 1u], camera[cb + 2u]);
    let r1 = vec3<f32>(camera[cb + 4u], camera[cb + 5u], camera[cb + 6u]);
    let r2 = vec3<f32>(camera[cb + 8u], camera[cb + 9u], camera[cb + 10u]);
    let centre = vec3<f32>(camera[cb + 12u], camera[cb + 13u], camera[cb + 14u]);
    let focal = camera[cb + 15u];
    let inv_seen = camera[cb + 3u];
    var total = 0.0;
    for (var j = 0u; j < p.n_obs; j++) {
        let step = j * p.obs_every;
        // Window-minor states and seeds (forward.wgsl).
        let tb = step * 6u * np * p.n_windows + w;
        let sb = step * 3u * np * p.n_windows + w;
        let P = p.n_windows;
        for (var i = 0u; i < np; i++) {
            let ob = 3u * ((w * p.n_obs + j) * np + i);
            let x = vec3<f32>(traj[tb + 3u * i * P], traj[tb + (3u * i + 1u) * P], traj[tb + (3u * i + 2u) * P]);
            let q = vec3<f32>(dot(r0, x - centre), dot(r1, x - centre), dot(r2, x - centre));
            let du = focal * q.x / q.z - obs[ob];
            let dv = focal * q.y / q.z - obs[ob + 1u];
            let wt = obs[ob + 2u] * inv_seen;
            let rr = du * du + dv * dv;
            total += wt * p.s2 * log(1.0 + rr / p.s2);
            let d = 2.0 * wt / (1.0 + rr / p.s2);
            let a = d * du;
            let b = d * dv;
            let dq = focal * vec3<f32>(a / q.z, b / q.z, -(a * q.x + b * q.y) / (q.z * q.z));
            let g = dq.x * r0 + dq.y * r1 + dq.z * r2;
            seeds[sb + 3u * i * P] = g.x;
            seeds[sb + (3u * i + 1u) * P] = g.y;
            seeds[sb + (3u * i + 2u) * P] = g.z;
        }
    }
    data[w] = total;
}
