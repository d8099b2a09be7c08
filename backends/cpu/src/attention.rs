//! Causal grouped-query attention over an f32 KV cache: the exact softmax(q k^T * scale) v,
//! optionally over a sliding window and with a per-head sink in the denominator (gpt-oss).

use moetile::model::AttentionParams;

use crate::backend::{CpuKvCache, Mat};
use crate::ops::dot;

/// How far a query looks back, and what else its softmax weighs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span<'a> {
    /// Keys a query sees, itself included; `None` for all earlier positions.
    pub(crate) window: Option<usize>,
    /// Per head, a logit without a value in the softmax's denominator.
    pub(crate) sinks: Option<&'a [f32]>,
}

/// Attends `q` (T, n_heads * head_dim), row t at position `pos0 + t`, over positions
/// `0..=pos0+t` of `layer`'s cache (which must already hold them), the last `window` of them
/// with a window: (T, n_heads * head_dim).
pub(crate) fn attend(
    q: &Mat,
    kv: &CpuKvCache,
    layer: usize,
    pos0: usize,
    p: &AttentionParams,
    span: Span<'_>,
) -> Mat {
    let (hd, group) = (p.head_dim, p.n_heads / p.n_kv_heads);
    let kv_width = p.n_kv_heads * hd;
    let (keys, values) = (&kv.k[layer], &kv.v[layer]);
    let mut out = Mat::zeros(q.rows, q.cols);
    for t in 0..q.rows {
        let n_pos = pos0 + t + 1;
        let first = span.window.map_or(0, |w| n_pos.saturating_sub(w));
        for h in 0..p.n_heads {
            let kvh = h / group;
            let qh = &q.row(t)[h * hd..(h + 1) * hd];
            let scores: Vec<f64> = (first..n_pos)
                .map(|j| p.scale as f64 * dot(qh, &keys[j * kv_width + kvh * hd..][..hd]))
                .collect();
            let sink = span.sinks.map(|s| s[h] as f64);
            let max = scores
                .iter()
                .chain(&sink)
                .fold(f64::NEG_INFINITY, |m, &s| m.max(s));
            let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = exps.iter().sum::<f64>() + sink.map_or(0.0, |s| (s - max).exp());
            let oh = &mut out.row_mut(t)[h * hd..(h + 1) * hd];
            for (i, o) in oh.iter_mut().enumerate() {
                let acc: f64 = exps
                    .iter()
                    .enumerate()
                    .map(|(j, e)| e * values[(first + j) * kv_width + kvh * hd + i] as f64)
                    .sum();
                *o = (acc / sum) as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use moetile::model::gptoss::{GptOssAttentionParams, Yarn};
    use moetile::model::{AttentionParams, Backend, RopeParams};
    use moetile::quant::GgmlType;

    use crate::{CpuBackend, CpuWeight, Mat};

    /// Rows of q (two heads of 1.0), k (0.5) and v side by side.
    fn qkv(v: &[[f32; 2]]) -> Mat {
        Mat {
            rows: v.len(),
            cols: 8,
            data: v
                .iter()
                .flat_map(|v| [1., 1., 1., 1., 0.5, 0.5, v[0], v[1]])
                .collect(),
        }
    }

    /// 2 query heads sharing 1 kv head of width 2, no dimension rotated (n_dims 0), so equal
    /// keys get equal weights.
    fn params() -> AttentionParams {
        AttentionParams {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 2,
            scale: 1.0,
            rope: RopeParams {
                n_dims: 0,
                freq_base: 10000.0,
                freq_scale: 1.0,
                neox: false,
            },
            norm_eps: 1e-6,
        }
    }

    #[test]
    fn causal_gqa_attention_averages_equal_keys_and_masks_the_future() {
        let (mut cpu, p) = (CpuBackend::new(), params());
        let mut kv = cpu.kv_cache(1, 4, 1, 2).unwrap();
        let out = cpu
            .attention(&qkv(&[[2., 4.], [6., 8.]]), None, &mut kv, 0, 0, &p)
            .unwrap();
        // Row 0 sees only position 0; row 1 averages positions 0 and 1; both heads alike.
        assert_eq!(out.row(0), &[2., 4., 2., 4.]);
        assert_eq!(out.row(1), &[4., 6., 4., 6.]);
        // Decoding position 2 sees all three.
        let out = cpu
            .attention(&qkv(&[[10., 12.]]), None, &mut kv, 0, 2, &p)
            .unwrap();
        assert_eq!(out.row(0), &[6., 8., 6., 8.]);
        let err = cpu
            .attention(&qkv(&[[0., 0.], [0., 0.]]), None, &mut kv, 0, 3, &p)
            .unwrap_err();
        assert!(err.to_string().contains("holds 4 tokens"), "{err}");
    }

    /// Every score is 1 (q = 1, k = 0.5, width 2) and so is each head's sink: a query seeing n
    /// keys weighs each by 1 / (n + 1). With a window of 2, position 2 no longer sees 0.
    #[test]
    fn sinks_take_their_share_and_the_window_drops_old_keys() {
        let mut cpu = CpuBackend::new();
        let sinks = CpuWeight {
            name: "sinks".into(),
            ty: GgmlType::F32,
            dims: vec![2],
            values: vec![1.0, 1.0],
        };
        let p = GptOssAttentionParams {
            attn: params(),
            yarn: Yarn::NONE,
            window: Some(2),
        };
        let mut kv = cpu.kv_cache(1, 4, 1, 2).unwrap();
        let out = cpu
            .gptoss_attention(
                &qkv(&[[3., 6.], [6., 9.], [12., 15.]]),
                &sinks,
                &mut kv,
                0,
                0,
                &p,
            )
            .unwrap();
        let want = [[1.5, 3.], [3., 5.], [6., 8.]];
        for (t, w) in want.iter().enumerate() {
            let row = out.row(t);
            assert!(
                row.iter()
                    .zip(w.iter().chain(w))
                    .all(|(o, w)| (o - w).abs() < 1e-6),
                "row {t}: {row:?}, want {w:?} per head"
            );
        }
    }
}
