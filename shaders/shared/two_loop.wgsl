// L-BFGS's two-loop recursion, shared by `lbfgs.wgsl` and the loss guard's fallback
// (`learned/guard.wgsl`): t ← H t over the k newest of a ring of m (s, y) pairs whose
// next slot is `head`, with H₀ = (sᵀy / yᵀy) I from the newest pair (the identity when
// k = 0). The includer defines pair_s(slot, i), pair_y(slot, i), t_get(i) and
// t_set(i, v) over the coordinates i < d of the current problem. Every invocation
// touches only its own coordinates, so the reductions are the only synchronisation.
// Needs `shared/reduce.wgsl`. CPU twin: `Curvature::direction` in `optim::cpu`.

const MAX_MEMORY: u32 = 64u;

var<private> two_loop_alphas: array<f32, MAX_MEMORY>;

fn two_loop(lid: u32, d: u32, m: u32, k: u32, head: u32) {
    for (var c = 0u; c < k; c++) {
        let slot = (head + m - 1u - c) % m;
        var part = vec4<f32>(0.0);
        for (var i = lid; i < d; i += WG) {
            let s = pair_s(slot, i);
            part += vec4<f32>(s * t_get(i), s * pair_y(slot, i), 0.0, 0.0);
        }
        let r = wg_sum4(lid, part);
        let alpha = r.x / r.y;
        two_loop_alphas[c] = alpha;
        for (var i = lid; i < d; i += WG) {
            t_set(i, t_get(i) - alpha * pair_y(slot, i));
        }
    }
    var gamma = 1.0;
    if k > 0u {
        let slot = (head + m - 1u) % m;
        var part = vec4<f32>(0.0);
        for (var i = lid; i < d; i += WG) {
            let y = pair_y(slot, i);
            part += vec4<f32>(pair_s(slot, i) * y, y * y, 0.0, 0.0);
        }
        let r = wg_sum4(lid, part);
        gamma = r.x / r.y;
    }
    for (var i = lid; i < d; i += WG) {
        t_set(i, gamma * t_get(i));
    }
    for (var c = k; c > 0u; c--) {
        let slot = (head + m - c) % m;
        var part = vec4<f32>(0.0);
        for (var i = lid; i < d; i += WG) {
            let y = pair_y(slot, i);
            part += vec4<f32>(y * t_get(i), pair_s(slot, i) * y, 0.0, 0.0);
        }
        let r = wg_sum4(lid, part);
        let coef = two_loop_alphas[c - 1u] - r.x / r.y;
        for (var i = lid; i < d; i += WG) {
            t_set(i, t_get(i) + coef * pair_s(slot, i));
        }
    }
}
