//! `hc_pre`, `hc_post`, `hc_head`: deepseek4's mHC hyper-connections around a sub-block and
//! before the output norm. The raw mixes (`fn` times a token's streams) come from a matmul
//! before `hc_pre`; `hc_pre` finishes them per token (RMS scale, pre/post weights, Sinkhorn
//! in registers) and writes the sub-block input; `hc_post` writes the sub-block output back
//! into the streams. `hc_head` is `hc_pre` with the pre weights only (the head's mixes are
//! those alone): the same template with the other `token_weights` fragment.

use std::fmt;

use super::{Family, WG_SIZE, b};
use crate::key::{Binding, BindingKind::*};
use crate::params::{HyperParams, Layout, layout};

/// Residual streams per token (`HC_STREAMS` of `moetile::model`; deepseek4 has exactly 4).
pub const HC_STREAMS: u32 = 4;
/// Mixing values per token: pre and post weights, then the comb matrix.
pub const HC_MIXES: u32 = (2 + HC_STREAMS) * HC_STREAMS;

/// Which step of a hyper-connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HyperStep {
    /// Mixing values and the sub-block input, one workgroup per token: the coefficients are
    /// a few dozen scalars (one thread computes them, Sinkhorn included, in workgroup
    /// memory), and the workgroup that needs the token's RMS for them then reads the
    /// streams again for the input, so neither the RMS nor the coefficients go through memory
    /// between kernels.
    Pre,
    /// The streams' update, one thread per (token, column): each reads the column of all
    /// streams and writes it back, so the update is in place.
    Post,
    /// The output head's mix of the streams into one row: [`HyperStep::Pre`]'s input with
    /// only its pre weights, from `HC_STREAMS` mixes per token and no mixing values out.
    Head,
}

impl Family for HyperStep {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HyperStep::Pre => "hc_pre",
            HyperStep::Post => "hc_post",
            HyperStep::Head => "hc_head",
        })
    }

    fn template(&self) -> &'static str {
        match self {
            HyperStep::Pre | HyperStep::Head => "hc_pre.wgsl",
            HyperStep::Post => "hc_post.wgsl",
        }
    }

    fn fragments(&self) -> Vec<&'static str> {
        match self {
            HyperStep::Pre => vec!["reduce/sum.wgsl", "hc/mix.wgsl"],
            HyperStep::Head => vec!["reduce/sum.wgsl", "hc/head.wgsl"],
            HyperStep::Post => Vec::new(),
        }
    }

    fn params(&self) -> Layout {
        layout::<HyperParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        let pre = || {
            vec![
                b(0, "params", Uniform),
                b(1, "streams", ReadOnly),
                b(2, "mixes", ReadOnly),
                b(3, "scale", ReadOnly),
                b(4, "base", ReadOnly),
                b(5, "input", ReadWrite),
            ]
        };
        match self {
            HyperStep::Pre => [pre(), vec![b(6, "mix", ReadWrite)]].concat(),
            HyperStep::Head => pre(),
            HyperStep::Post => vec![
                b(0, "params", Uniform),
                b(1, "out", ReadOnly),
                b(2, "mix", ReadOnly),
                b(3, "streams", ReadWrite),
            ],
        }
    }

    /// `N_MIXES`: the mixes per token of `hc_pre.wgsl`'s input; `HC_MIXES`: the mixing values
    /// per token `hc_post` reads.
    fn consts(&self) -> Vec<(&'static str, u32)> {
        let mixes = match self {
            HyperStep::Pre => ("N_MIXES", HC_MIXES),
            HyperStep::Head => ("N_MIXES", HC_STREAMS),
            HyperStep::Post => ("HC_MIXES", HC_MIXES),
        };
        vec![("HC", HC_STREAMS), mixes]
    }

    /// A token per `hc_pre` and `hc_head` workgroup, a (token, column) per `hc_post` thread.
    fn items_per_workgroup(&self) -> Option<u32> {
        Some(match self {
            HyperStep::Pre | HyperStep::Head => 1,
            HyperStep::Post => WG_SIZE,
        })
    }
}
