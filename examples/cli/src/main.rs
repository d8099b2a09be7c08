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
            eprintln!("error: {}", one_line(&e));
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

/// The error and its causes on one line, as `{:#}` prints them, except that a cause whose text
/// the line already ends with is not repeated (some errors print their source themselves).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line = format!("{line}: {text}");
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_printed_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::new(io)
            .context("opening x: gone")
            .context("x.gguf");
        assert_eq!(one_line(&e), "x.gguf: opening x: gone");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&e), format!("{e:#}"));
    }
}
