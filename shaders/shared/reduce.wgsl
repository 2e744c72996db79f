// Deterministic workgroup reductions (a tree in workgroup memory, no float atomics).
// Call from uniform control flow only: they contain barriers.

// Invocations per workgroup (`kernel::WORKGROUP`). 32 keeps lanes busy at the
// typical d = 32 and measured 1.3x faster than 64 on lavapipe. The objective and
// first-order kernels set it per batch, as low as the largest problem allows
// (`kernel::lanes_for`).
override WG: u32 = 32u;

var<workgroup> red_buf: array<vec4<f32>, WG>;
var<workgroup> red_out: vec4<f32>;

// Sum of `v` over the workgroup, returned to every invocation.
fn wg_sum4(lid: u32, v: vec4<f32>) -> vec4<f32> {
    workgroupBarrier();
    red_buf[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            red_buf[lid] = red_buf[lid] + red_buf[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        red_out = red_buf[0];
    }
    return workgroupUniformLoad(&red_out);
}

fn wg_sum(lid: u32, v: f32) -> f32 {
    return wg_sum4(lid, vec4<f32>(v, 0.0, 0.0, 0.0)).x;
}

// Sums over a problem's coordinates whose bits do not depend on WG: coordinate i adds
// into slot i % 32 (`slot_add`, called with i ≡ lid mod WG, so each invocation owns
// its slots) and the slots sum as the tree of 32 invocations above would. A batch then
// gives the same values with one subgroup per problem on a CPU device as with 32
// invocations on a GPU (`kernel::lanes_for`).
const SLOTS: u32 = 32u;
var<workgroup> slot_buf: array<vec4<f32>, SLOTS>;

fn slots_clear(lid: u32) {
    workgroupBarrier();
    for (var t = lid; t < SLOTS; t += WG) {
        slot_buf[t] = vec4<f32>(0.0);
    }
}

fn slot_add(i: u32, v: vec4<f32>) {
    slot_buf[i % SLOTS] += v;
}

// The sum of the slots, returned to every invocation. Slots at and past d hold zeros,
// so the levels that would only add them are skipped; a level whose stride is a
// multiple of WG adds slots of one invocation only and needs no barrier before it.
fn slots_sum(lid: u32, d: u32) -> vec4<f32> {
    let top = min(SLOTS, 1u << (32u - countLeadingZeros(max(d, 1u) - 1u))) / 2u;
    for (var s = top; s > 0u; s = s >> 1u) {
        if s < WG {
            workgroupBarrier();
        }
        for (var t = lid; t < s; t += WG) {
            slot_buf[t] = slot_buf[t] + slot_buf[t + s];
        }
    }
    return workgroupUniformLoad(&slot_buf[0]);
}
