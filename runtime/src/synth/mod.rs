//! Random-weight GGUF models with the dimensions of real MoE models, so benchmarks and tests
//! need no download.
//!
//! A [`Synth`] is a [`Preset`] (architecture dimensions), a [`Mix`] (which quant type each
//! tensor gets) and a seed; the same three always give the same bytes. Files are written as a
//! stream through [`GgufWriter`] (the model is never held in memory), into a temporary file
//! next to the destination that is renamed into place only once complete, so neither a crash
//! nor a failed write leaves a partial file under the final name or clobbers an existing one.
//!
//! Weights are real quantizer outputs of uniform random values, sampled from per-type pools
//! (see `fill.rs`): fast to write, and varied enough for routing and logits to behave like a
//! model's. The tokenizer is a real 512-token byte-level BPE vocabulary (the test fixtures'),
//! padded with unused tokens to the preset's vocabulary size, with a ChatML template; the
//! output head gives padding tokens logit 0, so sampled text is made of real tokens. Files load
//! in moetile and in llama.cpp (architecture `qwen3moe`).
//!
//! ```no_run
//! use moetile::synth::{Mix, Preset, Synth};
//! let synth = Synth::new(Preset::by_name("tiny-qwen3moe")?, Mix::Q4KM, 42);
//! let bytes = synth.write_file("tiny.gguf".as_ref(), false, &mut |done, total| {
//!     eprintln!("{done}/{total} bytes");
//! })?;
//! # Ok::<(), moetile::Error>(())
//! ```

mod fill;
mod vocab;

use std::io::Write;
use std::path::Path;

use fill::{Init, Pools, TensorPlan};
use vocab::SynthVocab;

use crate::gguf::{Array, GgufError, GgufWriter};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// Dimensions of a synthetic model (architecture `qwen3moe`: GQA attention with per-head q/k
/// norms, softmax-routed experts renormalised over the top K, no shared expert).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    /// Name on the command line.
    pub name: &'static str,
    /// What the dimensions come from.
    pub about: &'static str,
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
    /// E: routed experts per layer.
    pub n_experts: usize,
    /// K: experts per token.
    pub n_experts_used: usize,
    /// F: expert width.
    pub expert_ff: usize,
    /// Vocabulary size (the real vocabulary padded with unused tokens).
    pub n_vocab: usize,
    /// Trained context written to the metadata.
    pub n_ctx_train: usize,
    /// RoPE frequency base.
    pub rope_freq_base: f32,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 3] = [
        Preset {
            name: "tiny-qwen3moe",
            about: "a small qwen3moe for tests and quick benchmarks (2 MB in f16)",
            n_layers: 4,
            d_model: 256,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
            n_experts: 16,
            n_experts_used: 2,
            expert_ff: 256,
            n_vocab: 512,
            n_ctx_train: 32768,
            rope_freq_base: 1_000_000.0,
        },
        Preset {
            name: "qwen3-30b-a3b",
            about: "Qwen3-30B-A3B: 48 layers, D 2048, 128 experts (8 used) of F 768, GQA 32/4 \
                    heads of 128",
            n_layers: 48,
            d_model: 2048,
            n_heads: 32,
            n_kv_heads: 4,
            head_dim: 128,
            n_experts: 128,
            n_experts_used: 8,
            expert_ff: 768,
            n_vocab: 151_936,
            n_ctx_train: 40960,
            rope_freq_base: 1_000_000.0,
        },
        Preset {
            name: "ds4-flash-moe",
            about: "DeepSeek-V4-Flash's MoE layers (43 layers, D 4096, 256 experts, 6 used, \
                    F 2048, vocabulary 129280) under qwen3moe attention of Qwen3-235B-A22B's \
                    shape (GQA 64/4 heads of 128), since its own attention is not a qwen3moe op",
            n_layers: 43,
            d_model: 4096,
            n_heads: 64,
            n_kv_heads: 4,
            head_dim: 128,
            n_experts: 256,
            n_experts_used: 6,
            expert_ff: 2048,
            n_vocab: 129_280,
            n_ctx_train: 65536,
            rope_freq_base: 1_000_000.0,
        },
    ];

    /// The preset called `name`, or an error listing them.
    pub fn by_name(name: &str) -> Result<Preset> {
        Self::ALL
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::InvalidSetting {
                name: "preset".into(),
                value: name.into(),
                expected: format!("one of {}", Self::ALL.map(|p| p.name).join(", ")),
            })
    }

    /// The same dimensions with `n_layers` blocks (at least one).
    pub fn with_layers(self, n_layers: usize) -> Result<Preset> {
        if n_layers == 0 {
            return Err(Error::InvalidSetting {
                name: "layers".into(),
                value: "0".into(),
                expected: "at least 1".into(),
            });
        }
        Ok(Preset { n_layers, ..self })
    }
}

/// Which quant type each tensor gets. Norms and the router are F32 in every mix (llama.cpp
/// never quantizes `ffn_gate_inp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// llama.cpp's Q4_K_M: Q4_K, with Q6_K for the output head and for `attn_v` and
    /// `ffn_down_exps` of the layers llama.cpp gives more bits (first and last eighth, every
    /// third between).
    Q4KM,
    /// Q2_K everywhere but the output head (Q6_K).
    Q2K,
    /// The reference engine's "q2" mix: expert gate/up IQ2_XXS, expert down Q2_K, every other
    /// matrix Q8_0.
    Iq2XxsQ2K,
    /// Q8_0 everywhere.
    Q8_0,
    /// F16 everywhere.
    F16,
}

/// The tensors of a block, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Embedding,
    Output,
    Norm,
    AttnQkvO { v: bool },
    Router,
    ExpertGateUp,
    ExpertDown,
}

impl Mix {
    /// Every mix with its command-line name.
    pub const ALL: [(Mix, &'static str); 5] = [
        (Mix::Q4KM, "q4_k_m"),
        (Mix::Q2K, "q2_k"),
        (Mix::Iq2XxsQ2K, "iq2_xxs-q2_k"),
        (Mix::Q8_0, "q8_0"),
        (Mix::F16, "f16"),
    ];

    /// The mix called `name`, or an error listing them.
    pub fn by_name(name: &str) -> Result<Mix> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(m, _)| *m)
            .ok_or_else(|| Error::InvalidSetting {
                name: "quant mix".into(),
                value: name.into(),
                expected: format!("one of {}", Self::ALL.map(|(_, n)| n).join(", ")),
            })
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(m, _)| *m == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    /// `general.file_type`: llama.cpp's `llama_ftype` of the mix.
    fn file_type(self) -> u32 {
        match self {
            Mix::F16 => 1,
            Mix::Q8_0 => 7,
            Mix::Q2K => 10,
            Mix::Q4KM => 15,
            Mix::Iq2XxsQ2K => 19,
        }
    }

    /// The type of a tensor with `role` in block `layer` of `n_layers`.
    fn tensor_type(self, role: Role, layer: usize, n_layers: usize) -> GgmlType {
        // llama.cpp's `use_more_bits`.
        let more_bits =
            layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
        match (self, role) {
            (_, Role::Norm | Role::Router) => GgmlType::F32,
            (Mix::F16, _) => GgmlType::F16,
            (Mix::Q8_0, _) => GgmlType::Q8_0,
            (Mix::Q2K | Mix::Q4KM, Role::Output) => GgmlType::Q6_K,
            (Mix::Q2K, _) => GgmlType::Q2_K,
            (Mix::Q4KM, Role::AttnQkvO { v: true } | Role::ExpertDown) if more_bits => {
                GgmlType::Q6_K
            }
            (Mix::Q4KM, _) => GgmlType::Q4_K,
            (Mix::Iq2XxsQ2K, Role::ExpertGateUp) => GgmlType::IQ2_XXS,
            (Mix::Iq2XxsQ2K, Role::ExpertDown) => GgmlType::Q2_K,
            (Mix::Iq2XxsQ2K, _) => GgmlType::Q8_0,
        }
    }
}

/// A synthetic model: dimensions, quant mix and seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Synth {
    /// Dimensions.
    pub preset: Preset,
    /// Quant types.
    pub mix: Mix,
    /// Seed of every random value in the file.
    pub seed: u64,
}

/// The architecture every preset is written as.
const ARCH: &str = "qwen3moe";

impl Synth {
    /// A model of `preset` dimensions in `mix`, with weights from `seed`.
    pub fn new(preset: Preset, mix: Mix, seed: u64) -> Synth {
        Synth { preset, mix, seed }
    }

    /// Every tensor, in file order.
    fn tensors(&self) -> Vec<TensorPlan> {
        let p = &self.preset;
        let (d, f, e) = (p.d_model, p.expert_ff, p.n_experts);
        let (q, kv) = (p.n_heads * p.head_dim, p.n_kv_heads * p.head_dim);
        let matrix = Init::Matrix { zero_from: None };
        let plan =
            |name: String, role: Role, layer: usize, dims: &[usize], init: Init| TensorPlan {
                name,
                ty: self.mix.tensor_type(role, layer, p.n_layers),
                dims: dims.to_vec(),
                init,
            };
        let mut out = vec![
            plan(
                "token_embd.weight".into(),
                Role::Embedding,
                0,
                &[d, p.n_vocab],
                matrix,
            ),
            plan("output_norm.weight".into(), Role::Norm, 0, &[d], Init::Norm),
            plan(
                "output.weight".into(),
                Role::Output,
                0,
                &[d, p.n_vocab],
                Init::Matrix {
                    zero_from: Some(SynthVocab::real_len()),
                },
            ),
        ];
        for il in 0..p.n_layers {
            let blk = |name: &str| format!("blk.{il}.{name}.weight");
            let attn = |v| Role::AttnQkvO { v };
            out.extend([
                plan(blk("attn_norm"), Role::Norm, il, &[d], Init::Norm),
                plan(blk("attn_q"), attn(false), il, &[d, q], matrix),
                plan(blk("attn_k"), attn(false), il, &[d, kv], matrix),
                plan(blk("attn_v"), attn(true), il, &[d, kv], matrix),
                plan(blk("attn_output"), attn(false), il, &[q, d], matrix),
                plan(
                    blk("attn_q_norm"),
                    Role::Norm,
                    il,
                    &[p.head_dim],
                    Init::Norm,
                ),
                plan(
                    blk("attn_k_norm"),
                    Role::Norm,
                    il,
                    &[p.head_dim],
                    Init::Norm,
                ),
                plan(blk("ffn_norm"), Role::Norm, il, &[d], Init::Norm),
                plan(blk("ffn_gate_inp"), Role::Router, il, &[d, e], matrix),
                plan(
                    blk("ffn_gate_exps"),
                    Role::ExpertGateUp,
                    il,
                    &[d, f, e],
                    matrix,
                ),
                plan(
                    blk("ffn_up_exps"),
                    Role::ExpertGateUp,
                    il,
                    &[d, f, e],
                    matrix,
                ),
                plan(
                    blk("ffn_down_exps"),
                    Role::ExpertDown,
                    il,
                    &[f, d, e],
                    matrix,
                ),
            ]);
        }
        out
    }

    /// The header: metadata (hyper-parameters llama.cpp and moetile read, the tokenizer, the
    /// chat template, how the file was made) and the tensor table.
    fn writer(&self, tensors: &[TensorPlan]) -> Result<GgufWriter> {
        let p = &self.preset;
        if p.n_vocab < SynthVocab::real_len() {
            return Err(Error::InvalidSetting {
                name: format!("{} vocabulary size", p.name),
                value: p.n_vocab.to_string(),
                expected: format!("at least {} tokens", SynthVocab::real_len()),
            });
        }
        let mut w = GgufWriter::new();
        let u32_of = |v: usize| -> Result<u32> {
            u32::try_from(v).map_err(|_| {
                Error::InvalidModel(format!("{} dimension {v} does not fit in u32", p.name))
            })
        };
        let arch = |k: &str| format!("{ARCH}.{k}");
        w.add_metadata("general.architecture", ARCH)?;
        w.add_metadata(
            "general.name",
            format!(
                "moetile synth {} {} (random weights)",
                p.name,
                self.mix.name()
            ),
        )?;
        w.add_metadata("general.file_type", self.mix.file_type())?;
        w.add_metadata("general.quantization_version", 2u32)?;
        w.add_metadata("moetile.synth.preset", p.name)?;
        w.add_metadata("moetile.synth.mix", self.mix.name())?;
        w.add_metadata("moetile.synth.seed", self.seed)?;
        for (key, value) in [
            ("context_length", p.n_ctx_train),
            ("embedding_length", p.d_model),
            ("block_count", p.n_layers),
            ("feed_forward_length", p.expert_ff * p.n_experts_used),
            ("attention.head_count", p.n_heads),
            ("attention.head_count_kv", p.n_kv_heads),
            ("attention.key_length", p.head_dim),
            ("attention.value_length", p.head_dim),
            ("expert_count", p.n_experts),
            ("expert_used_count", p.n_experts_used),
            ("expert_feed_forward_length", p.expert_ff),
            ("vocab_size", p.n_vocab),
        ] {
            w.add_metadata(arch(key), u32_of(value)?)?;
        }
        w.add_metadata(arch("attention.layer_norm_rms_epsilon"), 1e-6f32)?;
        w.add_metadata(arch("rope.freq_base"), p.rope_freq_base)?;

        let vocab = SynthVocab::padded(p.n_vocab);
        let control = |text: &str| {
            SynthVocab::control_id(text).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "the embedded vocabulary lacks control token {text}"
                ))
            })
        };
        w.add_metadata("tokenizer.ggml.model", "gpt2")?;
        w.add_metadata("tokenizer.ggml.pre", "qwen2")?;
        w.add_metadata("tokenizer.ggml.tokens", Array::from(vocab.tokens))?;
        let types: Vec<i32> = vocab.types.iter().map(|t| t.code()).collect();
        w.add_metadata("tokenizer.ggml.token_type", Array::from(types))?;
        w.add_metadata("tokenizer.ggml.merges", Array::from(vocab.merges))?;
        w.add_metadata("tokenizer.ggml.bos_token_id", control("<|endoftext|>")?)?;
        w.add_metadata("tokenizer.ggml.eos_token_id", control("<|im_end|>")?)?;
        w.add_metadata("tokenizer.ggml.padding_token_id", control("<|endoftext|>")?)?;
        w.add_metadata("tokenizer.ggml.add_bos_token", false)?;
        w.add_metadata("tokenizer.chat_template", crate::chat::CHATML)?;
        for t in tensors {
            w.add_tensor(t.name.as_str(), t.ty, &t.dims)?;
        }
        Ok(w)
    }

    /// Bytes of tensor data (the file is this plus a header of a few megabytes at most).
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|t| {
                let rows: usize = t.dims[1..].iter().product();
                t.ty.row_bytes(t.dims[0]).unwrap_or(0) as u64 * rows as u64
            })
            .sum()
    }

    /// Streams the file to `out`; `progress(done, total)` follows the tensor bytes. Returns
    /// the bytes written.
    pub fn write_to(&self, out: impl Write, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
        let tensors = self.tensors();
        let writer = self.writer(&tensors)?;
        let pools = Pools::build(self.seed, &tensors)?;
        let total = self.tensor_bytes();
        let mut done = 0;
        progress(0, total);
        let written = writer.write_to(out, |i, sink| {
            pools.write(&tensors[i], sink, &mut |n| {
                done += n;
                progress(done, total);
            })
        })?;
        Ok(written)
    }

    /// Writes the file at `path` through a temporary file in the same folder, renamed into
    /// place at the end. An existing `path` is an error unless `overwrite`; it is checked
    /// before any work and again, atomically, at the rename.
    pub fn write_file(
        &self,
        path: &Path,
        overwrite: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64> {
        let exists = || Error::OutputExists {
            path: path.to_path_buf(),
        };
        if !overwrite && path.exists() {
            return Err(exists());
        }
        let io = |context: String| move |error| Error::Gguf(GgufError::Io { context, error });
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let prefix = format!(".{}.", name.as_deref().unwrap_or("synth"));
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".partial");
        // A temporary file is private (0600); the model is an ordinary file (0666 less umask).
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let tmp = builder.tempfile_in(dir).map_err(io(format!(
            "creating a temporary file in {}",
            dir.display()
        )))?;
        let written = self.write_to(tmp.as_file(), progress)?;
        let persisted = if overwrite {
            tmp.persist(path)
        } else {
            tmp.persist_noclobber(path)
        };
        persisted.map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                exists()
            } else {
                io(format!("renaming the finished file to {}", path.display()))(e.error)
            }
        })?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests;
