//! The FFN sub-block: routed experts chosen by a `sqrt(softplus)` router (or, in the first
//! `hash_layers` layers, by a fixed table of the token id) plus one shared expert, both with
//! the clamped SwiGLU.

use moetile::model::deepseek4::{Deepseek4Config, ExpertChoice, LayerWeights};
use moetile::model::{ExpertActivation, GateUp, Gating};

use super::math::{dot, matvec};
use crate::CpuWeight;
use crate::ops::{Choice, expert_activation, gate_up_rows, gates, route_token};

/// How a layer chooses its experts, as [`route`] reads it.
enum Selection<'a> {
    /// The top K of `probs + bias`: the bias (`exp_probs_b`) moves the choice, not the weights.
    Biased(&'a [f32]),
    /// `ffn_gate_tid2eid`: K expert ids for each token id, row-major (V, K).
    Hashed(&'a [u32]),
}

impl<'a> From<&'a ExpertChoice<CpuWeight>> for Selection<'a> {
    fn from(choice: &'a ExpertChoice<CpuWeight>) -> Self {
        match choice {
            ExpertChoice::Biased(bias) => Selection::Biased(&bias.values),
            ExpertChoice::Hashed(table) => Selection::Hashed(table),
        }
    }
}

/// `(expert, weight)` for each of the `k` experts of `token`: weights `sqrt(softplus(logit))`
/// of the chosen experts, renormalised when `normalize`, times `scale`. Ties in a biased
/// choice go to the lower expert id. The CPU backend's router, on these gates and choices.
fn route(
    logits: &[f64],
    selection: &Selection<'_>,
    token: usize,
    k: usize,
    normalize: bool,
    scale: f64,
) -> Vec<(usize, f64)> {
    let choice = match selection {
        Selection::Hashed(table) => Choice::Given(&table[token * k..(token + 1) * k]),
        Selection::Biased(bias) => Choice::Top(Some(bias)),
    };
    route_token(
        &gates(logits, Gating::SqrtSoftplus),
        choice,
        k,
        normalize,
        scale,
    )
}

/// `down · act(gate · x, up · x)` of expert `e` of a (stacked) FFN.
fn ffn(
    gate_up: &GateUp<CpuWeight>,
    down: &CpuWeight,
    e: usize,
    x: &[f64],
    act: ExpertActivation,
) -> Vec<f64> {
    let mid: Vec<f64> = (0..down.cols())
        .map(|r| {
            let (gate, up) = gate_up_rows(gate_up, e, r);
            expert_activation(act, dot(gate, x), dot(up, x))
        })
        .collect();
    matvec(down, e, &mid)
}

/// The FFN sub-block of layer `il` for one token: x, its normed input (D) -> (D), and the
/// K routed experts it chose, in the router's order (a hash-routed layer's: its table's).
pub(super) fn moe(
    w: &LayerWeights<CpuWeight>,
    x: &[f64],
    token: usize,
    il: usize,
    cfg: &Deepseek4Config,
) -> (Vec<f64>, Vec<usize>) {
    let routed = cfg.routed_activation(il);
    let shared = cfg.shared_activation(il);
    let mut out = ffn(&w.shared_gate_up, &w.shared_down, 0, x, shared);
    let mut experts = vec![0.0; x.len()];
    let logits = matvec(&w.router, 0, x);
    let (k, normalize, scale) = (
        cfg.n_experts_used,
        cfg.expert_weights_norm,
        cfg.expert_weights_scale,
    );
    let selection = Selection::from(&w.choice);
    let routes = route(&logits, &selection, token, k, normalize, scale);
    for &(e, weight) in &routes {
        for (o, y) in experts
            .iter_mut()
            .zip(ffn(&w.gate_up, &w.down, e, x, routed))
        {
            *o += weight * y;
        }
    }
    out.iter_mut().zip(experts).for_each(|(o, m)| *o += m);
    (out, routes.into_iter().map(|(e, _)| e).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_moves_the_choice_not_the_weights() {
        // softplus(0) = ln 2; softplus(30) = 30 (the cut above 20).
        let logits = [0.0, 30.0, -1.0];
        let (p0, p1) = (2f64.ln().sqrt(), 30f64.sqrt());
        let bias = Selection::Biased(&[10.0, 0.0, 0.0]);
        let got = route(&logits, &bias, 0, 1, false, 1.0);
        assert_eq!(got, [(0, p0)]);
        let got = route(&logits, &bias, 0, 2, true, 1.5);
        assert_eq!(got[0].0, 0);
        assert_eq!(got[1].0, 1);
        assert!((got[0].1 - 1.5 * p0 / (p0 + p1)).abs() < 1e-15);
        assert!((got[1].1 - 1.5 * p1 / (p0 + p1)).abs() < 1e-15);
    }

    /// `CpuBackend::route` with deepseek4's gating is the model's router: on f32 logits (a
    /// biased row, a hashed row), its ids and weights are the model's, rounded to f32.
    #[test]
    fn cpu_route_is_the_reference_router() {
        use moetile::model::{Backend, RouterParams, Selection as Choose};

        let (e, k, rows) = (16, 4, 3);
        let logits: Vec<f32> = (0..rows * e)
            .map(|i| (i * 7919 % 1013) as f32 / 60.0 - 8.0)
            .collect();
        let bias: Vec<f32> = (0..e).map(|i| (i % 5) as f32 * 0.3 - 0.6).collect();
        let table: Vec<u32> = (0..5 * k as u32).map(|i| (i * 7) % e as u32).collect();
        let tokens = [4, 0, 4];
        let mut cpu = crate::CpuBackend::new();
        let bias_w = CpuWeight {
            name: "exp_probs_b.bias".into(),
            ty: moetile::quant::GgmlType::F32,
            dims: vec![e],
            values: bias.clone(),
        };
        let x = cpu.act_from_host(rows, e, &logits).unwrap();
        let p = RouterParams {
            n_experts_used: k,
            gating: Gating::SqrtSoftplus,
            normalize: true,
            weight_scale: 1.5,
        };
        let biased = cpu.route(&x, Choose::Biased(&bias_w), &p).unwrap();
        let hashed = cpu
            .route(
                &x,
                Choose::Hashed {
                    table: &table,
                    tokens: &tokens,
                },
                &p,
            )
            .unwrap();
        let model_table = Selection::Hashed(&table);
        for (t, &token) in tokens.iter().enumerate() {
            let row: Vec<f64> = x.row(t).iter().map(|&v| v as f64).collect();
            for (got, selection, token) in [
                (&biased, &Selection::Biased(&bias), 0),
                (&hashed, &model_table, token as usize),
            ] {
                let want = route(&row, selection, token, k, true, 1.5);
                let ids: Vec<u32> = want.iter().map(|r| r.0 as u32).collect();
                let weights: Vec<f32> = want.iter().map(|r| r.1 as f32).collect();
                assert_eq!(got.ids[t * k..][..k], ids, "token {t}");
                assert_eq!(got.weights[t * k..][..k], weights, "token {t}");
            }
        }
    }

    #[test]
    fn hash_routing_reads_the_token_row_and_tiny_sums_are_floored() {
        // Token 1 -> experts 2, 0. Logits of -40 give probs of about e^-20, summing far below
        // the floor: the weights are divided by the floor, not renormalised to 1.
        let table = Selection::Hashed(&[0, 1, 2, 0]);
        let got = route(&[-40.0; 3], &table, 1, 2, true, 1.0);
        let p = (-40f64).exp().ln_1p().sqrt();
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 0]);
        assert!(
            (got[0].1 - p / crate::ops::MIN_WEIGHT_SUM).abs() < 1e-18,
            "{got:?}"
        );
    }
}
