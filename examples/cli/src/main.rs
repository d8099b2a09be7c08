//! The `moetile` binary: run, chat with, benchmark, synthesize and verify Mixture-of-Experts
//! GGUF models. A thin layer over the `moetile` library: arguments are parsed into validated
//! settings before any work starts, each subcommand lives in its own module under `cmd/`, and
//! backend-generic work goes through [`backend::with_backend`].

mod args;
mod backend;
mod cmd;
mod model;
mod progress;

use std::error::Error as _;
use std::process::ExitCode;

use clap::Parser;

/// Exit status of a failure the user can fix by changing the command line.
const EXIT_USAGE: u8 = 2;
/// Exit status of `verify` when the backends disagree beyond the thresholds.
const EXIT_MISMATCH: u8 = 3;

/// A bad argument value: reported like any error, with the usage exit status.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `verify` found the backends disagreeing.
#[derive(Debug)]
pub struct MismatchError(pub String);

impl std::fmt::Display for MismatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MismatchError {}

fn main() -> ExitCode {
    match args::Cli::try_parse()
        .map_err(value_error)
        .and_then(cmd::run)
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.is::<UsageError>() {
                ExitCode::from(EXIT_USAGE)
            } else if e.is::<MismatchError>() {
                ExitCode::from(EXIT_MISMATCH)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A value our own parsers refused (see `args`) is reported as its [`UsageError`] alone, one
/// line like the usage errors found later (clap would add the flag and a hint on lines of their
/// own); clap reports everything else itself, and exits (help, version, unknown flags...).
fn value_error(e: clap::Error) -> anyhow::Error {
    match e.source().and_then(|s| s.downcast_ref::<UsageError>()) {
        Some(UsageError(message)) => UsageError(message.clone()).into(),
        None => e.exit(),
    }
}
