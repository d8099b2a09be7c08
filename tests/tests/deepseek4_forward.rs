//! deepseek4's forward graph (`moetile::model::deepseek4`, written against `Backend`) on the
//! CPU backend, against the whole-model float64 reference and its golden at every position of
//! the fixture's 300-token prompt (past the raw window, both compression ratios and the
//! indexer's top-k: README-deepseek4.md in the fixtures), fed in one shot, in chunks and a
//! token at a time, and several sequences decoded in one pass.
//!
//! The graph rounds every op's output to f32 where the reference keeps f64 through a layer, so
//! the two differ by f32 rounding through ~20 ops per layer: measured NMSE 4.9e-14 (F32), 4.4e-14
//! (Q8_0), 5.0e-14 (simulation on), max |diff| 2.2e-6; bound 1e-12, top-1 equal everywhere. Chunking does not change what any op computes for a
//! token (the ops act per row; attention is the reference's, bit-equal under any chunking), so
//! chunked and one-shot logits must be equal bit for bit.

use moetile::RuntimeConfig;
use moetile::gguf::GgufFile;
use moetile::model::{Logits, Model};
use moetile::session::Session;
use moetile_cpu::CpuBackend;
use moetile_cpu::deepseek4::{Compression, Deepseek4Options, Deepseek4Reference};
use moetile_tests::batch::{deepseek4_straddling, logits_together_and_alone};
use moetile_tests::golden::{Golden, agreement};
use moetile_tests::model_fixture;

const F32: &str = "deepseek4-tiny-f32";
const Q8_0: &str = "deepseek4-tiny-q8_0";

/// The NMSE bound against the float64 reference (see the module docs).
const NMSE: f64 = 1e-12;

fn open(name: &str) -> (GgufFile, Golden) {
    let (model, reference, _) = model_fixture(name);
    (
        GgufFile::open(&model).unwrap(),
        Golden::read(&reference).unwrap(),
    )
}

fn config(chunk: usize, qat_sim: bool) -> RuntimeConfig {
    RuntimeConfig {
        chunk,
        qat_sim,
        ..RuntimeConfig::default()
    }
}

/// Every position's logits of `tokens`, prefilled in chunks of `chunk`.
fn prefill(file: &GgufFile, tokens: &[u32], chunk: usize, qat_sim: bool) -> Vec<f32> {
    let mut cpu = CpuBackend::new();
    let model = Model::load(file, &mut cpu, &mut |_| {}).unwrap();
    let mut session = Session::new(&model, &mut cpu, &config(chunk, qat_sim)).unwrap();
    session
        .prefill(&model, &mut cpu, tokens, Logits::All)
        .unwrap()
}

fn matches_reference(name: &str) {
    let (file, golden) = open(name);
    let got = prefill(&file, &golden.tokens, 512, false);
    let a = agreement(&got, &golden.logits, golden.n_vocab);
    println!("{name}: forward graph on the CPU backend vs float64 reference: {a:?}");
    assert!(a.nmse <= NMSE && a.top1 == 1.0, "{name}: {a:?}");
}

#[test]
fn f32_forward_graph_matches_the_reference() {
    matches_reference(F32);
}

#[test]
fn q8_0_forward_graph_matches_the_reference() {
    matches_reference(Q8_0);
}

/// With the simulation on (the default), against the reference with it on: the same bound.
#[test]
fn qat_sim_forward_graph_matches_the_reference() {
    let (file, golden) = open(F32);
    let got = prefill(&file, &golden.tokens, 512, true);
    let reference = Deepseek4Reference::load(&file, Deepseek4Options { qat_sim: true })
        .unwrap()
        .logits(&golden.tokens)
        .unwrap();
    let a = agreement(&got, &reference, golden.n_vocab);
    println!("qat_sim on: forward graph vs reference: {a:?}");
    assert!(a.nmse <= NMSE && a.top1 == 1.0, "{a:?}");
    let off = agreement(&got, &golden.logits, golden.n_vocab);
    println!("qat_sim on vs off (llama.cpp's graph): {off:?}");
    assert!(off.nmse > 0.0, "the simulation changed nothing");
}

/// Chunks of 1, 7, 64 and 300 tokens cut the prompt across the window (128) and every
/// compressor block boundary in different places; each gives the one-shot logits bit for bit.
#[test]
fn chunked_prefill_equals_one_shot() {
    let (file, golden) = open(F32);
    let one_shot = prefill(&file, &golden.tokens, 512, true);
    for chunk in [1, 7, 64] {
        let got = prefill(&file, &golden.tokens, chunk, true);
        assert!(got == one_shot, "chunks of {chunk} differ from one shot");
    }
}

/// A prefill of 250 tokens then 50 decode steps give the one-shot logits of those positions
/// bit for bit (past the second ratio-128 block at 255).
#[test]
fn decode_after_prefill_equals_one_shot() {
    let (file, golden) = open(F32);
    let tokens = &golden.tokens;
    let n_vocab = golden.n_vocab;
    let one_shot = prefill(&file, tokens, 512, true);
    let mut cpu = CpuBackend::new();
    let model = Model::load(&file, &mut cpu, &mut |_| {}).unwrap();
    let mut session = Session::new(&model, &mut cpu, &config(512, true)).unwrap();
    let split = 250;
    let last = session
        .prefill(&model, &mut cpu, &tokens[..split], Logits::Last)
        .unwrap();
    assert!(last == one_shot[(split - 1) * n_vocab..split * n_vocab]);
    for (t, &token) in tokens.iter().enumerate().skip(split) {
        let got = session.decode(&model, &mut cpu, token).unwrap();
        assert!(
            got == one_shot[t * n_vocab..(t + 1) * n_vocab],
            "decoded position {t} differs from one shot"
        );
    }
}

/// The cache cannot go back to a position between its start and its end: a session keeps
/// all it holds or nothing (a chat's shared prefix is recomputed, then the logits are those of
/// a fresh session), and the forward pass asked to resume anywhere but where the sequence
/// stopped is refused, naming both positions.
#[test]
fn a_cache_that_cannot_rewind_keeps_all_or_nothing() {
    let (file, golden) = open(F32);
    let tokens = &golden.tokens[..20];
    let mut cpu = CpuBackend::new();
    let model = Model::load(&file, &mut cpu, &mut |_| {}).unwrap();
    assert!(!model.config.cache_rewinds());
    let mut session = Session::new(&model, &mut cpu, &config(512, true)).unwrap();
    let first = session
        .prefill(&model, &mut cpu, tokens, Logits::All)
        .unwrap();
    // A prompt sharing 10 tokens reuses none of them; one extending the cache reuses it all.
    let mut other = tokens[..10].to_vec();
    other.extend([5, 6]);
    assert_eq!(session.reusable_prefix(&other), 0);
    let mut longer = tokens.to_vec();
    longer.push(7);
    assert_eq!(session.reusable_prefix(&longer), 20);
    session.truncate(10);
    assert!(session.tokens().is_empty());
    let again = session
        .prefill(&model, &mut cpu, tokens, Logits::All)
        .unwrap();
    assert!(again == first);

    let mut kv = model.kv_cache(&mut cpu, 64, &config(512, true)).unwrap();
    let policy = moetile::tile::TilePolicy::Fixed(moetile::tile::TileWidth::T32);
    model
        .forward(&mut cpu, &mut kv, tokens, 0, &policy, Logits::Last)
        .unwrap();
    let err = model
        .forward(&mut cpu, &mut kv, &tokens[10..], 10, &policy, Logits::Last)
        .expect_err("resumed at 10")
        .to_string();
    assert!(err.contains("\"10\"") && err.contains("20 (where"), "{err}");
}

/// The generation loop `moetile run --temp 0` drives (a greedy `Generator` over a session)
/// picks llama.cpp's 32 ids after the first 250 prompt ids on the F32 model with the
/// simulation off (`deepseek4-tiny-f32.greedy.llama.golden`; llama.cpp's smallest gap between
/// its pick and the runner-up is 1.0e-2, far above the graph's f32 rounding).
#[test]
fn greedy_generation_equals_llama_cpp() {
    use moetile::generate::{Generator, StopConditions};
    use moetile::sample::SamplerConfig;

    let (file, golden) = open(F32);
    let want = Golden::read(
        &moetile_tests::fixtures().join("models/deepseek4-tiny-f32.greedy.llama.golden"),
    )
    .unwrap();
    let mut cpu = CpuBackend::new();
    let model = Model::load(&file, &mut cpu, &mut |_| {}).unwrap();
    let mut session = Session::new(&model, &mut cpu, &config(512, false)).unwrap();
    let stop = StopConditions {
        max_tokens: want.tokens.len(),
        ..StopConditions::default()
    };
    let prompt = &golden.tokens[..250];
    let mut generator =
        Generator::new(&mut session, None, prompt, SamplerConfig::greedy(), stop).unwrap();
    let mut ids = Vec::new();
    while let Some(id) = generator.next_token(&model, &mut cpu).unwrap() {
        ids.push(id);
    }
    assert_eq!(ids, want.tokens, "greedy ids (ours, llama.cpp's)");
}

/// A `tiny-ds4` written by `moetile synth` in the original engine's q2 mix (IQ2_XXS gate/up,
/// Q2_K down, Q8_0 and F16 elsewhere; 16 experts of which 4 are used, layer 0 hash-routed, the
/// indexer keeping 8 rows) through the graph on the CPU backend, against the reference, both
/// simulations, 140 positions (past the 32-key window, the indexer's top-k and the first
/// ratio-128 row): routing and the indexer's choice now pick among candidates, and the graph's
/// f32 router logits (~1e-7 relative off the reference's) must pick as the reference does.
/// Measured NMSE 3.1e-14 (simulation on), 4.0e-14 (off), top-1 equal; bound as above.
#[test]
fn synthesized_q2_mix_graph_matches_the_reference() {
    use moetile::synth::{Mix, Preset, Synth};

    let mut bytes = Vec::new();
    let preset = Preset::by_name("tiny-ds4").unwrap();
    Synth::new(preset, Mix::Iq2XxsQ2K, 5)
        .write_to(&mut bytes, &mut |_, _| {})
        .unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    let tokens: Vec<u32> = (0..140u32).map(|i| (i * 37 + 11) % 500).collect();
    for qat_sim in [true, false] {
        let got = prefill(&file, &tokens, 48, qat_sim);
        let reference = Deepseek4Reference::load(&file, Deepseek4Options { qat_sim })
            .unwrap()
            .logits(&tokens)
            .unwrap();
        let a = agreement(&got, &reference, 512);
        println!("tiny-ds4 q2 mix, qat_sim {qat_sim}: graph vs reference: {a:?}");
        assert!(a.nmse <= NMSE && a.top1 == 1.0, "qat_sim {qat_sim}: {a:?}");
    }
}

/// The cache estimate at DeepSeek V4 Flash's shape (43 layers: two raw-window layers, then
/// ratio 4 and 128 alternating; 512-wide rows, a 128-token window, 128-wide indexer keys)
/// gives the original engine's figures in f32: ~52 MB at 2K positions, ~926 MB at 64K.
#[test]
fn cache_estimate_at_flash_shape_is_the_original_engines() {
    let (file, _) = open(F32);
    let mut cfg = moetile::model::ModelConfig::from_gguf(&file)
        .unwrap()
        .deepseek4
        .unwrap();
    cfg.n_layers = 43;
    cfg.head_dim = 512;
    cfg.sliding_window = 128;
    cfg.indexer_head_dim = 128;
    cfg.compression = (0..43)
        .map(|il| match il {
            0 | 1 => Compression::None,
            _ if il % 2 == 0 => Compression::Ratio4,
            _ => Compression::Ratio128,
        })
        .collect();
    let mb = |n_ctx| cfg.cache_size(n_ctx).bytes(4) as f64 / 1e6;
    let (short, long) = (mb(2048), mb(65536));
    println!("Flash cache: {short:.1} MB at 2K, {long:.1} MB at 64K");
    assert!((short - 52.0).abs() < 1.0, "{short}");
    assert!((long - 926.0).abs() < 2.0, "{long}");
    // Past the window, the raw keys stop growing: only compressed rows do.
    let size = cfg.cache_size(65536);
    assert_eq!(size.raw_window, 43 * 128 * 512);
    assert_eq!(size.compressed, 21 * 16384 * 512 + 20 * 512 * 512);
}

/// Four sequences decoded together (`Model::forward_batch`: every op on all four rows, the
/// attention sub-block each row on its own cache, `Backend::deepseek4_attention_batch`) give
/// the logits each gives decoded alone, bit for bit, with the simulation off and on: the
/// per-token ops act per row, and each row's attention is the one-token call alone makes.
#[test]
fn sequences_decoded_together_equal_each_alone() {
    let (file, golden) = open(F32);
    let mut cpu = CpuBackend::new();
    let model = Model::load(&file, &mut cpu, &mut |_| {}).unwrap();
    let (prompts, next) = deepseek4_straddling(&golden.tokens);
    for qat_sim in [false, true] {
        let config = config(512, qat_sim);
        let (together, alone) =
            logits_together_and_alone(&model, &mut cpu, &config, &prompts, &next);
        for (i, (together, alone)) in together.iter().zip(&alone).enumerate() {
            assert!(
                together == alone,
                "qat_sim {qat_sim}: sequence {i} (from position {}) decoded together differs \
                 from alone",
                prompts[i].len()
            );
        }
    }
}
