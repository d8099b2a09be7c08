//! The `qwen35moe.*` keys that set its layer mix and its Gated DeltaNet layers, resolved once
//! with the defaults and checks of llama.cpp's loader (`llama_model_qwen35moe::load_arch_hparams`).
//! The attention and MoE keys it shares with the other Qwen models are
//! [`crate::model::ModelConfig`]'s.

use crate::gguf::{GgufFile, Value};
use crate::{Error, Result};

/// The `general.architecture` this module runs, and the prefix of its keys.
pub const ARCH: &str = "qwen35moe";

/// What mixes tokens in a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mixer {
    /// Gated DeltaNet: linear attention over a fixed-size recurrent state.
    DeltaNet,
    /// Gated full attention over the KV cache.
    Attention,
}

/// The shape of every Gated DeltaNet layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaNetConfig {
    /// Taps of the causal depthwise convolution (`ssm.conv_kernel`); it carries `taps - 1`
    /// inputs across calls.
    pub conv_taps: usize,
    /// Width of a key, query and value head (`ssm.state_size`); a head's state is
    /// `head_dim x head_dim`.
    pub head_dim: usize,
    /// Key and query heads (`ssm.group_count`).
    pub n_k_heads: usize,
    /// Value heads (`ssm.time_step_rank`); value head h reads key head `h % n_k_heads`, as
    /// llama.cpp tiles them.
    pub n_v_heads: usize,
}

impl DeltaNetConfig {
    /// Width of the queries, or of the keys.
    pub fn key_width(&self) -> usize {
        self.n_k_heads * self.head_dim
    }

    /// Width of the values and of the output (`ssm.inner_size`).
    pub fn value_width(&self) -> usize {
        self.n_v_heads * self.head_dim
    }

    /// Channels of the convolution: queries, keys and values.
    pub fn conv_channels(&self) -> usize {
        2 * self.key_width() + self.value_width()
    }

    /// Floats one layer carries per sequence: the convolution's tail and the heads' states.
    pub fn state_floats(&self) -> usize {
        (self.conv_taps - 1) * self.conv_channels() + self.n_v_heads * self.head_dim * self.head_dim
    }
}

/// What qwen35moe adds to the shared config.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen35MoeConfig {
    /// Per layer run for the logits (`block_count` less `nextn_predict_layers`, the
    /// multi-token-prediction blocks, which are not loaded): its mixer.
    pub mixers: Vec<Mixer>,
    /// The DeltaNet layers' shape.
    pub delta_net: DeltaNetConfig,
    /// Rows of the shared expert's gate and up (`expert_shared_feed_forward_length`).
    pub shared_ff: usize,
}

impl Qwen35MoeConfig {
    /// Reads the keys of `file`; `rope_dims` is the attention's rotated width, which the RoPE
    /// sections must cover like NEOX RoPE.
    pub fn from_gguf(file: &GgufFile, rope_dims: usize) -> Result<Qwen35MoeConfig> {
        let key = |k: &str| format!("{ARCH}.{k}");
        let req = |k: &str| -> Result<usize> { Ok(file.get_u64(&key(k))? as usize) };
        let opt = |k: &str| -> Result<Option<usize>> {
            Ok(file.get_u64_opt(&key(k))?.map(|v| v as usize))
        };
        let n_all = req("block_count")?;
        let n_nextn = opt("nextn_predict_layers")?.unwrap_or(0);
        let n_layers = n_all
            .checked_sub(n_nextn)
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                invalid(
                    "nextn_predict_layers",
                    format!("is {n_nextn}, leaving no layer of {n_all}"),
                )
            })?;
        let recurrent = match file.get(&key("attention.recurrent_layers")) {
            Some(Value::Array(a)) => {
                a.flags().filter(|f| f.len() >= n_layers).ok_or_else(|| {
                    invalid(
                        "attention.recurrent_layers",
                        format!("must hold a 0/1 flag for each of the {n_layers} layers"),
                    )
                })?
            }
            Some(_) => return Err(invalid("attention.recurrent_layers", "is not an array")),
            None => {
                let interval = opt("full_attention_interval")?.unwrap_or(4);
                if interval == 0 {
                    return Err(invalid("full_attention_interval", "is 0"));
                }
                (0..n_layers).map(|il| (il + 1) % interval != 0).collect()
            }
        };
        let mixers = recurrent[..n_layers]
            .iter()
            .map(|&r| if r { Mixer::DeltaNet } else { Mixer::Attention })
            .collect();

        let delta_net = DeltaNetConfig {
            conv_taps: req("ssm.conv_kernel")?,
            head_dim: req("ssm.state_size")?,
            n_k_heads: req("ssm.group_count")?,
            n_v_heads: req("ssm.time_step_rank")?,
        };
        let d = &delta_net;
        if d.conv_taps < 1
            || d.head_dim == 0
            || d.n_k_heads == 0
            || !d.n_v_heads.is_multiple_of(d.n_k_heads)
        {
            return Err(Error::InvalidModel(format!(
                "{ARCH}: ssm.conv_kernel {}, ssm.state_size {}, ssm.group_count {}, \
                 ssm.time_step_rank {}: each must be positive and the value heads a multiple \
                 of the key heads",
                d.conv_taps, d.head_dim, d.n_k_heads, d.n_v_heads
            )));
        }
        let inner = req("ssm.inner_size")?;
        if inner != d.value_width() {
            return Err(invalid(
                "ssm.inner_size",
                format!(
                    "is {inner}; llama.cpp's graph needs ssm.state_size x ssm.time_step_rank = {}",
                    d.value_width()
                ),
            ));
        }
        check_sections(file, rope_dims)?;
        // llama.cpp scales attention scores by `attention.scale` when it is not 0; converted
        // models leave it out, and the attention op scales by 1/sqrt(head_dim).
        if let Some(scale) = file.get_f32_opt(&key("attention.scale"))?
            && scale != 0.0
        {
            return Err(invalid(
                "attention.scale",
                format!("is {scale}; only the default 1/sqrt(head_dim) (0 or absent) is supported"),
            ));
        }
        Ok(Qwen35MoeConfig {
            mixers,
            delta_net,
            shared_ff: req("expert_shared_feed_forward_length")?,
        })
    }

    /// Layers with full attention (the only ones with keys and values to cache).
    pub fn attention_layers(&self) -> usize {
        self.mixers
            .iter()
            .filter(|&&m| m == Mixer::Attention)
            .count()
    }
}

/// llama.cpp rotates qwen35moe with interleaved multi-section RoPE (IMRoPE): pair i takes the
/// position of section `s(i)` (time, height, width, or the extra one); a text token's positions
/// are (p, p, p, 0). So text rotates like plain NEOX RoPE exactly when no rotated pair falls to
/// the extra section, which holds for the published models ([11, 11, 10, 0] on 64 dims);
/// anything else is refused rather than rotated wrongly.
fn check_sections(file: &GgufFile, rope_dims: usize) -> Result<()> {
    let k = "rope.dimension_sections";
    let s = match file.get(&format!("{ARCH}.{k}")) {
        Some(Value::Array(a)) => a.integers().filter(|s| s.len() >= 4),
        Some(_) => None,
        None => {
            return Err(crate::gguf::GgufError::MissingKey {
                key: format!("{ARCH}.{k}"),
            }
            .into());
        }
    }
    .ok_or_else(|| invalid(k, "must be an array of 4 integers"))?;
    let total: i128 = s[..4].iter().sum();
    let extra = (0..rope_dims as i128 / 2).find(|&i| {
        let sector = if total > 0 { i % total } else { 0 };
        let from = |sec: usize, r: i128| sector % 3 == r && sector < 3 * s[sec];
        !(from(0, 0) || from(1, 1) || from(2, 2))
    });
    match extra {
        None => Ok(()),
        Some(i) => Err(invalid(
            k,
            format!(
                "is {:?}: rotated pair {i} takes the extra (4th) position, which text tokens \
                 hold at 0; only sections that rotate every pair of text like NEOX RoPE are \
                 supported",
                &s[..4]
            ),
        )),
    }
}

fn invalid(k: &str, what: impl std::fmt::Display) -> Error {
    Error::InvalidModel(format!("{ARCH}.{k} {what}"))
}
