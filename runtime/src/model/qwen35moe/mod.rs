//! Qwen3.5 / Qwen3.6 MoE (`qwen35moe`): its config, its weights and its forward graph, written
//! once against [`Backend`] like the other architectures'.
//!
//! A layer mixes tokens with a Gated DeltaNet (most layers) or gated full attention (every
//! `full_attention_interval`-th), then runs routed experts plus a sigmoid-gated shared expert:
//! ```text
//! DeltaNet:  x += ssm_out · delta_net(project(norm(x)) = [qkv | z | beta | alpha])
//! attention: x += attn_output · (attention(q, k, v) * sigmoid(gate))
//! FFN:       x += moe(post_norm(x)) + sigmoid(gate_inp_shexp · h) * shared(h)
//! ```
//! [`Backend::delta_net`] carries each DeltaNet layer's convolution tail and per-head state in
//! the cache ([`Backend::qwen35moe_cache`]); the attention layers use its keys and values. A
//! batch of several sequences' tokens (one each) keeps a cache per sequence: its DeltaNet rows
//! run through [`Backend::delta_net_batch`], its attention rows through
//! [`Backend::attention_batch`].

mod config;
mod weights;

pub use config::{ARCH, DeltaNetConfig, Mixer, Qwen35MoeConfig};
pub use weights::{
    DeltaNetWeights, GatedAttentionWeights, LayerWeights, MixerWeights, Qwen35MoeWeights,
    load_weights,
};

use crate::Result;
use crate::model::forward::{Attend, Batch, ffn_add, output_head};
use crate::model::{Backend, DeltaNetParams, ModelConfig, PreNorm, Stage};

/// Runs `batch`'s tokens, continuing the caches (each a [`Backend::qwen35moe_cache`]) at the
/// positions `attend` says: one sequence's tokens, or a token of each of several sequences,
/// whose DeltaNet and attention layers each run on their own cache while every other op sees
/// all the rows; returns logits `(T or 1, vocab)`.
pub(crate) fn forward<B: Backend>(
    b: &mut B,
    c: &ModelConfig,
    q: &Qwen35MoeConfig,
    w: &Qwen35MoeWeights<B::Weight>,
    mut attend: Attend<'_, '_, B>,
    batch: Batch<'_>,
) -> Result<B::Act> {
    let attn_params = c.attention_params();
    let delta_params = DeltaNetParams {
        shape: q.delta_net,
        eps: c.rms_eps,
    };
    b.stage(Stage::Embed, None);
    let mut x = b.embed(&w.embed, batch.tokens)?;
    for (il, layer) in w.layers.iter().enumerate() {
        let l = Some(il);
        let norm = PreNorm {
            weight: &layer.norm,
            eps: c.rms_eps,
        };
        b.stage(Stage::QkvProj, l);
        match &layer.mixer {
            MixerWeights::DeltaNet(d) => {
                let proj = b.project(&x, Some(norm), &d.in_proj)?;
                b.stage(Stage::Attention, l);
                let y = attend.delta_net(b, &proj, d, il, &delta_params)?;
                b.stage(Stage::OutProj, l);
                b.matmul_add(&mut x, &y, &d.out)?;
            }
            MixerWeights::Attention(a) => {
                let qkv = b.project(&x, Some(norm), &a.qkv)?;
                let gate = b.project(&x, Some(norm), std::slice::from_ref(&a.gate))?;
                b.stage(Stage::Attention, l);
                let [qn, kn] = &a.qk_norm;
                let mut y = attend.attention(b, &qkv, Some([qn, kn]), il, &attn_params)?;
                b.mul_sigmoid(&mut y, &gate)?;
                b.stage(Stage::OutProj, l);
                b.matmul_add(&mut x, &y, &a.out)?;
            }
        }
        ffn_add(b, &mut x, &layer.post_norm, &layer.ffn, c, batch.tile, il)?;
    }
    let head = w.output.as_ref().unwrap_or(&w.embed);
    output_head(b, x, &w.output_norm, head, c.rms_eps, batch.logits)
}
