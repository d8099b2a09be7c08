//! Runs the kernel benchmark and prints CSV.
//!
//! ```text
//! cargo run --release -p moetile-wgpu --example kernel_bench -- \
//!     [shape=qwen|deepseek|router|all] [tokens=512,2048,4096] [mv_tokens=1] \
//!     [weights=f16,q8_0,q4k,q2k,iq2xxs] [tiles=32,64,128] [paths=reg,coop16,coop8] \
//!     [iters=10] [distinct=4] [seed=1] [act=f32|f16] [adapter=INDEX|NAME]
//! ```
//! Defaults: `moetile_wgpu::bench::BenchConfig::default_for`. Set `WGPU_BACKEND=vulkan` on
//! machines that also list an OpenGL adapter for the same card.

use anyhow::{Context, bail};
use moetile::tile::TileWidth;
use moetile_wgpu::bench::{self, BenchConfig, BenchRow};
use moetile_wgpu::{ActType, AdapterChoice, ContextOptions, Path, WeightType, WgpuContext};

fn list<T>(value: &str, parse: impl Fn(&str) -> Option<T>) -> anyhow::Result<Vec<T>> {
    value
        .split(',')
        .map(|v| parse(v).with_context(|| format!("cannot parse {v:?}")))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<(String, String)> = std::env::args()
        .skip(1)
        .map(|a| match a.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => bail!("arguments are key=value, got {a:?}"),
        })
        .collect::<anyhow::Result<_>>()?;
    let adapter = args
        .iter()
        .find(|(k, _)| k == "adapter")
        .map(|(_, v)| AdapterChoice::parse(v))
        .unwrap_or_default();
    let ctx = WgpuContext::new(&ContextOptions {
        adapter,
        ..ContextOptions::from_env()?
    })?;
    let mut cfg = BenchConfig::default_for(&ctx);
    for (key, value) in &args {
        match key.as_str() {
            "adapter" => {}
            "shape" => {
                cfg.shapes = match value.as_str() {
                    "qwen" => vec![bench::QWEN3_30B_A3B],
                    "deepseek" => vec![bench::DEEPSEEK_V4_FLASH],
                    "router" => vec![bench::QWEN3_30B_A3B_ROUTER],
                    "all" => vec![bench::QWEN3_30B_A3B, bench::DEEPSEEK_V4_FLASH],
                    other => bail!("shape {other:?}: expected qwen, deepseek, router or all"),
                }
            }
            "tokens" => cfg.tokens = list(value, |v| v.parse().ok())?,
            "mv_tokens" => cfg.mat_vec_tokens = list(value, |v| v.parse().ok())?,
            "weights" => cfg.weights = list(value, WeightType::parse)?,
            "tiles" => {
                cfg.tiles = list(value, |v| v.parse().ok().and_then(TileWidth::from_tokens))?
            }
            "paths" => cfg.paths = list(value, |v| Path::ALL.into_iter().find(|p| p.name() == v))?,
            "iters" => cfg.iters = value.parse()?,
            "distinct" => cfg.distinct_experts = value.parse()?,
            "seed" => cfg.seed = value.parse()?,
            "act" => {
                cfg.act = ActType::ALL
                    .into_iter()
                    .find(|a| a.name() == value)
                    .with_context(|| format!("act {value:?}: expected f32 or f16"))?
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let p = ctx.profile();
    println!("# adapter: {}", p.describe());
    println!("# shader checks: {}", ctx.shader_checks().name());
    println!(
        "# paths run: {:?}; timestamps: {}",
        cfg.paths
            .iter()
            .filter(|x| p.supports(**x).is_ok())
            .collect::<Vec<_>>(),
        p.timestamps
    );
    let mut out = csv::Writer::from_writer(std::io::stdout());
    out.write_record(BenchRow::CSV_HEADER)?;
    // Each row as it is measured: a long run shows its progress.
    let mut written = Ok(());
    bench::run_kernel_bench(&ctx, &cfg, |row| {
        if written.is_ok() {
            written = out
                .write_record(row.csv_record())
                .and_then(|()| Ok(out.flush()?));
        }
    })?;
    written?;
    Ok(())
}
