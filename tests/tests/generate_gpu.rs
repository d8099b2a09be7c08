//! Sequences decoded together on the GPU (`WgpuBackend::attention_batch`: one pass per step,
//! attention of all rows in one set of dispatches over the regions of one KV arena, or per row
//! over caches of their own; qwen35moe's DeltaNet per row over its own state,
//! `delta_net_batch`) generate what each generates alone, with every buffer the backend hands a
//! kernel poisoned with NaN first. Runs on lavapipe in CI; `MOETILE_REQUIRE_GPU=1` makes a
//! missing adapter a failure.
//!
//! The model's seed is fresh each run and printed (`MOETILE_TEST_SEED` reproduces one).

use moetile::RuntimeConfig;
use moetile::gguf::GgufFile;
use moetile::model::{Logits, Model};
use moetile::session::Session;
use moetile::tokenizer::Tokenizer;
use moetile_tests::batch::check_decoded_together_equal_each_alone;
use moetile_wgpu::{BackendOptions, WgpuBackend, WgpuContext};

/// Sequences whose caches are regions of one KV arena (`Session::group`, as the server's
/// slots), at different positions (an empty-but-one prompt, one on each side of the 32-position
/// decode chunk), decoded together in the exact configuration (f32 cache): every step's logits
/// equal, bit for bit, those of the same sequences in caches of their own decoded together
/// (attention per row), and are within f32 rounding of each decoded alone (NMSE <= 1e-10,
/// same argmax). Buffers start poisoned.
#[test]
fn arena_sequences_decoded_together_equal_each_alone_bit_for_bit() {
    let Some(ctx) = moetile_tests::gpu_context() else {
        return;
    };
    let seed = moetile_tests::seed("tiny model");
    let file = GgufFile::from_bytes(moetile_tests::tiny_model(seed)).unwrap();
    let options = BackendOptions {
        poison: true,
        ..BackendOptions::exact()
    };
    let mut gpu = WgpuBackend::with_options(ctx, options).unwrap();
    let model = Model::load(&file, &mut gpu, &mut |_| {}).unwrap();
    let n_vocab = model.config.n_vocab as u32;
    let config = RuntimeConfig {
        ctx: Some(64),
        chunk: 16,
        ..RuntimeConfig::default()
    };
    let lens = [1, 31, 33, 7];
    let prompt = |i: usize, len: usize| -> Vec<u32> {
        (0..len as u32)
            .map(|j| (j * 7 + 3 * i as u32 + 1) % n_vocab)
            .collect()
    };
    let mut arena = Session::group(&model, &mut gpu, &config, lens.len()).unwrap();
    let mut own: Vec<_> = lens
        .iter()
        .map(|_| Session::new(&model, &mut gpu, &config).unwrap())
        .collect();
    let mut alone: Vec<_> = lens
        .iter()
        .map(|_| Session::new(&model, &mut gpu, &config).unwrap())
        .collect();
    for (i, &len) in lens.iter().enumerate() {
        for s in [&mut arena[i], &mut own[i], &mut alone[i]] {
            s.prefill(&model, &mut gpu, &prompt(i, len), Logits::Last)
                .unwrap();
        }
    }
    for step in 0..3u32 {
        let tokens: Vec<u32> = (0..lens.len() as u32)
            .map(|i| (5 * i + 11 * step + 2) % n_vocab)
            .collect();
        let mut sessions: Vec<_> = arena.iter_mut().collect();
        let together = Session::decode_batch(&model, &mut gpu, &mut sessions, &tokens).unwrap();
        let mut sessions: Vec<_> = own.iter_mut().collect();
        let per_row = Session::decode_batch(&model, &mut gpu, &mut sessions, &tokens).unwrap();
        let each: Vec<Vec<f32>> = alone
            .iter_mut()
            .zip(&tokens)
            .map(|(s, &t)| s.decode(&model, &mut gpu, t).unwrap())
            .collect();
        let bits = |rows: &[Vec<f32>]| -> Vec<Vec<u32>> {
            rows.iter()
                .map(|r| r.iter().map(|v| v.to_bits()).collect())
                .collect()
        };
        assert!(
            bits(&together) == bits(&per_row),
            "step {step}: the arena's logits differ from caches of their own"
        );
        // Alone, a token's other ops (the MoE's mat-vecs over one token's experts) sum in
        // another order than in a batch of four, so alone is close, not equal.
        let a =
            moetile_tests::golden::agreement(&together.concat(), &each.concat(), n_vocab as usize);
        println!("step {step}: together vs alone {a:?}");
        assert!(
            a.top1 == 1.0 && a.max_row_nmse <= 1e-10,
            "step {step}: {a:?}"
        );
    }
}

/// Equal tokens, not close logits: three rows stay within one dense-matmul path (mat-vec or
/// tiled, per device) whose rows do not depend on each other, and attention runs the same
/// one-token kernels per row as alone, so batching changes no arithmetic.
#[test]
fn gpu_generations_decoded_together_equal_each_alone() {
    check_on_gpu(moetile_tests::tiny_model, BackendOptions::for_device, 3);
}

/// qwen35moe the same way: its Gated DeltaNet runs the same one-token kernels per row (on its
/// row of the batch, over its own sequence's state) as alone.
#[test]
fn gpu_qwen35moe_generations_decoded_together_equal_each_alone() {
    check_on_gpu(moetile_tests::tiny_qwen35moe, BackendOptions::for_device, 4);
}

/// In the exact configuration a token alone takes the f32 mat-vecs and 32 rows together the
/// tiled matmuls (past the 24 rows up to which GPUs' defaults keep the mat-vecs): the sums run
/// in another order, yet no greedy token may change.
#[test]
fn thirty_two_rows_decoded_together_in_the_exact_configuration_equal_each_alone() {
    check_on_gpu(moetile_tests::tiny_model, |_| BackendOptions::exact(), 32);
}

/// [`check_decoded_together_equal_each_alone`] for `rows` prompts on the default adapter over
/// the tiny model `model` makes of a seed, with the backend options `options` gives, every
/// buffer poisoned with NaN first.
fn check_on_gpu(
    model: fn(u64) -> Vec<u8>,
    options: impl FnOnce(&WgpuContext) -> BackendOptions,
    rows: usize,
) {
    let Some(ctx) = moetile_tests::gpu_context() else {
        return;
    };
    let seed = moetile_tests::seed("tiny model");
    let file = GgufFile::from_bytes(model(seed)).unwrap();
    let options = BackendOptions {
        poison: true,
        ..options(&ctx)
    };
    let mut gpu = WgpuBackend::with_options(ctx, options).unwrap();
    let model = Model::load(&file, &mut gpu, &mut |_| {}).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    check_decoded_together_equal_each_alone(&model, &mut gpu, &tokenizer, rows);
}
