//! Checkpoints of a meta-training run: one safetensors file holding θ, Adam's moments
//! and every particle's inner state as raw bytes, with the run's configs and log as
//! JSON metadata. Written to a temporary file, synced and renamed over the previous one,
//! so an interruption or a full disk never damages the last good checkpoint.

use super::config::TrainConfig;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::learned::model::ModelConfig;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::path::Path;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
const META_KEY: &str = "optimus_checkpoint";
/// Bumped when the meaning of a stored buffer changes (2: rotations padded to a
/// multiple of 4 in both directions, `problem::rotation_len`).
pub const CHECKPOINT_VERSION: u32 = 2;

/// One logged meta-iteration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    /// Meta-iterations done.
    pub iteration: u32,
    /// Training-side numbers; None in the row of iteration 0 (before any step).
    pub train_loss: Option<f64>,
    pub val_loss: f64,
    pub grad_norm: Option<f64>,
    pub lr: f64,
    /// Mean seconds per meta-iteration since the previous row.
    pub iter_seconds: Option<f64>,
    pub particle_steps_per_second: Option<f64>,
    pub elapsed_seconds: f64,
}

/// What a checkpoint says about its run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub version: u32,
    /// Meta-iterations done.
    pub iteration: u32,
    pub batch: usize,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub elapsed_seconds: f64,
    pub log: Vec<LogRow>,
    /// The source of the user objective the run trains on (`tasks.objective`), so that a
    /// resume can refuse a file edited since; absent in checkpoints of other runs.
    #[serde(default)]
    pub objective_source: Option<String>,
}

/// Saves a checkpoint of `tensors` (raw bytes by name).
pub fn save(path: &Path, meta: &CheckpointMeta, tensors: &[(&str, Vec<u8>)]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, bytes)| {
            TensorView::new(Dtype::U8, vec![bytes.len()], bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| Error::Io(format!("checkpoint tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let json =
        serde_json::to_string(meta).map_err(|e| Error::Io(format!("checkpoint metadata: {e}")))?;
    let bytes = safetensors::serialize(views, Some(HashMap::from([(META_KEY.to_string(), json)])))
        .map_err(|e| Error::Io(format!("checkpoint: {e}")))?;
    write_atomic(path, &bytes)
}

/// Loads a checkpoint: its metadata and tensors.
pub fn load(path: &Path) -> Result<(CheckpointMeta, HashMap<String, Vec<u8>>)> {
    let bytes = fs::read(path).map_err(|e| {
        Error::Io(format!(
            "cannot read checkpoint {} ({e}); start without --resume or point --out at a \
             training directory",
            path.display()
        ))
    })?;
    let bad = |m: String| {
        Error::Io(format!(
            "{} is not a valid optimus-gpu checkpoint ({m})",
            path.display()
        ))
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| bad("no run metadata".into()))?
        .clone();
    let meta: CheckpointMeta = serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;
    if meta.version != CHECKPOINT_VERSION {
        return Err(bad(format!(
            "version {} where this build reads {CHECKPOINT_VERSION}",
            meta.version
        )));
    }
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect();
    Ok((meta, tensors))
}
