//! Causal grouped-query attention over an f32 KV cache: the exact softmax(q k^T * scale) v.

use moetile::model::AttentionParams;

use crate::backend::{CpuKvCache, Mat};
use crate::ops::dot;

/// Attends `q` (T, n_heads * head_dim), row t at position `pos0 + t`, over positions
/// `0..=pos0+t` of `layer`'s cache (which must already hold them): (T, n_heads * head_dim).
pub(crate) fn attend(
    q: &Mat,
    kv: &CpuKvCache,
    layer: usize,
    pos0: usize,
    p: &AttentionParams,
) -> Mat {
    let (hd, group) = (p.head_dim, p.n_heads / p.n_kv_heads);
    let kv_width = p.n_kv_heads * hd;
    let (keys, values) = (&kv.k[layer], &kv.v[layer]);
    let mut out = Mat::zeros(q.rows, q.cols);
    for t in 0..q.rows {
        let n_pos = pos0 + t + 1;
        for h in 0..p.n_heads {
            let kvh = h / group;
            let qh = &q.row(t)[h * hd..(h + 1) * hd];
            let scores: Vec<f64> = (0..n_pos)
                .map(|j| p.scale as f64 * dot(qh, &keys[j * kv_width + kvh * hd..][..hd]))
                .collect();
            let max = scores.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
            let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            let oh = &mut out.row_mut(t)[h * hd..(h + 1) * hd];
            for (i, o) in oh.iter_mut().enumerate() {
                let acc: f64 = exps
                    .iter()
                    .enumerate()
                    .map(|(j, e)| e * values[j * kv_width + kvh * hd + i] as f64)
                    .sum();
                *o = (acc / sum) as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use moetile::model::{AttentionParams, Backend, RopeParams};

    use crate::{CpuBackend, Mat};

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

    #[test]
    fn causal_gqa_attention_averages_equal_keys_and_masks_the_future() {
        let mut cpu = CpuBackend::new();
        // 2 query heads share 1 kv head of width 2; keys are equal, so weights are uniform.
        // No dimension rotates (n_dims 0), so RoPE leaves them equal.
        let p = AttentionParams {
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
        };
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
}
