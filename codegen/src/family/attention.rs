//! The KV cache and the kernels around it: `attn_input` norms and rotates a batch's q and k
//! and appends its keys and values, `attn_prefill` is causal flash attention of a batch of queries, `attn_decode` and
//! `attn_combine` split the keys of a few queries over workgroups and merge the partials.

use std::fmt;

use super::{Family, b};
use crate::key::{ActType, Binding, BindingKind::*};
use crate::params::{AttnInputParams, AttnParams, Layout, layout};

/// Head widths the attention kernels are generated for: multiples of 16 up to 128, of 32 up to
/// 256 (the 16 threads of a prefill row group own whole dims).
pub const HEAD_DIMS: [u32; 12] = [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256];

/// Decode attention: query rows per workgroup (every query head of a GQA group of 8 for one
/// token, or of smaller groups for several tokens).
const DECODE_ROWS: u32 = 8;
/// Decode attention: positions per chunk. With a workgroup per chunk, 512 positions of 4
/// key/value heads are 64 workgroups, 4K positions 512.
const DECODE_CHUNK: u32 = 32;
/// Decode attention: threads per workgroup, one per score of a chunk (8 per position while
/// scoring, one per (row, 4 dims) of a 128-wide head while summing values), so no thread
/// carries a long chain of dependent steps (`wgsl/attn_decode.wgsl`).
const DECODE_WG_SIZE: u32 = DECODE_ROWS * DECODE_CHUNK;
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

/// The sink fragment: with or without per-head sinks (gpt-oss).
fn sinks_fragment(sinks: bool) -> &'static str {
    if sinks {
        "attn/sinks.wgsl"
    } else {
        "attn/no_sinks.wgsl"
    }
}

/// The suffix naming a kernel with sinks.
fn sinks_suffix(sinks: bool) -> &'static str {
    if sinks { "_sinks" } else { "" }
}

/// The binding of the sinks (`wgsl/attn/sinks.wgsl`), where the kernel has them.
fn sinks_binding(sinks: bool) -> Option<Binding> {
    sinks.then(|| b(9, "sinks", ReadOnly))
}

/// The fragment placing each token in the cache: one sequence, or a table of sequences.
fn seq_fragment(seq_table: bool) -> &'static str {
    if seq_table {
        "attn/seq_table.wgsl"
    } else {
        "attn/seq_one.wgsl"
    }
}

/// The suffix naming a kernel over a table of sequences.
fn seq_suffix(seq_table: bool) -> &'static str {
    if seq_table { "_seqs" } else { "" }
}

/// The binding of the table of sequences (`wgsl/attn/seq_table.wgsl`), where the kernel has it.
fn seq_binding(seq_table: bool) -> Option<Binding> {
    seq_table.then(|| b(7, "seqs", ReadOnly))
}

/// The cache fragment of `kv`.
fn kv_fragment(kv: ActType) -> &'static str {
    match kv {
        ActType::F32 => "kv/f32.wgsl",
        ActType::F16 => "kv/f16.wgsl",
    }
}

/// The bindings every attention kernel that reads the cache starts with.
fn cache_reader_bindings() -> Vec<Binding> {
    vec![
        b(0, "params", Uniform),
        b(1, "q", ReadOnly),
        b(2, "k_cache", ReadOnly),
        b(3, "v_cache", ReadOnly),
    ]
}

/// Threads of an `attn_input` workgroup (one head of one token; a pair of values each).
const INPUT_WG_SIZE: u32 = 64;

/// `attn_input`: per cache type, with or without the per-head q/k RMS norms (qwen3), for one
/// sequence or a table of them.
pub(crate) struct AttnInput {
    pub(crate) kv: ActType,
    pub(crate) norm: bool,
    pub(crate) seq_table: bool,
}

impl Family for AttnInput {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let norm = if self.norm { "_norm" } else { "" };
        let seqs = seq_suffix(self.seq_table);
        write!(f, "attn_input{norm}{seqs}_{}", self.kv.name())
    }

    fn template(&self) -> &'static str {
        "attn_input.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        let norm = if self.norm {
            "attn_input/norm.wgsl"
        } else {
            "attn_input/plain.wgsl"
        };
        vec![
            kv_fragment(self.kv),
            "reduce/sum.wgsl",
            norm,
            seq_fragment(self.seq_table),
        ]
    }

    fn params(&self) -> Layout {
        layout::<AttnInputParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        let mut list = vec![
            b(0, "params", Uniform),
            b(1, "qkv", ReadOnly),
            b(2, "angles", ReadOnly),
            b(3, "q", ReadWrite),
            b(4, "k_cache", ReadWrite),
            b(5, "v_cache", ReadWrite),
        ];
        if self.norm {
            list.extend([b(6, "q_norm", ReadOnly), b(8, "k_norm", ReadOnly)]);
        }
        list.extend(seq_binding(self.seq_table));
        list
    }

    fn workgroup_size(&self) -> u32 {
        INPUT_WG_SIZE
    }
}

/// `attn_prefill`, per head width, cache type and whether heads have sinks.
pub(crate) struct Prefill {
    pub(crate) head_dim: u32,
    pub(crate) kv: ActType,
    pub(crate) sinks: bool,
}

impl Family for Prefill {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sinks = sinks_suffix(self.sinks);
        write!(
            f,
            "attn_prefill{sinks}_h{}_{}",
            self.head_dim,
            self.kv.name()
        )
    }

    fn template(&self) -> &'static str {
        "attn_prefill.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        vec![
            "attn/common.wgsl",
            kv_fragment(self.kv),
            sinks_fragment(self.sinks),
        ]
    }

    fn params(&self) -> Layout {
        layout::<AttnParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        let mut list = cache_reader_bindings();
        list.push(b(4, "out", ReadWrite));
        list.extend(sinks_binding(self.sinks));
        list
    }

    fn consts(&self) -> Vec<(&'static str, u32)> {
        let hd = self.head_dim;
        let g = attn_geometry(hd);
        vec![
            ("HEAD_DIM", hd),
            ("Q_ROWS", g.rows),
            ("KV_TILE", g.kv_tile),
            // Loads of eight values per thread per tile.
            ("TILE_LOADS", (g.kv_tile * hd / 8).div_ceil(g.threads)),
            ("ROWS_PER_THREAD", g.rows_per_thread),
            ("ROW_THREADS", ATTN_ROW_THREADS),
            ("COLS_PER_THREAD", g.kv_tile / ATTN_ROW_THREADS),
            ("DIMS_PER_THREAD", hd / ATTN_ROW_THREADS),
        ]
    }

    fn workgroup_size(&self) -> u32 {
        attn_geometry(self.head_dim).threads
    }

    fn attention_rows(&self) -> Option<u32> {
        Some(attn_geometry(self.head_dim).rows)
    }
}

/// `attn_decode`, per head width and cache type, for one sequence or a table of them.
pub(crate) struct Decode {
    pub(crate) head_dim: u32,
    pub(crate) kv: ActType,
    pub(crate) seq_table: bool,
}

impl Family for Decode {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seqs = seq_suffix(self.seq_table);
        write!(f, "attn_decode{seqs}_h{}_{}", self.head_dim, self.kv.name())
    }

    fn template(&self) -> &'static str {
        "attn_decode.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        vec![
            "attn/common.wgsl",
            kv_fragment(self.kv),
            seq_fragment(self.seq_table),
        ]
    }

    fn params(&self) -> Layout {
        layout::<AttnParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        let mut list = cache_reader_bindings();
        list.extend([b(4, "part_acc", ReadWrite), b(5, "part_ml", ReadWrite)]);
        list.extend(seq_binding(self.seq_table));
        list
    }

    fn consts(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("HEAD_DIM", self.head_dim),
            ("ROWS", DECODE_ROWS),
            ("CHUNK", DECODE_CHUNK),
        ]
    }

    fn workgroup_size(&self) -> u32 {
        DECODE_WG_SIZE
    }

    fn attention_rows(&self) -> Option<u32> {
        Some(DECODE_ROWS)
    }

    fn decode_chunk(&self) -> Option<u32> {
        Some(DECODE_CHUNK)
    }
}

/// `attn_combine`, per head width and whether heads have sinks.
pub(crate) struct Combine {
    pub(crate) head_dim: u32,
    pub(crate) sinks: bool,
}

impl Family for Combine {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sinks = sinks_suffix(self.sinks);
        write!(f, "attn_combine{sinks}_h{}", self.head_dim)
    }

    fn template(&self) -> &'static str {
        "attn_combine.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        vec!["attn/common.wgsl", sinks_fragment(self.sinks)]
    }

    fn params(&self) -> Layout {
        layout::<AttnParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![
            b(0, "params", Uniform),
            b(1, "part_acc", ReadOnly),
            b(2, "part_ml", ReadOnly),
            b(3, "out", ReadWrite),
        ]
        .into_iter()
        .chain(sinks_binding(self.sinks))
        .collect()
    }

    fn consts(&self) -> Vec<(&'static str, u32)> {
        vec![("HEAD_DIM", self.head_dim)]
    }

    fn workgroup_size(&self) -> u32 {
        COMBINE_WG_SIZE
    }
}
