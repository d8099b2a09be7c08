//! `gpt-oss` presets: their dimensions, tensors and keys, as llama.cpp's gpt-oss loader
//! (`llama_model_openai_moe::load_arch_tensors` and `load_arch_hparams`) reads them: biased
//! q/k/v/output projections and a sink logit per head, a biased router, biased experts with
//! separate gate and up, sliding-window layers alternating with full ones (llama.cpp's default
//! pattern of 2, as converted files have no pattern key), RoPE with YaRN.

use super::{Family, Init, MATRIX, Mix, Planner, Preset, Role, TensorPlan, attention_keys};
use crate::gguf::GgufWriter;
pub(super) use crate::model::gptoss::ARCH;
use crate::{Error, Result};

/// What a `gpt-oss` preset adds to the shared dimensions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptOssDims {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head (all of it rotated).
    pub head_dim: usize,
    /// Keys a sliding-window layer's query sees.
    pub sliding_window: usize,
    /// RoPE frequency base.
    pub rope_freq_base: f32,
    /// YaRN's context extension factor.
    pub yarn_factor: f32,
    /// The context YaRN extends.
    pub yarn_orig_ctx: usize,
}

/// gpt-oss-20b's attention and RoPE, which the tiny preset keeps but for the head count and
/// the window.
const GPT_OSS_20B_DIMS: GptOssDims = GptOssDims {
    n_heads: 64,
    n_kv_heads: 8,
    head_dim: 64,
    sliding_window: 128,
    rope_freq_base: 150_000.0,
    yarn_factor: 32.0,
    yarn_orig_ctx: 4096,
};

pub(super) const TINY: Preset = Preset {
    name: "tiny-gptoss",
    about: "a small gpt-oss for tests (window 32, so a short prompt crosses it)",
    n_layers: 4,
    d_model: 256,
    n_experts: 16,
    n_experts_used: 4,
    expert_ff: 256,
    n_vocab: 512,
    n_ctx_train: 131_072,
    family: Family::GptOss(GptOssDims {
        n_heads: 4,
        n_kv_heads: 2,
        sliding_window: 32,
        ..GPT_OSS_20B_DIMS
    }),
};

pub(super) const GPT_OSS_20B: Preset = Preset {
    name: "gpt-oss-20b",
    about: "gpt-oss-20b: 24 layers, D 2880, 32 experts (4 used) of F 2880, GQA 64/8 heads of \
            64, sliding window 128 every other layer, YaRN factor 32 from 4096, vocabulary \
            201088",
    n_layers: 24,
    d_model: 2880,
    n_experts: 32,
    n_experts_used: 4,
    expert_ff: 2880,
    n_vocab: 201_088,
    n_ctx_train: 131_072,
    family: Family::GptOss(GPT_OSS_20B_DIMS),
};

/// gpt-oss's rows (2880 at 20b) are whole 32-value blocks but not 256-value ones, so K-quant
/// mixes cannot hold them.
pub(super) fn check_mix(mix: Mix) -> Result<()> {
    match mix {
        Mix::Mxfp4 | Mix::Q8_0 | Mix::F16 => Ok(()),
        Mix::Q4KM | Mix::Q2K | Mix::Iq2XxsQ2K | Mix::Q4K => Err(Error::InvalidSetting {
            name: "quant mix".into(),
            value: mix.name().into(),
            expected: "for gpt-oss presets one of mxfp4 (as gpt-oss files ship), q8_0, f16 \
                       (rows of 2880 values are not whole K-quant blocks)"
                .into(),
        }),
    }
}

/// A bias: small uniform values around zero.
const BIAS: Init = Init::Vector {
    mean: 0.0,
    spread: 0.2,
};

/// Every tensor of `p`, in file order.
pub(super) fn tensors(p: &Preset, dims: &GptOssDims, plan: &Planner) -> Vec<TensorPlan> {
    let (d, f, e) = (p.d_model, p.expert_ff, p.n_experts);
    let (q, kv) = (
        dims.n_heads * dims.head_dim,
        dims.n_kv_heads * dims.head_dim,
    );
    let sinks = Init::Vector {
        mean: 0.0,
        spread: 1.0,
    };
    let mut out = plan.embedding_and_head(p);
    for il in 0..p.n_layers {
        let blk = |name: &str| format!("blk.{il}.{name}.weight");
        let bias = |name: &str, dims: &[usize]| {
            let name = format!("blk.{il}.{name}.bias");
            plan.tensor(name, Role::Vector, il, dims, BIAS)
        };
        out.push(plan.norm(blk("attn_norm"), il, d));
        out.extend(plan.attention_matrices(il, d, q, kv));
        out.extend([
            bias("attn_q", &[q]),
            bias("attn_k", &[kv]),
            bias("attn_v", &[kv]),
            bias("attn_output", &[d]),
            plan.tensor(blk("attn_sinks"), Role::Vector, il, &[dims.n_heads], sinks),
            plan.norm(blk("post_attention_norm"), il, d),
            plan.tensor(blk("ffn_gate_inp"), Role::Router, il, &[d, e], MATRIX),
            bias("ffn_gate_inp", &[e]),
        ]);
        out.extend(plan.expert_matrices(il, p));
        out.extend([
            bias("ffn_gate_exps", &[f, e]),
            bias("ffn_up_exps", &[f, e]),
            bias("ffn_down_exps", &[d, e]),
        ]);
    }
    out
}

/// The `gpt-oss.*` keys of `p`, those converted gpt-oss files carry.
pub(super) fn metadata(p: &Preset, dims: &GptOssDims, w: &mut GgufWriter) -> Result<()> {
    let attention = attention_keys(dims.n_heads, dims.n_kv_heads, dims.head_dim);
    p.add_u32_keys(
        w,
        attention.into_iter().chain([
            ("feed_forward_length", p.expert_ff),
            ("rope.dimension_count", dims.head_dim),
            ("rope.scaling.original_context_length", dims.yarn_orig_ctx),
            ("attention.sliding_window", dims.sliding_window),
        ]),
    )?;
    let key = |k: &str| format!("{ARCH}.{k}");
    w.add_metadata(key("rope.freq_base"), dims.rope_freq_base)?;
    w.add_metadata(key("rope.scaling.type"), "yarn")?;
    w.add_metadata(key("rope.scaling.factor"), dims.yarn_factor)?;
    w.add_metadata(key("attention.layer_norm_rms_epsilon"), 1e-5f32)?;
    Ok(())
}
