//! Kernel families: one module per family of kernels sharing a template, each implementing
//! [`Family`] for the key shapes it owns. [`KernelKey`](crate::KernelKey) turns itself into its
//! family's value in one `match` and asks it; what holds for every family (the shared
//! constants, the grid fragment, the IQ2_XXS grid binding) is added there, once.

pub(crate) mod attention;
pub(crate) mod deepseek4;
pub(crate) mod delta_net;
pub(crate) mod eltwise;
pub(crate) mod embed;
pub(crate) mod hyper;
pub(crate) mod matmul;
pub(crate) mod moe;
pub(crate) mod norm;
pub(crate) mod pool;
pub(crate) mod route;

use std::fmt;

use crate::family::matmul::Path;
use crate::key::{Binding, BindingKind};
use crate::params::Layout;
use crate::tile::TileWidth;
use crate::weights::WeightType;

/// Threads per workgroup of every kernel that does not say otherwise.
pub(crate) const WG_SIZE: u32 = 256;

/// What a kernel family says about one of its keys. The defaults are those of a kernel with one
/// `main` entry point of [`WG_SIZE`] threads on a grid of its own, reading no weights.
pub(crate) trait Family {
    /// The key's name: the template's stem, then what specializes it, joined by `_`.
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    /// The template under `wgsl/` holding the entry points.
    fn template(&self) -> &'static str;
    /// Fragments the template needs before it, in order (the grid fragment is added for
    /// kernels on the folded grid).
    fn fragments(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// The uniform parameter struct the generator declares.
    fn params(&self) -> Layout;
    /// The group-0 bindings, but for the IQ2_XXS grid (added for keys reading that type).
    fn bindings(&self) -> Vec<Binding>;
    /// Constants of this family, after the shared `WG_SIZE`, `TILE_N`, `ROWS_PER_WG`, `QK`
    /// and `BLOCK_WORDS`.
    fn consts(&self) -> Vec<(&'static str, u32)> {
        Vec::new()
    }
    /// Entry points, in dispatch order.
    fn entry_points(&self) -> &'static [&'static str] {
        &["main"]
    }
    /// Threads per workgroup.
    fn workgroup_size(&self) -> u32 {
        WG_SIZE
    }
    /// Items per workgroup on the folded grid (`wgsl/grid.wgsl`); `None` off it.
    fn items_per_workgroup(&self) -> Option<u32> {
        None
    }
    /// Output rows per workgroup.
    fn rows_per_workgroup(&self) -> Option<u32> {
        None
    }
    /// Tokens per workgroup.
    fn tokens_per_workgroup(&self) -> Option<u32> {
        None
    }
    /// The token-tile width.
    fn tile(&self) -> Option<TileWidth> {
        None
    }
    /// The weight type read.
    fn weight(&self) -> Option<WeightType> {
        None
    }
    /// The matmul path.
    fn path(&self) -> Path {
        Path::Reg
    }
    /// Whether subgroup operations are used.
    fn needs_subgroups(&self) -> bool {
        self.path() != Path::Reg
    }
    /// Query rows per attention workgroup.
    fn attention_rows(&self) -> Option<u32> {
        None
    }
    /// Positions per decode-attention workgroup.
    fn decode_chunk(&self) -> Option<u32> {
        None
    }
}

/// The fragment storing `mid` (the expert activation between the gate/up and down matmuls)
/// as `mid`.
pub(crate) fn mid_fragment(mid: crate::key::ActType) -> &'static str {
    match mid {
        crate::key::ActType::F32 => "mid/f32.wgsl",
        crate::key::ActType::F16 => "mid/f16.wgsl",
    }
}

/// A binding-table row.
pub(crate) const fn b(index: u32, name: &'static str, kind: BindingKind) -> Binding {
    Binding { index, name, kind }
}
