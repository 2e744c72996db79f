// Per-problem optimizer state shared by every optimizer kernel; mirrors
// `optim::OptState`. Each problem stops on its own: a kernel returns at once for a
// problem whose status is not RUNNING. Includers bind `state: array<OptState>`.

struct OptState {
    status: u32,
    // Accepted steps so far.
    iter: u32,
    // Objective and gradient evaluations so far.
    n_evals: u32,
    // Line-search phase (PH_*).
    phase: u32,
    // Gap f − f* at the current iterate.
    f: f32,
    // Learning rate (first-order methods), per problem so one batch can tune it.
    lr: f32,
    // Start of this problem's matrix storage (dense BFGS) in `mat`.
    moff: u32,
    n_ls: u32,
    a: f32,
    f0: f32,
    dg0: f32,
    a_prev: f32,
    f_prev: f32,
    dg_prev: f32,
    a_lo: f32,
    f_lo: f32,
    dg_lo: f32,
    a_hi: f32,
    f_hi: f32,
    dg_hi: f32,
    // Stored (s, y) pairs (L-BFGS) or updates applied (BFGS).
    k: u32,
    // Ring-buffer slot of the next (s, y) pair (L-BFGS).
    head: u32,
    // Learned log step scale ℓ (learned optimizers with a step-scale output); starts at 0.
    log_scale: f32,
    pad1: u32,
}

// Bound on the learned log step scale (`model::LOG_SCALE_MAX`).
const LOG_SCALE_MAX: f32 = 12.0;

const ST_RUNNING: u32 = 0u;
const ST_DONE: u32 = 1u;
const ST_CONVERGED: u32 = 2u;
const ST_STALLED: u32 = 3u;
const ST_DIVERGED: u32 = 4u;

// Parameters shared by the optimizer kernels; mirrors `optim::OptParams`.
struct OptParams {
    n_problems: u32,
    n_total: u32,
    // Step budget T: the history holds T + 1 values per problem.
    steps: u32,
    // Variant within the kernel (first_order: GD, heavy ball, Nesterov, Adam).
    variant: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    // Stop when ‖∇f‖₂ ≤ gtol (quasi-Newton methods).
    gtol: f32,
    // L-BFGS memory.
    memory: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

fn is_finite(v: f32) -> bool {
    return v == v && abs(v) <= 3.4e38;
}

var<workgroup> w_state: OptState;

// Problem p's optimizer state, made workgroup-uniform (read by one invocation, then
// broadcast), so kernels may branch on it around barriers.
fn load_state(p: u32, lid: u32) -> OptState {
    if lid == 0u {
        w_state = state[p];
    }
    return workgroupUniformLoad(&w_state);
}
