// Adjoint (reverse) pass over stored motion windows, one invocation per window, steps
// hi − 1 down to lo: with v̄' = v̄ₙ₊₁ + h x̄ₙ₊₁ and λ = h M⁻¹ v̄',
// x̄ₙ = x̄ₙ₊₁ + (∂F/∂x)ᵀλ + ∂L/∂xₙ, v̄ₙ = v̄' + (∂F/∂v)ᵀλ, θ̄ += (∂F/∂θ)ᵀλ. Per term with
// s = kp (q − q*) + kd q̇ and a = ∇q·λ: x̄ −= a (kp ∇q + kd H v) + s H λ, v̄ −= a kd ∇q,
// q̄* += a kp. CPU twin: src/motion/sim.rs `adjoint`.
#include "motion/body.wgsl"

@group(0) @binding(0) var<uniform> params: SimParams;
@group(0) @binding(1) var<storage, read> terms: array<Term>;
@group(0) @binding(2) var<storage, read> inv_mass: array<f32>;
@group(0) @binding(3) var<storage, read> theta: array<f32>;
@group(0) @binding(4) var<storage, read> traj: array<f32>;
// ∂L/∂xₙ per window and state, 3 floats per point.
@group(0) @binding(5) var<storage, read> seeds: array<f32>;
// x̄ and v̄ per window between dispatches.
@group(0) @binding(6) var<storage, read_write> adj: array<f32>;
// ∂L/∂θ per window (the optimizer's gradient buffer).
@group(0) @binding(7) var<storage, read_write> grad: array<f32>;

fn traj3(i: u32) -> vec3<f32> {
    return vec3<f32>(traj[i], traj[i + 1u], traj[i + 2u]);
}

fn seed3(i: u32) -> vec3<f32> {
    return vec3<f32>(seeds[i], seeds[i + 1u], seeds[i + 2u]);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let p = params;
    if w >= p.n_windows {
        return;
    }
    let np = p.n_points;
    let h = p.dt;
    let tw = w * p.n_params;
    let ab = w * 6u * np;
    var xb: array<vec3<f32>, MAX_POINTS>;
    var vb: array<vec3<f32>, MAX_POINTS>;
    if p.hi == p.n_steps {
        let sb = (w * (p.n_steps + 1u) + p.n_steps) * 3u * np;
        for (var i = 0u; i < np; i++) {
            xb[i] = seed3(sb + 3u * i);
        }
        for (var j = 0u; j < p.n_params; j++) {
            grad[tw + j] = 0.0;
        }
    } else {
        for (var i = 0u; i < np; i++) {
            xb[i] = vec3<f32>(adj[ab + 3u * i], adj[ab + 3u * i + 1u], adj[ab + 3u * i + 2u]);
            let j = ab + 3u * (np + i);
            vb[i] = vec3<f32>(adj[j], adj[j + 1u], adj[j + 2u]);
        }
    }
    for (var n = p.hi; n > p.lo; n--) {
        let step = n - 1u;
        let tb = (w * (p.n_steps + 1u) + step) * 6u * np;
        let sb = (w * (p.n_steps + 1u) + step) * 3u * np;
        for (var i = 0u; i < np; i++) {
            xs[i] = traj3(tb + 3u * i);
            vs[i] = traj3(tb + 3u * (np + i));
            let vp = vb[i] + h * xb[i];
            lam[i] = h * vp * inv_mass[i];
            xb[i] += seed3(sb + 3u * i);
            vb[i] = vp;
        }
        let k = key_of(p, step);
        let kw = key_weight(p, step, k);
        let t0 = tw + k * p.n_channels;
        for (var ti = 0u; ti < p.n_terms; ti++) {
            let t = terms[ti];
            let l = local(t);
            var goal = t.goal;
            if t.channel != NONE {
                goal = (1.0 - kw) * theta[t0 + t.channel] + kw * theta[t0 + p.n_channels + t.channel];
            }
            let a = grad_dot(t, l, 2u);
            let s = t.kp * (l.q - goal) + t.kd * grad_dot(t, l, 1u);
            if t.kind == KIND_MIDPOINT {
                let e = axis_vec(t.to1);
                xb[t.from0] -= 0.5 * a * t.kp * e;
                xb[t.to0] -= 0.5 * a * t.kp * e;
                vb[t.from0] -= 0.5 * a * t.kd * e;
                vb[t.to0] -= 0.5 * a * t.kd * e;
            } else {
                let hv = hess_times(t, l, 1u);
                let hl = hess_times(t, l, 2u);
                for (var vk = 0u; vk < n_vectors(t.kind); vk++) {
                    let e = ends(t, vk);
                    if e.x != NONE {
                        let dx = a * (t.kp * l.g[vk] + t.kd * hv[vk]) + s * hl[vk];
                        let dv = a * t.kd * l.g[vk];
                        xb[e.y] -= dx;
                        xb[e.x] += dx;
                        vb[e.y] -= dv;
                        vb[e.x] += dv;
                    }
                }
            }
            if t.channel != NONE {
                let ub = a * t.kp;
                grad[t0 + t.channel] += (1.0 - kw) * ub;
                grad[t0 + p.n_channels + t.channel] += kw * ub;
            }
        }
        for (var i = 0u; i < np; i++) {
            let c = contact(p, xs[i], vs[i]);
            let v = vs[i];
            let lm = lam[i];
            let lt = lm.x * v.x + lm.z * v.z;
            xb[i].y += lm.y * (c.ds - p.ground_damp * v.y * c.dsig) - p.friction * lt / c.n * c.ds;
            let kf = -p.friction * c.s / c.n;
            let r = lt / (c.n * c.n);
            vb[i] += vec3<f32>(kf * (lm.x - r * v.x), -lm.y * p.ground_damp * c.sig, kf * (lm.z - r * v.z));
        }
    }
    if p.lo == 0u {
        let root = tw + p.keyframes * p.n_channels;
        var px = vec3<f32>(0.0);
        var pv = vec3<f32>(0.0);
        for (var i = 0u; i < np; i++) {
            px += xb[i];
            pv += vb[i];
        }
        for (var c = 0u; c < 3u; c++) {
            grad[root + c] = px[c];
            grad[root + 3u + c] = pv[c];
        }
    } else {
        for (var i = 0u; i < np; i++) {
            adj[ab + 3u * i] = xb[i].x;
            adj[ab + 3u * i + 1u] = xb[i].y;
            adj[ab + 3u * i + 2u] = xb[i].z;
            let j = ab + 3u * (np + i);
            adj[j] = vb[i].x;
            adj[j + 1u] = vb[i].y;
            adj[j + 2u] = vb[i].z;
        }
    }
}
