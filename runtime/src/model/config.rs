//! Model hyper-parameters resolved once from GGUF metadata into typed fields, so the forward
//! pass never looks a string key up.

use crate::gguf::GgufFile;
use crate::model::deepseek4::Deepseek4Config;
use crate::model::gptoss::{self, GptOssConfig};
use crate::model::qwen35moe::{self, Qwen35MoeConfig};
use crate::model::{AttentionParams, ExpertActivation, Gating, RopeParams};
use crate::{Error, Result};

/// The architectures moetile runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Dense llama (SmolLM, Llama 2/3): normal RoPE.
    Llama,
    /// Dense qwen2 (Qwen2/2.5): q/k/v biases, NeoX RoPE.
    Qwen2,
    /// Dense qwen3: per-head q/k RMS norm, NeoX RoPE.
    Qwen3,
    /// qwen2moe: routed experts (softmax, no renormalisation) plus a sigmoid-gated shared expert.
    Qwen2Moe,
    /// qwen3moe: routed experts (softmax, renormalised top-K), per-head q/k norm.
    Qwen3Moe,
    /// DeepSeek V4 Flash: hyper-connected streams, compressed attention, hashed and biased
    /// routing ([`super::deepseek4`]).
    Deepseek4,
    /// Qwen3.5 / Qwen3.6 MoE: Gated DeltaNet and gated attention layers.
    Qwen35Moe,
    /// gpt-oss: sliding-window and full attention with sinks, biased router and experts
    /// ([`super::gptoss`]).
    GptOss,
}

impl Arch {
    /// Every supported architecture with its `general.architecture` name.
    pub const SUPPORTED: [(Arch, &'static str); 8] = [
        (Arch::Llama, "llama"),
        (Arch::Qwen2, "qwen2"),
        (Arch::Qwen3, "qwen3"),
        (Arch::Qwen2Moe, "qwen2moe"),
        (Arch::Qwen3Moe, "qwen3moe"),
        (Arch::Deepseek4, super::deepseek4::ARCH),
        (Arch::Qwen35Moe, qwen35moe::ARCH),
        (Arch::GptOss, gptoss::ARCH),
    ];

    /// The architecture named `name`, or an error listing the supported ones.
    pub fn from_name(name: &str) -> Result<Arch> {
        Self::SUPPORTED
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(a, _)| *a)
            .ok_or_else(|| Error::UnsupportedArch {
                name: name.to_string(),
                supported: Self::SUPPORTED.map(|(_, n)| n).join(", "),
            })
    }

    /// The GGUF name (`"qwen3moe"`), used as the metadata key prefix.
    pub fn name(self) -> &'static str {
        Self::SUPPORTED
            .iter()
            .find(|(a, _)| *a == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    fn neox_rope(self) -> bool {
        self != Arch::Llama
    }

    fn has_qk_norm(self) -> bool {
        matches!(self, Arch::Qwen3 | Arch::Qwen3Moe | Arch::Qwen35Moe)
    }
}

/// Routed-expert settings of the MoE layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeConfig {
    /// E.
    pub n_experts: usize,
    /// K.
    pub n_experts_used: usize,
    /// F: rows of each expert's gate/up.
    pub expert_ff: usize,
    /// Softmax or sigmoid router.
    pub gating: Gating,
    /// Renormalise the top-K weights.
    pub normalize: bool,
    /// Factor on the route weights.
    pub weight_scale: f32,
    /// The activation between up/gate and down.
    pub activation: ExpertActivation,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Arch,
    /// Transformer blocks.
    pub n_layers: usize,
    /// D: hidden width.
    pub d_model: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding table).
    pub n_vocab: usize,
    /// Context length the model was trained for.
    pub n_ctx_train: usize,
    /// RMS norm epsilon.
    pub rms_eps: f32,
    /// RoPE settings.
    pub rope: RopeParams,
    /// Routed experts, for MoE architectures.
    pub moe: Option<MoeConfig>,
    /// Per-head RMS norm of q and k before RoPE (qwen3).
    pub qk_norm: bool,
    /// Everything else deepseek4's forward pass reads (for that architecture only).
    pub deepseek4: Option<Deepseek4Config>,
    /// The layer mix and DeltaNet shape of qwen35moe (for that architecture only).
    pub qwen35moe: Option<Qwen35MoeConfig>,
    /// The sliding window and YaRN of gpt-oss (for that architecture only).
    pub gptoss: Option<GptOssConfig>,
}

impl ModelConfig {
    /// Reads the config of `file`; errors name the missing or ill-typed key.
    pub fn from_gguf(file: &GgufFile) -> Result<ModelConfig> {
        let arch = Arch::from_name(file.get_str("general.architecture")?)?;
        if arch == Arch::Deepseek4 {
            return Self::deepseek4(file);
        }
        let key = |k: &str| format!("{}.{k}", arch.name());
        let usize_key = |k: &str| -> Result<usize> { Ok(file.get_u64(&key(k))? as usize) };
        let usize_opt = |k: &str| -> Result<Option<usize>> {
            Ok(file.get_u64_opt(&key(k))?.map(|v| v as usize))
        };

        let d_model = usize_key("embedding_length")?;
        let n_heads = usize_key("attention.head_count")?;
        let n_kv_heads = usize_opt("attention.head_count_kv")?.unwrap_or(n_heads);
        let head_dim = match usize_opt("attention.key_length")? {
            Some(k) => k,
            None if n_heads > 0 => d_model / n_heads,
            None => 0,
        };
        if n_heads == 0 || n_kv_heads == 0 || head_dim == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::InvalidModel(format!(
                "{} heads, {} key/value heads of width {}: heads must be a positive multiple of key/value heads",
                n_heads, n_kv_heads, head_dim
            )));
        }
        let rope_dims = usize_opt("rope.dimension_count")?.unwrap_or(head_dim);
        let rope_scale = match file.get_str_opt(&key("rope.scaling.type"))? {
            None | Some("none") => 1.0,
            // llama.cpp reads a factor of 0 (or none) as no scaling. gpt-oss's YaRN
            // interpolates by the same factor; the rest of it is `GptOssConfig::yarn`.
            Some(t @ ("linear" | "yarn")) if t == "linear" || arch == Arch::GptOss => {
                1.0 / file
                    .get_f32_opt(&key("rope.scaling.factor"))?
                    .filter(|&f| f != 0.0)
                    .unwrap_or(1.0)
            }
            Some(other) => {
                return Err(Error::InvalidModel(format!(
                    "RoPE scaling type {other:?} is not supported (supported: none, linear; yarn \
                     for {})",
                    gptoss::ARCH
                )));
            }
        };
        let n_vocab = match file.tensor("token_embd.weight") {
            Some(t) if t.dims.len() == 2 => t.dims[1],
            _ => {
                return Err(Error::InvalidModel(
                    "tensor token_embd.weight is missing or not 2-D".into(),
                ));
            }
        };
        let moe = match usize_opt("expert_count")? {
            Some(n_experts) if n_experts > 0 => {
                // llama.cpp's qwen35moe graph is softmax whatever the key says.
                let gating = match file.get_u64_opt(&key("expert_gating_func"))? {
                    _ if arch == Arch::Qwen35Moe => Gating::Softmax,
                    // llama.cpp's gpt-oss graph takes a softmax over the top-K logits: the
                    // softmax over all renormalised over the K (`normalize` below).
                    _ if arch == Arch::GptOss => Gating::Softmax,
                    None | Some(1) => Gating::Softmax,
                    Some(2) => Gating::Sigmoid,
                    Some(other) => {
                        return Err(Error::InvalidModel(format!(
                            "{}: expert gating function {other} is not supported (1 softmax, 2 sigmoid)",
                            key("expert_gating_func")
                        )));
                    }
                };
                Some(MoeConfig {
                    n_experts,
                    n_experts_used: usize_key("expert_used_count")?,
                    expert_ff: usize_key("expert_feed_forward_length")?,
                    gating,
                    // llama.cpp's qwen35moe graph renormalises whatever the key says.
                    normalize: matches!(arch, Arch::Qwen35Moe | Arch::GptOss)
                        || file
                            .get_bool_opt(&key("expert_weights_norm"))?
                            .unwrap_or(arch == Arch::Qwen3Moe),
                    // llama.cpp scales only by a factor other than 0 and 1.
                    weight_scale: file
                        .get_f32_opt(&key("expert_weights_scale"))?
                        .filter(|&s| s != 0.0)
                        .unwrap_or(1.0),
                    activation: match arch {
                        // llama.cpp's constants for gpt-oss (`LLM_FFN_SWIGLU_OAI_MOE`).
                        Arch::GptOss => ExpertActivation::SwiGluOai {
                            alpha: 1.702,
                            limit: 7.0,
                        },
                        _ => ExpertActivation::SwiGlu,
                    },
                })
            }
            _ => None,
        };
        if matches!(
            arch,
            Arch::Qwen2Moe | Arch::Qwen3Moe | Arch::Qwen35Moe | Arch::GptOss
        ) && moe.is_none()
        {
            return Err(Error::InvalidModel(format!(
                "{} needs {}",
                arch.name(),
                key("expert_count")
            )));
        }
        if let Some(m) = &moe
            && (m.n_experts_used == 0 || m.n_experts_used > m.n_experts)
        {
            return Err(Error::InvalidModel(format!(
                "{} experts used of {}",
                m.n_experts_used, m.n_experts
            )));
        }
        let qwen35moe = match arch {
            Arch::Qwen35Moe => Some(Qwen35MoeConfig::from_gguf(file, rope_dims)?),
            _ => None,
        };
        let n_layers = match &qwen35moe {
            Some(q) => q.mixers.len(),
            None => usize_key("block_count")?,
        };
        let rope = RopeParams {
            n_dims: rope_dims,
            freq_base: file.get_f32_opt(&key("rope.freq_base"))?.unwrap_or(10000.0),
            freq_scale: rope_scale,
            neox: arch.neox_rope(),
        };
        let gptoss = match arch {
            Arch::GptOss => Some(GptOssConfig::from_gguf(file, n_layers, &rope)?),
            _ => None,
        };
        Ok(ModelConfig {
            arch,
            n_layers,
            d_model,
            n_heads,
            n_kv_heads,
            head_dim,
            n_vocab,
            n_ctx_train: usize_opt("context_length")?.unwrap_or(4096),
            rms_eps: file.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope,
            moe,
            qk_norm: arch.has_qk_norm(),
            deepseek4: None,
            qwen35moe,
            gptoss,
        })
    }

    /// The attention op's parameters: softmax scale `1 / sqrt(head_dim)`, RoPE, q/k norm epsilon.
    pub fn attention_params(&self) -> AttentionParams {
        AttentionParams {
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
            rope: self.rope,
            norm_eps: self.rms_eps,
        }
    }

    /// Whether a session's cache can go back to any earlier position (keys and values per
    /// position), so a chat keeps the prefix a new prompt shares; deepseek4's cannot (its
    /// compressed rows and unfinished blocks hold what positions past the cut left), nor can
    /// qwen35moe's (a DeltaNet state holds every token so far in a fixed size), so those can
    /// only grow or start over.
    pub fn cache_rewinds(&self) -> bool {
        self.deepseek4.is_none() && self.qwen35moe.is_none()
    }

    /// Bytes of the cache a session of `n_ctx` positions holds at `element_bytes` a value:
    /// keys and values of every position and layer; for deepseek4, the raw window plus the
    /// compressed rows and what builds them ([`Deepseek4Config::cache_size`]); for qwen35moe,
    /// the attention layers' keys and values plus the DeltaNet layers' f32 states.
    pub fn kv_cache_bytes(&self, n_ctx: usize, element_bytes: usize) -> u64 {
        let kv_layer = 2 * n_ctx * self.n_kv_heads * self.head_dim * element_bytes;
        match (&self.deepseek4, &self.qwen35moe) {
            (Some(c), _) => c.cache_size(n_ctx).bytes(element_bytes),
            (None, Some(q)) => {
                let recurrent = q.mixers.len() - q.attention_layers();
                (q.attention_layers() * kv_layer + recurrent * q.delta_net.state_floats() * 4)
                    as u64
            }
            (None, None) => (self.n_layers * kv_layer) as u64,
        }
    }

    /// A deepseek4 config: [`Deepseek4Config`], with the fields every architecture has read
    /// from it (one key/value head of `head_dim`; the raw-window layers' rotation; layer 0's
    /// routed activation, the clamp being per layer).
    fn deepseek4(file: &GgufFile) -> Result<ModelConfig> {
        let c = Deepseek4Config::from_gguf(file)?;
        let n_ctx_train = file
            .get_u64_opt(&format!("{}.context_length", super::deepseek4::ARCH))?
            .map_or(4096, |v| v as usize);
        Ok(ModelConfig {
            arch: Arch::Deepseek4,
            n_layers: c.n_layers,
            d_model: c.d_model,
            n_heads: c.n_heads,
            n_kv_heads: 1,
            head_dim: c.head_dim,
            n_vocab: c.n_vocab,
            n_ctx_train,
            rms_eps: c.rms_eps as f32,
            rope: RopeParams {
                n_dims: c.n_rot,
                freq_base: c.rope_freq_base as f32,
                freq_scale: 1.0,
                neox: false,
            },
            moe: Some(MoeConfig {
                n_experts: c.n_experts,
                n_experts_used: c.n_experts_used,
                expert_ff: c.expert_ff,
                gating: Gating::SqrtSoftplus,
                normalize: c.expert_weights_norm,
                weight_scale: c.expert_weights_scale as f32,
                activation: c.routed_activation(0),
            }),
            qk_norm: false,
            deepseek4: Some(c),
            qwen35moe: None,
            gptoss: None,
        })
    }
}
