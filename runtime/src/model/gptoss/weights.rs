//! gpt-oss's tensors resolved into typed per-layer structs and uploaded, every shape checked
//! against the config first: llama.cpp's tensor set for the architecture (q, k, v and output
//! biases, per-head sinks, a biased router, biased experts).

use crate::gguf::GgufFile;
use crate::model::weights::Loader;
use crate::model::{
    AttentionWeights, Backend, Blocks, ExpertBiases, GateUp, LoadProgress, ModelConfig, MoeConfig,
};
use crate::{Error, Result};

/// One block.
#[derive(Debug)]
pub struct LayerWeights<W> {
    /// `attn_norm`, `attn_q`/`attn_k`/`attn_v` stacked, their biases, `attn_output`.
    pub attn: AttentionWeights<W>,
    /// `attn_output.bias` `[D]`.
    pub out_bias: W,
    /// `attn_sinks` `[n_heads]`: each head's learned logit in its softmax denominator.
    pub sinks: W,
    /// `post_attention_norm` `[D]`: the norm before the experts.
    pub post_norm: W,
    /// `ffn_gate_inp` `[D, E]`.
    pub router: W,
    /// `ffn_gate_inp.bias` `[E]`, added to the router logits.
    pub router_bias: W,
    /// `ffn_gate_exps` and `ffn_up_exps` `[D, F, E]`, as [`Backend::upload_gate_up`] uploaded
    /// them.
    pub gate_up: GateUp<W>,
    /// `ffn_down_exps` `[F, D, E]`.
    pub down: W,
    /// The experts' gate, up and down biases.
    pub biases: ExpertBiases<W>,
}

/// All weights of a gpt-oss model.
pub type GptOssWeights<W> = Blocks<LayerWeights<W>, W>;

/// Uploads every weight `cfg` needs from `file` to `backend`.
pub fn load_weights<B: Backend>(
    file: &GgufFile,
    cfg: &ModelConfig,
    backend: &mut B,
    progress: &mut dyn FnMut(LoadProgress),
) -> Result<GptOssWeights<B::Weight>> {
    // llama.cpp multiplies the attention matmuls' outputs by `W.scale` where the file has one;
    // converted gpt-oss files carry none (nor `.input_scale`), only llama.cpp's test models do.
    if let Some(t) = file
        .tensors()
        .iter()
        .find(|t| t.name.ends_with(".scale") || t.name.ends_with(".input_scale"))
    {
        return Err(Error::InvalidModel(format!(
            "tensor {}: per-tensor scales are not supported in gpt-oss (llama.cpp's test \
             models carry them, converted models do not)",
            t.name
        )));
    }
    let m = cfg
        .moe
        .as_ref()
        .ok_or_else(|| Error::InvalidModel("gpt-oss needs gpt-oss.expert_count".into()))?;
    Loader::new(file, backend, progress).blocks(cfg, |l, il| layer(l, cfg, m, il))
}

fn layer<B: Backend>(
    l: &mut Loader<'_, B>,
    cfg: &ModelConfig,
    m: &MoeConfig,
    il: usize,
) -> Result<LayerWeights<B::Weight>> {
    let p = format!("blk.{il}.");
    let name = |n: &str| format!("{p}{n}");
    let (d, e, f) = (cfg.d_model, m.n_experts, m.expert_ff);
    let (q_width, kv_width) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
    let attn = AttentionWeights {
        norm: l.get(&name("attn_norm.weight"), &[d])?,
        qkv: l.qkv(&p, d, q_width, kv_width)?,
        out: l.get(&name("attn_output.weight"), &[q_width, d])?,
        qkv_bias: Some(l.qkv_bias(&p, q_width, kv_width)?),
        qk_norm: None,
    };
    Ok(LayerWeights {
        attn,
        out_bias: l.get(&name("attn_output.bias"), &[d])?,
        sinks: l.get(&name("attn_sinks.weight"), &[cfg.n_heads])?,
        post_norm: l.get(&name("post_attention_norm.weight"), &[d])?,
        router: l.get(&name("ffn_gate_inp.weight"), &[d, e])?,
        router_bias: l.get(&name("ffn_gate_inp.bias"), &[e])?,
        gate_up: l.gate_up(&p, &[d, f, e])?,
        down: l.get(&name("ffn_down_exps.weight"), &[f, d, e])?,
        biases: ExpertBiases {
            gate: l.get(&name("ffn_gate_exps.bias"), &[f, e])?,
            up: l.get(&name("ffn_up_exps.bias"), &[f, e])?,
            down: l.get(&name("ffn_down_exps.bias"), &[d, e])?,
        },
    })
}
