//! [`KernelKey`]: one value names one specialization. Its `Display` is the file name, the
//! pipeline label, the bench row and the test name; its geometry methods size the dispatch and
//! are written into the WGSL as named `const`s by the generator, so host and shader can never
//! disagree on a tile size.

use moetile::tile::TileWidth;

use crate::weights::WeightType;

/// Element type of an activation buffer a kernel reads (`act`) or writes (`mid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActType {
    /// 32-bit floats.
    F32,
    /// IEEE halves, stored two per `u32` word (no `SHADER_F16` needed to read or write them).
    F16,
}

impl ActType {
    /// Both types.
    pub const ALL: [ActType; 2] = [ActType::F32, ActType::F16];

    /// `"f32"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            ActType::F32 => "f32",
            ActType::F16 => "f16",
        }
    }

    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            ActType::F32 => 4,
            ActType::F16 => 2,
        }
    }
}

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

/// What a mat-vec of [`KernelKey::MvId`] does with its rows (`wgsl/mv/*.wgsl`).
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

/// An in-place element-wise op of [`KernelKey::Eltwise`] (`wgsl/eltwise.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EltOp {
    /// `dst += src`, same shape (residual adds).
    Add,
    /// `dst[t] += src` for every row (biases).
    AddRow,
    /// `dst[t] *= sigmoid(src[t])`, one gate value per row (qwen2moe's shared-expert gate).
    MulSigmoidRow,
}

impl EltOp {
    /// Every op.
    pub const ALL: [EltOp; 3] = [EltOp::Add, EltOp::AddRow, EltOp::MulSigmoidRow];

    /// The value of the template's `OP` constant.
    fn code(self) -> u32 {
        match self {
            EltOp::Add => 0,
            EltOp::AddRow => 1,
            EltOp::MulSigmoidRow => 2,
        }
    }

    /// `"add"`, `"add_row"`, `"mul_sigmoid_row"`.
    pub fn name(self) -> &'static str {
        match self {
            EltOp::Add => "add",
            EltOp::AddRow => "add_row",
            EltOp::MulSigmoidRow => "mul_sigmoid_row",
        }
    }
}

/// What an RMS norm of [`KernelKey::RmsNorm`] reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NormFlavour {
    /// One matrix: `out = rms_norm(x) * w`.
    Plain,
    /// A residual `y` is first added into `x` in place (`x += y`), fusing the residual add
    /// into the norm after it.
    Residual,
    /// Two matrices of the same group length, each with its own weights and output, in one
    /// dispatch (qwen3's per-head q and k norms).
    Pair,
}

impl NormFlavour {
    /// Every flavour.
    pub const ALL: [NormFlavour; 3] =
        [NormFlavour::Plain, NormFlavour::Residual, NormFlavour::Pair];
}

/// Head widths the attention kernels are generated for: multiples of 16 up to 128, of 32 up to
/// 256 (the 16 threads of a prefill row group own whole dims).
pub const HEAD_DIMS: [u32; 12] = [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256];

/// One generated kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelKey {
    /// Expert-major lists, per-expert spans, the compact work list of token tiles of width
    /// `tile`, and the indirect dispatch arguments of the matmuls that use it.
    Map {
        /// The width of the token tiles listed.
        tile: TileWidth,
    },
    /// Grouped matmul over the work list: one workgroup per (token tile, row tile).
    MmId(MatmulKey),
    /// Grouped mat-vec for small batches: one workgroup per (pair or token, row tile).
    MvId {
        /// Weight storage type.
        weight: WeightType,
        /// Activation (input) type.
        act: ActType,
        /// What it does with its rows.
        epilogue: MvEpilogue,
    },
    /// `act(gate, up) * route_weight`, written as `mid`.
    Act {
        /// Storage type of `mid`.
        mid: ActType,
        /// Whether gate and up are one `(pairs, 2F)` matrix of interleaved columns (the output
        /// of one matmul over a gate/up tensor of interleaved rows) rather than two.
        interleaved: bool,
    },
    /// `out[t] = sum_k y[t * K + k]`.
    Sum,
    /// Rows of a weight table, dequantized (token embedding).
    Embed {
        /// Storage type of the table.
        weight: WeightType,
    },
    /// RMS norm of every group of values (a row or a head) times a weight vector.
    RmsNorm(NormFlavour),
    /// An in-place element-wise op.
    Eltwise(EltOp),
    /// Rotary position embedding in place, from a table of angles.
    Rope {
        /// Whether a second matrix (k beside q) is rotated in the same dispatch.
        pair: bool,
    },
    /// Appends keys and values to a layer's cache.
    KvStore {
        /// Storage type of the cache.
        kv: ActType,
    },
    /// Causal flash attention of a batch of queries over the cache.
    AttnPrefill {
        /// Width of one head (one of [`HEAD_DIMS`]).
        head_dim: u32,
        /// Storage type of the cache.
        kv: ActType,
    },
    /// Attention of a few queries split over the keys (decode), first pass: partial softmaxes
    /// per chunk of positions.
    AttnDecode {
        /// Width of one head (one of [`HEAD_DIMS`]).
        head_dim: u32,
        /// Storage type of the cache.
        kv: ActType,
        /// Whether workgroup reductions combine within subgroups first (needs `SUBGROUP`).
        subgroups: bool,
    },
    /// Decode attention, second pass: merges the partial softmaxes of each query row.
    AttnCombine {
        /// Width of one head (one of [`HEAD_DIMS`]).
        head_dim: u32,
    },
    /// Router: top-K experts of softmax or sigmoid gates per token.
    Route,
}

/// Threads per workgroup of every kernel but the grouped matmuls (whose geometry is below).
const WG_SIZE: u32 = 256;
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
/// Indirect-dispatch argument slots the map writes (one per distinct row-tile count).
pub const MAP_DISPATCH_SLOTS: usize = 4;
/// Threads per workgroup of the router (one workgroup per token; Qwen3 has 128 experts,
/// DeepSeek 256).
const ROUTE_WG_SIZE: u32 = 64;
/// Threads per RMS-norm workgroup (one group each). A decode step's row norms are one
/// workgroup each, so their latency is the strided loop: at D 2048 on the H100, 64 threads
/// took ~25 us a norm, 256 take ~9 us (per-head norms of 128 values leave half the threads idle,
/// +1.4 ms over a 2048-token prefill of Qwen3-30B-A3B against -1.6 ms per decode step).
const NORM_WG_SIZE: u32 = 256;

/// Decode attention: query rows per workgroup (every query head of a GQA group of 8 for one
/// token, or of smaller groups for several tokens).
const DECODE_ROWS: u32 = 8;
/// Decode attention: positions per workgroup (one per thread). At 2K context and 4 key/value
/// heads that is 128 workgroups, each reading 32 KiB of f16 keys and values once.
const DECODE_CHUNK: u32 = 64;
/// Threads per workgroup of the decode merge (one per 4 dims).
const COMBINE_WG_SIZE: u32 = 64;
/// Register prefill attention: threads per row group (they share rows; each owns every 16th
/// key column of S and dim of O).
const ATTN_ROW_THREADS: u32 = 16;

/// The shape of a prefill-attention workgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AttnGeometry {
    /// Query rows ((token, head) pairs of one key/value head).
    rows: u32,
    /// Keys per tile.
    kv_tile: u32,
    /// Threads.
    threads: u32,
    /// Rows per thread.
    rows_per_thread: u32,
}

/// Prefill attention geometry: f32 tiles of Q, K/V, S and P within 32 KiB of workgroup memory
/// (lavapipe, Metal), 128 threads in row groups of [`ATTN_ROW_THREADS`].
fn attn_geometry(head_dim: u32) -> AttnGeometry {
    let (rows, kv_tile, rows_per_thread) = match head_dim {
        0..=64 => (32, 32, 4),
        65..=128 => (32, 16, 4),
        _ => (8, 16, 1),
    };
    AttnGeometry {
        rows,
        kv_tile,
        threads: 128,
        rows_per_thread,
    }
}

/// A shader binding of group 0, as the templates declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// `@binding(index)`.
    pub index: u32,
    /// Variable name in the WGSL.
    pub name: &'static str,
    /// Uniform, read-only storage or read-write storage.
    pub kind: BindingKind,
}

/// What kind of buffer a binding takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingKind {
    /// `var<uniform>`.
    Uniform,
    /// `var<storage, read>`.
    ReadOnly,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// The binding of the IQ2_XXS grid table, in every kernel that reads weights.
pub const GRID_BINDING: u32 = 7;

const fn b(index: u32, name: &'static str, kind: BindingKind) -> Binding {
    Binding { index, name, kind }
}

impl KernelKey {
    /// Every key the build generates and validates; the runtime only requests keys from this set
    /// (a test in `moetile-wgpu` checks it).
    pub fn all() -> Vec<KernelKey> {
        let mut keys = Vec::new();
        for tile in TileWidth::ALL {
            keys.push(KernelKey::Map { tile });
        }
        for weight in WeightType::ALL {
            for act in ActType::ALL {
                for tile in TileWidth::ALL {
                    for path in Path::ALL {
                        keys.push(KernelKey::MmId(MatmulKey {
                            weight,
                            act,
                            tile,
                            path,
                        }));
                    }
                }
                for epilogue in MvEpilogue::ALL {
                    keys.push(KernelKey::MvId {
                        weight,
                        act,
                        epilogue,
                    });
                }
            }
        }
        for mid in ActType::ALL {
            for interleaved in [false, true] {
                keys.push(KernelKey::Act { mid, interleaved });
            }
        }
        keys.push(KernelKey::Sum);
        for weight in WeightType::ALL {
            keys.push(KernelKey::Embed { weight });
        }
        for flavour in NormFlavour::ALL {
            keys.push(KernelKey::RmsNorm(flavour));
        }
        for op in EltOp::ALL {
            keys.push(KernelKey::Eltwise(op));
        }
        for pair in [false, true] {
            keys.push(KernelKey::Rope { pair });
        }
        for kv in ActType::ALL {
            keys.push(KernelKey::KvStore { kv });
            for head_dim in HEAD_DIMS {
                keys.push(KernelKey::AttnPrefill { head_dim, kv });
                for subgroups in [false, true] {
                    keys.push(KernelKey::AttnDecode {
                        head_dim,
                        kv,
                        subgroups,
                    });
                }
            }
        }
        for head_dim in HEAD_DIMS {
            keys.push(KernelKey::AttnCombine { head_dim });
        }
        keys.push(KernelKey::Route);
        keys
    }

    /// Threads per workgroup (`WG_SIZE`).
    pub fn workgroup_size(&self) -> u32 {
        match self {
            KernelKey::Route => ROUTE_WG_SIZE,
            KernelKey::RmsNorm(_) => NORM_WG_SIZE,
            KernelKey::MmId(m) if m.path == Path::Reg => {
                ROW_THREADS * m.tile.tokens() as u32 / reg_tokens_per_thread(m.tile)
            }
            KernelKey::MmId(m) => coop_geometry(m.tile).threads,
            KernelKey::AttnPrefill { head_dim, .. } => attn_geometry(*head_dim).threads,
            KernelKey::AttnDecode { .. } => DECODE_CHUNK,
            KernelKey::AttnCombine { .. } => COMBINE_WG_SIZE,
            _ => WG_SIZE,
        }
    }

    /// Items one workgroup covers on the folded 1-D grid of `wgsl/grid.wgsl`: one per thread,
    /// but a whole group of values for [`KernelKey::RmsNorm`] and a token's logits for
    /// [`KernelKey::Route`]. `None` for the kernels with
    /// grids of their own (map, matmuls, attention).
    pub fn items_per_workgroup(&self) -> Option<u32> {
        match self {
            KernelKey::RmsNorm(_) | KernelKey::Route => Some(1),
            KernelKey::Act { .. }
            | KernelKey::Sum
            | KernelKey::Embed { .. }
            | KernelKey::Eltwise(_)
            | KernelKey::Rope { .. }
            | KernelKey::KvStore { .. } => Some(self.workgroup_size()),
            KernelKey::Map { .. }
            | KernelKey::MmId(_)
            | KernelKey::MvId { .. }
            | KernelKey::AttnPrefill { .. }
            | KernelKey::AttnDecode { .. }
            | KernelKey::AttnCombine { .. } => None,
        }
    }

    /// Query rows (token, query head) of one key/value head that one attention workgroup
    /// computes: the grid covers `ceil(T * n_heads / n_kv_heads / rows)` row blocks per
    /// key/value head.
    pub fn attention_rows(&self) -> Option<u32> {
        match self {
            KernelKey::AttnPrefill { head_dim, .. } => Some(attn_geometry(*head_dim).rows),
            KernelKey::AttnDecode { .. } => Some(DECODE_ROWS),
            _ => None,
        }
    }

    /// Positions one decode-attention workgroup scores (`CHUNK`): the grid's x extent, and
    /// the number of partials per row, is `ceil((pos0 + T) / CHUNK)`.
    pub fn decode_chunk(&self) -> Option<u32> {
        match self {
            KernelKey::AttnDecode { .. } => Some(DECODE_CHUNK),
            _ => None,
        }
    }

    /// Output rows one workgroup computes (`ROWS_PER_WG`); `None` for element-wise ops.
    pub fn rows_per_workgroup(&self) -> Option<u32> {
        match self {
            KernelKey::MmId(m) => Some(match m.path.fragment() {
                None => REG_ROWS,
                Some(_) => coop_geometry(m.tile).rows,
            }),
            KernelKey::MvId { .. } => Some(MV_ROWS),
            _ => None,
        }
    }

    /// Tokens one workgroup computes (`TILE_N`): the tile width of a map or matmul.
    pub fn tokens_per_workgroup(&self) -> Option<u32> {
        match self {
            KernelKey::Map { tile } | KernelKey::MmId(MatmulKey { tile, .. }) => {
                Some(tile.tokens() as u32)
            }
            KernelKey::MvId { .. } => Some(1),
            _ => None,
        }
    }

    /// The token-tile width of a map or grouped matmul.
    pub fn tile(&self) -> Option<TileWidth> {
        match self {
            KernelKey::Map { tile } | KernelKey::MmId(MatmulKey { tile, .. }) => Some(*tile),
            _ => None,
        }
    }

    /// The workgroups of a mat-vec over `rows` weight rows and `n_pairs` pairs of `n_used`
    /// experts per token: `(row tiles, pairs)`, or `(row tiles, tokens)` for
    /// [`MvEpilogue::Sum`].
    pub fn mat_vec_grid(&self, rows: u32, n_pairs: u32, n_used: u32) -> Option<(u32, u32)> {
        let KernelKey::MvId { epilogue, .. } = self else {
            return None;
        };
        let groups = match epilogue {
            MvEpilogue::Rows | MvEpilogue::Glu { .. } => n_pairs,
            MvEpilogue::Sum => n_pairs / n_used.max(1),
        };
        Some((self.row_groups(rows)?, groups))
    }

    /// Workgroups along y for `rows` output rows: `ceil(rows / ROWS_PER_WG)`.
    pub fn row_groups(&self, rows: u32) -> Option<u32> {
        self.rows_per_workgroup().map(|r| rows.div_ceil(r))
    }

    /// The weight type read, if any.
    pub fn weight(&self) -> Option<WeightType> {
        match self {
            KernelKey::MmId(m) => Some(m.weight),
            KernelKey::MvId { weight, .. } | KernelKey::Embed { weight } => Some(*weight),
            _ => None,
        }
    }

    /// The matmul path (`Reg` for everything that is not a cooperative matmul).
    pub fn path(&self) -> Path {
        match self {
            KernelKey::MmId(m) => m.path,
            _ => Path::Reg,
        }
    }

    /// Whether the shader needs `SHADER_F16` (`enable f16;`).
    pub fn needs_f16(&self) -> bool {
        self.path() != Path::Reg
    }

    /// Whether the shader needs `SUBGROUP` (subgroup builtins and operations).
    pub fn needs_subgroups(&self) -> bool {
        self.path() != Path::Reg
            || matches!(
                self,
                KernelKey::AttnDecode {
                    subgroups: true,
                    ..
                }
            )
    }

    /// Whether the shader needs `EXPERIMENTAL_COOPERATIVE_MATRIX`.
    pub fn needs_coop(&self) -> bool {
        self.path() != Path::Reg
    }

    /// The template under `wgsl/` holding the entry points.
    pub fn template(&self) -> &'static str {
        match self {
            KernelKey::Map { .. } => "map.wgsl",
            KernelKey::MmId(m) if m.path == Path::Reg => "mm_id.wgsl",
            KernelKey::MmId(_) => "mm_id_coop.wgsl",
            KernelKey::MvId { .. } => "mv_id.wgsl",
            KernelKey::Act { .. } => "act.wgsl",
            KernelKey::Sum => "sum.wgsl",
            KernelKey::Embed { .. } => "embed.wgsl",
            KernelKey::RmsNorm(_) => "rms_norm.wgsl",
            KernelKey::Eltwise(_) => "eltwise.wgsl",
            KernelKey::Rope { .. } => "rope.wgsl",
            KernelKey::KvStore { .. } => "kv_store.wgsl",
            KernelKey::AttnPrefill { .. } => "attn_prefill.wgsl",
            KernelKey::AttnDecode { .. } => "attn_decode.wgsl",
            KernelKey::AttnCombine { .. } => "attn_combine.wgsl",
            KernelKey::Route => "route.wgsl",
        }
    }

    /// Entry points of the module, in dispatch order.
    pub fn entry_points(&self) -> &'static [&'static str] {
        match self {
            KernelKey::Map { .. } => &["count", "scan", "fill"],
            _ => &["main"],
        }
    }

    /// Fragments prepended before the template, in order: `grid.wgsl` first for every kernel on
    /// the folded 1-D grid.
    pub fn fragments(&self) -> Vec<&'static str> {
        let act = |a: ActType| match a {
            ActType::F32 => "act/f32.wgsl",
            ActType::F16 => "act/f16.wgsl",
        };
        let kv = |a: ActType| match a {
            ActType::F32 => "kv/f32.wgsl",
            ActType::F16 => "kv/f16.wgsl",
        };
        let mut list = match self {
            KernelKey::MmId(m) => {
                let coop: &[&str] = match m.path {
                    Path::Reg => &[],
                    Path::Coop16 => &["coop/16.wgsl"],
                    Path::Coop8 => &["coop/8.wgsl"],
                };
                [m.weight.fragments(), &[act(m.act)], coop, &["matmul.wgsl"]].concat()
            }
            KernelKey::MvId {
                weight,
                act: a,
                epilogue,
            } => {
                let epilogue: &[&str] = match epilogue {
                    MvEpilogue::Rows => &["mv/per_pair.wgsl", "mv/rows.wgsl"],
                    MvEpilogue::Glu { mid: ActType::F32 } => &[
                        "mid/f32.wgsl",
                        "glu/swiglu.wgsl",
                        "mv/per_pair.wgsl",
                        "mv/glu.wgsl",
                    ],
                    MvEpilogue::Glu { mid: ActType::F16 } => &[
                        "mid/f16.wgsl",
                        "glu/swiglu.wgsl",
                        "mv/per_pair.wgsl",
                        "mv/glu.wgsl",
                    ],
                    MvEpilogue::Sum => &["mv/sum.wgsl"],
                };
                [weight.fragments(), &[act(*a), "matmul.wgsl"], epilogue].concat()
            }
            KernelKey::Act { mid, interleaved } => vec![
                match mid {
                    ActType::F32 => "mid/f32.wgsl",
                    ActType::F16 => "mid/f16.wgsl",
                },
                "glu/swiglu.wgsl",
                if *interleaved {
                    "glu/interleaved.wgsl"
                } else {
                    "glu/separate.wgsl"
                },
            ],
            KernelKey::Embed { weight } => weight.fragments().to_vec(),
            KernelKey::KvStore { kv: ty } => vec![kv(*ty)],
            KernelKey::AttnPrefill { kv: ty, .. } => vec!["attn/common.wgsl", kv(*ty)],
            KernelKey::AttnDecode {
                kv: ty, subgroups, ..
            } => vec![
                "attn/common.wgsl",
                kv(*ty),
                if *subgroups {
                    "reduce/subgroup.wgsl"
                } else {
                    "reduce/workgroup.wgsl"
                },
            ],
            KernelKey::AttnCombine { .. } => vec!["attn/common.wgsl"],
            KernelKey::RmsNorm(NormFlavour::Plain) => vec!["norm/plain.wgsl", "norm/out.wgsl"],
            KernelKey::RmsNorm(NormFlavour::Residual) => {
                vec!["norm/residual.wgsl", "norm/out.wgsl"]
            }
            KernelKey::RmsNorm(NormFlavour::Pair) => vec!["norm/pair.wgsl"],
            KernelKey::Rope { pair } => vec![if *pair {
                "rope/pair.wgsl"
            } else {
                "rope/one.wgsl"
            }],
            KernelKey::Sum | KernelKey::Eltwise(_) | KernelKey::Route | KernelKey::Map { .. } => {
                vec![]
            }
        };
        if self.items_per_workgroup().is_some() {
            list.insert(0, "grid.wgsl");
        }
        list
    }

    /// Name of the uniform parameter struct (see [`crate::params`]).
    pub fn params_struct(&self) -> &'static str {
        match self {
            KernelKey::Map { .. } => "MapParams",
            KernelKey::MmId(_) | KernelKey::MvId { .. } => "MatmulParams",
            KernelKey::Act { .. } => "ActParams",
            KernelKey::Sum => "SumParams",
            KernelKey::Embed { .. } => "EmbedParams",
            KernelKey::RmsNorm(_) => "NormParams",
            KernelKey::Eltwise(_) => "EltParams",
            KernelKey::Rope { .. } => "RotaryParams",
            KernelKey::KvStore { .. } => "KvParams",
            KernelKey::AttnPrefill { .. }
            | KernelKey::AttnDecode { .. }
            | KernelKey::AttnCombine { .. } => "AttnParams",
            KernelKey::Route => "RouteParams",
        }
    }

    /// The group-0 bindings the shader declares; the host builds its layout from this list and
    /// validation checks the WGSL against it.
    pub fn bindings(&self) -> Vec<Binding> {
        use BindingKind::*;
        let mut list = match self {
            KernelKey::Map { .. } => vec![
                b(0, "params", Uniform),
                b(1, "ids", ReadOnly),
                b(2, "chunk_counts", ReadWrite),
                b(3, "ranks", ReadWrite),
                b(4, "experts", ReadWrite),
                b(5, "list", ReadWrite),
                b(6, "items", ReadWrite),
                b(7, "dispatch", ReadWrite),
            ],
            KernelKey::MmId(_) => vec![
                b(0, "params", Uniform),
                b(1, "weights", ReadOnly),
                b(2, "act", ReadOnly),
                b(3, "experts", ReadOnly),
                b(4, "list", ReadOnly),
                b(5, "items", ReadOnly),
                b(6, "y", ReadWrite),
            ],
            KernelKey::MvId { epilogue, .. } => {
                let mut list = vec![
                    b(0, "params", Uniform),
                    b(1, "weights", ReadOnly),
                    b(2, "act", ReadOnly),
                    b(3, "ids", ReadOnly),
                ];
                match epilogue {
                    MvEpilogue::Rows => list.push(b(4, "y", ReadWrite)),
                    MvEpilogue::Glu { .. } => {
                        list.push(b(4, "mid", ReadWrite));
                        list.push(b(5, "route", ReadOnly));
                    }
                    MvEpilogue::Sum => list.push(b(4, "out", ReadWrite)),
                }
                list
            }
            KernelKey::Act {
                interleaved: false, ..
            } => vec![
                b(0, "params", Uniform),
                b(1, "gate", ReadOnly),
                b(2, "up", ReadOnly),
                b(3, "route", ReadOnly),
                b(4, "mid", ReadWrite),
            ],
            KernelKey::Act {
                interleaved: true, ..
            } => vec![
                b(0, "params", Uniform),
                b(1, "gate_up", ReadOnly),
                b(3, "route", ReadOnly),
                b(4, "mid", ReadWrite),
            ],
            KernelKey::Sum => vec![
                b(0, "params", Uniform),
                b(1, "y", ReadOnly),
                b(2, "out", ReadWrite),
            ],
            KernelKey::Embed { .. } => vec![
                b(0, "params", Uniform),
                b(1, "weights", ReadOnly),
                b(2, "ids", ReadOnly),
                b(3, "out", ReadWrite),
            ],
            KernelKey::RmsNorm(NormFlavour::Plain) => vec![
                b(0, "params", Uniform),
                b(1, "x", ReadOnly),
                b(2, "w", ReadOnly),
                b(3, "out", ReadWrite),
            ],
            KernelKey::RmsNorm(NormFlavour::Residual) => vec![
                b(0, "params", Uniform),
                b(1, "x", ReadWrite),
                b(2, "w", ReadOnly),
                b(3, "out", ReadWrite),
                b(4, "y", ReadOnly),
            ],
            KernelKey::RmsNorm(NormFlavour::Pair) => vec![
                b(0, "params", Uniform),
                b(1, "x", ReadOnly),
                b(2, "w", ReadOnly),
                b(3, "out", ReadWrite),
                b(4, "x2", ReadOnly),
                b(5, "w2", ReadOnly),
                b(6, "out2", ReadWrite),
            ],
            KernelKey::Eltwise(_) => vec![
                b(0, "params", Uniform),
                b(1, "src", ReadOnly),
                b(2, "dst", ReadWrite),
            ],
            KernelKey::Rope { pair: false } => vec![
                b(0, "params", Uniform),
                b(1, "angles", ReadOnly),
                b(2, "x", ReadWrite),
            ],
            KernelKey::Rope { pair: true } => vec![
                b(0, "params", Uniform),
                b(1, "angles", ReadOnly),
                b(2, "x", ReadWrite),
                b(3, "x2", ReadWrite),
            ],
            KernelKey::KvStore { .. } => vec![
                b(0, "params", Uniform),
                b(1, "k", ReadOnly),
                b(2, "v", ReadOnly),
                b(3, "k_cache", ReadWrite),
                b(4, "v_cache", ReadWrite),
            ],
            KernelKey::AttnPrefill { .. } => vec![
                b(0, "params", Uniform),
                b(1, "q", ReadOnly),
                b(2, "k_cache", ReadOnly),
                b(3, "v_cache", ReadOnly),
                b(4, "out", ReadWrite),
            ],
            KernelKey::AttnDecode { .. } => vec![
                b(0, "params", Uniform),
                b(1, "q", ReadOnly),
                b(2, "k_cache", ReadOnly),
                b(3, "v_cache", ReadOnly),
                b(4, "part_acc", ReadWrite),
                b(5, "part_ml", ReadWrite),
            ],
            KernelKey::AttnCombine { .. } => vec![
                b(0, "params", Uniform),
                b(1, "part_acc", ReadOnly),
                b(2, "part_ml", ReadOnly),
                b(3, "out", ReadWrite),
            ],
            KernelKey::Route => vec![
                b(0, "params", Uniform),
                b(1, "logits", ReadOnly),
                b(2, "ids", ReadWrite),
                b(3, "weights", ReadWrite),
            ],
        };
        if self.weight().is_some_and(WeightType::uses_grid) {
            list.push(b(GRID_BINDING, "iq2xxs_grid", ReadOnly));
        }
        list
    }

    /// The named constants the generator prepends: the key's geometry, in one place.
    pub fn consts(&self) -> Vec<(&'static str, u32)> {
        let mut c = vec![("WG_SIZE", self.workgroup_size())];
        if let Some(n) = self.tokens_per_workgroup() {
            c.push(("TILE_N", n));
        }
        if let Some(r) = self.rows_per_workgroup() {
            c.push(("ROWS_PER_WG", r));
        }
        if let Some(w) = self.weight() {
            c.push(("QK", w.block_values()));
            c.push(("BLOCK_WORDS", w.block_words()));
        }
        match self {
            KernelKey::Map { .. } => {
                c.push(("DISPATCH_SLOTS", MAP_DISPATCH_SLOTS as u32));
            }
            KernelKey::MmId(m) => {
                let tile = m.tile.tokens() as u32;
                match m.path.fragment() {
                    None => {
                        let tokens_per_thread = reg_tokens_per_thread(m.tile);
                        c.push(("K_STEP", REG_K_STEP));
                        c.push(("ROW_THREADS", ROW_THREADS));
                        c.push(("TOKEN_THREADS", tile / tokens_per_thread));
                        c.push(("ROWS_PER_THREAD", REG_ROWS / ROW_THREADS));
                        c.push(("TOKENS_PER_THREAD", tokens_per_thread));
                    }
                    Some(frag) => {
                        let g = coop_geometry(m.tile);
                        let slots = g.threads / COOP_MAX_SUBGROUP_SIZE;
                        c.push(("K_STEP", g.k_step));
                        c.push(("STAGES", g.stages));
                        c.push(("FRAG", frag));
                        c.push(("SLOTS", slots));
                        c.push(("SLOT_COLS", g.slot_cols));
                        c.push(("SLOT_ROW_FRAGS", g.rows / frag / (slots / g.slot_cols)));
                        c.push(("SLOT_TOKEN_FRAGS", tile / frag / g.slot_cols));
                    }
                }
            }
            KernelKey::MvId { .. } => {
                c.push(("LANES", WG_SIZE / MV_ROWS));
            }
            KernelKey::Eltwise(op) => c.push(("OP", op.code())),
            KernelKey::AttnPrefill { head_dim, .. } => {
                let hd = *head_dim;
                let g = attn_geometry(hd);
                c.push(("HEAD_DIM", hd));
                c.push(("Q_ROWS", g.rows));
                c.push(("KV_TILE", g.kv_tile));
                // Loads of eight values per thread per tile.
                c.push(("TILE_LOADS", (g.kv_tile * hd / 8).div_ceil(g.threads)));
                c.push(("ROWS_PER_THREAD", g.rows_per_thread));
                c.push(("ROW_THREADS", ATTN_ROW_THREADS));
                c.push(("COLS_PER_THREAD", g.kv_tile / ATTN_ROW_THREADS));
                c.push(("DIMS_PER_THREAD", hd / ATTN_ROW_THREADS));
            }
            KernelKey::AttnDecode { head_dim, .. } => {
                let octs = head_dim / 8;
                let row_groups = (DECODE_CHUNK / octs).min(DECODE_ROWS);
                c.push(("HEAD_DIM", *head_dim));
                c.push(("ROWS", DECODE_ROWS));
                c.push(("ROW_GROUPS", row_groups));
                c.push(("ROWS_PER_THREAD", DECODE_ROWS.div_ceil(row_groups)));
            }
            KernelKey::AttnCombine { head_dim } => c.push(("HEAD_DIM", *head_dim)),
            _ => {}
        }
        c
    }
}

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

impl std::fmt::Display for KernelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelKey::Map { tile } => write!(f, "map_t{tile}"),
            KernelKey::MmId(m) => write!(
                f,
                "mm_id_{}_{}_t{}_{}",
                m.weight.short_name(),
                m.act.name(),
                m.tile,
                m.path.name()
            ),
            KernelKey::MvId {
                weight,
                act,
                epilogue,
            } => {
                let (weight, act) = (weight.short_name(), act.name());
                match epilogue {
                    MvEpilogue::Rows => write!(f, "mv_id_{weight}_{act}"),
                    MvEpilogue::Glu { mid } => write!(f, "mv_glu_{weight}_{act}_{}", mid.name()),
                    MvEpilogue::Sum => write!(f, "mv_sum_{weight}_{act}"),
                }
            }
            KernelKey::Act { mid, interleaved } => {
                let input = if *interleaved { "interleaved_" } else { "" };
                write!(f, "act_{input}{}", mid.name())
            }
            KernelKey::Sum => f.write_str("sum"),
            KernelKey::Embed { weight } => write!(f, "embed_{}", weight.short_name()),
            KernelKey::RmsNorm(NormFlavour::Plain) => f.write_str("rms_norm"),
            KernelKey::RmsNorm(NormFlavour::Residual) => f.write_str("rms_norm_residual"),
            KernelKey::RmsNorm(NormFlavour::Pair) => f.write_str("rms_norm_pair"),
            KernelKey::Eltwise(op) => f.write_str(op.name()),
            KernelKey::Rope { pair: false } => f.write_str("rope"),
            KernelKey::Rope { pair: true } => f.write_str("rope_pair"),
            KernelKey::KvStore { kv } => write!(f, "kv_store_{}", kv.name()),
            KernelKey::AttnPrefill { head_dim, kv } => {
                write!(f, "attn_prefill_h{head_dim}_{}", kv.name())
            }
            KernelKey::AttnDecode {
                head_dim,
                kv,
                subgroups,
            } => {
                let reduce = if *subgroups { "sg" } else { "wg" };
                write!(f, "attn_decode_h{head_dim}_{}_{reduce}", kv.name())
            }
            KernelKey::AttnCombine { head_dim } => write!(f, "attn_combine_h{head_dim}"),
            KernelKey::Route => f.write_str("route"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_readable() {
        let keys = KernelKey::all();
        let names: HashSet<String> = keys.iter().map(|k| k.to_string()).collect();
        assert_eq!(names.len(), keys.len());
        let key = KernelKey::MmId(MatmulKey {
            weight: WeightType::Q4_K,
            act: ActType::F32,
            tile: TileWidth::T64,
            path: Path::Reg,
        });
        assert_eq!(key.to_string(), "mm_id_q4k_f32_t64_reg");
        assert!(names.contains("map_t128"));
        assert!(names.contains("mv_id_iq2xxs_f16"));
        assert!(names.contains("mv_glu_q4k_f32_f16"));
        assert!(names.contains("mv_sum_q4k_f16"));
        assert!(names.contains("act_interleaved_f32"));
        assert!(names.contains("mm_id_q8_0_f16_t32_coop8"));
        assert!(names.contains("embed_q5_1"));
        assert!(names.contains("attn_prefill_h128_f16"));
        assert!(names.contains("attn_decode_h64_f32_sg"));
        assert!(names.contains("attn_decode_h64_f16_wg"));
        assert!(names.contains("attn_combine_h256"));
        assert!(names.contains("mul_sigmoid_row"));
    }

    #[test]
    fn attention_threads_cover_their_tiles() {
        for key in KernelKey::all() {
            let c: std::collections::HashMap<_, _> = key.consts().into_iter().collect();
            match key {
                KernelKey::AttnPrefill { head_dim, .. } => {
                    let (rows, tile, wg) = (c["Q_ROWS"], c["KV_TILE"], c["WG_SIZE"]);
                    assert_eq!(key.attention_rows(), Some(rows));
                    assert!(c["TILE_LOADS"] * wg >= tile * head_dim / 8, "{key}");
                    assert_eq!(c["COLS_PER_THREAD"] * c["ROW_THREADS"], tile, "{key}");
                    let groups = rows / c["ROWS_PER_THREAD"];
                    assert_eq!(groups * c["ROW_THREADS"], wg, "{key}");
                    assert_eq!(c["DIMS_PER_THREAD"] * c["ROW_THREADS"], head_dim);
                }
                KernelKey::AttnDecode { head_dim, .. } => {
                    assert_eq!(key.decode_chunk(), Some(c["WG_SIZE"]));
                    assert!(c["ROW_GROUPS"] * head_dim / 8 <= c["WG_SIZE"], "{key}");
                    assert!(c["ROW_GROUPS"] * c["ROWS_PER_THREAD"] >= c["ROWS"], "{key}");
                }
                KernelKey::AttnCombine { head_dim } => {
                    assert!(head_dim / 4 <= c["WG_SIZE"], "{key}");
                }
                _ => {}
            }
        }
    }

    #[test]
    fn register_tile_accumulators_cover_the_whole_tile() {
        // The seed's bug: wide tiles kept 32-token accumulators. Every thread's accumulators
        // times the threads must equal the tile, for every width.
        for key in KernelKey::all() {
            let KernelKey::MmId(m) = key else { continue };
            let c: std::collections::HashMap<_, _> = key.consts().into_iter().collect();
            let tile = m.tile.tokens() as u32;
            if m.path == Path::Reg {
                assert_eq!(c["TOKENS_PER_THREAD"] * c["TOKEN_THREADS"], tile, "{key}");
                assert_eq!(c["ROWS_PER_THREAD"] * c["ROW_THREADS"], c["ROWS_PER_WG"]);
                assert_eq!(c["ROW_THREADS"] * c["TOKEN_THREADS"], c["WG_SIZE"]);
            } else {
                let frag = c["FRAG"];
                let per_slot = c["SLOT_ROW_FRAGS"] * c["SLOT_TOKEN_FRAGS"] * frag * frag;
                assert_eq!(c["SLOTS"] * per_slot, tile * c["ROWS_PER_WG"], "{key}");
                assert_eq!(c["SLOT_TOKEN_FRAGS"] * c["SLOT_COLS"] * frag, tile, "{key}");
            }
        }
    }
}
