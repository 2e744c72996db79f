// Attention for GPUs. A workgroup owns one block of up to 64 queries of one problem and
// one head, two per invocation so every key read from workgroup memory serves two
// queries; when every problem has d ≤ 32 (PAIR), a workgroup instead owns 32 queries of
// two adjacent heads, so the second slot is not wasted. Keys and values stream through
// workgroup memory in tiles, with one rescale of the running sums per tile.

#include "learned/attention.wgsl"

// Queries per block (two per invocation) and keys per tile.
const BLOCK: u32 = 64u;
const TILE: u32 = 32u;
const MAX_HEAD4: u32 = 8u;
// Head width in vec4s, fixed per pipeline so the loops over it unroll into registers.
override HD4: u32 = 4u;
// 1: each invocation's two slots are one query in heads 2z and 2z + 1 (needs d ≤ 32,
// an even head count and 2·HD4 ≤ MAX_HEAD4); 0: two queries of head z.
override PAIR: u32 = 0u;

var<workgroup> ks: array<vec4<f32>, 256>; // TILE keys × MAX_HEAD4
var<workgroup> vs: array<vec4<f32>, 256>;

@compute @workgroup_size(32)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = wid.x + wid.y * nwg.x;
    if b >= params.n_blocks {
        return;
    }
    let pair = PAIR == 1u;
    let h0 = select(wid.z, 2u * wid.z, pair);
    let h1 = select(wid.z, h0 + 1u, pair);
    let blk = blocks[b];
    let off = blk.x;
    let d = blk.y;
    let w4 = params.width / 4u;
    let hd4 = HD4;
    let stride4 = 3u * w4;
    let qa = blk.z + lid;
    let qb = select(blk.z + TILE + lid, qa, pair);
    // Width of the staged key rows, and where the second slot's head starts in them.
    let span = select(hd4, 2u * hd4, pair);
    let k1 = select(0u, hd4, pair);
    let scale = inverseSqrt(f32(hd4 * 4u));

    // Out-of-range queries compute on a clamped row and are not written.
    let ra = min(qa, d - 1u);
    let rb = min(qb, d - 1u);
    var q0: array<vec4<f32>, MAX_HEAD4>;
    var q1: array<vec4<f32>, MAX_HEAD4>;
    var acc0: array<vec4<f32>, MAX_HEAD4>;
    var acc1: array<vec4<f32>, MAX_HEAD4>;
    for (var c = 0u; c < hd4; c++) {
        q0[c] = qkv[(off + ra) * stride4 + h0 * hd4 + c] * scale;
        q1[c] = qkv[(off + rb) * stride4 + h1 * hd4 + c] * scale;
    }
    var m0 = -3.0e38;
    var m1 = -3.0e38;
    var l0 = 0.0;
    var l1 = 0.0;
    for (var j0 = 0u; j0 < d; j0 += TILE) {
        let n = min(TILE, d - j0);
        for (var e = lid; e < n * span; e += TILE) {
            let j = e / span;
            let c = e % span;
            let row = (off + j0 + j) * stride4 + h0 * hd4 + c;
            ks[j * MAX_HEAD4 + c] = qkv[row + w4];
            vs[j * MAX_HEAD4 + c] = qkv[row + 2u * w4];
        }
        workgroupBarrier();
        // One pass; each running maximum is raised (and its sums rescaled) only when a
        // score exceeds it, which after the first keys is rare.
        for (var j = 0u; j < n; j++) {
            var s0 = 0.0;
            var s1 = 0.0;
            for (var c = 0u; c < hd4; c++) {
                s0 += dot(q0[c], ks[j * MAX_HEAD4 + c]);
                s1 += dot(q1[c], ks[j * MAX_HEAD4 + k1 + c]);
            }
            if s0 > m0 {
                let corr = exp(m0 - s0);
                l0 *= corr;
                for (var c = 0u; c < hd4; c++) {
                    acc0[c] *= corr;
                }
                m0 = s0;
            }
            if s1 > m1 {
                let corr = exp(m1 - s1);
                l1 *= corr;
                for (var c = 0u; c < hd4; c++) {
                    acc1[c] *= corr;
                }
                m1 = s1;
            }
            let p0 = exp(s0 - m0);
            let p1 = exp(s1 - m1);
            l0 += p0;
            l1 += p1;
            for (var c = 0u; c < hd4; c++) {
                acc0[c] += p0 * vs[j * MAX_HEAD4 + c];
                acc1[c] += p1 * vs[j * MAX_HEAD4 + k1 + c];
            }
        }
        workgroupBarrier();
    }
    for (var c = 0u; c < hd4; c++) {
        if qa < d {
            att[(off + qa) * w4 + h0 * hd4 + c] = acc0[c] / l0;
        }
        if qb < d {
            att[(off + qb) * w4 + h1 * hd4 + c] = acc1[c] / l1;
        }
    }
}
