//! Opening a model file (header, config and tokenizer: cheap, so prompts are checked before
//! any weight moves) and loading its weights onto a backend with a progress bar. [`PromptJob`]
//! is the start the commands that run a prompt share; a prompt is text or token ids
//! ([`Prompt`]), and a file without a tokenizer runs on ids alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use moetile::RuntimeConfig;
use moetile::gguf::GgufFile;
use moetile::model::{Backend, Model, ModelConfig};
use moetile::synth::{Mix, Preset, Synth};
use moetile::tokenizer::Tokenizer;
use serde::Serialize;
use tempfile::TempDir;

use crate::UsageError;
use crate::args::{PromptIds, usage};
use crate::progress;

/// How long loading a model took: reading and uploading its weights, then preparing the
/// backend's kernels (GPU pipelines, from the pipeline cache when it has them).
#[derive(Debug, Clone, Copy)]
pub struct LoadTimes {
    /// Reading, converting and uploading the weights.
    pub upload: Duration,
    /// `Backend::prepare`.
    pub prepare: Duration,
}

/// A mapped GGUF with its config and tokenizer resolved.
pub struct ModelFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The mapped file.
    pub file: GgufFile,
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// The tokenizer it carries; `None` for a file without one (llama.cpp's test models),
    /// which runs on token ids (see [`require_tokenizer`](Self::require_tokenizer)).
    pub tokenizer: Option<Tokenizer>,
}

/// A prompt as the user gave it.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Text, tokenized with the model's tokenizer (BOS added as the model asks, special tokens
    /// recognised).
    Text(String),
    /// Token ids, run as they are.
    Ids(PromptIds),
}

/// A model opened to run a prompt, checked before any weight moves: where `run` and `verify`
/// start.
pub struct PromptJob {
    /// The model.
    pub file: ModelFile,
    /// The prompt's tokens, at least one.
    pub tokens: Vec<u32>,
    /// The session settings, with a context that holds the prompt.
    pub config: RuntimeConfig,
}

impl PromptJob {
    /// Opens `path`, tokenizes `prompt` (or checks its ids against the vocabulary) and checks
    /// that it fits the context `config` gives.
    pub fn open(path: &Path, prompt: &Prompt, config: &RuntimeConfig) -> Result<PromptJob> {
        let file = ModelFile::open(path)?;
        let tokens = match prompt {
            Prompt::Text(text) => file
                .require_tokenizer(TEXT_PROMPT_FIX)?
                .encode(text, true, true),
            Prompt::Ids(ids) => {
                file.check_ids(ids)?;
                ids.ids.clone()
            }
        };
        anyhow::ensure!(!tokens.is_empty(), "the prompt is empty");
        let config = file.session_config(config, tokens.len())?;
        Ok(PromptJob {
            file,
            tokens,
            config,
        })
    }
}

/// The model file a command runs: the one `-m` names, or a synthetic `tiny-qwen3moe` (Q4_K_M)
/// written into a temporary folder that lives as long as this value, so a benchmark or a
/// server runs with nothing downloaded.
pub struct ModelSource {
    path: PathBuf,
    /// The synthetic model's folder, deleted on drop.
    _synthetic: Option<TempDir>,
}

impl ModelSource {
    /// `given`, else a freshly synthesized model; the note on stderr says what the command is
    /// `doing` with it and where it was written.
    pub fn given_or_synthetic(given: Option<&Path>, doing: &str) -> Result<ModelSource> {
        if let Some(path) = given {
            return Ok(ModelSource {
                path: path.to_path_buf(),
                _synthetic: None,
            });
        }
        let dir = tempfile::tempdir().context("creating a temporary folder")?;
        let synth = Synth::new(Preset::ALL[0], Mix::Q4KM, 0);
        let path = dir.path().join(format!("{}.gguf", synth.preset.name));
        eprintln!(
            "no -m given: {doing} a synthetic {} ({}) written to {}",
            synth.preset.name,
            synth.mix.name(),
            path.display()
        );
        crate::cmd::synth::write(&synth, &path, false)?;
        Ok(ModelSource {
            path,
            _synthetic: Some(dir),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The size of `values` f32 values, in kB below a megabyte, else MB.
fn f32_size(values: usize) -> String {
    let bytes = values as f64 * 4.0;
    if bytes < 1e6 {
        format!("{:.1} kB", bytes / 1e3)
    } else {
        format!("{:.1} MB", bytes / 1e6)
    }
}

/// What to do about a text prompt given to a model without a tokenizer.
const TEXT_PROMPT_FIX: &str = "give the prompt as token ids with --prompt-ids or --prompt-ids-file";

/// What reports say about the model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The file.
    pub path: String,
    /// `general.name`, if any.
    pub name: Option<String>,
    /// Architecture.
    pub arch: String,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
    /// Blocks, hidden width, experts (used of total).
    pub shape: String,
}

impl ModelFile {
    /// Maps `path` and resolves its config and tokenizer; errors name the file.
    pub fn open(path: &Path) -> Result<ModelFile> {
        anyhow::ensure!(
            path.exists(),
            "model file {} does not exist",
            path.display()
        );
        let file = GgufFile::open(path).with_context(|| format!("{}", path.display()))?;
        let config =
            ModelConfig::from_gguf(&file).with_context(|| format!("{}", path.display()))?;
        let tokenizer =
            Tokenizer::from_gguf_opt(&file).with_context(|| format!("{}", path.display()))?;
        Ok(ModelFile {
            path: path.to_path_buf(),
            file,
            config,
            tokenizer,
        })
    }

    /// The tokenizer, or a usage error saying that the file has none and, in `fix`, what to do
    /// instead (text can be neither read nor written without one).
    pub fn require_tokenizer(&self, fix: &str) -> Result<&Tokenizer> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| self.no_tokenizer(fix))
    }

    /// The tokenizer moved out of the file (to be shared between threads), or the error of
    /// [`require_tokenizer`](Self::require_tokenizer).
    pub fn take_tokenizer(&mut self, fix: &str) -> Result<Tokenizer> {
        self.tokenizer.take().ok_or_else(|| self.no_tokenizer(fix))
    }

    fn no_tokenizer(&self, fix: &str) -> anyhow::Error {
        UsageError(format!(
            "{}: this model file has no tokenizer; {fix}",
            self.path.display()
        ))
        .into()
    }

    /// Fails with a usage error naming the first id of `prompt` outside the vocabulary (the
    /// rows of the embedding table), which no backend could embed.
    pub fn check_ids(&self, prompt: &PromptIds) -> Result<()> {
        let n_vocab = self.config.n_vocab;
        match prompt
            .ids
            .iter()
            .enumerate()
            .find(|&(_, &id)| id as usize >= n_vocab)
        {
            Some((i, id)) => Err(UsageError(format!(
                "invalid {}: item {} is token id {id}, outside the model's vocabulary of {n_vocab} tokens (ids 0 to {})",
                prompt.source,
                i + 1,
                n_vocab - 1
            ))
            .into()),
            None => Ok(()),
        }
    }

    /// `config` for a session of this model that must hold `tokens` tokens: its context
    /// resolved (`--ctx`, else the library's default for the model) and checked to hold them.
    pub fn session_config(&self, config: &RuntimeConfig, tokens: usize) -> Result<RuntimeConfig> {
        let n_ctx = config.n_ctx(&self.config);
        if tokens > n_ctx {
            // An argument out of range (the prompt or --ctx): a usage error, exit status 2.
            return Err(usage(format!(
                "the prompt has {tokens} tokens but the context holds {n_ctx}; raise --ctx or shorten the prompt"
            )));
        }
        Ok(RuntimeConfig {
            ctx: Some(n_ctx),
            ..config.clone()
        })
    }

    /// Uploads the weights to `backend` and prepares it to run them (GPU pipelines), with
    /// progress bars; also says how long each took. A deepseek4 model's cache for `n_ctx`
    /// positions is estimated first (its size depends on the context in ways a user cannot
    /// guess: a raw window plus compressed rows).
    pub fn load<B: Backend>(&self, backend: &mut B, n_ctx: usize) -> Result<(Model<B>, LoadTimes)> {
        if let Some(line) = self.cache_estimate(n_ctx) {
            eprintln!("{line}");
        }
        let start = Instant::now();
        let bar = progress::bytes_bar("loading", self.tensor_bytes());
        let model = Model::load(&self.file, backend, &mut |p| bar.set_position(p.bytes_done))
            .with_context(|| format!("loading {}", self.path.display()))?;
        bar.finish_and_clear();
        let upload = start.elapsed();
        let bar = progress::count_bar("compiling", "kernels");
        backend
            .prepare(&model.config, &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })
            .context("preparing the backend's kernels")?;
        bar.finish_and_clear();
        let times = LoadTimes {
            upload,
            prepare: start.elapsed() - upload,
        };
        Ok((model, times))
    }

    /// The line saying what a deepseek4 cache of `n_ctx` positions holds, in f32 as the
    /// original engine counts it; `None` for other architectures.
    pub fn cache_estimate(&self, n_ctx: usize) -> Option<String> {
        let size = self.config.deepseek4.as_ref()?.cache_size(n_ctx);
        Some(format!(
            "cache for {n_ctx} positions: {} (raw window {}, compressed rows {}, indexer keys \
             {}, unfinished blocks {}; f32)",
            f32_size(size.values()),
            f32_size(size.raw_window),
            f32_size(size.compressed),
            f32_size(size.indexer),
            f32_size(size.pending)
        ))
    }

    fn tensor_bytes(&self) -> u64 {
        self.file.tensors().iter().map(|t| t.len as u64).sum()
    }

    /// The report's description of the model.
    pub fn info(&self) -> ModelInfo {
        let c = &self.config;
        let experts = c
            .moe
            .map(|m| {
                format!(
                    ", {} of {} experts of F {}",
                    m.n_experts_used, m.n_experts, m.expert_ff
                )
            })
            .unwrap_or_default();
        ModelInfo {
            path: self.path.display().to_string(),
            name: self
                .file
                .get_str_opt("general.name")
                .ok()
                .flatten()
                .map(str::to_string),
            arch: c.arch.name().to_string(),
            tensor_bytes: self.tensor_bytes(),
            shape: format!("{} layers, D {}{experts}", c.n_layers, c.d_model),
        }
    }
}
