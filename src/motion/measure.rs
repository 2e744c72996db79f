//! The measures of [`super::body::Measure`] in f64: value, gradient and Hessian-vector
//! product, the CPU twin of the measures in `shaders/motion/body.wgsl`. The adjoint pass needs
//! H·v and H·λ (the force is s(q, q̇)·∇q), and both come from one directional
//! derivative of the gradient.
//!
//! Cosine and triple product are multilinear in unit vectors ûₖ, so with
//! Gₖ = ∂q/∂ûₖ their gradient is gₖ = (Gₖ − q ûₖ)/|uₖ| and its derivative along δ is
//! dgₖ = (dGₖ − dq ûₖ − q dûₖ − gₖ (ûₖ·δₖ))/|uₖ|, with dûₖ = (δₖ − ûₖ(ûₖ·δₖ))/|uₖ|.

use super::body::{Measure, Vector};
use glam::DVec3;

/// Sparse per-point vectors: at most six points take part in a measure.
#[derive(Clone, Copy, Debug, Default)]
pub struct PointVecs {
    pub n: usize,
    pub idx: [usize; 6],
    pub val: [DVec3; 6],
}

impl PointVecs {
    fn add(&mut self, i: usize, v: DVec3) {
        self.idx[self.n] = i;
        self.val[self.n] = v;
        self.n += 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, DVec3)> + '_ {
        (0..self.n).map(|k| (self.idx[k], self.val[k]))
    }

    /// Σᵢ selfᵢ·wᵢ over the points.
    pub fn dot(&self, w: &[DVec3]) -> f64 {
        self.iter().map(|(i, g)| g.dot(w[i])).sum()
    }
}

fn axis(a: usize) -> DVec3 {
    let mut e = DVec3::ZERO;
    e[a] = 1.0;
    e
}

fn vector(v: &Vector, x: &[DVec3]) -> DVec3 {
    match *v {
        Vector::Points { from, to } => x[to] - x[from],
        Vector::Axis(a) => axis(a),
    }
}

/// Spreads per-vector gradients onto points (u = x\[to\] − x\[from\]).
fn spread(vectors: &[Vector], g: &[DVec3]) -> PointVecs {
    let mut out = PointVecs::default();
    for (v, g) in vectors.iter().zip(g) {
        if let Vector::Points { from, to } = *v {
            out.add(to, *g);
            out.add(from, -*g);
        }
    }
    out
}

fn vectors_of(m: &Measure) -> Vec<Vector> {
    match *m {
        Measure::Length(u) => vec![u],
        Measure::Cos(u, v) => vec![u, v],
        Measure::Triple(u, v, w) => vec![u, v, w],
        Measure::Midpoint { .. } => vec![],
    }
}

/// ∂q/∂ûₖ of the cosine (n = 2) or triple product (n = 3) at unit vectors `u`.
fn big_g(n: usize, u: &[DVec3; 3]) -> [DVec3; 3] {
    if n == 2 {
        [u[1], u[0], DVec3::ZERO]
    } else {
        [u[1].cross(u[2]), u[2].cross(u[0]), u[0].cross(u[1])]
    }
}

/// Derivative of [`big_g`] along unit-vector changes `du`.
fn big_dg(n: usize, u: &[DVec3; 3], du: &[DVec3; 3]) -> [DVec3; 3] {
    if n == 2 {
        [du[1], du[0], DVec3::ZERO]
    } else {
        [
            du[1].cross(u[2]) + u[1].cross(du[2]),
            du[2].cross(u[0]) + u[2].cross(du[0]),
            du[0].cross(u[1]) + u[0].cross(du[1]),
        ]
    }
}

/// Everything of a measure at x: value, per-vector lengths, units and gradients.
struct Local {
    q: f64,
    n: usize,
    len: [f64; 3],
    unit: [DVec3; 3],
    moving: [bool; 3],
    g: [DVec3; 3],
}

fn local(m: &Measure, x: &[DVec3]) -> Local {
    let vs = vectors_of(m);
    let mut l = Local {
        q: 0.0,
        n: vs.len(),
        len: [1.0; 3],
        unit: [DVec3::ZERO; 3],
        moving: [false; 3],
        g: [DVec3::ZERO; 3],
    };
    for (k, v) in vs.iter().enumerate() {
        let u = vector(v, x);
        l.len[k] = u.length();
        l.unit[k] = u / l.len[k];
        l.moving[k] = matches!(v, Vector::Points { .. });
    }
    match *m {
        Measure::Length(_) => {
            l.q = l.len[0];
            l.g[0] = l.unit[0];
        }
        Measure::Midpoint { a, b, axis: ax } => l.q = 0.5 * (x[a][ax] + x[b][ax]),
        Measure::Cos(..) | Measure::Triple(..) => {
            let big = big_g(l.n, &l.unit);
            l.q = big[0].dot(l.unit[0]);
            for k in 0..l.n {
                if l.moving[k] {
                    l.g[k] = (big[k] - l.q * l.unit[k]) / l.len[k];
                }
            }
        }
    }
    l
}

/// The measure's value at x.
pub fn value(m: &Measure, x: &[DVec3]) -> f64 {
    local(m, x).q
}

/// The value and the gradient ∇q (per point).
pub fn gradient(m: &Measure, x: &[DVec3]) -> (f64, PointVecs) {
    let l = local(m, x);
    let grad = match *m {
        Measure::Midpoint { a, b, axis: ax } => {
            let mut p = PointVecs::default();
            p.add(a, 0.5 * axis(ax));
            p.add(b, 0.5 * axis(ax));
            p
        }
        _ => spread(&vectors_of(m), &l.g[..l.n]),
    };
    (l.q, grad)
}

/// H·δ: the derivative of ∇q at x along the point displacements `dx`.
pub fn hessian_times(m: &Measure, x: &[DVec3], dx: &[DVec3]) -> PointVecs {
    let vs = vectors_of(m);
    let l = local(m, x);
    let mut delta = [DVec3::ZERO; 3];
    for (k, v) in vs.iter().enumerate() {
        if let Vector::Points { from, to } = *v {
            delta[k] = dx[to] - dx[from];
        }
    }
    let mut du = [DVec3::ZERO; 3];
    for k in 0..l.n {
        if l.moving[k] {
            du[k] = (delta[k] - l.unit[k] * l.unit[k].dot(delta[k])) / l.len[k];
        }
    }
    let mut dg = [DVec3::ZERO; 3];
    match *m {
        Measure::Midpoint { .. } => return PointVecs::default(),
        Measure::Length(_) => dg[0] = du[0],
        Measure::Cos(..) | Measure::Triple(..) => {
            let dbig = big_dg(l.n, &l.unit, &du);
            let dq: f64 = (0..l.n).map(|k| l.g[k].dot(delta[k])).sum();
            for k in 0..l.n {
                if l.moving[k] {
                    dg[k] =
                        (dbig[k] - dq * l.unit[k] - l.q * du[k] - l.g[k] * l.unit[k].dot(delta[k]))
                            / l.len[k];
                }
            }
        }
    }
    spread(&vs, &dg[..l.n])
}
