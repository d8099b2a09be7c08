//! qwen35moe's tensors resolved into typed per-layer structs and uploaded, every shape checked
//! against the config first. Two layouts are rewritten at load so the ops see plain ones:
//! `attn_q` holds each head's query and output gate interleaved (split into a query matrix
//! stacked with k and v, and a gate matrix), and `ffn_gate_up_exps` holds each expert's gate
//! rows then its up rows (split into gate and up for [`Backend::upload_gate_up`]).

use crate::gguf::GgufFile;
use crate::model::qwen35moe::{Mixer, Qwen35MoeConfig};
use crate::model::weights::Loader;
use crate::model::{Backend, FfnWeights, LoadProgress, ModelConfig, WeightData};
use crate::{Error, Result};

/// A Gated DeltaNet layer's weights.
#[derive(Debug)]
pub struct DeltaNetWeights<W> {
    /// `attn_qkv` `[D, conv channels]`, `attn_gate` (z) `[D, values]`, `ssm_beta` and
    /// `ssm_alpha` `[D, value heads]`, stacked as [`crate::model::AttentionWeights::qkv`] is:
    /// one [`Backend::project`] gives `[qkv | z | beta | alpha]`.
    pub in_proj: Vec<W>,
    /// `ssm_conv1d` `[taps, conv channels]`: each channel's taps, oldest input first.
    pub conv: W,
    /// `ssm_dt.bias` `[value heads]`, added to alpha before the softplus.
    pub dt_bias: W,
    /// `ssm_a` `[value heads]`: `-exp(A_log)`, the decay rate.
    pub a: W,
    /// `ssm_norm` `[head_dim]`: the gated RMS norm's gain, shared by the heads.
    pub norm: W,
    /// `ssm_out` `[values, D]`.
    pub out: W,
}

/// A gated full-attention layer's weights.
#[derive(Debug)]
pub struct GatedAttentionWeights<W> {
    /// The query rows of `attn_q`, then `attn_k` and `attn_v`, stacked for one projection.
    pub qkv: Vec<W>,
    /// The gate rows of `attn_q` `[D, n_heads * head_dim]`.
    pub gate: W,
    /// `attn_output` `[n_heads * head_dim, D]`.
    pub out: W,
    /// `attn_q_norm`, `attn_k_norm` `[head_dim]`.
    pub qk_norm: [W; 2],
}

/// What mixes tokens in one layer.
#[derive(Debug)]
pub enum MixerWeights<W> {
    /// Gated DeltaNet.
    DeltaNet(DeltaNetWeights<W>),
    /// Gated full attention.
    Attention(GatedAttentionWeights<W>),
}

/// One block.
#[derive(Debug)]
pub struct LayerWeights<W> {
    /// `attn_norm` `[D]`.
    pub norm: W,
    /// The token mixer.
    pub mixer: MixerWeights<W>,
    /// `post_attention_norm` `[D]`: the norm before the FFN.
    pub post_norm: W,
    /// Routed experts with a gated shared expert.
    pub ffn: FfnWeights<W>,
}

/// All weights of a qwen35moe model.
#[derive(Debug)]
pub struct Qwen35MoeWeights<W> {
    /// `token_embd` `[D, vocab]`.
    pub embed: W,
    /// Blocks (not the multi-token-prediction ones).
    pub layers: Vec<LayerWeights<W>>,
    /// `output_norm` `[D]`.
    pub output_norm: W,
    /// `output` `[D, vocab]`; `None` when tied to the embedding table.
    pub output: Option<W>,
}

/// Uploads every weight `cfg` needs from `file` to `backend`.
pub fn load_weights<B: Backend>(
    file: &GgufFile,
    cfg: &ModelConfig,
    q: &Qwen35MoeConfig,
    backend: &mut B,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<Qwen35MoeWeights<B::Weight>> {
    // llama.cpp multiplies a matmul's output by `W.scale` where the file has one (and adds
    // attention biases); real files carry neither, and computing without them would be wrong.
    if let Some(t) = file.tensors().iter().find(|t| {
        let attention_bias = t.name.contains(".attn_") && t.name.ends_with(".bias");
        t.name.ends_with(".scale") || t.name.ends_with(".input_scale") || attention_bias
    }) {
        return Err(Error::InvalidModel(format!(
            "tensor {}: per-tensor scales and attention biases are not supported in qwen35moe \
             (llama.cpp's test models carry them, converted models do not)",
            t.name
        )));
    }
    let mut l = Loader::new(file, backend, progress);
    let (d, vocab) = (cfg.d_model, cfg.n_vocab);
    let embed = l.get("token_embd.weight", &[d, vocab])?;
    let layers = q
        .mixers
        .iter()
        .enumerate()
        .map(|(il, &mixer)| layer(&mut l, cfg, q, il, mixer))
        .collect::<Result<Vec<_>>>()?;
    Ok(Qwen35MoeWeights {
        embed,
        layers,
        output_norm: l.get("output_norm.weight", &[d])?,
        output: l.opt("output.weight", &[d, vocab])?,
    })
}

fn layer<B: Backend>(
    l: &mut Loader<'_, B>,
    cfg: &ModelConfig,
    q: &Qwen35MoeConfig,
    il: usize,
    mixer: Mixer,
) -> Result<LayerWeights<B::Weight>> {
    let p = format!("blk.{il}.");
    let name = |n: &str| format!("{p}{n}");
    let d = cfg.d_model;
    let norm = l.get(&name("attn_norm.weight"), &[d])?;
    let mixer = match mixer {
        Mixer::DeltaNet => {
            let dn = &q.delta_net;
            let (ch, values, heads) = (dn.conv_channels(), dn.value_width(), dn.n_v_heads);
            let names =
                ["attn_qkv", "attn_gate", "ssm_beta", "ssm_alpha"].map(|n| name(n) + ".weight");
            let parts = [
                l.data(&names[0], &[d, ch])?,
                l.data(&names[1], &[d, values])?,
                l.data(&names[2], &[d, heads])?,
                l.data(&names[3], &[d, heads])?,
            ];
            MixerWeights::DeltaNet(DeltaNetWeights {
                in_proj: l.stack(&parts)?,
                conv: l.get(&name("ssm_conv1d.weight"), &[dn.conv_taps, ch])?,
                dt_bias: l.get(&name("ssm_dt.bias"), &[heads])?,
                a: l.get(&name("ssm_a"), &[heads])?,
                norm: l.get(&name("ssm_norm.weight"), &[dn.head_dim])?,
                out: l.get(&name("ssm_out.weight"), &[values, d])?,
            })
        }
        Mixer::Attention => {
            let (hd, q_width) = (cfg.head_dim, cfg.n_heads * cfg.head_dim);
            let kv_width = cfg.n_kv_heads * hd;
            let q_name = name("attn_q.weight");
            let wq = l.data(&q_name, &[d, 2 * q_width])?;
            // Rows h * 2hd .. h * 2hd + hd are head h's query, the next hd its gate.
            let query = rows(wq, |r| r % (2 * hd) < hd)?;
            let gate = rows(wq, |r| r % (2 * hd) >= hd)?;
            let dims = [d, q_width];
            let view = |bytes, name| WeightData {
                name,
                ty: wq.ty,
                dims: &dims,
                bytes,
            };
            let (k_name, v_name) = (name("attn_k.weight"), name("attn_v.weight"));
            let parts = [
                view(&query, &q_name),
                l.data(&k_name, &[d, kv_width])?,
                l.data(&v_name, &[d, kv_width])?,
            ];
            let qkv = l.stack(&parts)?;
            let gate_name = format!("{q_name} (gate rows)");
            MixerWeights::Attention(GatedAttentionWeights {
                qkv,
                gate: l.upload(view(&gate, &gate_name))?,
                out: l.get(&name("attn_output.weight"), &[q_width, d])?,
                qk_norm: [
                    l.get(&name("attn_q_norm.weight"), &[hd])?,
                    l.get(&name("attn_k_norm.weight"), &[hd])?,
                ],
            })
        }
    };
    let post_norm = l.get(&name("post_attention_norm.weight"), &[d])?;
    let m = cfg
        .moe
        .as_ref()
        .ok_or_else(|| Error::InvalidModel("qwen35moe needs qwen35moe.expert_count".into()))?;
    let (e, f) = (m.n_experts, m.expert_ff);
    let merged = name("ffn_gate_up_exps.weight");
    let gate_up = if l.info(&merged).is_ok() {
        let w = l.data(&merged, &[d, 2 * f, e])?;
        // Expert e's rows e * 2f .. e * 2f + f are its gate, the next f its up.
        let gate = rows(w, |r| r % (2 * f) < f)?;
        let up = rows(w, |r| r % (2 * f) >= f)?;
        let dims = [d, f, e];
        let half = |bytes, name| WeightData {
            name,
            ty: w.ty,
            dims: &dims,
            bytes,
        };
        let (gate_name, up_name) = (
            format!("{merged} (gate rows)"),
            format!("{merged} (up rows)"),
        );
        let gu = l
            .backend
            .upload_gate_up(half(&gate, &gate_name), half(&up, &up_name))?;
        l.uploaded(w.bytes.len());
        gu
    } else {
        l.gate_up(&p, &[d, f, e])?
    };
    let shared = l.dense(&p, "_shexp", d, q.shared_ff)?;
    let shared_gate = l.get(&name("ffn_gate_inp_shexp.weight"), &[d])?;
    Ok(LayerWeights {
        norm,
        mixer,
        post_norm,
        ffn: FfnWeights::Moe {
            router: l.get(&name("ffn_gate_inp.weight"), &[d, e])?,
            gate_up,
            down: l.get(&name("ffn_down_exps.weight"), &[f, d, e])?,
            shared: Some((shared, Some(shared_gate))),
        },
    })
}

/// The bytes of the rows `keep` selects of `w` (rows counted across experts), in order.
fn rows(w: WeightData<'_>, keep: impl Fn(usize) -> bool) -> Result<Vec<u8>> {
    let row = w.ty.row_bytes(w.dims[0]).ok_or_else(|| {
        Error::InvalidModel(format!(
            "tensor {}: rows of {} are not whole {:?} blocks",
            w.name, w.dims[0], w.ty
        ))
    })?;
    Ok(w.bytes
        .chunks_exact(row)
        .enumerate()
        .filter(|(r, _)| keep(*r))
        .flat_map(|(_, b)| b.iter().copied())
        .collect())
}
