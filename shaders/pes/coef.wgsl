// PES coefficients of one meta-iteration (docs/DESIGN.md §2): per antithetic pair i,
// Δ_i = L⁺_i − L⁻_i (mean meta-loss over the truncation's K steps), split at the pair's
// reset. The part before the reset is credited to the accumulated perturbation
// A_i = Σ_{k = since_i}^{n} ε_i^(k), the part after it to ε_i^(n) alone, so the
// coefficient of truncation k's noise is [since_i ≤ k]·Δ⁻ᵣ + [k = n]·Δ⁺ᵣ, scaled by
// 1 / (pairs · 2σ) (ε = σ·a bᵀ, so Δ·ε/(2σ²) = Δ·a bᵀ/(2σ)). Optional sign(Δ) (VeLO's
// variance reduction); a non-finite Δ counts as 0. CPU twin: `train::cpu::coefficients`.

struct CoefParams {
    n_pairs: u32,
    // Truncations k = first .. first + n_slots − 1 are credited; the last one is n.
    n_slots: u32,
    first: u32,
    use_sign: u32,
    inv_k: f32,
    scale: f32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> params: CoefParams;
@group(0) @binding(1) var<storage, read> loss: array<f32>;
@group(0) @binding(2) var<storage, read> since: array<u32>;
@group(0) @binding(3) var<storage, read_write> coef: array<f32>;

fn clean(v: f32) -> f32 {
    var d = select(0.0, v, v == v && abs(v) <= 3.4e38);
    return d;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= params.n_pairs {
        return;
    }
    var before = clean((loss[4u * i] - loss[4u * i + 2u]) * params.inv_k);
    var after = clean((loss[4u * i + 1u] - loss[4u * i + 3u]) * params.inv_k);
    if params.use_sign != 0u {
        before = sign(before);
        after = sign(after);
    }
    let n = params.first + params.n_slots - 1u;
    for (var s = 0u; s < params.n_slots; s++) {
        let k = params.first + s;
        var c = 0.0;
        if since[i] <= k {
            c += before;
        }
        if k == n {
            c += after;
        }
        coef[s * params.n_pairs + i] = c * params.scale;
    }
}
