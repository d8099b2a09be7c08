//! qwen35moe's Gated DeltaNet, token by token: `conv_silu` (the causal depthwise convolution
//! and SiLU over a layer's q|k|v channels, carrying the convolution's tail) and `delta_rule`
//! (per value head the gated delta rule over its `head_dim x head_dim` state, then the RMS
//! norm gated by SiLU(z)). Both walk a batch's tokens in order inside the kernel: a token's
//! state needs the one before it, so the parallelism is across channels and heads.

use std::fmt;

use super::{Family, WG_SIZE, b};
use crate::key::{Binding, BindingKind::*};
use crate::params::{ConvParams, DeltaParams, Layout, layout};

/// Head widths (`ssm.state_size`) with a `delta_rule` kernel: the workgroup is one head, a
/// thread per state column holding that column in registers (Qwen3.5/3.6 use 128).
pub const DELTA_HEAD_DIMS: [u32; 3] = [32, 64, 128];

/// `conv_silu`: one thread per channel, walking the tokens.
pub(crate) struct ConvSilu;

impl Family for ConvSilu {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("conv_silu")
    }

    fn template(&self) -> &'static str {
        "conv_silu.wgsl"
    }

    fn params(&self) -> Layout {
        layout::<ConvParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![
            b(0, "params", Uniform),
            b(1, "proj", ReadOnly),
            b(2, "conv", ReadOnly),
            b(3, "tail", ReadWrite),
            b(4, "x", ReadWrite),
        ]
    }

    fn items_per_workgroup(&self) -> Option<u32> {
        Some(WG_SIZE)
    }
}

/// `delta_rule_h{head_dim}`: one workgroup per value head, a thread per state column.
pub(crate) struct DeltaRule {
    /// Width of a head (one of [`DELTA_HEAD_DIMS`]).
    pub(crate) head_dim: u32,
}

impl Family for DeltaRule {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "delta_rule_h{}", self.head_dim)
    }

    fn template(&self) -> &'static str {
        "delta_rule.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        vec!["reduce/sum.wgsl"]
    }

    fn params(&self) -> Layout {
        layout::<DeltaParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![
            b(0, "params", Uniform),
            b(1, "x", ReadOnly),
            b(2, "proj", ReadOnly),
            b(3, "dt_bias", ReadOnly),
            b(4, "decay_rate", ReadOnly),
            b(5, "norm", ReadOnly),
            b(6, "state", ReadWrite),
            b(7, "out", ReadWrite),
        ]
    }

    fn consts(&self) -> Vec<(&'static str, u32)> {
        vec![("HEAD_DIM", self.head_dim)]
    }

    fn workgroup_size(&self) -> u32 {
        self.head_dim
    }
}
