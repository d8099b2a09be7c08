//! Adapter discovery and selection, and the capability profile the kernels are chosen from.
//!
//! What to search and open is a [`ContextOptions`]: built by hand, or read once from the
//! environment by [`ContextOptions::from_env`] (`WGPU_BACKEND`, e.g. `vulkan`, limits the
//! search to one API; without it all native backends are searched). The default choice prefers discrete over integrated over CPU
//! adapters and Vulkan/Metal/DX12 over OpenGL (a card can show up under both; never measure on
//! the GL one). A CPU adapter (lavapipe, WARP) is accepted with a loud warning on stderr.

use moetile_codegen::{COOP_MAX_SUBGROUP_SIZE, Path};

use crate::context::ContextOptions;
use crate::error::{Result, WgpuError};
use crate::requirements;
use crate::tune::UnusablePath;

/// Which adapter to use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AdapterChoice {
    /// The best-ranked adapter (see the module docs).
    #[default]
    Default,
    /// The adapter at this index of [`list_adapters`].
    Index(usize),
    /// The first adapter whose name contains this (case-insensitive).
    Name(String),
}

impl AdapterChoice {
    /// A number is an index, anything else a name substring, empty the default.
    pub fn parse(value: &str) -> AdapterChoice {
        let value = value.trim();
        if value.is_empty() {
            AdapterChoice::Default
        } else if let Ok(i) = value.parse() {
            AdapterChoice::Index(i)
        } else {
            AdapterChoice::Name(value.to_string())
        }
    }
}

impl std::fmt::Display for AdapterChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdapterChoice::Default => f.write_str("the default adapter"),
            AdapterChoice::Index(i) => write!(f, "adapter index {i}"),
            AdapterChoice::Name(n) => write!(f, "adapter name {n:?}"),
        }
    }
}

/// The wgpu instance over the backends `options` allow.
pub fn instance(options: &ContextOptions) -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: options.backends,
        flags: options.instance_flags,
        backend_options: options.backend_options.clone(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

/// Every adapter of `instance`'s backends, in wgpu's order (the indices
/// [`AdapterChoice::Index`] refers to).
pub fn list_adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

/// One line per adapter: `index: name (backend, type, driver)`.
pub fn describe(adapters: &[wgpu::Adapter]) -> String {
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{i}: {}", describe_info(&a.get_info())))
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_info(info: &wgpu::AdapterInfo) -> String {
    format!(
        "{} ({:?}, {:?}, {} {})",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    )
}

/// Lower is better.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (device, backend)
}

/// The adapter `options` name, on `instance` (made by [`instance`] from the same options).
pub fn select(instance: &wgpu::Instance, options: &ContextOptions) -> Result<wgpu::Adapter> {
    let choice = &options.adapter;
    let adapters = list_adapters(instance);
    if adapters.is_empty() {
        return Err(WgpuError::NoAdapter {
            backends: format!("{:?}", options.backends),
        });
    }
    let not_found = |adapters: &[wgpu::Adapter]| WgpuError::AdapterNotFound {
        choice: choice.to_string(),
        available: describe(adapters),
    };
    let index = match choice {
        AdapterChoice::Default => (0..adapters.len())
            .min_by_key(|&i| rank(&adapters[i].get_info()))
            .ok_or_else(|| not_found(&adapters))?,
        AdapterChoice::Index(i) if *i < adapters.len() => *i,
        AdapterChoice::Index(_) => return Err(not_found(&adapters)),
        AdapterChoice::Name(name) => {
            let name = name.to_lowercase();
            adapters
                .iter()
                .position(|a| a.get_info().name.to_lowercase().contains(&name))
                .ok_or_else(|| not_found(&adapters))?
        }
    };
    Ok(adapters
        .into_iter()
        .nth(index)
        .expect("index checked above"))
}

/// What the device offers that kernel choice depends on.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Adapter name.
    pub name: String,
    /// Backend (Vulkan, Metal...).
    pub backend: wgpu::Backend,
    /// Discrete, integrated, CPU...
    pub device_type: wgpu::DeviceType,
    /// Driver name and version.
    pub driver: String,
    /// Features enabled on the device.
    pub features: wgpu::Features,
    /// `SHADER_F16`.
    pub shader_f16: bool,
    /// `SUBGROUP`.
    pub subgroups: bool,
    /// Smallest and largest subgroup size.
    pub subgroup_sizes: (u32, u32),
    /// Cooperative-matrix configurations the adapter reports.
    pub coop: Vec<wgpu::CooperativeMatrixProperties>,
    /// `TIMESTAMP_QUERY`.
    pub timestamps: bool,
    /// Largest storage binding, bytes.
    pub max_storage_binding: u64,
    /// Largest buffer, bytes.
    pub max_buffer: u64,
    /// Workgroup memory, bytes.
    pub max_workgroup_storage: u32,
    /// Workgroups per dispatch dimension.
    pub max_workgroups_per_dim: u32,
    /// Every limit the device was created with.
    pub limits: wgpu::Limits,
    /// [`Profile::supports`] of every path, worked out once: the check walks every kernel's
    /// limits (~200 us), and matmuls ask per dispatch.
    path_support: Vec<(Path, std::result::Result<(), String>)>,
}

impl Profile {
    /// The profile of `adapter` with the features and limits a device was created with.
    pub fn new(adapter: &wgpu::Adapter, features: wgpu::Features, limits: &wgpu::Limits) -> Self {
        let info = adapter.get_info();
        let coop = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            adapter.cooperative_matrix_properties()
        } else {
            Vec::new()
        };
        let mut profile = Profile {
            driver: format!("{} {}", info.driver, info.driver_info),
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            features,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
            coop,
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer: limits.max_buffer_size,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            limits: limits.clone(),
            path_support: Vec::new(),
        };
        profile.path_support = Path::ALL
            .into_iter()
            .map(|p| (p, profile.check_path(p)))
            .collect();
        profile
    }

    /// The profile of a device created on `adapter` with [`requirements::DeviceRequest`]: the
    /// features moetile asks for, the adapter's limits.
    pub fn of_adapter(adapter: &wgpu::Adapter) -> Self {
        Profile::new(
            adapter,
            requirements::features_for(adapter),
            &adapter.limits(),
        )
    }

    /// A CPU adapter (lavapipe, WARP): correct but slow.
    pub fn is_cpu(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether the device runs matmul `path`; `Err` names the feature or limit it lacks.
    pub fn supports(&self, path: Path) -> std::result::Result<(), String> {
        self.path_support
            .iter()
            .find(|(p, _)| *p == path)
            .map_or_else(|| self.check_path(path), |(_, r)| r.clone())
    }

    /// What [`Profile::supports`] answers, worked out from the features and limits.
    fn check_path(&self, path: Path) -> std::result::Result<(), String> {
        let Some(frag) = path.fragment() else {
            return Ok(());
        };
        let missing = requirements::path_features(path) - self.features;
        if !missing.is_empty() {
            return Err(format!(
                "the {} path needs the features {} (cooperative matrices also need \
                 wgpu::ExperimentalFeatures enabled), which the device was not created with",
                path.name(),
                requirements::feature_names(missing)
            ));
        }
        if self.subgroup_sizes.1 > COOP_MAX_SUBGROUP_SIZE {
            return Err(format!(
                "cooperative paths need subgroups of at most {COOP_MAX_SUBGROUP_SIZE} lanes, \
                 the adapter's reach {}",
                self.subgroup_sizes.1
            ));
        }
        if let Some((need, actual)) = requirements::unmet_limit(&self.limits, path) {
            return Err(format!(
                "the {} kernels need {} >= {} (for {}), the device has {actual}",
                path.name(),
                need.limit,
                need.needed,
                need.needed_by
            ));
        }
        let fits = self.coop.iter().any(|c| {
            c.m_size == frag
                && c.n_size == frag
                && c.k_size == frag
                && c.ab_type == wgpu::CooperativeScalarType::F16
                && c.cr_type == wgpu::CooperativeScalarType::F32
        });
        if fits {
            Ok(())
        } else {
            Err(format!(
                "the adapter reports no {frag}x{frag} f16 -> f32 cooperative-matrix configuration"
            ))
        }
    }

    /// Stops running `unusable`'s path (its kernels failed `moetile tune`'s check on this
    /// adapter), so [`Profile::supports`], [`Profile::paths`] and [`Profile::best_path`] pass
    /// over it. The register path stays: it is the one every device runs, with no fallback.
    pub fn avoid(&mut self, unusable: &UnusablePath) {
        if unusable.path == Path::Reg {
            return;
        }
        let why = format!(
            "`moetile tune` found its kernel {} computing wrong results on this adapter and \
             driver ({}); it is recorded in the tuning record ({}), delete that to test again",
            unusable.kernel,
            unusable.reason,
            crate::tune::TUNING_FILE
        );
        for (path, support) in &mut self.path_support {
            if *path == unusable.path && support.is_ok() {
                *support = Err(why.clone());
            }
        }
    }

    /// Every matmul path the device runs, register tiles first.
    pub fn paths(&self) -> Vec<Path> {
        Path::ALL
            .into_iter()
            .filter(|p| self.supports(*p).is_ok())
            .collect()
    }

    /// The fastest path the device runs: 16x16 cooperative, else 8x8, else register tiles.
    pub fn best_path(&self) -> Path {
        [Path::Coop16, Path::Coop8]
            .into_iter()
            .find(|p| self.supports(*p).is_ok())
            .unwrap_or(Path::Reg)
    }

    /// One line: name, backend, type, driver.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, {})",
            self.name, self.backend, self.device_type, self.driver
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parses_index_name_default() {
        assert_eq!(AdapterChoice::parse(""), AdapterChoice::Default);
        assert_eq!(AdapterChoice::parse(" 2 "), AdapterChoice::Index(2));
        assert_eq!(
            AdapterChoice::parse("llvmpipe"),
            AdapterChoice::Name("llvmpipe".into())
        );
    }

    #[test]
    fn a_path_recorded_unusable_is_not_run() {
        let instance = instance(&ContextOptions::default());
        let Some(adapter) = list_adapters(&instance).into_iter().next() else {
            moetile_tests::skip_without_gpu(&"no adapter");
            return;
        };
        let mut profile = Profile::of_adapter(&adapter);
        // As an adapter running every path would (an NVIDIA or Apple GPU; CI has lavapipe).
        profile.path_support = Path::ALL.map(|p| (p, Ok(()))).to_vec();
        assert_eq!(profile.best_path(), Path::Coop16);
        let id = crate::tune::AdapterId::of(&profile);
        let unusable = |path, kernel: &str| UnusablePath {
            adapter: id.clone(),
            path,
            kernel: kernel.to_string(),
            reason: "pair 3 row 5: got NaN, want 0.25".to_string(),
        };
        let coop16 = unusable(Path::Coop16, "mm_id_q4k_f32_t64_coop16");
        profile.avoid(&coop16);
        assert_eq!(profile.best_path(), Path::Coop8);
        assert_eq!(profile.paths(), [Path::Reg, Path::Coop8]);
        let why = profile.supports(Path::Coop16).unwrap_err();
        assert!(
            why.contains("mm_id_q4k_f32_t64_coop16") && why.contains("moetile tune"),
            "{why}"
        );
        // The register path has no fallback: recorded, never avoided.
        let reg = unusable(Path::Reg, "mm_id_q4k_f32_t64_reg");
        profile.avoid(&reg);
        assert!(profile.supports(Path::Reg).is_ok());
    }

    #[test]
    fn ranking_prefers_discrete_native_over_cpu_and_gl() {
        let info = |t, b| wgpu::AdapterInfo::new(t, b);
        let gpu_vk = info(wgpu::DeviceType::DiscreteGpu, wgpu::Backend::Vulkan);
        let gpu_gl = info(wgpu::DeviceType::DiscreteGpu, wgpu::Backend::Gl);
        let cpu = info(wgpu::DeviceType::Cpu, wgpu::Backend::Vulkan);
        assert!(rank(&gpu_vk) < rank(&gpu_gl));
        assert!(rank(&gpu_gl) < rank(&cpu));
    }
}
