//! The attention sub-block: low-rank queries, one shared key/value head, sink logits, a raw
//! sliding window plus the layer's compressed rows, and a grouped low-rank output.
//!
//! The key is also the value, rotated tail included, so the output is rotated back by the
//! query's position before the output projection.
//!
//! Queries come in chunks of any size: [`AttentionState`] carries what later queries read (the
//! raw window's last keys, the compressed rows, the compressors' unfinished blocks), and every
//! value is computed by the same f64 operations in the same order whatever the chunking, so a
//! chunked prompt gives the logits of the whole prompt bit for bit.

use super::compressor::{CompressorState, CompressorWeights, IndexerWeights, select, visible_rows};
use super::config::{Compression, Deepseek4Config};
use super::math::{dot, matvec, rms_norm};
use super::qat::Rounding;
use super::rope::Rope;
use super::weights::Tensors;
use crate::CpuWeight;
use moetile::Result;

/// The compressed keys of a layer, by its [`Compression`].
enum CompressedKeys {
    /// The raw window only.
    None,
    /// Rows of 4 tokens, each query's picked by the indexer.
    Ratio4 {
        compressor: CompressorWeights,
        indexer: Box<IndexerWeights>,
    },
    /// Rows of 128 tokens, all visible ones attended.
    Ratio128 { compressor: CompressorWeights },
}

/// One layer's attention weights.
pub(super) struct AttentionWeights {
    /// `[D]`: the sub-block's input norm.
    pub(super) norm: Vec<f32>,
    /// `[D, q_lora_rank]`, then its norm.
    q_a: CpuWeight,
    q_a_norm: Vec<f32>,
    /// `[q_lora_rank, heads · head_dim]`.
    q_b: CpuWeight,
    /// `[D, head_dim]`: the one key/value head, then its norm.
    kv: CpuWeight,
    kv_norm: Vec<f32>,
    /// One logit per head that only enlarges the softmax denominator.
    sinks: Vec<f32>,
    /// `(groups · rank)` rows of `heads · head_dim / groups`: row `g · rank + r` reads group g.
    pub(super) output_a: CpuWeight,
    /// `[groups · rank, D]`.
    output_b: CpuWeight,
    compressed: CompressedKeys,
    /// What every key (raw and compressed) goes through before it is stored.
    key_rounding: Rounding,
}

impl AttentionWeights {
    /// The attention tensors of layer `il`; its keys and its indexer's heads are rounded by
    /// `key_rounding` and `indexer_rounding`.
    pub(super) fn load(
        t: &Tensors<'_>,
        il: usize,
        cfg: &Deepseek4Config,
        key_rounding: Rounding,
        indexer_rounding: Rounding,
    ) -> Result<AttentionWeights> {
        let name = |n: &str| format!("blk.{il}.{n}");
        let (d, hd, rank) = (cfg.d_model, cfg.head_dim, cfg.q_lora_rank);
        let q_width = cfg.n_heads * hd;
        let out_rows = cfg.output_groups * cfg.output_rank;
        let compression = cfg.compression[il];
        let compressor = || {
            CompressorWeights::load(
                t,
                &name("attn_compressor_"),
                d,
                hd,
                compression,
                key_rounding,
            )
        };
        let compressed = match compression {
            Compression::None => CompressedKeys::None,
            Compression::Ratio4 => CompressedKeys::Ratio4 {
                compressor: compressor()?,
                indexer: Box::new(IndexerWeights::load(t, il, cfg, indexer_rounding)?),
            },
            Compression::Ratio128 => CompressedKeys::Ratio128 {
                compressor: compressor()?,
            },
        };
        Ok(AttentionWeights {
            norm: t.vector(&name("attn_norm.weight"), d)?,
            q_a: t.weight(&name("attn_q_a.weight"), &[d, rank])?,
            q_a_norm: t.vector(&name("attn_q_a_norm.weight"), rank)?,
            q_b: t.weight(&name("attn_q_b.weight"), &[rank, q_width])?,
            kv: t.weight(&name("attn_kv.weight"), &[d, hd])?,
            kv_norm: t.vector(&name("attn_kv_a_norm.weight"), hd)?,
            sinks: t.vector(&name("attn_sinks.weight"), cfg.n_heads)?,
            output_a: t.reshaped_matrix(
                &name("attn_output_a.weight"),
                q_width / cfg.output_groups,
                out_rows,
            )?,
            output_b: t.weight(&name("attn_output_b.weight"), &[out_rows, d])?,
            compressed,
            key_rounding,
        })
    }
}

/// The grouped low-rank output (`attn_output_a`): `w`'s rows cut into `groups` equal parts,
/// part g reading the g-th of `groups` equal slices of `x` (the heads' outputs), so no group
/// mixes another's heads. x: (groups · w.cols) -> (w.rows). The reference model's step and
/// `CpuBackend::grouped_matmul`'s.
pub(crate) fn grouped_matvec(w: &CpuWeight, groups: usize, x: &[f64]) -> Vec<f64> {
    let (rank, width) = (w.rows() / groups, w.cols());
    debug_assert_eq!(x.len(), groups * width, "{}: input width", w.name);
    (0..w.rows())
        .map(|r| dot(w.row(0, r), &x[r / rank * width..][..width]))
        .collect()
}

/// `sum_j e^(s_j - M) v_j / (sum_j e^(s_j - M) + e^(sink - M))` with `s_j = q · k_j / sqrt(dim)`
/// over `keys`, which are also the values.
fn attend(q: &[f64], keys: &[&[f64]], sink: f64) -> Vec<f64> {
    let scale = 1.0 / (q.len() as f64).sqrt();
    let scores: Vec<f64> = keys
        .iter()
        .map(|k| q.iter().zip(*k).map(|(a, b)| a * b).sum::<f64>() * scale)
        .collect();
    let max = scores.iter().copied().fold(sink, f64::max);
    let mut out = vec![0.0; q.len()];
    let mut den = (sink - max).exp();
    for (s, k) in scores.iter().zip(keys) {
        let e = (s - max).exp();
        den += e;
        for (o, v) in out.iter_mut().zip(*k) {
            *o += e * v;
        }
    }
    out.iter_mut().for_each(|o| *o /= den);
    out
}

/// What one layer's attention carries from a chunk of tokens to the next.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct AttentionState {
    /// The keys of the last `sliding_window - 1` positions, oldest first: every raw key a
    /// later query sees besides its own.
    window: Vec<Vec<f64>>,
    /// The layer's compressed rows and its compressor's unfinished blocks (left empty
    /// without compression).
    compressed: CompressorState,
    /// Ratio 4: the indexer's compressed keys and unfinished blocks (else empty).
    index_keys: CompressorState,
    /// Ratio 4: compressed rows visible to a query that the indexer left out, summed over
    /// the queries so far. Nothing reads it but [`super::Deepseek4State::indexer_dropped`]:
    /// the evidence a test has that the top-k acted, which equal logits alone do not give.
    pub(super) indexer_dropped: usize,
}

/// The attention sub-block of one layer for the tokens at positions `pos..pos + x.len()`,
/// `state` holding what the earlier positions left. x: its normed input (T, D) -> (T, D).
/// `rope` is the layer's rotation; `compressed_rope` the one of compressed layers, which the
/// indexer and the compressed rows always use.
pub(super) fn attention(
    w: &AttentionWeights,
    state: &mut AttentionState,
    x: &[Vec<f64>],
    pos: usize,
    cfg: &Deepseek4Config,
    rope: &Rope,
    compressed_rope: &Rope,
) -> Vec<Vec<f64>> {
    let (hd, eps) = (cfg.head_dim, cfg.rms_eps);
    let q_lora: Vec<Vec<f64>> = x
        .iter()
        .map(|xt| rms_norm(&matvec(&w.q_a, 0, xt), Some(&w.q_a_norm), eps))
        .collect();
    // The raw keys of positions `first..pos + T`: the window's, then the chunk's.
    let first = pos - state.window.len();
    let mut raw = std::mem::take(&mut state.window);
    raw.extend((pos..).zip(x).map(|(t, xt)| {
        let mut k = rms_norm(&matvec(&w.kv, 0, xt), Some(&w.kv_norm), eps);
        rope.rotate(&mut k, t);
        w.key_rounding.apply(&mut k);
        k
    }));
    // For each query the compressed rows it attends.
    let attended: Vec<Vec<usize>> = match &w.compressed {
        CompressedKeys::None => vec![Vec::new(); x.len()],
        CompressedKeys::Ratio4 {
            compressor,
            indexer,
        } => {
            state
                .compressed
                .extend(compressor, x, pos, compressed_rope, eps);
            let picked = select(
                indexer,
                &mut state.index_keys,
                x,
                &q_lora,
                pos,
                cfg,
                compressed_rope,
            );
            state.indexer_dropped += (pos..)
                .zip(&picked)
                .map(|(t, rows)| visible_rows(t, Compression::Ratio4) - rows.len())
                .sum::<usize>();
            picked
        }
        CompressedKeys::Ratio128 { compressor } => {
            state
                .compressed
                .extend(compressor, x, pos, compressed_rope, eps);
            (pos..pos + x.len())
                .map(|t| (0..visible_rows(t, Compression::Ratio128)).collect())
                .collect()
        }
    };
    let rows = &state.compressed.rows;
    let out = (pos..)
        .zip(&q_lora)
        .zip(&attended)
        .map(|((t, q_lora), attended)| {
            let window_start = (t + 1).saturating_sub(cfg.sliding_window);
            let keys: Vec<&[f64]> = raw[window_start - first..=t - first]
                .iter()
                .chain(attended.iter().map(|&b| &rows[b]))
                .map(Vec::as_slice)
                .collect();
            let q = matvec(&w.q_b, 0, q_lora);
            let mut out = Vec::with_capacity(q.len());
            for (head, sink) in q.chunks_exact(hd).zip(&w.sinks) {
                let mut qh = rms_norm(head, None, eps);
                rope.rotate(&mut qh, t);
                let mut oh = attend(&qh, &keys, *sink as f64);
                rope.unrotate(&mut oh, t);
                out.extend(oh);
            }
            matvec(
                &w.output_b,
                0,
                &grouped_matvec(&w.output_a, cfg.output_groups, &out),
            )
        })
        .collect();
    let keep = cfg.sliding_window.saturating_sub(1);
    raw.drain(..raw.len().saturating_sub(keep));
    state.window = raw;
    out
}
