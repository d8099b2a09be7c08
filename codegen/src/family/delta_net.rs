//! qwen35moe's Gated DeltaNet: `conv_silu` (the causal depthwise convolution and SiLU over a
//! layer's q|k|v channels, carrying the convolution's tail), then the gated delta rule per
//! value head over its `head_dim x head_dim` state with the RMS norm gated by SiLU(z): in its
//! recurrent form (`delta_rule`, a token at a time) or its chunked (WY) form (`delta_wy` for
//! every chunk at once, then `delta_scan` a chunk at a time). The state needs the tokens in
//! order, so the sequential kernels are parallel across channels and heads.

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

/// Tokens per chunk of the chunked (WY) form: `delta_wy` is a workgroup of `CHUNK x CHUNK`
/// threads, one per (token, earlier token) pair of a chunk.
pub const DELTA_CHUNK: u32 = 16;

/// Floats `delta_wy` writes per (value head, chunk): `T` and `QK` (`CHUNK x CHUNK` each), then
/// per token the cumulative log decay, beta and the inverse norms of q and k.
pub const DELTA_WY_FLOATS: u32 = 2 * DELTA_CHUNK * DELTA_CHUNK + 4 * DELTA_CHUNK;

/// Which kernel of the gated delta rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeltaStep {
    /// The recurrent form (`delta_rule`): one workgroup per value head, a thread per state
    /// column, walking the tokens one at a time; decode, and prefill by default.
    Recurrent,
    /// The chunked form's first step (`delta_wy`): per (chunk, value head) the chunk's
    /// triangular solve and decayed scores, all chunks at once.
    Wy,
    /// The chunked form's second step (`delta_scan`): one workgroup per value head walking the
    /// chunks, each chunk's tokens independent given the state before it.
    Scan,
}

impl DeltaStep {
    /// Every step.
    pub const ALL: [DeltaStep; 3] = [DeltaStep::Recurrent, DeltaStep::Wy, DeltaStep::Scan];
}

/// `delta_rule_h{head_dim}`, `delta_wy_h{head_dim}`, `delta_scan_h{head_dim}`.
pub(crate) struct DeltaRule {
    /// Width of a head (one of [`DELTA_HEAD_DIMS`]).
    pub(crate) head_dim: u32,
    /// Which kernel.
    pub(crate) step: DeltaStep,
}

impl DeltaRule {
    fn stem(&self) -> &'static str {
        match self.step {
            DeltaStep::Recurrent => "delta_rule",
            DeltaStep::Wy => "delta_wy",
            DeltaStep::Scan => "delta_scan",
        }
    }
}

impl Family for DeltaRule {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_h{}", self.stem(), self.head_dim)
    }

    fn template(&self) -> &'static str {
        match self.step {
            DeltaStep::Recurrent => "delta_rule.wgsl",
            DeltaStep::Wy => "delta_wy.wgsl",
            DeltaStep::Scan => "delta_scan.wgsl",
        }
    }

    fn fragments(&self) -> Vec<&'static str> {
        match self.step {
            DeltaStep::Recurrent => vec![
                "reduce/sum.wgsl",
                "delta/layout.wgsl",
                "delta/state.wgsl",
                "delta/gates.wgsl",
                "delta/out.wgsl",
            ],
            DeltaStep::Wy => vec!["delta/layout.wgsl", "delta/gates.wgsl"],
            DeltaStep::Scan => vec![
                "reduce/sum.wgsl",
                "delta/layout.wgsl",
                "delta/state.wgsl",
                "delta/out.wgsl",
            ],
        }
    }

    fn params(&self) -> Layout {
        layout::<DeltaParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        let head = [
            b(0, "params", Uniform),
            b(1, "x", ReadOnly),
            b(2, "proj", ReadOnly),
        ];
        let rest = match self.step {
            DeltaStep::Recurrent => vec![
                b(3, "dt_bias", ReadOnly),
                b(4, "decay_rate", ReadOnly),
                b(5, "norm", ReadOnly),
                b(6, "state", ReadWrite),
                b(7, "out", ReadWrite),
            ],
            DeltaStep::Wy => vec![
                b(3, "dt_bias", ReadOnly),
                b(4, "decay_rate", ReadOnly),
                b(5, "wy", ReadWrite),
            ],
            DeltaStep::Scan => vec![
                b(3, "wy", ReadOnly),
                b(4, "norm", ReadOnly),
                b(5, "state", ReadWrite),
                b(6, "out", ReadWrite),
            ],
        };
        head.into_iter().chain(rest).collect()
    }

    fn consts(&self) -> Vec<(&'static str, u32)> {
        let mut c = vec![("HEAD_DIM", self.head_dim)];
        if self.step != DeltaStep::Recurrent {
            c.extend([("CHUNK", DELTA_CHUNK), ("WY_FLOATS", DELTA_WY_FLOATS)]);
        }
        c
    }

    fn workgroup_size(&self) -> u32 {
        match self.step {
            DeltaStep::Wy => DELTA_CHUNK * DELTA_CHUNK,
            DeltaStep::Recurrent | DeltaStep::Scan => self.head_dim,
        }
    }
}
