//! naga validation of a generated shader and its translations: SPIR-V (Vulkan), MSL (2.1, or
//! 2.3 where cooperative matrices are used) and HLSL (shader model 6.2; not for cooperative
//! kernels, which DX12 cannot run). The validator gets exactly the capabilities the key declares
//! it needs, so a key that under-declares its features fails here, not on a user's GPU.

use naga::valid::{Capabilities, ValidationFlags, Validator};

use crate::Error;
use crate::key::{BindingKind, KernelKey};

/// What a stage of validation is called in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// WGSL parsing.
    Parse,
    /// naga's IR validation.
    Validate,
    /// The key's binding table against the shader's globals.
    Bindings,
    /// SPIR-V translation.
    SpirV,
    /// MSL translation.
    Msl,
    /// HLSL translation.
    Hlsl,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Parse => "WGSL parsing",
            Stage::Validate => "naga validation",
            Stage::Bindings => "binding check",
            Stage::SpirV => "SPIR-V translation",
            Stage::Msl => "MSL translation",
            Stage::Hlsl => "HLSL translation",
        })
    }
}

/// A validated shader: the naga module and its translations.
#[derive(Debug)]
pub struct Validated {
    /// The parsed module (for layout checks).
    pub module: naga::Module,
    /// SPIR-V words.
    pub spirv: Vec<u32>,
    /// Metal Shading Language source.
    pub msl: String,
    /// HLSL source (`None` for cooperative-matrix kernels).
    pub hlsl: Option<String>,
    /// Bytes of workgroup memory the hungriest entry point uses, as naga lays it out: what
    /// the device's `max_compute_workgroup_storage_size` must allow.
    pub workgroup_bytes: u32,
}

/// The naga capabilities `key` declares it needs. Every kernel may use `unpack2x16float` /
/// `pack2x16float` (f16 scales and f16 activations stored in `u32` words): wgpu grants that
/// with the `SHADER_F16_IN_F32` downlevel flag, which every Vulkan, Metal and DX12 adapter has.
pub fn capabilities(key: &KernelKey) -> Capabilities {
    let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    if key.needs_f16() {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if key.needs_subgroups() {
        caps |= Capabilities::SUBGROUP;
    }
    if key.needs_coop() {
        caps |= Capabilities::COOPERATIVE_MATRIX;
    }
    caps
}

/// Parses, validates and translates `source`, the WGSL of `key`.
pub fn validate(key: &KernelKey, source: &str) -> Result<Validated, Error> {
    let fail = |stage, message: String| Error::Invalid {
        key: key.to_string(),
        stage,
        message,
    };
    let path = format!("{key}.wgsl");
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| fail(Stage::Parse, e.emit_to_string_with_path(source, &path)))?;
    let info = Validator::new(ValidationFlags::all(), capabilities(key))
        .validate(&module)
        .map_err(|e| fail(Stage::Validate, e.emit_to_string_with_path(source, &path)))?;
    check_bindings(key, &module).map_err(|m| fail(Stage::Bindings, m))?;
    let workgroup_bytes = workgroup_bytes(&module, &info).map_err(|m| fail(Stage::Validate, m))?;

    let spirv = naga::back::spv::write_vec(&module, &info, &Default::default(), None)
        .map_err(|e| fail(Stage::SpirV, e.to_string()))?;

    let msl_options = naga::back::msl::Options {
        lang_version: if key.needs_coop() { (2, 3) } else { (2, 1) },
        ..Default::default()
    };
    let (msl, _) = naga::back::msl::write_string(&module, &info, &msl_options, &Default::default())
        .map_err(|e| fail(Stage::Msl, e.to_string()))?;

    let hlsl = if key.needs_coop() {
        None
    } else {
        // The HLSL writer panics on some inputs instead of returning an error.
        let written = std::panic::catch_unwind(|| {
            let options = naga::back::hlsl::Options {
                shader_model: naga::back::hlsl::ShaderModel::V6_2,
                ..Default::default()
            };
            let pipeline = naga::back::hlsl::PipelineOptions::default();
            let mut out = String::new();
            naga::back::hlsl::Writer::new(&mut out, &options, &pipeline)
                .write(&module, &info, None)
                .map(|_| out)
                .map_err(|e| e.to_string())
        });
        match written {
            Ok(Ok(text)) => Some(text),
            Ok(Err(message)) => return Err(fail(Stage::Hlsl, message)),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "the HLSL writer panicked".to_string());
                return Err(fail(Stage::Hlsl, format!("panic: {message}")));
            }
        }
    };
    Ok(Validated {
        module,
        spirv,
        msl,
        hlsl,
        workgroup_bytes,
    })
}

/// The most workgroup memory any entry point of `module` uses: the sizes of the
/// `var<workgroup>` globals it reaches, summed.
fn workgroup_bytes(module: &naga::Module, info: &naga::valid::ModuleInfo) -> Result<u32, String> {
    let mut layouter = naga::proc::Layouter::default();
    layouter
        .update(module.to_ctx())
        .map_err(|e| format!("laying out types: {e}"))?;
    let max = (0..module.entry_points.len())
        .map(|i| {
            let uses = info.get_entry_point(i);
            module
                .global_variables
                .iter()
                .filter(|(h, g)| g.space == naga::AddressSpace::WorkGroup && !uses[*h].is_empty())
                .map(|(_, g)| layouter[g.ty].size)
                .sum::<u32>()
        })
        .max();
    Ok(max.unwrap_or(0))
}

/// The shader's group-0 globals must be exactly `key.bindings()`: same indices, names, kinds.
fn check_bindings(key: &KernelKey, module: &naga::Module) -> Result<(), String> {
    let mut found: Vec<(u32, String, Option<BindingKind>)> = module
        .global_variables
        .iter()
        .filter_map(|(_, var)| {
            let binding = var.binding.as_ref()?;
            let kind = match var.space {
                naga::AddressSpace::Uniform => Some(BindingKind::Uniform),
                naga::AddressSpace::Storage { access } => {
                    Some(if access.contains(naga::StorageAccess::STORE) {
                        BindingKind::ReadWrite
                    } else {
                        BindingKind::ReadOnly
                    })
                }
                _ => None,
            };
            let name = var.name.clone().unwrap_or_default();
            Some((binding.group * 1000 + binding.binding, name, kind))
        })
        .collect();
    found.sort_by_key(|f| f.0);
    let expected: Vec<(u32, String, Option<BindingKind>)> = key
        .bindings()
        .iter()
        .map(|b| (b.index, b.name.to_string(), Some(b.kind)))
        .collect();
    if found == expected {
        Ok(())
    } else {
        Err(format!(
            "the WGSL declares {found:?} but the key's binding table says {expected:?}"
        ))
    }
}
