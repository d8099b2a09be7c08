//! Opt-in check on a real model: greedy generation must reproduce llama.cpp's greedy output.
//!
//! `MOETILE_MODEL=/path/to/model.gguf cargo test --release -p moetile-tests --test real_model
//! -- --ignored --nocapture`. The expectation is looked up in `tests/fixtures/real/*.json` by the
//! model's file name: llama.cpp's greedy text on a fixed prompt, run on an F32 copy of the model
//! (`llama-quantize --allow-requantize`), because on the quantized file llama.cpp quantizes
//! activations inside its matmuls, which flips near-ties (the fixture records that text and
//! where it departs, too). A divergence from the F32 text is accepted only at a near-tie in our
//! logits: the test prints the step and the logit gap.

use std::path::PathBuf;

use moetile::RuntimeConfig;
use moetile::generate::{Generator, StopConditions};
use moetile::gguf::GgufFile;
use moetile::model::{Backend, Logits, Model};
use moetile::sample::SamplerConfig;
use moetile::session::Session;
use moetile::tokenizer::Tokenizer;
use moetile_cpu::CpuBackend;

struct Expectation {
    prompt: String,
    n_predict: usize,
    text: String,
}

fn expectation(model: &std::path::Path) -> Expectation {
    let name = model.file_name().unwrap().to_string_lossy().to_string();
    let dir = moetile_tests::fixtures().join("real");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if v["model_file"] == name.as_str() {
            return Expectation {
                prompt: v["prompt"].as_str().unwrap().to_string(),
                n_predict: v["n_predict"].as_u64().unwrap() as usize,
                text: v["expected_text"].as_str().unwrap().to_string(),
            };
        }
    }
    panic!("no expectation for {name} in {}", dir.display());
}

/// Greedy-generates with `backend` and compares with llama.cpp's text; on divergence, reports
/// the logit gap between our choice and llama.cpp's token at that step.
fn greedy_matches_llama_cpp<B: Backend>(backend: &mut B) {
    let path = PathBuf::from(std::env::var("MOETILE_MODEL").expect("set MOETILE_MODEL"));
    let want = expectation(&path);
    let file = GgufFile::open(&path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let model = Model::load(&file, backend, &mut |_| {}).unwrap();
    let config = RuntimeConfig {
        ctx: Some(256),
        ..Default::default()
    };
    let mut session = Session::new(&model, backend, &config).unwrap();
    let prompt = tokenizer.encode(&want.prompt, true, false);
    let stop = StopConditions::new(want.n_predict, &tokenizer);
    let mut generator = Generator::new(
        &mut session,
        &tokenizer,
        &prompt,
        SamplerConfig::greedy(),
        stop,
    )
    .unwrap();
    let mut ours = Vec::new();
    while let Some(id) = generator.next_token(&model, backend).unwrap() {
        ours.push(id);
    }
    let text = tokenizer.decode(&ours);
    println!("{}: {:?}", backend.describe(), text);
    if text == want.text {
        return;
    }
    // Find the first token where llama.cpp's text departs and measure the gap there.
    let theirs = tokenizer.encode(&want.text, false, false);
    let step = ours.iter().zip(&theirs).take_while(|(a, b)| a == b).count();
    let mut session = Session::new(&model, backend, &config).unwrap();
    let mut context = prompt.clone();
    context.extend_from_slice(&ours[..step]);
    let logits = session
        .prefill(&model, backend, &context, Logits::Last)
        .unwrap();
    let (a, b) = (logits[ours[step] as usize], logits[theirs[step] as usize]);
    println!(
        "diverges at generated token {step}: ours {} ({a}), llama.cpp {} ({b})",
        ours[step], theirs[step]
    );
    assert!(
        (a - b).abs() < 0.05,
        "diverges at token {step} with a logit gap of {} (not a near-tie)\n ours: {text:?}\nwant: {:?}",
        a - b,
        want.text
    );
}

#[test]
#[ignore = "needs MOETILE_MODEL=/path/to/model.gguf with an expectation in tests/fixtures/real"]
fn real_model_greedy_matches_llama_cpp_on_cpu_reference() {
    greedy_matches_llama_cpp(&mut CpuBackend::new());
}

#[test]
#[ignore = "needs MOETILE_MODEL=/path/to/model.gguf with an expectation in tests/fixtures/real"]
fn real_model_greedy_matches_llama_cpp_on_gpu() {
    let Some(ctx) = moetile_tests::gpu_context() else {
        return;
    };
    greedy_matches_llama_cpp(&mut moetile_wgpu::WgpuBackend::new(ctx));
}
