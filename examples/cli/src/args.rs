//! Command-line arguments shared by several subcommands, and their validation into settings.
//!
//! clap parses the shape of the command line; values with a domain of their own (tile widths
//! and policies, sampler ranges) are checked here, once, into the library's settings types, so
//! a bad value is a one-line error before any file is opened.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use moetile::RuntimeConfig;
use moetile::config::TilePolicyKind;
use moetile::generate::StopConditions;
use moetile::sample::SamplerConfig;
use moetile::tile::{TilePolicy, TileWidth};
use moetile::tokenizer::Tokenizer;
use moetile_wgpu::AdapterChoice;

use crate::UsageError;
use crate::backend::BackendChoice;
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
            Ok(BackendChoice::Gpu(self.gpu.resolve()?))
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
    #[arg(long, value_name = "API")]
    pub backend: Option<String>,
}

/// The APIs `--backend` accepts (wgpu's names).
const APIS: [&str; 4] = ["vulkan", "metal", "dx12", "gl"];

impl GpuArgs {
    /// The adapter to use. `--backend` is exported as `WGPU_BACKEND`, the variable wgpu's
    /// adapter listing reads, so every later listing and selection sees only that API.
    pub fn resolve(&self) -> Result<AdapterChoice> {
        if let Some(api) = &self.backend {
            let api = api.trim().to_lowercase();
            if !APIS.contains(&api.as_str()) {
                return Err(usage(format!(
                    "invalid --backend = {api:?}: one of {}",
                    APIS.join(", ")
                )));
            }
            // SAFETY: settings are resolved on the main thread before any other thread exists
            // (the Ctrl-C handler and wgpu's threads start later), so no one reads the
            // environment concurrently.
            unsafe { std::env::set_var("WGPU_BACKEND", api) };
        }
        Ok(self
            .device
            .as_deref()
            .map(AdapterChoice::parse)
            .unwrap_or_default())
    }
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
    #[arg(long, value_name = "32|64|128")]
    pub tile_max: Option<String>,
    /// How the tile width is chosen per chunk: alignment, load-aware or fixed:N.
    #[arg(long, value_name = "POLICY", default_value = "alignment")]
    pub tile_policy: String,
}

/// Validated runtime settings: the library's config and the policy it resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSettings {
    /// What sessions are built from.
    pub config: RuntimeConfig,
    /// The resolved tile policy (cap from the flag, else the environment, else 128).
    pub policy: TilePolicy,
}

impl RuntimeArgs {
    /// Checks every value; the tile cap from `MOETILE_TILE_MAX` is checked here too.
    pub fn resolve(&self) -> Result<RuntimeSettings> {
        let tile_max = self
            .tile_max
            .as_deref()
            .map(|v| moetile::tile::parse_width("--tile-max", v))
            .transpose()
            .map_err(usage)?;
        runtime_settings(self.ctx, self.chunk, tile_max, &self.tile_policy)
    }
}

/// Builds validated runtime settings from single values (bench builds one per A/B setting).
pub fn runtime_settings(
    ctx: Option<usize>,
    chunk: usize,
    tile_max: Option<TileWidth>,
    tile_policy: &str,
) -> Result<RuntimeSettings> {
    if chunk == 0 {
        return Err(usage("invalid --chunk = 0: at least 1 token"));
    }
    if ctx == Some(0) {
        return Err(usage("invalid --ctx = 0: at least 1 token"));
    }
    // The cap given here does not matter: only the kind is kept, the cap is resolved below.
    let tile_policy = match TilePolicy::parse(tile_policy, TileWidth::T128).map_err(usage)? {
        TilePolicy::Alignment { .. } => TilePolicyKind::Alignment,
        TilePolicy::LoadAware { .. } => TilePolicyKind::LoadAware,
        TilePolicy::Fixed(w) => TilePolicyKind::Fixed(w),
    };
    let config = RuntimeConfig {
        ctx,
        chunk,
        tile_max,
        tile_policy,
    };
    let policy = config.resolve_tile_policy().map_err(usage)?;
    Ok(RuntimeSettings { config, policy })
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
    /// The stop conditions for `tokenizer`'s model.
    pub fn stop(&self, tokenizer: &Tokenizer) -> StopConditions {
        let mut stop = StopConditions::new(self.max_tokens, tokenizer);
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
        let args = RuntimeArgs {
            ctx: None,
            chunk: 512,
            tile_max: Some("48".into()),
            tile_policy: "alignment".into(),
        };
        let err = args.resolve().unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("--tile-max") && text.contains("32, 64 or 128"),
            "{text}"
        );
        assert!(!text.contains('\n'));
        assert!(err.is::<UsageError>());
    }

    #[test]
    fn tile_policy_and_cap_resolve_together() {
        let s = runtime_settings(None, 64, Some(TileWidth::T64), "load-aware").unwrap();
        assert_eq!(
            s.policy,
            TilePolicy::LoadAware {
                cap: TileWidth::T64
            }
        );
        let s = runtime_settings(None, 64, None, "fixed:32").unwrap();
        assert_eq!(s.policy, TilePolicy::Fixed(TileWidth::T32));
        assert!(runtime_settings(None, 64, None, "widest").is_err());
        assert!(runtime_settings(None, 0, None, "alignment").is_err());
    }
}
