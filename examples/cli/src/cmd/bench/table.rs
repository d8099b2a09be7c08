//! The llama-bench style table: ppN and tgN tests, mean ± standard deviation over repetitions.

use anyhow::Result;
use moetile::RuntimeConfig;
use moetile::generate::{Generator, StopConditions, Timings};
use moetile::model::{Backend, Model};
use moetile::sample::SamplerConfig;
use moetile::session::Session;
use serde::Serialize;

use super::sweep::cycle;
use super::{Format, Meta, Setting, TablePlan};

/// One test's results.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// `pp512`, `tg128`.
    test: String,
    n_prompt: usize,
    n_gen: usize,
    /// Tokens per second of each repetition.
    samples_tps: Vec<f64>,
    mean_tps: f64,
    stddev_tps: f64,
}

/// Mean and sample standard deviation (0 for one sample).
fn mean_stddev(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n.max(1.0);
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Runs `prompt` then `n_gen` greedy decode steps on an emptied session.
fn measure<B: Backend>(
    model: &Model<B>,
    backend: &mut B,
    session: &mut Session<B>,
    prompt: &[u32],
    n_gen: usize,
) -> Result<Timings> {
    session.reset();
    let stop = StopConditions {
        // The prefill's token plus n_gen decoded ones; 0 only prefills.
        max_tokens: if n_gen == 0 { 0 } else { n_gen + 1 },
        ..StopConditions::default()
    };
    // No tokenizer: the tokens are counted, never read as text.
    let mut generator = Generator::new(session, None, prompt, SamplerConfig::greedy(), stop)?;
    while generator.next_token(model, backend)?.is_some() {}
    Ok(generator.timings().clone())
}

/// Runs every test of `plan` with `setting`, after one untimed warm-up.
pub fn run<B: Backend>(
    model: &Model<B>,
    backend: &mut B,
    base: &[u32],
    setting: &Setting,
    plan: &TablePlan,
) -> Result<Vec<TestResult>> {
    let config = RuntimeConfig {
        ctx: Some(plan.n_ctx()),
        ..setting.runtime.config.clone()
    };
    let mut session = Session::new(model, backend, &config)?;
    let warmup = cycle(
        base,
        plan.n_prompt
            .first()
            .copied()
            .unwrap_or(1)
            .min(config.chunk),
    );
    measure(model, backend, &mut session, &warmup, 2)?;
    let tests = plan
        .n_prompt
        .iter()
        .map(|&p| (format!("pp{p}"), p, 0))
        .chain(plan.n_gen.iter().map(|&n| (format!("tg{n}"), 0, n)));
    let mut out = Vec::new();
    for (test, n_prompt, n_gen) in tests {
        // tgN decodes after a one-token prompt, as llama-bench does.
        let prompt = cycle(base, n_prompt.max(1));
        let mut samples_tps = Vec::new();
        for _ in 0..plan.repetitions {
            let t = measure(model, backend, &mut session, &prompt, n_gen)?;
            samples_tps.push(if n_gen == 0 {
                t.prefill_tps()
            } else {
                t.decode_tps()
            });
        }
        let (mean_tps, stddev_tps) = mean_stddev(&samples_tps);
        eprintln!("  {test}: {mean_tps:.1} ± {stddev_tps:.1} tok/s");
        out.push(TestResult {
            test,
            n_prompt,
            n_gen,
            samples_tps,
            mean_tps,
            stddev_tps,
        });
    }
    Ok(out)
}

#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    meta: &'a Meta,
    plan: &'a TablePlan,
    results: Vec<JsonSetting<'a>>,
}

#[derive(Serialize)]
struct JsonSetting<'a> {
    tile_policy: &'a str,
    tests: &'a [TestResult],
}

/// Prints the table in the plan's format.
pub fn report(
    meta: &Meta,
    plan: &TablePlan,
    results: &[(&Setting, Vec<TestResult>)],
) -> Result<()> {
    match plan.format {
        Format::Md => {
            println!("{}", meta.header());
            println!(
                "{} repetitions, tokens per second (mean ± stddev)\n",
                plan.repetitions
            );
            print!("| test |");
            for (s, _) in results {
                print!(" {} |", s.label);
            }
            println!();
            println!("|---|{}", "---:|".repeat(results.len()));
            let n_tests = results.first().map_or(0, |(_, r)| r.len());
            for i in 0..n_tests {
                print!("| {} |", results[0].1[i].test);
                for (_, tests) in results {
                    print!(" {:.2} ± {:.2} |", tests[i].mean_tps, tests[i].stddev_tps);
                }
                println!();
            }
        }
        Format::Csv => {
            let mut out = csv::Writer::from_writer(std::io::stdout().lock());
            out.write_record([
                "moetile_commit",
                "backend",
                "driver",
                "model",
                "chunk",
                "tile_policy",
                "test",
                "n_prompt",
                "n_gen",
                "repetitions",
                "mean_tps",
                "stddev_tps",
            ])?;
            for (setting, tests) in results {
                for t in tests {
                    out.write_record([
                        meta.moetile_commit,
                        &meta.backend.description,
                        &meta.backend.driver,
                        &meta.model.path,
                        &meta.chunk.to_string(),
                        &setting.label,
                        &t.test,
                        &t.n_prompt.to_string(),
                        &t.n_gen.to_string(),
                        &plan.repetitions.to_string(),
                        &format!("{:.3}", t.mean_tps),
                        &format!("{:.3}", t.stddev_tps),
                    ])?;
                }
            }
            out.flush()?;
        }
        Format::Json => {
            let report = JsonReport {
                meta,
                plan,
                results: results
                    .iter()
                    .map(|(s, tests)| JsonSetting {
                        tile_policy: &s.label,
                        tests,
                    })
                    .collect(),
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_stddev() {
        let (m, s) = mean_stddev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert!((s - 2.138).abs() < 1e-3, "{s}");
        assert_eq!(mean_stddev(&[3.0]), (3.0, 0.0));
    }
}
