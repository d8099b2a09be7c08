//! `moetile verify`: the selected backend against the CPU reference on a short prompt, every
//! position's logits compared (top-1 agreement, largest absolute difference). The "does my
//! driver compute the right thing" check; exits with status 3 when a threshold is missed.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use moetile::RuntimeConfig;
use moetile::model::{Backend, Logits};
use moetile::session::Session;

use crate::MismatchError;
use crate::args::{ModelArgs, RuntimeArgs, RuntimeSettings, usage};
use crate::backend::{BackendChoice, BackendInfo, BackendTask, cpu_backend, with_backend};
use crate::model::ModelFile;

const DEFAULT_PROMPT: &str = "The quick brown fox jumps over the lazy dog. Mixture-of-Experts \
models route every token to a few experts, and each expert is a small feed-forward network.";

/// Arguments of `moetile verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt to compare on [default: a built-in sentence].
    #[arg(short, long)]
    prompt: Option<String>,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Least fraction of positions whose likeliest token must agree.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.95)]
    min_top1: f64,
    /// Largest absolute logit difference allowed anywhere.
    #[arg(long, value_name = "X", default_value_t = 0.5)]
    max_logit_diff: f32,
    /// Print a line per position.
    #[arg(long)]
    per_position: bool,
}

struct Settings {
    model: PathBuf,
    backend: BackendChoice,
    prompt: String,
    runtime: RuntimeSettings,
    min_top1: f64,
    max_logit_diff: f32,
    per_position: bool,
}

impl VerifyArgs {
    fn resolve(self) -> Result<Settings> {
        if !(0.0..=1.0).contains(&self.min_top1) {
            return Err(usage(format!(
                "invalid --min-top1 = {}: a fraction in [0, 1]",
                self.min_top1
            )));
        }
        if self.max_logit_diff.is_nan() || self.max_logit_diff < 0.0 {
            return Err(usage(format!(
                "invalid --max-logit-diff = {}: a number >= 0",
                self.max_logit_diff
            )));
        }
        Ok(Settings {
            model: self.model.model,
            backend: self.model.backend.choice()?,
            prompt: self.prompt.unwrap_or_else(|| DEFAULT_PROMPT.to_string()),
            runtime: self.runtime.resolve()?,
            min_top1: self.min_top1,
            max_logit_diff: self.max_logit_diff,
            per_position: self.per_position,
        })
    }
}

/// Runs `moetile verify`.
pub fn run(args: VerifyArgs) -> Result<()> {
    let s = args.resolve()?;
    let file = ModelFile::open(&s.model)?;
    let tokens = file.tokenizer.encode(&s.prompt, true, true);
    anyhow::ensure!(!tokens.is_empty(), "the prompt is empty");
    let n_ctx = file.n_ctx(s.runtime.config.ctx);
    file.check_fits(tokens.len(), n_ctx)?;
    let config = RuntimeConfig {
        ctx: Some(n_ctx),
        ..s.runtime.config.clone()
    };
    let task = Task {
        file: &file,
        tokens: &tokens,
        config: &config,
    };
    let (tested, description) = with_backend(&s.backend, task)?;
    // The reference: the whole prompt in one chunk, on the CPU.
    let reference_config = RuntimeConfig {
        chunk: tokens.len(),
        ..config.clone()
    };
    let (mut cpu, cpu_info) = cpu_backend();
    let reference = Task {
        file: &file,
        tokens: &tokens,
        config: &reference_config,
    }
    .run(&mut cpu, &cpu_info)?
    .0;
    let c = compare(&tested, &reference, file.config.n_vocab);
    println!(
        "verify {}: {description} vs the CPU reference, {} positions",
        file.path.display(),
        c.positions.len()
    );
    if s.per_position {
        println!("| pos | token | top-1 | reference top-1 | max abs diff |");
        println!("|---|---|---|---|---|");
        for (i, p) in c.positions.iter().enumerate() {
            println!(
                "| {i} | {} | {} | {} | {:.3e} |",
                tokens[i], p.top1, p.reference_top1, p.max_diff
            );
        }
    }
    let agree = c.top1_agreement();
    let (max_diff, at) = c.max_diff();
    println!(
        "top-1 agreement {:.1}% (at least {:.1}%), max |logit diff| {max_diff:.3e} at position {at} (at most {})",
        agree * 100.0,
        s.min_top1 * 100.0,
        s.max_logit_diff
    );
    let mut failures = Vec::new();
    if agree < s.min_top1 {
        failures.push(format!(
            "top-1 agreement {:.1}% < {:.1}%",
            agree * 100.0,
            s.min_top1 * 100.0
        ));
    }
    // Never NaN: `compare` turns non-finite differences into infinity.
    if max_diff > s.max_logit_diff {
        failures.push(format!(
            "max |logit diff| {max_diff:.3e} > {}",
            s.max_logit_diff
        ));
    }
    if failures.is_empty() {
        println!("OK");
        Ok(())
    } else {
        Err(MismatchError(format!("verify failed: {}", failures.join(", "))).into())
    }
}

/// All-position logits of `tokens` on one backend.
struct Task<'a> {
    file: &'a ModelFile,
    tokens: &'a [u32],
    config: &'a RuntimeConfig,
}

impl BackendTask for Task<'_> {
    /// Logits `(T, vocab)` and the backend's description.
    type Output = (Vec<f32>, String);

    fn run<B: Backend>(self, backend: &mut B, info: &BackendInfo) -> Result<Self::Output> {
        let model = self.file.load(backend)?;
        let mut session = Session::new(&model, backend, self.config)?;
        let logits = session.prefill(&model, backend, self.tokens, Logits::All)?;
        Ok((logits, info.description.clone()))
    }
}

/// One position compared.
#[derive(Debug, Clone, PartialEq)]
struct Position {
    top1: usize,
    reference_top1: usize,
    /// Largest |difference| over the vocabulary; infinite where either side is not finite.
    max_diff: f32,
}

#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    positions: Vec<Position>,
}

impl Comparison {
    fn top1_agreement(&self) -> f64 {
        let agree = self
            .positions
            .iter()
            .filter(|p| p.top1 == p.reference_top1)
            .count();
        agree as f64 / self.positions.len().max(1) as f64
    }

    /// The largest difference and its position.
    fn max_diff(&self) -> (f32, usize) {
        self.positions
            .iter()
            .enumerate()
            .map(|(i, p)| (p.max_diff, i))
            .fold(
                (0.0, 0),
                |best, cur| if cur.0 > best.0 { cur } else { best },
            )
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// Compares row-major `(T, n_vocab)` logits.
fn compare(tested: &[f32], reference: &[f32], n_vocab: usize) -> Comparison {
    let positions = tested
        .chunks(n_vocab)
        .zip(reference.chunks(n_vocab))
        .map(|(a, b)| Position {
            top1: argmax(a),
            reference_top1: argmax(b),
            max_diff: a
                .iter()
                .zip(b)
                .map(|(x, y)| {
                    let d = (x - y).abs();
                    if d.is_finite() { d } else { f32::INFINITY }
                })
                .fold(0.0, f32::max),
        })
        .collect();
    Comparison { positions }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_counts_top1_and_finds_the_largest_difference() {
        let reference = [0.0, 1.0, 0.5, /**/ 2.0, 0.0, 0.0];
        let tested = [0.0, 1.1, 0.5, /**/ 0.0, 0.0, 2.5];
        let c = compare(&tested, &reference, 3);
        assert_eq!(c.top1_agreement(), 0.5);
        assert_eq!(c.max_diff(), (2.5, 1));
        assert!((c.positions[0].max_diff - 0.1).abs() < 1e-6);
    }

    #[test]
    fn nan_logits_are_an_infinite_difference() {
        let c = compare(&[f32::NAN, 0.0], &[0.0, 0.0], 2);
        assert_eq!(c.max_diff().0, f32::INFINITY);
    }
}
