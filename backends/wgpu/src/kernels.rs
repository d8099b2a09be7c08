//! The generated kernel table and the pipeline cache over it.
//!
//! `build.rs` generated and validated every key of [`KernelKey::all`]; [`KERNELS`] holds their
//! WGSL by name. A [`Kernel`] is created lazily per key: its bind-group layout comes from the
//! key's binding table (the same table naga checked the WGSL against) and it has one pipeline
//! per entry point, labelled with the key's name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use moetile_codegen::{BindingKind, KernelKey};

use crate::error::{Result, WgpuError};

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

/// A key's pipelines and bind-group layout.
#[derive(Debug)]
pub struct Kernel {
    /// The key.
    pub key: KernelKey,
    layout: wgpu::BindGroupLayout,
    pipelines: Vec<wgpu::ComputePipeline>,
}

impl Kernel {
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
    /// bindings.
    pub fn bind(
        &self,
        device: &wgpu::Device,
        buffers: &[(&str, wgpu::BindingResource<'_>)],
    ) -> Result<wgpu::BindGroup> {
        let expected = self.key.bindings();
        let mut entries = Vec::with_capacity(buffers.len());
        for (name, resource) in buffers {
            let Some(b) = expected.iter().find(|b| b.name == *name) else {
                break;
            };
            entries.push(wgpu::BindGroupEntry {
                binding: b.index,
                resource: resource.clone(),
            });
        }
        if entries.len() != buffers.len() || entries.len() != expected.len() {
            return Err(WgpuError::Bindings {
                kernel: self.key.to_string(),
                given: buffers.iter().map(|(n, _)| n.to_string()).collect(),
                expected: expected.iter().map(|b| b.name.to_string()).collect(),
            });
        }
        Ok(device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&self.key.to_string()),
            layout: &self.layout,
            entries: &entries,
        }))
    }
}

/// Lazily created kernels, by key.
#[derive(Debug, Default)]
pub struct KernelCache {
    kernels: Mutex<HashMap<KernelKey, Arc<Kernel>>>,
}

impl KernelCache {
    /// The kernel of `key`, created on first use.
    pub fn get(&self, device: &wgpu::Device, key: &KernelKey) -> Result<Arc<Kernel>> {
        let mut kernels = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = kernels.get(key) {
            return Ok(k.clone());
        }
        let kernel = Arc::new(create(device, key)?);
        kernels.insert(*key, kernel.clone());
        Ok(kernel)
    }
}

fn create(device: &wgpu::Device, key: &KernelKey) -> Result<Kernel> {
    let name = key.to_string();
    let wgsl = source(key).ok_or_else(|| WgpuError::UnknownKernel {
        kernel: name.clone(),
    })?;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(&name),
        source: wgpu::ShaderSource::Wgsl(wgsl.into()),
    });
    let entries: Vec<wgpu::BindGroupLayoutEntry> = key
        .bindings()
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
                has_dynamic_offset: false,
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
                cache: None,
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
        layout,
        pipelines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
