//! The `moetile` binary: run, chat with, benchmark, synthesize and verify Mixture-of-Experts
//! GGUF models. A thin layer over the `moetile` library: arguments are parsed into validated
//! settings before any work starts, each subcommand lives in its own module under `cmd/`, and
//! backend-generic work goes through [`backend::with_backend`].

mod args;
mod backend;
mod cmd;
mod model;
mod progress;

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
    let cli = args::Cli::parse();
    match cmd::run(cli) {
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
