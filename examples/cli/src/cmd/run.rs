//! `moetile run`: one prompt, text streamed to stdout, a closing line of speeds on stderr (or
//! one JSON document on stdout with `--json`). A model file without a tokenizer runs a prompt
//! of token ids and streams the generated ids instead of text.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use moetile::generate::Generator;
use moetile::model::Backend;
use moetile::session::Session;
use serde::Serialize;

use super::report::{SamplerReport, SettingsReport, TimingsReport, summary_line};
use super::{COMMIT, stream};
use crate::args::{ModelArgs, PromptIdsArgs, RuntimeArgs, RuntimeSettings, Sampling, SamplingArgs};
use crate::backend::{BackendChoice, BackendInfo, BackendTask, with_backend};
use crate::model::{ModelInfo, Prompt, PromptJob};

/// Arguments of `moetile run`.
#[derive(Debug, Args)]
#[command(
    group = clap::ArgGroup::new("input")
        .required(true)
        .args(["prompt", "prompt_file", "prompt_ids", "prompt_ids_file"]),
    allow_negative_numbers = true
)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt (special tokens such as <|im_start|> are recognised).
    #[arg(short, long)]
    prompt: Option<String>,
    /// Read the prompt from this file.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    #[command(flatten)]
    prompt_ids: PromptIdsArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Print one JSON document (text, token ids, timings, tile widths, settings) instead of
    /// streaming text.
    #[arg(long)]
    json: bool,
}

/// Everything `run` needs, validated.
struct Settings {
    model: PathBuf,
    backend: BackendChoice,
    prompt: Prompt,
    sampling: Sampling,
    runtime: RuntimeSettings,
    json: bool,
}

impl RunArgs {
    fn resolve(self) -> Result<Settings> {
        let sampling = self.sampling.resolve()?;
        let runtime = self.runtime.resolve()?;
        let prompt = match (self.prompt, &self.prompt_file, self.prompt_ids.resolve()?) {
            (Some(p), _, _) => Prompt::Text(p),
            (None, Some(file), _) => Prompt::Text(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading the prompt file {}", file.display()))?,
            ),
            (None, None, Some(ids)) => Prompt::Ids(ids),
            // clap's group requires one of them.
            (None, None, None) => anyhow::bail!(
                "give a prompt with -p, --prompt-file, --prompt-ids or --prompt-ids-file"
            ),
        };
        Ok(Settings {
            model: self.model.model,
            backend: self.model.backend.choice()?,
            prompt,
            sampling,
            runtime,
            json: self.json,
        })
    }
}

/// Runs `moetile run`.
pub fn run(args: RunArgs) -> Result<()> {
    let settings = args.resolve()?;
    let job = PromptJob::open(&settings.model, &settings.prompt, &settings.runtime.config)?;
    with_backend(
        &settings.backend,
        &job.file,
        Task {
            job: &job,
            settings: &settings,
        },
    )
}

struct Task<'a> {
    job: &'a PromptJob,
    settings: &'a Settings,
}

/// `--json` output.
#[derive(Serialize)]
struct Report<'a> {
    moetile_commit: &'static str,
    backend: &'a BackendInfo,
    model: ModelInfo,
    settings: SettingsReport,
    sampler: SamplerReport,
    max_tokens: usize,
    ignore_eos: bool,
    stop_reason: String,
    /// Reading and uploading the weights, ms.
    load_ms: f64,
    /// Preparing the backend's kernels (GPU pipelines), ms.
    prepare_ms: f64,
    timings: TimingsReport,
    prompt_token_ids: &'a [u32],
    token_ids: Vec<u32>,
    /// `null` for a model without a tokenizer.
    text: Option<String>,
}

impl BackendTask for Task<'_> {
    type Output = ();

    fn run<B: Backend>(self, backend: &mut B, info: &BackendInfo) -> Result<()> {
        let (s, job) = (self.settings, self.job);
        let (model, load) = job.file.load(backend, job.config.n_ctx(&job.file.config))?;
        let config = info.tuned(&job.config);
        let mut session = Session::new(&model, backend, &config)?;
        let n_ctx = session.n_ctx();
        let tokenizer = job.file.tokenizer.as_ref();
        let stop = s.sampling.stop(tokenizer);
        let mut generator = Generator::new(
            &mut session,
            tokenizer,
            &job.tokens,
            s.sampling.sampler,
            stop,
        )?;
        let mut text = String::new();
        let mut tokens = Vec::new();
        let mut stdout = std::io::stdout().lock();
        let reason = stream(&mut generator, &model, backend, &mut |id, piece| {
            if s.json {
                text.push_str(piece);
            } else if tokenizer.is_some() {
                stdout.write_all(piece.as_bytes())?;
                stdout.flush()?;
            } else if let Some(id) = id {
                // No text without a tokenizer: the ids, as --prompt-ids reads them back.
                let sep = if tokens.is_empty() { "" } else { " " };
                write!(stdout, "{sep}{id}")?;
                stdout.flush()?;
            }
            tokens.extend(id);
            Ok(())
        })?;
        let timings = generator.timings().clone();
        if s.json {
            let report = Report {
                moetile_commit: COMMIT,
                backend: info,
                model: job.file.info(),
                settings: SettingsReport::new(&RuntimeSettings::new(config), n_ctx),
                sampler: (&s.sampling.sampler).into(),
                max_tokens: s.sampling.max_tokens,
                ignore_eos: s.sampling.ignore_eos,
                stop_reason: reason.to_string(),
                load_ms: load.upload.as_secs_f64() * 1e3,
                prepare_ms: load.prepare.as_secs_f64() * 1e3,
                timings: (&timings).into(),
                prompt_token_ids: &job.tokens,
                token_ids: tokens,
                text: tokenizer.map(|_| text),
            };
            serde_json::to_writer_pretty(&mut stdout, &report)?;
            writeln!(stdout)?;
        } else {
            writeln!(stdout)?;
            eprintln!("{} | stop: {reason}", summary_line(&timings));
        }
        Ok(())
    }
}
