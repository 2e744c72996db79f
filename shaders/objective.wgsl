// Objective stage: the gap f(x) − f* and its gradient for every problem of a batch.
// CPU twin: `Function::gap_grad` through `problem::ProblemSpec::cpu_gap_grad`.
//
// One workgroup per problem. f(x) = scale · F(z* + e) with e = R (x − center), so the
// problem's minimizer sits at `center`. Functions are written in e, the offset from
// their minimizer, which keeps f32 precise near the optimum.
//
// A user objective (a file that defines `user_term`, `user_grad`, USER_F_STAR and
// USER_DOMAIN_LO/HI) is placed before this file by the engine; `coord(j)` reads z_j.

#include "shared/problem.wgsl"
#include "shared/reduce.wgsl"
#include "shared/math.wgsl"

struct ObjParams {
    n_problems: u32,
    // Σ d_p: length of one per-coordinate buffer.
    n_total: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> params: ObjParams;
@group(0) @binding(1) var<storage, read> problems: array<Problem>;
@group(0) @binding(2) var<storage, read> center: array<f32>;
// Rotations, rows and columns padded with zeros to a multiple of 4 (`problem::rotation_len`).
@group(0) @binding(3) var<storage, read> rot: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> f_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;
// Three per-coordinate regions: e | aux (Perm's inner sums) | ∇_z F.
@group(0) @binding(7) var<storage, read_write> scratch: array<f32>;

var<private> cur_off: u32;
var<private> cur_func: u32;
var<private> cur_dim: u32;

// Set when a pipeline is built for one function: the switch then folds away.
override FUNC_SPEC: u32 = 0xffffffffu;

const PERM_BETA: f32 = 10.0;
const STYB_ZSTAR: f32 = -2.9035340277711778;
const SCHWEFEL_C: f32 = 418.9828872724339;
const SCHWEFEL_ZSTAR: f32 = 420.968746359982;
const ACKLEY_A: f32 = 20.0;
const ACKLEY_B: f32 = 0.2;
const E_CONST: f32 = 2.718281828459045;

// Offset of coordinate j from the minimizer.
fn e_at(j: u32) -> f32 {
    return scratch[cur_off + j];
}

// Set by `optimus-gpu check` (`ObjectiveStage::checking`): a user objective's read of a
// coordinate past its problem's d gives NaN instead of another problem's coordinate.
override CHECK_BOUNDS: bool = false;

// Coordinate j of the current problem (the user objective's accessor).
fn coord(j: u32) -> f32 {
    if CHECK_BOUNDS && j >= cur_dim {
        return bitcast<f32>(0x7fc00000u);
    }
    return zstar(cur_func, j, cur_dim) + e_at(j);
}

// scratch[start + j .. start + j + 4], zero past d (the padding columns of R).
fn v4_at(start: u32, d: u32, j: u32) -> vec4<f32> {
    let last = start + d - 1u;
    return vec4<f32>(
        scratch[start + j],
        select(0.0, scratch[min(start + j + 1u, last)], j + 1u < d),
        select(0.0, scratch[min(start + j + 2u, last)], j + 2u < d),
        select(0.0, scratch[min(start + j + 3u, last)], j + 3u < d),
    );
}

// scratch[start + j .. start + j + 4] = v, the components up to d.
fn store4(start: u32, d: u32, j: u32, v: vec4<f32>) {
    scratch[start + j] = v.x;
    if j + 1u < d {
        scratch[start + j + 1u] = v.y;
    }
    if j + 2u < d {
        scratch[start + j + 2u] = v.z;
    }
    if j + 3u < d {
        scratch[start + j + 3u] = v.w;
    }
}

fn aux_at(j: u32) -> f32 {
    return scratch[params.n_total + cur_off + j];
}

// Minimizer z*_i of function `func` at dimension d (twin: `Function::minimizer`).
fn zstar(func: u32, i: u32, d: u32) -> f32 {
    let k = f32(i + 1u);
    switch func {
        case F_ROSENBROCK, F_LEVY: { return 1.0; }
        case F_STYBLINSKI_TANG: { return STYB_ZSTAR; }
        case F_DIXON_PRICE: { return exp2(-(1.0 - exp2(-f32(i)))); }
        case F_PERM: { return 1.0 / k; }
        case F_TRID: { return k * (f32(d) + 1.0 - k); }
        case F_SCHWEFEL: { return SCHWEFEL_ZSTAR; }
        default: { return 0.0; }
    }
}

// Per-coordinate contributions to the problem-wide sums that some functions need.
fn pre_sums(func: u32, i: u32, d: u32) -> vec4<f32> {
    let z = coord(i);
    switch func {
        case F_ACKLEY: {
            let s = sinpi(z);
            return vec4<f32>(z * z, -2.0 * s * s, 0.0, 0.0);
        }
        case F_GRIEWANK: {
            let th = z / sqrt(f32(i + 1u));
            let c = cos(th);
            let h = sin(0.5 * th);
            var lg: f32;
            if c > 0.0 {
                lg = log1p_(-2.0 * h * h);
            } else {
                lg = log(abs(c));
            }
            return vec4<f32>(0.0, lg, select(0.0, 1.0, c < 0.0), 0.0);
        }
        case F_ZAKHAROV: {
            return vec4<f32>(0.5 * f32(i + 1u) * z, 0.0, 0.0, 0.0);
        }
        default: { return vec4<f32>(0.0); }
    }
}

// Perm's inner sum Σ_j (j + β)(z_j^i − j^−i) for i = row + 1.
fn perm_inner(row: u32, d: u32) -> f32 {
    let i = row + 1u;
    var acc = 0.0;
    for (var j = 1u; j <= d; j++) {
        let jf = f32(j);
        acc += (jf + PERM_BETA) * (ipow(coord(j - 1u), i) - 1.0 / ipow(jf, i));
    }
    return acc;
}

// Part of the gap that is not a sum over coordinates (Ackley, Griewank, Zakharov, user).
fn global_gap(func: u32, s: vec4<f32>, d: u32) -> f32 {
    let n = f32(d);
    switch func {
        case F_ACKLEY: {
            let r = sqrt(s.x / n);
            return ACKLEY_A * -expm1_(-ACKLEY_B * r) + E_CONST * -expm1_(s.y / n);
        }
        case F_GRIEWANK: {
            // 1 − Π cos = 1 − (−1)^neg · exp(Σ log|cos|).
            if (u32(s.z) & 1u) == 0u {
                return -expm1_(s.y);
            }
            return 1.0 + exp(s.y);
        }
        case F_ZAKHAROV: {
            return s.x * s.x + s.x * s.x * s.x * s.x;
        }
        case FUNC_USER: {
            return -USER_F_STAR;
        }
        default: { return 0.0; }
    }
}

// Coordinate i's term of the gap (x) and ∂F/∂z_i (y).
fn term_grad(func: u32, i: u32, d: u32, s: vec4<f32>) -> vec2<f32> {
    let e = e_at(i);
    let z = coord(i);
    let n = f32(d);
    switch func {
        case F_SPHERE: {
            return vec2<f32>(z * z, 2.0 * z);
        }
        case F_ROSENBROCK: {
            var t = 0.0;
            var g = 0.0;
            if i + 1u < d {
                // z_{i+1} − z_i² written in offsets from z* = 1.
                let a = e_at(i + 1u) - 2.0 * e - e * e;
                t = 100.0 * a * a + e * e;
                g = -400.0 * z * a + 2.0 * e;
            }
            if i > 0u {
                let ep = e_at(i - 1u);
                g += 200.0 * (e - 2.0 * ep - ep * ep);
            }
            return vec2<f32>(t, g);
        }
        case F_RASTRIGIN: {
            let sp = sinpi(z);
            return vec2<f32>(z * z + 20.0 * sp * sp, 2.0 * z + 20.0 * PI * sinpi(2.0 * z));
        }
        case F_ACKLEY: {
            let r = sqrt(s.x / n);
            var g = exp(s.y / n + 1.0) * 2.0 * PI * sinpi(2.0 * z) / n;
            if r > 0.0 {
                g += ACKLEY_A * ACKLEY_B * exp(-ACKLEY_B * r) * z / (n * r);
            }
            return vec2<f32>(0.0, g);
        }
        case F_LEVY: {
            // w = 1 + (z − 1)/4 = 1 + e/4; sin(π w) = −sin(π e/4) etc.
            let wm = 0.25 * e;
            var t = 0.0;
            var gw = 0.0;
            if i == 0u {
                let s1 = sinpi(wm);
                t += s1 * s1;
                gw += PI * sinpi(2.0 * wm);
            }
            if i + 1u < d {
                let q = PI * (1.0 + wm) + 1.0;
                let sq = sin(q);
                t += wm * wm * (1.0 + 10.0 * sq * sq);
                gw += 2.0 * wm * (1.0 + 10.0 * sq * sq) + wm * wm * 10.0 * PI * sin(2.0 * q);
            } else {
                let s2 = sinpi(2.0 * wm);
                t += wm * wm * (1.0 + s2 * s2);
                gw += 2.0 * wm * (1.0 + s2 * s2) + wm * wm * 2.0 * PI * sinpi(4.0 * wm);
            }
            return vec2<f32>(t, 0.25 * gw);
        }
        case F_GRIEWANK: {
            let sq = sqrt(f32(i + 1u));
            let c = cos(z / sq);
            // Π_{j≠i} cos = sign · exp(Σ log|cos| − log|cos_i|).
            let neg_others = u32(s.z) - select(0u, 1u, c < 0.0);
            let sign = select(1.0, -1.0, (neg_others & 1u) == 1u);
            var others = 0.0;
            if c != 0.0 {
                others = sign * exp(s.y - log(abs(c)));
            }
            return vec2<f32>(z * z / 4000.0, z / 2000.0 + others * sin(z / sq) / sq);
        }
        case F_STYBLINSKI_TANG: {
            let zs = STYB_ZSTAR;
            let t = 0.5 * e * e * (z * z + 2.0 * zs * z + 3.0 * zs * zs - 16.0);
            let g = 0.5 * e * (4.0 * (z * z + z * zs + zs * zs) - 32.0);
            return vec2<f32>(t, g);
        }
        case F_DIXON_PRICE: {
            // a_i = 2 z_i² − z_{i−1}, written in offsets (its value at z* is 0).
            var t = 0.0;
            var g = 0.0;
            if i == 0u {
                t = e * e;
                g = 2.0 * e;
            } else {
                let a = e * (4.0 * zstar(F_DIXON_PRICE, i, d) + 2.0 * e) - e_at(i - 1u);
                t = f32(i + 1u) * a * a;
                g = f32(i + 1u) * 2.0 * a * 4.0 * z;
            }
            if i + 1u < d {
                let en = e_at(i + 1u);
                let an = en * (4.0 * zstar(F_DIXON_PRICE, i + 1u, d) + 2.0 * en) - e;
                g -= f32(i + 2u) * 2.0 * an;
            }
            return vec2<f32>(t, g);
        }
        case F_POWELL: {
            let b = i & ~3u;
            let a0 = coord(b);
            let a1 = coord(b + 1u);
            let a2 = coord(b + 2u);
            let a3 = coord(b + 3u);
            let t1 = a0 + 10.0 * a1;
            let t2 = a2 - a3;
            let t3 = a1 - 2.0 * a2;
            let t4 = a0 - a3;
            var t = 0.0;
            if i == b {
                t = t1 * t1 + 5.0 * t2 * t2 + t3 * t3 * t3 * t3 + 10.0 * t4 * t4 * t4 * t4;
            }
            var g: f32;
            switch i - b {
                case 0u: { g = 2.0 * t1 + 40.0 * t4 * t4 * t4; }
                case 1u: { g = 20.0 * t1 + 4.0 * t3 * t3 * t3; }
                case 2u: { g = 10.0 * t2 - 8.0 * t3 * t3 * t3; }
                default: { g = -10.0 * t2 - 40.0 * t4 * t4 * t4; }
            }
            return vec2<f32>(t, g);
        }
        case F_PERM: {
            let inner = aux_at(i);
            var acc = 0.0;
            var pw = 1.0;
            for (var r = 1u; r <= d; r++) {
                acc += 2.0 * aux_at(r - 1u) * f32(r) * pw;
                pw *= z;
            }
            return vec2<f32>(inner * inner, (f32(i + 1u) + PERM_BETA) * acc);
        }
        case F_ZAKHAROV: {
            let k = 0.5 * f32(i + 1u);
            return vec2<f32>(z * z, 2.0 * z + (2.0 * s.x + 4.0 * s.x * s.x * s.x) * k);
        }
        case F_TRID: {
            var t = e * e;
            var g = 2.0 * e;
            if i > 0u {
                t -= e * e_at(i - 1u);
                g -= e_at(i - 1u);
            }
            if i + 1u < d {
                g -= e_at(i + 1u);
            }
            return vec2<f32>(t, g);
        }
        case F_SCHWEFEL: {
            let sr = sqrt(abs(z));
            return vec2<f32>(SCHWEFEL_C - z * sin(sr), -(sin(sr) + 0.5 * sr * cos(sr)));
        }
        default: {
            return vec2<f32>(user_term(i, d), user_grad(i, d));
        }
    }
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let p = problem_index(wid, nwg);
    if p >= params.n_problems {
        return;
    }
    let prob = problems[p];
    let d = prob.dim;
    let off = prob.offset;
    cur_off = off;
    cur_func = select(prob.func, FUNC_SPEC, FUNC_SPEC != 0xffffffffu);
    cur_dim = d;
    let n = params.n_total;

    // e = R (x − center) / width, or (x − center) / width without a rotation. With
    // one, v = x − center goes to the third scratch region first, and each invocation
    // makes four rows of e from vec4 reads of R: one read serves four multiply-adds
    // (on lavapipe the loads are the cost; one scalar read per multiply-add ran the
    // products at under 1 GFLOP/s).
    if prob.rot == ROT_NONE {
        for (var i = lid; i < d; i += WG) {
            scratch[off + i] = (x[off + i] - center[off + i]) * prob.inv_width;
        }
    } else {
        for (var j = lid; j < d; j += WG) {
            scratch[2u * n + off + j] = x[off + j] - center[off + j];
        }
        storageBarrier();
        let s4 = (d + 3u) / 4u;
        let base = prob.rot / 4u;
        for (var q = lid; q < s4; q += WG) {
            let r = base + 4u * q * s4;
            var e = vec4<f32>(0.0);
            for (var j4 = 0u; j4 < s4; j4++) {
                let v = v4_at(2u * n + off, d, 4u * j4);
                let r0 = rot[r + j4];
                let r1 = rot[r + s4 + j4];
                let r2 = rot[r + 2u * s4 + j4];
                let r3 = rot[r + 3u * s4 + j4];
                // Each row adds its terms in the order of j, as the twin does.
                e += vec4<f32>(r0.x, r1.x, r2.x, r3.x) * v.x;
                e += vec4<f32>(r0.y, r1.y, r2.y, r3.y) * v.y;
                e += vec4<f32>(r0.z, r1.z, r2.z, r3.z) * v.z;
                e += vec4<f32>(r0.w, r1.w, r2.w, r3.w) * v.w;
            }
            store4(off, d, 4u * q, e * prob.inv_width);
        }
    }
    storageBarrier();

    if cur_func == F_PERM {
        for (var i = lid; i < d; i += WG) {
            scratch[n + off + i] = perm_inner(i, d);
        }
    }
    var part = slots_new();
    for (var i = lid; i < d; i += WG) {
        slot_add(&part, i, pre_sums(cur_func, i, d));
    }
    let sums = slots_sum(lid, part);
    storageBarrier();

    var value = slots_new();
    for (var i = lid; i < d; i += WG) {
        let tg = term_grad(cur_func, i, d, sums);
        slot_add(&value, i, vec4<f32>(tg.x, 0.0, 0.0, 0.0));
        scratch[2u * n + off + i] = tg.y;
    }
    let total = slots_sum(lid, value).x + global_gap(cur_func, sums, d);
    storageBarrier();

    // ∇_x f = (scale / width) · Rᵀ ∇_z F, four columns per invocation and read.
    let c = prob.scale * prob.inv_width;
    if prob.rot == ROT_NONE {
        for (var j = lid; j < d; j += WG) {
            grad[off + j] = c * scratch[2u * n + off + j];
        }
    } else {
        let s4 = (d + 3u) / 4u;
        let base = prob.rot / 4u;
        for (var q = lid; q < s4; q += WG) {
            var g = vec4<f32>(0.0);
            for (var i = 0u; i < d; i++) {
                g += rot[base + i * s4 + q] * scratch[2u * n + off + i];
            }
            let j = 4u * q;
            grad[off + j] = c * g.x;
            if j + 1u < d {
                grad[off + j + 1u] = c * g.y;
            }
            if j + 2u < d {
                grad[off + j + 2u] = c * g.z;
            }
            if j + 3u < d {
                grad[off + j + 3u] = c * g.w;
            }
        }
    }
    if lid == 0u {
        f_out[p] = prob.scale * total;
    }
}
