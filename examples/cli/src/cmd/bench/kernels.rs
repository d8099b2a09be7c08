//! `moetile bench kernels`: the routed-MoE kernels (map, mm_id per weight type, tile width and
//! path, mv_id) timed on the GPU at the expert shapes of real models, each kernel's outputs
//! checked against an f64 reference before it is timed (`moetile_wgpu::bench`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use moetile::synth::Preset;
use moetile::tile::TileWidth;
use moetile_wgpu::bench::{self, BenchConfig, BenchRow, Shape};
use moetile_wgpu::{Path, WeightType, WgpuContext};

use crate::args::{GpuArgs, list_item, positive};
use crate::cmd::COMMIT;

/// Arguments of `moetile bench kernels`.
#[derive(Debug, Args)]
pub struct KernelArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    /// MoE layer shapes of synth presets, comma-separated: tiny-qwen3moe, qwen3-30b-a3b,
    /// ds4-flash-moe, tiny-ds4, ds4-flash [default: qwen3-30b-a3b,ds4-flash-moe].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = list_item(
        "--shape",
        "tiny-qwen3moe, qwen3-30b-a3b, ds4-flash-moe, tiny-ds4 or ds4-flash",
        |v| Preset::by_name(v).ok().map(|p| shape(&p)),
    ))]
    shape: Vec<Shape>,
    /// Batch lengths T of the tiled kernels [default: 512,2048,4096].
    #[arg(long, value_name = "LIST", value_delimiter = ',',
          value_parser = list_item("--tokens", "positive integers", positive))]
    tokens: Vec<usize>,
    /// Batch lengths T of the mat-vec kernel [default: 1].
    #[arg(long, value_name = "LIST", value_delimiter = ',',
          value_parser = list_item("--mv-tokens", "positive integers", positive))]
    mv_tokens: Vec<usize>,
    /// Weight types: f16, q8_0, q4_k, q2_k, iq2_xxs, mxfp4... [default: those six].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = list_item(
        "--weights",
        "weight types such as f16, q8_0, q4_k, q2_k, iq2_xxs, mxfp4",
        WeightType::parse,
    ))]
    weights: Vec<WeightType>,
    /// Tile widths [default: 32,64,128].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = list_item(
        "--tiles",
        "32, 64 or 128",
        |v| v.parse().ok().and_then(TileWidth::from_tokens),
    ))]
    tiles: Vec<TileWidth>,
    /// Matmul paths: reg, coop16, coop8 [default: every path the device runs].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = list_item(
        "--paths",
        "reg, coop16 or coop8",
        |v| Path::ALL.into_iter().find(|p| p.name() == v),
    ))]
    paths: Vec<Path>,
    /// Timed runs per kernel, after two warm-up runs [default: 10].
    #[arg(long, value_name = "N")]
    iters: Option<usize>,
    /// Experts with distinct random weights (the others repeat them) [default: 4].
    #[arg(long, value_name = "N")]
    distinct: Option<usize>,
    /// Seed of weights, activations and routing [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the rows to this CSV file (with `#` lines naming card, driver and commit).
    #[arg(long, value_name = "FILE.csv")]
    csv: Option<PathBuf>,
}

/// `given`, or `default` when the list was not given.
fn or<T>(given: Vec<T>, default: Vec<T>) -> Vec<T> {
    if given.is_empty() { default } else { given }
}

/// The MoE layer of a synth preset, so kernel rows and model benchmarks name shapes alike.
fn shape(preset: &Preset) -> Shape {
    Shape {
        name: preset.name,
        hidden: preset.d_model,
        expert_width: preset.expert_ff,
        n_experts: preset.n_experts,
        n_used: preset.n_experts_used,
    }
}

/// The shapes timed without `--shape`: the MoE layers of the real models, each once
/// (ds4-flash's is ds4-flash-moe's).
const DEFAULT_SHAPES: [&str; 2] = ["qwen3-30b-a3b", "ds4-flash-moe"];

/// Runs `moetile bench kernels`.
pub fn run(args: KernelArgs) -> Result<()> {
    let ctx = WgpuContext::new(&args.gpu.resolve()?)?;
    let mut cfg = BenchConfig::default_for(&ctx);
    let defaults = DEFAULT_SHAPES
        .iter()
        .map(|name| Preset::by_name(name).map(|p| shape(&p)))
        .collect::<moetile::Result<Vec<_>>>()?;
    cfg.shapes = or(args.shape, defaults);
    cfg.tokens = or(args.tokens, cfg.tokens);
    cfg.mat_vec_tokens = or(args.mv_tokens, cfg.mat_vec_tokens);
    cfg.weights = or(args.weights, cfg.weights);
    cfg.tiles = or(args.tiles, cfg.tiles);
    cfg.paths = or(args.paths, cfg.paths);
    cfg.iters = args.iters.unwrap_or(cfg.iters).max(1);
    cfg.distinct_experts = args.distinct.unwrap_or(cfg.distinct_experts).max(1);
    cfg.seed = args.seed.unwrap_or(cfg.seed);

    let p = ctx.profile();
    let skipped: Vec<&str> = cfg
        .paths
        .iter()
        .filter(|path| p.supports(**path).is_err())
        .map(|path| path.name())
        .collect();
    let header = [
        format!("card: {} (wgpu)", p.describe()),
        format!("commit: {COMMIT}"),
        format!(
            "settings: shapes {}; T {:?}; mat-vec T {:?}; weights {}; tiles {:?}; paths {}{}; {} runs a row; {} distinct experts; seed {}",
            cfg.shapes
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(","),
            cfg.tokens,
            cfg.mat_vec_tokens,
            cfg.weights
                .iter()
                .map(|w| w.short_name())
                .collect::<Vec<_>>()
                .join(","),
            cfg.tiles.iter().map(|t| t.tokens()).collect::<Vec<_>>(),
            cfg.paths
                .iter()
                .map(|x| x.name())
                .collect::<Vec<_>>()
                .join(","),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" (the device does not run {})", skipped.join(", "))
            },
            cfg.iters,
            cfg.distinct_experts,
            cfg.seed
        ),
        format!(
            "times: {}, median of the runs (copy: the wall clock of 8 copies a submission, bytes \
             read and written); of copy = GB/s / copy's GB/s; check = worst sampled error / \
             tolerance",
            if p.timestamps {
                "GPU timestamps"
            } else {
                "wall clock after a device wait (no timestamp queries)"
            }
        ),
    ];
    for line in &header {
        println!("{line}");
    }
    println!("\n| kernel | shape | T | ms | ms min | GFLOP/s | GB/s | of copy | check |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let rows = bench::run_kernel_bench(&ctx, &cfg, |r| {
        println!(
            "| {} | {} | {} | {:.4} | {:.4} | {:.1} | {:.1} | {:.0}% | {:.3} |",
            r.kernel,
            r.shape,
            r.tokens,
            r.ms,
            r.ms_min,
            r.gflops,
            r.gbs,
            100.0 * r.of_copy,
            r.check
        );
    })?;
    if let Some(path) = &args.csv {
        super::write_csv(
            path,
            &header,
            &BenchRow::CSV_HEADER,
            rows.iter().map(BenchRow::csv_record),
        )?;
    }
    Ok(())
}
