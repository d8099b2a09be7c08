//! The reference ops as plain functions over [`Mat`] and [`CpuWeight`]; [`crate::CpuBackend`]
//! only routes trait calls here, and tests may call them directly.

use moetile::model::gptoss::Yarn;
use moetile::model::{ExpertActivation, ExpertBiases, GateUp, Gating, RopeParams, RouterParams};

use crate::backend::{CpuWeight, Mat};

/// `sum(a[i] * b[i])` accumulated in f64.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

pub(crate) fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// x: (T, cols); w: `[cols, rows, (E)]` (expert `expert`) -> (T, rows).
pub fn matmul(x: &Mat, w: &CpuWeight, expert: usize) -> Mat {
    assert_eq!(x.cols, w.cols(), "matmul {}: input width", w.name);
    let mut out = Mat::zeros(x.rows, w.rows());
    for t in 0..x.rows {
        let xt = x.row(t);
        for (r, o) in out.row_mut(t).iter_mut().enumerate() {
            *o = dot(xt, w.row(expert, r)) as f32;
        }
    }
    out
}

/// Activations as the GPU's int8 mat-vecs see them (`wgsl/mv/x_int8.wgsl`): each block of 32
/// values quantized with scale `d = max|x| / 127` to `q = round(x * (127 / max|x|))`, ties to
/// even, in f32 as the shader computes it. Returns the quants and one scale per block.
///
/// # Panics
/// If `x.len()` is not a multiple of 32 (rows of every weight type are whole 32-value blocks).
pub fn int8_quantize(x: &[f32]) -> (Vec<i8>, Vec<f32>) {
    assert!(
        x.len().is_multiple_of(32),
        "{} values: not whole blocks",
        x.len()
    );
    let mut quants = Vec::with_capacity(x.len());
    let mut scales = Vec::with_capacity(x.len() / 32);
    for block in x.chunks(32) {
        let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
        quants.extend(block.iter().map(|v| (v * inv).round_ties_even() as i8));
        scales.push(max / 127.0);
    }
    (quants, scales)
}

/// RMS norm of each group of `w.len()` values of every row of x, times `w`.
pub fn rms_norm(x: &Mat, w: &[f32], eps: f32) -> Mat {
    let n = w.len();
    assert_eq!(
        x.cols % n,
        0,
        "rms_norm: row of {} is not whole groups of {n}",
        x.cols
    );
    let mut out = x.clone();
    for group in out.data.chunks_exact_mut(n) {
        let mean_sq = group.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
        let scale = 1.0 / (mean_sq + eps as f64).sqrt();
        for (v, &g) in group.iter_mut().zip(w) {
            *v = (*v as f64 * scale * g as f64) as f32;
        }
    }
    out
}

/// Rotates each head of row t as position `pos0 + t` (ggml's `rope_f32`, angles in f64).
pub fn rope(x: &mut Mat, head_dim: usize, pos0: usize, p: &RopeParams) {
    rope_yarn(x, head_dim, pos0, p, &Yarn::NONE);
}

/// [`rope`] extended by YaRN as ggml's `rope_yarn` does it: pair i turns by the interpolated
/// angle (`freq_scale` times the plain one) mixed towards the plain (extrapolated) one by
/// `ext_factor` times a ramp that is 1 below the correction dim of `beta_fast` and 0 above
/// that of `beta_slow`; with `ext_factor` not 0, the rotated values are scaled by
/// `attn_factor * (1 + 0.1 ln(1 / freq_scale))`.
pub(crate) fn rope_yarn(x: &mut Mat, head_dim: usize, pos0: usize, p: &RopeParams, yarn: &Yarn) {
    assert_eq!(
        x.cols % head_dim,
        0,
        "rope: row of {} is not whole heads of {head_dim}",
        x.cols
    );
    assert!(
        p.n_dims <= head_dim && p.n_dims.is_multiple_of(2),
        "rope: n_dims {}",
        p.n_dims
    );
    let (base, freq_scale, ext) = (
        p.freq_base as f64,
        p.freq_scale as f64,
        yarn.ext_factor as f64,
    );
    let half = p.n_dims / 2;
    // ggml's `ggml_rope_yarn_corr_dims`: the pair index at which a frequency turns `rotations`
    // times over the original context, the lower one floored, the upper one ceiled.
    let corr_dim = |rotations: f32| {
        let (n_dims, n_ctx) = (p.n_dims as f64, yarn.n_ctx_orig as f64);
        n_dims * (n_ctx / (rotations as f64 * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
    };
    let low = corr_dim(yarn.beta_fast).floor().max(0.0);
    let high = corr_dim(yarn.beta_slow).ceil().min(p.n_dims as f64 - 1.0);
    let mut mscale = yarn.attn_factor as f64;
    if ext != 0.0 {
        mscale *= 1.0 + 0.1 * (1.0 / freq_scale).ln();
    }
    // Per pair: the weight of the extrapolated angle.
    let mix: Vec<f64> = (0..half)
        .map(|i| {
            let y = (i as f64 - low) / (high - low).max(0.001);
            (1.0 - y.clamp(0.0, 1.0)) * ext
        })
        .collect();
    for t in 0..x.rows {
        let pos = (pos0 + t) as f64;
        for head in x.row_mut(t).chunks_exact_mut(head_dim) {
            for (i, &mix) in mix.iter().enumerate() {
                let extrap = pos * base.powf(-2.0 * i as f64 / p.n_dims as f64);
                let theta = freq_scale * extrap * (1.0 - mix) + extrap * mix;
                let (sin, cos) = theta.sin_cos();
                let (sin, cos) = (sin * mscale, cos * mscale);
                let (a, b) = if p.neox {
                    (i, i + half)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (x0, x1) = (head[a] as f64, head[b] as f64);
                head[a] = (x0 * cos - x1 * sin) as f32;
                head[b] = (x0 * sin + x1 * cos) as f32;
            }
        }
    }
}

/// `ln(1 + e^x)`, and `x` itself above 20 as ggml cuts it.
pub(crate) fn softplus(x: f64) -> f64 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// The gate of every logit of one token's row, in f64.
pub(crate) fn gates(row: &[f64], gating: Gating) -> Vec<f64> {
    match gating {
        Gating::Softmax => {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = row.iter().map(|&v| (v - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            exps.into_iter().map(|e| e / sum).collect()
        }
        Gating::Sigmoid => row.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect(),
        Gating::SqrtSoftplus => row.iter().map(|&v| softplus(v).sqrt()).collect(),
    }
}

/// How one token's experts are chosen (the router's [`moetile::model::Selection`], resolved
/// to host values).
#[derive(Debug, Clone, Copy)]
pub enum Choice<'a> {
    /// The K largest of the gates plus the bias, when there is one (`[E]`).
    Top(Option<&'a [f32]>),
    /// These experts (K ids).
    Given(&'a [u32]),
}

/// The id of an empty routing slot (a token with fewer than K choosable experts: NaN logits);
/// the routed experts skip it, as the GPU's map does.
pub const NO_EXPERT: u32 = u32::MAX;

/// The smallest sum the route weights are divided by when renormalised: 2^-14, the smallest
/// normal f16, as ggml clamps it.
pub(crate) const MIN_WEIGHT_SUM: f64 = 6.103515625e-5;

/// One token's `(expert, weight)` pairs from its gates: the experts of `choice` (a biased
/// choice ranks `gate + bias`; ties go to the lower id), weighted by their gates, divided by
/// their sum (floored at [`MIN_WEIGHT_SUM`]) when `normalize`, times `scale`; fewer than K
/// when NaN keys leave fewer to rank. The CPU backend's router and the deepseek4 reference's.
pub(crate) fn route_token(
    gates: &[f64],
    choice: Choice<'_>,
    k: usize,
    normalize: bool,
    scale: f64,
) -> Vec<(usize, f64)> {
    let chosen: Vec<usize> = match choice {
        Choice::Given(ids) => ids.iter().map(|&e| e as usize).collect(),
        Choice::Top(bias) => {
            let key: Vec<f64> = match bias {
                Some(bias) => gates.iter().zip(bias).map(|(g, &b)| g + b as f64).collect(),
                None => gates.to_vec(),
            };
            // NaN (a broken weight) is never chosen, as on the GPU.
            let mut order: Vec<usize> = (0..gates.len()).filter(|&e| !key[e].is_nan()).collect();
            order.sort_by(|&a, &b| key[b].total_cmp(&key[a]).then(a.cmp(&b)));
            order.truncate(k);
            order
        }
    };
    let norm = if normalize {
        chosen
            .iter()
            .map(|&e| gates[e])
            .sum::<f64>()
            .max(MIN_WEIGHT_SUM)
    } else {
        1.0
    };
    chosen
        .into_iter()
        .map(|e| (e, gates[e] / norm * scale))
        .collect()
}

/// Router: logits (T, E) -> `(ids, weights)`, each (T, K) row-major: per token the experts
/// `choice` gives ([`Choice::Given`] holds (T, K) ids) or ranks (ties to the lower id),
/// weighted by their gates, divided by their sum (at least 2^-14) when `p.normalize`, times
/// `p.weight_scale`.
pub fn route(logits: &Mat, choice: Choice<'_>, p: &RouterParams) -> (Vec<u32>, Vec<f32>) {
    let k = p.n_experts_used;
    assert!(k <= logits.cols, "route: K = {k} > E = {}", logits.cols);
    if let Choice::Given(ids) = choice {
        assert_eq!(
            ids.len(),
            logits.rows * k,
            "route: given ids for T = {}",
            logits.rows
        );
    }
    let (mut ids, mut weights) = (Vec::with_capacity(logits.rows * k), Vec::new());
    for t in 0..logits.rows {
        let row: Vec<f64> = logits.row(t).iter().map(|&v| v as f64).collect();
        let token_choice = match choice {
            Choice::Given(all) => Choice::Given(&all[t * k..(t + 1) * k]),
            top => top,
        };
        let picked = route_token(
            &gates(&row, p.gating),
            token_choice,
            k,
            p.normalize,
            p.weight_scale as f64,
        );
        // Slots past the experts a row of NaN left choosable: no expert, weight 0.
        let missing = k - picked.len();
        for (e, w) in picked {
            ids.push(e as u32);
            weights.push(w as f32);
        }
        ids.extend(std::iter::repeat_n(NO_EXPERT, missing));
        weights.extend(std::iter::repeat_n(0.0, missing));
    }
    (ids, weights)
}

/// The expert activation `act(g, u)`, in f64.
pub(crate) fn expert_activation(act: ExpertActivation, g: f64, u: f64) -> f64 {
    match act {
        ExpertActivation::SwiGlu => silu(g) * u,
        ExpertActivation::SwiGluClamped { limit } => {
            let limit = limit as f64;
            silu(g.min(limit)) * u.clamp(-limit, limit)
        }
        ExpertActivation::SwiGluOai { alpha, limit } => {
            let (alpha, limit) = (alpha as f64, limit as f64);
            let g = g.min(limit);
            g / (1.0 + (-alpha * g).exp()) * (u.clamp(-limit, limit) + 1.0)
        }
    }
}

/// Gate row `r` and up row `r` of expert `e`: rows `2r` and `2r + 1` of an interleaved tensor.
pub(crate) fn gate_up_rows(gate_up: &GateUp<CpuWeight>, e: usize, r: usize) -> (&[f32], &[f32]) {
    match gate_up {
        GateUp::Separate { gate, up } => (gate.row(e, r), up.row(e, r)),
        GateUp::Interleaved(w) => (w.row(e, 2 * r), w.row(e, 2 * r + 1)),
    }
}

/// `(D, F)` of the gate and up tensors, checked: `[D, F, E]` each, or `[D, 2F, E]` interleaved.
pub(crate) fn gate_up_shape(gate_up: &GateUp<CpuWeight>) -> Option<(usize, usize)> {
    match gate_up {
        GateUp::Separate { gate, up } => (gate.dims == up.dims).then(|| (gate.cols(), gate.rows())),
        GateUp::Interleaved(w) => w.rows().is_multiple_of(2).then(|| (w.cols(), w.rows() / 2)),
    }
}

/// The routed experts: `out[t] = sum_k w[t,k] * (down[e] @ act(gate[e] @ x[t] + bg[e], up[e]
/// @ x[t] + bu[e]) + bd[e])` with `e = ids[t*K + k]` and the biases (gate, up `[F, E]`, down
/// `[D, E]`) zero unless given. x: (T, D); gate, up: `[D, F, E]` (or one `[D, 2F, E]` tensor of
/// interleaved rows); down: `[F, D, E]` -> (T, D). The route weight is applied to the
/// activation before `down` (and to the down bias), as the GPU kernels do, and everything after
/// the f32 inputs stays in f64.
#[allow(clippy::too_many_arguments)]
pub fn moe(
    x: &Mat,
    ids: &[u32],
    weights: &[f32],
    k: usize,
    gate_up: &GateUp<CpuWeight>,
    down: &CpuWeight,
    biases: Option<&ExpertBiases<CpuWeight>>,
    act: ExpertActivation,
) -> Mat {
    let d = x.cols;
    assert_eq!(ids.len(), x.rows * k, "moe: ids are not (T, K)");
    let (gate_cols, f) = gate_up_shape(gate_up).expect("moe: gate/up shape");
    assert_eq!(gate_cols, d, "moe: gate/up width");
    assert!(down.cols() == f && down.rows() == d, "moe: down shape");
    let bias = |w: Option<&CpuWeight>, e: usize, rows: usize, r: usize| {
        w.map_or(0.0, |w| w.values[e * rows + r] as f64)
    };
    let mut out = Mat::zeros(x.rows, d);
    let mut mid = vec![0f32; f];
    for t in 0..x.rows {
        let mut acc = vec![0f64; d];
        for slot in 0..k {
            if ids[t * k + slot] == NO_EXPERT {
                continue;
            }
            let (e, w) = (ids[t * k + slot] as usize, weights[t * k + slot] as f64);
            for (r, m) in mid.iter_mut().enumerate() {
                let (gate, up) = gate_up_rows(gate_up, e, r);
                let g = dot(x.row(t), gate) + bias(biases.map(|b| &b.gate), e, f, r);
                let u = dot(x.row(t), up) + bias(biases.map(|b| &b.up), e, f, r);
                *m = (expert_activation(act, g, u) * w) as f32;
            }
            for (r, a) in acc.iter_mut().enumerate() {
                *a += dot(&mid, down.row(e, r)) + w * bias(biases.map(|b| &b.down), e, d, r);
            }
        }
        for (o, a) in out.row_mut(t).iter_mut().zip(acc) {
            *o = a as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use moetile::quant::GgmlType;

    fn weight(dims: &[usize], values: Vec<f32>) -> CpuWeight {
        CpuWeight {
            name: "w".into(),
            ty: GgmlType::F32,
            dims: dims.to_vec(),
            values,
        }
    }

    #[test]
    fn matmul_matches_hand_computed() {
        let x = Mat {
            rows: 2,
            cols: 3,
            data: vec![1., 2., 3., -1., 0., 1.],
        };
        // w: 2 rows of 3
        let w = weight(&[3, 2], vec![1., 0., 0., 0.5, 0.5, 0.5]);
        assert_eq!(matmul(&x, &w, 0).data, vec![1., 3., -1., 0.]);
    }

    #[test]
    fn rms_norm_per_group() {
        let x = Mat {
            rows: 1,
            cols: 4,
            data: vec![3., 4., 1., 1.],
        };
        let y = rms_norm(&x, &[1., 2.], 0.0);
        let s = (12.5f64).sqrt();
        assert!((y.data[0] as f64 - 3. / s).abs() < 1e-6);
        assert!((y.data[1] as f64 - 8. / s).abs() < 1e-6);
        assert!((y.data[2] - 1.).abs() < 1e-6 && (y.data[3] - 2.).abs() < 1e-6);
    }

    #[test]
    fn rope_rotates_pairs_by_position() {
        let p = RopeParams {
            n_dims: 2,
            freq_base: 10000.,
            freq_scale: 1.,
            neox: false,
        };
        let mut x = Mat {
            rows: 2,
            cols: 2,
            data: vec![1., 0., 1., 0.],
        };
        rope(&mut x, 2, 0, &p);
        assert_eq!(&x.data[..2], &[1., 0.]); // position 0: identity
        assert!((x.data[2] - 1f32.cos()).abs() < 1e-6 && (x.data[3] - 1f32.sin()).abs() < 1e-6);
        // NeoX pairs i with i + n_dims/2.
        let p = RopeParams {
            n_dims: 4,
            neox: true,
            ..p
        };
        let mut x = Mat {
            rows: 2,
            cols: 4,
            data: vec![0.; 8],
        };
        x.data[4] = 1.0;
        rope(&mut x, 4, 0, &p);
        assert!((x.data[4] - 1f32.cos()).abs() < 1e-6 && (x.data[6] - 1f32.sin()).abs() < 1e-6);
    }

    /// YaRN as gpt-oss sets it (base 150000, factor 32, original context 4096): pair 0 (below
    /// the correction dims) turns by the plain angle, the last pair by the interpolated one,
    /// and every rotated value is scaled by 1 + 0.1 ln 32.
    #[test]
    fn yarn_extrapolates_fast_pairs_interpolates_slow_ones_and_scales() {
        let p = RopeParams {
            n_dims: 64,
            freq_base: 150000.,
            freq_scale: 1. / 32.,
            neox: true,
        };
        let yarn = Yarn {
            ext_factor: 1.,
            attn_factor: 1.,
            n_ctx_orig: 4096,
            ..Yarn::NONE
        };
        let mut x = Mat {
            rows: 2,
            cols: 64,
            data: vec![1.; 128],
        };
        rope_yarn(&mut x, 64, 0, &p, &yarn);
        let m = 1. + 0.1 * 32f64.ln();
        assert!(
            (x.data[0] as f64 - m).abs() < 1e-6,
            "position 0 is only scaled"
        );
        let turn = |theta: f64, i: usize| {
            let (a, b) = (x.data[64 + i] as f64, x.data[64 + i + 32] as f64);
            let want = (
                m * (theta.cos() - theta.sin()),
                m * (theta.sin() + theta.cos()),
            );
            assert!(
                (a - want.0).abs() < 1e-5 && (b - want.1).abs() < 1e-5,
                "pair {i}"
            );
        };
        turn(1.0, 0);
        turn(150000f64.powf(-62. / 64.) / 32., 31);
    }

    #[test]
    fn oai_swiglu_clamps_gate_above_and_up_both_sides() {
        let act = ExpertActivation::SwiGluOai {
            alpha: 1.702,
            limit: 7.,
        };
        let sig = |v: f64| 1. / (1. + (-v).exp());
        let (alpha, limit) = (1.702f32 as f64, 7.);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(expert_activation(act, 1., 0.5), sig(alpha) * 1.5));
        assert!(near(
            expert_activation(act, 10., -9.),
            limit * sig(alpha * limit) * (1. - limit)
        ));
        assert!(near(
            expert_activation(act, -3., 9.),
            -3. * sig(-3. * alpha) * (limit + 1.)
        ));
    }

    #[test]
    fn route_softmax_topk_normalised_and_ties_to_lower_id() {
        let logits = Mat {
            rows: 1,
            cols: 4,
            data: vec![1., 3., 3., 0.],
        };
        let p = RouterParams {
            n_experts_used: 2,
            gating: Gating::Softmax,
            normalize: true,
            weight_scale: 1.,
        };
        let (ids, w) = route(&logits, Choice::Top(None), &p);
        assert_eq!(ids, vec![1, 2]);
        assert!((w[0] - 0.5).abs() < 1e-7 && (w[1] - 0.5).abs() < 1e-7);
        let (_, w) = route(
            &logits,
            Choice::Top(None),
            &RouterParams {
                normalize: false,
                ..p
            },
        );
        let z = 1f64.exp() + 2. * 3f64.exp() + 1.;
        assert!((w[0] as f64 - 3f64.exp() / z).abs() < 1e-7);
    }

    #[test]
    fn moe_of_identity_experts_sums_weighted_activation() {
        // D = F = 2; every expert is the identity, so out = sum_k w_k * silu(x) * x.
        let eye: Vec<f32> = [1., 0., 0., 1.].repeat(3);
        let w = weight(&[2, 2, 3], eye);
        let x = Mat {
            rows: 1,
            cols: 2,
            data: vec![1., -2.],
        };
        let gate_up = GateUp::Separate {
            gate: w.clone(),
            up: w.clone(),
        };
        let out = moe(
            &x,
            &[0, 2],
            &[0.25, 0.75],
            2,
            &gate_up,
            &w,
            None,
            ExpertActivation::SwiGlu,
        );
        for (o, xi) in out.data.iter().zip([1f64, -2.]) {
            assert!((*o as f64 - silu(xi) * xi).abs() < 1e-6);
        }
        let clamped = ExpertActivation::SwiGluClamped { limit: 10. };
        let x = Mat {
            rows: 1,
            cols: 2,
            data: vec![20., -30.],
        };
        let out = moe(&x, &[1, 2], &[0.5, 0.5], 2, &gate_up, &w, None, clamped);
        assert!((out.data[0] as f64 - silu(10.) * 10.).abs() < 1e-4);
        assert!((out.data[1] as f64 - silu(-30.) * -10.).abs() < 1e-4);
        // An empty slot (NaN logits left no expert) adds nothing.
        let empty = moe(
            &x,
            &[1, NO_EXPERT],
            &[1.0, 0.0],
            2,
            &gate_up,
            &w,
            None,
            clamped,
        );
        assert_eq!(empty.data, out.data);
    }

    #[test]
    fn interleaved_gate_up_is_the_same_layer() {
        // D = 2, F = 2, E = 2: distinct values everywhere, so a row taken from the wrong
        // tensor or expert changes the result.
        let (d, f, e) = (2, 2, 2);
        let values = |seed: f32| -> Vec<f32> {
            (0..d * f * e)
                .map(|i| ((i as f32 + seed) * 0.37).sin())
                .collect()
        };
        let (gate, up) = (
            weight(&[d, f, e], values(1.)),
            weight(&[d, f, e], values(9.)),
        );
        let down = weight(&[f, d, e], values(17.));
        // Expert-major; row 2i is gate row i, row 2i + 1 up row i.
        let mut interleaved = Vec::new();
        for ex in 0..e {
            for r in 0..f {
                interleaved.extend_from_slice(gate.row(ex, r));
                interleaved.extend_from_slice(up.row(ex, r));
            }
        }
        let x = Mat {
            rows: 2,
            cols: d,
            data: vec![0.5, -1.5, 2., 1.],
        };
        let (ids, w) = ([1, 0, 0, 1], [0.25, 0.75, 0.5, 0.5]);
        for act in [
            ExpertActivation::SwiGlu,
            ExpertActivation::SwiGluClamped { limit: 0.5 },
        ] {
            let separate = GateUp::Separate {
                gate: gate.clone(),
                up: up.clone(),
            };
            let merged = GateUp::Interleaved(weight(&[d, 2 * f, e], interleaved.clone()));
            let a = moe(&x, &ids, &w, 2, &separate, &down, None, act);
            let b = moe(&x, &ids, &w, 2, &merged, &down, None, act);
            assert_eq!(a, b, "{act:?}");
            assert!(a.data.iter().all(|v| *v != 0.0), "{a:?}");
        }
    }
}
