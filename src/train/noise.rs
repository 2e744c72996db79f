//! The perturbations of meta-training: per antithetic pair, a rank-one factor pair
//! (a over rows, b over columns) for every weight matrix, ε_W = a bᵀ, and a full-rank e
//! for every bias and LayerNorm vector, all N(0, 1) so that E[vec ε vec εᵀ] = I as for a
//! dense Gaussian. Drawn by a counter-based hash of (seed, iteration, pair, index)
//! (`shaders/shared/rng.wgsl`), never stored between truncations: the gradient reduction
//! draws them again.
//!
//! Why rank one (docs/DESIGN.md §2): a particle's layer is then the shared product x·W plus
//! ±σ((x·a) b + e), O(in + out) extra work per token and O(in + out) noise per pair,
//! where per-particle weight copies need |θ| memory and bandwidth per particle.

use crate::error::{Error, Result};
use crate::learned::gpu::PackedLayout;
use crate::learned::model::Model;

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
        let (mut names, mut slots, mut mask) = (Vec::new(), Vec::new(), Vec::new());
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
        }
        Ok(Self {
            names,
            slots,
            stride: mask.len(),
            mask,
        })
    }

    /// The slot of tensor `name`.
    pub fn slot(&self, name: &str) -> Result<NoiseSlot> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.slots[i])
            .ok_or_else(|| Error::Config(format!("model has no tensor {name}")))
    }

    /// One pair's noise vector for truncation `iteration` (twin of `pes/noise.wgsl`).
    pub fn draw(&self, seed: u32, iteration: u32, pair: u32) -> Vec<f32> {
        self.mask
            .iter()
            .enumerate()
            .map(|(j, &m)| {
                if m != 0 {
                    counter_normal([seed, iteration, pair, j as u32])
                } else {
                    0.0
                }
            })
            .collect()
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

/// pcg4d (Jarzynski & Olano 2020), twin of `shared/rng.wgsl`.
pub fn pcg4d(key: [u32; 4]) -> [u32; 4] {
    let mut v = key.map(|k| k.wrapping_mul(1664525).wrapping_add(1013904223));
    let mix = |v: &mut [u32; 4]| {
        v[0] = v[0].wrapping_add(v[1].wrapping_mul(v[3]));
        v[1] = v[1].wrapping_add(v[2].wrapping_mul(v[0]));
        v[2] = v[2].wrapping_add(v[0].wrapping_mul(v[1]));
        v[3] = v[3].wrapping_add(v[1].wrapping_mul(v[2]));
    };
    mix(&mut v);
    v = v.map(|x| x ^ (x >> 16));
    mix(&mut v);
    v
}

/// A standard normal from the hash of `key` (Box–Muller), twin of `counter_normal`.
pub fn counter_normal(key: [u32; 4]) -> f32 {
    let h = pcg4d(key);
    let u1 = ((h[0] >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0);
    let u2 = (h[1] >> 8) as f32 * (1.0 / 16_777_216.0);
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// `model` with weights θ + `scale`·ε for one pair's noise (the particle's network).
pub fn perturbed_model(
    model: &Model,
    noise_layout: &NoiseLayout,
    noise: &[f32],
    scale: f32,
) -> Model {
    let packed = PackedLayout::new(&model.config);
    let mut theta = packed.pack(model);
    for (w, e) in theta.iter_mut().zip(noise_layout.dense(&packed, noise)) {
        *w += scale * e;
    }
    Model {
        config: model.config.clone(),
        weights: packed.unpack(&theta),
    }
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
