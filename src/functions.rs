//! The benchmark-function suite (docs/DESIGN.md §3): names, domains, minimizers and the
//! f64 CPU twin of `shaders/objective.wgsl`.
//!
//! Every function is written in terms of `e = z − z*`, the offset from its known
//! minimizer, and evaluated as the *gap* `F(z) − F*`. Working with the gap instead of
//! `F` keeps the GPU's f32 precise near the optimum, where `F*` can be large
//! (Trid: −171 600 at d = 100) and `F − F*` would otherwise cancel away.

use serde::{Deserialize, Serialize};
use std::f64::consts::{E, PI};
use std::fmt;

/// Largest dimension a problem may have. Rotations are dense d×d per problem, and the
/// kernels loop over coordinates inside one workgroup, so this is a memory bound, not a
/// hard architectural one.
pub const MAX_DIM: usize = 4096;

/// β of the Perm 0,d,β function (Surjanovic & Bingham use 10).
pub const PERM_BETA: f64 = 10.0;
/// Minimizer of one Styblinski–Tang coordinate: the root of 4z³ − 32z + 5 near −2.9.
pub const STYBLINSKI_ZSTAR: f64 = -2.903_534_027_771_178;
/// Schwefel 2.26's constant, chosen so that F* = 0 exactly (the usual 418.9829 is its
/// 4-digit rounding).
pub const SCHWEFEL_C: f64 = 418.982_887_272_433_9;
/// Minimizer of one Schwefel 2.26 coordinate.
pub const SCHWEFEL_ZSTAR: f64 = 420.968_746_359_982;

/// One of the 13 benchmark functions. The discriminant is the id used by the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Function {
    Sphere = 0,
    Rosenbrock = 1,
    Rastrigin = 2,
    Ackley = 3,
    Levy = 4,
    Griewank = 5,
    StyblinskiTang = 6,
    DixonPrice = 7,
    Powell = 8,
    Perm = 9,
    Zakharov = 10,
    Trid = 11,
    Schwefel = 12,
}

impl Function {
    pub const ALL: [Function; 13] = [
        Function::Sphere,
        Function::Rosenbrock,
        Function::Rastrigin,
        Function::Ackley,
        Function::Levy,
        Function::Griewank,
        Function::StyblinskiTang,
        Function::DixonPrice,
        Function::Powell,
        Function::Perm,
        Function::Zakharov,
        Function::Trid,
        Function::Schwefel,
    ];

    /// Kernel id of this function.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Name used on the command line, in configs and in results.
    pub fn name(self) -> &'static str {
        match self {
            Function::Sphere => "sphere",
            Function::Rosenbrock => "rosenbrock",
            Function::Rastrigin => "rastrigin",
            Function::Ackley => "ackley",
            Function::Levy => "levy",
            Function::Griewank => "griewank",
            Function::StyblinskiTang => "styblinski-tang",
            Function::DixonPrice => "dixon-price",
            Function::Powell => "powell",
            Function::Perm => "perm",
            Function::Zakharov => "zakharov",
            Function::Trid => "trid",
            Function::Schwefel => "schwefel",
        }
    }

    /// Parses a name as printed by [`Function::name`] (case-insensitive, `_` or `-`).
    pub fn parse(name: &str) -> Result<Function, String> {
        let norm = name.trim().to_ascii_lowercase().replace('_', "-");
        Function::ALL
            .into_iter()
            .find(|f| f.name() == norm || f.name().replace('-', "") == norm)
            .ok_or_else(|| {
                let known: Vec<_> = Function::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown function '{name}'; known functions: {}",
                    known.join(", ")
                )
            })
    }

    /// Checks that the function is defined at dimension `d`.
    pub fn check_dim(self, d: usize) -> Result<(), String> {
        if d == 0 {
            return Err(format!("{}: dimension must be at least 1", self.name()));
        }
        if d > MAX_DIM {
            return Err(format!(
                "{}: dimension {d} is over the engine's limit of {MAX_DIM}",
                self.name()
            ));
        }
        if self == Function::Powell && !d.is_multiple_of(4) {
            return Err(format!(
                "powell is defined for dimensions that are multiples of 4, not {d}"
            ));
        }
        Ok(())
    }

    /// Standard search domain [lo, hi] per coordinate (Surjanovic & Bingham).
    pub fn domain(self, d: usize) -> (f64, f64) {
        match self {
            Function::Sphere | Function::Rastrigin => (-5.12, 5.12),
            Function::Rosenbrock => (-5.0, 10.0),
            Function::Ackley => (-32.768, 32.768),
            Function::Levy | Function::DixonPrice => (-10.0, 10.0),
            Function::Griewank => (-600.0, 600.0),
            Function::StyblinskiTang => (-5.0, 5.0),
            Function::Powell => (-4.0, 5.0),
            Function::Perm => (-(d as f64), d as f64),
            Function::Zakharov => (-5.0, 10.0),
            Function::Trid => (-((d * d) as f64), (d * d) as f64),
            Function::Schwefel => (-500.0, 500.0),
        }
    }

    /// Box that start points are drawn from. It is the standard domain except for
    /// Perm, whose terms z^d overflow f32 for |z| > 1 once d passes ~30.
    pub fn start_domain(self, d: usize) -> (f64, f64) {
        match self {
            Function::Perm => (-1.0, 1.0),
            _ => self.domain(d),
        }
    }

    /// Coordinate `i` (0-based) of the minimizer z* at dimension `d`.
    pub fn minimizer(self, i: usize, d: usize) -> f64 {
        let k = (i + 1) as f64;
        match self {
            Function::Rosenbrock | Function::Levy => 1.0,
            Function::StyblinskiTang => STYBLINSKI_ZSTAR,
            Function::DixonPrice => {
                let p = 2f64.powi(i as i32);
                2f64.powf(-(p - 1.0) / p)
            }
            Function::Perm => 1.0 / k,
            Function::Trid => k * (d as f64 + 1.0 - k),
            Function::Schwefel => SCHWEFEL_ZSTAR,
            _ => 0.0,
        }
    }

    /// Known minimum F* at dimension `d`.
    pub fn f_star(self, d: usize) -> f64 {
        let d = d as f64;
        match self {
            Function::StyblinskiTang => d * styblinski_term(STYBLINSKI_ZSTAR),
            Function::Trid => -d * (d + 4.0) * (d - 1.0) / 6.0,
            _ => 0.0,
        }
    }

    /// The gap F(z* + e) − F* and its gradient with respect to e (= ∇_z F), in f64:
    /// the CPU twin of `objective.wgsl`.
    pub fn gap_grad(self, e: &[f64], grad: &mut [f64]) -> f64 {
        let d = e.len();
        assert_eq!(grad.len(), d);
        let z: Vec<f64> = (0..d).map(|i| self.minimizer(i, d) + e[i]).collect();
        let n = d as f64;
        match self {
            Function::Sphere => {
                for i in 0..d {
                    grad[i] = 2.0 * z[i];
                }
                z.iter().map(|v| v * v).sum()
            }
            Function::Rosenbrock => {
                let mut f = 0.0;
                grad.fill(0.0);
                for i in 0..d.saturating_sub(1) {
                    let a = z[i + 1] - z[i] * z[i];
                    let b = z[i] - 1.0;
                    f += 100.0 * a * a + b * b;
                    grad[i] += -400.0 * z[i] * a + 2.0 * b;
                    grad[i + 1] += 200.0 * a;
                }
                f
            }
            Function::Rastrigin => {
                let mut f = 0.0;
                for i in 0..d {
                    let w = 2.0 * PI * z[i];
                    f += z[i] * z[i] + 10.0 * (1.0 - w.cos());
                    grad[i] = 2.0 * z[i] + 20.0 * PI * w.sin();
                }
                f
            }
            Function::Ackley => {
                let (a, b, c) = (20.0, 0.2, 2.0 * PI);
                let s1: f64 = z.iter().map(|v| v * v).sum();
                let s2: f64 = z.iter().map(|v| (c * v).cos()).sum();
                let r = (s1 / n).sqrt();
                let e1 = (-b * r).exp();
                let e2 = (s2 / n).exp();
                for i in 0..d {
                    let t1 = if r > 0.0 {
                        a * b * e1 * z[i] / (n * r)
                    } else {
                        0.0
                    };
                    grad[i] = t1 + e2 * c * (c * z[i]).sin() / n;
                }
                -a * e1 - e2 + a + E
            }
            Function::Levy => {
                let w: Vec<f64> = z.iter().map(|v| 1.0 + (v - 1.0) / 4.0).collect();
                let mut f = (PI * w[0]).sin().powi(2);
                let mut gw = vec![0.0; d];
                gw[0] = PI * (2.0 * PI * w[0]).sin();
                for i in 0..d - 1 {
                    let q = PI * w[i] + 1.0;
                    let s = q.sin().powi(2);
                    f += (w[i] - 1.0).powi(2) * (1.0 + 10.0 * s);
                    gw[i] += 2.0 * (w[i] - 1.0) * (1.0 + 10.0 * s)
                        + (w[i] - 1.0).powi(2) * 10.0 * PI * (2.0 * q).sin();
                }
                let wl = w[d - 1];
                let s = (2.0 * PI * wl).sin().powi(2);
                f += (wl - 1.0).powi(2) * (1.0 + s);
                gw[d - 1] += 2.0 * (wl - 1.0) * (1.0 + s)
                    + (wl - 1.0).powi(2) * 2.0 * PI * (4.0 * PI * wl).sin();
                for i in 0..d {
                    grad[i] = gw[i] / 4.0;
                }
                f
            }
            Function::Griewank => {
                let cosv: Vec<f64> = (0..d)
                    .map(|i| (z[i] / ((i + 1) as f64).sqrt()).cos())
                    .collect();
                let prod: f64 = cosv.iter().product();
                for i in 0..d {
                    let sq = ((i + 1) as f64).sqrt();
                    let others: f64 = (0..d).filter(|&j| j != i).map(|j| cosv[j]).product();
                    grad[i] = z[i] / 2000.0 + others * (z[i] / sq).sin() / sq;
                }
                z.iter().map(|v| v * v).sum::<f64>() / 4000.0 - prod + 1.0
            }
            Function::StyblinskiTang => {
                for i in 0..d {
                    grad[i] = 0.5 * (4.0 * z[i].powi(3) - 32.0 * z[i] + 5.0);
                }
                z.iter().map(|&v| styblinski_term(v)).sum::<f64>() - self.f_star(d)
            }
            Function::DixonPrice => {
                let mut f = (z[0] - 1.0).powi(2);
                grad.fill(0.0);
                grad[0] = 2.0 * (z[0] - 1.0);
                for i in 1..d {
                    let k = (i + 1) as f64;
                    let a = 2.0 * z[i] * z[i] - z[i - 1];
                    f += k * a * a;
                    grad[i] += k * 2.0 * a * 4.0 * z[i];
                    grad[i - 1] -= k * 2.0 * a;
                }
                f
            }
            Function::Powell => {
                let mut f = 0.0;
                for j in 0..d / 4 {
                    let (a, b, c, dd) = (z[4 * j], z[4 * j + 1], z[4 * j + 2], z[4 * j + 3]);
                    let t1 = a + 10.0 * b;
                    let t2 = c - dd;
                    let t3 = b - 2.0 * c;
                    let t4 = a - dd;
                    f += t1 * t1 + 5.0 * t2 * t2 + t3.powi(4) + 10.0 * t4.powi(4);
                    grad[4 * j] = 2.0 * t1 + 40.0 * t4.powi(3);
                    grad[4 * j + 1] = 20.0 * t1 + 4.0 * t3.powi(3);
                    grad[4 * j + 2] = 10.0 * t2 - 8.0 * t3.powi(3);
                    grad[4 * j + 3] = -10.0 * t2 - 40.0 * t4.powi(3);
                }
                f
            }
            Function::Perm => {
                let inner: Vec<f64> = (1..=d)
                    .map(|i| {
                        (1..=d)
                            .map(|j| {
                                let jf = j as f64;
                                (jf + PERM_BETA) * (z[j - 1].powi(i as i32) - jf.powi(-(i as i32)))
                            })
                            .sum()
                    })
                    .collect();
                for j in 1..=d {
                    let jf = j as f64;
                    grad[j - 1] = (1..=d)
                        .map(|i| {
                            2.0 * inner[i - 1]
                                * (jf + PERM_BETA)
                                * i as f64
                                * z[j - 1].powi(i as i32 - 1)
                        })
                        .sum();
                }
                inner.iter().map(|v| v * v).sum()
            }
            Function::Zakharov => {
                let s: f64 = (0..d).map(|i| 0.5 * (i + 1) as f64 * z[i]).sum();
                for i in 0..d {
                    grad[i] = 2.0 * z[i] + (2.0 * s + 4.0 * s.powi(3)) * 0.5 * (i + 1) as f64;
                }
                z.iter().map(|v| v * v).sum::<f64>() + s * s + s.powi(4)
            }
            Function::Trid => {
                let mut f = 0.0;
                for i in 0..d {
                    f += (z[i] - 1.0).powi(2);
                    grad[i] = 2.0 * (z[i] - 1.0);
                    if i > 0 {
                        f -= z[i] * z[i - 1];
                        grad[i] -= z[i - 1];
                    }
                    if i + 1 < d {
                        grad[i] -= z[i + 1];
                    }
                }
                f - self.f_star(d)
            }
            Function::Schwefel => {
                let mut f = SCHWEFEL_C * n;
                for i in 0..d {
                    let s = z[i].abs().sqrt();
                    f -= z[i] * s.sin();
                    grad[i] = -(s.sin() + 0.5 * s * s.cos());
                }
                f
            }
        }
    }
}

fn styblinski_term(z: f64) -> f64 {
    0.5 * (z.powi(4) - 16.0 * z * z + 5.0 * z)
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Function {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Function::parse(s)
    }
}

#[cfg(test)]
mod kernel_id_tests {
    use super::*;

    /// The kernels name the functions by the ids of `Function`, and the user objective
    /// by the id after them.
    #[test]
    fn function_ids_match_the_kernel_constants() {
        let src = crate::kernel::compose("shared/problem.wgsl").unwrap();
        for f in Function::ALL {
            let decl = format!(
                "const F_{}: u32 = {}u;",
                f.name().to_uppercase().replace('-', "_"),
                f.id()
            );
            assert!(src.contains(&decl), "shared/problem.wgsl lacks `{decl}`");
        }
        let user = format!("const FUNC_USER: u32 = {}u;", crate::problem::FUNC_USER);
        assert!(src.contains(&user), "shared/problem.wgsl lacks `{user}`");
    }

    /// The objective kernel's copies of the functions' constants are these, in f32.
    #[test]
    fn kernel_constants_match() {
        let src = crate::kernel::compose("objective.wgsl").unwrap();
        for (name, value) in [
            ("PERM_BETA", PERM_BETA),
            ("STYB_ZSTAR", STYBLINSKI_ZSTAR),
            ("SCHWEFEL_C", SCHWEFEL_C),
            ("SCHWEFEL_ZSTAR", SCHWEFEL_ZSTAR),
        ] {
            let decl = format!("const {name}: f32 = ");
            let start = src.find(&decl).unwrap_or_else(|| panic!("no {name}")) + decl.len();
            let text = &src[start..start + src[start..].find(';').unwrap()];
            assert_eq!(text.parse::<f32>().unwrap(), value as f32, "{name}");
        }
    }
}
