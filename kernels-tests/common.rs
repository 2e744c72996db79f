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
