//! The backend's error type: every message names the culprit and, where there is one, the fix.

use moetile::quant::GgmlType;

/// Everything the wgpu backend can fail at.
#[derive(Debug, thiserror::Error)]
pub enum WgpuError {
    /// No adapter at all.
    #[error(
        "no GPU adapter found (backends {backends}); install a Vulkan, Metal or DX12 driver \
         (on Linux without a GPU: `apt-get install mesa-vulkan-drivers` for lavapipe) or set \
         WGPU_BACKEND"
    )]
    NoAdapter {
        /// The backends searched.
        backends: String,
    },
    /// The requested adapter does not exist.
    #[error("no adapter matches {choice}; available: {available}")]
    AdapterNotFound {
        /// What was asked for.
        choice: String,
        /// The adapters found, with their indices.
        available: String,
    },
    /// `request_device` failed.
    #[error("requesting a device from {adapter}: {source}")]
    RequestDevice {
        /// The adapter.
        adapter: String,
        /// wgpu's error.
        source: wgpu::RequestDeviceError,
    },
    /// Something needs a feature the device lacks.
    #[error("{what} cannot run on {adapter}: {feature}; {fix}")]
    MissingFeature {
        /// The adapter.
        adapter: String,
        /// What needed it (a kernel name, an option).
        what: String,
        /// The missing feature, and what needs it.
        feature: String,
        /// What to do instead.
        fix: &'static str,
    },
    /// A device an application created lacks a limit moetile's kernels need.
    #[error(
        "the device on {adapter} was created with {limit} = {actual} but moetile's kernels \
         need at least {needed} (for {needed_by}); create it with \
         moetile_wgpu::requirements::DeviceRequest::new(&adapter), or raise {limit} in the \
         wgpu::Limits you request"
    )]
    DeviceLimit {
        /// The adapter.
        adapter: String,
        /// The `wgpu::Limits` field.
        limit: &'static str,
        /// The least value the kernels need.
        needed: u64,
        /// The device's value.
        actual: u64,
        /// The kernel (or params struct) that needs the most.
        needed_by: String,
    },
    /// An adapter that cannot offer a limit moetile's kernels need.
    #[error(
        "{adapter} allows at most {limit} = {actual} but moetile's kernels need at least \
         {needed} (for {needed_by}); use another adapter"
    )]
    AdapterLimit {
        /// The adapter.
        adapter: String,
        /// The `wgpu::Limits` field.
        limit: &'static str,
        /// The least value the kernels need.
        needed: u64,
        /// The adapter's largest value.
        actual: u64,
        /// The kernel (or params struct) that needs the most.
        needed_by: String,
    },
    /// An adapter without a downlevel capability every kernel relies on.
    #[error(
        "{adapter} lacks the downlevel capabilities {flags} that moetile's kernels need \
         (compute shaders, indirect dispatch, unpack2x16float); use a Vulkan, Metal or DX12 \
         adapter"
    )]
    MissingDownlevel {
        /// The adapter.
        adapter: String,
        /// The missing `wgpu::DownlevelFlags`.
        flags: String,
    },
    /// A kernel key outside the generated table.
    #[error("kernel {kernel} was not generated; it is not in KernelKey::all()")]
    UnknownKernel {
        /// The key's name.
        kernel: String,
    },
    /// A bind group that does not match the kernel's binding table.
    #[error("kernel {kernel}: bindings {given:?} do not match the shader's {expected:?}")]
    Bindings {
        /// The key's name.
        kernel: String,
        /// Names given.
        given: Vec<String>,
        /// Names the shader declares.
        expected: Vec<String>,
    },
    /// A matmul dispatched with an expert map of another tile width.
    #[error(
        "kernel {kernel} computes {kernel_tile}-token tiles but the expert map lists \
         {map_tile}-token tiles: a kernel can only be dispatched with the grid of its own key; \
         build the map with the kernel's tile width"
    )]
    TileMismatch {
        /// The kernel.
        kernel: String,
        /// Its tile width.
        kernel_tile: usize,
        /// The map's.
        map_tile: usize,
    },
    /// A matmul whose row-tile count the map prepared no dispatch arguments for.
    #[error(
        "kernel {kernel} needs {row_groups} row tiles but the expert map prepared dispatch \
         arguments for {prepared:?}; pass every output row count to ExpertMap::build"
    )]
    MissingDispatchSlot {
        /// The kernel.
        kernel: String,
        /// Row tiles it needs.
        row_groups: u32,
        /// Row tiles the map holds arguments for.
        prepared: Vec<u32>,
    },
    /// Operands whose shapes do not fit an op.
    #[error("{op}: {detail}")]
    Shape {
        /// The op or tensor.
        op: String,
        /// What disagrees.
        detail: String,
    },
    /// A weight type without GPU kernels.
    #[error(
        "{tensor}: weight type {ty} has no GPU kernel (supported: {}); convert the model or \
         add a dequant fragment",
        supported_weights()
    )]
    UnsupportedWeight {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
    },
    /// One expert, or a dense tensor cut into at most 64 equal slices of rows, does not fit a
    /// storage binding.
    #[error(
        "{tensor}: {bytes} bytes must fit one storage binding (one expert, or a 2-D tensor in \
         at most 64 equal slices of rows) but {limit} is the most it holds; use a device with \
         a larger max_storage_buffer_binding_size"
    )]
    ExpertTooLarge {
        /// The tensor.
        tensor: String,
        /// Bytes of one expert in the GPU layout.
        bytes: u64,
        /// The binding limit.
        limit: u64,
    },
    /// A buffer larger than the device can create or bind.
    #[error(
        "{what} needs {bytes} bytes but {adapter} allows at most {limit} ({limit_name}); use a \
         smaller context, chunk or model, or a device with larger limits"
    )]
    TooLarge {
        /// What the buffer holds.
        what: String,
        /// Bytes asked for.
        bytes: u64,
        /// The device limit.
        limit: u64,
        /// Which limit.
        limit_name: &'static str,
        /// The adapter.
        adapter: String,
    },
    /// The device was lost (driver reset, GPU removed, out of memory on some drivers).
    #[error("the GPU device was lost ({reason}); create a new context to continue")]
    DeviceLost {
        /// What wgpu reported.
        reason: String,
    },
    /// An attention head width without generated kernels.
    #[error(
        "attention: head width {head_dim} has no GPU kernel (generated: {supported:?}); add it \
         to moetile_codegen::HEAD_DIMS"
    )]
    UnsupportedHeadDim {
        /// The model's head width.
        head_dim: usize,
        /// The widths generated.
        supported: &'static [u32],
    },
    /// A grid larger than the device allows.
    #[error(
        "{op}: {groups} workgroups along one dimension exceed the device's {limit}; use a \
         smaller batch or a wider tile"
    )]
    GridTooLarge {
        /// The op.
        op: String,
        /// Workgroups needed.
        groups: u64,
        /// The device limit.
        limit: u32,
    },
    /// A wgpu validation or out-of-memory error caught by an error scope.
    #[error("GPU error during {op}: {message}")]
    Gpu {
        /// The op.
        op: String,
        /// wgpu's message.
        message: String,
    },
    /// A benchmarked kernel disagreed with the reference on its sample of outputs.
    #[error("{kernel}: output check before timing failed: {detail}")]
    Verification {
        /// The kernel.
        kernel: String,
        /// The worst element.
        detail: String,
    },
    /// An environment variable moetile reads holds a value it does not accept.
    #[error("{var}={value:?} is not one of {allowed}; unset it for the default")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// The accepted values.
        allowed: &'static str,
    },
    /// A submission did not finish within the context's `wait_timeout`.
    #[error(
        "waiting for the GPU to finish {what}: no result after {after:?}; the device may be \
         hung or far slower than expected (raise ContextOptions::wait_timeout if so)"
    )]
    Timeout {
        /// What was waited for.
        what: String,
        /// The timeout.
        after: std::time::Duration,
    },
    /// Waiting for the device or mapping a buffer failed.
    #[error("reading back {what}: {message}")]
    Readback {
        /// The buffer.
        what: String,
        /// The failure.
        message: String,
    },
    /// The tuning record could not be saved.
    #[error(
        "saving the tuning record: {what}: {source}; check the cache folder's permissions \
         (the tuned values are not kept)"
    )]
    TuningRecord {
        /// What was being done, and to which file or folder.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A [`WgpuError::Shape`] of `op`.
/// A [`WgpuError::Shape`] of `op`, formatted only here: ops name themselves by their kernel
/// key, whose name would cost host time on every dispatch if built up front.
pub(crate) fn shape(op: impl std::fmt::Display, detail: String) -> WgpuError {
    WgpuError::Shape {
        op: op.to_string(),
        detail,
    }
}

fn supported_weights() -> String {
    moetile_codegen::WeightType::ALL
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Result with [`WgpuError`].
pub type Result<T, E = WgpuError> = std::result::Result<T, E>;

impl From<WgpuError> for moetile::Error {
    fn from(e: WgpuError) -> Self {
        moetile::Error::Backend(Box::new(e))
    }
}
