// Deterministic workgroup reductions (a tree in workgroup memory, no float atomics).
// Call from uniform control flow only: they contain barriers.

// Invocations per workgroup (`kernel::WORKGROUP`). 32 keeps lanes busy at the
// typical d = 32 and measured 1.3x faster than 64 on lavapipe. The objective,
// first-order, features and learned-step kernels set it per batch, as low as the
// largest problem allows (`kernel::lanes_for`).
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

// Sums over a problem's coordinates whose bits do not depend on WG: they add as 32
// invocations would, each summing coordinates lid, lid + 32, ... in a register and the
// registers then as the tree above. With WG < 32 an invocation keeps the registers of
// the 32 / WG invocations it stands for (`Slots`: coordinate lid + m·WG goes to slot
// m mod 32/WG) and adds them as the tree's first levels would before its own tree.
// A batch then gives the same values with one subgroup per problem on a CPU device as
// with 32 invocations on a GPU (`kernel::lanes_for`). Four slots suffice: lanes_for
// gives WG ≥ 8 wherever an invocation holds more than one coordinate and d ≤ 64, and
// WG = 32 past d = 64.
const SLOTS: u32 = 32u;

struct Slots {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    a3: vec4<f32>,
}

fn slots_new() -> Slots {
    return Slots(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
}

// Adds v, coordinate i's value, to the slot of the invocation that holds it (i = lid +
// m·WG for the m-th coordinate of invocation lid < WG).
fn slot_add(s: ptr<function, Slots>, i: u32, v: vec4<f32>) {
    switch (i / WG) % (SLOTS / WG) {
        case 0u: { (*s).a0 += v; }
        case 1u: { (*s).a1 += v; }
        case 2u: { (*s).a2 += v; }
        default: { (*s).a3 += v; }
    }
}

// The sum over the workgroup, returned to every invocation.
fn slots_sum(lid: u32, s: Slots) -> vec4<f32> {
    var t = s.a0;
    if SLOTS / WG >= 4u {
        t = (s.a0 + s.a2) + (s.a1 + s.a3);
    } else if SLOTS / WG == 2u {
        t = s.a0 + s.a1;
    }
    return wg_sum4(lid, t);
}
