//! Shared helpers of moetile's tests (the cross-crate ones in `tests/tests/` and those of the
//! backends and examples): fixture paths, golden logit files, test seeds, tiny synthetic models,
//! greedy generations decoded alone and together, a fixture model's prompt logits and greedy
//! generation (`whole_model`), and the rule for a missing GPU.
//!
//! The fixtures are tiny MoE models made by the oracle tools, each with the logits of an exact
//! float64 reference and of llama.cpp on its prompt:
//!
//! ```
//! use moetile_tests::{golden::Golden, model_fixture};
//!
//! let (model, reference, _llama) = model_fixture("qwen2moe-small-f32");
//! assert!(model.exists());
//! let golden = Golden::read(&reference)?;
//! assert_eq!(golden.logits.len(), golden.tokens.len() * golden.n_vocab);
//! # Ok::<(), anyhow::Error>(())
//! ```

#![deny(missing_docs)]

pub mod batch;
pub mod golden;
pub mod rewrite;
pub mod whole_model;

use std::path::PathBuf;

use moetile::synth::{Mix, Preset, Synth};

/// `tests/fixtures/` of this repository.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The whole-model fixture `NAME.gguf` and its golden files `NAME.ref.golden` (exact float64
/// reference) and `NAME.llama.golden` (llama.cpp's logits).
pub fn model_fixture(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = fixtures().join("models");
    (
        dir.join(format!("{name}.gguf")),
        dir.join(format!("{name}.ref.golden")),
        dir.join(format!("{name}.llama.golden")),
    )
}

/// The seed of a randomized test: `MOETILE_TEST_SEED` if set, else the clock. Printed with
/// `what` it names, so a failure reproduces.
pub fn seed(what: &str) -> u64 {
    let seed = std::env::var("MOETILE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{what}: MOETILE_TEST_SEED={seed} reproduces");
    seed
}

/// The tests' tiny random-weight model of `seed` as GGUF bytes: the `tiny-qwen3moe` preset
/// with 2 layers, Q8_0 weights.
///
/// # Panics
/// If synthesis fails (a bug in `moetile::synth`).
pub fn tiny_model(seed: u64) -> Vec<u8> {
    let preset = Preset::by_name("tiny-qwen3moe")
        .and_then(|p| p.with_layers(2))
        .expect("the tiny-qwen3moe preset takes 2 layers");
    synthesize(preset, seed)
}

/// The tiny random-weight qwen35moe of `seed` as GGUF bytes: the `tiny-qwen35moe` preset (3
/// Gated DeltaNet layers and a gated attention layer), Q8_0 weights.
///
/// # Panics
/// If synthesis fails (a bug in `moetile::synth`).
pub fn tiny_qwen35moe(seed: u64) -> Vec<u8> {
    let preset = Preset::by_name("tiny-qwen35moe").expect("the tiny-qwen35moe preset exists");
    synthesize(preset, seed)
}

/// Harmony's tags, which gpt-oss vocabularies hold as control tokens.
pub const HARMONY_TAGS: [&str; 7] = [
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|constrain|>",
    "<|return|>",
    "<|call|>",
];

/// The tiny random-weight gpt-oss of `seed` as GGUF bytes, with a gpt-oss file's text side:
/// the `tiny-gptoss` preset with 2 layers, Q8_0 weights, its vocabulary grown by harmony's
/// tags as control tokens (the synthetic vocabulary has none) and gpt-oss's chat template
/// (`fixtures/chat/gpt-oss.jinja`), so the model is served and chatted with as gpt-oss is.
///
/// # Panics
/// If synthesis fails (a bug in `moetile::synth`) or the template fixture is missing.
pub fn tiny_gptoss_harmony(seed: u64) -> Vec<u8> {
    use moetile::gguf::{Array, GgufFile, Value};
    let tiny = Preset::by_name("tiny-gptoss")
        .and_then(|p| p.with_layers(2))
        .expect("the tiny-gptoss preset takes 2 layers");
    let n_real = tiny.n_vocab;
    let preset = Preset {
        n_vocab: n_real + HARMONY_TAGS.len(),
        ..tiny
    };
    let file = GgufFile::from_bytes(synthesize(preset, seed)).expect("a synthetic GGUF");
    let template = std::fs::read_to_string(fixtures().join("chat/gpt-oss.jinja"))
        .expect("fixtures/chat/gpt-oss.jinja");
    let control = moetile::tokenizer::TokenType::Control.code();
    rewrite::rewrite_to_bytes(
        &file,
        |key, value| {
            Some(match key {
                "tokenizer.ggml.tokens" => {
                    let mut tokens = value.as_str_array().expect("token texts").to_vec();
                    tokens.truncate(n_real);
                    tokens.extend(HARMONY_TAGS.map(String::from));
                    Value::Array(Array::String(tokens))
                }
                "tokenizer.ggml.token_type" => {
                    let mut types = value.as_i32_array().expect("token types").to_vec();
                    types.truncate(n_real);
                    types.extend([control; HARMONY_TAGS.len()]);
                    Value::Array(Array::I32(types))
                }
                "tokenizer.chat_template" => Value::String(template.clone()),
                _ => value.clone(),
            })
        },
        &[],
        |_| {},
    )
}

/// The tiny random-weight deepseek4 of `seed` as GGUF bytes: the `tiny-ds4` preset (4 layers:
/// two without compression, one of ratio 4 with the indexer, one of ratio 128; window 32),
/// Q8_0 weights.
///
/// # Panics
/// If synthesis fails (a bug in `moetile::synth`).
pub fn tiny_ds4(seed: u64) -> Vec<u8> {
    let preset = Preset::by_name("tiny-ds4").expect("the tiny-ds4 preset exists");
    synthesize(preset, seed)
}

fn synthesize(preset: Preset, seed: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    Synth::new(preset, Mix::Q8_0, seed)
        .write_to(&mut bytes, &mut |_, _| {})
        .expect("synthesizing the tiny model");
    bytes
}

/// What a GPU test does when it finds no GPU (`why`): fails under `MOETILE_REQUIRE_GPU=1` (as
/// CI runs, so a missing adapter is never a silent pass), else says that it skips.
///
/// # Panics
/// Under `MOETILE_REQUIRE_GPU=1`.
pub fn skip_without_gpu(why: &dyn std::fmt::Display) {
    if std::env::var("MOETILE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("MOETILE_REQUIRE_GPU=1 but {why}");
    }
    eprintln!("skipping GPU test: {why}");
}

/// The default adapter's context, created once per test binary and shared by its tests;
/// `None` (after [`skip_without_gpu`]) when there is none.
pub fn gpu_context() -> Option<std::sync::Arc<moetile_wgpu::WgpuContext>> {
    use std::sync::{Arc, OnceLock};
    static CTX: OnceLock<Option<Arc<moetile_wgpu::WgpuContext>>> = OnceLock::new();
    CTX.get_or_init(|| {
        let options = moetile_wgpu::ContextOptions::from_env();
        match options.and_then(|o| moetile_wgpu::WgpuContext::new(&o)) {
            Ok(ctx) => {
                eprintln!("GPU tests on {}", ctx.profile().describe());
                Some(Arc::new(ctx))
            }
            Err(e) => {
                skip_without_gpu(&format_args!("no device: {e}"));
                None
            }
        }
    })
    .clone()
}
