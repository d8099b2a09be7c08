//! The compressed keys of layers with a compress ratio, and the lightning indexer that picks
//! which of them a query of a ratio-4 layer sees.
//!
//! A compressor turns each block of `ratio` tokens into one key row: per column, a softmax over
//! the window's gate scores weights the window's values. Ratio 128 pools its own block; ratio 4
//! pools an overlapping window of 8 tokens, the previous block through the first half of the
//! projection's columns and its own block through the second half. The row is then RMS-normed,
//! rotated to the position of its block's first token and rounded as the simulation says
//! ([`Rounding`]). Row b exists once token `(b + 1) · ratio - 1` does.
//!
//! Tokens arrive in chunks of any size ([`CompressorState::extend`]): the state keeps the
//! projections of the block being filled and, for ratio 4, of the last complete block, which
//! is all a later row reads (the original engine's `compressor_decode_one` keeps the same).

use moetile::model::deepseek4::{Compression, CompressorWeights, Deepseek4Config, IndexerWeights};

use super::math::{matvec, rms_norm};
use super::qat::Rounding;
use super::rope::Rope;
use crate::CpuWeight;

/// One token's projections, `coff · width` each.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Projected {
    kv: Vec<f64>,
    /// The gate scores with the bias of the token's place in its block.
    score: Vec<f64>,
}

impl Projected {
    /// A token's values and gate scores, `ape_row` (the bias of its place in the block) added
    /// to the scores.
    pub(crate) fn new(kv: Vec<f64>, mut score: Vec<f64>, ape_row: &[f32]) -> Projected {
        for (s, &bias) in score.iter_mut().zip(ape_row) {
            *s += bias as f64;
        }
        Projected { kv, score }
    }
}

/// A compressed row before RoPE: the window pooled ([`pool`]), RMS-normed and times `norm`
/// (`width` values). The reference model's step and `CpuBackend::compressor_pool`'s.
pub(crate) fn pooled_row(
    previous: &[Projected],
    current: &[Projected],
    norm: &[f32],
    rms_eps: f64,
) -> Vec<f64> {
    rms_norm(&pool(previous, current, norm.len()), Some(norm), rms_eps)
}

/// The softmax-pooled row (before norm and RoPE) of the window made of `previous` (ratio 4:
/// the last block, through its first `width` columns; empty for ratio 128 and before the
/// first ratio-4 block, where llama.cpp pools zeros with score −∞, i.e. weight 0) and
/// `current` (the block itself, through its last `width` columns).
fn pool(previous: &[Projected], current: &[Projected], width: usize) -> Vec<f64> {
    // (token, first column) of each window entry.
    let entries: Vec<(&Projected, usize)> = previous
        .iter()
        .map(|p| (p, 0))
        .chain(current.iter().map(|p| (p, p.kv.len() - width)))
        .collect();
    (0..width)
        .map(|c| {
            let max = entries
                .iter()
                .map(|&(p, off)| p.score[off + c])
                .fold(f64::NEG_INFINITY, f64::max);
            let (mut num, mut den) = (0.0, 0.0);
            for &(p, off) in &entries {
                let w = (p.score[off + c] - max).exp();
                num += w * p.kv[off + c];
                den += w;
            }
            num / den
        })
        .collect()
}

/// What a compressor carries from one chunk of tokens to the next.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct CompressorState {
    /// The row of every complete block so far, in block order.
    pub(super) rows: Vec<Vec<f64>>,
    /// The tokens of the block being filled: `position % ratio` of them.
    pending: Vec<Projected>,
    /// Ratio 4: the last complete block's tokens, the first half of the next window.
    previous: Vec<Projected>,
}

impl CompressorState {
    /// Feeds the tokens at positions `pos..pos + x.len()` (x: the attention input, (T, D);
    /// `pos` is where the state stopped), appending a row for each block they complete; `kind`
    /// is the compressor's compression and what its finished rows go through.
    pub(super) fn extend(
        &mut self,
        w: &CompressorWeights<CpuWeight>,
        kind: (Compression, Rounding),
        x: &[Vec<f64>],
        pos: usize,
        rope: &Rope,
        rms_eps: f64,
    ) {
        let (compression, rounding) = kind;
        let ratio = compression.ratio();
        debug_assert_eq!(self.pending.len(), pos % ratio, "compressor state position");
        for (t, xt) in (pos..).zip(x) {
            self.pending.push(Projected::new(
                matvec(&w.kv, 0, xt),
                matvec(&w.gate, 0, xt),
                w.ape.row(0, t % ratio),
            ));
            if self.pending.len() == ratio {
                let mut row = pooled_row(&self.previous, &self.pending, &w.norm.values, rms_eps);
                rope.rotate(&mut row, t + 1 - ratio);
                rounding.apply(&mut row);
                self.rows.push(row);
                let block = std::mem::take(&mut self.pending);
                if compression == Compression::Ratio4 {
                    self.previous = block;
                }
            }
        }
    }
}

/// Compressed rows query `t` can see: those of the blocks that end at or before it.
pub(super) fn visible_rows(t: usize, compression: Compression) -> usize {
    (t + 1) / compression.ratio()
}

/// For each query at positions `pos..pos + x.len()`, the compressed rows it attends: the
/// `top_k` visible rows of highest score `sum_h relu(q_h · k_b) · w_h` (all visible rows when
/// there are no more than `top_k`; ties go to the earlier row), in row order. `keys` holds the
/// indexer's compressed keys, extended here by the chunk's. x: the attention input (T, D);
/// q_lora: the normed q_a output (T, q_lora_rank).
///
/// With the simulation off the Hadamard rotation that llama.cpp and the original engine apply
/// to queries and keys is skipped: being orthogonal it leaves every score unchanged.
#[allow(clippy::too_many_arguments)]
pub(super) fn select(
    w: &IndexerWeights<CpuWeight>,
    rounding: Rounding,
    keys: &mut CompressorState,
    x: &[Vec<f64>],
    q_lora: &[Vec<f64>],
    pos: usize,
    cfg: &Deepseek4Config,
    rope: &Rope,
) -> Vec<Vec<usize>> {
    let (heads, dim) = (cfg.indexer_heads, cfg.indexer_head_dim);
    let kind = (Compression::Ratio4, rounding);
    keys.extend(&w.compressor, kind, x, pos, rope, cfg.rms_eps);
    let head_norm = ((dim * heads) as f64).sqrt();
    (pos..)
        .zip(x.iter().zip(q_lora))
        .map(|(t, (xt, qt))| {
            let mut q = matvec(&w.q_b, 0, qt);
            for head in q.chunks_exact_mut(dim) {
                rope.rotate(head, t);
                rounding.apply(head);
            }
            let head_weights: Vec<f64> = matvec(&w.proj, 0, xt)
                .iter()
                .map(|v| v / head_norm)
                .collect();
            let n_visible = visible_rows(t, Compression::Ratio4);
            let scores: Vec<f64> = keys.rows[..n_visible]
                .iter()
                .map(|k| {
                    q.chunks_exact(dim)
                        .zip(&head_weights)
                        .map(|(qh, hw)| {
                            let s: f64 = qh.iter().zip(k).map(|(a, b)| a * b).sum();
                            s.max(0.0) * hw
                        })
                        .sum()
                })
                .collect();
            let mut order: Vec<usize> = (0..n_visible).collect();
            order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            order.truncate(cfg.indexer_top_k);
            order.sort_unstable();
            order
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens of width-1 rows (coff 2): column 0 feeds the next block's window, column 1
    /// this block's.
    fn tokens(range: std::ops::Range<usize>) -> Vec<Projected> {
        range
            .map(|j| Projected {
                kv: vec![100.0 + j as f64, j as f64],
                score: vec![50.0, (j % 4) as f64],
            })
            .collect()
    }

    #[test]
    fn first_ratio4_block_pools_only_its_own_tokens() {
        // Block 0 has no previous block: its row is the softmax pool of column 1 of tokens
        // 0..4 alone, however large the column-0 scores.
        let e: Vec<f64> = (0..4).map(|j| (j as f64).exp()).collect();
        let want = (0..4).map(|j| e[j] * j as f64).sum::<f64>() / e.iter().sum::<f64>();
        assert!((pool(&[], &tokens(0..4), 1)[0] - want).abs() < 1e-12);
        // Block 1 pools tokens 0..4 through column 0 (score 50 dominates) and 4..8 through
        // column 1.
        let row = pool(&tokens(0..4), &tokens(4..8), 1)[0];
        assert!((row - 101.5).abs() < 1e-12, "{row}");
    }

    #[test]
    fn rows_become_visible_at_the_last_token_of_their_block() {
        let seen: Vec<usize> = (0..9)
            .map(|t| visible_rows(t, Compression::Ratio4))
            .collect();
        assert_eq!(seen, [0, 0, 0, 1, 1, 1, 1, 2, 2]);
        assert_eq!(visible_rows(126, Compression::Ratio128), 0);
        assert_eq!(visible_rows(127, Compression::Ratio128), 1);
    }
}
