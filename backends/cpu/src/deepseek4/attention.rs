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

use moetile::model::deepseek4::{AttentionWeights, CompressedKeys, Compression, Deepseek4Config};

use super::compressor::{CompressorState, select, visible_rows};
use super::math::{dot, matvec, rms_norm};
use super::qat::Rounding;
use super::rope::Rope;
use crate::CpuWeight;

/// How a model's attention computes beyond its weights: the two rotations and what the
/// low-precision simulation rounds. Made once per model (the reference's, or the CPU
/// backend's cache) from its config and `qat_sim`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Numerics {
    /// The rotation of layers without compression.
    rope: Rope,
    /// The rotation of compressed layers, their indexer and compressed rows.
    compressed_rope: Rope,
    /// What every key (raw and compressed) goes through before it is stored.
    key_rounding: Rounding,
    /// What each indexer query head and key goes through.
    indexer_rounding: Rounding,
}

impl Numerics {
    /// The rotations `cfg` sets, and the roundings of the simulation when `qat_sim`.
    pub(crate) fn new(cfg: &Deepseek4Config, qat_sim: bool) -> Numerics {
        let (key_rounding, indexer_rounding) = Rounding::pair(qat_sim, cfg.n_rot);
        Numerics {
            rope: Rope::plain(cfg.n_rot, cfg.rope_freq_base),
            compressed_rope: Rope::scaled(
                cfg.n_rot,
                cfg.compress_rope_freq_base,
                cfg.compress_freq_scale,
                cfg.yarn.then_some(cfg.yarn_orig_ctx),
            ),
            key_rounding,
            indexer_rounding,
        }
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
pub(crate) struct AttentionState {
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

/// The attention sub-block of layer `il` for the tokens at positions `pos..pos + x.len()`,
/// `state` holding what the earlier positions left. x: its normed input (T, D) -> (T, D).
/// The reference model's step and `CpuBackend::deepseek4_attention`'s.
pub(crate) fn attention(
    w: &AttentionWeights<CpuWeight>,
    state: &mut AttentionState,
    x: &[Vec<f64>],
    pos: usize,
    il: usize,
    cfg: &Deepseek4Config,
    numerics: &Numerics,
) -> Vec<Vec<f64>> {
    let (hd, eps) = (cfg.head_dim, cfg.rms_eps);
    let compressed_rope = &numerics.compressed_rope;
    let rope = match cfg.compression[il] {
        Compression::None => &numerics.rope,
        _ => compressed_rope,
    };
    let q_lora: Vec<Vec<f64>> = x
        .iter()
        .map(|xt| rms_norm(&matvec(&w.q_a, 0, xt), Some(&w.q_a_norm.values), eps))
        .collect();
    // The raw keys of positions `first..pos + T`: the window's, then the chunk's.
    let first = pos - state.window.len();
    let mut raw = std::mem::take(&mut state.window);
    raw.extend((pos..).zip(x).map(|(t, xt)| {
        let mut k = rms_norm(&matvec(&w.kv, 0, xt), Some(&w.kv_norm.values), eps);
        rope.rotate(&mut k, t);
        numerics.key_rounding.apply(&mut k);
        k
    }));
    // For each query the compressed rows it attends.
    let attended: Vec<Vec<usize>> = match &w.compressed {
        CompressedKeys::None => vec![Vec::new(); x.len()],
        CompressedKeys::Ratio4 {
            compressor,
            indexer,
        } => {
            let key = (Compression::Ratio4, numerics.key_rounding);
            state
                .compressed
                .extend(compressor, key, x, pos, compressed_rope, eps);
            let picked = select(
                indexer,
                numerics.indexer_rounding,
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
            let key = (Compression::Ratio128, numerics.key_rounding);
            state
                .compressed
                .extend(compressor, key, x, pos, compressed_rope, eps);
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
            for (head, sink) in q.chunks_exact(hd).zip(&w.sinks.values) {
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
