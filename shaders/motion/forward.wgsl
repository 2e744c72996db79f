// Forward simulation of motion windows, one invocation per window: semi-implicit Euler
// over steps lo .. hi, storing every state for the adjoint pass.
// CPU twin: src/motion/sim.rs `simulate`.
#include "motion/body.wgsl"

@group(0) @binding(0) var<uniform> params: SimParams;
@group(0) @binding(1) var<storage, read> terms: array<Term>;
@group(0) @binding(2) var<storage, read> inv_mass: array<f32>;
// Per window: keyframes · channels targets, then the root offsets p₀ and v₀'.
@group(0) @binding(3) var<storage, read> theta: array<f32>;
// Per window: initial positions, then initial velocities (3 floats per point each).
@group(0) @binding(4) var<storage, read> init: array<f32>;
// Per window and state n = 0 ..= N: positions, then velocities.
@group(0) @binding(5) var<storage, read_write> traj: array<f32>;
// Per window: 0 while every state is finite and within 1 km, else 1.
@group(0) @binding(6) var<storage, read_write> status: array<u32>;

fn load3(i: u32) -> vec3<f32> {
    return vec3<f32>(traj[i], traj[i + 1u], traj[i + 2u]);
}

fn store3(i: u32, v: vec3<f32>) {
    traj[i] = v.x;
    traj[i + 1u] = v.y;
    traj[i + 2u] = v.z;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let p = params;
    if w >= p.n_windows {
        return;
    }
    let np = p.n_points;
    let state = 6u * np;
    let tw = w * p.n_params;
    var base = (w * (p.n_steps + 1u) + p.lo) * state;
    if p.lo == 0u {
        let root = tw + p.keyframes * p.n_channels;
        let p0 = vec3<f32>(theta[root], theta[root + 1u], theta[root + 2u]);
        let v0 = vec3<f32>(theta[root + 3u], theta[root + 4u], theta[root + 5u]);
        let ib = w * state;
        for (var i = 0u; i < np; i++) {
            let j = ib + 3u * i;
            xs[i] = vec3<f32>(init[j], init[j + 1u], init[j + 2u]) + p0;
            vs[i] = vec3<f32>(init[j + 3u * np], init[j + 3u * np + 1u], init[j + 3u * np + 2u]) + v0;
            store3(base + 3u * i, xs[i]);
            store3(base + 3u * (np + i), vs[i]);
        }
        status[w] = 0u;
    } else {
        for (var i = 0u; i < np; i++) {
            xs[i] = load3(base + 3u * i);
            vs[i] = load3(base + 3u * (np + i));
        }
    }
    var bad = status[w];
    var fs: array<vec3<f32>, MAX_POINTS>;
    for (var n = p.lo; n < p.hi; n++) {
        let k = key_of(p, n);
        let kw = key_weight(p, n, k);
        let t0 = tw + k * p.n_channels;
        for (var i = 0u; i < np; i++) {
            fs[i] = vec3<f32>(0.0, -p.gravity / inv_mass[i], 0.0) + contact_force(p, xs[i], vs[i]);
        }
        for (var ti = 0u; ti < p.n_terms; ti++) {
            let t = terms[ti];
            let l = local(t);
            var goal = t.goal;
            if t.channel != NONE {
                goal = (1.0 - kw) * theta[t0 + t.channel] + kw * theta[t0 + p.n_channels + t.channel];
            }
            let s = t.kp * (l.q - goal) + t.kd * grad_dot(t, l, 1u);
            if t.kind == KIND_MIDPOINT {
                let f = -0.5 * s * axis_vec(t.to1);
                fs[t.from0] += f;
                fs[t.to0] += f;
            } else {
                for (var vk = 0u; vk < n_vectors(t.kind); vk++) {
                    let e = ends(t, vk);
                    if e.x != NONE {
                        fs[e.y] -= s * l.g[vk];
                        fs[e.x] += s * l.g[vk];
                    }
                }
            }
        }
        base += state;
        for (var i = 0u; i < np; i++) {
            vs[i] += p.dt * fs[i] * inv_mass[i];
            xs[i] += p.dt * vs[i];
            if !all(abs(xs[i]) < vec3<f32>(1000.0)) || !all(abs(vs[i]) < vec3<f32>(1.0e6)) {
                bad = 1u;
            }
            store3(base + 3u * i, xs[i]);
            store3(base + 3u * (np + i), vs[i]);
        }
    }
    status[w] = bad;
}
