//! The f64 primitives every part of the forward pass shares: products with f32 weights, RMS
//! norm and the scalar functions, each written once as ggml defines it.

use crate::CpuWeight;

/// `sum(w[i] * x[i])` in f64.
pub(super) fn dot(w: &[f32], x: &[f64]) -> f64 {
    w.iter().zip(x).map(|(&w, &x)| w as f64 * x).sum()
}

/// `w[expert] · x`: x: (cols) -> (rows).
pub(super) fn matvec(w: &CpuWeight, expert: usize, x: &[f64]) -> Vec<f64> {
    debug_assert_eq!(x.len(), w.cols(), "{}: input width", w.name);
    (0..w.rows()).map(|r| dot(w.row(expert, r), x)).collect()
}

/// `x / sqrt(mean(x²) + eps)`, times `weight` when there is one.
pub(super) fn rms_norm(x: &[f64], weight: Option<&[f32]>, eps: f64) -> Vec<f64> {
    let mean_sq = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    match weight {
        Some(w) => x
            .iter()
            .zip(w)
            .map(|(v, &w)| v * scale * w as f64)
            .collect(),
        None => x.iter().map(|v| v * scale).collect(),
    }
}

/// `1 / (1 + e^-x)`.
pub(super) fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
