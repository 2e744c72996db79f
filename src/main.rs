fn main() {
    let ctx = optimus_gpu::GpuContext::new().unwrap();
    print!("{}", ctx.describe());
}
