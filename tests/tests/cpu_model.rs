//! The CPU reference forward pass against the exact float64 reference (ref_forward.py on
//! gguf-py-dequantized weights) for every fixture model, at every position of a 285-token
//! prompt.
//!
//! Budget: the CPU backend stores activations in f32 and accumulates in f64, so its only error
//! is f32 rounding of each op's output: relative ~6e-8 per op over a few dozen ops, i.e. NMSE
//! around 1e-13. The bounds (1e-9 for F32 models, 1e-6 for quantized ones) leave room
//! for the quantized models' larger logits (weights are exact after dequantization, so the
//! bound is the same mechanism); a routing flip from rounding would blow far past them.

use moetile::RuntimeConfig;
use moetile::gguf::GgufFile;
use moetile::model::{Logits, Model};
use moetile::session::Session;
use moetile_cpu::CpuBackend;
use moetile_tests::golden::{Golden, agreement};
use moetile_tests::model_fixture;

fn check(name: &str, max_nmse: f64) {
    let (model_path, ref_path, _) = model_fixture(name);
    let file = GgufFile::open(&model_path).unwrap();
    let golden = Golden::read(&ref_path).unwrap();
    let mut cpu = CpuBackend::new();
    let model = Model::load(&file, &mut cpu, &mut |_| {}).unwrap();
    let config = RuntimeConfig {
        ctx: Some(512),
        chunk: 128,
        ..Default::default()
    };
    let mut session = Session::new(&model, &mut cpu, &config).unwrap();
    let logits = session
        .prefill(&model, &mut cpu, &golden.tokens, Logits::All)
        .unwrap();
    let a = agreement(&logits, &golden.logits, golden.n_vocab);
    println!("{name}: {a:?}");
    assert!(
        a.nmse <= max_nmse,
        "{name}: NMSE {:.3e} > {max_nmse:e} ({a:?})",
        a.nmse
    );
    assert_eq!(a.top1, 1.0, "{name}: top-1 disagreement ({a:?})");
}

#[test]
fn qwen3moe_f32_matches_float64_reference() {
    check("qwen3moe-small-f32", 1e-9);
}

#[test]
fn qwen3moe_f16_matches_float64_reference() {
    check("qwen3moe-small-f16", 1e-9);
}

#[test]
fn qwen2moe_f32_with_shared_expert_matches_float64_reference() {
    check("qwen2moe-small-f32", 1e-9);
}

#[test]
fn qwen3moe_q8_0_matches_float64_reference() {
    check("qwen3moe-small-q8_0", 1e-6);
}

#[test]
fn qwen3moe_q4_k_m_matches_float64_reference() {
    check("qwen3moe-kq-q4_k_m", 1e-6);
}

#[test]
fn qwen3moe_q2_k_matches_float64_reference() {
    check("qwen3moe-kq-q2_k", 1e-6);
}

#[test]
fn qwen3moe_iq2_xxs_matches_float64_reference() {
    check("qwen3moe-kq-iq2_xxs", 1e-6);
}

#[test]
fn qwen3moe_pure_q5_k_matches_float64_reference() {
    check("qwen3moe-kq-pure-q5_k", 1e-6);
}

#[test]
fn our_tokenizer_reproduces_the_fixture_prompt_tokens() {
    // The goldens' ids come from the HF tokenizer that trained the fixtures' vocabulary.
    let (model_path, ref_path, _) = model_fixture("qwen3moe-small-f32");
    let file = GgufFile::open(&model_path).unwrap();
    let tokenizer = moetile::tokenizer::Tokenizer::from_gguf(&file).unwrap();
    let prompt =
        std::fs::read_to_string(moetile_tests::fixtures().join("models/prompt.txt")).unwrap();
    let golden = Golden::read(&ref_path).unwrap();
    assert_eq!(tokenizer.encode(&prompt, false, false), golden.tokens);
}
