//! How a model's weights and their meta-training noise are laid out for the kernels:
//! the packed copy of θ (rows and columns padded for vec4 loads) and, parallel to it,
//! one antithetic pair's noise vector (rank-one factors a, b per weight matrix, e per
//! vector; `train::noise` draws them). Both the learned step (`gpu/`, whose perturbed
//! layers read the noise) and meta-training (`train`) use them, so they live here, below
//! both.

use super::model::{Model, ModelConfig};
use crate::error::{Error, Result};

pub(crate) fn round4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

pub(crate) fn round8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// One tensor in the GPU's packed parameters.
#[derive(Clone, Debug)]
pub struct PackedTensor {
    pub name: String,
    /// Offset in floats.
    pub offset: usize,
    /// Rows (1 for a vector) and the padded row count.
    pub rows: usize,
    pub rows_p: usize,
    /// Columns and the padded column count.
    pub cols: usize,
    pub cols_p: usize,
    /// Whether this is a weight matrix (perturbed with rank one in meta-training).
    pub matrix: bool,
}

impl PackedTensor {
    /// Floats the tensor takes, padding included.
    pub fn len(&self) -> usize {
        self.rows_p * self.cols_p
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where each tensor sits in the GPU's copy of the parameters: row counts padded to a
/// multiple of 4 and column counts to a multiple of 8 (zeros in the padding), every
/// tensor starting at a multiple of 8, so `linear.wgsl` reads weights as vec4 pairs. The
/// model files keep the dense canonical layout (`ModelConfig::tensors`); meta-training
/// updates the packed copy directly (its padding gets zero gradient and stays zero).
pub struct PackedLayout {
    pub tensors: Vec<PackedTensor>,
    pub len: usize,
}

impl PackedLayout {
    pub fn new(cfg: &ModelConfig) -> Self {
        let mut tensors = Vec::new();
        let mut off = 0;
        for t in cfg.tensors() {
            let (rows, cols) = match t.shape.as_slice() {
                [r, c] => (*r, *c),
                [c] => (1, *c),
                _ => (1, t.len()),
            };
            let matrix = t.shape.len() == 2;
            let rows_p = if matrix { round4(rows) } else { 1 };
            let cols_p = round8(cols);
            tensors.push(PackedTensor {
                name: t.name.clone(),
                offset: off,
                rows,
                rows_p,
                cols,
                cols_p,
                matrix,
            });
            off += rows_p * cols_p;
        }
        Self { tensors, len: off }
    }

    /// Offset of tensor `name` in floats.
    pub fn offset(&self, name: &str) -> Result<usize> {
        self.get(name).map(|t| t.offset)
    }

    /// Tensor `name`.
    pub fn get(&self, name: &str) -> Result<&PackedTensor> {
        self.tensors
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| Error::Config(format!("model has no tensor {name}")))
    }

    /// The packed copy of canonical weights `w` (laid out by the config's `tensors()`).
    pub fn pack_weights(&self, w: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.len];
        let mut src = 0;
        for t in &self.tensors {
            for r in 0..t.rows {
                out[t.offset + r * t.cols_p..t.offset + r * t.cols_p + t.cols]
                    .copy_from_slice(&w[src..src + t.cols]);
                src += t.cols;
            }
        }
        out
    }

    /// The packed copy of `model`'s weights.
    pub fn pack(&self, model: &Model) -> Vec<f32> {
        self.pack_weights(&model.weights)
    }

    /// The canonical weights of a packed vector (padding dropped).
    pub fn unpack(&self, packed: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        for t in &self.tensors {
            for r in 0..t.rows {
                let o = t.offset + r * t.cols_p;
                out.extend_from_slice(&packed[o..o + t.cols]);
            }
        }
        out
    }
}

/// Where one tensor's noise sits in a pair's noise vector.
#[derive(Clone, Copy, Debug)]
pub struct NoiseSlot {
    pub matrix: bool,
    /// Offset of the row factor a (matrices only).
    pub a_off: usize,
    /// Offset of the column factor b (matrices) or of e (vectors).
    pub b_off: usize,
}

/// The layout of one pair's noise vector, parallel to a [`PackedLayout`]: a padded to
/// the packed row count and b / e to the packed column count, so kernels read them as
/// vec4 next to the weights; zeros in the padding.
pub struct NoiseLayout {
    pub names: Vec<String>,
    pub slots: Vec<NoiseSlot>,
    /// Floats per pair (a multiple of 4).
    pub stride: usize,
    /// 1 where an index holds a real factor, 0 in padding.
    pub mask: Vec<u32>,
    /// Whether PES perturbs and trains each tensor (in `names`' order).
    pub trains: Vec<bool>,
}

impl NoiseLayout {
    /// The layout of every tensor's noise; tensors that no name or name prefix in
    /// `trainable` matches get zero noise, so PES neither perturbs nor trains them (empty:
    /// every tensor trains). A prefix that matches no tensor is an error naming it.
    pub fn new(packed: &PackedLayout, trainable: &[String]) -> Result<Self> {
        if let Some(p) = trainable.iter().find(|p| {
            !packed
                .tensors
                .iter()
                .any(|t| t.name.starts_with(p.as_str()))
        }) {
            return Err(Error::Config(format!(
                "trainable: no tensor of this model is named '{p}' or starts with it; the \
                 tensors are {}",
                packed
                    .tensors
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let (mut names, mut slots, mut mask, mut trains_all) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for t in &packed.tensors {
            let trains = trainable.is_empty() || trainable.iter().any(|p| names_tensor(p, &t.name));
            let mut region = |len: usize, real: usize| {
                let off = mask.len();
                mask.extend((0..len).map(|i| (trains && i < real) as u32));
                off
            };
            let slot = if t.matrix {
                let a_off = region(t.rows_p, t.rows);
                let b_off = region(t.cols_p, t.cols);
                NoiseSlot {
                    matrix: true,
                    a_off,
                    b_off,
                }
            } else {
                let b_off = region(t.cols_p, t.cols);
                NoiseSlot {
                    matrix: false,
                    a_off: b_off,
                    b_off,
                }
            };
            names.push(t.name.clone());
            slots.push(slot);
            trains_all.push(trains);
        }
        Ok(Self {
            names,
            slots,
            stride: mask.len(),
            mask,
            trains: trains_all,
        })
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| Error::Config(format!("model has no tensor {name}")))
    }

    /// The slot of tensor `name`.
    pub fn slot(&self, name: &str) -> Result<NoiseSlot> {
        Ok(self.slots[self.index(name)?])
    }

    /// Whether PES perturbs tensor `name`.
    pub fn perturbs(&self, name: &str) -> Result<bool> {
        Ok(self.trains[self.index(name)?])
    }

    /// The dense perturbation ε this pair's noise stands for, in packed layout: a bᵀ for
    /// matrices, e for vectors (the straightforward per-particle weights; used by the
    /// CPU twin and as the reference the rank-one kernels are tested against).
    pub fn dense(&self, packed: &PackedLayout, noise: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; packed.len];
        for (t, s) in packed.tensors.iter().zip(&self.slots) {
            for r in 0..t.rows {
                for c in 0..t.cols {
                    out[t.offset + r * t.cols_p + c] = if s.matrix {
                        noise[s.a_off + r] * noise[s.b_off + c]
                    } else {
                        noise[s.b_off + c]
                    };
                }
            }
        }
        out
    }
}

/// Whether `entry` of a `trainable` list names tensor `name`: the whole name, or a
/// prefix that ends where a name part does ("blocks.1" names "blocks.1.ln1.weight" but
/// not "blocks.10.ln1.weight").
pub fn names_tensor(entry: &str, name: &str) -> bool {
    name.strip_prefix(entry)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::names_tensor;

    #[test]
    fn trainable_entries_name_whole_name_parts() {
        assert!(names_tensor("head", "head.weight"));
        assert!(names_tensor("head.bias", "head.bias"));
        assert!(names_tensor("blocks.1", "blocks.1.ln1.weight"));
        assert!(!names_tensor("blocks.1", "blocks.10.ln1.weight"));
        assert!(!names_tensor("head", "heads.weight"));
        assert!(!names_tensor("blocks.1.mlp", "blocks.1.attn.qkv.weight"));
    }
}
