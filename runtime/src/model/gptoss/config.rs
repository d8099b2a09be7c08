//! The `gpt-oss.*` keys beyond the shared ones: which layers attend through a sliding window,
//! that window, and the YaRN extension of the rotary embedding, resolved once with the
//! defaults of llama.cpp's loader (`llama_model_openai_moe::load_arch_hparams` and the YaRN
//! set-up of `llama_context`).

use crate::gguf::{GgufFile, Value};
use crate::model::{AttentionParams, RopeParams};
use crate::{Error, Result};

/// The `general.architecture` this module runs, and the prefix of its keys.
pub const ARCH: &str = "gpt-oss";

/// YaRN's extension of RoPE as llama.cpp sets it up (ggml's `rope_ext` arguments): pair `i`
/// turns by an angle mixed between the interpolated (`freq_scale`) and the extrapolated one
/// along a ramp between the correction dims of `beta_fast` and `beta_slow`, and both q and k
/// are scaled by `attn_factor * (1 + 0.1 ln(1 / freq_scale))` when `ext_factor` is not 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    /// Weight of the extrapolated angle on the ramp: 1 with YaRN scaling, 0 without.
    pub ext_factor: f32,
    /// llama.cpp's `yarn_attn_factor`: `rope.scaling.attn_factor` over the magnitude
    /// correction that ggml multiplies back in (so with a factor above 1 the net scale of q
    /// and k is `attn_factor * (1 + 0.1 ln factor)`).
    pub attn_factor: f32,
    /// Rotations over the original context below which a pair extrapolates (32).
    pub beta_fast: f32,
    /// Rotations over the original context above which a pair interpolates (1).
    pub beta_slow: f32,
    /// `rope.scaling.original_context_length`.
    pub n_ctx_orig: usize,
}

impl Yarn {
    /// No extension: every angle is the interpolated one, unscaled.
    pub const NONE: Yarn = Yarn {
        ext_factor: 0.0,
        attn_factor: 1.0,
        beta_fast: 32.0,
        beta_slow: 1.0,
        n_ctx_orig: 0,
    };
}

/// One gpt-oss layer's attention: the shared shape, the rotation's YaRN extension, and the
/// sliding window of the layers that have one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptOssAttentionParams {
    /// Heads, scale and RoPE (this layer's frequency base).
    pub attn: AttentionParams,
    /// The YaRN extension of `attn.rope`.
    pub yarn: Yarn,
    /// Keys a query sees, itself included (position `p` sees `p - window + 1..=p`); `None`
    /// for full causal attention.
    pub window: Option<usize>,
}

/// What gpt-oss adds to the shared config.
#[derive(Debug, Clone, PartialEq)]
pub struct GptOssConfig {
    /// Per layer: whether it attends through the sliding window
    /// (`attention.sliding_window_pattern`, else every even layer, as llama.cpp's pattern of 2).
    pub sliding: Vec<bool>,
    /// `attention.sliding_window`.
    pub window: usize,
    /// RoPE frequency base of the sliding-window layers (`rope.freq_base_swa`, else the
    /// shared base).
    pub swa_freq_base: f32,
    /// The rotation's extension (all layers).
    pub yarn: Yarn,
}

impl GptOssConfig {
    /// Reads the keys of `file` for a model of `n_layers` whose shared RoPE settings are
    /// `rope` (`freq_scale` being 1 / `rope.scaling.factor`).
    pub fn from_gguf(file: &GgufFile, n_layers: usize, rope: &RopeParams) -> Result<GptOssConfig> {
        let key = |k: &str| format!("{ARCH}.{k}");
        let window = file.get_u64(&key("attention.sliding_window"))? as usize;
        if window == 0 {
            return Err(invalid("attention.sliding_window", "is 0"));
        }
        let sliding = match file.get(&key("attention.sliding_window_pattern")) {
            Some(Value::Array(a)) => {
                a.flags().filter(|f| f.len() >= n_layers).ok_or_else(|| {
                    invalid(
                        "attention.sliding_window_pattern",
                        format!("must hold a 0/1 flag for each of the {n_layers} layers"),
                    )
                })?[..n_layers]
                    .to_vec()
            }
            Some(_) => {
                return Err(invalid(
                    "attention.sliding_window_pattern",
                    "is not an array (a pattern length is not supported)",
                ));
            }
            None => (0..n_layers).map(|il| il % 2 == 0).collect(),
        };
        let yarn = match file.get_str_opt(&key("rope.scaling.type"))? {
            Some("yarn") => {
                let n_ctx_train = file.get_u64_opt(&key("context_length"))?.unwrap_or(4096);
                let n_ctx_orig = file
                    .get_u64_opt(&key("rope.scaling.original_context_length"))?
                    .filter(|&n| n != 0)
                    .unwrap_or(n_ctx_train) as usize;
                let attn_factor = file
                    .get_f32_opt(&key("rope.scaling.attn_factor"))?
                    .unwrap_or(1.0);
                Yarn {
                    ext_factor: 1.0,
                    attn_factor: llama_yarn_attn_factor(1.0 / rope.freq_scale) * attn_factor,
                    n_ctx_orig,
                    ..Yarn::NONE
                }
            }
            _ => Yarn::NONE,
        };
        Ok(GptOssConfig {
            sliding,
            window,
            swa_freq_base: file
                .get_f32_opt(&key("rope.freq_base_swa"))?
                .unwrap_or(rope.freq_base),
            yarn,
        })
    }

    /// Layer `il`'s attention from the shared parameters.
    pub fn attention_params(&self, shared: &AttentionParams, il: usize) -> GptOssAttentionParams {
        let sliding = self.sliding[il];
        let mut attn = *shared;
        if sliding {
            attn.rope.freq_base = self.swa_freq_base;
        }
        GptOssAttentionParams {
            attn,
            yarn: self.yarn,
            window: sliding.then_some(self.window),
        }
    }
}

/// llama.cpp's `yarn_attn_factor` for a context extended by `factor` with YaRN: the
/// magnitude `1 + 0.1 ln factor` (1 up to a factor of 1) over the one ggml's rope multiplies
/// in, so that ggml's product is the magnitude alone.
fn llama_yarn_attn_factor(factor: f32) -> f32 {
    let mscale = if factor <= 1.0 {
        1.0
    } else {
        1.0 + 0.1 * factor.ln()
    };
    mscale / (1.0 + 0.1 * factor.ln())
}

fn invalid(k: &str, what: impl std::fmt::Display) -> Error {
    Error::InvalidModel(format!("{ARCH}.{k} {what}"))
}
