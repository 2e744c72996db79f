// First half of a rank-one perturbed linear layer: z_t = x_t · a for every token row,
// with a the row factor of the token's antithetic pair. `linear.wgsl` then adds
// ±σ (z_t b + e) to the shared product x_t W + bias, so one matmul serves every
// particle. CPU twin: `train::noise::perturbed_model` (the dense θ ± σ a bᵀ it equals).

struct ProjectParams {
    n_rows: u32,
    in4: u32,
    // Offset of a in each pair's noise vector, in vec4s.
    a_off4: u32,
    // Pair stride of the noise, in vec4s.
    stride4: u32,
}

@group(0) @binding(0) var<uniform> params: ProjectParams;
// Particle of each token row; particle p is pair p / 2, sign + when p is even.
@group(0) @binding(1) var<storage, read> tok: array<u32>;
@group(0) @binding(2) var<storage, read> noise: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> xin: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> proj: array<f32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = (wid.x + wid.y * nwg.x) * 64u + lid;
    if t >= params.n_rows {
        return;
    }
    let base = (tok[t] >> 1u) * params.stride4 + params.a_off4;
    var s = 0.0;
    for (var k4 = 0u; k4 < params.in4; k4++) {
        s += dot(xin[t * params.in4 + k4], noise[base + k4]);
    }
    proj[t] = s;
}
