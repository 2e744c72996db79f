//! The GPU context: one device and queue, either picked by the engine or lent by an
//! embedding application, plus the few helpers every stage uses (buffers, readbacks).

use crate::error::{Error, Result};
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// A wgpu device and queue the engine records its work on.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// Adapter description, when the engine picked the adapter itself.
    pub adapter_info: Option<wgpu::AdapterInfo>,
    readbacks: AtomicU64,
    /// Kernels built from generated code, by source: building them is slow on some
    /// drivers (minutes on lavapipe), so every run on this device shares them.
    cache: Mutex<Vec<(String, Arc<dyn Any + Send + Sync>)>>,
}

/// Limits the engine asks for: the WebGPU defaults, except storage buffers as large as
/// the adapter allows (rotations and dense BFGS matrices are big).
fn wanted_limits(adapter: &wgpu::Limits) -> wgpu::Limits {
    wgpu::Limits {
        max_storage_buffer_binding_size: adapter.max_storage_buffer_binding_size,
        max_buffer_size: adapter.max_buffer_size,
        ..wgpu::Limits::default()
    }
}

impl GpuContext {
    /// Picks an adapter (honouring `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`) and opens a
    /// device on it.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    async fn new_async() -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = wgpu::util::initialize_adapter_from_env_or_default(&instance, None)
            .await
            .map_err(|e| Error::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        log::info!(
            "using adapter '{}' ({:?}, {:?})",
            info.name,
            info.backend,
            info.device_type
        );
        // Timestamps, where the adapter has them, for per-kernel profiles.
        let required_features =
            adapter.features() & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("optimus-gpu"),
                required_features,
                required_limits: wanted_limits(&adapter.limits()),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("could not open a device on '{}': {e}", info.name)))?;
        Ok(Self {
            device,
            queue,
            adapter_info: Some(info),
            readbacks: AtomicU64::new(0),
            cache: Mutex::new(Vec::new()),
        })
    }

    /// Wraps a caller's device and queue, for embedding the engine in an existing
    /// wgpu application. The engine then records its work on that device.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Self {
            device,
            queue,
            adapter_info: None,
            readbacks: AtomicU64::new(0),
            cache: Mutex::new(Vec::new()),
        }
    }

    /// The value cached under `key`, built by `build` on first use.
    pub fn cached<T: Send + Sync + 'static>(
        &self,
        key: &str,
        build: impl FnOnce() -> Result<T>,
    ) -> Result<Arc<T>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = cache
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.clone().downcast::<T>().ok())
        {
            return Ok(v);
        }
        let v = Arc::new(build()?);
        cache.push((key.to_string(), v.clone()));
        Ok(v)
    }

    /// Number of device-to-host readbacks so far; the step loops must not add to it.
    pub fn readback_count(&self) -> u64 {
        self.readbacks.load(Ordering::Relaxed)
    }

    /// Most loop iterations one shader invocation may run, where the driver has such a
    /// limit: Mesa's llvmpipe (lavapipe) silently ends an invocation after 65 535
    /// iterations of all its loops together (measured: a 70 000-iteration loop stops at
    /// 65 535), which would give wrong results, not errors.
    pub fn loop_limit(&self) -> Option<u64> {
        let info = self.adapter_info.as_ref()?;
        (info.name.contains("llvmpipe") || info.driver.contains("llvmpipe")).then_some(65_535)
    }

    /// Times stages with timestamp queries, each recorded by `record(k, pass)` into a
    /// pass of its own: (name, milliseconds), summed over stages of the same name, in
    /// first-seen order. None when the device has no timestamps.
    pub fn profile(
        &self,
        names: &[&str],
        record: impl Fn(usize, &mut wgpu::ComputePass<'_>),
    ) -> Result<Option<Vec<(String, f64)>>> {
        if !self.has_timestamps() {
            return Ok(None);
        }
        let count = 2 * names.len() as u32;
        let qs = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        for k in 0..names.len() {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &qs,
                    beginning_of_pass_write_index: Some(2 * k as u32),
                    end_of_pass_write_index: Some(2 * k as u32 + 1),
                }),
            });
            record(k, &mut pass);
        }
        enc.resolve_query_set(&qs, 0..count, &resolve, 0);
        self.queue.submit([enc.finish()]);
        let ticks: Vec<u64> = self.read(&resolve, count as usize)?;
        let period_ms = self.queue.get_timestamp_period() as f64 * 1e-6;
        let mut out: Vec<(String, f64)> = Vec::new();
        for (k, name) in names.iter().enumerate() {
            let ms = ticks[2 * k + 1].saturating_sub(ticks[2 * k]) as f64 * period_ms;
            match out.iter_mut().find(|(n, _)| n == name) {
                Some(e) => e.1 += ms,
                None => out.push((name.to_string(), ms)),
            }
        }
        Ok(Some(out))
    }

    /// Whether passes can carry timestamp queries (per-kernel profiles).
    pub fn has_timestamps(&self) -> bool {
        self.device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Largest storage buffer binding the device allows, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.device.limits().max_storage_buffer_binding_size
    }

    /// A storage buffer initialised from `data` (at least 4 bytes, so empty arrays bind).
    pub fn storage<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.check_size(label, bytes.len() as u64)?;
        let contents = if bytes.len() < 4 {
            &[0u8; 4][..]
        } else {
            bytes
        };
        Ok(self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            }))
    }

    /// A zeroed storage buffer of `len` 4-byte words.
    pub fn storage_zeroed(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        let size = (len.max(1) * 4) as u64;
        self.check_size(label, size)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// A uniform buffer holding `value`.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    fn check_size(&self, label: &str, size: u64) -> Result<()> {
        let max = self.max_binding();
        if size > max {
            return Err(Error::TooLarge(format!(
                "buffer '{label}' needs {size} bytes, over this device's limit of {max} bytes; \
                 use fewer problems or smaller dimensions per batch"
            )));
        }
        Ok(())
    }

    /// Copies `len` values of type `T` from the start of `buffer` back to the host.
    /// Counted, so tests can assert that step loops do not read back.
    pub fn read<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<T>> {
        self.readbacks.fetch_add(1, Ordering::Relaxed);
        let size = (len * std::mem::size_of::<T>()) as u64;
        if size == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("device lost while reading back: {e}")))?;
        rx.recv()
            .map_err(|e| Error::Gpu(format!("readback channel closed: {e}")))?
            .map_err(|e| Error::Gpu(format!("could not map readback buffer: {e}")))?;
        let view = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("could not view readback buffer: {e}")))?;
        let out = bytemuck::cast_slice(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Waits until all submitted work is done (for timing).
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("device lost: {e}")))
    }

    /// One-paragraph description for `optimus-gpu info`.
    pub fn describe(&self) -> String {
        let l = self.device.limits();
        let mut s = String::new();
        if let Some(i) = &self.adapter_info {
            s += &format!(
                "adapter: {}\nbackend: {:?}\ndevice type: {:?}\ndriver: {} {}\n",
                i.name, i.backend, i.device_type, i.driver, i.driver_info
            );
        } else {
            s += "adapter: provided by the embedding application\n";
        }
        s += &format!(
            "max storage buffer binding: {} MiB\nmax buffer size: {} MiB\n\
             max storage buffers per stage: {}\nmax workgroup storage: {} KiB\n\
             max invocations per workgroup: {}\nmax workgroups per dimension: {}\n\
             features: {:?}\nloop iterations per invocation: {}\n",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            self.device.features(),
            self.loop_limit()
                .map_or("no driver limit".to_string(), |l| format!(
                    "at most {l} (llvmpipe)"
                )),
        );
        s
    }
}
