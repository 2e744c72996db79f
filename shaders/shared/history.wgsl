// Convergence history of the optimizer kernels: (f, evaluations) per problem and
// iteration, T + 1 entries per problem. Needs `params: OptParams`, `state` and `history`;
// `evaluation_bookkeeping` also needs `f_in` and `g` (the objective's outputs).

// Records f at iteration `it` (and the evaluations spent to get there).
fn write_history(p: u32, it: u32, f: f32, evals: u32) {
    let base = 2u * (p * (params.steps + 1u) + it);
    history[base] = f;
    history[base + 1u] = f32(evals);
}

// Bookkeeping of a method that evaluates once per step (first-order and learned):
// counts the evaluation, records f, and stops the problem at its budget, or flags it
// when f or ∇f is not finite (the rest of the batch goes on). The caller steps only
// while the returned state is RUNNING. Contains a reduction: uniform control flow only.
fn evaluation_bookkeeping(p: u32, lid: u32, st_in: OptState, off: u32, d: u32) -> OptState {
    var bad = 0.0;
    for (var i = lid; i < d; i += WG) {
        bad += select(1.0, 0.0, is_finite(g[off + i]));
    }
    let n_bad = wg_sum(lid, bad);
    var st = st_in;
    let f = f_in[p];
    st.n_evals += 1u;
    if lid == 0u {
        write_history(p, st.iter, f, st.n_evals);
    }
    st.f = f;
    if !is_finite(f) || n_bad > 0.0 {
        st.status = ST_DIVERGED;
    } else if st.iter >= params.steps {
        st.status = ST_DONE;
    }
    return st;
}
