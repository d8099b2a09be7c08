//! DeepSeek V4 Flash (`deepseek4`): its config, its weights and its forward graph, written
//! once against [`Backend`] like the other architectures'.
//!
//! A token's hidden state is [`HC_STREAMS`] residual streams; per layer, per sub-block:
//! ```text
//! streams -> hc_pre -> (input, mix) -> rms_norm -> attention          -> hc_post(mix) -> streams
//! streams -> hc_pre -> (input, mix) -> rms_norm -> shared + routed MoE -> hc_post(mix) -> streams
//! logits = output · output_norm(hc_head(streams))
//! ```
//! Attention ([`Backend::deepseek4_attention`]) is the one op that reads other positions: the
//! raw sliding window and the layer's compressed rows, which the backend keeps in its cache
//! ([`Backend::deepseek4_cache`]). Rows of several sequences decoded together
//! ([`crate::model::Model::forward_batch`]) share every other op; attention runs each row on
//! its own cache ([`Backend::deepseek4_attention_batch`]).

mod config;
mod weights;

pub use config::{ARCH, CacheSize, Compression, Deepseek4Config};
pub use weights::{
    AttentionWeights, CompressedKeys, CompressorWeights, Deepseek4Weights, ExpertChoice,
    HyperTensors, IndexerWeights, LayerWeights, load_weights,
};

use crate::Result;
use crate::model::forward::{Attend, Batch};
use crate::model::{
    Backend, ExpertActivation, ExpertWeights, GateUp, Gating, HyperParams, Logits, MoeParams,
    PreNorm, RouterParams, Selection, Stage,
};
use crate::tile::TileWidth;

/// Runs `batch`'s tokens, their attention state kept in [`Backend::deepseek4_cache`]s at the
/// positions `attend` says: one sequence's tokens, or
/// one token of each of several sequences; returns logits `(T or 1, vocab)`.
pub(crate) fn forward<B: Backend>(
    b: &mut B,
    cfg: &Deepseek4Config,
    w: &Deepseek4Weights<B::Weight>,
    mut attend: Attend<'_, '_, B>,
    batch: Batch<'_>,
) -> Result<B::Act> {
    let (tokens, tile) = (batch.tokens, batch.tile);
    let t = tokens.len();
    let eps = cfg.rms_eps as f32;
    let hyper = HyperParams {
        rms_eps: eps,
        eps: cfg.hc_eps as f32,
        sinkhorn_iterations: cfg.hc_sinkhorn_iterations,
    };
    b.stage(Stage::Embed, None);
    let embedded = b.embed(&w.embed, tokens)?;
    let mut streams = b.hc_expand(&embedded)?;
    // The shared expert is a one-expert routed layer every token takes with weight 1.
    let shared = b.routing_from_host(1, 1, &vec![0; t], &vec![1.0; t])?;
    let router = RouterParams {
        n_experts_used: cfg.n_experts_used,
        gating: Gating::SqrtSoftplus,
        normalize: cfg.expert_weights_norm,
        weight_scale: cfg.expert_weights_scale as f32,
    };
    for (il, layer) in w.layers.iter().enumerate() {
        let l = Some(il);
        b.stage(Stage::QkvProj, l);
        let (input, mix) = b.hc_pre(&streams, layer.hc_attn.view(), &hyper)?;
        let h = b.rms_norm(&input, &layer.attn_norm, eps)?;
        b.stage(Stage::Attention, l);
        let out = attend.deepseek4_attention(b, &h, &layer.attention, il)?;
        b.stage(Stage::OutProj, l);
        b.hc_post(&mut streams, &out, &mix)?;

        b.stage(Stage::Router, l);
        let (input, mix) = b.hc_pre(&streams, layer.hc_ffn.view(), &hyper)?;
        let h = b.rms_norm(&input, &layer.ffn_norm, eps)?;
        let router_logits = b.project(&h, None, std::slice::from_ref(&layer.router))?;
        let selection = match &layer.choice {
            ExpertChoice::Biased(bias) => Selection::Biased(bias),
            ExpertChoice::Hashed(table) => Selection::Hashed { table, tokens },
        };
        let routing = b.route(&router_logits, selection, &router)?;
        b.stage(Stage::SharedExpert, l);
        let shared_act = cfg.shared_activation(il);
        let (gate_up, down) = (&layer.shared_gate_up, &layer.shared_down);
        let mut out = experts_out(b, &h, &shared, gate_up, down, shared_act, tile)?;
        b.stage(Stage::Experts, l);
        let routed_act = cfg.routed_activation(il);
        let (gate_up, down) = (&layer.gate_up, &layer.down);
        let routed = experts_out(b, &h, &routing, gate_up, down, routed_act, tile)?;
        b.add(&mut out, &routed)?;
        b.hc_post(&mut streams, &out, &mix)?;
    }
    b.stage(Stage::OutputHead, None);
    // The head mixes each token's streams alone, so mixing the last row equals taking the
    // last mixed row.
    if batch.logits == Logits::Last {
        streams = b.last_row(&streams)?;
    }
    let y = b.hc_head(&streams, w.hc_head.view(), &hyper)?;
    let norm = PreNorm {
        weight: &w.output_norm,
        eps,
    };
    b.project(&y, Some(norm), std::slice::from_ref(&w.output))
}

/// The output of the experts `routing` picks from `gate_up` and `down` for `h`.
fn experts_out<B: Backend>(
    b: &mut B,
    h: &B::Act,
    routing: &B::Routing,
    gate_up: &GateUp<B::Weight>,
    down: &B::Weight,
    activation: ExpertActivation,
    tile: TileWidth,
) -> Result<B::Act> {
    let experts = ExpertWeights { gate_up, down };
    b.moe_out(h, None, routing, experts, &MoeParams { activation, tile })
}
