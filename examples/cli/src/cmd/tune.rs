//! `moetile tune`: times the token-tile widths at a model's routed-expert matmuls on the
//! adapter, each kernel checked first, and keeps the outcome in the user's cache folder, where
//! later runs find the tile cap and the paths to avoid (`moetile_wgpu::tune`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use moetile::tile::{TILE_MAX_ENV, TileWidth};
use moetile_wgpu::tune::{self, AdapterId, TuneConfig};
use moetile_wgpu::{BackendOptions, ContextOptions, Path, WgpuContext};

use crate::args::{GpuArgs, list_item};
use crate::model::ModelFile;

/// Arguments of `moetile tune`.
#[derive(Debug, Args)]
pub struct TuneArgs {
    /// GGUF model file.
    #[arg(short, long, value_name = "FILE.gguf")]
    model: PathBuf,
    #[command(flatten)]
    gpu: GpuArgs,
    /// Batch lengths T timed, multiples of 128, comma-separated [default: 512,2048].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = list_item(
        "--tokens",
        "positive multiples of 128",
        |v| v.parse().ok().filter(|&n: &usize| n > 0 && n % 128 == 0),
    ))]
    tokens: Vec<usize>,
    /// Timed runs per kernel and batch length (the median counts) [default: 5].
    #[arg(long, value_name = "N", value_parser = list_item("--iters", "a positive integer", crate::args::positive))]
    iters: Option<usize>,
}

/// Runs `moetile tune`.
pub fn run(args: TuneArgs) -> Result<()> {
    let defaults = TuneConfig::default();
    let cfg = TuneConfig {
        tokens: if args.tokens.is_empty() {
            defaults.tokens.clone()
        } else {
            args.tokens
        },
        iters: args.iters.unwrap_or(defaults.iters),
        ..defaults
    };
    let options = args.gpu.resolve()?;
    let file = ModelFile::open(&args.model)?;
    // Without the record, so the paths it holds as unusable are tested again.
    let ctx = WgpuContext::new(&ContextOptions {
        tuning_dir: None,
        ..options.clone()
    })?;
    let backend = BackendOptions::for_device(&ctx);
    let matmuls = tune::expert_matmuls(&file.file, &file.config, backend.mid)
        .with_context(|| format!("{}", args.model.display()))?;
    anyhow::ensure!(
        !matmuls.is_empty(),
        "{} has no routed experts: there is no tile cap to tune",
        args.model.display()
    );
    let p = ctx.profile();
    println!(
        "moetile tune {} on {}: T {:?}, {} runs a kernel, paths {}",
        args.model.display(),
        p.describe(),
        cfg.tokens,
        cfg.iters,
        p.paths()
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    let outcome = tune::tune(&ctx, &matmuls, &cfg)?;

    let widths = TileWidth::ALL.map(|w| format!("t{w} ms"));
    println!(
        "\n| matmul | layers | path | {} | fastest |",
        widths.join(" | ")
    );
    println!("|---|---:|---|{}---|", "---:|".repeat(widths.len()));
    for m in &matmuls {
        for e in outcome.record.entries.iter().filter(|e| e.shape == m.shape) {
            let ms: Vec<String> = TileWidth::ALL
                .iter()
                .map(|w| {
                    e.ms.iter()
                        .find(|(ew, _)| ew == w)
                        .map_or("-".to_string(), |(_, ms)| format!("{ms:.3}"))
                })
                .collect();
            println!(
                "| {} | {} | {} | {} | {} |",
                m.shape,
                m.layers,
                e.path.name(),
                ms.join(" | "),
                e.cap
            );
        }
    }
    for u in &outcome.record.unusable {
        println!(
            "\nunusable: the {} path, {} is wrong here: {}",
            u.path.name(),
            u.kernel,
            u.reason
        );
    }

    // The path later runs take: the fastest one that passed.
    let mut profile = ctx.profile().clone();
    for u in &outcome.record.unusable {
        profile.avoid(u);
    }
    let path = profile.best_path();
    let adapter = AdapterId::of(ctx.profile());
    match outcome.record.tuned_cap(&adapter, path, &matmuls) {
        Some(cap) => println!(
            "\ntile cap for this model on this adapter ({} path): {cap}; later runs use it \
             unless --tile-max or {TILE_MAX_ENV} sets one",
            path.name()
        ),
        None => println!("\nno tile cap: the {} path was not measured", path.name()),
    }
    match &options.tuning_dir {
        Some(dir) => {
            // What of the old record cannot be used is dropped now: say what.
            for warning in tune::TuningRecord::load(dir).warnings {
                eprintln!("warning: {warning}");
            }
            let saved = outcome.save(dir)?;
            println!("kept in {}", saved.display());
        }
        None => eprintln!(
            "warning: neither XDG_CACHE_HOME nor HOME is set: there is no cache folder, so \
             nothing is kept"
        ),
    }
    if let Some(reg) = outcome.record.unusable.iter().find(|u| u.path == Path::Reg) {
        anyhow::bail!(
            "the register-tile kernel {} computes wrong results on {}: {} (no other path \
             replaces it: a driver problem to report)",
            reg.kernel,
            p.describe(),
            reg.reason
        );
    }
    Ok(())
}
