//! The forward pass, written once against [`Backend`]: embed, then per block attention and
//! FFN (dense or routed experts) with pre-norms and residual adds, then the output head.

use crate::Result;
use crate::config::RuntimeConfig;
use crate::gguf::GgufFile;
use crate::model::deepseek4::AttentionWeights as Deepseek4Attention;
use crate::model::qwen35moe::DeltaNetWeights;
use crate::model::{
    AttentionParams, AttentionWeights, Backend, DeltaNetParams, DenseFfn, ExpertWeights,
    FfnWeights, LoadProgress, ModelConfig, ModelWeights, MoeParams, PreNorm, RouterParams,
    Selection, Stage, StandardWeights, deepseek4, gptoss, load_weights, qwen35moe,
};
use crate::tile::{MoeBatch, TilePolicy, TileWidth};

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token (generation).
    Last,
    /// Every token of the batch (verification, perplexity).
    All,
}

/// One forward pass's tokens and how to run them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch<'a> {
    /// The token ids (their positions are the [`Attend`]'s).
    pub(crate) tokens: &'a [u32],
    /// The routed experts' token-tile width.
    pub(crate) tile: TileWidth,
    /// Which positions get logits.
    pub(crate) logits: Logits,
}

/// Where a forward pass's rows keep their keys and values, and what they attend over.
pub(crate) enum Attend<'a, 'k, B: Backend> {
    /// Every row is the next token of one sequence, the first at `pos0`.
    One { kv: &'a mut B::KvCache, pos0: usize },
    /// Row i is a token of sequence i, at `positions[i]` of `kvs[i]`.
    Each {
        kvs: &'a mut [&'k mut B::KvCache],
        positions: &'a [usize],
    },
}

impl<B: Backend> Attend<'_, '_, B> {
    /// Layer `layer`'s attention of `qkv` ([`Backend::attention`] or, for rows of several
    /// sequences, [`Backend::attention_batch`]).
    pub(crate) fn attention(
        &mut self,
        b: &mut B,
        qkv: &B::Act,
        qk_norm: Option<[&B::Weight; 2]>,
        layer: usize,
        p: &AttentionParams,
    ) -> Result<B::Act> {
        match self {
            Attend::One { kv, pos0 } => b.attention(qkv, qk_norm, kv, layer, *pos0, p),
            Attend::Each { kvs, positions } => {
                b.attention_batch(qkv, qk_norm, kvs, positions, layer, p)
            }
        }
    }

    /// Layer `layer`'s Gated DeltaNet of `proj` ([`Backend::delta_net`] or, for rows of
    /// several sequences, [`Backend::delta_net_batch`]).
    pub(crate) fn delta_net(
        &mut self,
        b: &mut B,
        proj: &B::Act,
        w: &DeltaNetWeights<B::Weight>,
        layer: usize,
        p: &DeltaNetParams,
    ) -> Result<B::Act> {
        match self {
            Attend::One { kv, pos0 } => b.delta_net(proj, w, kv, layer, *pos0, p),
            Attend::Each { kvs, positions } => b.delta_net_batch(proj, w, kvs, positions, layer, p),
        }
    }

    /// Layer `layer`'s deepseek4 attention sub-block of `x` ([`Backend::deepseek4_attention`]
    /// or, for rows of several sequences, [`Backend::deepseek4_attention_batch`]).
    pub(crate) fn deepseek4_attention(
        &mut self,
        b: &mut B,
        x: &B::Act,
        w: &Deepseek4Attention<B::Weight>,
        layer: usize,
    ) -> Result<B::Act> {
        match self {
            Attend::One { kv, pos0 } => b.deepseek4_attention(x, w, kv, layer, *pos0),
            Attend::Each { kvs, positions } => {
                b.deepseek4_attention_batch(x, w, kvs, positions, layer)
            }
        }
    }
}

/// A model loaded onto a backend.
pub struct Model<B: Backend> {
    /// Shape and hyper-parameters.
    pub config: ModelConfig,
    /// Uploaded weights.
    pub weights: ModelWeights<B::Weight>,
}

impl<B: Backend> Model<B> {
    /// Resolves the config of `file` and uploads its weights; a deepseek4, qwen35moe or
    /// gpt-oss file on a backend without its ops is refused first, naming them.
    pub fn load(
        file: &GgufFile,
        backend: &mut B,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Self> {
        let config = ModelConfig::from_gguf(file)?;
        let weights = match (&config.deepseek4, &config.qwen35moe) {
            (Some(_), _) if !backend.runs_deepseek4() => {
                return Err(super::backend::no_deepseek4_attention(backend));
            }
            (Some(c), _) => {
                ModelWeights::Deepseek4(deepseek4::load_weights(file, c, backend, progress)?)
            }
            (None, Some(_)) if !backend.runs_delta_net() => {
                return Err(super::backend::no_delta_net(backend));
            }
            (None, Some(q)) => ModelWeights::Qwen35Moe(qwen35moe::load_weights(
                file, &config, q, backend, progress,
            )?),
            (None, None) if config.gptoss.is_some() => {
                if !backend.runs_gptoss() {
                    return Err(super::backend::no_gptoss(backend));
                }
                ModelWeights::GptOss(gptoss::load_weights(file, &config, backend, progress)?)
            }
            (None, None) => ModelWeights::Standard(load_weights(file, &config, backend, progress)?),
        };
        Ok(Model { config, weights })
    }

    /// An empty KV cache for `n_ctx` positions, computing as `runtime` says where the model
    /// leaves a choice (deepseek4's [`RuntimeConfig::qat_sim`]).
    pub fn kv_cache(
        &self,
        backend: &mut B,
        n_ctx: usize,
        runtime: &RuntimeConfig,
    ) -> Result<B::KvCache> {
        let c = &self.config;
        match (&c.deepseek4, &c.qwen35moe) {
            (Some(d), _) => backend.deepseek4_cache(d, n_ctx, runtime.qat_sim),
            (None, Some(q)) => backend.qwen35moe_cache(q, n_ctx, c.n_kv_heads, c.head_dim),
            (None, None) => backend.kv_cache(c.n_layers, n_ctx, c.n_kv_heads, c.head_dim),
        }
    }

    /// `n` empty KV caches like [`Self::kv_cache`]'s for sequences decoded together: from
    /// [`Backend::kv_caches`] where the model's cache is plain keys and values.
    pub fn kv_caches(
        &self,
        backend: &mut B,
        n: usize,
        n_ctx: usize,
        runtime: &RuntimeConfig,
    ) -> Result<Vec<B::KvCache>> {
        let c = &self.config;
        if c.deepseek4.is_none() && c.qwen35moe.is_none() {
            return backend.kv_caches(n, c.n_layers, n_ctx, c.n_kv_heads, c.head_dim);
        }
        (0..n)
            .map(|_| self.kv_cache(backend, n_ctx, runtime))
            .collect()
    }

    /// The tile width the routed-MoE matmuls use for a batch of `tokens` (None for dense
    /// models).
    pub fn tile_for(&self, tokens: usize, policy: &TilePolicy) -> Option<TileWidth> {
        self.config.moe.map(|m| {
            policy.choose(MoeBatch {
                tokens,
                n_experts: m.n_experts,
                n_experts_used: m.n_experts_used,
            })
        })
    }

    /// Runs `tokens` at positions `pos0..`, appending to `kv`; returns logits `(T or 1, vocab)`.
    pub fn forward(
        &self,
        b: &mut B,
        kv: &mut B::KvCache,
        tokens: &[u32],
        pos0: usize,
        policy: &TilePolicy,
        logits: Logits,
    ) -> Result<B::Act> {
        let batch = Batch {
            tokens,
            tile: self.moe_tile(tokens.len(), policy),
            logits,
        };
        self.forward_as(b, Attend::One { kv, pos0 }, batch)
    }

    /// Runs one new token of each of several sequences in one pass: `tokens[i]` at position
    /// `positions[i]` of `kvs[i]`. Every layer but attention (and qwen35moe's DeltaNet) sees
    /// all the tokens as one batch (the expert matmuls too); returns logits `(tokens, vocab)`,
    /// row i sequence i's.
    pub fn forward_batch(
        &self,
        b: &mut B,
        kvs: &mut [&mut B::KvCache],
        positions: &[usize],
        tokens: &[u32],
        policy: &TilePolicy,
    ) -> Result<B::Act> {
        let batch = Batch {
            tokens,
            tile: self.moe_tile(tokens.len(), policy),
            logits: Logits::All,
        };
        self.forward_as(b, Attend::Each { kvs, positions }, batch)
    }

    /// The forward pass of `batch`'s tokens, their caches and positions as `attend` says.
    fn forward_as(&self, b: &mut B, attend: Attend<'_, '_, B>, batch: Batch<'_>) -> Result<B::Act> {
        let c = &self.config;
        match (&self.weights, &c.deepseek4, &c.qwen35moe, &c.gptoss) {
            (ModelWeights::Standard(w), ..) => self.forward_standard(b, w, attend, batch),
            (ModelWeights::Deepseek4(w), Some(d), ..) => deepseek4::forward(b, d, w, attend, batch),
            (ModelWeights::Qwen35Moe(w), _, Some(q), _) => {
                qwen35moe::forward(b, c, q, w, attend, batch)
            }
            (ModelWeights::GptOss(w), .., Some(g)) => gptoss::forward(b, c, g, w, attend, batch),
            _ => Err(crate::Error::InvalidModel(
                "the weights' architecture differs from the config's".into(),
            )),
        }
    }

    /// The routed experts' tile width for a batch of `tokens` (32 for dense models, which
    /// have none to tile).
    fn moe_tile(&self, tokens: usize, policy: &TilePolicy) -> TileWidth {
        self.tile_for(tokens, policy).unwrap_or(TileWidth::T32)
    }

    /// The llama-like forward pass of `batch`.
    fn forward_standard(
        &self,
        b: &mut B,
        w: &StandardWeights<B::Weight>,
        mut attend: Attend<'_, '_, B>,
        batch: Batch<'_>,
    ) -> Result<B::Act> {
        let Batch {
            tokens,
            tile,
            logits,
        } = batch;
        let c = &self.config;
        let attn_params = c.attention_params();
        b.stage(Stage::Embed, None);
        let mut x = b.embed(&w.embed, tokens)?;
        for (il, layer) in w.layers.iter().enumerate() {
            let l = Some(il);
            let a = &layer.attn;
            let qkv = qkv(b, &x, a, c.rms_eps, il)?;
            b.stage(Stage::Attention, l);
            let qk_norm = a.qk_norm.as_ref().map(|[qn, kn]| [qn, kn]);
            let att = attend.attention(b, &qkv, qk_norm, il, &attn_params)?;
            b.stage(Stage::OutProj, l);
            b.matmul_add(&mut x, &att, &a.out)?;

            ffn_add(b, &mut x, &layer.ffn_norm, &layer.ffn, c, tile, il)?;
        }
        let head = w.output.as_ref().unwrap_or(&w.embed);
        output_head(b, x, &w.output_norm, head, c.rms_eps, logits)
    }
}

/// The q, k and v rows `(T, q + 2 kv)` of block `il`'s attention from `x`: its norm, the
/// stacked projection, the biases where the block has them.
pub(crate) fn qkv<B: Backend>(
    b: &mut B,
    x: &B::Act,
    a: &AttentionWeights<B::Weight>,
    eps: f32,
    il: usize,
) -> Result<B::Act> {
    b.stage(Stage::QkvProj, Some(il));
    let norm = PreNorm {
        weight: &a.norm,
        eps,
    };
    let mut qkv = b.project(x, Some(norm), &a.qkv)?;
    if let Some(bias) = &a.qkv_bias {
        b.add_bias(&mut qkv, bias)?;
    }
    Ok(qkv)
}

/// `x += ffn(rms_norm(x) * norm)` for block `il`: a dense SwiGLU FFN, or routed experts (on
/// tiles of `tile`) plus an optional shared expert with an optional sigmoid gate.
pub(crate) fn ffn_add<B: Backend>(
    b: &mut B,
    x: &mut B::Act,
    norm: &B::Weight,
    ffn: &FfnWeights<B::Weight>,
    c: &ModelConfig,
    tile: TileWidth,
    il: usize,
) -> Result<()> {
    let l = Some(il);
    let norm = PreNorm {
        weight: norm,
        eps: c.rms_eps,
    };
    match ffn {
        FfnWeights::Dense(ffn) => {
            b.stage(Stage::DenseFfn, l);
            let h = b.rms_norm(x, norm.weight, norm.eps)?;
            dense_ffn_add(b, x, &h, ffn)
        }
        FfnWeights::Moe {
            router,
            gate_up,
            down,
            shared,
        } => {
            let m = c.moe.as_ref().expect("MoE weights imply an MoE config");
            b.stage(Stage::Router, l);
            let router_logits = b.project(x, Some(norm), std::slice::from_ref(router))?;
            let routing = b.route(
                &router_logits,
                Selection::TopK,
                &RouterParams {
                    n_experts_used: m.n_experts_used,
                    gating: m.gating,
                    normalize: m.normalize,
                    weight_scale: m.weight_scale,
                },
            )?;
            // The shared expert reads the normed x before the routed experts add into it.
            let shared_out = match shared {
                Some((ffn, gate_inp)) => {
                    b.stage(Stage::SharedExpert, l);
                    let h = b.rms_norm(x, norm.weight, norm.eps)?;
                    let mut ys = dense_ffn(b, &h, ffn)?;
                    if let Some(gate_inp) = gate_inp {
                        let g = b.matmul(&h, gate_inp)?;
                        b.mul_sigmoid(&mut ys, &g)?;
                    }
                    Some(ys)
                }
                None => None,
            };
            let params = MoeParams {
                activation: m.activation,
                tile,
            };
            b.stage(Stage::Experts, l);
            let experts = ExpertWeights { gate_up, down };
            b.moe(x, Some(norm), &routing, experts, &params)?;
            if let Some(ys) = shared_out {
                b.stage(Stage::SharedExpert, l);
                b.add(x, &ys)?;
            }
            Ok(())
        }
    }
}

/// Logits of `x` (every row, or the last for [`Logits::Last`]) through the final norm and
/// `head`.
pub(crate) fn output_head<B: Backend>(
    b: &mut B,
    mut x: B::Act,
    norm: &B::Weight,
    head: &B::Weight,
    eps: f32,
    logits: Logits,
) -> Result<B::Act> {
    b.stage(Stage::OutputHead, None);
    // The norm is per row, so norming the last row equals taking the last normed row.
    if logits == Logits::Last {
        x = b.last_row(&x)?;
    }
    let norm = PreNorm { weight: norm, eps };
    b.project(&x, Some(norm), std::slice::from_ref(head))
}

fn dense_ffn<B: Backend>(b: &mut B, h: &B::Act, ffn: &DenseFfn<B::Weight>) -> Result<B::Act> {
    let g = b.matmul(h, &ffn.gate)?;
    let u = b.matmul(h, &ffn.up)?;
    let m = b.swiglu(&g, &u)?;
    b.matmul(&m, &ffn.down)
}

/// `x += dense_ffn(h)`, the down projection fused with the residual add.
fn dense_ffn_add<B: Backend>(
    b: &mut B,
    x: &mut B::Act,
    h: &B::Act,
    ffn: &DenseFfn<B::Weight>,
) -> Result<()> {
    let g = b.matmul(h, &ffn.gate)?;
    let u = b.matmul(h, &ffn.up)?;
    let m = b.swiglu(&g, &u)?;
    b.matmul_add(x, &m, &ffn.down)
}
