//! Kernel keys and the WGSL they name: every GPU specialization moetile runs is generated here
//! from a [`KernelKey`] and validated by naga (SPIR-V, MSL, HLSL) at build time.
//!
//! The crate depends on nothing else in the repository, and on naga only with the `validate`
//! feature: `moetile-wgpu`'s `build.rs` enables it to call `write_kernel_table`, which
//! generates and validates [`KernelKey::all`] and writes the table the backend compiles in. The
//! backend and the runtime depend on this crate again without the feature, for the key types,
//! tile widths, geometry, binding tables and parameter structs, so the shader and the host read
//! the same numbers and neither links naga's MSL/HLSL writers.
//! `cargo run -p moetile-codegen --features validate -- dump DIR` writes every specialization
//! with its translations for reading.
//!
//! ```
//! use moetile_codegen::{ActType, KernelKey, MatmulKey, Path, Templates, TileWidth, WeightType};
//!
//! let key = KernelKey::MmId(MatmulKey {
//!     weight: WeightType::Q4_K,
//!     act: ActType::F32,
//!     tile: TileWidth::T64,
//!     path: Path::Reg,
//! });
//! assert_eq!(key.to_string(), "mm_id_q4k_f32_t64_reg");
//! let wgsl = moetile_codegen::generate(&key, &Templates::builtin()).unwrap();
//! assert!(wgsl.contains("const TILE_N: u32 = 64u;"));
//! moetile_codegen::validate(&key, &wgsl).unwrap();
//! ```

#![deny(missing_docs)]

mod family;
mod generate;
mod key;
pub mod params;
mod tile;
#[cfg(feature = "validate")]
mod validate;
mod weights;

#[cfg(feature = "validate")]
use std::path::Path as FsPath;

pub use family::attention::HEAD_DIMS;
pub use family::deepseek4::{DS4_MAX_HEAD_DIM, Deepseek4Step};
pub use family::delta_net::{DELTA_CHUNK, DELTA_HEAD_DIMS, DELTA_WY_FLOATS, DeltaStep};
pub use family::eltwise::EltOp;
pub use family::hyper::{HC_MIXES, HC_STREAMS, HyperStep};
pub use family::matmul::{COOP_MAX_SUBGROUP_SIZE, MatmulKey, MvEpilogue, Path};
pub use family::moe::MAP_DISPATCH_SLOTS;
pub use family::route::{ROUTE_MAX_EXPERTS, ROUTE_MAX_USED};
pub use generate::{Templates, generate};
pub use key::{ActType, Binding, BindingKind, GRID_BINDING, KernelKey};
pub use tile::TileWidth;
#[cfg(feature = "validate")]
pub use validate::{Stage, Validated, capabilities, validate};
pub use weights::WeightType;

/// Generation and validation failures; each names the kernel key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A template or fragment the key needs is not in the template set.
    #[error("kernel {key}: template wgsl/{path} is missing; add it to Templates::builtin")]
    MissingTemplate {
        /// The kernel key.
        key: String,
        /// The path under `wgsl/`.
        path: String,
    },
    /// naga rejected the shader or one of its translations.
    #[cfg(feature = "validate")]
    #[error("kernel {key}: {stage} failed:\n{message}")]
    Invalid {
        /// The kernel key.
        key: String,
        /// Which step failed.
        stage: Stage,
        /// naga's message.
        message: String,
    },
    /// Writing an output file failed.
    #[cfg(feature = "validate")]
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Generates and validates `key` from the built-in templates.
#[cfg(feature = "validate")]
pub fn generate_validated(key: &KernelKey) -> Result<(String, Validated), Error> {
    let wgsl = generate(key, &Templates::builtin())?;
    let validated = validate(key, &wgsl)?;
    Ok((wgsl, validated))
}

#[cfg(feature = "validate")]
fn write(path: &FsPath, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// For `build.rs`: generates and validates every key of [`KernelKey::all`], writes each WGSL
/// to `out_dir/kernels/NAME.wgsl`, `out_dir/kernels.rs` holding
/// `pub static KERNELS: &[(&str, &str)]`, `(name, WGSL)` sorted by name, and
/// `out_dir/workgroup_bytes.rs` holding `pub static WORKGROUP_BYTES: &[(&str, u32)]`,
/// `(name, Validated::workgroup_bytes)` in the same order (the device limit the kernels need).
#[cfg(feature = "validate")]
pub fn write_kernel_table(out_dir: &FsPath) -> Result<(), Error> {
    let dir = out_dir.join("kernels");
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut keys = KernelKey::all();
    keys.sort_by_key(|k| k.to_string());
    let mut table = String::from(
        "/// Every generated kernel, `(KernelKey name, WGSL)`, sorted by name: written by\n\
         /// `moetile_codegen::write_kernel_table` from `KernelKey::all()`.\n\
         pub static KERNELS: &[(&str, &str)] = &[\n",
    );
    let mut workgroup = String::from(
        "/// Workgroup memory of every generated kernel, `(KernelKey name, bytes)`, sorted by\n\
         /// name: `Validated::workgroup_bytes`, written by `moetile_codegen::write_kernel_table`.\n\
         pub static WORKGROUP_BYTES: &[(&str, u32)] = &[\n",
    );
    for key in &keys {
        let (wgsl, v) = generate_validated(key)?;
        let file = dir.join(format!("{key}.wgsl"));
        write(&file, wgsl.as_bytes())?;
        table.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            key.to_string(),
            file.display().to_string()
        ));
        workgroup.push_str(&format!(
            "    ({:?}, {}),\n",
            key.to_string(),
            v.workgroup_bytes
        ));
    }
    table.push_str("];\n");
    workgroup.push_str("];\n");
    write(&out_dir.join("kernels.rs"), table.as_bytes())?;
    write(&out_dir.join("workgroup_bytes.rs"), workgroup.as_bytes())
}

/// Writes every specialization to `dir` as `NAME.wgsl`, `NAME.spv`, `NAME.metal` and (for
/// non-cooperative kernels) `NAME.hlsl`. Returns the number of kernels written.
#[cfg(feature = "validate")]
pub fn dump(dir: &FsPath) -> Result<usize, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let keys = KernelKey::all();
    for key in &keys {
        let (wgsl, v) = generate_validated(key)?;
        write(&dir.join(format!("{key}.wgsl")), wgsl.as_bytes())?;
        write(
            &dir.join(format!("{key}.spv")),
            bytemuck::cast_slice(&v.spirv),
        )?;
        write(&dir.join(format!("{key}.metal")), v.msl.as_bytes())?;
        if let Some(hlsl) = v.hlsl {
            write(&dir.join(format!("{key}.hlsl")), hlsl.as_bytes())?;
        }
    }
    Ok(keys.len())
}
