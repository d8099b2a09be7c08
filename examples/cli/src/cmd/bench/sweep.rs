//! The frontier sweep: prefill and decode speed as the context grows.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use moetile::RuntimeConfig;
use moetile::generate::{Generator, StopConditions};
use moetile::model::{Backend, Model};
use moetile::sample::SamplerConfig;
use moetile::session::Session;
use moetile::tokenizer::Tokenizer;
use serde::Serialize;

use super::{Meta, Setting, SweepPlan, chart};
use crate::backend::BackendInfo;

/// The CSV columns, column for column the reference engine's.
const CSV_HEADER: [&str; 8] = [
    "ctx_tokens",
    "prefill_tokens",
    "prefill_tps",
    "gen_tokens",
    "gen_tps",
    "gen_first_ms",
    "gen_steady_tps",
    "kvcache_bytes",
];

/// Text the benchmark prompt is made of, repeated to any length: real text, so a real model
/// routes its tokens as it would in use.
const TEXT: &str = "Mixture-of-Experts models replace the dense feed-forward block of a \
transformer with many smaller experts and a router that sends every token to a few of them. \
Prefill runs thousands of tokens at once, so each expert sees a batch of tokens and its weights \
are read once per batch; decoding runs one token at a time and reads the weights of only the \
experts that token chose. Both speeds fall as the context grows, because attention reads the \
whole key and value cache for every new token.\n";

/// Benchmark prompt tokens: [`TEXT`] tokenized once, to be cycled to any length.
pub fn prompt_tokens(tokenizer: &Tokenizer) -> Vec<u32> {
    tokenizer.encode(TEXT, false, false)
}

/// The first `n` tokens of `base` repeated.
pub fn cycle(base: &[u32], n: usize) -> Vec<u32> {
    base.iter().copied().cycle().take(n).collect()
}

/// One frontier's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    ctx_tokens: usize,
    prefill_tokens: usize,
    prefill_tps: f64,
    gen_tokens: usize,
    gen_tps: f64,
    gen_first_ms: f64,
    gen_steady_tps: f64,
    kvcache_bytes: u64,
}

/// Walks the frontiers of `plan` with `setting`.
pub fn run<B: Backend>(
    model: &Model<B>,
    backend: &mut B,
    base: &[u32],
    setting: &Setting,
    plan: &SweepPlan,
    info: &BackendInfo,
) -> Result<Vec<Row>> {
    let c = &model.config;
    let config = RuntimeConfig {
        ctx: Some(plan.n_ctx()),
        ..setting.runtime.config.clone()
    };
    let mut session = Session::new(model, backend, &config)?;
    let prompt = cycle(base, plan.ctx_max);
    let mut rows = Vec::new();
    for ctx in plan.frontiers() {
        // Greedy, no end tokens: exactly gen_tokens decode steps after the prefill's token.
        let stop = StopConditions {
            max_tokens: plan.gen_tokens + 1,
            ..StopConditions::default()
        };
        let mut generator = Generator::new(
            &mut session,
            None,
            &prompt[..ctx],
            SamplerConfig::greedy(),
            stop,
        )?;
        while generator.next_token(model, backend)?.is_some() {}
        let t = generator.timings().clone();
        let row = Row {
            ctx_tokens: ctx,
            prefill_tokens: t.prefill_tokens(),
            prefill_tps: t.prefill_tps(),
            gen_tokens: t.decode_steps,
            gen_tps: t.decode_tps(),
            gen_first_ms: t.decode_first.map_or(0.0, |d| d.as_secs_f64() * 1e3),
            gen_steady_tps: t.steady_decode_tps(),
            kvcache_bytes: c.kv_cache_bytes(ctx, info.kv_element_bytes),
        };
        eprintln!(
            "  ctx {:>6}: prefill {:>6} tokens {:>9.1} tok/s | decode {:>4} tokens {:>8.1} tok/s",
            row.ctx_tokens, row.prefill_tokens, row.prefill_tps, row.gen_tokens, row.gen_tps
        );
        rows.push(row);
        // Restore the frontier: the next prefill continues the prompt, not the generation.
        session.truncate(ctx);
    }
    Ok(rows)
}

/// The sweep's markdown on stdout and, with `--csv`, its files.
pub fn report(meta: &Meta, plan: &SweepPlan, results: &[(&Setting, Vec<Row>)]) -> Result<()> {
    println!("{}", meta.header());
    println!(
        "frontier sweep: ctx {}..={} step {}, {} decode steps each\n",
        plan.ctx_start, plan.ctx_max, plan.step_incr, plan.gen_tokens
    );
    print!("| ctx |");
    for what in ["prefill tok/s", "decode tok/s"] {
        for (s, _) in results {
            print!(" {what} {} |", s.label);
        }
    }
    println!();
    println!("|---:|{}", "---:|".repeat(2 * results.len()));
    for (i, ctx) in plan.frontiers().iter().enumerate() {
        print!("| {ctx} |");
        for (_, rows) in results {
            print!(" {:.1} |", rows[i].prefill_tps);
        }
        for (_, rows) in results {
            print!(" {:.1} |", rows[i].gen_tps);
        }
        println!();
    }
    if let Some(csv) = &plan.csv {
        for (setting, rows) in results {
            let path = if results.len() == 1 {
                csv.clone()
            } else {
                suffixed(csv, &setting.file_suffix())
            };
            write_files(&path, meta, plan, setting, rows)?;
            eprintln!("wrote {} (and .svg, .json)", path.display());
        }
    }
    Ok(())
}

/// `dir/name-suffix.ext`.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{suffix}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{suffix}"),
    };
    path.with_file_name(name)
}

#[derive(Serialize)]
struct Sidecar<'a> {
    #[serde(flatten)]
    meta: &'a Meta,
    tile_policy: &'a str,
    sweep: &'a SweepPlan,
    rows: &'a [Row],
}

/// The CSV, its SVG chart and its JSON settings file.
fn write_files(
    csv: &Path,
    meta: &Meta,
    plan: &SweepPlan,
    setting: &Setting,
    rows: &[Row],
) -> Result<()> {
    if let Some(dir) = csv.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let write = |path: &Path, f: &dyn Fn(&mut dyn Write) -> Result<()>| -> Result<()> {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        f(&mut out)?;
        out.flush()
            .with_context(|| format!("writing {}", path.display()))
    };
    write(csv, &|out| {
        let mut out = csv::Writer::from_writer(out);
        out.write_record(CSV_HEADER)?;
        for r in rows {
            out.write_record([
                r.ctx_tokens.to_string(),
                r.prefill_tokens.to_string(),
                format!("{:.3}", r.prefill_tps),
                r.gen_tokens.to_string(),
                format!("{:.3}", r.gen_tps),
                format!("{:.3}", r.gen_first_ms),
                format!("{:.3}", r.gen_steady_tps),
                r.kvcache_bytes.to_string(),
            ])?;
        }
        out.flush()?;
        Ok(())
    })?;
    write(&csv.with_extension("json"), &|out| {
        let sidecar = Sidecar {
            meta,
            tile_policy: &setting.label,
            sweep: plan,
            rows,
        };
        serde_json::to_writer_pretty(&mut *out, &sidecar)?;
        writeln!(out)?;
        Ok(())
    })?;
    let points: Vec<(usize, f64, f64)> = rows
        .iter()
        .map(|r| (r.ctx_tokens, r.prefill_tps, r.gen_tps))
        .collect();
    let title = format!(
        "{}: prefill and decode speed against context",
        meta.model.name.as_deref().unwrap_or(&meta.model.path)
    );
    let subtitle = format!(
        "{} (driver: {}) | tiles {} | chunk {} | moetile {}",
        meta.backend.description,
        meta.backend.driver,
        setting.label,
        meta.chunk,
        meta.moetile_commit
    );
    chart::draw(&csv.with_extension("svg"), &title, &subtitle, &points)
}
