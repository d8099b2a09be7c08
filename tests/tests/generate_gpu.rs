//! Sequences decoded together on the GPU (`WgpuBackend::attention_batch`: one pass per step,
//! attention per row over its own cache) generate what each generates alone, with every buffer
//! the backend hands a kernel poisoned with NaN first. Runs on lavapipe in CI;
//! `MOETILE_REQUIRE_GPU=1` makes a missing adapter a failure.
//!
//! The model's seed is fresh each run and printed (`MOETILE_TEST_SEED` reproduces one).

use moetile::gguf::GgufFile;
use moetile::model::Model;
use moetile::tokenizer::Tokenizer;
use moetile_tests::batch::check_decoded_together_equal_each_alone;
use moetile_wgpu::{BackendOptions, WgpuBackend};

/// Equal tokens, not close logits: three rows stay within one dense-matmul path (mat-vec or
/// tiled, per device) whose rows do not depend on each other, and attention runs the same
/// one-token kernels per row as alone, so batching changes no arithmetic.
#[test]
fn gpu_generations_decoded_together_equal_each_alone() {
    let Some(ctx) = moetile_tests::gpu_context() else {
        return;
    };
    let seed = moetile_tests::seed("tiny model");
    let file = GgufFile::from_bytes(moetile_tests::tiny_model(seed)).unwrap();
    let options = BackendOptions {
        poison: true,
        ..BackendOptions::for_device(&ctx)
    };
    let mut gpu = WgpuBackend::with_options(ctx, options).unwrap();
    let model = Model::load(&file, &mut gpu, &mut |_| {}).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    check_decoded_together_equal_each_alone(&model, &mut gpu, &tokenizer);
}
