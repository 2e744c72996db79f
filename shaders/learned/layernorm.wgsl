// LayerNorm over each token's channels: y = (x − mean)/sqrt(var + 1e-5)·γ + β, one
// invocation per token, channels read as vec4 (widths are multiples of 4). γ and β
// live in the packed parameters. CPU twin: `learned::cpu::layernorm`.

struct LnParams {
    n_tokens: u32,
    // Channels in vec4s.
    n4: u32,
    // Offsets of γ and β in the packed parameters, in vec4s.
    g_off4: u32,
    b_off4: u32,
}

@group(0) @binding(0) var<uniform> params: LnParams;
@group(0) @binding(1) var<storage, read> theta: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> xin: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> yout: array<vec4<f32>>;

const LN_EPS: f32 = 1e-5;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = (wid.x + wid.y * nwg.x) * 64u + lid;
    if t >= params.n_tokens {
        return;
    }
    let n4 = params.n4;
    let base = t * n4;
    var s = vec4<f32>(0.0);
    for (var j = 0u; j < n4; j++) {
        s += xin[base + j];
    }
    let mean = (s.x + s.y + s.z + s.w) / f32(4u * n4);
    var q = vec4<f32>(0.0);
    for (var j = 0u; j < n4; j++) {
        let c = xin[base + j] - mean;
        q += c * c;
    }
    let inv = inverseSqrt((q.x + q.y + q.z + q.w) / f32(4u * n4) + LN_EPS);
    for (var j = 0u; j < n4; j++) {
        yout[base + j] = (xin[base + j] - mean) * inv * theta[params.g_off4 + j] + theta[params.b_off4 + j];
    }
}
