// Per-coordinate buffers laid out as regions of n_total floats (one slot per coordinate
// of every problem of the batch), shared by the kernels that keep several vectors per
// problem in one buffer (`shared/quasi_newton.wgsl`, `learned/guard.wgsl`). The
// includer declares `params` with `n_total` and sets `cur_off` to the current
// problem's offset.

var<private> cur_off: u32;

// Index of coordinate i of region r of the current problem.
fn vi(r: u32, i: u32) -> u32 {
    return r * params.n_total + cur_off + i;
}
