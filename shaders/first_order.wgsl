// First-order optimizers, one step per pass after the objective stage evaluated f and
// ∇f at x: gradient descent, heavy-ball momentum, Nesterov momentum and Adam.
// CPU twin: `optim::cpu::first_order_step`.

#include "shared/problem.wgsl"
#include "shared/reduce.wgsl"

@group(0) @binding(0) var<uniform> params: OptParams;
@group(0) @binding(1) var<storage, read> problems: array<Problem>;
@group(0) @binding(2) var<storage, read> f_in: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
// Two per-coordinate regions: first moment / velocity | second moment.
@group(0) @binding(5) var<storage, read_write> vecs: array<f32>;
@group(0) @binding(6) var<storage, read_write> state: array<OptState>;
@group(0) @binding(7) var<storage, read_write> history: array<f32>;

#include "shared/opt_state.wgsl"
#include "shared/history.wgsl"

const V_GD: u32 = 0u;
const V_MOMENTUM: u32 = 1u;
const V_NESTEROV: u32 = 2u;
const V_ADAM: u32 = 3u;


@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let p = problem_index(wid, nwg);
    if p >= params.n_problems {
        return;
    }
    var st = load_state(p, lid);
    if st.status != ST_RUNNING {
        return;
    }
    let prob = problems[p];
    let d = prob.dim;
    let off = prob.offset;
    let n = params.n_total;

    st = evaluation_bookkeeping(p, lid, st, off, d);
    if st.status == ST_RUNNING {
        let lr = st.lr;
        let b1 = params.beta1;
        let b2 = params.beta2;
        let t = f32(st.iter + 1u);
        for (var i = lid; i < d; i += WG) {
            let gi = g[off + i];
            let m = b1 * vecs[off + i];
            switch params.variant {
                case V_GD: {
                    x[off + i] -= lr * gi;
                }
                case V_MOMENTUM: {
                    let v = m + gi;
                    vecs[off + i] = v;
                    x[off + i] -= lr * v;
                }
                case V_NESTEROV: {
                    let v = m + gi;
                    vecs[off + i] = v;
                    x[off + i] -= lr * (gi + b1 * v);
                }
                default: {
                    let m1 = m + (1.0 - b1) * gi;
                    let v2 = b2 * vecs[n + off + i] + (1.0 - b2) * gi * gi;
                    vecs[off + i] = m1;
                    vecs[n + off + i] = v2;
                    let mh = m1 / (1.0 - pow(b1, t));
                    let vh = v2 / (1.0 - pow(b2, t));
                    x[off + i] -= lr * mh / (sqrt(vh) + params.eps);
                }
            }
        }
        st.iter += 1u;
    }
    if lid == 0u {
        state[p] = st;
    }
}
