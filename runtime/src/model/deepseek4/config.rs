//! The `deepseek4.*` GGUF keys resolved once into typed fields, with the defaults and checks of
//! llama.cpp's loader (`llama_model_deepseek4::load_arch_hparams`), so the forward pass never
//! looks a key up and a file it cannot run is refused at load with the key at fault.

use crate::gguf::{Array, GgufFile, Value};
use crate::model::{ExpertActivation, HC_STREAMS};
use crate::{Error, Result};

/// The `general.architecture` this module runs, and the prefix of its keys.
pub const ARCH: &str = "deepseek4";

/// The value of `expert_gating_func` meaning `sqrt(softplus(logit))`, the only one deepseek4
/// accepts.
const GATING_SQRT_SOFTPLUS: u64 = 4;

/// How a layer compresses its keys beyond the raw sliding window (`attention.compress_ratios`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Ratio 0: the raw sliding window only.
    None,
    /// Ratio 4 ("CSA"): one row per 4 tokens, pooled over an overlapping window of 8, and a
    /// lightning indexer choosing which rows each query sees.
    Ratio4,
    /// Ratio 128 ("HCA"): one row per 128 tokens, pooled over disjoint windows, all visible.
    Ratio128,
}

impl Compression {
    fn from_ratio(ratio: u64) -> Option<Compression> {
        match ratio {
            0 => Some(Compression::None),
            4 => Some(Compression::Ratio4),
            128 => Some(Compression::Ratio128),
            _ => None,
        }
    }

    /// Projection widths per compressed row width: 2 for ratio 4 (the previous and the
    /// current block pooled through separate column halves), else 1.
    pub fn coff(self) -> usize {
        if self == Compression::Ratio4 { 2 } else { 1 }
    }

    /// Tokens per compressed row (0 for none).
    pub fn ratio(self) -> usize {
        match self {
            Compression::None => 0,
            Compression::Ratio4 => 4,
            Compression::Ratio128 => 128,
        }
    }
}

/// Every hyper-parameter of a deepseek4 model that its forward pass reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Deepseek4Config {
    /// Transformer blocks run for the logits (`block_count` less the multi-token-prediction
    /// blocks, which do not contribute).
    pub n_layers: usize,
    /// Width of the hidden state of one stream (`embedding_length`).
    pub d_model: usize,
    /// Vocabulary size: rows of `token_embd.weight`.
    pub n_vocab: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Width of a query head, of the shared key/value head and of a compressed row.
    pub head_dim: usize,
    /// Rotated dimensions: the tail of each head (`rope.dimension_count`).
    pub n_rot: usize,
    /// Epsilon of every RMS norm.
    pub rms_eps: f64,
    /// Rank of the query's low-rank projection (`attention.q_lora_rank`).
    pub q_lora_rank: usize,
    /// Raw keys a query sees, itself included (`attention.sliding_window`).
    pub sliding_window: usize,
    /// Groups of the grouped low-rank output projection.
    pub output_groups: usize,
    /// Rank of each output group.
    pub output_rank: usize,
    /// Per layer: how its keys are compressed.
    pub compression: Vec<Compression>,
    /// Lightning indexer: heads.
    pub indexer_heads: usize,
    /// Lightning indexer: width of a head and of its compressed rows.
    pub indexer_head_dim: usize,
    /// Lightning indexer: compressed rows each query may attend.
    pub indexer_top_k: usize,
    /// RoPE base of layers without compression (`rope.freq_base`).
    pub rope_freq_base: f64,
    /// RoPE base of compressed layers, their indexer and compressed rows.
    pub compress_rope_freq_base: f64,
    /// RoPE frequency scale of compressed layers: `1 / rope.scaling.factor` (1 without one).
    pub compress_freq_scale: f64,
    /// YaRN on compressed layers (`rope.scaling.type = yarn`).
    pub yarn: bool,
    /// YaRN's original context (`rope.scaling.original_context_length`).
    pub yarn_orig_ctx: usize,
    /// Sinkhorn iterations of the hyper-connection mixing matrix.
    pub hc_sinkhorn_iterations: usize,
    /// Epsilon of the hyper-connections (added to weights and Sinkhorn sums).
    pub hc_eps: f64,
    /// Routed experts per layer.
    pub n_experts: usize,
    /// Experts each token uses.
    pub n_experts_used: usize,
    /// Rows of each routed expert's gate and up.
    pub expert_ff: usize,
    /// Rows of the shared expert's gate and up (`expert_ff * expert_shared_count`).
    pub shared_ff: usize,
    /// Layers `0..hash_layers` route by token id (`ffn_gate_tid2eid`), not by score.
    pub hash_layers: usize,
    /// Renormalise the chosen route weights to sum 1.
    pub expert_weights_norm: bool,
    /// Factor on the route weights (1 when the file says 0 or 1).
    pub expert_weights_scale: f64,
    /// Per layer: SwiGLU clamp of the routed experts (off at <= 1e-6).
    pub swiglu_clamp: Vec<f32>,
    /// Per layer: SwiGLU clamp of the shared expert.
    pub swiglu_clamp_shared: Vec<f32>,
}

/// Reads the `deepseek4.*` keys of one file.
struct Keys<'a> {
    file: &'a GgufFile,
}

impl Keys<'_> {
    fn name(k: &str) -> String {
        format!("{ARCH}.{k}")
    }

    fn value(&self, k: &str) -> Option<&Value> {
        self.file.get(&Self::name(k))
    }

    fn usize_opt(&self, k: &str) -> Result<Option<usize>> {
        Ok(self.file.get_u64_opt(&Self::name(k))?.map(|v| v as usize))
    }

    fn usize(&self, k: &str) -> Result<usize> {
        Ok(self.file.get_u64(&Self::name(k))? as usize)
    }

    fn f32_opt(&self, k: &str) -> Result<Option<f32>> {
        Ok(self.file.get_f32_opt(&Self::name(k))?)
    }

    fn f32(&self, k: &str) -> Result<f32> {
        Ok(self.file.get_f32(&Self::name(k))?)
    }

    /// An integer key that llama.cpp also accepts as a per-layer array, of which it uses the
    /// first entry for every shape; one that varies by layer is refused.
    fn uniform(&self, k: &str) -> Result<Option<usize>> {
        match self.value(k) {
            None => Ok(None),
            Some(Value::Array(a)) => {
                let values = a
                    .integers()
                    .ok_or_else(|| invalid(k, "holds no integers"))?;
                match values.split_first() {
                    Some((&first, rest)) if rest.iter().all(|&v| v == first) => {
                        let first = usize::try_from(first).map_err(|_| {
                            invalid(k, format!("is {first}; it cannot be negative"))
                        })?;
                        Ok(Some(first))
                    }
                    _ => Err(invalid(
                        k,
                        format!("has per-layer values {values:?}; they must be one value repeated"),
                    )),
                }
            }
            Some(_) => self.usize_opt(k),
        }
    }

    /// A float key given once or per layer (an array of at least `n_layers`), as per-layer
    /// values.
    fn per_layer_f32(&self, k: &str, n_layers: usize) -> Result<Option<Vec<f32>>> {
        match self.value(k) {
            None => Ok(None),
            Some(Value::Array(Array::F32(v))) if v.len() >= n_layers => {
                Ok(Some(v[..n_layers].to_vec()))
            }
            Some(Value::Array(a)) => Err(invalid(
                k,
                format!(
                    "has {} values of {}; it needs one f32 per layer ({n_layers})",
                    a.len(),
                    a.elem_type()
                ),
            )),
            Some(_) => Ok(Some(vec![self.f32(k)?; n_layers])),
        }
    }
}

/// The values a deepseek4 cache holds for a context, by what they are: the architecture's
/// cache, not a backend's (the CPU reference keeps the same rows in f64; the original engine
/// stores them as f32, so [`CacheSize::bytes`] of 4 is its figure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSize {
    /// Raw keys of the sliding window, every layer.
    pub raw_window: usize,
    /// Compressed key rows of the ratio-4 and ratio-128 layers.
    pub compressed: usize,
    /// The indexer's compressed keys (ratio-4 layers).
    pub indexer: usize,
    /// The compressors' unfinished blocks: values and scores of the tokens a later row pools
    /// (ratio 4: the block being filled and the one before; ratio 128: the one being filled).
    pub pending: usize,
}

impl CacheSize {
    /// Every value.
    pub fn values(&self) -> usize {
        self.raw_window + self.compressed + self.indexer + self.pending
    }

    /// Bytes at `element_bytes` a value.
    pub fn bytes(&self, element_bytes: usize) -> u64 {
        (self.values() * element_bytes) as u64
    }
}

impl Deepseek4Config {
    /// What a cache of `n_ctx` positions holds: per layer the raw window, and per compressed
    /// layer its rows (and the indexer's) for `n_ctx` positions plus its unfinished blocks.
    /// For DeepSeek V4 Flash in f32 this is the original engine's figure: 52 MB at 2K, 925 MB
    /// at 64K.
    pub fn cache_size(&self, n_ctx: usize) -> CacheSize {
        let hd = self.head_dim;
        let mut size = CacheSize {
            raw_window: self.n_layers * self.sliding_window.min(n_ctx) * hd,
            compressed: 0,
            indexer: 0,
            pending: 0,
        };
        for &c in &self.compression {
            if c == Compression::None {
                continue;
            }
            let (rows, ratio) = (n_ctx / c.ratio(), c.ratio());
            // Values and scores, `coff * width` each, of `coff` blocks of `ratio` tokens.
            let pending = |width: usize| c.coff() * ratio * 2 * c.coff() * width;
            size.compressed += rows * hd;
            size.pending += pending(hd);
            if c == Compression::Ratio4 {
                size.indexer += rows * self.indexer_head_dim;
                size.pending += pending(self.indexer_head_dim);
            }
        }
        size
    }

    /// The routed experts' activation in layer `il`: SwiGLU with deepseek4's clamp (gate from
    /// above, up both ways), off at a limit of at most 1e-6 as llama.cpp has it.
    pub fn routed_activation(&self, il: usize) -> ExpertActivation {
        clamped_swiglu(self.swiglu_clamp[il])
    }

    /// The shared expert's activation in layer `il`, as [`Self::routed_activation`].
    pub fn shared_activation(&self, il: usize) -> ExpertActivation {
        clamped_swiglu(self.swiglu_clamp_shared[il])
    }

    /// Reads and checks the config of `file`; every error names the key or tensor at fault.
    pub fn from_gguf(file: &GgufFile) -> Result<Deepseek4Config> {
        let arch = file.get_str("general.architecture")?;
        if arch != ARCH {
            return Err(Error::UnsupportedArch {
                name: arch.to_string(),
                supported: ARCH.to_string(),
            });
        }
        let keys = Keys { file };

        let n_blocks = keys.usize("block_count")?;
        let n_nextn = keys.usize_opt("nextn_predict_layers")?.unwrap_or(0);
        // llama.cpp ignores the count when the first MTP block is absent; either way MTP
        // blocks come after the ones that produce the logits.
        let n_layers = n_blocks.checked_sub(n_nextn).ok_or_else(|| {
            invalid(
                "nextn_predict_layers",
                format!("is {n_nextn}, more than block_count {n_blocks}"),
            )
        })?;
        let n_layers = if file
            .tensor(&format!("blk.{n_layers}.nextn.eh_proj.weight"))
            .is_some()
        {
            n_layers
        } else {
            n_blocks
        };
        if n_layers == 0 {
            return Err(invalid(
                "block_count",
                format!("leaves no layer before the {n_nextn} multi-token-prediction blocks"),
            ));
        }

        let d_model = keys.usize("embedding_length")?;
        let n_heads = keys
            .uniform("attention.head_count")?
            .ok_or_else(|| Error::from(missing("attention.head_count")))?;
        if n_heads == 0 {
            return Err(invalid("attention.head_count", "is 0"));
        }
        let n_kv_heads = keys.uniform("attention.head_count_kv")?.unwrap_or(n_heads);
        if n_kv_heads != 1 {
            return Err(invalid(
                "attention.head_count_kv",
                format!("is {n_kv_heads}; deepseek4 has one key/value head"),
            ));
        }
        let head_dim = keys
            .usize_opt("attention.key_length")?
            .unwrap_or(d_model / n_heads);
        let value_dim = keys
            .usize_opt("attention.value_length")?
            .unwrap_or(head_dim);
        if value_dim != head_dim {
            return Err(invalid(
                "attention.value_length",
                format!("is {value_dim}; keys are values, so it must equal key_length {head_dim}"),
            ));
        }
        let n_rot = keys.usize_opt("rope.dimension_count")?.unwrap_or(head_dim);
        let indexer_head_dim = keys.usize("attention.indexer.key_length")?;
        if n_rot % 2 != 0 || n_rot > head_dim || n_rot > indexer_head_dim {
            return Err(invalid(
                "rope.dimension_count",
                format!(
                    "is {n_rot}; must be even and at most the head width {head_dim} and the indexer head width {indexer_head_dim}"
                ),
            ));
        }

        let output_groups = keys.usize("attention.output_group_count")?;
        if output_groups == 0 || n_heads % output_groups != 0 {
            return Err(invalid(
                "attention.output_group_count",
                format!("is {output_groups}; it must divide the {n_heads} heads"),
            ));
        }

        let ratios = match keys.value("attention.compress_ratios") {
            Some(Value::Array(a)) => a.integers(),
            Some(_) => None,
            None => return Err(missing("attention.compress_ratios").into()),
        }
        .ok_or_else(|| invalid("attention.compress_ratios", "is not an array of integers"))?;
        if ratios.len() < n_layers {
            return Err(invalid(
                "attention.compress_ratios",
                format!("has {} entries for {n_layers} layers", ratios.len()),
            ));
        }
        let compression = ratios[..n_layers]
            .iter()
            .enumerate()
            .map(|(il, &r)| {
                u64::try_from(r)
                    .ok()
                    .and_then(Compression::from_ratio)
                    .ok_or_else(|| {
                        invalid(
                            "attention.compress_ratios",
                            format!("gives layer {il} ratio {r}; only 0, 4 and 128 exist"),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;

        let hc = keys.usize("hyper_connection.count")?;
        if hc != HC_STREAMS {
            return Err(invalid(
                "hyper_connection.count",
                format!("is {hc}; deepseek4 has {HC_STREAMS} streams"),
            ));
        }
        let hc_sinkhorn_iterations = keys.usize("hyper_connection.sinkhorn_iterations")?;
        if hc_sinkhorn_iterations == 0 {
            return Err(invalid("hyper_connection.sinkhorn_iterations", "is 0"));
        }

        let gating = keys.usize("expert_gating_func")? as u64;
        if gating != GATING_SQRT_SOFTPLUS {
            return Err(invalid(
                "expert_gating_func",
                format!("is {gating}; deepseek4 routes by sqrt(softplus) ({GATING_SQRT_SOFTPLUS})"),
            ));
        }
        let n_experts = keys.usize("expert_count")?;
        let n_experts_used = keys
            .uniform("expert_used_count")?
            .ok_or_else(|| Error::from(missing("expert_used_count")))?;
        if n_experts_used == 0 || n_experts_used > n_experts {
            return Err(invalid(
                "expert_used_count",
                format!("is {n_experts_used}; must be 1..={n_experts} (expert_count)"),
            ));
        }
        let expert_ff = keys
            .uniform("expert_feed_forward_length")?
            .ok_or_else(|| Error::from(missing("expert_feed_forward_length")))?;
        let hash_layers = keys.usize("hash_layer_count")?;
        if hash_layers > n_layers {
            return Err(invalid(
                "hash_layer_count",
                format!("is {hash_layers}, more than the {n_layers} layers"),
            ));
        }
        let expert_weights_scale = match keys.f32("expert_weights_scale")? {
            0.0 => 1.0,
            s => s as f64,
        };
        let swiglu_clamp = keys
            .per_layer_f32("swiglu_clamp_exp", n_layers)?
            .ok_or_else(|| Error::from(missing("swiglu_clamp_exp")))?;
        let swiglu_clamp_shared = keys
            .per_layer_f32("swiglu_clamp_shexp", n_layers)?
            .unwrap_or_else(|| swiglu_clamp.clone());

        let n_ctx_train = keys.usize("context_length")?;
        let yarn = match file.get_str_opt(&Keys::name("rope.scaling.type"))? {
            None | Some("none") | Some("linear") => false,
            Some("yarn") => true,
            Some(other) => {
                return Err(invalid(
                    "rope.scaling.type",
                    format!("is {other:?}; deepseek4 knows none, linear and yarn"),
                ));
            }
        };
        let compress_freq_scale = match keys.f32_opt("rope.scaling.factor")? {
            None | Some(0.0) => 1.0,
            Some(f) => 1.0 / f as f64,
        };

        let n_vocab = match file.tensor("token_embd.weight") {
            Some(t) if t.dims.len() == 2 => t.dims[1],
            Some(t) => {
                return Err(Error::InvalidModel(format!(
                    "tensor token_embd.weight has dims {:?}, expected [{d_model}, n_vocab]",
                    t.dims
                )));
            }
            None => {
                return Err(Error::InvalidModel(
                    "tensor token_embd.weight is missing".into(),
                ));
            }
        };

        Ok(Deepseek4Config {
            n_layers,
            d_model,
            n_vocab,
            n_heads,
            head_dim,
            n_rot,
            rms_eps: keys.f32("attention.layer_norm_rms_epsilon")? as f64,
            q_lora_rank: keys.usize("attention.q_lora_rank")?,
            sliding_window: keys.usize("attention.sliding_window")?,
            output_groups,
            output_rank: keys.usize("attention.output_lora_rank")?,
            compression,
            indexer_heads: keys.usize("attention.indexer.head_count")?,
            indexer_head_dim,
            indexer_top_k: keys.usize("attention.indexer.top_k")?,
            rope_freq_base: keys.f32_opt("rope.freq_base")?.unwrap_or(10000.0) as f64,
            compress_rope_freq_base: keys.f32("attention.compress_rope_freq_base")? as f64,
            compress_freq_scale,
            yarn,
            yarn_orig_ctx: keys
                .usize_opt("rope.scaling.original_context_length")?
                .unwrap_or(n_ctx_train),
            hc_sinkhorn_iterations,
            hc_eps: keys.f32("hyper_connection.epsilon")? as f64,
            n_experts,
            n_experts_used,
            expert_ff,
            shared_ff: expert_ff * keys.usize("expert_shared_count")?,
            hash_layers,
            expert_weights_norm: file.get_bool(&Keys::name("expert_weights_norm"))?,
            expert_weights_scale,
            swiglu_clamp,
            swiglu_clamp_shared,
        })
    }
}

/// Key `k` holds a value deepseek4 cannot run: `what` says why.
fn clamped_swiglu(limit: f32) -> ExpertActivation {
    if limit > 1e-6 {
        ExpertActivation::SwiGluClamped { limit }
    } else {
        ExpertActivation::SwiGlu
    }
}

fn invalid(k: &str, what: impl std::fmt::Display) -> Error {
    Error::InvalidModel(format!("{} {what}", Keys::name(k)))
}

/// Key `k` is absent.
fn missing(k: &str) -> crate::gguf::GgufError {
    crate::gguf::GgufError::MissingKey { key: Keys::name(k) }
}
