//! Manifold-constrained hyper-connections: the hidden state of a token is `HC_STREAMS` streams
//! of width D. Before each sub-block `pre` mixes them into its input; after it, `post` writes
//! the output back into every stream and mixes the old streams through a doubly stochastic
//! matrix (Sinkhorn-normalised); `head` mixes them into one for the output norm.

use super::config::HC_STREAMS;
use super::math::{matvec, rms_norm, sigmoid};
use super::weights::Tensors;
use crate::CpuWeight;
use moetile::Result;

const HC: usize = HC_STREAMS;

/// Mixing weights of one hyper-connection: `fn` maps the normalised streams to the mixes,
/// `scale` and `base` give each family of mixes an affine map.
pub(super) struct HcWeights {
    /// `[HC·D, n_mixes]`.
    func: CpuWeight,
    /// `n_mixes` values.
    base: Vec<f32>,
    /// One factor per family of mixes (pre, post, comb; only pre in the head).
    scale: Vec<f32>,
}

impl HcWeights {
    /// A sub-block's connection `{prefix}_fn/_base/_scale.weight`: mixes pre, post and comb.
    pub(super) fn load_block(t: &Tensors<'_>, prefix: &str, d_model: usize) -> Result<HcWeights> {
        Self::load(t, prefix, d_model, (2 + HC) * HC, 3)
    }

    /// The output head's `output_hc_*`: the pre mixes only.
    pub(super) fn load_head(t: &Tensors<'_>, d_model: usize) -> Result<HcWeights> {
        Self::load(t, "output_hc", d_model, HC, 1)
    }

    fn load(
        t: &Tensors<'_>,
        prefix: &str,
        d_model: usize,
        n_mixes: usize,
        n_scales: usize,
    ) -> Result<HcWeights> {
        Ok(HcWeights {
            func: t.weight(&format!("{prefix}_fn.weight"), &[HC * d_model, n_mixes])?,
            base: t.vector(&format!("{prefix}_base.weight"), n_mixes)?,
            scale: t.vector(&format!("{prefix}_scale.weight"), n_scales)?,
        })
    }
}

/// What `pre` computes for one token: the sub-block input and how to write its output back.
pub(super) struct Mix {
    /// The sub-block's input: `sum_s pre[s] · X[s]`, width D.
    pub(super) input: Vec<f64>,
    /// Weight of the sub-block output in each stream.
    post: [f64; HC],
    /// `comb[src][dst]`: share of old stream `src` in new stream `dst`.
    comb: [[f64; HC]; HC],
}

/// `sigmoid(m · scale + base) + eps` of the first HC mixes, then `sum_s w[s] · X[s]`: the
/// input of a sub-block and, with the head's weights, of the output norm.
fn weighted_streams(streams: &[f64], mixes: &[f64], w: &HcWeights, eps: f64) -> Vec<f64> {
    let d = streams.len() / HC;
    let mut out = vec![0.0; d];
    for (s, stream) in streams.chunks_exact(d).enumerate() {
        let weight = sigmoid(mixes[s] * w.scale[0] as f64 + w.base[s] as f64) + eps;
        for (o, x) in out.iter_mut().zip(stream) {
            *o += weight * x;
        }
    }
    out
}

/// The mixes `fn · rms(streams)` of one token's streams (HC·D values, stream-major).
fn mixes(streams: &[f64], w: &HcWeights, rms_eps: f64) -> Vec<f64> {
    matvec(&w.func, 0, &rms_norm(streams, None, rms_eps))
}

/// `comb` made doubly stochastic: a softmax over dst per src (plus eps), then alternately
/// normalising each column (over src) and each row (over dst), `iterations` column passes
/// in all, ending with a column pass. Each sum carries an extra eps, as in ggml.
pub(super) fn sinkhorn(mut c: [[f64; HC]; HC], iterations: usize, eps: f64) -> [[f64; HC]; HC] {
    for row in &mut c {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        row.iter_mut().for_each(|v| *v = (*v - max).exp());
        let sum: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v = *v / sum + eps);
    }
    let normalize_cols = |c: &mut [[f64; HC]; HC]| {
        let sums: [f64; HC] =
            std::array::from_fn(|dst| c.iter().map(|row| row[dst]).sum::<f64>() + eps);
        for row in c.iter_mut() {
            row.iter_mut().zip(&sums).for_each(|(v, sum)| *v /= sum);
        }
    };
    normalize_cols(&mut c);
    for _ in 1..iterations {
        for row in &mut c {
            let sum = row.iter().sum::<f64>() + eps;
            row.iter_mut().for_each(|v| *v /= sum);
        }
        normalize_cols(&mut c);
    }
    c
}

/// The `pre` step of a sub-block for one token's streams.
pub(super) fn pre(
    streams: &[f64],
    w: &HcWeights,
    rms_eps: f64,
    hc_eps: f64,
    sinkhorn_iterations: usize,
) -> Mix {
    let m = mixes(streams, w, rms_eps);
    let affine = |i: usize, family: usize| m[i] * w.scale[family] as f64 + w.base[i] as f64;
    let post = std::array::from_fn(|s| 2.0 * sigmoid(affine(HC + s, 1)));
    let comb =
        std::array::from_fn(|src| std::array::from_fn(|dst| affine(2 * HC + HC * src + dst, 2)));
    Mix {
        input: weighted_streams(streams, &m, w, hc_eps),
        post,
        comb: sinkhorn(comb, sinkhorn_iterations, hc_eps),
    }
}

/// The `post` step: new stream `dst` = `post[dst] · f + sum_src comb[src][dst] · old[src]`.
pub(super) fn post(f: &[f64], old: &[f64], mix: &Mix) -> Vec<f64> {
    let d = f.len();
    let mut out = vec![0.0; HC * d];
    for (dst, new) in out.chunks_exact_mut(d).enumerate() {
        for (e, v) in new.iter_mut().enumerate() {
            *v = mix.post[dst] * f[e]
                + (0..HC)
                    .map(|src| mix.comb[src][dst] * old[src * d + e])
                    .sum::<f64>();
        }
    }
    out
}

/// The output head's mix of one token's streams into one vector of width D.
pub(super) fn head(streams: &[f64], w: &HcWeights, rms_eps: f64, hc_eps: f64) -> Vec<f64> {
    weighted_streams(streams, &mixes(streams, w, rms_eps), w, hc_eps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(c: &[[f64; HC]; HC]) -> ([f64; HC], [f64; HC]) {
        (
            std::array::from_fn(|src| c[src].iter().sum()),
            std::array::from_fn(|dst| (0..HC).map(|src| c[src][dst]).sum()),
        )
    }

    #[test]
    fn sinkhorn_makes_rows_and_columns_sum_to_one() {
        let logits =
            std::array::from_fn(|i| std::array::from_fn(|j| ((3 * i + 5 * j) as f64).sin() * 4.0));
        // Every pass ends on the columns: they sum to 1 up to the eps in their sum.
        for iterations in [1, 2, 20] {
            let (_, cols) = sums(&sinkhorn(logits, iterations, 1e-6));
            assert!(
                cols.iter().all(|s| (s - 1.0).abs() < 1e-5),
                "{iterations}: {cols:?}"
            );
        }
        // The rows only converge: far from 1 after the softmax and one column pass, at 1
        // after 20.
        let (rows, _) = sums(&sinkhorn(logits, 1, 1e-6));
        assert!(rows.iter().any(|s| (s - 1.0).abs() > 0.1), "{rows:?}");
        let (rows, _) = sums(&sinkhorn(logits, 20, 1e-6));
        assert!(rows.iter().all(|s| (s - 1.0).abs() < 1e-4), "{rows:?}");
    }

    #[test]
    fn sinkhorn_of_equal_logits_is_uniform() {
        // softmax: 1/4 + eps everywhere; a column sums to 1 + 4 eps, divided by 1 + 5 eps.
        let eps = 0.01;
        let c = sinkhorn([[7.0; HC]; HC], 1, eps);
        let want = (0.25 + eps) / (1.0 + 5.0 * eps);
        assert!(
            c.iter().flatten().all(|v| (v - want).abs() < 1e-15),
            "{c:?}"
        );
    }

    #[test]
    fn post_writes_the_output_with_weights_and_mixes_the_old_streams() {
        // D = 1: old streams 1, 2, 3, 4; comb takes each new stream from the next old one.
        let mix = Mix {
            input: vec![],
            post: [1.0, 0.5, 0.0, 2.0],
            comb: std::array::from_fn(|src| {
                std::array::from_fn(|dst| f64::from(u8::from(src == (dst + 1) % HC)))
            }),
        };
        assert_eq!(
            post(&[10.0], &[1.0, 2.0, 3.0, 4.0], &mix),
            [12.0, 8.0, 4.0, 21.0]
        );
    }
}
