// Scalar helpers WGSL lacks, accurate near zero where gaps are measured.

const PI: f32 = 3.14159265358979;

// exp(x) − 1 without cancellation for small |x|.
fn expm1_(x: f32) -> f32 {
    if abs(x) < 1e-2 {
        return x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x / 24.0)));
    }
    return exp(x) - 1.0;
}

// log(1 + x) without cancellation for small |x|.
fn log1p_(x: f32) -> f32 {
    if abs(x) < 1e-2 {
        return x * (1.0 - x * (0.5 - x * (1.0 / 3.0 - x * 0.25)));
    }
    return log(1.0 + x);
}

// x^n for an integer n ≥ 0 and any sign of x (WGSL's pow needs x > 0).
fn ipow(x: f32, n: u32) -> f32 {
    var r = 1.0;
    var b = x;
    var e = n;
    while e > 0u {
        if (e & 1u) == 1u {
            r = r * b;
        }
        b = b * b;
        e = e >> 1u;
    }
    return r;
}

// sin(π x) with the argument reduced exactly first: f32's sin loses digits on large
// arguments, which Rastrigin and Ackley reach (|2π z| up to ~200).
fn sinpi(x: f32) -> f32 {
    return sin(PI * (x - 2.0 * round(0.5 * x)));
}

fn cospi(x: f32) -> f32 {
    return cos(PI * (x - 2.0 * round(0.5 * x)));
}
