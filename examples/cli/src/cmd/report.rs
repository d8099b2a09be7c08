//! The machine-readable pieces every report shares: settings and timings in plain units.

use moetile::generate::Timings;
use moetile::sample::SamplerConfig;
use serde::Serialize;

use crate::args::RuntimeSettings;

/// Runtime settings as a report states them.
#[derive(Debug, Clone, Serialize)]
pub struct SettingsReport {
    /// Context length of the session.
    pub ctx: usize,
    /// Most tokens per prefill chunk.
    pub chunk: usize,
    /// The resolved tile policy, e.g. `alignment(cap 128)`.
    pub tile_policy: String,
    /// Where the tile cap came from: `config` (`--tile-max`), `MOETILE_TILE_MAX`, `tuned`
    /// (`moetile tune`) or `default`.
    pub tile_cap_source: String,
}

impl SettingsReport {
    /// The settings of a session of `n_ctx` tokens.
    pub fn new(runtime: &RuntimeSettings, n_ctx: usize) -> Self {
        SettingsReport {
            ctx: n_ctx,
            chunk: runtime.config.chunk,
            tile_policy: runtime.policy.to_string(),
            tile_cap_source: runtime.config.tile_cap().source.to_string(),
        }
    }
}

/// Sampler settings as a report states them.
#[derive(Debug, Clone, Serialize)]
pub struct SamplerReport {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    seed: u64,
}

impl From<&SamplerConfig> for SamplerReport {
    fn from(c: &SamplerConfig) -> Self {
        SamplerReport {
            temperature: c.temperature,
            top_k: c.top_k,
            top_p: c.top_p,
            min_p: c.min_p,
            repeat_penalty: c.repeat_penalty,
            seed: c.seed,
        }
    }
}

/// [`Timings`] in milliseconds and tokens per second.
#[derive(Debug, Clone, Serialize)]
pub struct TimingsReport {
    prompt_tokens: usize,
    reused_tokens: usize,
    prefill_tokens: usize,
    prefill_ms: f64,
    prefill_tps: f64,
    first_token_ms: Option<f64>,
    generated_tokens: usize,
    decode_steps: usize,
    decode_ms: f64,
    decode_tps: f64,
    decode_first_ms: Option<f64>,
    steady_decode_tps: f64,
    tiles_used: Vec<usize>,
}

impl From<&Timings> for TimingsReport {
    fn from(t: &Timings) -> Self {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        TimingsReport {
            prompt_tokens: t.prompt_tokens,
            reused_tokens: t.reused_tokens,
            prefill_tokens: t.prefill_tokens(),
            prefill_ms: ms(t.prefill),
            prefill_tps: t.prefill_tps(),
            first_token_ms: t.first_token.map(ms),
            generated_tokens: t.generated_tokens,
            decode_steps: t.decode_steps,
            decode_ms: ms(t.decode),
            decode_tps: t.decode_tps(),
            decode_first_ms: t.decode_first.map(ms),
            steady_decode_tps: t.steady_decode_tps(),
            tiles_used: t.tiles_used.iter().map(|w| w.tokens()).collect(),
        }
    }
}

/// The one-line human summary of a generation.
pub fn summary_line(t: &Timings) -> String {
    let tiles = match t.tiles_used.as_slice() {
        [] => "none".to_string(),
        ws => ws
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(","),
    };
    format!(
        "prompt {} tokens ({} reused), prefill {:.1} tok/s | generated {} tokens, decode {:.1} tok/s | tiles {tiles}",
        t.prompt_tokens,
        t.reused_tokens,
        t.prefill_tps(),
        t.generated_tokens,
        t.decode_tps(),
    )
}
