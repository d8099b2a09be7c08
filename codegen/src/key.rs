//! [`KernelKey`]: one value names one specialization. Its `Display` is the file name, the
//! pipeline label, the bench row and the test name: the template's stem, then what specializes
//! it (`mm_id_q4k_f32_t64_reg`, `attn_decode_h128_f16_sg`, `eltwise_add_row`). Its geometry
//! methods size the dispatch and are written into the WGSL as named `const`s by the generator,
//! so host and shader can never disagree on a tile size. What each key says comes from its
//! family (`crate::family`); the rules every family shares are here.

use crate::family::attention::{self, HEAD_DIMS};
use crate::family::deepseek4::Deepseek4Step;
use crate::family::delta_net::{self, DELTA_HEAD_DIMS, DeltaStep};
use crate::family::eltwise::EltOp;
use crate::family::hyper::HyperStep;
use crate::family::matmul::{self, MatmulKey, MvEpilogue, Path};
use crate::family::moe;
use crate::family::norm;
use crate::family::pool;
use crate::family::{Family, embed, route};
use crate::params::Layout;
use crate::tile::TileWidth;
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
        /// Whether each activation row is RMS-normed (times a weight vector) as it is read:
        /// the norm before a layer's projections folded into them (f32 activations, plain rows
        /// and `mv_glu` only).
        norm: bool,
        /// Whether the activations are quantized to int8 per 32 values as they are staged and
        /// multiplied by integer dot products (`wgsl/mv/x_int8.wgsl`; the weight types with a
        /// [`WeightType::int8_dot_fragments`]), rather than staged as f32.
        int8: bool,
        /// Whether each expert's gate and up rows (`mv_glu`) or down rows (`mv_sum`, times the
        /// route weight) get its biases (gpt-oss); plain rows have none.
        biased: bool,
    },
    /// `act(gate, up) * route_weight`, written as `mid`.
    Act {
        /// Storage type of `mid`.
        mid: ActType,
        /// Whether gate and up are one `(pairs, 2F)` matrix of interleaved columns (the output
        /// of one matmul over a gate/up tensor of interleaved rows) rather than two.
        interleaved: bool,
        /// Whether each expert's gate and up outputs get its biases first (gpt-oss).
        biased: bool,
    },
    /// `out[t] = sum_k y[t * K + k]`.
    Sum {
        /// Whether each pair adds its expert's down bias times its route weight (gpt-oss).
        biased: bool,
    },
    /// Rows of a weight table, dequantized (token embedding).
    Embed {
        /// Storage type of the table.
        weight: WeightType,
    },
    /// RMS norm of every group of values (a row or a head) times a weight vector.
    RmsNorm,
    /// An in-place element-wise op.
    Eltwise(EltOp),
    /// A layer's `qkv` rows made ready for attention: per-head q/k norms, rotary embedding
    /// (angles from a table), q written out, keys and values appended to the cache.
    AttnInput {
        /// Storage type of the cache.
        kv: ActType,
        /// Whether q and k are RMS-normed per head first (qwen3).
        norm: bool,
        /// Whether the tokens are of different sequences, each at its own position of its own
        /// region of one cache arena (`wgsl/attn/seq_table.wgsl`).
        seq_table: bool,
    },
    /// Causal flash attention of a batch of queries over the cache.
    AttnPrefill {
        /// Width of one head (one of [`HEAD_DIMS`]).
        head_dim: u32,
        /// Storage type of the cache.
        kv: ActType,
        /// Whether each query head's softmax holds a learned sink (gpt-oss).
        sinks: bool,
    },
    /// Attention of a few queries split over the keys (decode), first pass: partial softmaxes
    /// per chunk of positions.
    AttnDecode {
        /// Width of one head (one of [`HEAD_DIMS`]).
        head_dim: u32,
        /// Storage type of the cache.
        kv: ActType,
        /// Whether the tokens are of different sequences, each over its own region of one
        /// cache arena (`wgsl/attn/seq_table.wgsl`).
        seq_table: bool,
    },
    /// Decode attention, second pass: merges the partial softmaxes of each query row.
    AttnCombine {
        /// Width of one head (one of [`HEAD_DIMS`]).
        head_dim: u32,
        /// Whether each query head's softmax holds a learned sink (gpt-oss).
        sinks: bool,
    },
    /// Router: top-K experts of softmax or sigmoid gates per token.
    Route,
    /// A step of an mHC hyper-connection (deepseek4).
    Hyper(HyperStep),
    /// A compressor's pooling and norm (deepseek4).
    CompressorPool,
    /// The causal depthwise convolution and SiLU of a Gated DeltaNet layer (qwen35moe), its
    /// tail carried across calls.
    ConvSilu,
    /// A step of the gated delta rule of a Gated DeltaNet layer (qwen35moe) over each value
    /// head's state, with the RMS norm gated by SiLU(z).
    DeltaRule {
        /// Width of a head (one of [`DELTA_HEAD_DIMS`]).
        head_dim: u32,
        /// The recurrent kernel, or a step of the chunked form.
        step: DeltaStep,
    },
    /// A step of deepseek4's attention (rotation, attention, indexer).
    Deepseek4(Deepseek4Step),
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
                let int8: &[bool] = match weight.int8_dot_fragments() {
                    Some(_) => &[false, true],
                    None => &[false],
                };
                for epilogue in MvEpilogue::ALL {
                    let norms: &[bool] = if act == ActType::F32 && epilogue != MvEpilogue::Sum {
                        &[false, true]
                    } else {
                        &[false]
                    };
                    let biases: &[bool] = match epilogue {
                        MvEpilogue::Rows => &[false],
                        _ => &[false, true],
                    };
                    for &norm in norms {
                        for &int8 in int8 {
                            for &biased in biases {
                                keys.push(KernelKey::MvId {
                                    weight,
                                    act,
                                    epilogue,
                                    norm,
                                    int8,
                                    biased,
                                });
                            }
                        }
                    }
                }
            }
        }
        for mid in ActType::ALL {
            for interleaved in [false, true] {
                for biased in [false, true] {
                    keys.push(KernelKey::Act {
                        mid,
                        interleaved,
                        biased,
                    });
                }
            }
        }
        for biased in [false, true] {
            keys.push(KernelKey::Sum { biased });
        }
        for weight in WeightType::ALL {
            keys.push(KernelKey::Embed { weight });
        }
        keys.push(KernelKey::RmsNorm);
        for op in EltOp::ALL {
            keys.push(KernelKey::Eltwise(op));
        }
        for kv in ActType::ALL {
            for norm in [false, true] {
                for seq_table in [false, true] {
                    keys.push(KernelKey::AttnInput {
                        kv,
                        norm,
                        seq_table,
                    });
                }
            }
            for head_dim in HEAD_DIMS {
                for sinks in [false, true] {
                    keys.push(KernelKey::AttnPrefill {
                        head_dim,
                        kv,
                        sinks,
                    });
                }
                for seq_table in [false, true] {
                    keys.push(KernelKey::AttnDecode {
                        head_dim,
                        kv,
                        seq_table,
                    });
                }
            }
        }
        for head_dim in HEAD_DIMS {
            for sinks in [false, true] {
                keys.push(KernelKey::AttnCombine { head_dim, sinks });
            }
        }
        keys.push(KernelKey::Route);
        keys.extend([HyperStep::Pre, HyperStep::Post, HyperStep::Head].map(KernelKey::Hyper));
        keys.push(KernelKey::CompressorPool);
        keys.push(KernelKey::ConvSilu);
        for head_dim in DELTA_HEAD_DIMS {
            for step in DeltaStep::ALL {
                keys.push(KernelKey::DeltaRule { head_dim, step });
            }
        }
        keys.extend(Deepseek4Step::ALL.map(KernelKey::Deepseek4));
        keys
    }

    /// The key's family, asked through `f`: the one place a key is taken apart.
    fn with_family<R>(&self, f: impl FnOnce(&dyn Family) -> R) -> R {
        match *self {
            KernelKey::Map { tile } => f(&moe::Map { tile }),
            KernelKey::MmId(key) => f(&key),
            KernelKey::MvId {
                weight,
                act,
                epilogue,
                norm,
                int8,
                biased,
            } => f(&matmul::MvId {
                weight,
                act,
                epilogue,
                norm,
                int8,
                biased,
            }),
            KernelKey::Act {
                mid,
                interleaved,
                biased,
            } => f(&moe::Act {
                mid,
                interleaved,
                biased,
            }),
            KernelKey::Sum { biased } => f(&moe::Sum { biased }),
            KernelKey::Embed { weight } => f(&embed::Embed { weight }),
            KernelKey::RmsNorm => f(&norm::RmsNorm),
            KernelKey::Eltwise(op) => f(&op),
            KernelKey::AttnInput {
                kv,
                norm,
                seq_table,
            } => f(&attention::AttnInput {
                kv,
                norm,
                seq_table,
            }),
            KernelKey::AttnPrefill {
                head_dim,
                kv,
                sinks,
            } => f(&attention::Prefill {
                head_dim,
                kv,
                sinks,
            }),
            KernelKey::AttnDecode {
                head_dim,
                kv,
                seq_table,
            } => f(&attention::Decode {
                head_dim,
                kv,
                seq_table,
            }),
            KernelKey::AttnCombine { head_dim, sinks } => {
                f(&attention::Combine { head_dim, sinks })
            }
            KernelKey::Route => f(&route::Route),
            KernelKey::Hyper(step) => f(&step),
            KernelKey::CompressorPool => f(&pool::CompressorPool),
            KernelKey::ConvSilu => f(&delta_net::ConvSilu),
            KernelKey::DeltaRule { head_dim, step } => f(&delta_net::DeltaRule { head_dim, step }),
            KernelKey::Deepseek4(step) => f(&step),
        }
    }

    /// Threads per workgroup (`WG_SIZE`).
    pub fn workgroup_size(&self) -> u32 {
        self.with_family(|k| k.workgroup_size())
    }

    /// Items one workgroup covers on the folded 1-D grid of `wgsl/grid.wgsl`: one per thread,
    /// but a whole group of values for [`KernelKey::RmsNorm`] and a token's logits for
    /// [`KernelKey::Route`]. `None` for the kernels with grids of their own (map, matmuls,
    /// attention).
    pub fn items_per_workgroup(&self) -> Option<u32> {
        self.with_family(|k| k.items_per_workgroup())
    }

    /// Query rows (token, query head) of one key/value head that one attention workgroup
    /// computes: the grid covers `ceil(T * n_heads / n_kv_heads / rows)` row blocks per
    /// key/value head.
    pub fn attention_rows(&self) -> Option<u32> {
        self.with_family(|k| k.attention_rows())
    }

    /// Positions one decode-attention workgroup scores (`CHUNK`): the grid's x extent, and
    /// the number of partials per row, is `ceil((pos0 + T) / CHUNK)`.
    pub fn decode_chunk(&self) -> Option<u32> {
        self.with_family(|k| k.decode_chunk())
    }

    /// Output rows one workgroup computes (`ROWS_PER_WG`); `None` for element-wise ops.
    pub fn rows_per_workgroup(&self) -> Option<u32> {
        self.with_family(|k| k.rows_per_workgroup())
    }

    /// Tokens one workgroup computes (`TILE_N`): the tile width of a map or matmul.
    pub fn tokens_per_workgroup(&self) -> Option<u32> {
        self.with_family(|k| k.tokens_per_workgroup())
    }

    /// The token-tile width of a map or grouped matmul.
    pub fn tile(&self) -> Option<TileWidth> {
        self.with_family(|k| k.tile())
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
        self.with_family(|k| k.weight())
    }

    /// The matmul path (`Reg` for everything that is not a cooperative matmul).
    pub fn path(&self) -> Path {
        self.with_family(|k| k.path())
    }

    /// Whether the shader needs `SHADER_F16` (`enable f16;`).
    pub fn needs_f16(&self) -> bool {
        self.path() != Path::Reg
    }

    /// Whether the shader needs `SUBGROUP` (subgroup builtins and operations).
    pub fn needs_subgroups(&self) -> bool {
        self.with_family(|k| k.needs_subgroups())
    }

    /// Whether the shader needs `EXPERIMENTAL_COOPERATIVE_MATRIX`.
    pub fn needs_coop(&self) -> bool {
        self.path() != Path::Reg
    }

    /// The template under `wgsl/` holding the entry points.
    pub fn template(&self) -> &'static str {
        self.with_family(|k| k.template())
    }

    /// Entry points of the module, in dispatch order.
    pub fn entry_points(&self) -> &'static [&'static str] {
        self.with_family(|k| k.entry_points())
    }

    /// Fragments prepended before the template, in order: `grid.wgsl` first for every kernel on
    /// the folded 1-D grid.
    pub fn fragments(&self) -> Vec<&'static str> {
        let mut list = self.with_family(|k| k.fragments());
        if self.items_per_workgroup().is_some() {
            list.insert(0, "grid.wgsl");
        }
        list
    }

    /// The uniform parameter struct (see [`crate::params`]): the generator writes its WGSL
    /// declaration into the shader, which binds it as `params`.
    pub fn params(&self) -> Layout {
        self.with_family(|k| k.params())
    }

    /// The group-0 bindings the shader declares, by index; the host builds its layout from
    /// this list and validation checks the WGSL against it.
    pub fn bindings(&self) -> Vec<Binding> {
        let mut list = self.with_family(|k| k.bindings());
        if self.weight().is_some_and(WeightType::uses_grid) {
            list.push(Binding {
                index: GRID_BINDING,
                name: "iq2xxs_grid",
                kind: BindingKind::ReadOnly,
            });
        }
        list.sort_by_key(|b| b.index);
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
        c.extend(self.with_family(|k| k.consts()));
        c
    }
}

impl std::fmt::Display for KernelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with_family(|k| k.write_name(f))
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
        assert!(names.contains("attn_decode_h64_f32"));
        assert!(names.contains("attn_decode_h256_f16"));
        assert!(names.contains("attn_combine_h256"));
        assert!(names.contains("attn_prefill_sinks_h64_f16"));
        assert!(names.contains("attn_combine_sinks_h64"));
        assert!(names.contains("act_biased_interleaved_f16"));
        assert!(names.contains("sum_biased"));
        assert!(names.contains("eltwise_mul_sigmoid_row"));
        assert!(names.contains("hc_pre"));
        assert!(names.contains("hc_post"));
        assert!(names.contains("hc_head"));
        assert!(names.contains("compressor_pool"));
        assert!(names.contains("conv_silu"));
        assert!(names.contains("delta_rule_h128"));
        assert!(names.contains("delta_wy_h64"));
        assert!(names.contains("delta_scan_h32"));
        assert!(names.contains("ds4_attend"));
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
                KernelKey::AttnDecode { .. } => {
                    // One thread per score of a chunk (the template's const_asserts check the
                    // rest of its geometry).
                    assert_eq!(key.decode_chunk(), Some(c["CHUNK"]));
                    assert_eq!(key.attention_rows(), Some(c["ROWS"]));
                    assert_eq!(c["ROWS"] * c["CHUNK"], c["WG_SIZE"], "{key}");
                }
                KernelKey::AttnCombine { head_dim, .. } => {
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
