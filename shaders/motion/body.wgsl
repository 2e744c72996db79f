// The math of the body's force terms and ground contact in f32, on values: the kernels
// are completed by code generated from the body (src/motion/codegen.rs) that calls
// these functions with every point index a constant, so a window's state stays in
// registers. CPU twin: src/motion/measure.rs (measures) and src/motion/sim.rs.
//
// A term is F = −(kp (q − q*) + kd q̇) ∇q on a measure q of up to three body vectors
// uₖ = x[toₖ] − x[fromₖ] or fixed world axes (not moving). Cosine and triple product
// are multilinear in the unit vectors ûₖ: with Gₖ = ∂q/∂ûₖ, gₖ = (Gₖ − q ûₖ)/|uₖ| and
// along δ, dgₖ = (dGₖ − dq ûₖ − q dûₖ − gₖ(ûₖ·δₖ))/|uₖ|.

const KIND_LENGTH: u32 = 0u;
const KIND_COS: u32 = 1u;
const KIND_TRIPLE: u32 = 2u;

struct SimParams {
    n_windows: u32,
    n_steps: u32,
    // Parameters per window (keyframes · channels + 6).
    n_params: u32,
    steps_per_key: u32,
    keyframes: u32,
    // This dispatch covers steps lo .. hi.
    lo: u32,
    hi: u32,
    pad0: u32,
    dt: f32,
    ground_k: f32,
    ground_soft: f32,
    ground_damp: f32,
    friction: f32,
    friction_speed: f32,
    pad1: f32,
    pad2: f32,
}

struct Local {
    q: f32,
    len: array<f32, 3>,
    unit: array<vec3<f32>, 3>,
    g: array<vec3<f32>, 3>,
}

fn big_g(kind: u32, u: array<vec3<f32>, 3>) -> array<vec3<f32>, 3> {
    if kind == KIND_COS {
        return array<vec3<f32>, 3>(u[1], u[0], vec3<f32>(0.0));
    }
    return array<vec3<f32>, 3>(cross(u[1], u[2]), cross(u[2], u[0]), cross(u[0], u[1]));
}

fn big_dg(kind: u32, u: array<vec3<f32>, 3>, du: array<vec3<f32>, 3>) -> array<vec3<f32>, 3> {
    if kind == KIND_COS {
        return array<vec3<f32>, 3>(du[1], du[0], vec3<f32>(0.0));
    }
    return array<vec3<f32>, 3>(
        cross(du[1], u[2]) + cross(u[1], du[2]),
        cross(du[2], u[0]) + cross(u[2], du[0]),
        cross(du[0], u[1]) + cross(u[0], du[1]),
    );
}

// Value and per-vector gradients of a measure of vectors `u` (kind + 1 of them).
// Loops over k are written out, here and below: with every array index a constant,
// the arrays stay in registers (loops bounded by `kind` kept them in memory and made
// the motion passes about 7x slower on lavapipe).
fn local_of(kind: u32, u: array<vec3<f32>, 3>, moving: vec3<bool>) -> Local {
    var l: Local;
    l.len[0] = length(u[0]);
    l.unit[0] = u[0] / l.len[0];
    if kind == KIND_LENGTH {
        l.q = l.len[0];
        l.g[0] = l.unit[0];
        return l;
    }
    l.len[1] = length(u[1]);
    l.unit[1] = u[1] / l.len[1];
    if kind == KIND_TRIPLE {
        l.len[2] = length(u[2]);
        l.unit[2] = u[2] / l.len[2];
    }
    let big = big_g(kind, l.unit);
    l.q = dot(big[0], l.unit[0]);
    if moving.x {
        l.g[0] = (big[0] - l.q * l.unit[0]) / l.len[0];
    }
    if moving.y {
        l.g[1] = (big[1] - l.q * l.unit[1]) / l.len[1];
    }
    if kind == KIND_TRIPLE && moving.z {
        l.g[2] = (big[2] - l.q * l.unit[2]) / l.len[2];
    }
    return l;
}

fn dot3(a: array<vec3<f32>, 3>, b: array<vec3<f32>, 3>) -> f32 {
    return dot(a[0], b[0]) + dot(a[1], b[1]) + dot(a[2], b[2]);
}

// Change of unit vector k along `delta`.
fn du_of(l: Local, delta: array<vec3<f32>, 3>, k: u32) -> vec3<f32> {
    return (delta[k] - l.unit[k] * dot(l.unit[k], delta[k])) / l.len[k];
}

// Change of gradient k along `delta`, given the changes of the unit vectors.
fn dg_of(l: Local, delta: array<vec3<f32>, 3>, du: array<vec3<f32>, 3>, dbig: array<vec3<f32>, 3>, dq: f32, k: u32) -> vec3<f32> {
    return (dbig[k] - dq * l.unit[k] - l.q * du[k] - l.g[k] * dot(l.unit[k], delta[k])) / l.len[k];
}

// Per-vector derivative of the gradient along vector changes `delta` (H·δ).
fn hess_of(kind: u32, l: Local, delta: array<vec3<f32>, 3>, moving: vec3<bool>) -> array<vec3<f32>, 3> {
    var du: array<vec3<f32>, 3>;
    var dg: array<vec3<f32>, 3>;
    if moving.x {
        du[0] = du_of(l, delta, 0u);
    }
    if kind >= KIND_COS && moving.y {
        du[1] = du_of(l, delta, 1u);
    }
    if kind == KIND_TRIPLE && moving.z {
        du[2] = du_of(l, delta, 2u);
    }
    if kind == KIND_LENGTH {
        dg[0] = du[0];
        return dg;
    }
    let dq = dot3(l.g, delta);
    let dbig = big_dg(kind, l.unit, du);
    if moving.x {
        dg[0] = dg_of(l, delta, du, dbig, dq, 0u);
    }
    if moving.y {
        dg[1] = dg_of(l, delta, du, dbig, dq, 1u);
    }
    if kind == KIND_TRIPLE && moving.z {
        dg[2] = dg_of(l, delta, du, dbig, dq, 2u);
    }
    return dg;
}

// Force of a term on the `to` point of each vector (the `from` point gets its
// negative), given vectors u, their velocity differences du and the target.
fn term_force(kind: u32, u: array<vec3<f32>, 3>, du: array<vec3<f32>, 3>, moving: vec3<bool>, kp: f32, kd: f32, goal: f32) -> array<vec3<f32>, 3> {
    let l = local_of(kind, u, moving);
    let s = kp * (l.q - goal) + kd * dot3(l.g, du);
    return array<vec3<f32>, 3>(-s * l.g[0], -s * l.g[1], -s * l.g[2]);
}

// A term's share of the adjoint: with s = kp (q − q*) + kd q̇ and a = ∇q·λ, x̄ −= dx
// and v̄ −= dv on each vector's `to` point (the negatives on `from`), q̄* += ub.
struct TermAdjoint {
    dx: array<vec3<f32>, 3>,
    dv: array<vec3<f32>, 3>,
    ub: f32,
}

fn term_adjoint(kind: u32, u: array<vec3<f32>, 3>, du: array<vec3<f32>, 3>, dl: array<vec3<f32>, 3>, moving: vec3<bool>, kp: f32, kd: f32, goal: f32) -> TermAdjoint {
    let l = local_of(kind, u, moving);
    let a = dot3(l.g, dl);
    let s = kp * (l.q - goal) + kd * dot3(l.g, du);
    // H is linear, so a kd H v + s H λ is one product along a kd v + s λ.
    let ak = a * kd;
    let h = hess_of(kind, l, array<vec3<f32>, 3>(ak * du[0] + s * dl[0], ak * du[1] + s * dl[1], ak * du[2] + s * dl[2]), moving);
    var r: TermAdjoint;
    r.dx[0] = a * kp * l.g[0] + h[0];
    r.dv[0] = ak * l.g[0];
    if kind >= KIND_COS {
        r.dx[1] = a * kp * l.g[1] + h[1];
        r.dv[1] = ak * l.g[1];
    }
    if kind == KIND_TRIPLE {
        r.dx[2] = a * kp * l.g[2] + h[2];
        r.dv[2] = ak * l.g[2];
    }
    r.ub = a * kp;
    return r;
}

// Ground contact: softplus penalty, damping gated by contact, regularized friction.
struct Contact {
    s: f32,
    ds: f32,
    sig: f32,
    dsig: f32,
    n: f32,
}

fn contact(p: SimParams, x: vec3<f32>, v: vec3<f32>) -> Contact {
    let z = -x.y / p.ground_soft;
    var c: Contact;
    c.sig = 1.0 / (1.0 + exp(-z));
    c.s = p.ground_k * p.ground_soft * (max(z, 0.0) + log(1.0 + exp(-abs(z))));
    c.ds = -p.ground_k * c.sig;
    c.dsig = -c.sig * (1.0 - c.sig) / p.ground_soft;
    c.n = sqrt(v.x * v.x + v.z * v.z + p.friction_speed * p.friction_speed);
    return c;
}

fn contact_force(p: SimParams, x: vec3<f32>, v: vec3<f32>) -> vec3<f32> {
    let c = contact(p, x, v);
    let ft = -p.friction * c.s / c.n;
    return vec3<f32>(ft * v.x, c.s - p.ground_damp * v.y * c.sig, ft * v.z);
}

// (∂F/∂x)ᵀλ (first) and (∂F/∂v)ᵀλ (second) of one point's contact force.
fn contact_adjoint(p: SimParams, x: vec3<f32>, v: vec3<f32>, lm: vec3<f32>) -> array<vec3<f32>, 2> {
    let c = contact(p, x, v);
    let lt = lm.x * v.x + lm.z * v.z;
    let dy = lm.y * (c.ds - p.ground_damp * v.y * c.dsig) - p.friction * lt / c.n * c.ds;
    let kf = -p.friction * c.s / c.n;
    let r = lt / (c.n * c.n);
    return array<vec3<f32>, 2>(
        vec3<f32>(0.0, dy, 0.0),
        vec3<f32>(kf * (lm.x - r * v.x), -lm.y * p.ground_damp * c.sig, kf * (lm.z - r * v.z)),
    );
}

// Keyframe k and weight w of step n: u(n) = (1 − w) θₖ + w θₖ₊₁.
fn key_of(p: SimParams, n: u32) -> u32 {
    return min(n / p.steps_per_key, p.keyframes - 2u);
}

fn key_weight(p: SimParams, n: u32, k: u32) -> f32 {
    return f32(n - k * p.steps_per_key) / f32(p.steps_per_key);
}
