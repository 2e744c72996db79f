// Batched line search enforcing the strong Wolfe conditions (Nocedal & Wright,
// Algorithms 3.5 and 3.6), as a state machine that advances by one function evaluation
// per pass, so every problem of a batch searches on its own. CPU twin:
// `optim::cpu::LineSearch`.

const LS_C1: f32 = 1e-4;
const LS_C2: f32 = 0.9;
const LS_MAX: u32 = 25u;

const PH_START: u32 = 0u;
const PH_BRACKET: u32 = 1u;
const PH_ZOOM: u32 = 2u;
// Search gave up: evaluate once more at the best point seen and accept it.
const PH_FINAL: u32 = 3u;

const ACT_TRIAL: u32 = 0u;
const ACT_ACCEPT: u32 = 1u;
const ACT_FAIL: u32 = 2u;

fn ls_begin(st: ptr<function, OptState>, f0: f32, dg0: f32, a0: f32) {
    (*st).f0 = f0;
    (*st).dg0 = dg0;
    (*st).a = a0;
    (*st).a_prev = 0.0;
    (*st).f_prev = f0;
    (*st).dg_prev = dg0;
    (*st).a_lo = 0.0;
    (*st).f_lo = f0;
    (*st).dg_lo = dg0;
    (*st).a_hi = 0.0;
    (*st).f_hi = f0;
    (*st).dg_hi = dg0;
    (*st).n_ls = 0u;
    (*st).phase = PH_BRACKET;
}

// Gives up: go back to the best decreasing point if there is one.
fn ls_give_up(st: ptr<function, OptState>) -> u32 {
    if (*st).a_lo > 0.0 && (*st).f_lo < (*st).f0 {
        (*st).a = (*st).a_lo;
        (*st).phase = PH_FINAL;
        return ACT_TRIAL;
    }
    return ACT_FAIL;
}

// Minimizer of the cubic through (lo, hi) with their slopes, kept inside the middle
// 80% of the interval; bisection when the cubic is not usable.
fn ls_cubic(a_lo: f32, f_lo: f32, g_lo: f32, a_hi: f32, f_hi: f32, g_hi: f32) -> f32 {
    let mid = 0.5 * (a_lo + a_hi);
    if !(is_finite(f_hi) && is_finite(g_hi)) {
        return mid;
    }
    let d1 = g_lo + g_hi - 3.0 * (f_lo - f_hi) / (a_lo - a_hi);
    let disc = d1 * d1 - g_lo * g_hi;
    if disc < 0.0 {
        return mid;
    }
    let d2 = sign(a_hi - a_lo) * sqrt(disc);
    let a = a_hi - (a_hi - a_lo) * (g_hi + d2 - d1) / (g_hi - g_lo + 2.0 * d2);
    let lo = min(a_lo, a_hi);
    let w = abs(a_hi - a_lo);
    if !is_finite(a) || a < lo + 0.1 * w || a > lo + 0.9 * w {
        return mid;
    }
    return a;
}

// Takes φ(a) and φ'(a) at the current trial and decides: accept, next trial, or fail.
fn ls_step(st: ptr<function, OptState>, phi_in: f32, dphi_in: f32) -> u32 {
    var phi = phi_in;
    var dphi = dphi_in;
    if !(is_finite(phi) && is_finite(dphi)) {
        phi = 3.0e38;
        dphi = 3.0e38;
    }
    (*st).n_ls += 1u;
    let a = (*st).a;
    let f0 = (*st).f0;
    let dg0 = (*st).dg0;
    let armijo_fails = phi > f0 + LS_C1 * a * dg0;
    let curvature_holds = abs(dphi) <= -LS_C2 * dg0;
    if (*st).phase == PH_FINAL {
        if phi < f0 {
            return ACT_ACCEPT;
        }
        return ACT_FAIL;
    }
    if (*st).phase == PH_BRACKET {
        if armijo_fails || ((*st).n_ls > 1u && phi >= (*st).f_prev) {
            (*st).a_lo = (*st).a_prev;
            (*st).f_lo = (*st).f_prev;
            (*st).dg_lo = (*st).dg_prev;
            (*st).a_hi = a;
            (*st).f_hi = phi;
            (*st).dg_hi = dphi;
            (*st).phase = PH_ZOOM;
        } else if curvature_holds {
            return ACT_ACCEPT;
        } else if dphi >= 0.0 {
            (*st).a_hi = (*st).a_prev;
            (*st).f_hi = (*st).f_prev;
            (*st).dg_hi = (*st).dg_prev;
            (*st).a_lo = a;
            (*st).f_lo = phi;
            (*st).dg_lo = dphi;
            (*st).phase = PH_ZOOM;
        } else {
            // Sufficient decrease but still descending: extrapolate.
            (*st).a_prev = a;
            (*st).f_prev = phi;
            (*st).dg_prev = dphi;
            (*st).a_lo = a;
            (*st).f_lo = phi;
            (*st).dg_lo = dphi;
            if (*st).n_ls >= LS_MAX {
                return ls_give_up(st);
            }
            (*st).a = 2.0 * a;
            return ACT_TRIAL;
        }
    } else {
        if armijo_fails || phi >= (*st).f_lo {
            (*st).a_hi = a;
            (*st).f_hi = phi;
            (*st).dg_hi = dphi;
        } else {
            if curvature_holds {
                return ACT_ACCEPT;
            }
            if dphi * ((*st).a_hi - (*st).a_lo) >= 0.0 {
                (*st).a_hi = (*st).a_lo;
                (*st).f_hi = (*st).f_lo;
                (*st).dg_hi = (*st).dg_lo;
            }
            (*st).a_lo = a;
            (*st).f_lo = phi;
            (*st).dg_lo = dphi;
        }
    }
    let width = abs((*st).a_hi - (*st).a_lo);
    if (*st).n_ls >= LS_MAX || width <= 1e-7 * max((*st).a_lo, (*st).a_hi) {
        return ls_give_up(st);
    }
    (*st).a = ls_cubic((*st).a_lo, (*st).f_lo, (*st).dg_lo, (*st).a_hi, (*st).f_hi, (*st).dg_hi);
    return ACT_TRIAL;
}
