//! The FFN sub-block: routed experts chosen by a `sqrt(softplus)` router (or, in the first
//! `hash_layers` layers, by a fixed table of the token id) plus one shared expert, both with
//! the clamped SwiGLU.

use moetile::Result;
use moetile::model::ExpertActivation;

use super::config::Deepseek4Config;
use super::math::{dot, matvec, softplus};
use super::weights::Tensors;
use crate::CpuWeight;
use crate::ops::expert_activation;

/// How a layer chooses its experts.
enum Selection {
    /// The top K of `probs + bias`: the bias (`exp_probs_b`) moves the choice, not the weights.
    Biased(Vec<f32>),
    /// `ffn_gate_tid2eid`: K expert ids for each token id, row-major (V, K).
    Hashed(Vec<usize>),
}

/// One layer's FFN weights.
pub(super) struct MoeWeights {
    /// `[D]`: the sub-block's input norm.
    pub(super) norm: Vec<f32>,
    /// `[D, E]`.
    router: CpuWeight,
    selection: Selection,
    /// `[D, F, E]`, `[D, F, E]`, `[F, D, E]`.
    gate: CpuWeight,
    up: CpuWeight,
    down: CpuWeight,
    /// `[D, Fs]`, `[D, Fs]`, `[Fs, D]`.
    shared_gate: CpuWeight,
    shared_up: CpuWeight,
    shared_down: CpuWeight,
}

impl MoeWeights {
    /// The FFN tensors of layer `il`.
    pub(super) fn load(t: &Tensors<'_>, il: usize, cfg: &Deepseek4Config) -> Result<MoeWeights> {
        let name = |n: &str| format!("blk.{il}.{n}");
        let (d, f, fs, e) = (cfg.d_model, cfg.expert_ff, cfg.shared_ff, cfg.n_experts);
        let selection = if il < cfg.hash_layers {
            Selection::Hashed(t.ids(
                &name("ffn_gate_tid2eid.weight"),
                cfg.n_experts_used,
                cfg.n_vocab,
                e,
            )?)
        } else {
            Selection::Biased(t.vector(&name("exp_probs_b.bias"), e)?)
        };
        Ok(MoeWeights {
            norm: t.vector(&name("ffn_norm.weight"), d)?,
            router: t.weight(&name("ffn_gate_inp.weight"), &[d, e])?,
            selection,
            gate: t.weight(&name("ffn_gate_exps.weight"), &[d, f, e])?,
            up: t.weight(&name("ffn_up_exps.weight"), &[d, f, e])?,
            down: t.weight(&name("ffn_down_exps.weight"), &[f, d, e])?,
            shared_gate: t.weight(&name("ffn_gate_shexp.weight"), &[d, fs])?,
            shared_up: t.weight(&name("ffn_up_shexp.weight"), &[d, fs])?,
            shared_down: t.weight(&name("ffn_down_shexp.weight"), &[fs, d])?,
        })
    }
}

/// The smallest sum the route weights are divided by when renormalised (ggml's floor).
const MIN_WEIGHT_SUM: f64 = 6.103515625e-5;

/// `(expert, weight)` for each of the `k` experts of `token`: weights `sqrt(softplus(logit))`
/// of the chosen experts, renormalised when `normalize`, times `scale`. Ties in a biased
/// choice go to the lower expert id.
fn route(
    logits: &[f64],
    selection: &Selection,
    token: usize,
    k: usize,
    normalize: bool,
    scale: f64,
) -> Vec<(usize, f64)> {
    let probs: Vec<f64> = logits.iter().map(|&l| softplus(l).sqrt()).collect();
    let chosen: Vec<usize> = match selection {
        Selection::Hashed(table) => table[token * k..(token + 1) * k].to_vec(),
        Selection::Biased(bias) => {
            let biased: Vec<f64> = probs.iter().zip(bias).map(|(p, &b)| p + b as f64).collect();
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| biased[b].total_cmp(&biased[a]).then(a.cmp(&b)));
            order.truncate(k);
            order
        }
    };
    let sum: f64 = chosen.iter().map(|&e| probs[e]).sum();
    let norm = if normalize {
        sum.max(MIN_WEIGHT_SUM)
    } else {
        1.0
    };
    chosen
        .into_iter()
        .map(|e| (e, probs[e] / norm * scale))
        .collect()
}

/// SwiGLU with deepseek4's clamp: gate from above, up both ways, off at `limit <= 1e-6`.
fn activation(limit: f32) -> ExpertActivation {
    if limit > 1e-6 {
        ExpertActivation::SwiGluClamped { limit }
    } else {
        ExpertActivation::SwiGlu
    }
}

/// `down · act(gate · x, up · x)` of expert `e` of a (stacked) FFN.
fn ffn(
    gate: &CpuWeight,
    up: &CpuWeight,
    down: &CpuWeight,
    e: usize,
    x: &[f64],
    act: ExpertActivation,
) -> Vec<f64> {
    let mid: Vec<f64> = (0..gate.rows())
        .map(|r| expert_activation(act, dot(gate.row(e, r), x), dot(up.row(e, r), x)))
        .collect();
    matvec(down, e, &mid)
}

/// The FFN sub-block of layer `il` for one token: x, its normed input (D) -> (D).
pub(super) fn moe(
    w: &MoeWeights,
    x: &[f64],
    token: usize,
    il: usize,
    cfg: &Deepseek4Config,
) -> Vec<f64> {
    let routed = activation(cfg.swiglu_clamp[il]);
    let mut out = ffn(
        &w.shared_gate,
        &w.shared_up,
        &w.shared_down,
        0,
        x,
        activation(cfg.swiglu_clamp_shared[il]),
    );
    let mut experts = vec![0.0; x.len()];
    let logits = matvec(&w.router, 0, x);
    let (k, normalize, scale) = (
        cfg.n_experts_used,
        cfg.expert_weights_norm,
        cfg.expert_weights_scale,
    );
    for (e, weight) in route(&logits, &w.selection, token, k, normalize, scale) {
        for (o, y) in experts
            .iter_mut()
            .zip(ffn(&w.gate, &w.up, &w.down, e, x, routed))
        {
            *o += weight * y;
        }
    }
    out.iter_mut().zip(experts).for_each(|(o, m)| *o += m);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_moves_the_choice_not_the_weights() {
        // softplus(0) = ln 2; softplus(30) = 30 (the cut above 20).
        let logits = [0.0, 30.0, -1.0];
        let (p0, p1) = (2f64.ln().sqrt(), 30f64.sqrt());
        let bias = Selection::Biased(vec![10.0, 0.0, 0.0]);
        let got = route(&logits, &bias, 0, 1, false, 1.0);
        assert_eq!(got, [(0, p0)]);
        let got = route(&logits, &bias, 0, 2, true, 1.5);
        assert_eq!(got[0].0, 0);
        assert_eq!(got[1].0, 1);
        assert!((got[0].1 - 1.5 * p0 / (p0 + p1)).abs() < 1e-15);
        assert!((got[1].1 - 1.5 * p1 / (p0 + p1)).abs() < 1e-15);
    }

    #[test]
    fn hash_routing_reads_the_token_row_and_tiny_sums_are_floored() {
        // Token 1 -> experts 2, 0. Logits of -40 give probs of about e^-20, summing far below
        // the floor: the weights are divided by the floor, not renormalised to 1.
        let table = Selection::Hashed(vec![0, 1, 2, 0]);
        let got = route(&[-40.0; 3], &table, 1, 2, true, 1.0);
        let p = (-40f64).exp().ln_1p().sqrt();
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 0]);
        assert!((got[0].1 - p / MIN_WEIGHT_SUM).abs() < 1e-18, "{got:?}");
    }
}
