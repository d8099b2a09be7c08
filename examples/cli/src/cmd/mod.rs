//! One module per subcommand, and the generation loop `run` and `chat` share.

pub mod bench;
pub mod chat;
pub mod devices;
pub mod profile;
mod report;
pub mod run;
pub mod serve;
pub mod synth;
pub mod tune;
pub mod verify;

use anyhow::Result;
use moetile::generate::{Generator, Step, StopReason};
use moetile::model::{Backend, Model};

use crate::args::{Cli, Command};
use crate::progress;

/// The commit this binary was built from (`git rev-parse --short HEAD`, or "unknown").
pub const COMMIT: &str = env!("MOETILE_COMMIT");

/// Runs the subcommand `cli` names.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Devices(args) => devices::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Tune(args) => tune::run(args),
        Command::Serve(args) => serve::run(args),
    }
}

/// Steps `generator` to its end, handing each token (`None` for the text flushed at the end)
/// and its piece of text to `emit`; a prefill of several chunks shows a token progress bar.
/// Returns why generation stopped.
pub fn stream<B: Backend>(
    generator: &mut Generator<'_, B>,
    model: &Model<B>,
    backend: &mut B,
    emit: &mut dyn FnMut(Option<u32>, &str) -> Result<()>,
) -> Result<StopReason> {
    let mut bar = None;
    while let Some(step) = generator.step(model, backend)? {
        match step {
            Step::Prefill { done, total } => bar
                .get_or_insert_with(|| progress::tokens_bar("prefill", total as u64))
                .set_position(done as u64),
            Step::Token { id, text } => {
                if let Some(bar) = bar.take() {
                    bar.finish_and_clear();
                }
                emit(Some(id), &text)?;
            }
            Step::Stopped { reason, text } => {
                if let Some(bar) = bar.take() {
                    bar.finish_and_clear();
                }
                emit(None, &text)?;
                return Ok(reason);
            }
        }
    }
    // `step` reports `Stopped` before returning `None`; a finished generator says why.
    Ok(generator.stop_reason().unwrap_or(StopReason::MaxTokens))
}
