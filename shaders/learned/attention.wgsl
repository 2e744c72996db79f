// Multi-head self-attention across the dimensions of each problem, masked to the
// problem: a query token attends to the d tokens of its own problem only. A workgroup
// owns one block of up to BLOCK queries of one problem and one head; keys and values
// stream through workgroup memory in tiles with an online softmax (one rescale per
// tile), so d is not bounded by workgroup memory (d = 1 up to thousands). Head widths
// are multiples of 4 up to 32 and are handled as vec4s. CPU twin:
// `learned::cpu::attention`.

struct AttnParams {
    n_blocks: u32,
    width: u32,
    heads: u32,
    pad0: u32,
}

// One query block: x = first token of the problem, y = its d, z = first query (0-based
// within the problem).
@group(0) @binding(0) var<uniform> params: AttnParams;
@group(0) @binding(1) var<storage, read> blocks: array<vec4<u32>>;
// Per token: q | k | v, each `width` wide, heads side by side.
@group(0) @binding(2) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> att: array<vec4<f32>>;

const BLOCK: u32 = 32u;
const MAX_HEAD4: u32 = 8u;
// Head width in vec4s, fixed per pipeline so the loops over it unroll into registers.
override HD4: u32 = 4u;

var<workgroup> ks: array<vec4<f32>, 256>; // BLOCK keys × MAX_HEAD4
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
    let h = wid.z;
    let blk = blocks[b];
    let off = blk.x;
    let d = blk.y;
    let w4 = params.width / 4u;
    let hd4 = HD4;
    let stride4 = 3u * w4;
    let qi = blk.z + lid;
    let has_query = qi < d;
    let scale = inverseSqrt(f32(hd4 * 4u));

    var q: array<vec4<f32>, MAX_HEAD4>;
    var acc: array<vec4<f32>, MAX_HEAD4>;
    if has_query {
        for (var c = 0u; c < hd4; c++) {
            q[c] = qkv[(off + qi) * stride4 + h * hd4 + c] * scale;
        }
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var j0 = 0u; j0 < d; j0 += BLOCK) {
        let n = min(BLOCK, d - j0);
        for (var e = lid; e < n * hd4; e += BLOCK) {
            let j = e / hd4;
            let c = e % hd4;
            let row = (off + j0 + j) * stride4 + h * hd4 + c;
            ks[j * MAX_HEAD4 + c] = qkv[row + w4];
            vs[j * MAX_HEAD4 + c] = qkv[row + 2u * w4];
        }
        workgroupBarrier();
        if has_query {
            // One pass; the running maximum is raised (and the sums rescaled) only when
            // a score exceeds it, which after the first keys is rare.
            for (var j = 0u; j < n; j++) {
                var s = 0.0;
                for (var c = 0u; c < hd4; c++) {
                    s += dot(q[c], ks[j * MAX_HEAD4 + c]);
                }
                if s > m {
                    let corr = exp(m - s);
                    l *= corr;
                    for (var c = 0u; c < hd4; c++) {
                        acc[c] *= corr;
                    }
                    m = s;
                }
                let p = exp(s - m);
                l += p;
                for (var c = 0u; c < hd4; c++) {
                    acc[c] += p * vs[j * MAX_HEAD4 + c];
                }
            }
        }
        workgroupBarrier();
    }
    if has_query {
        for (var c = 0u; c < hd4; c++) {
            att[(off + qi) * w4 + h * hd4 + c] = acc[c] / l;
        }
    }
}
