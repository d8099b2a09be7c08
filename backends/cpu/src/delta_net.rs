//! qwen35moe's Gated DeltaNet, token by token (the recurrent form): the causal depthwise
//! convolution with its carried tail, the gated delta rule over each value head's state, and
//! the gated RMS norm. llama.cpp's graph (`llm_build_delta_net_base`, `ggml_ssm_conv`,
//! `ggml_gated_delta_net`) is the reference for the math; values are f64 within a token and
//! stored f32 between tokens, so any split of a prompt into calls gives the same bits.

use moetile::model::DeltaNetParams;
use moetile::model::qwen35moe::{DeltaNetConfig, Mixer, Qwen35MoeConfig};

use crate::backend::{CpuWeight, Mat};
use crate::ops::{silu, softplus};

/// What one DeltaNet layer carries from token to token.
#[derive(Debug, Clone)]
struct LayerState {
    /// Tokens it holds.
    tokens: usize,
    /// The last `taps - 1` convolution inputs, oldest first: `(taps - 1) x channels`.
    conv: Vec<f32>,
    /// Per value head the `head_dim x head_dim` state, `[head][key i][value j]`.
    state: Vec<f32>,
}

/// The DeltaNet layers' state of one sequence (`None` for attention layers).
#[derive(Debug, Clone)]
pub(crate) struct DeltaNetState {
    shape: DeltaNetConfig,
    layers: Vec<Option<LayerState>>,
}

impl DeltaNetState {
    /// Zero state for each DeltaNet layer of `cfg`.
    pub(crate) fn new(cfg: &Qwen35MoeConfig) -> DeltaNetState {
        let d = cfg.delta_net;
        let empty = LayerState {
            tokens: 0,
            conv: vec![0.0; (d.conv_taps - 1) * d.conv_channels()],
            state: vec![0.0; d.n_v_heads * d.head_dim * d.head_dim],
        };
        let layers = cfg
            .mixers
            .iter()
            .map(|&m| (m == Mixer::DeltaNet).then(|| empty.clone()))
            .collect();
        DeltaNetState { shape: d, layers }
    }
}

/// The weights [`delta_net`] reads, as f32 slices checked against the shape.
pub(crate) struct Weights<'a> {
    /// `[channels][taps]`.
    pub(crate) conv: &'a [f32],
    pub(crate) dt_bias: &'a [f32],
    pub(crate) a: &'a [f32],
    pub(crate) norm: &'a [f32],
}

/// `proj` (T, channels + values + 2 value heads) = `[qkv | z | beta | alpha]` of T tokens at
/// positions `pos0..` -> (T, values), continuing layer `layer` of `st` (see
/// [`moetile::model::Backend::delta_net`]).
pub(crate) fn delta_net(
    proj: &Mat,
    w: &Weights<'_>,
    st: &mut DeltaNetState,
    layer: usize,
    pos0: usize,
    p: &DeltaNetParams,
) -> moetile::Result<Mat> {
    let d = p.shape;
    if d != st.shape {
        return Err(invalid(format!(
            "the cache was made for DeltaNet {:?}, the layer is {d:?}",
            st.shape
        )));
    }
    let ls = st
        .layers
        .get_mut(layer)
        .and_then(Option::as_mut)
        .ok_or_else(|| invalid(format!("layer {layer} has no DeltaNet state in this cache")))?;
    if pos0 == 0 {
        ls.tokens = 0;
        ls.conv.fill(0.0);
        ls.state.fill(0.0);
    } else if pos0 != ls.tokens {
        return Err(invalid(format!(
            "layer {layer}'s state holds {} tokens; it cannot continue at position {pos0} \
             (a DeltaNet state does not rewind: continue where it stopped or restart at 0)",
            ls.tokens
        )));
    }
    let (ch, values, heads) = (d.conv_channels(), d.value_width(), d.n_v_heads);
    let mut out = Mat::zeros(proj.rows, values);
    for t in 0..proj.rows {
        let row = proj.row(t);
        let (qkv, rest) = row.split_at(ch);
        let (z, rest) = rest.split_at(values);
        let (beta, alpha) = rest.split_at(heads);
        let x = conv_silu(qkv, w.conv, &mut ls.conv, d.conv_taps);
        let o = delta_rule(&x, beta, alpha, w, &mut ls.state, &d, p.eps as f64);
        gated_rms_norm(&o, z, w.norm, p.eps as f64, out.row_mut(t));
        ls.tokens += 1;
    }
    Ok(out)
}

/// One token's `silu(conv1d)`: channel c is `sum_k window[k][c] * conv[c][k]` over the
/// `taps - 1` carried inputs then `qkv`; `tail` then drops its oldest input for `qkv`.
fn conv_silu(qkv: &[f32], conv: &[f32], tail: &mut [f32], taps: usize) -> Vec<f64> {
    let ch = qkv.len();
    let out = (0..ch)
        .map(|c| {
            let taps_c = &conv[c * taps..(c + 1) * taps];
            let past: f64 = (0..taps - 1)
                .map(|k| tail[k * ch + c] as f64 * taps_c[k] as f64)
                .sum();
            silu(past + qkv[c] as f64 * taps_c[taps - 1] as f64)
        })
        .collect();
    if taps > 1 {
        tail.copy_within(ch.., 0);
        tail[(taps - 2) * ch..].copy_from_slice(qkv);
    }
    out
}

/// The gated delta rule for one token over every value head's `state`: x is the convolved
/// `[q | k | v]`. Returns the heads' outputs (values).
fn delta_rule(
    x: &[f64],
    beta: &[f32],
    alpha: &[f32],
    w: &Weights<'_>,
    state: &mut [f32],
    d: &DeltaNetConfig,
    eps: f64,
) -> Vec<f64> {
    let (n, kw) = (d.head_dim, d.key_width());
    // llama.cpp's L2 norm: x / sqrt(sum x^2 + eps).
    let l2 = |v: &[f64]| -> Vec<f64> {
        let s = (v.iter().map(|a| a * a).sum::<f64>() + eps).sqrt();
        v.iter().map(|a| a / s).collect()
    };
    let scale = 1.0 / (n as f64).sqrt();
    let mut out = vec![0.0; d.value_width()];
    for h in 0..d.n_v_heads {
        let kh = h % d.n_k_heads;
        let q = l2(&x[kh * n..(kh + 1) * n]);
        let k = l2(&x[kw + kh * n..kw + (kh + 1) * n]);
        let v = &x[2 * kw + h * n..2 * kw + (h + 1) * n];
        let g = softplus(alpha[h] as f64 + w.dt_bias[h] as f64) * w.a[h] as f64;
        let decay = g.exp();
        let b = 1.0 / (1.0 + (-(beta[h] as f64)).exp());
        let s = &mut state[h * n * n..(h + 1) * n * n];
        let mut m: Vec<f64> = s.iter().map(|&e| e as f64 * decay).collect();
        for j in 0..n {
            let sk: f64 = (0..n).map(|i| m[i * n + j] * k[i]).sum();
            let delta = (v[j] - sk) * b;
            (0..n).for_each(|i| m[i * n + j] += k[i] * delta);
        }
        for j in 0..n {
            out[h * n + j] = (0..n).map(|i| m[i * n + j] * q[i]).sum::<f64>() * scale;
        }
        s.iter_mut().zip(&m).for_each(|(e, &v)| *e = v as f32);
    }
    out
}

/// Per value head: `rms_norm(o) * norm * silu(z)` into `out`.
fn gated_rms_norm(o: &[f64], z: &[f32], norm: &[f32], eps: f64, out: &mut [f32]) {
    let n = norm.len();
    for ((o, z), out) in o.chunks(n).zip(z.chunks(n)).zip(out.chunks_mut(n)) {
        let r = 1.0 / (o.iter().map(|v| v * v).sum::<f64>() / n as f64 + eps).sqrt();
        for i in 0..n {
            out[i] = (o[i] * r * norm[i] as f64 * silu(z[i] as f64)) as f32;
        }
    }
}

fn invalid(detail: String) -> moetile::Error {
    moetile::Error::Shape {
        op: "delta_net".into(),
        detail,
    }
}

/// Checks `w` against the shape and views it as f32 slices.
pub(crate) fn weights<'a>(
    conv: &'a CpuWeight,
    dt_bias: &'a CpuWeight,
    a: &'a CpuWeight,
    norm: &'a CpuWeight,
    d: &DeltaNetConfig,
) -> moetile::Result<Weights<'a>> {
    let checks = [
        (conv, d.conv_channels() * d.conv_taps),
        (dt_bias, d.n_v_heads),
        (a, d.n_v_heads),
        (norm, d.head_dim),
    ];
    for (w, len) in checks {
        if w.values.len() != len {
            return Err(invalid(format!(
                "{} has {} values; the layer needs {len}",
                w.name,
                w.values.len()
            )));
        }
    }
    Ok(Weights {
        conv: &conv.values,
        dt_bias: &dt_bias.values,
        a: &a.values,
        norm: &norm.values,
    })
}
