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

use crate::learned::layout::{NoiseLayout, PackedLayout};
use crate::learned::model::Model;

/// One pair's noise vector for truncation `iteration` in `layout` (twin of
/// `pes/noise.wgsl`): N(0, 1) where the layout holds a real factor, 0 in padding.
pub fn draw(layout: &NoiseLayout, seed: u32, iteration: u32, pair: u32) -> Vec<f32> {
    layout
        .mask
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
