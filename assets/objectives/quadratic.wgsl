// Example user objective for `optimus-gpu eval --objective assets/objectives/quadratic.wgsl`:
// an ill-conditioned convex quadratic f(z) = ½ Σ λ_i z_i², with λ_i spaced
// evenly from 1 to 1e3 (condition number 1e3), minimum 0 at z = 0.
//
// A user objective defines the five items below. `coord(j)` (provided by the engine)
// reads coordinate j of the problem being evaluated; each coordinate i is handled by one
// GPU invocation, which returns its term of f and the full partial derivative ∂f/∂z_i,
// so terms may read any coordinates.

const USER_F_STAR: f32 = 0.0;
const USER_DOMAIN_LO: f32 = -1.0;
const USER_DOMAIN_HI: f32 = 1.0;

fn curvature(i: u32, d: u32) -> f32 {
    if d <= 1u {
        return 1.0;
    }
    return 1.0 + 999.0 * f32(i) / f32(d - 1u);
}

fn user_term(i: u32, d: u32) -> f32 {
    let z = coord(i);
    return 0.5 * curvature(i, d) * z * z;
}

fn user_grad(i: u32, d: u32) -> f32 {
    return curvature(i, d) * coord(i);
}
