//! Manifold-constrained hyper-connections: the hidden state of a token is `HC_STREAMS` streams
//! of width D. Before each sub-block `pre` mixes them into its input; after it, `post` writes
//! the output back into every stream and mixes the old streams through a doubly stochastic
//! matrix (Sinkhorn-normalised); `head` mixes them into one for the output norm.

use super::math::{matvec, rms_norm, sigmoid};
use crate::CpuWeight;
use moetile::model::deepseek4::HyperTensors;
use moetile::model::{HC_MIXES, HC_STREAMS};

const HC: usize = HC_STREAMS;

/// A hyper-connection's weights as the functions here read them: borrowed, so the model's
/// own weights and the arguments of the backend ops (`CpuBackend::hc_pre`) go through the
/// same code.
#[derive(Clone, Copy)]
pub(crate) struct HcView<'a> {
    /// `[HC·D, n_mixes]`.
    pub(crate) func: &'a CpuWeight,
    /// One factor per family of mixes.
    pub(crate) scale: &'a [f32],
    /// `n_mixes` values.
    pub(crate) base: &'a [f32],
}

impl<'a> From<&'a HyperTensors<CpuWeight>> for HcView<'a> {
    fn from(w: &'a HyperTensors<CpuWeight>) -> Self {
        HcView {
            func: &w.func,
            scale: &w.scale.values,
            base: &w.base.values,
        }
    }
}

/// The mixing values of one token: how `pre` weighs the streams and `post` writes back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Coefs {
    /// Weight of each stream in the sub-block input.
    pre: [f64; HC],
    /// Weight of the sub-block output in each stream.
    post: [f64; HC],
    /// `comb[src][dst]`: share of old stream `src` in new stream `dst`.
    comb: [[f64; HC]; HC],
}

impl Coefs {
    /// The values in the layout of `Backend::hc_pre`'s mixing output: pre, post, then comb
    /// row by row (src-major).
    pub(crate) fn values(&self) -> [f64; HC_MIXES] {
        let mut v = [0.0; HC_MIXES];
        v[..HC].copy_from_slice(&self.pre);
        v[HC..2 * HC].copy_from_slice(&self.post);
        for (src, row) in self.comb.iter().enumerate() {
            v[2 * HC + HC * src..][..HC].copy_from_slice(row);
        }
        v
    }

    /// The values of [`Coefs::values`]' layout, read back (`Backend::hc_post`'s input).
    pub(crate) fn from_values(v: &[f64; HC_MIXES]) -> Coefs {
        Coefs {
            pre: std::array::from_fn(|s| v[s]),
            post: std::array::from_fn(|s| v[HC + s]),
            comb: std::array::from_fn(|src| std::array::from_fn(|dst| v[2 * HC + HC * src + dst])),
        }
    }
}

/// What `pre` computes for one token: the sub-block input and how to write its output back.
pub(crate) struct Mix {
    /// The sub-block's input: `sum_s pre[s] · X[s]`, width D.
    pub(crate) input: Vec<f64>,
    /// The mixing values.
    pub(crate) coefs: Coefs,
}

/// `sigmoid(m · scale + base) + eps` of the first HC mixes: the weight of each stream in the
/// input of a sub-block and, with the head's weights, of the output norm.
fn pre_weights(mixes: &[f64], w: HcView<'_>, eps: f64) -> [f64; HC] {
    std::array::from_fn(|s| sigmoid(mixes[s] * w.scale[0] as f64 + w.base[s] as f64) + eps)
}

/// `sum_s weights[s] · X[s]` of one token's streams.
fn weighted_streams(streams: &[f64], weights: &[f64; HC]) -> Vec<f64> {
    let d = streams.len() / HC;
    let mut out = vec![0.0; d];
    for (stream, weight) in streams.chunks_exact(d).zip(weights) {
        for (o, x) in out.iter_mut().zip(stream) {
            *o += weight * x;
        }
    }
    out
}

/// The mixes `fn · rms(streams)` of one token's streams (HC·D values, stream-major).
fn mixes(streams: &[f64], w: HcView<'_>, rms_eps: f64) -> Vec<f64> {
    matvec(w.func, 0, &rms_norm(streams, None, rms_eps))
}

/// A token's streams before the first layer: each of the `HC` streams its embedding `row`.
pub(crate) fn expand(row: &[f32]) -> Vec<f64> {
    row.iter()
        .cycle()
        .take(HC * row.len())
        .map(|&v| v as f64)
        .collect()
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

/// The `pre` step of a sub-block for one token's streams: the reference model's and
/// `CpuBackend::hc_pre`'s.
pub(crate) fn pre(
    streams: &[f64],
    w: HcView<'_>,
    rms_eps: f64,
    hc_eps: f64,
    sinkhorn_iterations: usize,
) -> Mix {
    let m = mixes(streams, w, rms_eps);
    let affine = |i: usize, family: usize| m[i] * w.scale[family] as f64 + w.base[i] as f64;
    let pre = pre_weights(&m, w, hc_eps);
    let post = std::array::from_fn(|s| 2.0 * sigmoid(affine(HC + s, 1)));
    let comb =
        std::array::from_fn(|src| std::array::from_fn(|dst| affine(2 * HC + HC * src + dst, 2)));
    Mix {
        input: weighted_streams(streams, &pre),
        coefs: Coefs {
            pre,
            post,
            comb: sinkhorn(comb, sinkhorn_iterations, hc_eps),
        },
    }
}

/// The `post` step: new stream `dst` = `post[dst] · f + sum_src comb[src][dst] · old[src]`
/// (the reference model's and `CpuBackend::hc_post`'s).
pub(crate) fn post(f: &[f64], old: &[f64], c: &Coefs) -> Vec<f64> {
    let d = f.len();
    let mut out = vec![0.0; HC * d];
    for (dst, new) in out.chunks_exact_mut(d).enumerate() {
        for (e, v) in new.iter_mut().enumerate() {
            *v = c.post[dst] * f[e]
                + (0..HC)
                    .map(|src| c.comb[src][dst] * old[src * d + e])
                    .sum::<f64>();
        }
    }
    out
}

/// The output head's mix of one token's streams into one vector of width D: `pre`'s input
/// with only its pre weights (the reference model's and `CpuBackend::hc_head`'s).
pub(crate) fn head(streams: &[f64], w: HcView<'_>, rms_eps: f64, hc_eps: f64) -> Vec<f64> {
    weighted_streams(
        streams,
        &pre_weights(&mixes(streams, w, rms_eps), w, hc_eps),
    )
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
        let coefs = Coefs {
            pre: [0.0; HC],
            post: [1.0, 0.5, 0.0, 2.0],
            comb: std::array::from_fn(|src| {
                std::array::from_fn(|dst| f64::from(u8::from(src == (dst + 1) % HC)))
            }),
        };
        assert_eq!(Coefs::from_values(&coefs.values()), coefs);
        assert_eq!(
            post(&[10.0], &[1.0, 2.0, 3.0, 4.0], &coefs),
            [12.0, 8.0, 4.0, 21.0]
        );
    }
}
