//! Random-weight GGUF models with the dimensions of real MoE models, so benchmarks and tests
//! need no download.
//!
//! A [`Synth`] is a [`Preset`] (architecture and dimensions), a [`Mix`] (which quant type each
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
//! in moetile and in llama.cpp. Each architecture's tensors and keys live in a module of its
//! own (`qwen3moe.rs`, `deepseek4.rs`, `qwen35moe.rs`, `gptoss.rs`); this one holds what they
//! share.
//!
//! ```no_run
//! use moetile::synth::{Mix, Preset, Synth};
//! let synth = Synth::new(Preset::by_name("tiny-qwen3moe")?, Mix::Q4KM, 42);
//! let bytes = synth.write_file("tiny.gguf".as_ref(), false, &mut |done, total| {
//!     eprintln!("{done}/{total} bytes");
//! })?;
//! # Ok::<(), moetile::Error>(())
//! ```

mod deepseek4;
mod fill;
mod gptoss;
mod qwen35moe;
mod qwen3moe;
mod vocab;

use std::io::Write;
use std::path::Path;

use fill::{Init, Pools, TensorPlan};
use vocab::SynthVocab;

pub use deepseek4::Deepseek4Dims;
pub use gptoss::GptOssDims;
pub use qwen3moe::Qwen3MoeDims;
pub use qwen35moe::Qwen35MoeDims;

use crate::gguf::{Array, GgufError, GgufWriter};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// Dimensions of a synthetic model: what every architecture has (blocks, hidden width, routed
/// experts, vocabulary, context) and, in [`family`](Self::family), what its own architecture
/// adds.
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
    /// The architecture and its own dimensions.
    pub family: Family,
}

/// The architecture a preset is written as, with the dimensions only it has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Family {
    /// `qwen3moe`: GQA attention with per-head q/k norms, softmax-routed experts renormalised
    /// over the top K, no shared expert.
    Qwen3Moe(Qwen3MoeDims),
    /// `deepseek4` (DeepSeek V4): low-rank queries over one shared key/value latent,
    /// compressed keys with a lightning indexer, four hyper-connected streams,
    /// `sqrt(softplus)`-routed experts (hash-routed in the first layers) plus a shared expert.
    Deepseek4(Deepseek4Dims),
    /// `qwen35moe` (Qwen3.5 / Qwen3.6 MoE): Gated DeltaNet layers with gated attention every
    /// few layers, softmax-routed experts renormalised over the top K plus a gated shared
    /// expert.
    Qwen35Moe(Qwen35MoeDims),
    /// `gpt-oss`: GQA attention with biases and per-head sinks, sliding-window layers
    /// alternating with full ones, YaRN; a biased router weighing its top K by a softmax over
    /// them, biased experts with a clamped SwiGLU.
    GptOss(GptOssDims),
}

impl Family {
    /// `general.architecture`, and the prefix of the architecture's keys.
    pub fn arch(&self) -> &'static str {
        match self {
            Family::Qwen3Moe(_) => qwen3moe::ARCH,
            Family::Deepseek4(_) => deepseek4::ARCH,
            Family::Qwen35Moe(_) => qwen35moe::ARCH,
            Family::GptOss(_) => gptoss::ARCH,
        }
    }
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 9] = [
        qwen3moe::TINY,
        qwen3moe::QWEN3_30B_A3B,
        qwen3moe::DS4_FLASH_MOE,
        deepseek4::TINY,
        deepseek4::FLASH,
        qwen35moe::TINY,
        qwen35moe::QWEN36_35B_A3B,
        gptoss::TINY,
        gptoss::GPT_OSS_20B,
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

    /// The same dimensions with `n_layers` blocks (at least one): the first `n_layers` of the
    /// preset's per-layer pattern where it has one (deepseek4's compress ratios and
    /// hash-routed layers), so at most the preset's own count there.
    pub fn with_layers(self, n_layers: usize) -> Result<Preset> {
        let preset = Preset { n_layers, ..self };
        preset.check_layers()?;
        Ok(preset)
    }

    /// Refuses a layer count the preset cannot take.
    fn check_layers(&self) -> Result<()> {
        let max = match &self.family {
            Family::Qwen3Moe(_) | Family::Qwen35Moe(_) | Family::GptOss(_) => usize::MAX,
            Family::Deepseek4(dims) => dims.compress_ratios.len(),
        };
        if (1..=max).contains(&self.n_layers) {
            return Ok(());
        }
        Err(Error::InvalidSetting {
            name: format!("{} layers", self.name),
            value: self.n_layers.to_string(),
            expected: match max {
                usize::MAX => "at least 1".into(),
                _ => format!("1..={max}: the layers whose compress ratios the preset knows"),
            },
        })
    }

    /// Writes as u32 `ARCH.KEY` the keys every architecture's files carry (vocabulary,
    /// context, hidden width, blocks, experts: count, used, width), then `keys`.
    fn add_u32_keys<'k>(
        &self,
        w: &mut GgufWriter,
        keys: impl IntoIterator<Item = (&'k str, usize)>,
    ) -> Result<()> {
        let shared = [
            ("vocab_size", self.n_vocab),
            ("context_length", self.n_ctx_train),
            ("embedding_length", self.d_model),
            ("block_count", self.n_layers),
            ("expert_count", self.n_experts),
            ("expert_used_count", self.n_experts_used),
            ("expert_feed_forward_length", self.expert_ff),
        ];
        for (k, value) in shared.into_iter().chain(keys) {
            let key = format!("{}.{k}", self.family.arch());
            w.add_metadata(key, self.u32_of(value)?)?;
        }
        Ok(())
    }

    /// `v` as a u32 key value.
    fn u32_of(&self, v: usize) -> Result<u32> {
        u32::try_from(v).map_err(|_| {
            Error::InvalidModel(format!("{} dimension {v} does not fit in u32", self.name))
        })
    }
}

/// Which quant type each tensor gets. Norms and other vectors are F32 in every mix; so are the
/// routers (llama.cpp never quantizes `ffn_gate_inp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// llama.cpp's Q4_K_M: Q4_K, with Q6_K for the output head and for `attn_v` and
    /// `ffn_down_exps` of the layers llama.cpp gives more bits (first and last eighth, every
    /// third between).
    Q4KM,
    /// Q2_K everywhere but the output head (Q6_K).
    Q2K,
    /// The reference engine's "q2" mix: expert gate/up IQ2_XXS, expert down Q2_K, every other
    /// matrix Q8_0 (deepseek4: as the engine's files have them, F16 where they do).
    Iq2XxsQ2K,
    /// The reference engine's "q4" mix: routed experts Q4_K, every other matrix as in
    /// [`Mix::Iq2XxsQ2K`].
    Q4K,
    /// Q8_0 everywhere.
    Q8_0,
    /// F16 everywhere.
    F16,
    /// gpt-oss's files (llama.cpp's `MXFP4_MOE`): routed experts MXFP4, every other matrix
    /// Q8_0, the output head included (routers F32).
    Mxfp4,
}

/// The tensors of a block, by how the mixes store them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Embedding,
    Output,
    /// F32 in every mix: norm gains, biases, scales, sink logits.
    Vector,
    AttnQkvO {
        v: bool,
    },
    /// A router (and qwen35moe's DeltaNet gates): F32 in every mix.
    Router,
    ExpertGateUp,
    ExpertDown,
    /// The deepseek4 shared expert: Q8_0 in the reference engine's files.
    SharedExpert,
    /// What the reference engine's deepseek4 files keep in F16 (embedding, router,
    /// hyper-connection mixes, compressors, indexer): F16 but in the Q8_0 mix.
    Float16,
    /// I32 expert ids of hash routing, in every mix.
    ExpertIds,
}

impl Mix {
    /// Every mix with its command-line name.
    pub const ALL: [(Mix, &'static str); 7] = [
        (Mix::Q4KM, "q4_k_m"),
        (Mix::Q2K, "q2_k"),
        (Mix::Iq2XxsQ2K, "iq2_xxs-q2_k"),
        (Mix::Q4K, "q4_k"),
        (Mix::Q8_0, "q8_0"),
        (Mix::F16, "f16"),
        (Mix::Mxfp4, "mxfp4"),
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

    /// `general.file_type`: llama.cpp's `llama_ftype` of the mix (for `q4_k`, mostly Q4_K:
    /// `Q4_K_S`).
    fn file_type(self) -> u32 {
        match self {
            Mix::F16 => 1,
            Mix::Q8_0 => 7,
            Mix::Q2K => 10,
            Mix::Q4K => 14,
            Mix::Q4KM => 15,
            Mix::Iq2XxsQ2K => 19,
            Mix::Mxfp4 => 38,
        }
    }

    /// The type of a tensor with `role` in block `layer` of `n_layers`.
    fn tensor_type(self, role: Role, layer: usize, n_layers: usize) -> GgmlType {
        // llama.cpp's `use_more_bits`.
        let more_bits =
            layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
        match (self, role) {
            (_, Role::Vector | Role::Router) => GgmlType::F32,
            (_, Role::ExpertIds) => GgmlType::I32,
            (Mix::F16, _) => GgmlType::F16,
            (Mix::Q8_0, _) => GgmlType::Q8_0,
            (_, Role::Float16) => GgmlType::F16,
            (Mix::Q2K | Mix::Q4KM, Role::Output) => GgmlType::Q6_K,
            (Mix::Q2K, _) => GgmlType::Q2_K,
            (Mix::Q4KM, Role::AttnQkvO { v: true } | Role::ExpertDown) if more_bits => {
                GgmlType::Q6_K
            }
            (Mix::Q4KM, _) => GgmlType::Q4_K,
            (Mix::Iq2XxsQ2K, Role::ExpertGateUp) => GgmlType::IQ2_XXS,
            (Mix::Iq2XxsQ2K, Role::ExpertDown) => GgmlType::Q2_K,
            (Mix::Q4K, Role::ExpertGateUp | Role::ExpertDown) => GgmlType::Q4_K,
            (Mix::Mxfp4, Role::ExpertGateUp | Role::ExpertDown) => GgmlType::MXFP4,
            (Mix::Iq2XxsQ2K | Mix::Q4K | Mix::Mxfp4, _) => GgmlType::Q8_0,
        }
    }
}

/// Makes the [`TensorPlan`]s of one file: each tensor's type from the mix and its role.
struct Planner {
    mix: Mix,
    n_layers: usize,
}

impl Planner {
    /// Tensor `name` of block `layer` (0 for global tensors), ggml `dims`, filled as `init`.
    fn tensor(
        &self,
        name: impl Into<String>,
        role: Role,
        layer: usize,
        dims: &[usize],
        init: Init,
    ) -> TensorPlan {
        TensorPlan {
            name: name.into(),
            ty: self.mix.tensor_type(role, layer, self.n_layers),
            dims: dims.to_vec(),
            init,
        }
    }

    /// The token embedding, the output norm and the output head, as the Qwen families store
    /// them.
    fn embedding_and_head(&self, p: &Preset) -> Vec<TensorPlan> {
        let (d, v) = (p.d_model, p.n_vocab);
        vec![
            self.tensor("token_embd.weight", Role::Embedding, 0, &[d, v], MATRIX),
            self.norm("output_norm.weight", 0, d),
            self.tensor("output.weight", Role::Output, 0, &[d, v], output_head()),
        ]
    }

    /// Block `il`'s attention matrices as qwen3moe and gpt-oss store them: q (`q` rows), k
    /// and v (`kv` rows each) and the output.
    fn attention_matrices(&self, il: usize, d: usize, q: usize, kv: usize) -> [TensorPlan; 4] {
        let blk = |name: &str| format!("blk.{il}.{name}.weight");
        let attn = |v| Role::AttnQkvO { v };
        [
            self.tensor(blk("attn_q"), attn(false), il, &[d, q], MATRIX),
            self.tensor(blk("attn_k"), attn(false), il, &[d, kv], MATRIX),
            self.tensor(blk("attn_v"), attn(true), il, &[d, kv], MATRIX),
            self.tensor(blk("attn_output"), attn(false), il, &[q, d], MATRIX),
        ]
    }

    /// Block `il`'s routed experts with separate gate and up, as qwen3moe and gpt-oss store
    /// them (`p`'s widths).
    fn expert_matrices(&self, il: usize, p: &Preset) -> [TensorPlan; 3] {
        let (d, f, e) = (p.d_model, p.expert_ff, p.n_experts);
        let blk = |name: &str| format!("blk.{il}.{name}.weight");
        [
            self.tensor(
                blk("ffn_gate_exps"),
                Role::ExpertGateUp,
                il,
                &[d, f, e],
                MATRIX,
            ),
            self.tensor(
                blk("ffn_up_exps"),
                Role::ExpertGateUp,
                il,
                &[d, f, e],
                MATRIX,
            ),
            self.tensor(
                blk("ffn_down_exps"),
                Role::ExpertDown,
                il,
                &[f, d, e],
                MATRIX,
            ),
        ]
    }

    /// An F32 vector of norm gains.
    fn norm(&self, name: impl Into<String>, layer: usize, len: usize) -> TensorPlan {
        self.tensor(name, Role::Vector, layer, &[len], Init::NORM)
    }
}

/// The attention shape keys: query heads, key/value heads, key and value width.
fn attention_keys(
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) -> [(&'static str, usize); 4] {
    [
        ("attention.head_count", n_heads),
        ("attention.head_count_kv", n_kv_heads),
        ("attention.key_length", head_dim),
        ("attention.value_length", head_dim),
    ]
}

/// A weight matrix from the pools.
const MATRIX: Init = Init::Matrix { zero_from: None };

/// The output head: rows of the padding tokens are zero, so text is made of real tokens.
fn output_head() -> Init {
    Init::Matrix {
        zero_from: Some(SynthVocab::real_len()),
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

impl Synth {
    /// A model of `preset` dimensions in `mix`, with weights from `seed`.
    pub fn new(preset: Preset, mix: Mix, seed: u64) -> Synth {
        Synth { preset, mix, seed }
    }

    /// Every tensor, in file order.
    fn tensors(&self) -> Vec<TensorPlan> {
        let planner = Planner {
            mix: self.mix,
            n_layers: self.preset.n_layers,
        };
        match &self.preset.family {
            Family::Qwen3Moe(dims) => qwen3moe::tensors(&self.preset, dims, &planner),
            Family::Deepseek4(dims) => deepseek4::tensors(&self.preset, dims, &planner),
            Family::Qwen35Moe(dims) => qwen35moe::tensors(&self.preset, dims, &planner),
            Family::GptOss(dims) => gptoss::tensors(&self.preset, dims, &planner),
        }
    }

    /// Refuses what no file could hold: a vocabulary smaller than the real one, more experts
    /// used than exist, a layer count the preset cannot take, a mix the architecture's files
    /// do not come in. Writing checks it too; callers validating settings call it first.
    pub fn check(&self) -> Result<()> {
        let p = &self.preset;
        if p.n_vocab < SynthVocab::real_len() {
            return Err(Error::InvalidSetting {
                name: format!("{} vocabulary size", p.name),
                value: p.n_vocab.to_string(),
                expected: format!("at least {} tokens", SynthVocab::real_len()),
            });
        }
        if p.n_experts_used == 0 || p.n_experts_used > p.n_experts {
            return Err(Error::InvalidSetting {
                name: format!("{} experts used", p.name),
                value: p.n_experts_used.to_string(),
                expected: format!("1..={} (the experts there are)", p.n_experts),
            });
        }
        p.check_layers()?;
        match p.family {
            Family::Deepseek4(_) => deepseek4::check_mix(self.mix)?,
            Family::GptOss(_) => gptoss::check_mix(self.mix)?,
            Family::Qwen3Moe(_) | Family::Qwen35Moe(_) => {}
        }
        Ok(())
    }

    /// The header: metadata (hyper-parameters llama.cpp and moetile read, the tokenizer, the
    /// chat template, how the file was made) and the tensor table.
    fn writer(&self, tensors: &[TensorPlan]) -> Result<GgufWriter> {
        self.check()?;
        let p = &self.preset;
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", p.family.arch())?;
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
        match &p.family {
            Family::Qwen3Moe(dims) => qwen3moe::metadata(p, dims, &mut w)?,
            Family::Deepseek4(dims) => deepseek4::metadata(p, dims, &mut w)?,
            Family::Qwen35Moe(dims) => qwen35moe::metadata(p, dims, &mut w)?,
            Family::GptOss(dims) => gptoss::metadata(p, dims, &mut w)?,
        }

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
