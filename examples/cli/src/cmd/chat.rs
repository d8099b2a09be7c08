//! `moetile chat`: a conversation read from stdin line by line (typed or scripted), rendered
//! with the model's chat template each turn; the session keeps its KV cache across turns, so
//! each turn computes only its new tokens. `/reset` starts over, `/quit` (or end of input)
//! leaves, and Ctrl-C stops the answer being generated without ending the chat. A gpt-oss
//! model's answer (harmony) shows its final channel; its reasoning (the analysis channel, and
//! tool-call commentary) goes to stderr with `--show-reasoning`, and never into the history.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::Args;
use moetile::chat::{ChatMessage, ChatTemplate};
use moetile::generate::{Generator, StopReason};
use moetile::harmony::{self, Channel, ChannelParser, Event};
use moetile::model::Backend;
use moetile::session::Session;
use moetile::tokenizer::Tokenizer;

use super::report::summary_line;
use super::stream;
use crate::args::{ModelArgs, RuntimeArgs, RuntimeSettings, Sampling, SamplingArgs};
use crate::backend::{BackendChoice, BackendInfo, BackendTask, with_backend};
use crate::model::ModelFile;

/// Arguments of `moetile chat`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A system message opening the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Also show a gpt-oss model's reasoning (its answers' analysis and commentary
    /// channels), on stderr; only the final channel is shown otherwise.
    #[arg(long)]
    show_reasoning: bool,
    /// The `reasoning_effort` the chat template reads (gpt-oss: low, medium or high; its
    /// template's default is medium).
    #[arg(long, value_name = "LEVEL")]
    reasoning_effort: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

struct Settings {
    model: PathBuf,
    backend: BackendChoice,
    system: Option<String>,
    show_reasoning: bool,
    sampling: Sampling,
    runtime: RuntimeSettings,
}

/// Runs `moetile chat`.
pub fn run(args: ChatArgs) -> Result<()> {
    let settings = Settings {
        sampling: args.sampling.resolve()?,
        runtime: args.runtime.resolve()?,
        model: args.model.model,
        backend: args.model.backend.choice()?,
        system: args.system,
        show_reasoning: args.show_reasoning,
    };
    let file = ModelFile::open(&settings.model)?;
    let tokenizer = file.require_tokenizer(
        "chat reads and writes text; run it on token ids with moetile run --prompt-ids",
    )?;
    let mut template = ChatTemplate::from_gguf(&file.file, tokenizer)
        .with_context(|| format!("{}", settings.model.display()))?;
    if let Some(effort) = &args.reasoning_effort {
        template.set_variable("reasoning_effort", effort);
    }
    if template.is_fallback() {
        eprintln!("note: the model has no chat template; using ChatML");
    }
    with_backend(
        &settings.backend,
        &file,
        Task {
            file: &file,
            tokenizer,
            template: &template,
            settings: &settings,
        },
    )
}

struct Task<'a> {
    file: &'a ModelFile,
    tokenizer: &'a Tokenizer,
    template: &'a ChatTemplate,
    settings: &'a Settings,
}

/// Ctrl-C: stops the answer being generated, or leaves when none is.
fn install_interrupt() -> Result<(Arc<AtomicBool>, Arc<AtomicBool>)> {
    let cancel = Arc::new(AtomicBool::new(false));
    let generating = Arc::new(AtomicBool::new(false));
    let (c, g) = (cancel.clone(), generating.clone());
    ctrlc::set_handler(move || {
        if g.load(Ordering::SeqCst) {
            c.store(true, Ordering::SeqCst);
        } else {
            eprintln!();
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")?;
    Ok((cancel, generating))
}

impl BackendTask for Task<'_> {
    type Output = ();

    fn run<B: Backend>(self, backend: &mut B, info: &BackendInfo) -> Result<()> {
        let s = self.settings;
        let tokenizer = self.tokenizer;
        let n_ctx = s.runtime.config.n_ctx(&self.file.config);
        let (model, _) = self.file.load(backend, n_ctx)?;
        let mut session = Session::new(&model, backend, &info.tuned(&s.runtime.config))?;
        let n_ctx = session.n_ctx();
        let (cancel, generating) = install_interrupt()?;
        let opening: Vec<ChatMessage> = s
            .system
            .iter()
            .map(|text| ChatMessage::new("system", text.as_str()))
            .collect();
        let mut messages = opening.clone();
        let interactive = std::io::stdin().is_terminal();
        if interactive {
            eprintln!(
                "chat with {} (/reset, /quit; Ctrl-C stops an answer)",
                self.file.path.display()
            );
        }
        let mut stdout = std::io::stdout();
        let mut lines = std::io::stdin().lock().lines();
        loop {
            if interactive {
                print!("> ");
                stdout.flush()?;
            }
            let Some(line) = lines.next().transpose().context("reading stdin")? else {
                break;
            };
            match line.trim() {
                "" => continue,
                "/quit" | "/exit" => break,
                "/reset" => {
                    messages = opening.clone();
                    session.reset();
                    eprintln!("(conversation reset)");
                    continue;
                }
                _ => {}
            }
            messages.push(ChatMessage::new("user", line));
            let prompt = self.template.render(&messages, true)?;
            let tokens = tokenizer.encode(&prompt, true, true);
            if tokens.len() >= n_ctx {
                messages.pop();
                eprintln!(
                    "(this turn needs {} tokens of a {n_ctx}-token context: /reset, or restart with a larger --ctx)",
                    tokens.len()
                );
                continue;
            }
            let stop = s.sampling.stop(Some(tokenizer)).with_cancel(cancel.clone());
            let mut generator =
                Generator::new(&mut session, tokenizer, &tokens, s.sampling.sampler, stop)?;
            let mut answer = Answer::new(tokenizer, s.show_reasoning);
            generating.store(true, Ordering::SeqCst);
            let reason = stream(&mut generator, &model, backend, &mut |id, piece| {
                answer.push(piece, id.is_none())
            });
            generating.store(false, Ordering::SeqCst);
            cancel.store(false, Ordering::SeqCst);
            let reason = reason?;
            println!();
            let note = match reason {
                StopReason::Cancelled => " | stopped",
                StopReason::ContextFull => " | context full: /reset to go on",
                _ => "",
            };
            eprintln!("[{}{note}]", summary_line(generator.timings()));
            messages.push(ChatMessage::new("assistant", answer.text));
        }
        Ok(())
    }
}

/// The answer being generated: shown as it streams and kept for the history. A harmony
/// answer is split by channel: the final channel is the answer, the rest is reasoning.
struct Answer {
    channels: Option<ChannelParser>,
    /// The channel of the harmony message being read.
    channel: Channel,
    show_reasoning: bool,
    /// Whether reasoning was the last thing shown (a line break parts it from the answer).
    in_reasoning: bool,
    /// What the history keeps: the final channel of a harmony answer, else all of it.
    text: String,
}

impl Answer {
    fn new(tokenizer: &Tokenizer, show_reasoning: bool) -> Self {
        Answer {
            channels: harmony::writes_harmony(tokenizer).then(ChannelParser::new),
            channel: Channel::Final,
            show_reasoning,
            in_reasoning: false,
            text: String::new(),
        }
    }

    /// Shows `piece` of the answer; `last` when generation has stopped.
    fn push(&mut self, piece: &str, last: bool) -> Result<()> {
        let Some(parser) = &mut self.channels else {
            return self.show(piece);
        };
        let mut events = parser.push(piece);
        if last {
            events.extend(parser.finish());
        }
        for event in events {
            match event {
                Event::Start(header) => self.channel = header.channel,
                Event::Text(text) => self.show(&text)?,
                Event::End => {}
            }
        }
        Ok(())
    }

    /// Shows `text` of the current channel.
    fn show(&mut self, text: &str) -> Result<()> {
        if self.channel == Channel::Final {
            if std::mem::take(&mut self.in_reasoning) {
                eprintln!();
            }
            self.text.push_str(text);
            let mut stdout = std::io::stdout();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        } else if self.show_reasoning {
            self.in_reasoning = true;
            eprint!("{text}");
        }
        Ok(())
    }
}
