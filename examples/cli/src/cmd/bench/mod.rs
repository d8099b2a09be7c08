//! `moetile bench`: prefill and decode speed, in two shapes.
//!
//! - The frontier sweep (default): one long prompt walked to context frontiers (`--ctx-start`,
//!   then every `--step-incr` up to `--ctx-max`); at each, the incremental prefill of the new
//!   tokens is timed, then `--gen-tokens` greedy decode steps, then the cache is cut back to
//!   the frontier. `--csv FILE` writes the rows (header
//!   `ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,gen_first_ms,gen_steady_tps,kvcache_bytes`),
//!   an SVG chart of both speeds against context next to it, and a JSON file of the settings.
//! - The llama-bench table (`-p 512,2048 -n 128 -r 3`): `ppN` prefills N tokens into an empty
//!   cache, `tgN` decodes N tokens one by one; mean ± standard deviation of tokens per second
//!   over the repetitions, as markdown, CSV or JSON.
//!
//! Both take their tokens from one prompt cut or cycled to each length: built-in text, or the
//! token ids of `--prompt-ids`/`--prompt-ids-file` (as given, no BOS; what a model file without
//! a tokenizer needs). Generated tokens are never turned into text.
//!
//! Lists in `--tile-max` and `--tile-policy` run the same measurements once per combination
//! and set the results side by side (A/B). Every output names the backend, driver, moetile
//! commit, model and settings. Without `-m`, a `tiny-qwen3moe` model is synthesized into a
//! temporary folder and a short sweep runs: a benchmark that needs no download.
//!
//! `moetile bench kernels` times the routed-MoE GPU kernels alone (see `kernels.rs`);
//! `moetile bench serve` a running server's decode at N concurrent streams (see `serve.rs`).

mod chart;
mod kernels;
mod serve;
mod sweep;
mod table;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use moetile::config::TilePolicyKind;
use moetile::model::Backend;
use moetile::tile::TileWidth;
use serde::Serialize;

use super::COMMIT;
use crate::args::{
    BackendArgs, PromptIdsArgs, RuntimeSettings, list_item, positive, runtime_settings,
    tile_policy, tile_width, usage,
};
use crate::backend::{BackendInfo, BackendTask, with_backend};
use crate::model::{ModelFile, ModelInfo, ModelSource};

/// Arguments of `moetile bench`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    /// GGUF model file [default: a synthetic tiny-qwen3moe in a temporary folder].
    #[arg(short, long, value_name = "FILE.gguf")]
    model: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    prompt_ids: PromptIdsArgs,
    /// Sweep: the first context frontier [default: 2048; 512 without -m].
    #[arg(long, value_name = "TOKENS")]
    ctx_start: Option<usize>,
    /// Sweep: the last context frontier [default: 4 frontiers; 2048 without -m].
    #[arg(long, value_name = "TOKENS")]
    ctx_max: Option<usize>,
    /// Sweep: tokens between frontiers (the incremental prefill) [default: 2048; 512 without
    /// -m].
    #[arg(long, value_name = "TOKENS")]
    step_incr: Option<usize>,
    /// Sweep: greedy decode steps at each frontier [default: 128; 32 without -m].
    #[arg(long, value_name = "N")]
    gen_tokens: Option<usize>,
    /// Sweep: write the rows to this CSV file, with an SVG chart and a JSON settings file next
    /// to it (one set per A/B setting, suffixed, when there are several).
    #[arg(long, value_name = "FILE.csv")]
    csv: Option<PathBuf>,
    /// Table: prompt lengths to prefill (ppN), comma-separated.
    #[arg(short = 'p', long = "n-prompt", value_name = "LIST", conflicts_with_all = SWEEP_ONLY,
          value_delimiter = ',', value_parser = list_item("-p", "positive integers", positive))]
    n_prompt: Vec<usize>,
    /// Table: tokens to decode (tgN), comma-separated.
    #[arg(short = 'n', long = "n-gen", value_name = "LIST", conflicts_with_all = SWEEP_ONLY,
          value_delimiter = ',', value_parser = list_item("-n", "positive integers", positive))]
    n_gen: Vec<usize>,
    /// Table: repetitions of each test.
    #[arg(short = 'r', long, value_name = "N", default_value_t = 3)]
    repetitions: usize,
    /// Table: output format.
    #[arg(long, value_enum, default_value_t = Format::Md)]
    output: Format,
    /// Most tokens per prefill chunk.
    #[arg(long, value_name = "TOKENS", default_value_t = 512)]
    chunk: usize,
    /// Tile caps to compare, comma-separated (32, 64, 128) [default: $MOETILE_TILE_MAX, else
    /// 128].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = tile_width)]
    tile_max: Vec<TileWidth>,
    /// Tile policies to compare, comma-separated (alignment, load-aware, fixed:N).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "alignment",
        value_parser = tile_policy
    )]
    tile_policy: Vec<TilePolicyKind>,
}

/// `moetile bench`'s own subcommand.
#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time the routed-MoE GPU kernels (map, mm_id, mv_id) at real expert shapes, outputs
    /// checked before timing; GB/s also as a share of the device's copy bandwidth.
    Kernels(Box<kernels::KernelArgs>),
    /// Measure a running `moetile serve`: decode tok/s at N concurrent streaming clients,
    /// time to first token, per-stream rate.
    Serve(Box<serve::ServeBenchArgs>),
}

const SWEEP_ONLY: [&str; 5] = ["ctx_start", "ctx_max", "step_incr", "gen_tokens", "csv"];

/// Table output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A markdown table.
    Md,
    /// CSV, one row per setting and test.
    Csv,
    /// One JSON document.
    Json,
}

/// The sweep's frontiers.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPlan {
    ctx_start: usize,
    ctx_max: usize,
    step_incr: usize,
    gen_tokens: usize,
    #[serde(skip)]
    csv: Option<PathBuf>,
}

impl SweepPlan {
    fn frontiers(&self) -> Vec<usize> {
        (0..)
            .map(|i| self.ctx_start + i * self.step_incr)
            .take_while(|&c| c <= self.ctx_max)
            .collect()
    }

    /// The context its session holds: the longest prompt and its generated tokens.
    fn n_ctx(&self) -> usize {
        self.ctx_max + self.gen_tokens
    }
}

/// The table's tests.
#[derive(Debug, Clone, Serialize)]
pub struct TablePlan {
    n_prompt: Vec<usize>,
    n_gen: Vec<usize>,
    repetitions: usize,
    #[serde(skip)]
    format: Format,
}

impl TablePlan {
    /// The context its session holds: the longest test and one token more.
    fn n_ctx(&self) -> usize {
        let longest = self.n_prompt.iter().chain(&self.n_gen).max();
        longest.copied().unwrap_or(1) + 1
    }
}

#[derive(Debug, Clone)]
enum Mode {
    Sweep(SweepPlan),
    Table(TablePlan),
}

impl Mode {
    /// The largest context a session of the bench holds.
    fn n_ctx(&self) -> usize {
        match self {
            Mode::Sweep(plan) => plan.n_ctx(),
            Mode::Table(plan) => plan.n_ctx(),
        }
    }
}

/// One A/B setting.
#[derive(Debug, Clone)]
pub struct Setting {
    /// Shown in tables, e.g. `alignment(cap 64)`.
    label: String,
    runtime: RuntimeSettings,
}

impl Setting {
    /// The label as a file-name suffix: `alignment-cap-64`.
    fn file_suffix(&self) -> String {
        let mut out = String::new();
        for c in self.label.chars() {
            match c {
                'a'..='z' | '0'..='9' => out.push(c),
                _ if !out.ends_with('-') => out.push('-'),
                _ => {}
            }
        }
        out.trim_end_matches('-').to_string()
    }
}

impl BenchArgs {
    fn mode(&self, synthetic: bool) -> Result<Mode> {
        if !self.n_prompt.is_empty() || !self.n_gen.is_empty() {
            anyhow::ensure!(
                self.repetitions > 0,
                usage("invalid -r = 0: at least 1 repetition")
            );
            return Ok(Mode::Table(TablePlan {
                n_prompt: self.n_prompt.clone(),
                n_gen: self.n_gen.clone(),
                repetitions: self.repetitions,
                format: self.output,
            }));
        }
        let (start, step, gen_tokens) = if synthetic {
            (512, 512, 32)
        } else {
            (2048, 2048, 128)
        };
        let ctx_start = self.ctx_start.unwrap_or(start);
        let step_incr = self.step_incr.unwrap_or(step);
        let ctx_max = self.ctx_max.unwrap_or(if synthetic {
            2048
        } else {
            ctx_start + 3 * step_incr
        });
        if ctx_start == 0 || step_incr == 0 || ctx_max < ctx_start {
            return Err(usage(format!(
                "invalid sweep --ctx-start {ctx_start} --step-incr {step_incr} --ctx-max {ctx_max}: \
                 need 0 < ctx-start <= ctx-max and step-incr > 0"
            )));
        }
        Ok(Mode::Sweep(SweepPlan {
            ctx_start,
            ctx_max,
            step_incr,
            gen_tokens: self.gen_tokens.unwrap_or(gen_tokens),
            csv: self.csv.clone(),
        }))
    }

    /// Every combination of the tile lists, duplicates (e.g. a fixed width under several
    /// caps) removed.
    fn settings(&self) -> Result<Vec<Setting>> {
        let caps: Vec<Option<TileWidth>> = if self.tile_max.is_empty() {
            vec![None]
        } else {
            self.tile_max.iter().copied().map(Some).collect()
        };
        let mut out: Vec<Setting> = Vec::new();
        for &policy in &self.tile_policy {
            for &cap in &caps {
                let runtime = runtime_settings(None, self.chunk, cap, policy)?;
                if !out.iter().any(|s| s.runtime.policy == runtime.policy) {
                    out.push(Setting {
                        label: runtime.policy.to_string(),
                        runtime,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// What every bench output records.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    moetile_commit: &'static str,
    backend: BackendInfo,
    model: ModelInfo,
    chunk: usize,
    /// What the prompt tokens are: the built-in text, or the ids given and where from.
    prompt: String,
}

impl Meta {
    /// Markdown lines stating it.
    fn header(&self) -> String {
        format!(
            "moetile {} | backend: {} (driver: {}) | model: {} ({}) | chunk {} | prompt: {}",
            self.moetile_commit,
            self.backend.description,
            self.backend.driver,
            self.model.path,
            self.model.shape,
            self.chunk,
            self.prompt
        )
    }
}

/// Runs `moetile bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    match args.command {
        Some(BenchCommand::Kernels(kernel_args)) => return kernels::run(*kernel_args),
        Some(BenchCommand::Serve(serve_args)) => return serve::run(*serve_args),
        None => {}
    }
    let settings = args.settings()?;
    let mode = args.mode(args.model.is_none())?;
    let prompt_ids = args.prompt_ids.resolve()?;
    let source = ModelSource::given_or_synthetic(args.model.as_deref(), "benchmarking")?;
    let file = ModelFile::open(source.path())?;
    // Checked before any weight moves.
    let (prompt, about) = match &prompt_ids {
        Some(ids) => {
            file.check_ids(ids)?;
            let about = format!("{} token ids of {}", ids.ids.len(), ids.source);
            (ids.ids.clone(), about)
        }
        None => {
            let tokenizer = file.require_tokenizer(
                "the benchmark's built-in prompt is text; give its tokens as ids with --prompt-ids or --prompt-ids-file",
            )?;
            (sweep::prompt_tokens(tokenizer), "built-in text".to_string())
        }
    };
    let backend = args.backend.choice()?;
    with_backend(
        &backend,
        &file,
        Task {
            file: &file,
            prompt: &prompt,
            about,
            settings: &settings,
            mode: &mode,
            chunk: args.chunk,
        },
    )
}

struct Task<'a> {
    file: &'a ModelFile,
    /// Tokens every prompt is cut or cycled from.
    prompt: &'a [u32],
    /// What they are, for the outputs.
    about: String,
    settings: &'a [Setting],
    mode: &'a Mode,
    chunk: usize,
}

impl BackendTask for Task<'_> {
    type Output = ();

    fn run<B: Backend>(self, backend: &mut B, info: &BackendInfo) -> Result<()> {
        let (model, _) = self.file.load(backend, self.mode.n_ctx())?;
        let meta = Meta {
            moetile_commit: COMMIT,
            backend: info.clone(),
            model: self.file.info(),
            chunk: self.chunk,
            prompt: self.about,
        };
        let prompt = self.prompt;
        // The cap tuned for the model on this backend, where no --tile-max or
        // MOETILE_TILE_MAX sets one (`settings` then has one setting per policy).
        let settings: Vec<Setting> = self
            .settings
            .iter()
            .map(|s| {
                let runtime = RuntimeSettings::new(info.tuned(&s.runtime.config));
                Setting {
                    label: runtime.tiles(),
                    runtime,
                }
            })
            .collect();
        match self.mode {
            Mode::Sweep(plan) => {
                let mut results = Vec::new();
                for setting in &settings {
                    eprintln!("sweep with tiles {}", setting.label);
                    let rows = sweep::run(&model, backend, prompt, setting, plan, info)?;
                    results.push((setting, rows));
                }
                sweep::report(&meta, plan, &results)
            }
            Mode::Table(plan) => {
                let mut results = Vec::new();
                for setting in &settings {
                    eprintln!("tests with tiles {}", setting.label);
                    let tests = table::run(&model, backend, prompt, setting, plan)?;
                    results.push((setting, tests));
                }
                table::report(&meta, plan, &results)
            }
        }
    }
}

/// Writes the CSV file `path`: `header` as `# ` lines (what ran, on what, with which
/// settings), then `columns` and one line per record.
fn write_csv<R>(
    path: &Path,
    header: &[String],
    columns: &[&str],
    records: impl IntoIterator<Item = R>,
) -> Result<()>
where
    R: IntoIterator,
    R::Item: AsRef<[u8]>,
{
    let write = || -> Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for line in header {
            writeln!(out, "# {line}")?;
        }
        let mut out = csv::Writer::from_writer(out);
        out.write_record(columns)?;
        for record in records {
            out.write_record(record)?;
        }
        out.flush()?;
        Ok(())
    };
    write().with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
