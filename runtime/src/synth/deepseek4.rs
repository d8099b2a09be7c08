//! `deepseek4` (DeepSeek V4) presets: their dimensions, tensors and keys, as llama.cpp's
//! `deepseek4` loader (`llama_model_deepseek4::load_arch_hparams`/`load_arch_tensors`) reads
//! them and as the original engine (antirez/ds4) stores them.
//!
//! Where the values come from: DeepSeek V4 Flash's dimensions are the original engine's fixed
//! constants (`ds4.c`: `DS4_N_LAYER` .. `DS4_N_HC_SINKHORN_ITER`, the RoPE/YaRN, epsilon,
//! router-scale and clamp `#define`s, and `ds4_layer_compress_ratio`, which its loader checks
//! every real file against; its `MODEL_CARD.md` gives the 1M-token context). The tensor types of
//! the mixes are the ones its `weights_validate_layout` demands (token embedding,
//! hyper-connection mixes, compressors, indexer and router F16; attention, shared expert and
//! output head Q8_0; vectors F32; the hash table I32; routed experts IQ2_XXS/Q2_K or Q4_K, as
//! in its `...-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-...` and
//! `...-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-...` files).
//!
//! Random weights keep the forward pass sane by construction: every sub-block reads its input
//! through an RMS norm (and the hyper-connection mixes read RMS-normed streams), matrices have
//! the fan-in scale, so scores, router logits and mixes are of order one; norm gains sit near
//! one, hyper-connection scales near one and bases near zero (mixing weights near 1/2,
//! Sinkhorn matrices far from one-hot), sink logits, router biases and compressor position
//! biases are small, so attention, routing and pooling all stay soft.

use super::{
    Family, Init, MATRIX, Mix, Planner, Preset, Role, TensorPlan, attention_keys, output_head,
};
use crate::gguf::{Array, GgufWriter};
use crate::{Error, Result};

/// `general.architecture`, and the prefix of its keys.
pub(super) const ARCH: &str = "deepseek4";

/// Hyper-connection streams: llama.cpp asserts 4 (`DS4_N_HC`).
const HC_STREAMS: usize = 4;

/// `expert_gating_func` of `sqrt(softplus(logit))` routing, the only one deepseek4 loads.
const GATING_SQRT_SOFTPLUS: u32 = 4;

/// The attention, compression, hyper-connection and routing dimensions of a `deepseek4`
/// preset (the shared ones are [`Preset`]'s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deepseek4Dims {
    /// Query heads.
    pub n_heads: usize,
    /// Width of a query head and of the one key/value latent (keys are values).
    pub head_dim: usize,
    /// Rotated dimensions: the tail of each head.
    pub n_rot: usize,
    /// Rank of the low-rank query projection.
    pub q_lora_rank: usize,
    /// Groups of the grouped low-rank output projection.
    pub output_groups: usize,
    /// Rank of each output group.
    pub output_rank: usize,
    /// Raw keys a query sees.
    pub sliding_window: usize,
    /// Per layer: 0 (raw window only), 4 (compressed rows picked by the indexer) or 128
    /// (compressed rows, all visible). Its length bounds the preset's layer count.
    pub compress_ratios: &'static [u32],
    /// Lightning indexer heads.
    pub indexer_heads: usize,
    /// Width of an indexer head and of its compressed keys.
    pub indexer_head_dim: usize,
    /// Compressed rows a query of a ratio-4 layer attends at most.
    pub indexer_top_k: usize,
    /// Sinkhorn iterations of the hyper-connection mixing matrices.
    pub hc_sinkhorn_iterations: usize,
    /// Shared experts (their widths add up to the shared FFN's).
    pub n_shared_experts: usize,
    /// Layers below this (of those the file has) route by token id through
    /// `ffn_gate_tid2eid`, the others by score.
    pub hash_layers: usize,
}

/// Settings every deepseek4 preset takes from DeepSeek V4 Flash (`ds4.c`'s `#define`s).
const RMS_EPS: f32 = 1e-6;
const HC_EPS: f32 = 1e-6;
const EXPERT_WEIGHTS_SCALE: f32 = 1.5;
const SWIGLU_CLAMP: f32 = 10.0;
const ROPE_FREQ_BASE: f32 = 10000.0;
const COMPRESS_ROPE_FREQ_BASE: f32 = 160_000.0;
const YARN_FACTOR: f32 = 16.0;
const YARN_ORIG_CTX: usize = 65536;
const YARN_BETA_FAST: f32 = 32.0;
const YARN_BETA_SLOW: f32 = 1.0;

/// DeepSeek V4 Flash's compress ratio per layer (`ds4_layer_compress_ratio`: none in layers
/// 0 and 1, then 4 in even and 128 in odd layers).
const FLASH_COMPRESS_RATIOS: [u32; 43] = [
    0, 0, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128,
    4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4,
];

pub(super) const FLASH: Preset = Preset {
    name: "ds4-flash",
    about: "DeepSeek-V4-Flash: 43 layers, D 4096 in 4 hyper-connected streams, \
            64 query heads of 512 over one 512-wide KV latent (64 RoPE dims), q rank 1024, \
            output 8 groups of rank 1024, compress ratios 0,0 then 4/128 alternating, indexer \
            64 heads of 128 with top-k 512, 256 experts (6 used) of F 2048 plus a shared \
            expert, the first 3 layers hash-routed, vocabulary 129280",
    n_layers: 43,
    d_model: 4096,
    n_experts: 256,
    n_experts_used: 6,
    expert_ff: 2048,
    n_vocab: 129_280,
    n_ctx_train: 1 << 20,
    family: Family::Deepseek4(Deepseek4Dims {
        n_heads: 64,
        head_dim: 512,
        n_rot: 64,
        q_lora_rank: 1024,
        output_groups: 8,
        output_rank: 1024,
        sliding_window: 128,
        compress_ratios: &FLASH_COMPRESS_RATIOS,
        indexer_heads: 64,
        indexer_head_dim: 128,
        indexer_top_k: 512,
        hc_sinkhorn_iterations: 20,
        n_shared_experts: 1,
        hash_layers: 3,
    }),
};

/// llama.cpp's tiny deepseek4 test model (`test-llama-archs`: D 512, 8 heads of 64, 32 RoPE
/// dims, q rank 64, 8 output groups of rank 32, ratios 0/0/4/128, window 32, indexer 64 heads
/// of 128) with what it lacks for routing and selection to do anything: more experts than
/// used, a hash-routed layer, an indexer top-k smaller than the compressed rows of a
/// 40-token prompt.
pub(super) const TINY: Preset = Preset {
    name: "tiny-ds4",
    about: "a small deepseek4 for tests (llama.cpp's tiny test model with 16 experts, 4 used, \
            a hash-routed first layer and indexer top-k 8; 13 MB in iq2_xxs-q2_k)",
    n_layers: 4,
    d_model: 512,
    n_experts: 16,
    n_experts_used: 4,
    expert_ff: 256,
    n_vocab: 512,
    n_ctx_train: 4096,
    family: Family::Deepseek4(Deepseek4Dims {
        n_heads: 8,
        head_dim: 64,
        n_rot: 32,
        q_lora_rank: 64,
        output_groups: 8,
        output_rank: 32,
        sliding_window: 32,
        compress_ratios: &[0, 0, 4, 128],
        indexer_heads: 64,
        indexer_head_dim: 128,
        indexer_top_k: 8,
        hc_sinkhorn_iterations: 20,
        n_shared_experts: 1,
        hash_layers: 1,
    }),
};

/// Refuses the mixes deepseek4 files do not come in: llama.cpp's K-quant mixes would put
/// K-quants on the F16 tensors and on rows shorter than a K-quant block; `mxfp4` is gpt-oss's
/// (the original engine's native-MXFP4 files keep other tensors than it would write).
pub(super) fn check_mix(mix: Mix) -> Result<()> {
    match mix {
        Mix::Iq2XxsQ2K | Mix::Q4K | Mix::Q8_0 | Mix::F16 => Ok(()),
        Mix::Q4KM | Mix::Q2K | Mix::Mxfp4 => Err(Error::InvalidSetting {
            name: "quant mix".into(),
            value: mix.name().into(),
            expected: "for deepseek4 presets one of iq2_xxs-q2_k, q4_k (the original engine's \
                       mixes), q8_0, f16"
                .into(),
        }),
    }
}

/// Hyper-connection mixing: 4 pre (stream weights), 4 post, 16 comb (stream to stream).
const HC_MIXES: usize = (2 + HC_STREAMS) * HC_STREAMS;

/// Uniform `mean ± spread` values.
const fn vector(mean: f32, spread: f64) -> Init {
    Init::Vector { mean, spread }
}

/// The `{prefix}_fn/_base/_scale.weight` of one hyper-connection with `n_mixes` mixes and
/// `n_scales` scale families: `fn` reads all streams.
fn hyper_connection(
    plan: &Planner,
    prefix: &str,
    layer: usize,
    d_model: usize,
    n_mixes: usize,
    n_scales: usize,
) -> [TensorPlan; 3] {
    let name = |part: &str| format!("{prefix}_{part}.weight");
    [
        plan.tensor(
            name("fn"),
            Role::Float16,
            layer,
            &[HC_STREAMS * d_model, n_mixes],
            MATRIX,
        ),
        plan.tensor(
            name("base"),
            Role::Vector,
            layer,
            &[n_mixes],
            vector(0.0, 0.5),
        ),
        plan.tensor(
            name("scale"),
            Role::Vector,
            layer,
            &[n_scales],
            vector(1.0, 0.5),
        ),
    ]
}

/// A compressor's `{prefix}kv/gate/ape/norm.weight` for rows `width` wide at `ratio`: ratio 4
/// pools the previous block too, through twice the columns.
fn compressor(
    plan: &Planner,
    prefix: &str,
    layer: usize,
    d_model: usize,
    width: usize,
    ratio: usize,
) -> [TensorPlan; 4] {
    let cols = if ratio == 4 { 2 * width } else { width };
    let name = |part: &str| format!("{prefix}{part}.weight");
    [
        plan.tensor(name("kv"), Role::Float16, layer, &[d_model, cols], MATRIX),
        plan.tensor(name("gate"), Role::Float16, layer, &[d_model, cols], MATRIX),
        plan.tensor(name("ape"), Role::Float16, layer, &[cols, ratio], MATRIX),
        plan.norm(name("norm"), layer, width),
    ]
}

/// Every tensor of `p`, in file order.
pub(super) fn tensors(p: &Preset, dims: &Deepseek4Dims, plan: &Planner) -> Vec<TensorPlan> {
    let (d, f, e, v) = (p.d_model, p.expert_ff, p.n_experts, p.n_vocab);
    let (hd, rank) = (dims.head_dim, dims.q_lora_rank);
    let q_width = dims.n_heads * hd;
    let out_rank = dims.output_groups * dims.output_rank;
    let shared_ff = f * dims.n_shared_experts;
    let mut out = vec![
        plan.tensor("token_embd.weight", Role::Float16, 0, &[d, v], MATRIX),
        plan.norm("output_norm.weight", 0, d),
        plan.tensor("output.weight", Role::Output, 0, &[d, v], output_head()),
    ];
    out.extend(hyper_connection(plan, "output_hc", 0, d, HC_STREAMS, 1));
    // A layer count past the pattern is refused before writing (`Preset::check_layers`).
    for (il, &ratio) in dims.compress_ratios.iter().take(p.n_layers).enumerate() {
        let blk = |name: &str| format!("blk.{il}.{name}");
        let tensor =
            |name: &str, role, dims: &[usize], init| plan.tensor(blk(name), role, il, dims, init);
        let attn = Role::AttnQkvO { v: false };
        out.extend(hyper_connection(plan, &blk("hc_attn"), il, d, HC_MIXES, 3));
        out.extend(hyper_connection(plan, &blk("hc_ffn"), il, d, HC_MIXES, 3));
        out.extend([
            plan.norm(blk("attn_norm.weight"), il, d),
            tensor(
                "attn_sinks.weight",
                Role::Vector,
                &[dims.n_heads],
                vector(0.0, 1.0),
            ),
            tensor("attn_q_a.weight", attn, &[d, rank], MATRIX),
            plan.norm(blk("attn_q_a_norm.weight"), il, rank),
            tensor("attn_q_b.weight", attn, &[rank, q_width], MATRIX),
            tensor("attn_kv.weight", attn, &[d, hd], MATRIX),
            plan.norm(blk("attn_kv_a_norm.weight"), il, hd),
            // Stored 2-D, as converted files store it; llama.cpp views it per group.
            tensor(
                "attn_output_a.weight",
                attn,
                &[q_width / dims.output_groups, out_rank],
                MATRIX,
            ),
            tensor("attn_output_b.weight", attn, &[out_rank, d], MATRIX),
        ]);
        let ratio = ratio as usize;
        if ratio != 0 {
            out.extend(compressor(plan, &blk("attn_compressor_"), il, d, hd, ratio));
        }
        if ratio == 4 {
            let (heads, width) = (dims.indexer_heads, dims.indexer_head_dim);
            out.extend([
                tensor("indexer.proj.weight", Role::Float16, &[d, heads], MATRIX),
                tensor(
                    "indexer.attn_q_b.weight",
                    Role::Float16,
                    &[rank, heads * width],
                    MATRIX,
                ),
            ]);
            out.extend(compressor(
                plan,
                &blk("indexer_compressor_"),
                il,
                d,
                width,
                ratio,
            ));
        }
        out.push(plan.norm(blk("ffn_norm.weight"), il, d));
        out.push(tensor(
            "ffn_gate_inp.weight",
            Role::Float16,
            &[d, e],
            MATRIX,
        ));
        out.push(if il < dims.hash_layers {
            tensor(
                "ffn_gate_tid2eid.weight",
                Role::ExpertIds,
                &[p.n_experts_used, v],
                Init::ExpertIds { n_experts: e },
            )
        } else {
            tensor("exp_probs_b.bias", Role::Vector, &[e], vector(0.0, 0.1))
        });
        out.extend([
            tensor(
                "ffn_gate_exps.weight",
                Role::ExpertGateUp,
                &[d, f, e],
                MATRIX,
            ),
            tensor("ffn_up_exps.weight", Role::ExpertGateUp, &[d, f, e], MATRIX),
            tensor("ffn_down_exps.weight", Role::ExpertDown, &[f, d, e], MATRIX),
            tensor(
                "ffn_gate_shexp.weight",
                Role::SharedExpert,
                &[d, shared_ff],
                MATRIX,
            ),
            tensor(
                "ffn_up_shexp.weight",
                Role::SharedExpert,
                &[d, shared_ff],
                MATRIX,
            ),
            tensor(
                "ffn_down_shexp.weight",
                Role::SharedExpert,
                &[shared_ff, d],
                MATRIX,
            ),
        ]);
    }
    out
}

/// The `deepseek4.*` keys of `p`: those llama.cpp's loader reads and a converted file has.
pub(super) fn metadata(p: &Preset, dims: &Deepseek4Dims, w: &mut GgufWriter) -> Result<()> {
    let key = |k: &str| format!("{ARCH}.{k}");
    let n = p.n_layers;
    // One key/value latent shared by all heads.
    let attention = attention_keys(dims.n_heads, 1, dims.head_dim);
    p.add_u32_keys(
        w,
        attention.into_iter().chain([
            ("embedding_length_out", HC_STREAMS * p.d_model),
            ("rope.dimension_count", dims.n_rot),
            ("rope.scaling.original_context_length", YARN_ORIG_CTX),
            ("attention.q_lora_rank", dims.q_lora_rank),
            ("attention.sliding_window", dims.sliding_window),
            ("expert_shared_count", dims.n_shared_experts),
            ("attention.indexer.head_count", dims.indexer_heads),
            ("attention.indexer.key_length", dims.indexer_head_dim),
            ("attention.indexer.top_k", dims.indexer_top_k),
            ("attention.output_group_count", dims.output_groups),
            ("attention.output_lora_rank", dims.output_rank),
            ("hyper_connection.count", HC_STREAMS),
            (
                "hyper_connection.sinkhorn_iterations",
                dims.hc_sinkhorn_iterations,
            ),
            ("hash_layer_count", dims.hash_layers.min(n)),
        ]),
    )?;
    w.add_metadata(key("expert_gating_func"), GATING_SQRT_SOFTPLUS)?;
    for (k, value) in [
        ("rope.freq_base", ROPE_FREQ_BASE),
        ("rope.scaling.factor", YARN_FACTOR),
        ("rope.scaling.yarn_beta_fast", YARN_BETA_FAST),
        ("rope.scaling.yarn_beta_slow", YARN_BETA_SLOW),
        ("attention.layer_norm_rms_epsilon", RMS_EPS),
        ("attention.compress_rope_freq_base", COMPRESS_ROPE_FREQ_BASE),
        ("expert_weights_scale", EXPERT_WEIGHTS_SCALE),
        ("hyper_connection.epsilon", HC_EPS),
    ] {
        w.add_metadata(key(k), value)?;
    }
    w.add_metadata(key("rope.scaling.type"), "yarn")?;
    w.add_metadata(key("expert_weights_norm"), true)?;
    for k in ["swiglu_clamp_exp", "swiglu_clamp_shexp"] {
        w.add_metadata(key(k), Array::from(vec![SWIGLU_CLAMP; n]))?;
    }
    w.add_metadata(
        key("attention.compress_ratios"),
        Array::from(
            dims.compress_ratios
                .iter()
                .take(n)
                .copied()
                .collect::<Vec<_>>(),
        ),
    )?;
    Ok(())
}
