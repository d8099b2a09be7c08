//! `moetile synth`: writes a random-weight GGUF with the dimensions of a real MoE model
//! (architecture `qwen3moe` or `deepseek4`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use moetile::synth::{Mix, Preset, Synth};

use crate::args::usage;
use crate::progress;

/// Arguments of `moetile synth`.
#[derive(Debug, Args)]
#[command(after_help = preset_help())]
pub struct SynthArgs {
    /// Dimensions: one of the presets listed below.
    #[arg(long, value_name = "NAME")]
    preset: String,
    /// Quant mix: q4_k_m, q2_k, iq2_xxs-q2_k, q4_k, q8_0, f16 or mxfp4 (deepseek4 presets:
    /// iq2_xxs-q2_k, q4_k, q8_0 or f16; gpt-oss presets: mxfp4, q8_0 or f16).
    #[arg(long, value_name = "MIX", default_value = "q4_k_m")]
    quant: String,
    /// Output file.
    #[arg(short, long, value_name = "FILE.gguf")]
    output: PathBuf,
    /// Number of layers instead of the preset's (smaller files, same layer shapes; deepseek4
    /// presets keep their first N layers' compress ratios and hash routing).
    #[arg(long, value_name = "N")]
    layers: Option<usize>,
    /// Seed of every weight; the same seed writes the same bytes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
}

fn preset_help() -> String {
    let presets: Vec<String> = Preset::ALL
        .iter()
        .map(|p| format!("  {:<15} {:<10} {}", p.name, p.family.arch(), p.about))
        .collect();
    format!("Presets:\n{}", presets.join("\n"))
}

impl SynthArgs {
    fn resolve(&self) -> Result<Synth> {
        let mut preset = Preset::by_name(&self.preset).map_err(usage)?;
        if let Some(n) = self.layers {
            preset = preset.with_layers(n).map_err(usage)?;
        }
        let mix = Mix::by_name(&self.quant).map_err(usage)?;
        let synth = Synth::new(preset, mix, self.seed);
        synth.check().map_err(usage)?;
        Ok(synth)
    }
}

/// Runs `moetile synth`.
pub fn run(args: SynthArgs) -> Result<()> {
    let synth = args.resolve()?;
    let bytes = write(&synth, &args.output, args.force)?;
    let p = &synth.preset;
    println!(
        "wrote {} ({}): {} in {}, layers: {}, seed {}",
        args.output.display(),
        indicatif::HumanBytes(bytes),
        p.name,
        synth.mix.name(),
        p.n_layers,
        synth.seed
    );
    Ok(())
}

/// Writes `synth` to `path` with a progress bar; returns the file size.
pub fn write(synth: &Synth, path: &Path, force: bool) -> Result<u64> {
    let bar = progress::bytes_bar("synth", synth.tensor_bytes());
    let bytes = synth.write_file(path, force, &mut |done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    Ok(bytes)
}
