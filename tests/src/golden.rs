//! Golden logit files written by `tests/fixtures/models/to_golden.py`: a magic number and
//! version, the token ids and the logits at every position.

use std::path::Path;

use anyhow::{Context, bail, ensure};

/// Token ids and logits `(n_tokens, n_vocab)` of one model on one prompt.
#[derive(Debug, Clone)]
pub struct Golden {
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
    /// Vocabulary size: the row length of `logits`.
    pub n_vocab: usize,
    /// Row-major logits, one row per position.
    pub logits: Vec<f32>,
}

const MAGIC: &[u8; 4] = b"MTGL";
const VERSION: u32 = 1;

impl Golden {
    /// Reads a golden file.
    pub fn read(path: &Path) -> anyhow::Result<Golden> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        ensure!(
            bytes.len() >= 20 && &bytes[..4] == MAGIC,
            "{}: not a golden file",
            path.display()
        );
        let word = |i: usize| u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
        ensure!(
            word(1) == VERSION,
            "{}: version {} (want {VERSION})",
            path.display(),
            word(1)
        );
        let (dtype, n_tokens, n_vocab) = (word(2), word(3) as usize, word(4) as usize);
        let tokens_end = 20 + 4 * n_tokens;
        let tokens = (0..n_tokens).map(|i| word(5 + i)).collect();
        let body = &bytes[tokens_end..];
        let logits: Vec<f32> = match dtype {
            0 => body
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            1 => body
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => bail!("{}: unknown dtype {other}", path.display()),
        };
        ensure!(
            logits.len() == n_tokens * n_vocab,
            "{}: truncated",
            path.display()
        );
        Ok(Golden {
            tokens,
            n_vocab,
            logits,
        })
    }

    /// Row `t`.
    pub fn row(&self, t: usize) -> &[f32] {
        &self.logits[t * self.n_vocab..(t + 1) * self.n_vocab]
    }
}

/// How closely two sets of logits agree.
#[derive(Debug, Clone, Copy)]
pub struct Agreement {
    /// Normalised mean squared error: sum (a - b)^2 / sum b^2.
    pub nmse: f64,
    /// Largest |a - b|.
    pub max_abs_diff: f64,
    /// The median over positions of each position's own NMSE: unmoved by a few positions that
    /// differ a lot (a routing decision flipped at a near-tie), unlike `nmse`.
    pub median_row_nmse: f64,
    /// The largest of the positions' own NMSEs: what a bound "at every position" checks.
    pub max_row_nmse: f64,
    /// Fraction of positions whose argmax agree.
    pub top1: f64,
}

/// NMSE bounds of a comparison: a test states each with the measurement that justifies it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// On the median over positions of each position's NMSE.
    pub median: f64,
    /// On the NMSE over all positions.
    pub whole: f64,
}

impl Budget {
    /// Whether `a` is within both bounds.
    pub fn admits(&self, a: &Agreement) -> bool {
        a.median_row_nmse <= self.median && a.nmse <= self.whole
    }
}

/// Compares `got` with the reference `want`, both `(n, n_vocab)` row-major.
pub fn agreement(got: &[f32], want: &[f32], n_vocab: usize) -> Agreement {
    assert_eq!(got.len(), want.len(), "logit counts differ");
    let (mut err, mut norm, mut max) = (0f64, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let d = g as f64 - w as f64;
        err += d * d;
        norm += w as f64 * w as f64;
        max = max.max(d.abs());
    }
    let rows = got.len() / n_vocab;
    let mut row_nmse: Vec<f64> = got
        .chunks(n_vocab)
        .zip(want.chunks(n_vocab))
        .map(|(g, w)| row_nmse(g, w))
        .collect();
    row_nmse.sort_by(f64::total_cmp);
    let same = got
        .chunks(n_vocab)
        .zip(want.chunks(n_vocab))
        .filter(|(g, w)| argmax(g) == argmax(w))
        .count();
    Agreement {
        nmse: err / norm,
        max_abs_diff: max,
        median_row_nmse: row_nmse[rows / 2],
        max_row_nmse: row_nmse[rows - 1],
        top1: same as f64 / rows as f64,
    }
}

/// The fraction of positions whose argmax agree among those whose own NMSE is at most
/// `max_row_nmse`: the positions that rounding alone moved. A routing or indexer choice that
/// flips at a near-tie moves its position far more, and on architectures whose later positions
/// read that one's keys (compressed rows, an indexer's picks) every position after it too;
/// there a different argmax is the other branch of the tie, not an error, and the NMSE
/// budgets bound how much of the sequence such flips may touch.
pub fn top1_where_unflipped(got: &[f32], want: &[f32], n_vocab: usize, max_row_nmse: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "logit counts differ");
    let kept: Vec<bool> = got
        .chunks(n_vocab)
        .zip(want.chunks(n_vocab))
        .filter(|(g, w)| row_nmse(g, w) <= max_row_nmse)
        .map(|(g, w)| argmax(g) == argmax(w))
        .collect();
    if kept.is_empty() {
        return 0.0;
    }
    kept.iter().filter(|&&same| same).count() as f64 / kept.len() as f64
}

/// One position's NMSE of `got` against `want`.
fn row_nmse(got: &[f32], want: &[f32]) -> f64 {
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|&b| (b as f64).powi(2)).sum();
    err / norm
}

/// The first index of the largest value.
fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}
