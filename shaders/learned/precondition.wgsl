// Optimus's rank-one preconditioner, after `step.wgsl` wrote s and u: B ← B + u uᵀ and
// x ← x − B s. One invocation per row of B, a workgroup per block of 64 rows of one
// problem, so each invocation loops over d columns only (lavapipe stops any invocation
// after 65 535 loop iterations in all, which a whole-matrix loop per problem passes at
// d ≈ 1000). CPU twin: the preconditioner part of `learned::cpu::step`.

#include "shared/opt_state.wgsl"

struct PrecondParams {
    n_blocks: u32,
    n_total: u32,
    // Start of the s | u scratch in `mat`.
    scratch_off: u32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> pp: PrecondParams;
// Row blocks: first coordinate of the problem, its d, first row, problem index.
@group(0) @binding(1) var<storage, read> blocks: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> state: array<OptState>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> mat: array<f32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = wid.x + wid.y * nwg.x;
    if b >= pp.n_blocks {
        return;
    }
    let blk = blocks[b];
    let off = blk.x;
    let d = blk.y;
    let i = blk.z + lid;
    let st = state[blk.w];
    // Problems that stopped this pass (or earlier) took no step.
    if st.status != ST_RUNNING || i >= d {
        return;
    }
    let s0 = pp.scratch_off + off;
    let u0 = pp.scratch_off + pp.n_total + off;
    let ui = mat[u0 + i];
    let row = st.moff + i * d;
    var bs = 0.0;
    for (var j = 0u; j < d; j++) {
        let bij = mat[row + j] + ui * mat[u0 + j];
        mat[row + j] = bij;
        bs += bij * mat[s0 + j];
    }
    x[off + i] -= bs;
}
