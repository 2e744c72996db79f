// LayerNorm's ε, shared by `layernorm.wgsl` and the linear lane kernels that fuse it
// (`learned::linear`): y = (x − mean)/sqrt(var + ε)·γ + β.

const LN_EPS: f32 = 1e-5;
