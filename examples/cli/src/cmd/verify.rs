//! `moetile verify`: the selected backend against the CPU reference on a short prompt, every
//! position's logits compared (top-1 agreement, largest absolute difference); a deepseek4 model
//! against its whole-model reference (`moetile_cpu::deepseek4`). The "does my
//! driver compute the right thing" check; exits with status 3 when a threshold is missed.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use moetile::RuntimeConfig;
use moetile::model::{Backend, Logits};
use moetile::session::Session;
use moetile_cpu::deepseek4::{Deepseek4Options, Deepseek4Reference};
use moetile_wgpu::{BackendOptions, WgpuBackend, WgpuContext};

use crate::MismatchError;
use crate::args::{ModelArgs, PromptIdsArgs, RuntimeArgs, RuntimeSettings, usage};
use crate::backend::{BackendChoice, BackendInfo, BackendTask, cpu_backend, gpu_backend};
use crate::model::{ModelFile, Prompt, PromptJob};

const DEFAULT_PROMPT: &str = "The quick brown fox jumps over the lazy dog. Mixture-of-Experts \
models route every token to a few experts, and each expert is a small feed-forward network.";

/// Arguments of `moetile verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt to compare on [default: a built-in sentence].
    #[arg(short, long, conflicts_with_all = ["prompt_ids", "prompt_ids_file"])]
    prompt: Option<String>,
    #[command(flatten)]
    prompt_ids: PromptIdsArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Least fraction of positions whose likeliest token must agree with the reference (every
    /// configuration; on a GPU the fast one may flip near-tied routing choices).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.9)]
    min_top1: f64,
    /// Largest absolute logit difference allowed anywhere in the exact configuration (f32
    /// storage; the CPU with --cpu), where only summation order differs from the reference.
    #[arg(long, value_name = "X", default_value_t = 0.05)]
    max_logit_diff: f32,
    /// Print a line per position.
    #[arg(long)]
    per_position: bool,
}

struct Settings {
    model: PathBuf,
    backend: BackendChoice,
    prompt: Prompt,
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
            prompt: match (self.prompt, self.prompt_ids.resolve()?) {
                (Some(text), _) => Prompt::Text(text),
                (None, Some(ids)) => Prompt::Ids(ids),
                (None, None) => Prompt::Text(DEFAULT_PROMPT.to_string()),
            },
            runtime: self.runtime.resolve()?,
            min_top1: self.min_top1,
            max_logit_diff: self.max_logit_diff,
            per_position: self.per_position,
        })
    }
}

/// Runs `moetile verify`.
///
/// On a GPU two configurations are compared with the reference: the fast one moetile runs by
/// default (f16 KV cache and expert intermediates, the adapter's fastest matmul path) and an
/// exact one (f32 storage, register-tile path). The exact one isolates kernel and driver
/// errors: only f32 summation order differs, so it must agree closely (`--max-logit-diff`).
/// The fast one rounds to f16, which legitimately flips a router's choice where two experts
/// score within ~1e-3 of each other, and a flipped expert changes that position's logits (and
/// later ones) by whole units; so it is held to top-1 agreement (`--min-top1`) only.
pub fn run(args: VerifyArgs) -> Result<()> {
    let s = args.resolve()?;
    let PromptJob {
        file,
        tokens,
        config,
    } = PromptJob::open(&s.model, &s.prompt, &s.runtime.config)?;
    let task = || Task {
        file: &file,
        tokens: &tokens,
        config: &config,
    };
    // The reference: the whole prompt in one chunk, on the CPU; for deepseek4, the whole-model
    // reference, which shares no graph with the runtime's, so `--cpu` checks that graph too.
    let (mut cpu, cpu_info) = cpu_backend();
    let (reference, what) = if file.config.deepseek4.is_some() {
        let options = Deepseek4Options {
            qat_sim: config.qat_sim,
        };
        let model = Deepseek4Reference::load(&file.file, options)?;
        (
            model.logits(&tokens)?,
            "the deepseek4 whole-model reference",
        )
    } else {
        let reference_config = RuntimeConfig {
            chunk: tokens.len(),
            ..config.clone()
        };
        let reference = Task {
            config: &reference_config,
            ..task()
        }
        .run(&mut cpu, &cpu_info)?;
        (reference.0, "the CPU reference")
    };
    println!(
        "verify {}: {} positions against {what}",
        file.path.display(),
        tokens.len()
    );
    let mut failures = Vec::new();
    match &s.backend {
        BackendChoice::Cpu => {
            let (logits, description) = task().run(&mut cpu, &cpu_info)?;
            let c = compare(&logits, &reference, file.config.n_vocab);
            report(&s, &tokens, &description, &c);
            failures.extend(c.check(s.min_top1, Some(s.max_logit_diff)));
        }
        BackendChoice::Gpu(adapter) => {
            let (mut fast, info) = gpu_backend(adapter, &file)?;
            let (logits, description) = task().run(&mut fast, &info)?;
            let c = compare(&logits, &reference, file.config.n_vocab);
            report(&s, &tokens, &format!("fast: {description}"), &c);
            failures.extend(
                c.check(s.min_top1, None)
                    .into_iter()
                    .map(|f| format!("fast: {f}")),
            );
            drop(fast);
            let ctx = Arc::new(WgpuContext::new(&adapter.context)?);
            let mut exact = WgpuBackend::with_options(ctx, BackendOptions::exact())?;
            let label = format!("exact: {}", exact.describe());
            // The exact configuration runs the register path, tuned on its own.
            let info = BackendInfo {
                tuned_tile_max: exact.tuned_tile_cap(&file.file, &file.config)?,
                ..info
            };
            let (logits, _) = task().run(&mut exact, &info)?;
            let c = compare(&logits, &reference, file.config.n_vocab);
            report(&s, &tokens, &label, &c);
            failures.extend(
                c.check(s.min_top1, Some(s.max_logit_diff))
                    .into_iter()
                    .map(|f| format!("exact: {f}")),
            );
        }
    }
    if failures.is_empty() {
        println!("OK");
        Ok(())
    } else {
        Err(MismatchError(format!("verify failed: {}", failures.join(", "))).into())
    }
}

/// Prints one comparison (per position on request).
fn report(s: &Settings, tokens: &[u32], description: &str, c: &Comparison) {
    println!("{description}");
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
    let (max_diff, at) = c.max_diff();
    println!(
        "  top-1 agreement {:.1}%, max |logit diff| {max_diff:.3e} at position {at}",
        c.top1_agreement() * 100.0
    );
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
        let (model, _) = self
            .file
            .load(backend, self.config.n_ctx(&self.file.config))?;
        let mut session = Session::new(&model, backend, &info.tuned(self.config))?;
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
    /// What misses the thresholds: top-1 agreement below `min_top1`, and, when given, a
    /// difference above `max_diff`.
    fn check(&self, min_top1: f64, max_diff: Option<f32>) -> Vec<String> {
        let mut failures = Vec::new();
        let agree = self.top1_agreement();
        if agree < min_top1 {
            failures.push(format!(
                "top-1 agreement {:.1}% < {:.1}%",
                agree * 100.0,
                min_top1 * 100.0
            ));
        }
        // Never NaN: `compare` turns non-finite differences into infinity.
        let (diff, _) = self.max_diff();
        if let Some(limit) = max_diff
            && diff > limit
        {
            failures.push(format!("max |logit diff| {diff:.3e} > {limit}"));
        }
        failures
    }

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
