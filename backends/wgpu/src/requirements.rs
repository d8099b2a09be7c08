//! What moetile needs from a device, measured from its kernels, and the one call an application
//! makes to ask for it when it creates its own device.
//!
//! **Features.** None is required: weights, the f16 KV cache and f16 intermediates are stored
//! two halves per `u32` and read with `unpack2x16float`, which every Vulkan, Metal and DX12
//! adapter runs (wgpu's `SHADER_F16_IN_F32` downlevel flag, checked with the other
//! [`REQUIRED_DOWNLEVEL`] flags). [`OPTIONAL_FEATURES`] are used when the device has them:
//! `SHADER_F16` + `SUBGROUP` + `EXPERIMENTAL_COOPERATIVE_MATRIX` (with
//! `wgpu::ExperimentalFeatures` enabled) unlock the cooperative-matrix matmul paths
//! ([`path_features`]; the adapter must also report a matching f16 -> f32 configuration), and
//! `TIMESTAMP_QUERY` unlocks the stage profiler and GPU-timed benchmarks (timestamps at pass
//! boundaries only: neither `TIMESTAMP_QUERY_INSIDE_PASSES` nor `..._INSIDE_ENCODERS`).
//!
//! **Limits.** [`limit_needs`] lists the limits the kernels of a matmul path need, computed
//! from the generated kernel table: workgroup memory as naga lays out each shader at build
//! time ([`workgroup_bytes`]), workgroup sizes, and storage and uniform buffers per bind group
//! from each key's binding table. The register-tile path is always needed
//! ([`required_limits`]); wgpu's own defaults are not enough (16 KiB of workgroup memory).
//! Beyond those, moetile works better with the adapter's largest storage binding and buffer
//! size: expert tensors are split to fit a binding, but the token embedding and output tables
//! are not, and the KV cache of a long context is one buffer per layer.
//!
//! [`DeviceRequest`] puts it together; [`crate::WgpuContext::new`] uses it too, and
//! [`crate::WgpuContext::from_device`] checks a device against the same numbers.
//!
//! ```
//! use moetile_wgpu::Path;
//! use moetile_wgpu::requirements::{self, DeviceRequest, Limit};
//!
//! # fn main() -> anyhow::Result<()> {
//! // What every device needs, whatever the adapter.
//! let needs = requirements::limit_needs(Path::Reg);
//! let storage = needs.iter().find(|n| n.limit == Limit::WorkgroupStorage).unwrap();
//! assert!(storage.needed > 16 * 1024, "more than wgpu's default limit");
//! assert!(requirements::REQUIRED_FEATURES.is_empty());
//!
//! // The application's device, asking for moetile's needs and its own in one request.
//! let instance = moetile_wgpu::adapter::instance(&Default::default());
//! # if moetile_wgpu::adapter::list_adapters(&instance).is_empty() { return Ok(()); }
//! let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
//! let request = DeviceRequest::new(&adapter)?.with(wgpu::Features::empty(), &wgpu::Limits::default());
//! let (device, queue) = pollster::block_on(adapter.request_device(&request.descriptor("app")))?;
//! let ctx = moetile_wgpu::WgpuContext::from_device(&adapter, device, queue)?;
//! assert!(ctx.profile().max_workgroup_storage as u64 >= storage.needed);
//! # Ok(()) }
//! ```

use moetile_codegen::{BindingKind, KernelKey, Path, params};

use crate::error::{Result, WgpuError};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/workgroup_bytes.rs"));
}

/// Features moetile cannot run without: none (see the module docs).
pub const REQUIRED_FEATURES: wgpu::Features = wgpu::Features::empty();

/// Features moetile uses when the device has them: the cooperative-matrix paths
/// ([`path_features`]), GPU timestamps (the stage profiler, kernel benchmarks) and pipeline
/// caches (compiled pipelines kept between runs).
pub const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::PIPELINE_CACHE);

/// Downlevel capabilities every kernel relies on: compute shaders, indirect dispatch (the
/// grouped matmuls are dispatched from the expert map the GPU builds) and `unpack2x16float` /
/// `pack2x16float` on `u32` words (f16 weights, KV cache and intermediates).
pub const REQUIRED_DOWNLEVEL: wgpu::DownlevelFlags = wgpu::DownlevelFlags::COMPUTE_SHADERS
    .union(wgpu::DownlevelFlags::INDIRECT_EXECUTION)
    .union(wgpu::DownlevelFlags::SHADER_F16_IN_F32);

/// The features the kernels of matmul `path` need: none for [`Path::Reg`]; `SHADER_F16`,
/// `SUBGROUP` and `EXPERIMENTAL_COOPERATIVE_MATRIX` for the cooperative paths.
pub fn path_features(path: Path) -> wgpu::Features {
    match path {
        Path::Reg => wgpu::Features::empty(),
        Path::Coop16 | Path::Coop8 => {
            wgpu::Features::SHADER_F16
                | wgpu::Features::SUBGROUP
                | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
        }
    }
}

/// The workgroup memory of `key`'s shader in bytes, as naga laid it out when the build
/// generated it (`None` for a key outside [`KernelKey::all`]).
pub fn workgroup_bytes(key: &KernelKey) -> Option<u32> {
    let name = key.to_string();
    generated::WORKGROUP_BYTES
        .binary_search_by(|(n, _)| (*n).cmp(name.as_str()))
        .ok()
        .map(|i| generated::WORKGROUP_BYTES[i].1)
}

/// A `wgpu::Limits` field moetile's kernels depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// `max_compute_workgroup_storage_size`.
    WorkgroupStorage,
    /// `max_compute_invocations_per_workgroup`.
    InvocationsPerWorkgroup,
    /// `max_compute_workgroup_size_x`.
    WorkgroupSizeX,
    /// `max_storage_buffers_per_shader_stage`.
    StorageBuffersPerStage,
    /// `max_uniform_buffers_per_shader_stage`.
    UniformBuffersPerStage,
    /// `max_uniform_buffer_binding_size`.
    UniformBindingSize,
    /// `max_bindings_per_bind_group`.
    BindingsPerGroup,
    /// `max_bind_groups`.
    BindGroups,
}

impl Limit {
    /// Every limit moetile depends on.
    pub const ALL: [Limit; 8] = [
        Limit::WorkgroupStorage,
        Limit::InvocationsPerWorkgroup,
        Limit::WorkgroupSizeX,
        Limit::StorageBuffersPerStage,
        Limit::UniformBuffersPerStage,
        Limit::UniformBindingSize,
        Limit::BindingsPerGroup,
        Limit::BindGroups,
    ];

    /// The field's name in `wgpu::Limits`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::WorkgroupStorage => "max_compute_workgroup_storage_size",
            Limit::InvocationsPerWorkgroup => "max_compute_invocations_per_workgroup",
            Limit::WorkgroupSizeX => "max_compute_workgroup_size_x",
            Limit::StorageBuffersPerStage => "max_storage_buffers_per_shader_stage",
            Limit::UniformBuffersPerStage => "max_uniform_buffers_per_shader_stage",
            Limit::UniformBindingSize => "max_uniform_buffer_binding_size",
            Limit::BindingsPerGroup => "max_bindings_per_bind_group",
            Limit::BindGroups => "max_bind_groups",
        }
    }

    /// Its value in `limits`.
    pub fn of(self, limits: &wgpu::Limits) -> u64 {
        match self {
            Limit::WorkgroupStorage => limits.max_compute_workgroup_storage_size.into(),
            Limit::InvocationsPerWorkgroup => limits.max_compute_invocations_per_workgroup.into(),
            Limit::WorkgroupSizeX => limits.max_compute_workgroup_size_x.into(),
            Limit::StorageBuffersPerStage => limits.max_storage_buffers_per_shader_stage.into(),
            Limit::UniformBuffersPerStage => limits.max_uniform_buffers_per_shader_stage.into(),
            Limit::UniformBindingSize => limits.max_uniform_buffer_binding_size,
            Limit::BindingsPerGroup => limits.max_bindings_per_bind_group.into(),
            Limit::BindGroups => limits.max_bind_groups.into(),
        }
    }

    /// Raises the field in `limits` to at least `value`.
    fn raise(self, limits: &mut wgpu::Limits, value: u64) {
        let small = |v: &mut u32| *v = (*v).max(u32::try_from(value).unwrap_or(u32::MAX));
        match self {
            Limit::WorkgroupStorage => small(&mut limits.max_compute_workgroup_storage_size),
            Limit::InvocationsPerWorkgroup => {
                small(&mut limits.max_compute_invocations_per_workgroup)
            }
            Limit::WorkgroupSizeX => small(&mut limits.max_compute_workgroup_size_x),
            Limit::StorageBuffersPerStage => {
                small(&mut limits.max_storage_buffers_per_shader_stage)
            }
            Limit::UniformBuffersPerStage => {
                small(&mut limits.max_uniform_buffers_per_shader_stage)
            }
            Limit::UniformBindingSize => {
                limits.max_uniform_buffer_binding_size =
                    limits.max_uniform_buffer_binding_size.max(value)
            }
            Limit::BindingsPerGroup => small(&mut limits.max_bindings_per_bind_group),
            Limit::BindGroups => small(&mut limits.max_bind_groups),
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The least value of one limit the kernels need, with the kernel that needs the most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitNeed {
    /// The limit.
    pub limit: Limit,
    /// Its least value.
    pub needed: u64,
    /// What needs it: the name of the kernel with the largest need (or the params struct).
    pub needed_by: String,
}

/// Keys whose kernels run with matmul `path`: every kernel but the grouped matmuls of other
/// paths.
fn keys_on(path: Path) -> impl Iterator<Item = KernelKey> {
    KernelKey::all()
        .into_iter()
        .filter(move |k| k.path() == Path::Reg || k.path() == path)
}

/// What `key`'s kernel needs of `limit`; `None` for the limits not set per kernel.
fn kernel_need(limit: Limit, key: &KernelKey) -> Option<u64> {
    let bindings = key.bindings();
    let count = |uniform: bool| {
        bindings
            .iter()
            .filter(|b| (b.kind == BindingKind::Uniform) == uniform)
            .count() as u64
    };
    Some(match limit {
        Limit::WorkgroupStorage => workgroup_bytes(key).unwrap_or(0).into(),
        Limit::InvocationsPerWorkgroup | Limit::WorkgroupSizeX => key.workgroup_size().into(),
        Limit::StorageBuffersPerStage => count(false),
        Limit::UniformBuffersPerStage => count(true),
        Limit::BindingsPerGroup => bindings
            .iter()
            .map(|b| b.index + 1)
            .max()
            .unwrap_or(0)
            .into(),
        Limit::UniformBindingSize | Limit::BindGroups => return None,
    })
}

/// The limits the kernels of matmul `path` need, from the generated kernel table (see the
/// module docs). [`Path::Reg`]'s are required of every device.
pub fn limit_needs(path: Path) -> Vec<LimitNeed> {
    let mut needs: Vec<LimitNeed> = Limit::ALL
        .into_iter()
        .filter_map(|limit| {
            let (needed, key) = keys_on(path)
                .filter_map(|k| Some((kernel_need(limit, &k)?, k)))
                .max_by_key(|(v, _)| *v)?;
            Some(LimitNeed {
                limit,
                needed,
                needed_by: key.to_string(),
            })
        })
        .collect();
    let largest_params = params::all()
        .into_iter()
        .max_by_key(|p| p.size)
        .expect("there are params structs");
    needs.push(LimitNeed {
        limit: Limit::UniformBindingSize,
        needed: largest_params.size as u64,
        needed_by: largest_params.name.to_string(),
    });
    needs.push(LimitNeed {
        limit: Limit::BindGroups,
        needed: 1,
        needed_by: "every kernel (group 0)".to_string(),
    });
    needs
}

/// The first need of `path` that `limits` falls short of, with the value `limits` has.
pub fn unmet_limit(limits: &wgpu::Limits, path: Path) -> Option<(LimitNeed, u64)> {
    limit_needs(path)
        .into_iter()
        .map(|n| {
            let actual = n.limit.of(limits);
            (n, actual)
        })
        .find(|(n, actual)| *actual < n.needed)
}

/// The least limits a device must be created with to run moetile: wgpu's downlevel defaults
/// raised to [`limit_needs`] of the register-tile path.
pub fn required_limits() -> wgpu::Limits {
    raised(wgpu::Limits::downlevel_defaults(), Path::Reg)
}

/// `limits` raised to the needs of `path`.
fn raised(mut limits: wgpu::Limits, path: Path) -> wgpu::Limits {
    for n in limit_needs(path) {
        n.limit.raise(&mut limits, n.needed);
    }
    limits
}

/// Fails with [`WgpuError::MissingDownlevel`] unless `adapter` has [`REQUIRED_DOWNLEVEL`].
pub fn check_downlevel(adapter: &wgpu::Adapter) -> Result<()> {
    let have = adapter.get_downlevel_capabilities().flags;
    let missing = REQUIRED_DOWNLEVEL - have;
    if missing.is_empty() {
        return Ok(());
    }
    Err(WgpuError::MissingDownlevel {
        adapter: describe(adapter),
        flags: missing
            .iter_names()
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
            .join(" | "),
    })
}

/// The features moetile asks of `adapter`: [`REQUIRED_FEATURES`] and whatever of
/// [`OPTIONAL_FEATURES`] it has.
pub fn features_for(adapter: &wgpu::Adapter) -> wgpu::Features {
    REQUIRED_FEATURES | (adapter.features() & OPTIONAL_FEATURES)
}

/// `A | B | C`: the names of `features`.
pub fn feature_names(features: wgpu::Features) -> String {
    features
        .iter_names()
        .map(|(name, _)| name)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// What to create a device with so that moetile runs on it at its best: a
/// `wgpu::DeviceDescriptor` in waiting. See the module docs for an example.
#[derive(Debug, Clone)]
pub struct DeviceRequest {
    /// [`REQUIRED_FEATURES`] and whatever of [`OPTIONAL_FEATURES`] the adapter has.
    pub features: wgpu::Features,
    /// wgpu's defaults (lowered where the adapter offers less), raised to what the kernels of
    /// every path the adapter can run need, with the adapter's largest storage binding, buffer,
    /// workgroup memory and grid.
    pub limits: wgpu::Limits,
    /// Enabled when the features include `EXPERIMENTAL_COOPERATIVE_MATRIX`, which wgpu only
    /// grants with experimental features on.
    pub experimental: wgpu::ExperimentalFeatures,
}

impl DeviceRequest {
    /// The request for `adapter`. Fails, naming the capability or limit, when the adapter
    /// cannot run moetile at all (no compute, no `unpack2x16float`, too little workgroup
    /// memory...).
    pub fn new(adapter: &wgpu::Adapter) -> Result<DeviceRequest> {
        check_downlevel(adapter)?;
        let offered = adapter.limits();
        if let Some((need, actual)) = unmet_limit(&offered, Path::Reg) {
            return Err(WgpuError::AdapterLimit {
                adapter: describe(adapter),
                limit: need.limit.name(),
                needed: need.needed,
                actual,
                needed_by: need.needed_by,
            });
        }
        let features = features_for(adapter);
        let mut limits = raised(
            wgpu::Limits::default().or_worse_values_from(&offered),
            Path::Reg,
        );
        // Cooperative kernels may need more than the register ones; ask for it where the
        // adapter has it (whether the path then runs is `Profile::supports`' call).
        for path in [Path::Coop16, Path::Coop8] {
            if features.contains(path_features(path)) && unmet_limit(&offered, path).is_none() {
                limits = raised(limits, path);
            }
        }
        limits.max_storage_buffer_binding_size = offered.max_storage_buffer_binding_size;
        limits.max_buffer_size = offered.max_buffer_size;
        limits.max_compute_workgroup_storage_size = offered.max_compute_workgroup_storage_size;
        limits.max_compute_workgroups_per_dimension = offered.max_compute_workgroups_per_dimension;
        let experimental = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            // SAFETY: cooperative matrices are only used by kernels that naga validated with
            // the capability, on adapters reporting a matching configuration; we accept
            // wgpu's caveat that experimental features may still have implementation bugs.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        Ok(DeviceRequest {
            features,
            limits,
            experimental,
        })
    }

    /// Adds the application's own needs: the union of the features, the better of each limit.
    /// The adapter must grant the result (it does whenever it grants the application's own).
    pub fn with(mut self, features: wgpu::Features, limits: &wgpu::Limits) -> DeviceRequest {
        self.features |= features;
        self.limits = self.limits.or_better_values_from(limits);
        self
    }

    /// The descriptor to pass to `wgpu::Adapter::request_device`.
    pub fn descriptor<'a>(&self, label: &'a str) -> wgpu::DeviceDescriptor<'a> {
        wgpu::DeviceDescriptor {
            label: Some(label),
            required_features: self.features,
            required_limits: self.limits.clone(),
            experimental_features: self.experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }
    }
}

/// `name (backend, type)` of an adapter, for error messages.
fn describe(adapter: &wgpu::Adapter) -> String {
    let info = adapter.get_info();
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workgroup_table_is_exactly_the_generated_key_set() {
        let mut names: Vec<String> = KernelKey::all().iter().map(|k| k.to_string()).collect();
        names.sort();
        let table: Vec<&str> = generated::WORKGROUP_BYTES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, table);
    }

    #[test]
    fn needs_are_the_generated_kernels_measured_by_naga() {
        // The build recorded each key's workgroup memory from naga; regenerate the hungriest
        // key of each path and measure it again, and check the other needs by hand.
        for path in Path::ALL {
            let needs = limit_needs(path);
            let need = |l: Limit| needs.iter().find(|n| n.limit == l).unwrap().clone();
            let storage = need(Limit::WorkgroupStorage);
            let key = keys_on(path)
                .find(|k| k.to_string() == storage.needed_by)
                .unwrap();
            let (_, v) = moetile_codegen::generate_validated(&key).unwrap();
            assert_eq!(u64::from(v.workgroup_bytes), storage.needed, "{key}");
            for k in keys_on(path) {
                assert!(u64::from(workgroup_bytes(&k).unwrap()) <= storage.needed);
                assert!(u64::from(k.workgroup_size()) <= need(Limit::WorkgroupSizeX).needed);
                assert!(k.bindings().len() as u64 <= need(Limit::BindingsPerGroup).needed);
            }
            assert_eq!(need(Limit::UniformBuffersPerStage).needed, 1);
            assert_eq!(need(Limit::BindGroups).needed, 1);
        }
        // The register path is what every device needs; wgpu's defaults are not enough.
        let required = required_limits();
        assert!(unmet_limit(&required, Path::Reg).is_none());
        let (short, _) = unmet_limit(&wgpu::Limits::default(), Path::Reg).unwrap();
        assert_eq!(short.limit, Limit::WorkgroupStorage);
    }

    #[test]
    fn an_application_request_merges_with_moetiles() {
        let app = wgpu::Limits {
            max_texture_dimension_2d: 16384,
            ..wgpu::Limits::default()
        };
        let needs = DeviceRequest {
            features: wgpu::Features::empty(),
            limits: required_limits(),
            experimental: wgpu::ExperimentalFeatures::disabled(),
        };
        let merged = needs.with(wgpu::Features::SHADER_F16, &app);
        assert_eq!(merged.limits.max_texture_dimension_2d, 16384);
        assert!(unmet_limit(&merged.limits, Path::Reg).is_none());
        assert!(merged.features.contains(wgpu::Features::SHADER_F16));
    }
}
