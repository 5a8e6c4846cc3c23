//! `--device cpu | flex | ndarray | cuda[:N] | wgpu[:N]`, checked before anything touches it.
//!
//! Touching a CUDA device on a machine without the driver panics inside cudarc on a worker
//! thread, and a wgpu device without an adapter panics inside cubecl; we look for the driver
//! library or the adapter first and turn their absence into an error.
use burn::DispatchDevice;

use crate::nn::Precision;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// burn's flex backend: the CPU default (`cpu`), 2.5-3x faster than ndarray on every
    /// method's training step; `flex,flex` (one replica per core) is faster still on two
    /// cores (docs/performance.md, "CPU backends"). The reference-vector parity tests run on it.
    Flex,
    /// burn's ndarray backend (the design card's; `--device ndarray`). f32 only. The parity
    /// tests run on it too.
    NdArray,
    Cuda(usize),
    /// burn's wgpu backend on a Vulkan (Linux, Windows) or Metal (macOS) adapter: AMD, Intel
    /// and Apple GPUs, and Mesa's lavapipe, a Vulkan driver that runs on the CPU, on which the
    /// GPU code path is tested. `None`: the adapter wgpu ranks first (a discrete GPU before an
    /// integrated one before lavapipe); `Some(n)`: the n-th discrete GPU.
    Wgpu(Option<usize>),
}

/// The backend's own name (`flex`, `ndarray`, `cuda:N`), which `cpu` resolves to.
impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flex => f.write_str("flex"),
            Self::NdArray => f.write_str("ndarray"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
            Self::Wgpu(None) => f.write_str("wgpu"),
            Self::Wgpu(Some(i)) => write!(f, "wgpu:{i}"),
        }
    }
}

impl DeviceSpec {
    /// `--device` as given, with the backends it resolved to when they read differently:
    /// `cpu (flex)`, `cuda:0,cuda:1`. What run logs and bench reports print.
    pub fn describe(given: &str, specs: &[Self]) -> String {
        let resolved = specs
            .iter()
            .map(Self::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if resolved == given.replace(' ', "") {
            resolved
        } else {
            format!("{given} ({resolved})")
        }
    }

    /// `--device` for steps of `batch` images (per process): `cpu` alone is a flex replica
    /// per core this process may use, as many as split the batch evenly, since flex runs most
    /// ops other than matrix products on one thread (docs/performance.md, "CPU backends");
    /// anything else as given (`flex` pins one device). Returns the list as text, for
    /// `config.toml`, so that a resume repeats it exactly.
    pub fn resolve(given: &str, batch: usize) -> String {
        if given.trim() != "cpu" {
            return given.to_owned();
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        vec!["flex"; replicas_for(batch, cores)].join(",")
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            // `cpu` names the machine, not a backend: it gets the fastest CPU backend.
            "cpu" | "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::NdArray),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            "wgpu" => Ok(Self::Wgpu(None)),
            _ => {
                if let Some(n) = s.strip_prefix("wgpu:") {
                    let i = n.parse().map_err(|_| {
                        Error::Usage(format!(
                            "--device `{s}`: the wgpu index must be a number (the n-th discrete GPU)"
                        ))
                    })?;
                    return Ok(Self::Wgpu(Some(i)));
                }
                if let Some(n) = s.strip_prefix("cuda:") {
                    let i = n.parse().map_err(|_| {
                        Error::Usage(format!("--device `{s}`: the CUDA index must be a number"))
                    })?;
                    return Ok(Self::Cuda(i));
                }
                Err(Error::Usage(format!(
                    "--device `{s}` is not one of cpu, flex, ndarray, cuda, cuda:N, wgpu, wgpu:N"
                )))
            }
        }
    }

    /// `--device` for training: one device, or a comma-separated list for data parallelism
    /// (`cuda:0,cuda:1`). A CPU backend may repeat (`cpu,cpu` exercises the data-parallel
    /// path on one machine, as the tests do); a GPU may not.
    pub fn parse_list(s: &str) -> Result<Vec<Self>> {
        let v: Vec<Self> = s
            .split(',')
            .map(|d| Self::parse(d.trim()))
            .collect::<Result<_>>()?;
        for (i, d) in v.iter().enumerate() {
            if !d.is_cpu() && v[..i].contains(d) {
                return Err(Error::Usage(format!("--device `{s}` names {d:?} twice")));
            }
        }
        Ok(v)
    }

    /// A CPU backend (flex, ndarray), whose tensors are host memory. wgpu on lavapipe runs on
    /// the CPU too, but as a GPU does: its own memory, its own kernels.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Self::Flex | Self::NdArray)
    }

    /// The inner (non-autodiff) device; fails clearly when CUDA can't be used.
    pub fn device(&self) -> Result<DispatchDevice> {
        match self {
            Self::Flex => Ok(DispatchDevice::Flex(Default::default())),
            Self::NdArray => Ok(DispatchDevice::NdArray(Default::default())),
            Self::Cuda(i) => cuda_device(*i),
            Self::Wgpu(i) => wgpu_device(*i),
        }
    }

    /// Refuse a precision this backend can't compute in: ndarray keeps every tensor in f32.
    pub fn check_precision(&self, precision: Precision) -> Result<()> {
        if precision == Precision::Bf16 && *self == Self::NdArray {
            return Err(Error::config(
                "train.precision",
                "bf16 needs --device cpu (flex) or cuda; the ndarray backend computes in f32 only",
            ));
        }
        if precision == Precision::Bf16 && matches!(self, Self::Wgpu(_)) {
            return Err(Error::config(
                "train.precision",
                "bf16 needs --device cpu (flex) or cuda; wgpu's shader language (WGSL) has no bf16",
            ));
        }
        Ok(())
    }

    /// The autodiff device used for training.
    pub fn train_device(&self) -> Result<DispatchDevice> {
        Ok(DispatchDevice::autodiff(self.device()?))
    }

    /// [`Self::train_device`] with an activation checkpointing strategy
    /// (`train.activation_checkpointing`).
    pub fn train_device_with(
        &self,
        checkpointing: burn::CheckpointingStrategy,
    ) -> Result<DispatchDevice> {
        Ok(DispatchDevice::autodiff_checkpointed(
            self.device()?,
            checkpointing,
        ))
    }
}

/// The most replicas, at most one per core, that split `batch` evenly.
fn replicas_for(batch: usize, cores: usize) -> usize {
    (1..=cores.min(batch).max(1))
        .rev()
        .find(|k| batch.is_multiple_of(*k))
        .unwrap_or(1)
}

/// Is the CUDA driver library loadable on this machine?
pub fn cuda_driver_available() -> bool {
    ["libcuda.so.1", "libcuda.so"].iter().any(|name| {
        // SAFETY: loading the NVIDIA driver library runs its initialisers, which is what
        // cudarc would do next anyway; we drop it straight away.
        unsafe { libloading::Library::new(name) }.is_ok()
    })
}

/// Memory held by burn's allocator on a GPU (cubecl's memory pools), in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes in live tensors.
    pub in_use: u64,
    /// Bytes the pools hold from the driver: what the process occupies on the card, less the
    /// CUDA context (nvidia-smi counts both). The pools keep what they once needed.
    pub reserved: u64,
}

impl DeviceMemory {
    /// The larger of each figure.
    pub fn max(self, other: Self) -> Self {
        Self {
            in_use: self.in_use.max(other.in_use),
            reserved: self.reserved.max(other.reserved),
        }
    }
}

/// burn's memory-pool figures for a GPU device (under autodiff or not), for the calling
/// thread's stream: burn-cuda 0.21 keeps one stream, with its own pools, per thread, so ask
/// from the thread that ran the work. `None` for the CPU backends, whose tensors are the
/// process's memory (`pixmim bench` reports its peak RSS). Asking waits until the device's
/// queue has been handed its earlier work (not until that work has run), so timed code
/// should not ask.
pub fn device_memory(device: &DispatchDevice) -> Option<DeviceMemory> {
    #[cfg(feature = "cuda")]
    if let Some(d) = as_cuda(device) {
        return pool_memory(&cuda_client(d));
    }
    #[cfg(feature = "wgpu")]
    if let Some(d) = as_wgpu(device) {
        return pool_memory(&wgpu_client(d));
    }
    let _ = device;
    None
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn pool_memory<R: burn::cubecl::Runtime>(
    client: &burn::cubecl::client::ComputeClient<R>,
) -> Option<DeviceMemory> {
    let usage = client.memory_usage().ok()?;
    Some(DeviceMemory {
        in_use: usage.bytes_in_use,
        reserved: usage.bytes_reserved,
    })
}

/// Hand the GPU pools' free pages back to the driver, so that the next measurement's
/// `reserved` is its own (burn 0.21's `Backend::memory_cleanup` does nothing under
/// `Dispatch`). The calling thread's stream only, as [`device_memory`]; the allocator may
/// keep some. A no-op on the CPU backends.
pub fn release_device_memory(device: &DispatchDevice) {
    #[cfg(feature = "cuda")]
    if let Some(d) = as_cuda(device) {
        cuda_client(d).memory_cleanup();
    }
    #[cfg(feature = "wgpu")]
    if let Some(d) = as_wgpu(device) {
        wgpu_client(d).memory_cleanup();
    }
    let _ = device;
}

#[cfg(feature = "wgpu")]
fn as_wgpu(device: &DispatchDevice) -> Option<&burn::backend::wgpu::WgpuDevice> {
    match device {
        DispatchDevice::Autodiff(inner) => as_wgpu(inner),
        DispatchDevice::Wgpu(d) => Some(d),
        _ => None,
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_client(
    device: &burn::backend::wgpu::WgpuDevice,
) -> burn::cubecl::client::ComputeClient<burn::cubecl::wgpu::WgpuRuntime> {
    use burn::cubecl::Runtime;
    burn::cubecl::wgpu::WgpuRuntime::client(device)
}

/// The CUDA ordinal of `device`, if it is a CUDA device (NCCL joins on it).
pub fn cuda_index(device: &DispatchDevice) -> Option<usize> {
    #[cfg(feature = "cuda")]
    if let Some(d) = as_cuda(device) {
        return Some(d.index);
    }
    let _ = device;
    None
}

#[cfg(feature = "cuda")]
fn as_cuda(device: &DispatchDevice) -> Option<&burn::backend::cuda::CudaDevice> {
    match device {
        DispatchDevice::Autodiff(inner) => as_cuda(inner),
        DispatchDevice::Cuda(d) => Some(d),
        _ => None,
    }
}

#[cfg(feature = "cuda")]
fn cuda_client(
    device: &burn::backend::cuda::CudaDevice,
) -> burn::cubecl::client::ComputeClient<burn::cubecl::cuda::CudaRuntime> {
    use burn::cubecl::Runtime;
    burn::cubecl::cuda::CudaRuntime::client(device)
}

/// Load the driver library (the one cudarc loads too), `cuInit`, and hand device `index`'s
/// handle to `f`; `None` without a driver or such a device. No context is made.
fn with_cuda_device<T>(
    index: usize,
    f: impl FnOnce(&libloading::Library, std::ffi::c_int) -> Option<T>,
) -> Option<T> {
    use std::ffi::{c_int, c_uint};
    type CuInit = unsafe extern "C" fn(c_uint) -> c_int;
    type CuDeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
    let ordinal = c_int::try_from(index).ok()?;
    // SAFETY: cuInit and cuDeviceGet have these C signatures in every CUDA driver API since
    // 2.0 (CUresult = int, CUdevice = int).
    unsafe {
        let lib = ["libcuda.so.1", "libcuda.so"]
            .iter()
            .find_map(|n| libloading::Library::new(n).ok())?;
        let init: libloading::Symbol<CuInit> = lib.get(b"cuInit\0").ok()?;
        let get: libloading::Symbol<CuDeviceGet> = lib.get(b"cuDeviceGet\0").ok()?;
        if init(0) != 0 {
            return None;
        }
        let mut dev: c_int = 0;
        if get(&mut dev, ordinal) != 0 {
            return None;
        }
        f(&lib, dev)
    }
}

/// The card's name as the driver gives it (`NVIDIA H100 80GB HBM3`), for the FLOP
/// utilisation's peak; `None` without a driver or such a device.
pub fn cuda_card_name(index: usize) -> Option<String> {
    use std::ffi::{c_char, c_int, CStr};
    type CuDeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
    with_cuda_device(index, |lib, dev| {
        // SAFETY: the driver API's signature since 2.0; the buffer outlives the call and the
        // driver NUL-terminates within the length given.
        unsafe {
            let name: libloading::Symbol<CuDeviceGetName> = lib.get(b"cuDeviceGetName\0").ok()?;
            let mut buf = [0 as c_char; 256];
            if name(buf.as_mut_ptr(), buf.len() as c_int, dev) != 0 {
                return None;
            }
            Some(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned())
        }
    })
}

/// The card's memory in bytes (`cuDeviceTotalMem_v2`), for the memory pre-flight; `None`
/// without a driver or such a device.
pub fn cuda_total_memory(index: usize) -> Option<u64> {
    use std::ffi::c_int;
    type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
    with_cuda_device(index, |lib, dev| {
        // SAFETY: the driver API's signature since 3.2 (size_t out-parameter).
        unsafe {
            let total: libloading::Symbol<CuDeviceTotalMem> =
                lib.get(b"cuDeviceTotalMem_v2\0").ok()?;
            let mut bytes = 0usize;
            if total(&mut bytes, dev) != 0 {
                return None;
            }
            Some(bytes as u64)
        }
    })
}

#[cfg(feature = "cuda")]
fn cuda_device(index: usize) -> Result<DispatchDevice> {
    if !cuda_driver_available() {
        return Err(Error::Device(
            "--device cuda: the NVIDIA driver library (libcuda.so.1) is not on this machine; \
             use --device cpu"
                .into(),
        ));
    }
    crate::gpu_runtime::configure(
        &cuda_card_name(index).unwrap_or_else(|| format!("cuda-{index}")),
    );
    Ok(DispatchDevice::Cuda(burn::backend::cuda::CudaDevice {
        index,
    }))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_index: usize) -> Result<DispatchDevice> {
    Err(Error::Device(
        "--device cuda: this binary was built without the `cuda` feature".into(),
    ))
}

#[cfg(feature = "wgpu")]
fn wgpu_device(index: Option<usize>) -> Result<DispatchDevice> {
    use burn::backend::wgpu::WgpuDevice;
    let adapters = wgpu_adapters();
    let discrete = adapters
        .iter()
        .filter(|a| a.device_type == wgpu::DeviceType::DiscreteGpu)
        .count();
    match index {
        _ if adapters.is_empty() => Err(Error::Device(
            "--device wgpu: no Vulkan or Metal adapter on this machine (a GPU driver, or Mesa's \
             lavapipe on the CPU: Debian's mesa-vulkan-drivers); use --device cpu"
                .into(),
        )),
        Some(i) if i >= discrete => Err(Error::Device(format!(
            "--device wgpu:{i}: this machine has {discrete} discrete GPU(s) wgpu can use \
             (adapters: {}); `wgpu` alone takes the first adapter",
            adapters
                .iter()
                .map(|a| format!("{} ({:?})", a.name, a.device_type))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        Some(i) => {
            let card = adapters
                .iter()
                .filter(|a| a.device_type == wgpu::DeviceType::DiscreteGpu)
                .nth(i);
            crate::gpu_runtime::configure(card.map_or("wgpu", |a| a.name.as_str()));
            Ok(DispatchDevice::Wgpu(WgpuDevice::DiscreteGpu(i)))
        }
        None => {
            // wgpu's default: a discrete GPU before an integrated one before a CPU driver.
            let rank = |t: wgpu::DeviceType| match t {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                _ => 3,
            };
            let card = adapters.iter().min_by_key(|a| rank(a.device_type));
            crate::gpu_runtime::configure(card.map_or("wgpu", |a| a.name.as_str()));
            Ok(DispatchDevice::Wgpu(WgpuDevice::DefaultDevice))
        }
    }
}

/// The adapters burn-wgpu can choose from, on the graphics API it uses (Metal on macOS,
/// Vulkan elsewhere), asked of wgpu directly: cubecl panics on a worker thread when there is
/// none.
#[cfg(feature = "wgpu")]
pub fn wgpu_adapters() -> Vec<wgpu::AdapterInfo> {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let api = if cfg!(target_os = "macos") {
        wgpu::Backends::METAL
    } else {
        wgpu::Backends::VULKAN
    };
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: api,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    // Native wgpu answers at once; a poll loop is all the executor it needs.
    let mut future = std::pin::pin!(instance.enumerate_adapters(api));
    let mut cx = Context::from_waker(Waker::noop());
    let adapters = loop {
        if let Poll::Ready(a) = future.as_mut().poll(&mut cx) {
            break a;
        }
        std::thread::yield_now();
    };
    adapters.iter().map(|a| a.get_info()).collect()
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(_index: Option<usize>) -> Result<DispatchDevice> {
    Err(Error::Device(
        "--device wgpu: this binary was built without the `wgpu` feature".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_a_replica_per_core_that_splits_the_batch() {
        assert_eq!(replicas_for(16, 2), 2);
        assert_eq!(replicas_for(16, 16), 16);
        assert_eq!(replicas_for(16, 12), 8);
        assert_eq!(replicas_for(9, 2), 1);
        assert_eq!(replicas_for(3, 8), 3);
        assert_eq!(replicas_for(0, 4), 1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu = DeviceSpec::resolve("cpu", 2 * cores);
        assert_eq!(cpu, vec!["flex"; cores].join(","));
        for pinned in ["flex", "ndarray", "cuda:1", "flex,flex"] {
            assert_eq!(DeviceSpec::resolve(pinned, 64), pinned);
        }
    }

    #[test]
    fn parses_devices_and_names_bad_ones() {
        assert_eq!(DeviceSpec::parse("cpu").unwrap(), DeviceSpec::Flex);
        assert_eq!(DeviceSpec::parse("flex").unwrap(), DeviceSpec::Flex);
        assert_eq!(DeviceSpec::parse("ndarray").unwrap(), DeviceSpec::NdArray);
        assert_eq!(DeviceSpec::parse("cuda:2").unwrap(), DeviceSpec::Cuda(2));
        let e = DeviceSpec::parse("tpu").unwrap_err();
        assert!(e.to_string().contains("tpu"));
        assert_eq!(e.exit_code(), 2);
        assert!(DeviceSpec::parse("cuda:x").is_err());
        assert_eq!(
            DeviceSpec::parse_list("cuda:0, cuda:1").unwrap(),
            vec![DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)]
        );
        assert_eq!(DeviceSpec::parse_list("cpu,cpu").unwrap().len(), 2);
        let both = DeviceSpec::parse_list("cpu,cpu").unwrap();
        assert_eq!(
            DeviceSpec::describe("cpu,cpu", &both),
            "cpu,cpu (flex,flex)"
        );
        let gpus = DeviceSpec::parse_list("cuda:0, cuda:1").unwrap();
        assert_eq!(
            DeviceSpec::describe("cuda:0, cuda:1", &gpus),
            "cuda:0,cuda:1"
        );
        assert_eq!(
            DeviceSpec::describe("cuda", &[DeviceSpec::Cuda(0)]),
            "cuda (cuda:0)"
        );
        assert!(DeviceSpec::parse_list("cuda:1,cuda:1").is_err());
        assert!(
            DeviceSpec::parse("cpu,cpu").is_err(),
            "one-device commands take one"
        );
    }

    #[test]
    fn cpu_backends_have_no_device_memory_pools() {
        for spec in [DeviceSpec::Flex, DeviceSpec::NdArray] {
            assert_eq!(device_memory(&spec.train_device().unwrap()), None);
        }
        let a = DeviceMemory {
            in_use: 5,
            reserved: 8,
        };
        let b = DeviceMemory {
            in_use: 7,
            reserved: 6,
        };
        assert_eq!(
            a.max(b),
            DeviceMemory {
                in_use: 7,
                reserved: 8
            }
        );
    }

    #[test]
    fn cuda_without_a_driver_is_an_error_not_a_panic() {
        if cuda_driver_available() {
            return; // a GPU machine: nothing to check here
        }
        let e = DeviceSpec::Cuda(0).device().unwrap_err();
        assert!(e.to_string().contains("--device cuda"), "{e}");
        assert_eq!(cuda_card_name(0), None);
    }
}
