// Optimus's rank-one preconditioner, after `step.wgsl` wrote s and u: B ← B + u uᵀ and
// x ← x − B s. One invocation per four rows of B, a workgroup per block of 64 rows of one
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

// Invocations of a workgroup, each updating four rows of its block (the four share
// every read of u_j and s_j): 16 for blocks of 64 rows, fewer when every problem of the
// batch is smaller (set per batch by `LearnedNet::new`).
override WGP: u32 = 16u;

@compute @workgroup_size(WGP)
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
    let st = state[blk.w];
    // Problems that stopped this pass (or earlier) took no step.
    if st.status != ST_RUNNING || blk.z + lid >= d {
        return;
    }
    let s0 = pp.scratch_off + off;
    let u0 = pp.scratch_off + pp.n_total + off;
    // Rows lid, lid + WGP, lid + 2 WGP and lid + 3 WGP of the block; those past d are
    // computed on row d − 1 and not written.
    let i0 = blk.z + lid;
    let i1 = min(i0 + WGP, d - 1u);
    let i2 = min(i0 + 2u * WGP, d - 1u);
    let i3 = min(i0 + 3u * WGP, d - 1u);
    let live = vec3<bool>(i0 + WGP < d, i0 + 2u * WGP < d, i0 + 3u * WGP < d);
    let ui = vec4<f32>(mat[u0 + i0], mat[u0 + i1], mat[u0 + i2], mat[u0 + i3]);
    let r0 = st.moff + i0 * d;
    let r1 = st.moff + i1 * d;
    let r2 = st.moff + i2 * d;
    let r3 = st.moff + i3 * d;
    var bs = vec4<f32>(0.0);
    for (var j = 0u; j < d; j++) {
        let uj = mat[u0 + j];
        let sj = mat[s0 + j];
        let bij = vec4<f32>(mat[r0 + j], mat[r1 + j], mat[r2 + j], mat[r3 + j]) + ui * uj;
        mat[r0 + j] = bij.x;
        if live.x {
            mat[r1 + j] = bij.y;
        }
        if live.y {
            mat[r2 + j] = bij.z;
        }
        if live.z {
            mat[r3 + j] = bij.w;
        }
        bs += bij * sj;
    }
    x[off + i0] -= bs.x;
    if live.x {
        x[off + i1] -= bs.y;
    }
    if live.y {
        x[off + i2] -= bs.z;
    }
    if live.z {
        x[off + i3] -= bs.w;
    }
}
