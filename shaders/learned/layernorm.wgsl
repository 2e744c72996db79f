// LayerNorm over each token's channels: y = (x − mean)/sqrt(var + 1e-5)·γ + β, one
// invocation per token. γ and β live in θ. CPU twin: `learned::cpu::layernorm`.

struct LnParams {
    n_tokens: u32,
    n: u32,
    g_off: u32,
    b_off: u32,
}

@group(0) @binding(0) var<uniform> params: LnParams;
@group(0) @binding(1) var<storage, read> theta: array<f32>;
@group(0) @binding(2) var<storage, read> xin: array<f32>;
@group(0) @binding(3) var<storage, read_write> yout: array<f32>;

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
    let n = params.n;
    let base = t * n;
    var mean = 0.0;
    for (var j = 0u; j < n; j++) {
        mean += xin[base + j];
    }
    mean /= f32(n);
    var var_ = 0.0;
    for (var j = 0u; j < n; j++) {
        let c = xin[base + j] - mean;
        var_ += c * c;
    }
    let inv = inverseSqrt(var_ / f32(n) + LN_EPS);
    for (var j = 0u; j < n; j++) {
        yout[base + j] = (xin[base + j] - mean) * inv * theta[params.g_off + j] + theta[params.b_off + j];
    }
}
