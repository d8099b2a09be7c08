//! How many dispatch steps one decode step records on the mat-vec path (the path GPUs take
//! for decode-sized batches): the number the decode-speed work cuts, held here so that it
//! does not creep back up.

mod common;

use moetile::RuntimeConfig;
use moetile::gguf::GgufFile;
use moetile::model::{Logits, Model};
use moetile::session::Session;
use moetile_wgpu::{BackendOptions, WgpuBackend};

#[test]
fn a_decode_step_is_nine_dispatches_a_layer() {
    let Some(ctx) = common::shared_ctx() else {
        return;
    };
    // tiny-qwen3moe, 2 layers, every weight Q8_0: q, k and v stack into one tensor.
    let file = GgufFile::from_bytes(moetile_tests::tiny_model(5)).unwrap();
    let options = BackendOptions {
        mat_vec_max_tokens: 32,
        ..BackendOptions::for_device(ctx)
    };
    let mut gpu = WgpuBackend::with_options(ctx.clone(), options).unwrap();
    let model = Model::load(&file, &mut gpu, &mut |_| {}).unwrap();
    let config = RuntimeConfig {
        ctx: Some(64),
        ..RuntimeConfig::default()
    };
    let mut session = Session::new(&model, &mut gpu, &config).unwrap();
    session
        .prefill(&model, &mut gpu, &[1, 2, 3], Logits::Last)
        .unwrap();
    gpu.take_host_times();
    session.decode(&model, &mut gpu, 4).unwrap();
    let dispatches = gpu.take_host_times().dispatches;
    let layers = model.config.n_layers;
    // Per layer: q|k|v with the norm folded in, attn_input, attn_decode, attn_combine, the
    // output projection adding into x, the router with the norm folded in, route, mv_glu
    // (norm folded in), mv_sum (adding into x). Then the embedding and the head.
    assert_eq!(dispatches, 9 * layers + 2, "dispatch steps of one decode step");
}
