// One problem of a batch. Coordinates of all problems are stored back to back
// (ragged): problem p owns [offset, offset + dim) of every per-coordinate buffer.
// Mirrors `problem::ProblemDesc`.
struct Problem {
    offset: u32,
    dim: u32,
    // Benchmark function id (`Function::id`), or FUNC_USER.
    func: u32,
    // Start of the problem's d×d row-major rotation in `rot` (rows and columns
    // padded to a multiple of 4, `problem::rotation_len`), or ROT_NONE.
    rot: u32,
    // f(x) = scale · F(z*(d) + R (x − center) / width).
    scale: f32,
    inv_width: f32,
    pad1: u32,
    pad2: u32,
}

const ROT_NONE: u32 = 0xffffffffu;
// Benchmark function ids: `Function`'s discriminants (a test in `src/functions.rs`
// holds them equal), then the user objective's (`problem::FUNC_USER`).
const F_SPHERE: u32 = 0u;
const F_ROSENBROCK: u32 = 1u;
const F_RASTRIGIN: u32 = 2u;
const F_ACKLEY: u32 = 3u;
const F_LEVY: u32 = 4u;
const F_GRIEWANK: u32 = 5u;
const F_STYBLINSKI_TANG: u32 = 6u;
const F_DIXON_PRICE: u32 = 7u;
const F_POWELL: u32 = 8u;
const F_PERM: u32 = 9u;
const F_ZAKHAROV: u32 = 10u;
const F_TRID: u32 = 11u;
const F_SCHWEFEL: u32 = 12u;
const FUNC_USER: u32 = 13u;

// Workgroups are laid out on a 2-d grid when a batch has more than 65535 problems.
fn problem_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
