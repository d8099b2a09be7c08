//! `compressor_pool`: deepseek4's compressor pooling (per-column softmax over a window of
//! projected rows, then the RMS norm of the pooled row), one workgroup per compressed row: the
//! norm needs the whole row, and a row is a few hundred columns.

use std::fmt;

use super::{Family, b};
use crate::key::{Binding, BindingKind::*};
use crate::params::{Layout, PoolParams, layout};

/// `compressor_pool`.
pub(crate) struct CompressorPool;

impl Family for CompressorPool {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("compressor_pool")
    }

    fn template(&self) -> &'static str {
        "compressor_pool.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        vec!["reduce/sum.wgsl"]
    }

    fn params(&self) -> Layout {
        layout::<PoolParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![
            b(0, "params", Uniform),
            b(1, "kv", ReadOnly),
            b(2, "score", ReadOnly),
            b(3, "ape", ReadOnly),
            b(4, "norm", ReadOnly),
            b(5, "out", ReadWrite),
        ]
    }

    /// A compressed row per workgroup.
    fn items_per_workgroup(&self) -> Option<u32> {
        Some(1)
    }
}
