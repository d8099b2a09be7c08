//! `rms_norm`: RMS norm of every group of values (a row or a head) times a weight vector.

use std::fmt;

use super::{Family, b};
use crate::key::{Binding, BindingKind::*};
use crate::params::{Layout, NormParams, layout};

/// Threads per RMS-norm workgroup (one group each). A row norm is one workgroup, so its latency
/// is the strided loop: at D 2048 on the H100, 64 threads took ~25 us a norm, 256 take ~9 us.
const NORM_WG_SIZE: u32 = 256;

/// `rms_norm`.
pub(crate) struct RmsNorm;

impl Family for RmsNorm {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rms_norm")
    }

    fn template(&self) -> &'static str {
        "rms_norm.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        vec!["reduce/sum.wgsl"]
    }

    fn params(&self) -> Layout {
        layout::<NormParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![
            b(0, "params", Uniform),
            b(1, "x", ReadOnly),
            b(2, "w", ReadOnly),
            b(3, "out", ReadWrite),
        ]
    }

    fn workgroup_size(&self) -> u32 {
        NORM_WG_SIZE
    }

    /// A whole group of values per workgroup.
    fn items_per_workgroup(&self) -> Option<u32> {
        Some(1)
    }
}
