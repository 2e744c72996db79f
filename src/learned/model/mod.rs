//! Architecture, weights and model files of the learned optimizers (docs/DESIGN.md §1).
//!
//! All weights live in one flat f32 vector θ, laid out in the canonical order of
//! [`ModelConfig::tensors`], so meta-training perturbs and updates a single buffer and
//! the kernels address tensors by offset. A model on disk is a directory holding
//! `model.ron` (the config a person can read and edit) and `weights.safetensors` (every
//! tensor by name, so the usual Python tools can read and write it).
//!
//! Linear layers compute y = x·W + b with W of shape [in, out], row-major.

mod config;
#[cfg(test)]
mod tests;

pub use config::*;

use crate::error::{Error, Result};
use crate::files::write_atomic;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;

/// A learned optimizer: its config and all weights, flat in [`ModelConfig::tensors`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub config: ModelConfig,
    pub weights: Vec<f32>,
}

impl Model {
    /// A freshly initialized model: matrices ~ N(0, 1/fan_in), LayerNorm gains 1, biases
    /// 0, the step-scale output's weights 0, and a quasi-Newton model's head scaled by
    /// [`QN_HEAD_INIT`]. The draw is ChaCha8 from `seed`, so it
    /// is the same on every platform.
    pub fn init(config: ModelConfig, seed: u64) -> Result<Model> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut weights = vec![0.0f32; config.n_params()];
        for spec in config.tensors() {
            let leaf = spec.name.rsplit('.').nth(1).unwrap_or("");
            let out = &mut weights[spec.range()];
            if spec.name.ends_with(".weight") && spec.shape.len() == 2 {
                let std = 1.0 / (spec.shape[0] as f64).sqrt();
                for v in out {
                    let z: f64 = rng.sample(StandardNormal);
                    *v = (z * std) as f32;
                }
            } else if spec.name.ends_with(".weight") && leaf.starts_with("ln") {
                out.fill(1.0);
            }
        }
        // A quasi-Newton model starts near its prior (the Barzilai–Borwein step): its head
        // is 1 % of the usual draw, so PES perturbs the prior instead of noise.
        if let (true, Some(head)) = (config.step.is_quasi_newton(), config.tensor("head.weight")) {
            for v in &mut weights[head.range()] {
                *v *= QN_HEAD_INIT;
            }
        }
        // ρ starts at 0, so a fresh model's step scale stays at 1 until training moves it.
        if let (Some(c), Some(head)) = (config.scale_output(), config.tensor("head.weight")) {
            let o = config.head_outputs();
            for row in weights[head.range()].chunks_mut(o) {
                row[c] = 0.0;
            }
        }
        Ok(Model { config, weights })
    }

    /// A model from a flat weight vector (e.g. θ after meta-training).
    pub fn from_weights(config: ModelConfig, weights: Vec<f32>) -> Result<Model> {
        config.validate()?;
        let n = config.n_params();
        if weights.len() != n {
            return Err(Error::Config(format!(
                "this {} config needs {n} weights, got {}",
                config.kind,
                weights.len()
            )));
        }
        Ok(Model { config, weights })
    }

    /// This model under `config`, which may add inputs (more `features`) or the
    /// step-scale output: their weights start at 0, so the grown model takes the same
    /// steps as this one until training moves them. Everything else must match. Lets a
    /// trained model be fine-tuned with a new input instead of retrained from scratch.
    pub fn grown_to(&self, config: &ModelConfig) -> Result<Model> {
        config.validate()?;
        let old = &self.config;
        let same_rest = ModelConfig {
            features: old.features,
            lambda_scale: old.lambda_scale,
            ..config.clone()
        } == *old;
        let grows =
            config.features >= old.features && (config.has_step_scale() || !old.has_step_scale());
        if !(same_rest && grows) {
            return Err(Error::Config(format!(
                "a model {} cannot become one {}; only features and lambda_scale may grow",
                old.summary(),
                config.summary()
            )));
        }
        let mut weights = vec![0.0f32; config.n_params()];
        for new in config.tensors() {
            let from = old
                .tensor(&new.name)
                .expect("the same kind and sizes have the same tensor names");
            let src = &self.weights[from.range()];
            let dst = &mut weights[new.range()];
            // Rows (inputs) are appended, and columns (outputs) are appended to each row.
            let (src_cols, dst_cols) = (
                *from.shape.last().expect("tensors have a shape"),
                *new.shape.last().expect("tensors have a shape"),
            );
            for (s_row, d_row) in src.chunks(src_cols).zip(dst.chunks_mut(dst_cols)) {
                d_row[..src_cols].copy_from_slice(s_row);
            }
        }
        Ok(Model {
            config: config.clone(),
            weights,
        })
    }

    /// The weights of one tensor by name (row-major).
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        let spec = self.config.tensor(name)?;
        self.weights.get(spec.range())
    }

    /// Writes `dir/model.ron` and `dir/weights.safetensors`, creating `dir` if needed.
    /// Each file goes to a temporary name first and is renamed into place, so an
    /// interrupted save never leaves a damaged file behind.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.config.validate()?;
        if self.weights.len() != self.config.n_params() {
            return Err(Error::Config(format!(
                "cannot save: the model has {} weights but its config needs {}",
                self.weights.len(),
                self.config.n_params()
            )));
        }
        fs::create_dir_all(dir).map_err(|e| {
            Error::Config(format!(
                "cannot create model directory {}: {e}",
                dir.display()
            ))
        })?;
        let weights = self.safetensors_bytes()?;
        let config = self.config.to_ron()?;
        // Weights first: a crash between the two renames leaves the old model.ron, whose
        // shape check on load then reports the mismatch rather than running it.
        write_atomic(&dir.join(WEIGHTS_FILE), &weights)?;
        write_atomic(&dir.join(CONFIG_FILE), config.as_bytes())?;
        Ok(())
    }

    /// Each tensor's weights as little-endian f32 bytes, in [`ModelConfig::tensors`]'s
    /// order.
    fn tensor_bytes(&self) -> Vec<Vec<u8>> {
        self.config
            .tensors()
            .iter()
            .map(|s| {
                self.weights[s.range()]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
            .collect()
    }

    fn safetensors_bytes(&self) -> Result<Vec<u8>> {
        let specs = self.config.tensors();
        let bytes = self.tensor_bytes();
        let views = specs
            .iter()
            .zip(&bytes)
            .map(|(s, b)| {
                TensorView::new(Dtype::F32, s.shape.clone(), b)
                    .map(|v| (s.name.clone(), v))
                    .map_err(|e| Error::Config(format!("cannot write tensor {}: {e}", s.name)))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = HashMap::from([
            ("format".to_string(), "optimus-gpu".to_string()),
            ("format_version".to_string(), FORMAT_VERSION.to_string()),
            ("kind".to_string(), self.config.kind.name().to_string()),
        ]);
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::Config(format!("cannot write {WEIGHTS_FILE}: {e}")))
    }

    /// Reads a model directory written by [`Model::save`] (or by Python tools using the
    /// same tensor names). Every mismatch between the weights and `model.ron` is
    /// reported at once.
    pub fn load(dir: &Path) -> Result<Model> {
        let hint = "create one with `optimus-gpu init-model`";
        if !dir.is_dir() {
            return Err(Error::Config(format!(
                "model directory {} does not exist (a model is a directory holding \
                 {CONFIG_FILE} and {WEIGHTS_FILE}); {hint}",
                dir.display()
            )));
        }
        let config_path = dir.join(CONFIG_FILE);
        let weights_path = dir.join(WEIGHTS_FILE);
        let text =
            fs::read_to_string(&config_path).map_err(|e| read_error(&config_path, hint, e))?;
        let config = ModelConfig::from_ron(&text, &config_path.display().to_string())?;
        let bytes = fs::read(&weights_path).map_err(|e| read_error(&weights_path, hint, e))?;
        let wp = weights_path.display();
        let bad_file = |e: safetensors::SafeTensorError| {
            Error::Config(format!(
                "{wp} is not a valid safetensors file ({e}); save the model again or \
                 recreate it with `optimus-gpu init-model`"
            ))
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(bad_file)?;
        let file = SafeTensors::deserialize(&bytes).map_err(bad_file)?;

        let mut problems: Vec<String> = Vec::new();
        let mut missing: Vec<&str> = Vec::new();
        if let Some(kind) = header.metadata().as_ref().and_then(|m| m.get("kind")) {
            if kind != config.kind.name() {
                problems.push(format!(
                    "its metadata says kind {kind}, model.ron says {}",
                    config.kind
                ));
            }
        }
        let specs = config.tensors();
        let mut weights = vec![0.0f32; config.n_params()];
        for spec in &specs {
            let view = match file.tensor(&spec.name) {
                Ok(v) => v,
                Err(_) => {
                    missing.push(spec.name.as_str());
                    continue;
                }
            };
            let mut ok = true;
            if view.dtype() != Dtype::F32 {
                problems.push(format!(
                    "{} has dtype {}, expected F32",
                    spec.name,
                    view.dtype()
                ));
                ok = false;
            }
            if view.shape() != spec.shape.as_slice() {
                problems.push(format!(
                    "{} has shape {:?}, expected {:?}",
                    spec.name,
                    view.shape(),
                    spec.shape
                ));
                ok = false;
            }
            if ok {
                for (w, b) in weights[spec.range()]
                    .iter_mut()
                    .zip(view.data().chunks_exact(4))
                {
                    *w = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        let expected: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let mut unexpected: Vec<&str> = file
            .names()
            .into_iter()
            .filter(|n| !expected.contains(n))
            .collect();
        unexpected.sort_unstable();
        // Missing and unexpected names are grouped: a model of another kind has dozens.
        if !missing.is_empty() {
            problems.push(format!("missing {}", missing.join(", ")));
        }
        if !unexpected.is_empty() {
            let s = if unexpected.len() == 1 { "" } else { "s" };
            problems.push(format!("unexpected tensor{s} {}", unexpected.join(", ")));
        }

        if !problems.is_empty() {
            return Err(Error::Config(format!(
                "{wp} does not match {}: {}. The weights belong to a model of another kind \
                 or size: set kind, width, heads, mlp_hidden and layers in {CONFIG_FILE} to \
                 the ones the weights were trained with, or recreate the model with \
                 `optimus-gpu init-model`",
                config_path.display(),
                problems.join("; ")
            )));
        }
        Ok(Model { config, weights })
    }
}

/// A failed read of a model file; a missing file names the path and the fix.
fn read_error(path: &Path, hint: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::Config(format!(
            "{} not found (a model directory holds {CONFIG_FILE} and {WEIGHTS_FILE}); {hint}",
            path.display()
        ))
    } else {
        Error::Config(format!("cannot read {}: {e}", path.display()))
    }
}
