// Linear layer for GPUs: each invocation computes an 8-token × 8-output block in
// registers, so every weight and input read serves eight multiply-adds and the
// thousands of blocks of a batch fill the device. (On lavapipe this layout ran
// 7–13 GFLOP/s, where one output per invocation ran 1 GFLOP/s.)

#include "learned/linear.wgsl"

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t0 = gid.x * 8u;
    let j = gid.y * 2u;
    if t0 >= params.n_rows {
        return;
    }
    let in4 = params.in4;
    let out4 = params.out4;
    let bias0 = bias(j);
    let bias1 = bias(j + 1u);
    var a0 = bias0;
    var a1 = bias0;
    var a2 = bias0;
    var a3 = bias0;
    var a4 = bias0;
    var a5 = bias0;
    var a6 = bias0;
    var a7 = bias0;
    var b0 = bias1;
    var b1 = bias1;
    var b2 = bias1;
    var b3 = bias1;
    var b4 = bias1;
    var b5 = bias1;
    var b6 = bias1;
    var b7 = bias1;
    for (var k4 = 0u; k4 < in4; k4++) {
        let x0 = xin[t0 * in4 + k4];
        let x1 = xin[(t0 + 1u) * in4 + k4];
        let x2 = xin[(t0 + 2u) * in4 + k4];
        let x3 = xin[(t0 + 3u) * in4 + k4];
        let x4 = xin[(t0 + 4u) * in4 + k4];
        let x5 = xin[(t0 + 5u) * in4 + k4];
        let x6 = xin[(t0 + 6u) * in4 + k4];
        let x7 = xin[(t0 + 7u) * in4 + k4];
        for (var kk = 0u; kk < 4u; kk++) {
            let wrow = params.w_off4 + (k4 * 4u + kk) * out4 + j;
            let w0 = theta[wrow];
            let w1 = theta[wrow + 1u];
            a0 += x0[kk] * w0;
            a1 += x1[kk] * w0;
            a2 += x2[kk] * w0;
            a3 += x3[kk] * w0;
            a4 += x4[kk] * w0;
            a5 += x5[kk] * w0;
            a6 += x6[kk] * w0;
            a7 += x7[kk] * w0;
            b0 += x0[kk] * w1;
            b1 += x1[kk] * w1;
            b2 += x2[kk] * w1;
            b3 += x3[kk] * w1;
            b4 += x4[kk] * w1;
            b5 += x5[kk] * w1;
            b6 += x6[kk] * w1;
            b7 += x7[kk] * w1;
        }
    }
    finish(t0, j, a0);
    finish(t0 + 1u, j, a1);
    finish(t0 + 2u, j, a2);
    finish(t0 + 3u, j, a3);
    finish(t0 + 4u, j, a4);
    finish(t0 + 5u, j, a5);
    finish(t0 + 6u, j, a6);
    finish(t0 + 7u, j, a7);
    finish(t0, j + 1u, b0);
    finish(t0 + 1u, j + 1u, b1);
    finish(t0 + 2u, j + 1u, b2);
    finish(t0 + 3u, j + 1u, b3);
    finish(t0 + 4u, j + 1u, b4);
    finish(t0 + 5u, j + 1u, b5);
    finish(t0 + 6u, j + 1u, b6);
    finish(t0 + 7u, j + 1u, b7);
}
