use optimus_gpu::GpuContext;
use std::sync::OnceLock;

/// One device for the whole test binary.
pub fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| {
        GpuContext::new().unwrap_or_else(|e| panic!("tests need a GPU adapter: {e}"))
    })
}

/// |a − b| ≤ tol · (scale + |b|), with a message naming `what`.
pub fn assert_close(a: f64, b: f64, tol: f64, scale: f64, what: &str) {
    assert!(
        (a - b).abs() <= tol * (scale + b.abs()),
        "{what}: gpu {a} vs cpu {b} (tol {tol}, scale {scale})"
    );
}

/// ‖gpu − cpu‖ / ‖cpu‖ of two vectors (a gradient on the GPU against its twin).
pub fn relative_error(gpu: &[f32], cpu: &[f64]) -> f64 {
    let norm = cpu.iter().map(|v| v * v).sum::<f64>().sqrt();
    let err = cpu
        .iter()
        .zip(gpu)
        .map(|(c, g)| (*g as f64 - c).powi(2))
        .sum::<f64>()
        .sqrt();
    err / norm
}

/// max_i |a_i − b_i|: how far a point moved, or how far two runs parted.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(u, v)| (u - v).abs())
        .fold(0.0, f64::max)
}
