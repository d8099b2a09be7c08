//! An application that owns a wgpu device, runs its own compute pass, then a moetile model on
//! the same device and queue (see the library docs). Prints both results and fails when either
//! check does.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use moetile_embed_example::{Settings, run};

/// Runs a compute shader and a moetile model on one wgpu device.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The model (GGUF); without it a tiny random-weight model is synthesized.
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// The prompt.
    #[arg(short, long, default_value = "Once upon a time")]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 16)]
    n_predict: usize,
    /// Temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Random seed of the sampler.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let defaults = Settings::default();
    let settings = Settings {
        model: args.model,
        prompt: args.prompt,
        n_predict: args.n_predict,
        sampler: moetile::sample::SamplerConfig {
            temperature: args.temp,
            seed: args.seed,
            ..defaults.sampler
        },
        ..defaults
    };
    let report = run(&settings)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("device: {}", report.adapter);
        println!(
            "application shader: {} values over {} frames, {}",
            report.shader_values,
            report.frames,
            if report.shader_ok {
                "equal to the CPU's"
            } else {
                "WRONG"
            }
        );
        println!("model: {}{}", settings.prompt, report.text);
        println!(
            "tokens: {:?} (stop: {})",
            report.token_ids, report.stop_reason
        );
    }
    report.check(&settings)
}
