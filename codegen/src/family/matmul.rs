//! The grouped matmuls of routed experts (and of dense projections, as one-expert matmuls):
//! `mm_id` over the map's work list, per weight type, activation type, token tile and multiply
//! path, and `mv_id`, the mat-vec for small batches, with what it does with its rows (its
//! epilogue). Their geometry lives here and is written into the shaders as constants.

use std::fmt;

use super::{Family, WG_SIZE, b, mid_fragment};
use crate::key::{ActType, Binding, BindingKind::*};
use crate::params::{Layout, MatmulParams, layout};
use crate::tile::TileWidth;
use crate::weights::WeightType;

/// How a grouped matmul multiplies its tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Path {
    /// Register-tiled f32 FMAs: runs everywhere.
    Reg,
    /// 16x16 f16 -> f32 cooperative matrices (NVIDIA/AMD Vulkan).
    Coop16,
    /// 8x8 f16 -> f32 cooperative matrices (Metal simdgroup matrices).
    Coop8,
}

impl Path {
    /// Every path.
    pub const ALL: [Path; 3] = [Path::Reg, Path::Coop16, Path::Coop8];

    /// `"reg"`, `"coop16"` or `"coop8"`.
    pub fn name(self) -> &'static str {
        match self {
            Path::Reg => "reg",
            Path::Coop16 => "coop16",
            Path::Coop8 => "coop8",
        }
    }

    /// Side of the square cooperative matrix, `None` for the register path.
    pub fn fragment(self) -> Option<u32> {
        match self {
            Path::Reg => None,
            Path::Coop16 => Some(16),
            Path::Coop8 => Some(8),
        }
    }
}

/// What a mat-vec of [`KernelKey::MvId`](crate::KernelKey::MvId) does with its rows
/// (`wgsl/mv/*.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MvEpilogue {
    /// One pair per workgroup row, each output row stored: `y[p][row]` (`mv_id_*`).
    Rows,
    /// Over a gate/up tensor of interleaved rows, one pair per workgroup row: the expert
    /// activation of each (gate, up) row pair times the pair's route weight, stored as `mid`
    /// (`mv_glu_*`).
    Glu {
        /// Storage type of `mid`.
        mid: ActType,
    },
    /// One token per workgroup row, its K pairs summed: `out[t][row]` (`mv_sum_*`).
    Sum,
}

impl MvEpilogue {
    /// Every epilogue.
    pub const ALL: [MvEpilogue; 4] = [
        MvEpilogue::Rows,
        MvEpilogue::Glu { mid: ActType::F32 },
        MvEpilogue::Glu { mid: ActType::F16 },
        MvEpilogue::Sum,
    ];
}

/// A grouped-matmul specialization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatmulKey {
    /// Weight storage type.
    pub weight: WeightType,
    /// Activation (input) type.
    pub act: ActType,
    /// Tokens per workgroup.
    pub tile: TileWidth,
    /// Multiply path.
    pub path: Path,
}

/// Inner-dimension step of the register-tile matmul: one 32-value sub-block of every weight
/// type, so its tiles fit 32 KiB of workgroup memory (lavapipe, Metal) at every width.
const REG_K_STEP: u32 = 32;
/// Register path: output rows per workgroup.
const REG_ROWS: u32 = 64;
/// Register path: threads along the rows; thread `tr` owns rows `tr + ROW_THREADS * i`, i < 4,
/// so the 16 row threads of a warp read 16 distinct weight rows without bank conflicts.
const ROW_THREADS: u32 = 16;
/// Cooperative paths: the largest subgroup the slots are laid out for (one slot per 32
/// threads). Every adapter with f16 cooperative matrices we know of (NVIDIA, Apple, Intel, AMD
/// in wave32) runs them in subgroups of at most 32 lanes; the runtime refuses the path on
/// others, and the kernel writes NaN rather than wrong numbers should it run with fewer
/// subgroups than slots.
pub const COOP_MAX_SUBGROUP_SIZE: u32 = 32;
/// Rows per mat-vec workgroup.
const MV_ROWS: u32 = 8;
/// Rows per int8 mat-vec workgroup: each workgroup quantizes its activation row itself, so
/// more rows share that work (at Qwen3-30B-A3B's shape on the H100, `bench/decode-h100/run-6`:
/// tg128 147.5 tok/s at 8 rows, 159.1 at 16, 148.7 at 32, where `down`'s 2048 rows are too
/// few workgroups).
const MV_INT8_ROWS: u32 = 16;

/// Register path: tokens per thread (the accumulators are 4 rows x this many tokens, read as
/// whole vec4s of the activation tile).
fn reg_tokens_per_thread(tile: TileWidth) -> u32 {
    (tile.tokens() as u32 / 16).max(4)
}

/// Cooperative paths: the shape of a workgroup's work. Its subgroups fill `threads / 32`
/// slots, each owning a rectangle of output fragments whose accumulators stay in registers for
/// the whole K loop; `slot_cols` slots sit side by side along the tokens.
///
/// Measured on the H100 (`bench/NOTES-mm_id.md`): time follows the fragments per slot and
/// the words each thread prefetches, not the tile. Slots of 1 or 2 fragments, one weight and
/// one activation group per thread and a 32-value K step are fastest; 4 or 8 fragments per
/// slot, a 64-value K step or loads two steps ahead were 1.3x to 2.5x slower (per-thread
/// arrays the driver no longer keeps in registers, or fewer resident workgroups). Hence 64
/// rows at every width and 512 threads (16 slots of 1 x 2 fragments) at 128 tokens.
struct CoopGeometry {
    /// Output rows per workgroup.
    rows: u32,
    /// Inner-dimension step.
    k_step: u32,
    /// Steps the loads run ahead of the multiply.
    stages: u32,
    /// Threads per workgroup.
    threads: u32,
    /// Slots along the tokens.
    slot_cols: u32,
}

/// Cooperative paths: the geometry of each token-tile width.
fn coop_geometry(tile: TileWidth) -> CoopGeometry {
    let (rows, k_step, stages, threads, slot_cols) = match tile {
        TileWidth::T32 => (64, 32, 1, 256, 2),
        TileWidth::T64 => (64, 32, 1, 256, 2),
        TileWidth::T128 => (64, 32, 1, 512, 4),
    };
    CoopGeometry {
        rows,
        k_step,
        stages,
        threads,
        slot_cols,
    }
}

/// The activation fragment of `act`.
fn act_fragment(act: ActType) -> &'static str {
    match act {
        ActType::F32 => "act/f32.wgsl",
        ActType::F16 => "act/f16.wgsl",
    }
}

/// The bindings `wgsl/matmul.wgsl` declares for `mm_id` and `mv_id`.
fn matmul_bindings() -> Vec<Binding> {
    vec![
        b(0, "params", Uniform),
        b(1, "weights", ReadOnly),
        b(2, "act", ReadOnly),
    ]
}

impl Family for MatmulKey {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mm_id_{}_{}_t{}_{}",
            self.weight.short_name(),
            self.act.name(),
            self.tile,
            self.path.name()
        )
    }

    fn template(&self) -> &'static str {
        match self.path {
            Path::Reg => "mm_id.wgsl",
            Path::Coop16 | Path::Coop8 => "mm_id_coop.wgsl",
        }
    }

    fn fragments(&self) -> Vec<&'static str> {
        let coop: &[&str] = match self.path {
            Path::Reg => &[],
            Path::Coop16 => &["coop/16.wgsl"],
            Path::Coop8 => &["coop/8.wgsl"],
        };
        [
            self.weight.fragments(),
            &[act_fragment(self.act)],
            coop,
            &["matmul.wgsl"],
        ]
        .concat()
    }

    fn params(&self) -> Layout {
        layout::<MatmulParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        let mut list = matmul_bindings();
        list.extend([
            b(3, "experts", ReadOnly),
            b(4, "list", ReadOnly),
            b(5, "items", ReadOnly),
            b(6, "y", ReadWrite),
        ]);
        list
    }

    fn consts(&self) -> Vec<(&'static str, u32)> {
        let tile = self.tile.tokens() as u32;
        match self.path.fragment() {
            None => {
                let tokens_per_thread = reg_tokens_per_thread(self.tile);
                vec![
                    ("K_STEP", REG_K_STEP),
                    ("ROW_THREADS", ROW_THREADS),
                    ("TOKEN_THREADS", tile / tokens_per_thread),
                    ("ROWS_PER_THREAD", REG_ROWS / ROW_THREADS),
                    ("TOKENS_PER_THREAD", tokens_per_thread),
                ]
            }
            Some(frag) => {
                let g = coop_geometry(self.tile);
                let slots = g.threads / COOP_MAX_SUBGROUP_SIZE;
                vec![
                    ("K_STEP", g.k_step),
                    ("STAGES", g.stages),
                    ("FRAG", frag),
                    ("SLOTS", slots),
                    ("SLOT_COLS", g.slot_cols),
                    ("SLOT_ROW_FRAGS", g.rows / frag / (slots / g.slot_cols)),
                    ("SLOT_TOKEN_FRAGS", tile / frag / g.slot_cols),
                ]
            }
        }
    }

    fn workgroup_size(&self) -> u32 {
        match self.path {
            Path::Reg => ROW_THREADS * self.tile.tokens() as u32 / reg_tokens_per_thread(self.tile),
            Path::Coop16 | Path::Coop8 => coop_geometry(self.tile).threads,
        }
    }

    fn rows_per_workgroup(&self) -> Option<u32> {
        Some(match self.path {
            Path::Reg => REG_ROWS,
            Path::Coop16 | Path::Coop8 => coop_geometry(self.tile).rows,
        })
    }

    fn tokens_per_workgroup(&self) -> Option<u32> {
        Some(self.tile.tokens() as u32)
    }

    fn tile(&self) -> Option<TileWidth> {
        Some(self.tile)
    }

    fn weight(&self) -> Option<WeightType> {
        Some(self.weight)
    }

    fn path(&self) -> Path {
        self.path
    }
}

/// `mv_id`: one workgroup per (pair, row tile), or per (token, row tile) for
/// [`MvEpilogue::Sum`].
pub(crate) struct MvId {
    pub(crate) weight: WeightType,
    pub(crate) act: ActType,
    pub(crate) epilogue: MvEpilogue,
    pub(crate) norm: bool,
    pub(crate) int8: bool,
    pub(crate) biased: bool,
}

impl MvId {
    /// Rows per workgroup.
    fn rows(&self) -> u32 {
        match self.weight.mat_vec_int8(self.int8) {
            true => MV_INT8_ROWS,
            false => MV_ROWS,
        }
    }
}

impl Family for MvId {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (weight, act) = (self.weight.short_name(), self.act.name());
        match self.epilogue {
            MvEpilogue::Rows => write!(f, "mv_id_{weight}_{act}"),
            MvEpilogue::Glu { mid } => write!(f, "mv_glu_{weight}_{act}_{}", mid.name()),
            MvEpilogue::Sum => write!(f, "mv_sum_{weight}_{act}"),
        }?;
        if self.int8 {
            f.write_str("_int8")?;
        }
        if self.norm {
            f.write_str("_norm")?;
        }
        if self.biased {
            f.write_str("_biased")?;
        }
        Ok(())
    }

    fn template(&self) -> &'static str {
        "mv_id.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        let epilogue: &[&str] = match (self.epilogue, self.biased) {
            (MvEpilogue::Rows, _) => &["mv/per_pair.wgsl", "mv/rows.wgsl"],
            (MvEpilogue::Glu { mid }, biased) => &[
                mid_fragment(mid),
                "glu/swiglu.wgsl",
                "mv/per_pair.wgsl",
                if biased {
                    "mv/glu_bias.wgsl"
                } else {
                    "mv/glu_no_bias.wgsl"
                },
                "mv/glu.wgsl",
            ],
            (MvEpilogue::Sum, true) => &["mv/sum_bias.wgsl", "mv/sum.wgsl"],
            (MvEpilogue::Sum, false) => &["mv/sum_no_bias.wgsl", "mv/sum.wgsl"],
        };
        let prologue: &[&str] = if self.norm {
            &["reduce/sum.wgsl", "mv/norm.wgsl"]
        } else {
            &["mv/plain.wgsl"]
        };
        let input = match (self.int8, self.weight.int8_dot_fragments()) {
            (true, Some(dot)) => [dot, &["mv/x_int8.wgsl"]].concat(),
            _ => vec!["mv/x_f32.wgsl"],
        };
        [
            self.weight.fragments(),
            &[act_fragment(self.act), "matmul.wgsl"],
            prologue,
            &input,
            epilogue,
        ]
        .concat()
    }

    fn params(&self) -> Layout {
        layout::<MatmulParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        let mut list = matmul_bindings();
        list.push(b(3, "ids", ReadOnly));
        match self.epilogue {
            MvEpilogue::Rows => list.push(b(4, "y", ReadWrite)),
            MvEpilogue::Glu { .. } => {
                list.extend([b(4, "mid", ReadWrite), b(5, "route", ReadOnly)]);
            }
            MvEpilogue::Sum => list.push(b(4, "out", ReadWrite)),
        }
        if self.norm {
            list.push(b(6, "norm_w", ReadOnly));
        }
        if self.biased {
            match self.epilogue {
                MvEpilogue::Rows => {}
                MvEpilogue::Glu { .. } => {
                    list.extend([b(8, "gate_bias", ReadOnly), b(9, "up_bias", ReadOnly)]);
                }
                MvEpilogue::Sum => {
                    list.extend([b(5, "route", ReadOnly), b(8, "down_bias", ReadOnly)]);
                }
            }
        }
        list
    }

    fn consts(&self) -> Vec<(&'static str, u32)> {
        vec![("LANES", WG_SIZE / self.rows())]
    }

    fn rows_per_workgroup(&self) -> Option<u32> {
        Some(self.rows())
    }

    fn tokens_per_workgroup(&self) -> Option<u32> {
        Some(1)
    }

    fn weight(&self) -> Option<WeightType> {
        Some(self.weight)
    }
}
