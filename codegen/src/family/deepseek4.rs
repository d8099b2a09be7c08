//! deepseek4's attention kernels besides its matmuls, norms and compressor pooling: the
//! partial interleaved rotation of heads' tails (and its inverse), the attention of a chunk's
//! queries over the raw window and the compressed rows with per-head sinks, and the lightning
//! indexer's scores and top-k picks. Plain, one-concept kernels: correctness first.

use std::fmt;

use super::{Family, WG_SIZE, b};
use crate::key::{Binding, BindingKind::*};
use crate::params::{Ds4AttnParams, IndexParams, Layout, QatParams, RopeTailParams, layout};

/// The widest head `ds4_attend` holds in workgroup memory (Flash's 512).
pub const DS4_MAX_HEAD_DIM: u32 = 512;

/// Threads of the kernels with a workgroup per head: `ds4_attend` (a key per thread while
/// scoring, a few head dims per thread while summing) and `ds4_qat` (a butterfly pair or a
/// block per thread).
const HEAD_THREADS: u32 = 64;

/// Which deepseek4 attention kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Deepseek4Step {
    /// The rotation of the last `n_rot` values of every head, in place, one thread per
    /// rotated pair; forward or inverse by a parameter.
    Rope,
    /// Attention with sinks over the raw window and the compressed rows, one workgroup per
    /// (token, head).
    Attend,
    /// The indexer's score of every (token, compressed row), one thread each.
    IndexScore,
    /// The indexer's top-k: a radix select of the k-th score, then the rows above it and
    /// the earliest equal to it, one workgroup per token.
    IndexPick,
    /// The low-precision simulation (FP8 keys; Hadamard then FP4 indexer heads), in place,
    /// one workgroup per head.
    Qat,
}

impl Deepseek4Step {
    /// Every step.
    pub const ALL: [Deepseek4Step; 5] = [
        Deepseek4Step::Rope,
        Deepseek4Step::Attend,
        Deepseek4Step::IndexScore,
        Deepseek4Step::IndexPick,
        Deepseek4Step::Qat,
    ];
}

impl Family for Deepseek4Step {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Deepseek4Step::Rope => "ds4_rope",
            Deepseek4Step::Attend => "ds4_attend",
            Deepseek4Step::IndexScore => "ds4_index_score",
            Deepseek4Step::IndexPick => "ds4_index_pick",
            Deepseek4Step::Qat => "ds4_qat",
        })
    }

    fn template(&self) -> &'static str {
        match self {
            Deepseek4Step::Rope => "ds4_rope.wgsl",
            Deepseek4Step::Attend => "ds4_attend.wgsl",
            Deepseek4Step::IndexScore => "ds4_index_score.wgsl",
            Deepseek4Step::IndexPick => "ds4_index_pick.wgsl",
            Deepseek4Step::Qat => "ds4_qat.wgsl",
        }
    }

    fn fragments(&self) -> Vec<&'static str> {
        match self {
            Deepseek4Step::Attend => vec!["reduce/sum.wgsl"],
            _ => Vec::new(),
        }
    }

    fn params(&self) -> Layout {
        match self {
            Deepseek4Step::Rope => layout::<RopeTailParams>(),
            Deepseek4Step::Attend => layout::<Ds4AttnParams>(),
            Deepseek4Step::IndexScore | Deepseek4Step::IndexPick => layout::<IndexParams>(),
            Deepseek4Step::Qat => layout::<QatParams>(),
        }
    }

    fn bindings(&self) -> Vec<Binding> {
        match self {
            Deepseek4Step::Rope => vec![
                b(0, "params", Uniform),
                b(1, "angles", ReadOnly),
                b(2, "x", ReadWrite),
            ],
            Deepseek4Step::Attend => vec![
                b(0, "params", Uniform),
                b(1, "q", ReadOnly),
                b(2, "raw", ReadOnly),
                b(3, "comp", ReadOnly),
                b(4, "picked", ReadOnly),
                b(5, "sinks", ReadOnly),
                b(6, "out", ReadWrite),
            ],
            Deepseek4Step::IndexScore => vec![
                b(0, "params", Uniform),
                b(1, "q", ReadOnly),
                b(2, "keys", ReadOnly),
                b(3, "weights", ReadOnly),
                b(4, "scores", ReadWrite),
            ],
            Deepseek4Step::IndexPick => vec![
                b(0, "params", Uniform),
                b(1, "scores", ReadOnly),
                b(2, "picked", ReadWrite),
            ],
            Deepseek4Step::Qat => vec![b(0, "params", Uniform), b(1, "x", ReadWrite)],
        }
    }

    fn consts(&self) -> Vec<(&'static str, u32)> {
        match self {
            Deepseek4Step::Attend | Deepseek4Step::Qat => {
                vec![("MAX_HEAD_DIM", DS4_MAX_HEAD_DIM)]
            }
            _ => Vec::new(),
        }
    }

    fn workgroup_size(&self) -> u32 {
        match self {
            Deepseek4Step::Attend | Deepseek4Step::Qat => HEAD_THREADS,
            _ => WG_SIZE,
        }
    }

    /// A (token, head) per `ds4_attend` workgroup, a head per `ds4_qat` workgroup, a token per
    /// `ds4_index_pick` workgroup, an item per thread elsewhere.
    fn items_per_workgroup(&self) -> Option<u32> {
        Some(match self {
            Deepseek4Step::Attend | Deepseek4Step::Qat | Deepseek4Step::IndexPick => 1,
            _ => WG_SIZE,
        })
    }
}
