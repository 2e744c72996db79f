//! User objectives: a WGSL file compiled into the objective kernel (`objective.rs`)
//! in place of the benchmark functions.
//!
//! A user objective is a WGSL file that defines
//!
//! ```wgsl
//! const USER_F_STAR: f32 = 0.0;      // known minimum, for f − f* in the results
//! const USER_DOMAIN_LO: f32 = -5.0;  // start points are drawn from [LO, HI]^d
//! const USER_DOMAIN_HI: f32 = 5.0;
//! fn user_term(i: u32, d: u32) -> f32 // f(z) = Σ_i user_term(i, d)
//! fn user_grad(i: u32, d: u32) -> f32 // ∂f/∂z_i
//! ```
//!
//! where `coord(j)` reads coordinate j of the current problem. Each coordinate is handled
//! by one invocation, so terms may couple coordinates freely. The file is placed first in
//! the kernel, so naga's line numbers in error messages are the file's own.

use crate::error::{Error, Result};
use crate::kernel::{compose, validate};
use std::path::Path;

/// A user objective: WGSL source plus the constants the host needs.
#[derive(Debug)]
pub struct UserObjective {
    pub name: String,
    pub path: String,
    pub source: String,
    pub f_star: f64,
    pub domain: (f64, f64),
}

const USER_ITEMS: [&str; 5] = [
    "fn user_term",
    "fn user_grad",
    "USER_F_STAR",
    "USER_DOMAIN_LO",
    "USER_DOMAIN_HI",
];

impl UserObjective {
    /// Reads and checks a user objective file.
    pub fn load(path: &Path) -> Result<Self> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read objective file {}: {e}",
                path.display()
            ))
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "user".into());
        Self::from_source(&name, &path.display().to_string(), source)
    }

    /// Checks `source` by compiling it into the objective kernel with naga.
    pub fn from_source(name: &str, path: &str, source: String) -> Result<Self> {
        let missing: Vec<_> = USER_ITEMS
            .iter()
            .filter(|item| !source.contains(*item))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Shader {
                file: path.to_string(),
                message: format!(
                    "a user objective must define {}; missing: {:?}. See assets/objectives/quadratic.wgsl",
                    USER_ITEMS.join(", "),
                    missing
                ),
            });
        }
        let full = objective_source(Some(&source))?;
        let module = validate(path, &full)?;
        let constant = |name: &str| -> Result<f64> {
            module
                .constants
                .iter()
                .find(|(_, c)| c.name.as_deref() == Some(name))
                .and_then(|(_, c)| match module.global_expressions[c.init] {
                    naga::Expression::Literal(naga::Literal::F32(v)) => Some(v as f64),
                    _ => None,
                })
                .ok_or_else(|| Error::Shader {
                    file: path.to_string(),
                    message: format!("declare `const {name}: f32 = <number>;`"),
                })
        };
        let f_star = constant("USER_F_STAR")?;
        let domain = (constant("USER_DOMAIN_LO")?, constant("USER_DOMAIN_HI")?);
        if domain.0.partial_cmp(&domain.1) != Some(std::cmp::Ordering::Less) || !f_star.is_finite()
        {
            return Err(Error::Shader {
                file: path.to_string(),
                message: format!(
                    "USER_DOMAIN_LO must be below USER_DOMAIN_HI and USER_F_STAR finite (got {domain:?}, {f_star})"
                ),
            });
        }
        Ok(Self {
            name: name.to_string(),
            path: path.to_string(),
            source,
            f_star,
            domain,
        })
    }
}

/// The objective kernel's WGSL, with the user file first (or the stand-in).
pub fn objective_source(user: Option<&str>) -> Result<String> {
    let stub = compose("shared/user_stub.wgsl")?;
    Ok(format!(
        "{}\n{}",
        user.unwrap_or(&stub),
        compose("objective.wgsl")?
    ))
}
