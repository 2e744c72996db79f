// Multi-head self-attention across the dimensions of each problem, masked to the
// problem: a query token attends to the d tokens of its own problem only. A workgroup
// owns one block of up to BLOCK queries of one problem and one head; keys and values
// stream through workgroup memory in tiles with an online softmax, so d is not bounded
// by workgroup memory (d = 1 up to thousands). CPU twin: `learned::cpu::attention`.

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
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read_write> att: array<f32>;

const BLOCK: u32 = 32u;
const MAX_HEAD: u32 = 32u;

var<workgroup> ks: array<f32, 1024>; // BLOCK keys × MAX_HEAD
var<workgroup> vs: array<f32, 1024>;

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
    let w = params.width;
    let hd = w / params.heads;
    let stride = 3u * w;
    let qi = blk.z + lid;
    let has_query = qi < d;
    let scale = inverseSqrt(f32(hd));

    var q: array<f32, MAX_HEAD>;
    var acc: array<f32, MAX_HEAD>;
    if has_query {
        for (var c = 0u; c < hd; c++) {
            q[c] = qkv[(off + qi) * stride + h * hd + c] * scale;
        }
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var j0 = 0u; j0 < d; j0 += BLOCK) {
        let n = min(BLOCK, d - j0);
        for (var e = lid; e < n * hd; e += BLOCK) {
            let j = e / hd;
            let c = e % hd;
            let row = (off + j0 + j) * stride + h * hd + c;
            ks[j * MAX_HEAD + c] = qkv[row + w];
            vs[j * MAX_HEAD + c] = qkv[row + 2u * w];
        }
        workgroupBarrier();
        if has_query {
            for (var j = 0u; j < n; j++) {
                var s = 0.0;
                for (var c = 0u; c < hd; c++) {
                    s += q[c] * ks[j * MAX_HEAD + c];
                }
                let m_new = max(m, s);
                let corr = exp(m - m_new);
                let p = exp(s - m_new);
                l = l * corr + p;
                for (var c = 0u; c < hd; c++) {
                    acc[c] = acc[c] * corr + p * vs[j * MAX_HEAD + c];
                }
                m = m_new;
            }
        }
        workgroupBarrier();
    }
    if has_query {
        for (var c = 0u; c < hd; c++) {
            att[(off + qi) * w + h * hd + c] = acc[c] / l;
        }
    }
}
