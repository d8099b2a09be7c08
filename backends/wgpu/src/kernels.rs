//! The generated kernel table and the pipeline cache over it.
//!
//! `build.rs` generated and validated every key of [`KernelKey::all`]; [`KERNELS`] holds their
//! WGSL by name. A [`Kernel`] is created per key, ahead of use for the keys a model will run
//! (`crate::pipelines`) and on first use for any other: its bind-group layout comes from the
//! key's binding table (the same table naga checked the WGSL against) and it has one pipeline
//! per entry point, labelled with the key's name, created through the context's pipeline cache
//! when it has one.
//!
//! ## Runtime checks
//! By default wgpu has naga wrap every loop in an iteration guard (so a shader cannot hang the
//! GPU), clamp every array index and guard every integer division. In the routed-MoE kernels
//! (map, grouped matmul, mat-vec), the attention kernels (prefill, decode, combine), the RMS
//! norm, the router and the hyper-connection steps these guards cost more than the work: the loop guard hides
//! the constant trip counts, and the index clamp makes the indices of the small per-thread
//! arrays (accumulators, prefetched words, cooperative fragments) non-constant, so the driver
//! keeps those arrays in local memory instead of registers. Measured on the H100 (Vulkan, see
//! `bench/NOTES-mm_id.md`): q4_K at T = 512, cooperative t32, 1.51 ms with every check, 0.93 ms
//! without the loop and division guards, 0.47 ms without any.
//!
//! The templates are written so that the guards are redundant: every loop counts to a
//! constant or to a bound that is uniform over the dispatch; every divisor is a constant or a
//! host-checked non-zero parameter; every workgroup and per-thread array index is in range by
//! construction (the templates' `const_assert`s tie array sizes to loop bounds); and every
//! buffer index is in range for the parameters the host validates and the expert map the map
//! kernel builds (tested against the CPU reference). [`ShaderChecks`] picks what those
//! kernels keep; every other kernel always gets wgpu's full checks.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex};

use moetile_codegen::{Binding, BindingKind, KernelKey};

use crate::error::{Result, WgpuError};
use crate::pipelines::PipelineCacheFile;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

pub use generated::KERNELS;

/// The generated WGSL of `key`.
pub fn source(key: &KernelKey) -> Option<&'static str> {
    let name = key.to_string();
    KERNELS
        .binary_search_by(|(n, _)| (*n).cmp(name.as_str()))
        .ok()
        .map(|i| KERNELS[i].1)
}

/// A key's pipelines and bind-group layout, and the bind groups made for it.
#[derive(Debug)]
pub struct Kernel {
    /// The key.
    pub key: KernelKey,
    name: String,
    /// The key's binding table, which [`Kernel::bind`] checks every call against.
    bindings: Vec<Binding>,
    layout: wgpu::BindGroupLayout,
    pipelines: Vec<wgpu::ComputePipeline>,
    /// Bind groups by what they bind. A decode step binds the same weights, KV cache, pooled
    /// scratch buffers and parameter chunks every step, and creating a bind group costs more
    /// host time than recording the dispatch that uses it.
    groups: Mutex<BindGroups>,
}

/// One entry of a bind group: binding index, buffer, offset and size (uniform bindings at
/// offset 0: their offset is a dynamic one).
type BindKey = (u32, wgpu::Buffer, u64, Option<wgpu::BufferSize>);

/// Cached bind groups by the hash of their entries ([`entries_hash`]). A lookup hashes and
/// compares the caller's borrowed entries: every dispatch looks one up, and cloning its
/// buffers into an owned key (and hashing that with SipHash) was most of its host time.
#[derive(Debug, Default)]
struct BindGroups {
    by_hash: HashMap<u64, Vec<(Vec<BindKey>, wgpu::BindGroup)>, FxBuild>,
    len: usize,
}

/// Bind groups a kernel keeps before it starts over. A cached group holds its buffers, so the
/// bound also bounds the memory kept alive only by the cache; besides, a backend forgets every
/// cached group when it creates a KV cache (a new session, often of a new model), and
/// `Buffers::release_idle_buffers` does too, so a dropped session's KV cache or a dropped
/// model's weights are freed then.
const MAX_CACHED_GROUPS: usize = 1024;

/// A bind group and the dynamic offsets of its uniform bindings, for `set_bind_group`.
#[derive(Debug)]
pub struct Bound {
    /// The group.
    pub group: wgpu::BindGroup,
    /// One offset per uniform binding, in binding order.
    pub offsets: Vec<u32>,
}

/// A bind-group entry as [`Kernel::bind`] resolves it from a `(name, resource)` pair.
type Entry<'a> = (u32, &'a wgpu::Buffer, u64, Option<wgpu::BufferSize>);

/// The most bindings any kernel has (8: the fused mat-vec with its norm weights, or a
/// grouped matmul, and the IQ2_XXS grid table), with room to spare: [`Kernel::bind`]
/// resolves a call's bindings on the stack.
const MAX_BINDINGS: usize = 16;

/// The hash a bind group is cached under: of its entries in the order given.
fn entries_hash<'a>(entries: impl Iterator<Item = Entry<'a>>) -> u64 {
    let mut h = FxHasher::default();
    for entry in entries {
        entry.hash(&mut h);
    }
    h.finish()
}

/// The multiply-rotate hash of rustc (`FxHasher`): a few cycles per word, where SipHash
/// takes tens. It hashes what every dispatch looks up (kernel keys, bind-group entries):
/// nothing an adversary chooses.
#[derive(Default)]
struct FxHasher(u64);

type FxBuild = BuildHasherDefault<FxHasher>;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Kernel {
    /// The key's name: pass and bind-group label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pipeline of entry point `entry`.
    pub fn pipeline(&self, entry: &str) -> &wgpu::ComputePipeline {
        let i = self
            .key
            .entry_points()
            .iter()
            .position(|e| *e == entry)
            .unwrap_or_else(|| panic!("{}: no entry point {entry}", self.key));
        &self.pipelines[i]
    }

    /// A bind group from `(binding name, buffer)` pairs, which must be exactly the key's
    /// bindings: a cached one when the same buffers were bound before. Uniform bindings are
    /// bound at offset 0 with their offset as a dynamic one, so one group serves every
    /// parameter slot of a chunk.
    pub fn bind(
        &self,
        device: &wgpu::Device,
        buffers: &[(&str, wgpu::BindingResource<'_>)],
    ) -> Result<Bound> {
        let mut resolved: [Option<Entry<'_>>; MAX_BINDINGS] = [None; MAX_BINDINGS];
        let mut offsets = Vec::new();
        for ((name, resource), slot) in buffers.iter().zip(&mut resolved) {
            let Some((entry, dynamic)) = self.entry(name, resource) else {
                break;
            };
            offsets.extend(dynamic.map(|offset| (entry.0, offset)));
            *slot = Some(entry);
        }
        let n = resolved.iter().take_while(|e| e.is_some()).count();
        if n != buffers.len() || n != self.bindings.len() {
            return Err(WgpuError::Bindings {
                kernel: self.name.clone(),
                given: buffers.iter().map(|(n, _)| n.to_string()).collect(),
                expected: self.bindings.iter().map(|b| b.name.to_string()).collect(),
            });
        }
        offsets.sort_unstable();
        let offsets = offsets.into_iter().map(|(_, offset)| offset).collect();
        let entries = || resolved[..n].iter().flatten().copied();
        let hash = entries_hash(entries());
        let same = |key: &[BindKey]| {
            key.len() == n
                && key
                    .iter()
                    .zip(entries())
                    .all(|((i, b, o, s), (j, c, p, t))| *i == j && b == c && *o == p && *s == t)
        };
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, group)) = groups
            .by_hash
            .get(&hash)
            .and_then(|bucket| bucket.iter().find(|(key, _)| same(key)))
        {
            return Ok(Bound {
                group: group.clone(),
                offsets,
            });
        }
        let key: Vec<BindKey> = entries()
            .map(|(index, buffer, offset, size)| (index, buffer.clone(), offset, size))
            .collect();
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&self.name),
            layout: &self.layout,
            entries: &key
                .iter()
                .map(|(index, buffer, offset, size)| wgpu::BindGroupEntry {
                    binding: *index,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer,
                        offset: *offset,
                        size: *size,
                    }),
                })
                .collect::<Vec<_>>(),
        });
        if groups.len >= MAX_CACHED_GROUPS {
            *groups = BindGroups::default();
        }
        groups.len += 1;
        groups
            .by_hash
            .entry(hash)
            .or_default()
            .push((key, group.clone()));
        Ok(Bound { group, offsets })
    }

    /// The bind-group entry of `(name, resource)` and, for a uniform binding, its dynamic
    /// offset; `None` when `name` is not one of the key's bindings or `resource` no buffer.
    fn entry<'a>(
        &self,
        name: &str,
        resource: &wgpu::BindingResource<'a>,
    ) -> Option<(Entry<'a>, Option<u32>)> {
        let b = self.bindings.iter().find(|b| b.name == name)?;
        let wgpu::BindingResource::Buffer(binding) = resource else {
            return None;
        };
        let uniform = b.kind == BindingKind::Uniform;
        let offset = if uniform { 0 } else { binding.offset };
        let dynamic = uniform.then_some(binding.offset as u32);
        Some(((b.index, binding.buffer, offset, binding.size), dynamic))
    }

    /// Forgets the cached bind groups (and so the buffers only they kept alive).
    pub(crate) fn forget_bind_groups(&self) {
        *self.groups.lock().unwrap_or_else(|e| e.into_inner()) = BindGroups::default();
    }
}

/// The runtime checks naga adds to the routed-MoE kernels (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShaderChecks {
    /// wgpu's defaults: loop guards, index clamping, division guards (`all`).
    All,
    /// Index clamping only (`bounds`): the default where naga's clamps are the only guard of
    /// buffer accesses (Metal, DX12, GL).
    Bounds,
    /// None (`none`): the default on Vulkan, where wgpu enables robust buffer access, so the
    /// device itself keeps every buffer access in bounds and the shader's clamps only cover
    /// per-thread and workgroup arrays, whose indices are in range by construction.
    None,
}

impl ShaderChecks {
    /// The environment variable [`crate::ContextOptions::from_env`] reads them from.
    pub const ENV: &'static str = "MOETILE_SHADER_CHECKS";

    /// The default on `backend`.
    pub fn default_for(backend: wgpu::Backend) -> ShaderChecks {
        match backend {
            wgpu::Backend::Vulkan => ShaderChecks::None,
            _ => ShaderChecks::Bounds,
        }
    }

    /// The mode `MOETILE_SHADER_CHECKS`'s `value` names (`all`, `bounds` or `none`); any other
    /// value is an error naming the accepted ones.
    pub fn parse_env(value: &str) -> Result<ShaderChecks> {
        match value {
            "all" => Ok(ShaderChecks::All),
            "bounds" => Ok(ShaderChecks::Bounds),
            "none" => Ok(ShaderChecks::None),
            _ => Err(WgpuError::InvalidEnv {
                var: Self::ENV,
                value: value.to_string(),
                allowed: "all, bounds, none",
            }),
        }
    }

    /// `"all"`, `"bounds"` or `"none"`.
    pub fn name(self) -> &'static str {
        match self {
            ShaderChecks::All => "all",
            ShaderChecks::Bounds => "bounds",
            ShaderChecks::None => "none",
        }
    }

    /// The checks `key` runs with: relaxed only for the kernels whose templates were written
    /// for it.
    fn for_key(self, key: &KernelKey) -> wgpu::ShaderRuntimeChecks {
        let audited = matches!(
            key,
            KernelKey::Map { .. }
                | KernelKey::MmId(_)
                | KernelKey::MvId { .. }
                | KernelKey::AttnPrefill { .. }
                | KernelKey::AttnDecode { .. }
                | KernelKey::AttnCombine { .. }
                | KernelKey::RmsNorm
                | KernelKey::Route
                | KernelKey::Hyper(_)
        );
        if !audited || self == ShaderChecks::All {
            return wgpu::ShaderRuntimeChecks::checked();
        }
        let mut checks = wgpu::ShaderRuntimeChecks::checked();
        checks.force_loop_bounding = false;
        checks.int_div_checks = false;
        checks.bounds_checks = self == ShaderChecks::Bounds;
        checks
    }
}

/// Created kernels, by key.
#[derive(Debug)]
pub struct KernelCache {
    kernels: Mutex<HashMap<KernelKey, Arc<Kernel>, FxBuild>>,
    checks: ShaderChecks,
    pipeline_cache: Option<PipelineCacheFile>,
}

impl KernelCache {
    /// An empty cache whose kernels run with `checks`.
    pub fn new(checks: ShaderChecks) -> KernelCache {
        KernelCache {
            kernels: Mutex::default(),
            checks,
            pipeline_cache: None,
        }
    }

    /// The cache with its pipelines created through `file`'s pipeline cache from now on.
    pub(crate) fn with_pipeline_cache(self, file: Option<PipelineCacheFile>) -> KernelCache {
        KernelCache {
            pipeline_cache: file,
            ..self
        }
    }

    /// The pipeline cache pipelines are created through, if any.
    pub(crate) fn pipeline_cache(&self) -> Option<&PipelineCacheFile> {
        self.pipeline_cache.as_ref()
    }

    /// The runtime checks of the routed-MoE kernels.
    pub fn checks(&self) -> ShaderChecks {
        self.checks
    }

    /// How many kernels have been created.
    pub fn len(&self) -> usize {
        self.kernels.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no kernel has been created yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bind groups cached over all kernels.
    pub(crate) fn cached_bind_groups(&self) -> usize {
        let kernels = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        kernels
            .values()
            .map(|k| k.groups.lock().unwrap_or_else(|e| e.into_inner()).len)
            .sum()
    }

    /// Forgets every kernel's cached bind groups.
    pub(crate) fn forget_bind_groups(&self) {
        for kernel in self
            .kernels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            kernel.forget_bind_groups();
        }
    }

    /// The kernel of `key`, created on first use.
    pub fn get(&self, device: &wgpu::Device, key: &KernelKey) -> Result<Arc<Kernel>> {
        let mut kernels = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = kernels.get(key) {
            return Ok(k.clone());
        }
        let cache = self.pipeline_cache.as_ref().map(|f| &f.cache);
        let kernel = Arc::new(create(device, key, self.checks.for_key(key), cache)?);
        kernels.insert(*key, kernel.clone());
        Ok(kernel)
    }
}

fn create(
    device: &wgpu::Device,
    key: &KernelKey,
    checks: wgpu::ShaderRuntimeChecks,
    cache: Option<&wgpu::PipelineCache>,
) -> Result<Kernel> {
    let name = key.to_string();
    let wgsl = source(key).ok_or_else(|| WgpuError::UnknownKernel {
        kernel: name.clone(),
    })?;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let descriptor = wgpu::ShaderModuleDescriptor {
        label: Some(&name),
        source: wgpu::ShaderSource::Wgsl(wgsl.into()),
    };
    // SAFETY: `checks` drops guards only for the kernels `ShaderChecks::for_key` lists, whose
    // templates bound every loop, divide only by constants or host-checked non-zero values,
    // index per-thread and workgroup arrays in range by construction and buffers in range
    // for validated parameters (see the module docs); by default buffer accesses stay
    // guarded, by naga's clamps or, on Vulkan, by the device's robust buffer access.
    let module = unsafe { device.create_shader_module_trusted(descriptor, checks) };
    let bindings = key.bindings();
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .map(|b| wgpu::BindGroupLayoutEntry {
            binding: b.index,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match b.kind {
                    BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                    BindingKind::ReadOnly => wgpu::BufferBindingType::Storage { read_only: true },
                    BindingKind::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: b.kind == BindingKind::Uniform,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(&name),
        entries: &entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(&name),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipelines = key
        .entry_points()
        .iter()
        .map(|entry| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&format!("{name}:{entry}")),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    // Every kernel writes the workgroup memory it reads.
                    zero_initialize_workgroup_memory: false,
                    ..Default::default()
                },
                cache,
            })
        })
        .collect();
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(WgpuError::Gpu {
            op: format!("creating kernel {name}"),
            message: e.to_string(),
        });
    }
    Ok(Kernel {
        key: *key,
        name,
        bindings,
        layout,
        pipelines,
        groups: Mutex::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use moetile::tile::TileWidth;
    use moetile_codegen::{ActType, MatmulKey, Path, WeightType};

    #[test]
    fn only_the_audited_kernels_drop_runtime_checks() {
        let mm = KernelKey::MmId(MatmulKey {
            weight: WeightType::Q4_K,
            act: ActType::F32,
            tile: TileWidth::T64,
            path: Path::Coop16,
        });
        let other = KernelKey::Act {
            mid: ActType::F16,
            interleaved: true,
            biased: false,
        };
        let c = ShaderChecks::None.for_key(&other);
        assert!(c.bounds_checks && c.force_loop_bounding && c.int_div_checks);
        let attn = KernelKey::AttnPrefill {
            head_dim: 128,
            kv: ActType::F16,
            sinks: false,
        };
        for key in [&mm, &attn] {
            let c = ShaderChecks::None.for_key(key);
            assert!(!c.bounds_checks && !c.force_loop_bounding && !c.int_div_checks);
        }
        let c = ShaderChecks::Bounds.for_key(&mm);
        assert!(c.bounds_checks && !c.force_loop_bounding && !c.int_div_checks);
        let c = ShaderChecks::All.for_key(&mm);
        assert!(c.bounds_checks && c.force_loop_bounding && c.int_div_checks);
        // Index clamps are dropped by default only where the device guards buffer accesses.
        assert_eq!(
            ShaderChecks::default_for(wgpu::Backend::Vulkan),
            ShaderChecks::None
        );
        assert_eq!(
            ShaderChecks::default_for(wgpu::Backend::Metal),
            ShaderChecks::Bounds
        );
    }

    #[test]
    fn every_kernel_binds_at_most_max_bindings() {
        for key in KernelKey::all() {
            assert!(key.bindings().len() <= MAX_BINDINGS, "{key}");
        }
    }

    #[test]
    fn table_is_exactly_the_generated_key_set() {
        let mut names: Vec<String> = KernelKey::all().iter().map(|k| k.to_string()).collect();
        names.sort();
        let table: Vec<String> = KERNELS.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, table);
        for key in KernelKey::all() {
            assert!(source(&key).is_some_and(|s| s.contains(&key.to_string())));
        }
    }
}
