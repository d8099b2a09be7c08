//! `rms_norm`: RMS norm of every group of values (a row or a head) times a weight vector, plain
//! or with the residual add fused in.

use std::fmt;

use super::{Family, b};
use crate::key::{Binding, BindingKind::*};
use crate::params::{Layout, NormParams, layout};

/// Threads per RMS-norm workgroup (one group each). A decode step's row norms are one
/// workgroup each, so their latency is the strided loop: at D 2048 on the H100, 64 threads
/// took ~25 us a norm, 256 take ~9 us (per-head norms of 128 values leave half the threads idle,
/// +1.4 ms over a 2048-token prefill of Qwen3-30B-A3B against -1.6 ms per decode step).
const NORM_WG_SIZE: u32 = 256;

/// What an RMS norm of [`KernelKey::RmsNorm`](crate::KernelKey::RmsNorm) reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NormFlavour {
    /// One matrix: `out = rms_norm(x) * w`.
    Plain,
    /// A residual `y` is first added into `x` in place (`x += y`), fusing the residual add
    /// into the norm after it.
    Residual,
}

impl NormFlavour {
    /// Every flavour.
    pub const ALL: [NormFlavour; 2] = [NormFlavour::Plain, NormFlavour::Residual];
}

impl Family for NormFlavour {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NormFlavour::Plain => "rms_norm",
            NormFlavour::Residual => "rms_norm_residual",
        })
    }

    fn template(&self) -> &'static str {
        "rms_norm.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        match self {
            NormFlavour::Plain => vec!["norm/plain.wgsl", "norm/out.wgsl"],
            NormFlavour::Residual => vec!["norm/residual.wgsl", "norm/out.wgsl"],
        }
    }

    fn params(&self) -> Layout {
        layout::<NormParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        let x_kind = match self {
            NormFlavour::Residual => ReadWrite,
            NormFlavour::Plain => ReadOnly,
        };
        let mut list = vec![
            b(0, "params", Uniform),
            b(1, "x", x_kind),
            b(2, "w", ReadOnly),
            b(3, "out", ReadWrite),
        ];
        if *self == NormFlavour::Residual {
            list.push(b(4, "y", ReadOnly));
        }
        list
    }

    fn workgroup_size(&self) -> u32 {
        NORM_WG_SIZE
    }

    /// A whole group of values per workgroup.
    fn items_per_workgroup(&self) -> Option<u32> {
        Some(1)
    }
}
