// The body's force terms and ground contact in f32, per invocation (one motion window).
// CPU twin: src/motion/measure.rs (measures) and src/motion/sim.rs (forces, contact).
// A term is F = −(kp (q − q*) + kd q̇) ∇q on a measure q of up to three body vectors
// uₖ = x[toₖ] − x[fromₖ] (fromₖ = NONE: the fixed world axis toₖ). Cosine and triple
// product are multilinear in the unit vectors ûₖ: with Gₖ = ∂q/∂ûₖ,
// gₖ = (Gₖ − q ûₖ)/|uₖ| and along δ, dgₖ = (dGₖ − dq ûₖ − q dûₖ − gₖ(ûₖ·δₖ))/|uₖ|.

const MAX_POINTS: u32 = 24u;
const NONE: u32 = 0xffffffffu;
const KIND_LENGTH: u32 = 0u;
const KIND_COS: u32 = 1u;
const KIND_TRIPLE: u32 = 2u;
// Coordinate to1 of the midpoint of points from0 and to0.
const KIND_MIDPOINT: u32 = 3u;

struct Term {
    kind: u32,
    from0: u32,
    to0: u32,
    from1: u32,
    to1: u32,
    from2: u32,
    to2: u32,
    channel: u32,
    goal: f32,
    kp: f32,
    kd: f32,
    pad: u32,
}

struct SimParams {
    n_windows: u32,
    n_points: u32,
    n_terms: u32,
    n_channels: u32,
    keyframes: u32,
    steps_per_key: u32,
    n_steps: u32,
    // Parameters per window (keyframes · channels + 6).
    n_params: u32,
    // This dispatch covers steps lo .. hi (forward: states lo+1 ..= hi).
    lo: u32,
    hi: u32,
    pad0: u32,
    pad1: u32,
    dt: f32,
    gravity: f32,
    ground_k: f32,
    ground_soft: f32,
    ground_damp: f32,
    friction: f32,
    friction_speed: f32,
    pad2: f32,
}

// Positions and velocities of the window's points at the current step.
var<private> xs: array<vec3<f32>, MAX_POINTS>;
var<private> vs: array<vec3<f32>, MAX_POINTS>;
// Force adjoint λ = h M⁻¹ v̄' (adjoint pass only).
var<private> lam: array<vec3<f32>, MAX_POINTS>;

fn axis_vec(a: u32) -> vec3<f32> {
    return vec3<f32>(select(0.0, 1.0, a == 0u), select(0.0, 1.0, a == 1u), select(0.0, 1.0, a == 2u));
}

fn n_vectors(kind: u32) -> u32 {
    if kind == KIND_MIDPOINT {
        return 0u;
    }
    return kind + 1u;
}

// (from, to) of vector k.
fn ends(t: Term, k: u32) -> vec2<u32> {
    if k == 0u {
        return vec2<u32>(t.from0, t.to0);
    }
    if k == 1u {
        return vec2<u32>(t.from1, t.to1);
    }
    return vec2<u32>(t.from2, t.to2);
}

// Vector k's difference in positions (which = 0), velocities (1) or λ (2).
fn diff(e: vec2<u32>, which: u32) -> vec3<f32> {
    if e.x == NONE {
        return select(vec3<f32>(0.0), axis_vec(e.y), which == 0u);
    }
    if which == 0u {
        return xs[e.y] - xs[e.x];
    }
    if which == 1u {
        return vs[e.y] - vs[e.x];
    }
    return lam[e.y] - lam[e.x];
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

// Value and per-vector gradients of a term's measure at xs.
fn local(t: Term) -> Local {
    var l: Local;
    let n = n_vectors(t.kind);
    for (var k = 0u; k < n; k++) {
        let u = diff(ends(t, k), 0u);
        l.len[k] = length(u);
        l.unit[k] = u / l.len[k];
    }
    if t.kind == KIND_LENGTH {
        l.q = l.len[0];
        l.g[0] = l.unit[0];
    } else if t.kind == KIND_MIDPOINT {
        l.q = 0.5 * dot(xs[t.from0] + xs[t.to0], axis_vec(t.to1));
    } else {
        let big = big_g(t.kind, l.unit);
        l.q = dot(big[0], l.unit[0]);
        for (var k = 0u; k < n; k++) {
            if ends(t, k).x != NONE {
                l.g[k] = (big[k] - l.q * l.unit[k]) / l.len[k];
            }
        }
    }
    return l;
}

// ∇q · (differences of `which`): q̇ for velocities, J·λ for λ.
fn grad_dot(t: Term, l: Local, which: u32) -> f32 {
    if t.kind == KIND_MIDPOINT {
        var d = vs[t.from0] + vs[t.to0];
        if which == 2u {
            d = lam[t.from0] + lam[t.to0];
        }
        return 0.5 * dot(d, axis_vec(t.to1));
    }
    var s = 0.0;
    for (var k = 0u; k < n_vectors(t.kind); k++) {
        s += dot(l.g[k], diff(ends(t, k), which));
    }
    return s;
}

// Per-vector derivative of ∇q along the differences of `which` (H·δ).
fn hess_times(t: Term, l: Local, which: u32) -> array<vec3<f32>, 3> {
    var dg: array<vec3<f32>, 3>;
    if t.kind == KIND_MIDPOINT {
        return dg;
    }
    let n = n_vectors(t.kind);
    var delta: array<vec3<f32>, 3>;
    var du: array<vec3<f32>, 3>;
    var dq = 0.0;
    for (var k = 0u; k < n; k++) {
        if ends(t, k).x != NONE {
            delta[k] = diff(ends(t, k), which);
            du[k] = (delta[k] - l.unit[k] * dot(l.unit[k], delta[k])) / l.len[k];
            dq += dot(l.g[k], delta[k]);
        }
    }
    if t.kind == KIND_LENGTH {
        dg[0] = du[0];
        return dg;
    }
    let dbig = big_dg(t.kind, l.unit, du);
    for (var k = 0u; k < n; k++) {
        if ends(t, k).x != NONE {
            dg[k] = (dbig[k] - dq * l.unit[k] - l.q * du[k] - l.g[k] * dot(l.unit[k], delta[k])) / l.len[k];
        }
    }
    return dg;
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

// Keyframe k and weight w of step n: u(n) = (1 − w) θₖ + w θₖ₊₁.
fn key_of(p: SimParams, n: u32) -> u32 {
    return min(n / p.steps_per_key, p.keyframes - 2u);
}

fn key_weight(p: SimParams, n: u32, k: u32) -> f32 {
    return f32(n - k * p.steps_per_key) / f32(p.steps_per_key);
}
