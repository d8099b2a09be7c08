//! Sequences decoded together on the GPU (`WgpuBackend::attention_batch`: one pass per step,
//! attention per row over its own cache; qwen35moe's DeltaNet per row over its own state,
//! `delta_net_batch`) generate what each generates alone, with every buffer the backend hands a
//! kernel poisoned with NaN first. Runs on lavapipe in CI; `MOETILE_REQUIRE_GPU=1` makes a
//! missing adapter a failure.
//!
//! The model's seed is fresh each run and printed (`MOETILE_TEST_SEED` reproduces one).

use moetile::gguf::GgufFile;
use moetile::model::Model;
use moetile::tokenizer::Tokenizer;
use moetile_tests::batch::check_decoded_together_equal_each_alone;
use moetile_wgpu::{BackendOptions, WgpuBackend, WgpuContext};

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
