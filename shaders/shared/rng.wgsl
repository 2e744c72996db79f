// Counter-based normal draws for the ES perturbations: pcg4d (Jarzynski & Olano, "Hash
// Functions for GPU Rendering", 2020) hashes (seed, iteration, pair, index) into
// independent u32s and Box–Muller turns two of them into a normal. Stateless, so the
// gradient reduction regenerates exactly the noise the forward passes used instead of
// storing it. CPU twin: `train::noise::counter_normal`.

fn pcg4d(key: vec4<u32>) -> vec4<u32> {
    var v = key * 1664525u + 1013904223u;
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    v = v ^ (v >> vec4<u32>(16u));
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    return v;
}

fn counter_normal(key: vec4<u32>) -> f32 {
    let h = pcg4d(key);
    let u1 = (f32(h.x >> 8u) + 0.5) * (1.0 / 16777216.0);
    let u2 = f32(h.y >> 8u) * (1.0 / 16777216.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307 * u2);
}
