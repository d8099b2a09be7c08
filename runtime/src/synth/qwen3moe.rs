//! `qwen3moe` presets: their dimensions, tensors and keys.

use super::{Family, MATRIX, Planner, Preset, Role, TensorPlan, attention_keys};
use crate::Result;
use crate::gguf::GgufWriter;

/// `general.architecture`.
pub(super) const ARCH: &str = "qwen3moe";

/// The attention of a `qwen3moe` preset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Qwen3MoeDims {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RoPE frequency base.
    pub rope_freq_base: f32,
}

pub(super) const TINY: Preset = Preset {
    name: "tiny-qwen3moe",
    about: "a small qwen3moe for tests and quick benchmarks (2 MB in f16)",
    n_layers: 4,
    d_model: 256,
    n_experts: 16,
    n_experts_used: 2,
    expert_ff: 256,
    n_vocab: 512,
    n_ctx_train: 32768,
    family: Family::Qwen3Moe(Qwen3MoeDims {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        rope_freq_base: 1_000_000.0,
    }),
};

pub(super) const QWEN3_30B_A3B: Preset = Preset {
    name: "qwen3-30b-a3b",
    about: "Qwen3-30B-A3B: 48 layers, D 2048, 128 experts (8 used) of F 768, GQA 32/4 heads \
            of 128",
    n_layers: 48,
    d_model: 2048,
    n_experts: 128,
    n_experts_used: 8,
    expert_ff: 768,
    n_vocab: 151_936,
    n_ctx_train: 40960,
    family: Family::Qwen3Moe(Qwen3MoeDims {
        n_heads: 32,
        n_kv_heads: 4,
        head_dim: 128,
        rope_freq_base: 1_000_000.0,
    }),
};

pub(super) const DS4_FLASH_MOE: Preset = Preset {
    name: "ds4-flash-moe",
    about: "DeepSeek-V4-Flash's MoE layers (43 layers, D 4096, 256 experts, 6 used, F 2048, \
            vocabulary 129280) under qwen3moe attention of Qwen3-235B-A22B's shape (GQA 64/4 \
            heads of 128): the MoE of ds4-flash in a graph moetile runs",
    n_layers: 43,
    d_model: 4096,
    n_experts: 256,
    n_experts_used: 6,
    expert_ff: 2048,
    n_vocab: 129_280,
    n_ctx_train: 65536,
    family: Family::Qwen3Moe(Qwen3MoeDims {
        n_heads: 64,
        n_kv_heads: 4,
        head_dim: 128,
        rope_freq_base: 1_000_000.0,
    }),
};

/// Every tensor of `p`, in file order.
pub(super) fn tensors(p: &Preset, dims: &Qwen3MoeDims, plan: &Planner) -> Vec<TensorPlan> {
    let (d, e) = (p.d_model, p.n_experts);
    let (q, kv) = (
        dims.n_heads * dims.head_dim,
        dims.n_kv_heads * dims.head_dim,
    );
    let hd = dims.head_dim;
    let mut out = plan.embedding_and_head(p);
    for il in 0..p.n_layers {
        let blk = |name: &str| format!("blk.{il}.{name}.weight");
        out.push(plan.norm(blk("attn_norm"), il, d));
        out.extend(plan.attention_matrices(il, d, q, kv));
        out.extend([
            plan.norm(blk("attn_q_norm"), il, hd),
            plan.norm(blk("attn_k_norm"), il, hd),
            plan.norm(blk("ffn_norm"), il, d),
            plan.tensor(blk("ffn_gate_inp"), Role::Router, il, &[d, e], MATRIX),
        ]);
        out.extend(plan.expert_matrices(il, p));
    }
    out
}

/// The `qwen3moe.*` keys of `p`.
pub(super) fn metadata(p: &Preset, dims: &Qwen3MoeDims, w: &mut GgufWriter) -> Result<()> {
    let attention = attention_keys(dims.n_heads, dims.n_kv_heads, dims.head_dim);
    p.add_u32_keys(
        w,
        attention
            .into_iter()
            .chain([("feed_forward_length", p.expert_ff * p.n_experts_used)]),
    )?;
    let key = |k: &str| format!("{ARCH}.{k}");
    w.add_metadata(key("attention.layer_norm_rms_epsilon"), 1e-6f32)?;
    w.add_metadata(key("rope.freq_base"), dims.rope_freq_base)?;
    Ok(())
}
