//! `qwen35moe` presets (Qwen3.5 / Qwen3.6 MoE): their dimensions, tensors and keys, as
//! llama.cpp's converter writes them (gate and up of the routed experts merged into one
//! `ffn_gate_up_exps`, the shared expert with its sigmoid gate, three Gated DeltaNet layers to
//! every gated attention layer).

use super::{Family, Init, MATRIX, Planner, Preset, Role, TensorPlan, attention_keys};
use crate::Result;
use crate::gguf::{Array, GgufWriter};
pub(super) use crate::model::qwen35moe::ARCH;

/// What a `qwen35moe` preset adds to the shared dimensions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Qwen35MoeDims {
    /// Query heads of the attention layers.
    pub n_heads: usize,
    /// Key/value heads of the attention layers.
    pub n_kv_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Rotated dims of an attention head.
    pub rope_dims: usize,
    /// Rotated pairs per position section (time, height, width, extra): text rotates like
    /// NEOX RoPE over `rope_dims`.
    pub rope_sections: [i32; 4],
    /// RoPE frequency base.
    pub rope_freq_base: f32,
    /// Every this many layers the last is an attention layer, the others DeltaNet.
    pub full_attention_interval: usize,
    /// Taps of the DeltaNet convolution.
    pub conv_taps: usize,
    /// Width of a DeltaNet key, query and value head.
    pub delta_head_dim: usize,
    /// DeltaNet key (and query) heads.
    pub n_delta_k_heads: usize,
    /// DeltaNet value heads.
    pub n_delta_v_heads: usize,
    /// Rows of the shared expert's gate and up.
    pub shared_ff: usize,
}

pub(super) const TINY: Preset = Preset {
    name: "tiny-qwen35moe",
    about: "a small qwen35moe for tests and quick benchmarks (3 DeltaNet layers, then one of \
            gated attention)",
    n_layers: 4,
    d_model: 256,
    n_experts: 16,
    n_experts_used: 4,
    expert_ff: 256,
    n_vocab: 512,
    n_ctx_train: 32768,
    family: Family::Qwen35Moe(Qwen35MoeDims {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        rope_dims: 16,
        rope_sections: [3, 3, 2, 0],
        rope_freq_base: 10_000_000.0,
        full_attention_interval: 4,
        conv_taps: 4,
        delta_head_dim: 64,
        n_delta_k_heads: 2,
        n_delta_v_heads: 4,
        shared_ff: 256,
    }),
};

pub(super) const QWEN36_35B_A3B: Preset = Preset {
    name: "qwen3.6-35b-a3b",
    about: "Qwen3.6-35B-A3B (and Qwen3.5-35B-A3B): 40 layers, D 2048, 256 experts (8 used) of \
            F 512 plus a shared expert of 512, Gated DeltaNet (16 key and 32 value heads of \
            128) in 3 of every 4 layers, gated attention GQA 16/2 heads of 256 in the 4th, \
            vocabulary 248320",
    n_layers: 40,
    d_model: 2048,
    n_experts: 256,
    n_experts_used: 8,
    expert_ff: 512,
    n_vocab: 248_320,
    n_ctx_train: 262_144,
    family: Family::Qwen35Moe(Qwen35MoeDims {
        n_heads: 16,
        n_kv_heads: 2,
        head_dim: 256,
        rope_dims: 64,
        rope_sections: [11, 11, 10, 0],
        rope_freq_base: 10_000_000.0,
        full_attention_interval: 4,
        conv_taps: 4,
        delta_head_dim: 128,
        n_delta_k_heads: 16,
        n_delta_v_heads: 32,
        shared_ff: 512,
    }),
};

impl Qwen35MoeDims {
    /// Width of the DeltaNet values (`ssm.inner_size`).
    fn delta_values(&self) -> usize {
        self.n_delta_v_heads * self.delta_head_dim
    }

    /// Channels of the DeltaNet convolution: queries, keys and values.
    fn delta_channels(&self) -> usize {
        2 * self.n_delta_k_heads * self.delta_head_dim + self.delta_values()
    }

    /// Whether block `il` is a gated attention layer (else Gated DeltaNet).
    fn is_attention(&self, il: usize) -> bool {
        (il + 1).is_multiple_of(self.full_attention_interval)
    }
}

/// Every tensor of `p`, in file order.
pub(super) fn tensors(p: &Preset, dims: &Qwen35MoeDims, plan: &Planner) -> Vec<TensorPlan> {
    let (d, f, e) = (p.d_model, p.expert_ff, p.n_experts);
    let mut out = plan.embedding_and_head(p);
    let proj = Role::AttnQkvO { v: false };
    for il in 0..p.n_layers {
        let blk = |name: &str| format!("blk.{il}.{name}.weight");
        out.extend([
            plan.norm(blk("attn_norm"), il, d),
            plan.norm(blk("post_attention_norm"), il, d),
        ]);
        if dims.is_attention(il) {
            let (q, kv, hd) = (
                dims.n_heads * dims.head_dim,
                dims.n_kv_heads * dims.head_dim,
                dims.head_dim,
            );
            out.extend([
                // Each head's query rows, then its gate's.
                plan.tensor(blk("attn_q"), proj, il, &[d, 2 * q], MATRIX),
                plan.tensor(blk("attn_k"), proj, il, &[d, kv], MATRIX),
                plan.tensor(
                    blk("attn_v"),
                    Role::AttnQkvO { v: true },
                    il,
                    &[d, kv],
                    MATRIX,
                ),
                plan.tensor(blk("attn_output"), proj, il, &[q, d], MATRIX),
                plan.norm(blk("attn_q_norm"), il, hd),
                plan.norm(blk("attn_k_norm"), il, hd),
            ]);
        } else {
            let (ch, values, heads) = (
                dims.delta_channels(),
                dims.delta_values(),
                dims.n_delta_v_heads,
            );
            out.extend([
                plan.tensor(blk("attn_qkv"), proj, il, &[d, ch], MATRIX),
                plan.tensor(blk("attn_gate"), proj, il, &[d, values], MATRIX),
                // Rows of `conv_taps` values: no quant block fits them.
                plan.tensor(
                    blk("ssm_conv1d"),
                    Role::Vector,
                    il,
                    &[dims.conv_taps, ch],
                    MATRIX,
                ),
                plan.tensor(
                    format!("blk.{il}.ssm_dt.bias"),
                    Role::Vector,
                    il,
                    &[heads],
                    Init::Vector {
                        mean: 0.0,
                        spread: 1.0,
                    },
                ),
                // -exp(A_log) in the checkpoints: negative, so the state decays (a positive
                // rate would grow it without bound).
                plan.tensor(
                    format!("blk.{il}.ssm_a"),
                    Role::Vector,
                    il,
                    &[heads],
                    Init::Vector {
                        mean: -4.0,
                        spread: 3.0,
                    },
                ),
                plan.tensor(blk("ssm_alpha"), Role::Router, il, &[d, heads], MATRIX),
                plan.tensor(blk("ssm_beta"), Role::Router, il, &[d, heads], MATRIX),
                plan.norm(blk("ssm_norm"), il, dims.delta_head_dim),
                plan.tensor(blk("ssm_out"), proj, il, &[values, d], MATRIX),
            ]);
        }
        let shared = Role::SharedExpert;
        out.extend([
            plan.tensor(blk("ffn_gate_inp"), Role::Router, il, &[d, e], MATRIX),
            plan.tensor(
                blk("ffn_gate_up_exps"),
                Role::ExpertGateUp,
                il,
                &[d, 2 * f, e],
                MATRIX,
            ),
            plan.tensor(
                blk("ffn_down_exps"),
                Role::ExpertDown,
                il,
                &[f, d, e],
                MATRIX,
            ),
            plan.tensor(blk("ffn_gate_inp_shexp"), Role::Vector, il, &[d], MATRIX),
            plan.tensor(
                blk("ffn_gate_shexp"),
                shared,
                il,
                &[d, dims.shared_ff],
                MATRIX,
            ),
            plan.tensor(
                blk("ffn_up_shexp"),
                shared,
                il,
                &[d, dims.shared_ff],
                MATRIX,
            ),
            plan.tensor(
                blk("ffn_down_shexp"),
                shared,
                il,
                &[dims.shared_ff, d],
                MATRIX,
            ),
        ]);
    }
    out
}

/// The `qwen35moe.*` keys of `p`.
pub(super) fn metadata(p: &Preset, dims: &Qwen35MoeDims, w: &mut GgufWriter) -> Result<()> {
    let attention = attention_keys(dims.n_heads, dims.n_kv_heads, dims.head_dim);
    p.add_u32_keys(
        w,
        attention.into_iter().chain([
            ("rope.dimension_count", dims.rope_dims),
            ("expert_shared_feed_forward_length", dims.shared_ff),
            ("ssm.conv_kernel", dims.conv_taps),
            ("ssm.inner_size", dims.delta_values()),
            ("ssm.state_size", dims.delta_head_dim),
            ("ssm.time_step_rank", dims.n_delta_v_heads),
            ("ssm.group_count", dims.n_delta_k_heads),
            ("full_attention_interval", dims.full_attention_interval),
        ]),
    )?;
    let key = |k: &str| format!("{ARCH}.{k}");
    w.add_metadata(
        key("rope.dimension_sections"),
        Array::from(dims.rope_sections.to_vec()),
    )?;
    w.add_metadata(key("rope.freq_base"), dims.rope_freq_base)?;
    w.add_metadata(key("attention.layer_norm_rms_epsilon"), 1e-6f32)?;
    Ok(())
}
