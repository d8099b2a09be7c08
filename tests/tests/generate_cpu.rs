//! `moetile::generate` on the CPU reference over a synthetic tiny model: the generator's tokens
//! equal a hand-written prefill/argmax/decode loop, each step runs at most one forward pass,
//! prefix reuse across calls is exact, and every stop condition stops it.
//!
//! The model's seed is fresh each run and printed (`MOETILE_TEST_SEED` reproduces one).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use moetile::RuntimeConfig;
use moetile::generate::{Generator, Step, StopConditions, StopReason};
use moetile::gguf::GgufFile;
use moetile::model::{Logits, Model};
use moetile::sample::SamplerConfig;
use moetile::session::Session;
use moetile::tokenizer::Tokenizer;
use moetile_cpu::CpuBackend;
use moetile_tests::batch::check_decoded_together_equal_each_alone;

/// The tiny model on the CPU, and its tokenizer.
fn fixture() -> (Model<CpuBackend>, CpuBackend, Tokenizer) {
    let seed = moetile_tests::seed("tiny model");
    let file = GgufFile::from_bytes(moetile_tests::tiny_model(seed)).unwrap();
    let mut cpu = CpuBackend::new();
    let model = Model::load(&file, &mut cpu, &mut |_| {}).unwrap();
    (model, cpu, Tokenizer::from_gguf(&file).unwrap())
}

fn session(
    model: &Model<CpuBackend>,
    cpu: &mut CpuBackend,
    ctx: usize,
    chunk: usize,
) -> Session<CpuBackend> {
    let config = RuntimeConfig {
        ctx: Some(ctx),
        chunk,
        ..RuntimeConfig::default()
    };
    Session::new(model, cpu, &config).unwrap()
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
        .unwrap() as u32
}

/// Exactly `n` tokens, never stopping at an end token.
fn exactly(n: usize) -> StopConditions {
    StopConditions {
        max_tokens: n,
        ..StopConditions::default()
    }
}

/// Steps to the end; returns the steps.
fn run_all(
    model: &Model<CpuBackend>,
    cpu: &mut CpuBackend,
    g: &mut Generator<'_, CpuBackend>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    while let Some(step) = g.step(model, cpu).unwrap() {
        steps.push(step);
    }
    steps
}

fn ids(steps: &[Step]) -> Vec<u32> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Token { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn stopped(steps: &[Step]) -> StopReason {
    match steps.last() {
        Some(Step::Stopped { reason, .. }) => *reason,
        other => panic!("last step {other:?}"),
    }
}

#[test]
fn greedy_generation_equals_a_hand_written_loop_one_forward_per_step() {
    let (model, mut cpu, tokenizer) = fixture();
    let prompt = tokenizer.encode("The experts of this layer are", true, true);
    let n = 10;

    let mut s = session(&model, &mut cpu, 256, 512);
    let mut logits = s.prefill(&model, &mut cpu, &prompt, Logits::Last).unwrap();
    let mut want = Vec::new();
    for _ in 0..n {
        let t = argmax(&logits);
        want.push(t);
        logits = s.decode(&model, &mut cpu, t).unwrap();
    }

    // Chunks of 4: the prompt takes several prefill steps, each reported.
    let mut s = session(&model, &mut cpu, 256, 4);
    let mut g = Generator::new(
        &mut s,
        &tokenizer,
        &prompt,
        SamplerConfig::greedy(),
        exactly(n),
    )
    .unwrap();
    let steps = run_all(&model, &mut cpu, &mut g);
    assert_eq!(ids(&steps), want);
    let chunks = prompt.len().div_ceil(4);
    let prefills: Vec<(usize, usize)> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Prefill { done, total } => Some((*done, *total)),
            _ => None,
        })
        .collect();
    let expected: Vec<(usize, usize)> = (1..chunks).map(|i| (4 * i, prompt.len())).collect();
    assert_eq!(prefills, expected, "one step per chunk but the last");
    assert_eq!(stopped(&steps), StopReason::MaxTokens);
    assert!(g.is_finished());
    assert_eq!(g.step(&model, &mut cpu).unwrap(), None);

    let t = g.timings().clone();
    assert_eq!(t.prompt_tokens, prompt.len());
    assert_eq!(t.reused_tokens, 0);
    assert_eq!(t.generated_tokens, n);
    assert_eq!(t.decode_steps, n - 1, "the last token is not decoded");
    assert!(t.first_token.is_some() && t.decode_first.is_some());
    assert!(t.prefill_tps() > 0.0 && t.decode_tps() > 0.0 && t.steady_decode_tps() > 0.0);
    assert_eq!(t.tiles_used.len(), 1);
    drop(g);
    // The session holds the prompt and every generated token but the last.
    assert_eq!(s.tokens().len(), prompt.len() + n - 1);
}

#[test]
fn a_longer_prompt_reuses_the_cached_prefix_exactly() {
    let (model, mut cpu, tokenizer) = fixture();
    let greedy = SamplerConfig::greedy();
    let first = tokenizer.encode("Once upon a time", true, true);
    let mut s = session(&model, &mut cpu, 256, 512);
    let mut g = Generator::new(&mut s, &tokenizer, &first, greedy, exactly(5)).unwrap();
    let generated = ids(&run_all(&model, &mut cpu, &mut g));
    // The next turn resends everything, plus more.
    let mut second = first.clone();
    second.extend(&generated);
    second.extend(tokenizer.encode(" and then", false, false));
    let mut g = Generator::new(&mut s, &tokenizer, &second, greedy, exactly(6)).unwrap();
    let with_reuse = ids(&run_all(&model, &mut cpu, &mut g));
    // Everything but the last generated token (never decoded) was cached.
    assert_eq!(g.timings().reused_tokens, first.len() + generated.len() - 1);

    let mut fresh = session(&model, &mut cpu, 256, 512);
    let mut g = Generator::new(&mut fresh, &tokenizer, &second, greedy, exactly(6)).unwrap();
    assert_eq!(ids(&run_all(&model, &mut cpu, &mut g)), with_reuse);
    assert_eq!(g.timings().reused_tokens, 0);
}

#[test]
fn every_stop_condition_stops() {
    let (model, mut cpu, tokenizer) = fixture();
    let prompt = tokenizer.encode("Once upon a time", true, true);
    let greedy = SamplerConfig::greedy();
    let mut s = session(&model, &mut cpu, 256, 512);
    let free = {
        let mut g = Generator::new(&mut s, &tokenizer, &prompt, greedy, exactly(4)).unwrap();
        ids(&run_all(&model, &mut cpu, &mut g))
    };

    // An end token: stops before emitting it.
    let stop = StopConditions {
        max_tokens: 4,
        end_tokens: vec![free[2]],
        cancel: None,
    };
    let mut g = Generator::new(&mut s, &tokenizer, &prompt, greedy, stop).unwrap();
    let steps = run_all(&model, &mut cpu, &mut g);
    let end_at = free.iter().position(|&t| t == free[2]).unwrap();
    assert_eq!(ids(&steps), free[..end_at]);
    assert_eq!(stopped(&steps), StopReason::EndOfGeneration(free[2]));
    assert_eq!(g.timings().generated_tokens, end_at);

    // Cancelled before the first step: nothing runs.
    let flag = Arc::new(AtomicBool::new(true));
    let stop = exactly(4).with_cancel(flag);
    let mut g = Generator::new(&mut s, &tokenizer, &prompt, greedy, stop).unwrap();
    let steps = run_all(&model, &mut cpu, &mut g);
    assert_eq!(steps.len(), 1);
    assert_eq!(stopped(&steps), StopReason::Cancelled);
    assert_eq!(g.timings().prefill, std::time::Duration::ZERO);

    // Cancelled after two tokens.
    let flag = Arc::new(AtomicBool::new(false));
    let stop = exactly(4).with_cancel(flag.clone());
    let mut g = Generator::new(&mut s, &tokenizer, &prompt, greedy, stop).unwrap();
    assert_eq!(g.next_token(&model, &mut cpu).unwrap(), Some(free[0]));
    assert_eq!(g.next_token(&model, &mut cpu).unwrap(), Some(free[1]));
    flag.store(true, Ordering::Relaxed);
    assert_eq!(g.next_token(&model, &mut cpu).unwrap(), None);
    assert_eq!(g.stop_reason(), Some(StopReason::Cancelled));

    // A full context: the prompt and two decoded tokens fill it.
    let mut small = session(&model, &mut cpu, prompt.len() + 2, 512);
    let mut g = Generator::new(&mut small, &tokenizer, &prompt, greedy, exactly(10)).unwrap();
    let steps = run_all(&model, &mut cpu, &mut g);
    assert_eq!(ids(&steps), free[..3]);
    assert_eq!(stopped(&steps), StopReason::ContextFull);

    // No tokens asked: a prefill only.
    let mut g = Generator::new(&mut s, &tokenizer, &prompt, greedy, exactly(0)).unwrap();
    let steps = run_all(&model, &mut cpu, &mut g);
    assert_eq!(steps.len(), 1);
    assert_eq!(stopped(&steps), StopReason::MaxTokens);
    assert_eq!(g.timings().generated_tokens, 0);
    assert!(g.timings().prefill > std::time::Duration::ZERO);
}

#[test]
fn the_step_iterator_yields_what_step_does_and_ends_at_an_error() {
    let (model, mut cpu, tokenizer) = fixture();
    let prompt = tokenizer.encode("Once upon a time", true, true);
    let greedy = SamplerConfig::greedy();
    let mut s = session(&model, &mut cpu, 256, 2);
    let mut g = Generator::new(&mut s, &tokenizer, &prompt, greedy, exactly(5)).unwrap();
    let want = run_all(&model, &mut cpu, &mut g);
    // A fresh session: the first one caches the prompt, so its steps would differ.
    let mut s = session(&model, &mut cpu, 256, 2);
    let mut g = Generator::new(&mut s, &tokenizer, &prompt, greedy, exactly(5)).unwrap();
    let got: Vec<Step> = g.steps(&model, &mut cpu).collect::<Result<_, _>>().unwrap();
    assert_eq!(got, want);

    // A token outside the vocabulary fails the prefill; the iterator stops there.
    let bad = [tokenizer.vocab_size() as u32];
    let mut g = Generator::new(&mut s, &tokenizer, &bad, greedy, exactly(5)).unwrap();
    let mut steps = g.steps(&model, &mut cpu);
    assert!(matches!(steps.next(), Some(Err(_))));
    assert!(steps.next().is_none());
}

#[test]
fn prompts_that_cannot_run_are_refused_up_front() {
    let (model, mut cpu, tokenizer) = fixture();
    let greedy = SamplerConfig::greedy();
    let mut s = session(&model, &mut cpu, 8, 512);
    let err = Generator::new(&mut s, &tokenizer, &[1; 9], greedy, exactly(1))
        .err()
        .unwrap();
    assert!(err.to_string().contains("--ctx"), "{err}");
    assert!(Generator::new(&mut s, &tokenizer, &[], greedy, exactly(1)).is_err());
    let bad = SamplerConfig {
        temperature: -1.0,
        ..greedy
    };
    assert!(Generator::new(&mut s, &tokenizer, &[1], bad, exactly(1)).is_err());
}

#[test]
fn without_a_tokenizer_the_same_tokens_come_with_empty_text() {
    let (model, mut cpu, tokenizer) = fixture();
    let prompt = tokenizer.encode("Once upon a time", true, true);
    let greedy = SamplerConfig::greedy();
    let mut s = session(&model, &mut cpu, 256, 4);
    let mut g = Generator::new(&mut s, &tokenizer, &prompt, greedy, exactly(6)).unwrap();
    let with_text = run_all(&model, &mut cpu, &mut g);
    let mut s = session(&model, &mut cpu, 256, 4);
    let mut g = Generator::new(&mut s, None, &prompt, greedy, exactly(6)).unwrap();
    let ids_only = run_all(&model, &mut cpu, &mut g);
    assert_eq!(ids(&ids_only), ids(&with_text));
    assert_eq!(ids_only.len(), with_text.len());
    for step in &ids_only {
        match step {
            Step::Token { text, .. } | Step::Stopped { text, .. } => assert!(text.is_empty()),
            Step::Prefill { .. } => {}
        }
    }
}

#[test]
fn generations_decoded_together_equal_each_alone() {
    let (model, mut cpu, tokenizer) = fixture();
    check_decoded_together_equal_each_alone(&model, &mut cpu, &tokenizer, 3);
}

/// qwen35moe too: its Gated DeltaNet layers run each row on its own sequence's state
/// (`Backend::delta_net_batch`), four prompts of three lengths at different positions.
#[test]
fn qwen35moe_generations_decoded_together_equal_each_alone() {
    let seed = moetile_tests::seed("tiny qwen35moe");
    let file = GgufFile::from_bytes(moetile_tests::tiny_qwen35moe(seed)).unwrap();
    let mut cpu = CpuBackend::new();
    let model = Model::load(&file, &mut cpu, &mut |_| {}).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    check_decoded_together_equal_each_alone(&model, &mut cpu, &tokenizer, 4);
}
