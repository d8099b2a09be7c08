//! Greedy generations of several prompts decoded alone and together (`Session::decode_batch`:
//! one forward pass per step over a token of every sequence), on any backend, so each backend's
//! tests check that batching sequences changes no token; and the logits of given tokens decoded
//! alone and together, for tests that compare them value by value.

use moetile::RuntimeConfig;
use moetile::generate::{Generator, Step, StopConditions};
use moetile::model::{Backend, Logits, Model};
use moetile::sample::SamplerConfig;
use moetile::session::Session;
use moetile::tokenizer::Tokenizer;

/// Token ids, a list per prompt.
type PerPrompt = Vec<Vec<u32>>;

/// The logits of `next[i]` decoded one token a step after `prompts[i]` (a session of `config`
/// each; an empty prompt is a sequence that starts at its first decoded token): together, one
/// `Session::decode_batch` per step over a token of every sequence (every sequence gets
/// `next[0].len()` tokens), and alone, each sequence in a session of its own decoded by
/// itself. Returns `(together, alone)`, per sequence the logits of all its steps.
///
/// # Panics
/// If a step fails or the sequences get different numbers of tokens.
pub fn logits_together_and_alone<B: Backend>(
    model: &Model<B>,
    backend: &mut B,
    config: &RuntimeConfig,
    prompts: &[&[u32]],
    next: &[&[u32]],
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    assert_eq!(prompts.len(), next.len(), "a prompt per sequence");
    let steps = next.first().map_or(0, |n| n.len());
    assert!(next.iter().all(|n| n.len() == steps), "as many steps each");
    let prefilled = |backend: &mut B| -> Vec<Session<B>> {
        prompts
            .iter()
            .map(|prompt| {
                let mut s = Session::new(model, backend, config).unwrap();
                if !prompt.is_empty() {
                    s.prefill(model, backend, prompt, Logits::Last).unwrap();
                }
                s
            })
            .collect()
    };
    let mut sessions = prefilled(backend);
    let mut together = vec![Vec::new(); prompts.len()];
    for step in 0..steps {
        let tokens: Vec<u32> = next.iter().map(|n| n[step]).collect();
        let mut batch: Vec<&mut Session<B>> = sessions.iter_mut().collect();
        let logits = Session::decode_batch(model, backend, &mut batch, &tokens).unwrap();
        for (all, logits) in together.iter_mut().zip(logits) {
            all.extend(logits);
        }
    }
    let alone = prefilled(backend)
        .iter_mut()
        .zip(next)
        .map(|(s, next)| {
            next.iter()
                .flat_map(|&t| s.decode(model, backend, t).unwrap())
                .collect()
        })
        .collect();
    (together, alone)
}

/// The deepseek4 fixtures' 300-token prompt cut so that four sequences decoded together for
/// 4 steps stand on every boundary of the cache (README-deepseek4.md in the fixtures):
/// `(prompts, next)`, sequence i decoding `next[i]` after `prompts[i]`. Positions 0-3 start a
/// sequence and complete its first ratio-4 row (3); 12-15 reach the indexer's first picks
/// (15, more ratio-4 rows than its top 3); 125-128 complete the first ratio-128 row (127) and
/// start the raw window's slide (128); 253-256 complete the second ratio-128 row (255). Each
/// step's rows stand at four different positions, one past a boundary others have not reached.
///
/// # Panics
/// If `tokens` holds fewer than 257 ids.
pub fn deepseek4_straddling(tokens: &[u32]) -> ([&[u32]; 4], [&[u32]; 4]) {
    let starts = [0, 12, 125, 253];
    (
        starts.map(|s| &tokens[..s]),
        starts.map(|s| &tokens[s..s + 4]),
    )
}

/// Checks that 10 greedy steps from each of `rows` prompts, in sessions of 64 positions
/// prefilled in chunks of 16, give the same tokens alone (a generator per prompt, one after
/// another) and together (each generator prefills its prompt and samples its first token in
/// turn, then every later token of every sequence comes from one `Session::decode_batch` over
/// sessions from `Session::group`, as the server's slots).
///
/// # Panics
/// If a step fails or the tokens differ.
pub fn check_decoded_together_equal_each_alone<B: Backend>(
    model: &Model<B>,
    backend: &mut B,
    tokenizer: &Tokenizer,
    rows: usize,
) {
    let prompts = prompts(rows);
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let n = 10;
    let config = RuntimeConfig {
        ctx: Some(64),
        chunk: 16,
        ..RuntimeConfig::default()
    };
    let (alone, together) =
        greedy_alone_and_together(model, backend, tokenizer, &prompts, n, &config).unwrap();
    assert!(together.iter().all(|t| t.len() == n), "{together:?}");
    for (i, (alone, together)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(
            together, alone,
            "row {i} of {rows}, prompt {:?}",
            prompts[i]
        );
    }
}

/// `rows` prompts of three texts lengthened in turn, so the rows of a batch stand at
/// different positions of their caches.
fn prompts(rows: usize) -> Vec<String> {
    let texts = ["Once upon a time", "The quick brown fox", "1, 2, 3,"];
    (0..rows)
        .map(|i| format!("{}{}", texts[i % 3], " and".repeat(i / 3)))
        .collect()
}

/// The token ids of `n` greedy steps from each of `prompts` in sessions of `config`, alone and
/// together (see [`check_decoded_together_equal_each_alone`]): `(alone, together)`.
fn greedy_alone_and_together<B: Backend>(
    model: &Model<B>,
    backend: &mut B,
    tokenizer: &Tokenizer,
    prompts: &[&str],
    n: usize,
    config: &RuntimeConfig,
) -> anyhow::Result<(PerPrompt, PerPrompt)> {
    let prompts: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| tokenizer.encode(p, true, false))
        .collect();
    // Exactly n tokens, never stopping at an end token.
    let stop = || StopConditions {
        max_tokens: n,
        ..StopConditions::default()
    };
    let token = |step: Option<Step>| match step {
        Some(Step::Token { id, .. }) => Some(id),
        _ => None,
    };
    let mut alone = Vec::new();
    for prompt in &prompts {
        let mut s = Session::new(model, backend, config)?;
        let mut g = Generator::new(&mut s, tokenizer, prompt, SamplerConfig::greedy(), stop())?;
        let mut ids = Vec::new();
        while let Some(step) = g.step(model, backend)? {
            ids.extend(token(Some(step)));
        }
        alone.push(ids);
    }

    // As the server allocates its slots (on the wgpu backend, regions of one KV arena).
    let mut sessions = Session::group(model, backend, config, prompts.len())?;
    let mut generators = sessions
        .iter_mut()
        .zip(&prompts)
        .map(|(s, prompt)| Generator::new(s, tokenizer, prompt, SamplerConfig::greedy(), stop()))
        .collect::<moetile::Result<Vec<_>>>()?;
    let mut together = Vec::new();
    for g in &mut generators {
        // Prefill chunk by chunk, up to the first token.
        let first = loop {
            match g.step(model, backend)? {
                Some(Step::Prefill { .. }) => {}
                step => break token(step),
            }
        };
        together.push(Vec::from_iter(first));
    }
    while generators.iter().all(|g| g.pending_decode().is_some()) {
        let tokens: Vec<u32> = generators
            .iter()
            .filter_map(Generator::pending_decode)
            .collect();
        let logits = {
            let mut sessions: Vec<_> = generators.iter_mut().map(Generator::session_mut).collect();
            Session::decode_batch(model, backend, &mut sessions, &tokens)?
        };
        for ((g, logits), ids) in generators.iter_mut().zip(&logits).zip(&mut together) {
            ids.extend(token(Some(g.decoded(logits, std::time::Duration::ZERO))));
        }
    }
    Ok((alone, together))
}
