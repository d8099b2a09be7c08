//! Command-line arguments shared by several subcommands, and their validation into settings.
//!
//! clap parses the command line, the values with a domain of their own (tile widths and
//! policies, graphics APIs) through the parsers here, straight into the library's settings
//! types; what depends on several values (sampler ranges, the environment's settings under the
//! flags) is checked here too, once, so a bad value is a one-line error before any file is
//! opened.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use moetile::RuntimeConfig;
use moetile::config::TilePolicyKind;
use moetile::generate::StopConditions;
use moetile::sample::SamplerConfig;
use moetile::tile::{TileCapSource, TilePolicy, TileWidth};
use moetile::tokenizer::Tokenizer;
use moetile_wgpu::{AdapterChoice, ContextOptions};

use crate::UsageError;
use crate::backend::{BackendChoice, GpuChoice};
use crate::cmd;

/// Run Mixture-of-Experts GGUF models on any GPU wgpu reaches, or on the CPU reference.
#[derive(Debug, Parser)]
#[command(name = "moetile", version, about, propagate_version = true)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text from a prompt, streaming it as it comes.
    ///
    /// A prompt of token ids (--prompt-ids, --prompt-ids-file) runs as given, no BOS added. A
    /// model file without a tokenizer takes only such prompts and prints the generated token
    /// ids, space-separated, instead of text (`--json`: `token_ids`, and `text` null).
    Run(cmd::run::RunArgs),
    /// Chat with the model's chat template, reusing the KV cache across turns.
    Chat(cmd::chat::ChatArgs),
    /// Measure prefill and decode speed (frontier sweep, llama-bench table, tile A/B).
    Bench(cmd::bench::BenchArgs),
    /// Write a random-weight GGUF with the dimensions of a real MoE model.
    Synth(cmd::synth::SynthArgs),
    /// List the GPU adapters wgpu sees, their capabilities, and the one moetile picks.
    Devices(cmd::devices::DevicesArgs),
    /// Compare the selected backend's logits with the CPU reference on a short prompt.
    Verify(cmd::verify::VerifyArgs),
    /// Time every stage of one prefill and a few decode steps with GPU timestamps.
    Profile(cmd::profile::ProfileArgs),
    /// Time the tile widths at a model's expert matmuls on the adapter and keep the fastest
    /// as its default tile cap.
    Tune(cmd::tune::TuneArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (chat and text completions,
    /// streamed or whole), generating for several clients at once.
    Serve(cmd::serve::ServeArgs),
}

/// The model file and the backend that runs it.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// GGUF model file.
    #[arg(short, long, value_name = "FILE.gguf")]
    pub model: PathBuf,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Backend selection.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Run on the CPU reference backend (plain loops: exact, slow; for checks and small
    /// models).
    #[arg(long, conflicts_with_all = ["device", "backend"])]
    pub cpu: bool,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

impl BackendArgs {
    /// The backend to run on.
    pub fn choice(&self) -> Result<BackendChoice> {
        if self.cpu {
            Ok(BackendChoice::Cpu)
        } else {
            Ok(BackendChoice::Gpu(Box::new(self.gpu.choice()?)))
        }
    }
}

/// GPU adapter selection.
#[derive(Debug, Clone, Args)]
pub struct GpuArgs {
    /// GPU adapter: an index or a name substring, as `moetile devices` lists them [default:
    /// discrete over integrated over CPU adapters, Vulkan/Metal/DX12 over GL].
    #[arg(long, value_name = "N|NAME")]
    pub device: Option<String>,
    /// Graphics API to search: vulkan, metal, dx12 or gl [default: $WGPU_BACKEND, else all].
    #[arg(long, value_name = "API", value_parser = graphics_api)]
    pub backend: Option<wgpu::Backends>,
    /// Let the mat-vecs (decode, small batches) read f32 activations instead of quantizing them
    /// to int8 per 32 values: slower, exact up to f32 rounding (the int8 error is ~1% of a
    /// layer's output, like llama.cpp's).
    #[arg(long)]
    pub f32_mat_vec: bool,
}

/// The APIs `--backend` accepts (wgpu's names) and the backend each is.
const APIS: [(&str, wgpu::Backends); 4] = [
    ("vulkan", wgpu::Backends::VULKAN),
    ("metal", wgpu::Backends::METAL),
    ("dx12", wgpu::Backends::DX12),
    ("gl", wgpu::Backends::GL),
];

/// Parses `--backend`.
fn graphics_api(value: &str) -> Result<wgpu::Backends, UsageError> {
    let api = value.trim().to_lowercase();
    APIS.iter()
        .find(|(name, _)| *name == api)
        .map(|&(_, backends)| backends)
        .ok_or_else(|| {
            let names: Vec<&str> = APIS.iter().map(|(name, _)| *name).collect();
            UsageError(format!(
                "invalid --backend = {api:?}: one of {}",
                names.join(", ")
            ))
        })
}

/// The names of the APIs in `backends`, as `--backend` and `WGPU_BACKEND` write them.
pub fn api_names(backends: wgpu::Backends) -> String {
    let names: Vec<&str> = APIS
        .iter()
        .filter(|(_, api)| backends.contains(*api))
        .map(|(name, _)| *name)
        .collect();
    names.join(",")
}

impl GpuArgs {
    /// The device to open and how the backend computes on it.
    pub fn choice(&self) -> Result<GpuChoice> {
        Ok(GpuChoice {
            context: self.resolve()?,
            int8_mat_vec: !self.f32_mat_vec,
        })
    }

    /// The options of the device to open: the flags over what the environment sets
    /// (`WGPU_BACKEND`, `MOETILE_SHADER_CHECKS`, see [`ContextOptions::from_env`]), and the
    /// user's cache folder for the pipeline cache and the tuning record.
    pub fn resolve(&self) -> Result<ContextOptions> {
        let mut options = ContextOptions::from_env()?;
        options.pipeline_cache_dir = cache_dir();
        options.tuning_dir = cache_dir();
        if let Some(backends) = self.backend {
            options.backends = backends;
        }
        options.adapter = self
            .device
            .as_deref()
            .map(AdapterChoice::parse)
            .unwrap_or_default();
        Ok(options)
    }
}

/// Where compiled GPU pipelines and the tuning record (`moetile tune`) are kept between runs:
/// `$XDG_CACHE_HOME/moetile`, else `~/.cache/moetile`; none without either variable.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|home| home.join(".cache")))
        .map(|cache| cache.join("moetile"))
}

/// Context, chunking and tile settings.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Context length in tokens [default: the model's, at most 4096].
    #[arg(long, value_name = "TOKENS")]
    pub ctx: Option<usize>,
    /// Most tokens per prefill chunk (the token count T the MoE tiles see).
    #[arg(long, value_name = "TOKENS", default_value_t = 512)]
    pub chunk: usize,
    /// Widest token tile of the routed-MoE matmul: 32, 64 or 128 [default: $MOETILE_TILE_MAX,
    /// else 128].
    #[arg(long, value_name = "32|64|128", value_parser = tile_width)]
    pub tile_max: Option<TileWidth>,
    /// How the tile width is chosen per chunk: alignment, load-aware or fixed:N.
    #[arg(long, value_name = "POLICY", default_value = "alignment", value_parser = tile_policy)]
    pub tile_policy: TilePolicyKind,
    /// deepseek4: round attention keys (FP8) and indexer heads (FP4) as the model was trained,
    /// as the original engine does (on), or keep them exact as llama.cpp does (off). Other
    /// architectures ignore it.
    #[arg(
        long,
        value_name = "on|off",
        default_value = "on",
        action = clap::ArgAction::Set,
        value_parser = on_off("--qat-sim")
    )]
    pub qat_sim: bool,
}

/// The parser of an `on|off` flag.
pub fn on_off(
    flag: &'static str,
) -> impl Fn(&str) -> Result<bool, UsageError> + Clone + Send + Sync + 'static {
    move |value| match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(UsageError(format!("invalid {flag} = {value:?}: on or off"))),
    }
}

/// Parses a `--tile-max` value.
pub fn tile_width(value: &str) -> Result<TileWidth, UsageError> {
    moetile::tile::parse_width("--tile-max", value).map_err(|e| UsageError(e.to_string()))
}

/// The value parser of one item of `flag`'s comma-separated list: `parse`, or a usage error
/// naming the flag and `expected` (clap splits the list and calls it per item).
pub fn list_item<T: Clone + Send + Sync + 'static>(
    flag: &'static str,
    expected: &'static str,
    parse: fn(&str) -> Option<T>,
) -> impl Fn(&str) -> Result<T, UsageError> + Clone + Send + Sync + 'static {
    move |item| {
        parse(item.trim()).ok_or_else(|| {
            UsageError(format!(
                "invalid {flag} = {item:?}: {expected}, comma-separated"
            ))
        })
    }
}

/// A positive count.
pub fn positive(v: &str) -> Option<usize> {
    v.parse().ok().filter(|&n| n > 0)
}

/// Parses a `--tile-policy` value.
pub fn tile_policy(value: &str) -> Result<TilePolicyKind, UsageError> {
    TilePolicyKind::parse(value).map_err(|e| UsageError(e.to_string()))
}

/// Validated runtime settings: the library's config and the policy it resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSettings {
    /// What sessions are built from.
    pub config: RuntimeConfig,
    /// The resolved tile policy (cap from the flag, else the environment, else the tuned cap,
    /// else 128).
    pub policy: TilePolicy,
}

impl RuntimeSettings {
    /// `config` with the policy it resolves to.
    pub fn new(config: RuntimeConfig) -> RuntimeSettings {
        RuntimeSettings {
            policy: config.resolve_tile_policy(),
            config,
        }
    }

    /// The tile policy as reports and headers name it: `alignment(cap 64)`, with `, tuned`
    /// inside the parentheses when the cap is the one `moetile tune` measured.
    pub fn tiles(&self) -> String {
        let policy = self.policy.to_string();
        let tuned = self.config.tile_cap().source == TileCapSource::Tuned;
        match policy.strip_suffix(')') {
            Some(open) if tuned && !matches!(self.policy, TilePolicy::Fixed(_)) => {
                format!("{open}, tuned)")
            }
            _ => policy,
        }
    }
}

impl RuntimeArgs {
    /// Checks every value; the tile cap from `MOETILE_TILE_MAX` is checked here too.
    pub fn resolve(&self) -> Result<RuntimeSettings> {
        let mut settings = runtime_settings(self.ctx, self.chunk, self.tile_max, self.tile_policy)?;
        settings.config.qat_sim = self.qat_sim;
        Ok(settings)
    }
}

/// Builds validated runtime settings from single values (bench builds one per A/B setting).
pub fn runtime_settings(
    ctx: Option<usize>,
    chunk: usize,
    tile_max: Option<TileWidth>,
    tile_policy: TilePolicyKind,
) -> Result<RuntimeSettings> {
    if chunk == 0 {
        return Err(usage("invalid --chunk = 0: at least 1 token"));
    }
    if ctx == Some(0) {
        return Err(usage("invalid --ctx = 0: at least 1 token"));
    }
    // The flag goes over `MOETILE_TILE_MAX`, which is read only without it: a bad value there
    // does not fail a command that overrides it.
    let tile_max_env = match tile_max {
        Some(_) => None,
        None => RuntimeConfig::from_env().map_err(usage)?.tile_max_env,
    };
    let config = RuntimeConfig {
        ctx,
        chunk,
        tile_max,
        tile_max_env,
        // A cap tuned for the model on the device comes once both are known
        // (`BackendInfo::tuned`).
        tuned_tile_max: None,
        tile_policy,
        ..RuntimeConfig::default()
    };
    Ok(RuntimeSettings::new(config))
}

/// Sampling flags.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Tokens to generate at most.
    #[arg(
        short = 'n',
        long = "n-predict",
        value_name = "N",
        default_value_t = 128
    )]
    pub n_predict: usize,
    /// Temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Keep the K likeliest tokens; 0 keeps all.
    #[arg(long, value_name = "K", default_value_t = 40)]
    pub top_k: usize,
    /// Keep the likeliest tokens up to this probability mass; 1 keeps all.
    #[arg(long, value_name = "P", default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than this times the likeliest; 0 keeps all.
    #[arg(long, value_name = "P", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalty on tokens of the last 64; 1 is off.
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Go on past end-of-generation tokens (until -n or a full context).
    #[arg(long)]
    pub ignore_eos: bool,
}

/// Where a prompt given as token ids comes from: `--prompt-ids` or `--prompt-ids-file`.
///
/// Token ids are the way to run a model file without a tokenizer (llama.cpp's test models), and
/// to feed the exact tokens another runtime ran, so outputs compare position by position.
#[derive(Debug, Clone, Args)]
pub struct PromptIdsArgs {
    /// The prompt as token ids, separated by commas or spaces (`1,2,3`), run exactly as given:
    /// no BOS or other special token is added. A model file without a tokenizer needs this.
    #[arg(long, value_name = "IDS", value_parser = prompt_ids)]
    pub prompt_ids: Option<PromptIds>,
    /// Read the prompt's token ids from this file: separated by commas, spaces or newlines
    /// (one per line works), run as given like --prompt-ids.
    #[arg(long, value_name = "FILE", conflicts_with = "prompt_ids")]
    pub prompt_ids_file: Option<PathBuf>,
}

impl PromptIdsArgs {
    /// The ids given, if any, read from the file where one is named.
    pub fn resolve(&self) -> Result<Option<PromptIds>> {
        match (&self.prompt_ids, &self.prompt_ids_file) {
            (Some(ids), _) => Ok(Some(ids.clone())),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading --prompt-ids-file {}", file.display()))?;
                let source = format!("--prompt-ids-file {}", file.display());
                Ok(Some(PromptIds::parse(&text, source)?))
            }
            (None, None) => Ok(None),
        }
    }
}

/// A prompt as token ids, at least one, each checked to be a number (the vocabulary is checked
/// once the model is open: [`crate::model::ModelFile::check_ids`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptIds {
    /// The ids, in order.
    pub ids: Vec<u32>,
    /// Where they came from (`--prompt-ids`, `--prompt-ids-file PATH`), for messages.
    pub source: String,
}

impl PromptIds {
    /// Parses ids separated by commas and/or whitespace (empty items, as from a trailing comma
    /// or newline, are skipped); a bad item is named with its 1-based position.
    pub fn parse(text: &str, source: String) -> Result<PromptIds, UsageError> {
        let items = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|item| !item.is_empty());
        let mut ids = Vec::new();
        for (i, item) in items.enumerate() {
            let id = item.parse().map_err(|_| {
                UsageError(format!(
                    "invalid {source}: item {} is {item:?}, not a token id (an integer from 0 to {})",
                    i + 1,
                    u32::MAX
                ))
            })?;
            ids.push(id);
        }
        if ids.is_empty() {
            return Err(UsageError(format!(
                "invalid {source}: no token ids; give at least one, e.g. 1,2,3"
            )));
        }
        Ok(PromptIds { ids, source })
    }
}

/// Parses a `--prompt-ids` value.
fn prompt_ids(value: &str) -> Result<PromptIds, UsageError> {
    PromptIds::parse(value, "--prompt-ids".to_string())
}

/// Validated sampling and stopping settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// How tokens are drawn.
    pub sampler: SamplerConfig,
    /// Most tokens per answer.
    pub max_tokens: usize,
    /// Whether end-of-generation tokens are ignored.
    pub ignore_eos: bool,
}

impl Sampling {
    /// The stop conditions for a model with `tokenizer`; without one, no token ends the
    /// generation early (the file names no end-of-generation token).
    pub fn stop(&self, tokenizer: Option<&Tokenizer>) -> StopConditions {
        let mut stop = match tokenizer {
            Some(tokenizer) => StopConditions::new(self.max_tokens, tokenizer),
            None => StopConditions {
                max_tokens: self.max_tokens,
                ..StopConditions::default()
            },
        };
        if self.ignore_eos {
            stop.end_tokens.clear();
        }
        stop
    }
}

impl SamplingArgs {
    /// The validated settings.
    pub fn resolve(&self) -> Result<Sampling> {
        let sampler = SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..SamplerConfig::default()
        };
        sampler.validate().map_err(usage)?;
        Ok(Sampling {
            sampler,
            max_tokens: self.n_predict,
            ignore_eos: self.ignore_eos,
        })
    }
}

/// A usage error carrying `e`'s message.
pub fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tile_max_is_one_line_naming_the_allowed_values() {
        let err = tile_width("48").unwrap_err().to_string();
        assert!(
            err.contains("--tile-max") && err.contains("32, 64 or 128"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn tile_policy_and_cap_resolve_together() {
        let load_aware = tile_policy("load-aware").unwrap();
        let s = runtime_settings(None, 64, Some(TileWidth::T64), load_aware).unwrap();
        assert_eq!(
            s.policy,
            TilePolicy::LoadAware {
                cap: TileWidth::T64
            }
        );
        let s = runtime_settings(None, 64, None, tile_policy("fixed:32").unwrap()).unwrap();
        assert_eq!(s.policy, TilePolicy::Fixed(TileWidth::T32));
        assert!(tile_policy("widest").is_err());
        assert!(runtime_settings(None, 0, None, TilePolicyKind::Alignment).is_err());
    }

    #[test]
    fn prompt_ids_are_separated_by_commas_spaces_or_lines() {
        let parse = |text: &str| PromptIds::parse(text, "--prompt-ids".to_string());
        assert_eq!(parse("1,2, 3\n4\t5,\n").unwrap().ids, [1, 2, 3, 4, 5]);
        let err = parse("7 8 -9").unwrap_err().to_string();
        assert!(err.contains("item 3") && err.contains("\"-9\""), "{err}");
        assert!(parse("4294967296").is_err());
        assert!(
            parse(" \n,")
                .unwrap_err()
                .to_string()
                .contains("no token ids")
        );
        // The deepseek4 fixture's prompt: one line of 300 comma-separated ids.
        let path = moetile_tests::fixtures().join("models/deepseek4-prompt-ids.txt");
        let text = std::fs::read_to_string(path).unwrap();
        let ids = parse(&text).unwrap().ids;
        assert_eq!(ids.len(), 300);
        assert!(ids.iter().all(|&id| id < 128));
        // ... for a model without a tokenizer (tokenizer.ggml.model = "none").
        let model = moetile_tests::fixtures().join("models/deepseek4-tiny-f32.gguf");
        let gguf = moetile::gguf::GgufFile::open(&model).unwrap();
        assert!(Tokenizer::from_gguf_opt(&gguf).unwrap().is_none());
    }

    #[test]
    fn backend_names_the_accepted_apis() {
        assert_eq!(graphics_api(" Vulkan").unwrap(), wgpu::Backends::VULKAN);
        let err = graphics_api("glide").unwrap_err().to_string();
        assert_eq!(
            err,
            r#"invalid --backend = "glide": one of vulkan, metal, dx12, gl"#
        );
        assert_eq!(
            api_names(wgpu::Backends::VULKAN | wgpu::Backends::GL),
            "vulkan,gl"
        );
    }
}
