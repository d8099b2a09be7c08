//! `moetile serve`: an OpenAI-compatible HTTP server (`/v1/chat/completions`,
//! `/v1/completions`, `/v1/models`, `/health`, `/metrics`).
//!
//! Two sides meet at a bounded queue. The HTTP side (`http.rs`, axum on a small tokio runtime)
//! checks each request (`api.rs`), renders chat messages through the model's template,
//! tokenizes, and queues a job, or answers 503 when `--queue` jobs already wait. The scheduler
//! (`scheduler.rs`) runs on this thread, the one that owns the backend: it takes jobs into
//! `--parallel` slots, each a session with its own KV cache (which the next request whose
//! prompt starts the same way reuses), and steps the active ones round-robin, one forward pass
//! each. Text flows back over a channel per request, read on the HTTP side in the model's
//! answer format (`answer.rs`: plain text with Hermes tool calls, `tools.rs`, or gpt-oss's
//! harmony channels, `harmony.rs`); a client that leaves closes it, which cancels its
//! sequence at the next step.

mod answer;
mod api;
mod harmony;
mod http;
mod metrics;
mod scheduler;
mod tools;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::http::HeaderValue;
use clap::Args;
use moetile::chat::ChatTemplate;
use moetile::model::Backend;
use moetile::session::Session;
use moetile::tokenizer::Tokenizer;
use tower_http::cors::AllowOrigin;

use crate::args::{BackendArgs, RuntimeArgs, RuntimeSettings, usage};
use crate::backend::{BackendChoice, BackendInfo, BackendTask, with_backend};
use crate::model::{ModelFile, ModelSource};

use answer::AnswerFormat;
use api::{Limits, Prompter};
use http::AppState;
use metrics::Metrics;
use scheduler::Scheduler;

/// Arguments of `moetile serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// GGUF model file [default: a synthetic tiny-qwen3moe in a temporary folder].
    #[arg(short, long, value_name = "FILE.gguf")]
    model: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Address to listen on (loopback only unless told otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 takes a free one (the address is printed once serving).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sequences generated at once, each with a KV cache of --ctx tokens.
    #[arg(long, value_name = "N", default_value_t = 4)]
    parallel: usize,
    /// Requests that may wait for a free sequence; more are refused with 503.
    #[arg(long, value_name = "N", default_value_t = 64)]
    queue: usize,
    /// Require `Authorization: Bearer KEY` on the /v1 endpoints.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// A Jinja chat template to use instead of the model's (for a model without one, or one
    /// without tools).
    #[arg(long, value_name = "FILE")]
    chat_template_file: Option<PathBuf>,
    /// Largest request body in bytes; a larger one is refused with 413.
    #[arg(long, value_name = "BYTES", default_value_t = 2 << 20)]
    max_body: usize,
    /// Let web pages from ORIGIN (e.g. `http://localhost:3000`; repeat the flag or separate
    /// origins with commas; `*` for any) call the server; without it no CORS headers are sent.
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',')]
    cors: Vec<String>,
}

/// Everything `serve` needs, validated.
struct Settings {
    model: Option<PathBuf>,
    backend: BackendChoice,
    runtime: RuntimeSettings,
    host: String,
    port: u16,
    parallel: usize,
    queue: usize,
    api_key: Option<String>,
    chat_template_file: Option<PathBuf>,
    max_body: usize,
    cors: Option<AllowOrigin>,
}

impl ServeArgs {
    fn resolve(self) -> Result<Settings> {
        if self.parallel == 0 {
            return Err(usage("invalid --parallel = 0: at least 1 sequence"));
        }
        if self.queue == 0 {
            return Err(usage("invalid --queue = 0: at least 1 waiting request"));
        }
        if self.api_key.as_deref() == Some("") {
            return Err(usage(
                "invalid --api-key: empty; leave it out to serve without one",
            ));
        }
        Ok(Settings {
            backend: self.backend.choice()?,
            runtime: self.runtime.resolve()?,
            model: self.model,
            host: self.host,
            port: self.port,
            parallel: self.parallel,
            queue: self.queue,
            api_key: self.api_key,
            chat_template_file: self.chat_template_file,
            max_body: self.max_body,
            cors: cors_origins(&self.cors)?,
        })
    }
}

/// The origins `--cors` lets in. A browser's `Origin` header is exactly
/// `scheme://host[:port]` in lower case, so an origin with a path or a trailing slash would
/// never match: it is refused here rather than silently ignored.
fn cors_origins(origins: &[String]) -> Result<Option<AllowOrigin>> {
    let origins: Vec<String> = origins.iter().map(|o| o.trim().to_lowercase()).collect();
    if origins.is_empty() {
        return Ok(None);
    }
    if origins.iter().any(|o| o == "*") {
        return match origins.len() {
            1 => Ok(Some(AllowOrigin::any())),
            _ => Err(usage(
                "invalid --cors: `*` lets in every origin; give it alone",
            )),
        };
    }
    let values = origins.iter().map(|origin| {
        let host = ["http://", "https://"]
            .iter()
            .find_map(|scheme| origin.strip_prefix(scheme));
        let plain = host.is_some_and(|host| {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        });
        plain
            .then(|| HeaderValue::from_str(origin).ok())
            .flatten()
            .ok_or_else(|| {
                usage(format!(
                    "invalid --cors {origin:?}: give an origin as a browser sends it, \
                     scheme://host[:port] with no path (e.g. http://localhost:3000), or `*`"
                ))
            })
    });
    Ok(Some(AllowOrigin::list(values.collect::<Result<Vec<_>>>()?)))
}

/// Runs `moetile serve` until the process is stopped.
pub fn run(args: ServeArgs) -> Result<()> {
    let settings = args.resolve()?;
    let source = ModelSource::given_or_synthetic(settings.model.as_deref(), "serving")?;
    let mut file = ModelFile::open(source.path())?;
    let tokenizer = file.take_tokenizer("the server reads and writes text")?;
    let template = match &settings.chat_template_file {
        Some(path) => {
            let source = std::fs::read_to_string(path)
                .with_context(|| format!("reading --chat-template-file {}", path.display()))?;
            ChatTemplate::for_tokenizer(Some(&source), &tokenizer)
                .with_context(|| format!("--chat-template-file {}", path.display()))?
        }
        None => ChatTemplate::from_gguf(&file.file, &tokenizer)
            .with_context(|| format!("{}", file.path.display()))?,
    };
    if template.is_fallback() {
        eprintln!("note: the model has no chat template; chat requests use ChatML");
    }
    let model_id = source
        .path()
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    // Bound before any weight moves, so a port in use fails at once.
    let (host, port) = (settings.host.as_str(), settings.port);
    let listener = std::net::TcpListener::bind((host, port))
        .with_context(|| format!("listening on {host}:{port}"))?;
    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    with_backend(
        &settings.backend,
        &file,
        Task {
            file: &file,
            settings: &settings,
            prompter: Prompter {
                format: AnswerFormat::of(&tokenizer),
                tokenizer: Arc::new(tokenizer),
                template,
            },
            model_id,
            listener,
        },
    )
}

struct Task<'a> {
    file: &'a ModelFile,
    settings: &'a Settings,
    prompter: Prompter,
    model_id: String,
    listener: std::net::TcpListener,
}

impl BackendTask for Task<'_> {
    type Output = ();

    fn run<B: Backend>(self, backend: &mut B, info: &BackendInfo) -> Result<()> {
        let s = self.settings;
        let config = info.tuned(&s.runtime.config);
        let (model, _) = self.file.load(backend, config.n_ctx(&self.file.config))?;
        let mut sessions = Session::group(&model, backend, &config, s.parallel)
            .context("allocating the slots' KV caches")?;
        let n_ctx = config.n_ctx(&model.config);
        let metrics = Arc::new(Metrics::new(s.parallel, n_ctx));
        let (jobs, queue) = std::sync::mpsc::sync_channel(s.queue);
        let tokenizer: Arc<Tokenizer> = self.prompter.tokenizer.clone();
        let state = AppState::new(
            jobs,
            self.prompter,
            Limits {
                model_id: self.model_id,
                n_ctx,
                n_vocab: model.config.n_vocab,
            },
            s.api_key.clone(),
            metrics.clone(),
        );
        // Two threads parse, tokenize and stream; the model never runs on them.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("moetile-http")
            .enable_all()
            .build()
            .context("starting the HTTP runtime")?;
        let listener = {
            let _runtime = runtime.enter();
            tokio::net::TcpListener::from_std(self.listener).context("listening")?
        };
        let address = listener.local_addr().context("reading the bound address")?;
        let router = http::router(Arc::new(state), s.max_body, s.cors.clone());
        let server = runtime.spawn(async move { axum::serve(listener, router).await });
        eprintln!(
            "listening on http://{address} ({} slots of {n_ctx} tokens on {})",
            s.parallel, info.description
        );
        Scheduler::new(&model, backend, &tokenizer, &mut sessions, &metrics).run(&queue)?;
        // The queue closes only once the server has stopped: say why it did.
        runtime
            .block_on(server)
            .context("the HTTP server panicked")?
            .context("serving HTTP")?;
        anyhow::bail!("the HTTP server stopped")
    }
}
