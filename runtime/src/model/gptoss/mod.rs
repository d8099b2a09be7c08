//! gpt-oss (llama.cpp's OPENAI_MOE): its config, its weights and its forward graph, written
//! once against [`Backend`] like the other architectures'.
//!
//! Layers alternate sliding-window and full attention, each head with a learned sink in its
//! softmax denominator; q, k, v and the output carry biases, RoPE is NeoX with YaRN; the
//! router is biased, picks the top-K logits and weighs them by a softmax over those K (the
//! softmax over all experts renormalised over the K: the same weights), and the experts are
//! biased with a clamped SwiGLU:
//! ```text
//! attention: x += attn_output · attention(project(norm(x)) + qkv_bias, sinks, window) + out_bias
//! FFN:       x += sum_k w_k (down_e · act(gate_e · h + b, up_e · h + b) + b),  h = post_norm(x)
//! ```

mod config;
mod weights;

pub use config::{ARCH, GptOssAttentionParams, GptOssConfig, Yarn};
pub use weights::{GptOssWeights, LayerWeights, load_weights};

use crate::Result;
use crate::model::forward::{Attend, Batch, output_head, qkv};
use crate::model::{
    Backend, ExpertWeights, ModelConfig, MoeParams, PreNorm, RouterParams, Selection, Stage,
};

/// Runs `batch`'s tokens, their keys and values kept and attended as `attend` says; returns
/// logits `(T or 1, vocab)`.
pub(crate) fn forward<B: Backend>(
    b: &mut B,
    c: &ModelConfig,
    g: &GptOssConfig,
    w: &GptOssWeights<B::Weight>,
    mut attend: Attend<'_, '_, B>,
    batch: Batch<'_>,
) -> Result<B::Act> {
    let m = c.moe.as_ref().expect("a gpt-oss config has experts");
    let shared = c.attention_params();
    // Softmax and renormalised (the config's for gpt-oss): the softmax over the top K.
    let router = RouterParams {
        n_experts_used: m.n_experts_used,
        gating: m.gating,
        normalize: m.normalize,
        weight_scale: m.weight_scale,
    };
    let moe = MoeParams {
        activation: m.activation,
        tile: batch.tile,
    };
    b.stage(Stage::Embed, None);
    let mut x = b.embed(&w.embed, batch.tokens)?;
    for (il, layer) in w.layers.iter().enumerate() {
        let l = Some(il);
        let a = &layer.attn;
        let qkv = qkv(b, &x, a, c.rms_eps, il)?;
        b.stage(Stage::Attention, l);
        let p = g.attention_params(&shared, il);
        let sinks = &layer.sinks;
        let y = match &mut attend {
            Attend::One { kv, pos0 } => b.gptoss_attention(&qkv, sinks, kv, il, *pos0, &p)?,
            Attend::Each { kvs, positions } => {
                b.gptoss_attention_batch(&qkv, sinks, kvs, positions, il, &p)?
            }
        };
        b.stage(Stage::OutProj, l);
        b.matmul_add(&mut x, &y, &a.out)?;
        b.add_bias(&mut x, &layer.out_bias)?;

        b.stage(Stage::Router, l);
        let norm = PreNorm {
            weight: &layer.post_norm,
            eps: c.rms_eps,
        };
        let mut logits = b.project(&x, Some(norm), std::slice::from_ref(&layer.router))?;
        b.add_bias(&mut logits, &layer.router_bias)?;
        let routing = b.route(&logits, Selection::TopK, &router)?;
        b.stage(Stage::Experts, l);
        let experts = ExpertWeights {
            gate_up: &layer.gate_up,
            down: &layer.down,
        };
        b.moe_biased(&mut x, Some(norm), &routing, experts, &layer.biases, &moe)?;
    }
    let head = w.output.as_ref().unwrap_or(&w.embed);
    output_head(b, x, &w.output_norm, head, c.rms_eps, batch.logits)
}
