// Convergence history of the optimizer kernels: (f, evaluations) per problem and
// iteration, T + 1 entries per problem. Needs `params: OptParams` and `history`.

// Records f at iteration `it` (and the evaluations spent to get there).
fn write_history(p: u32, it: u32, f: f32, evals: u32) {
    let base = 2u * (p * (params.steps + 1u) + it);
    history[base] = f;
    history[base + 1u] = f32(evals);
}
