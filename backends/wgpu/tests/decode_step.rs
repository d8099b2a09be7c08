//! How many dispatch steps one decode step records on the mat-vec path (the path GPUs take
//! for decode-sized batches): the number the decode-speed work cuts, held here so that it
//! does not creep back up.

mod common;

#[test]
fn a_decode_step_is_nine_dispatches_a_layer() {
    let Some(ctx) = common::shared_ctx() else {
        return;
    };
    // Every weight Q8_0: q, k and v stack into one tensor.
    let (mut gpu, model) = common::mat_vec_model(ctx, 5);
    let mut session = common::prefilled_session(&model, &mut gpu, &[1, 2, 3]);
    gpu.take_host_times();
    session.decode(&model, &mut gpu, 4).unwrap();
    let dispatches = gpu.take_host_times().dispatches;
    let layers = model.config.n_layers;
    // Per layer: q|k|v with the norm folded in, attn_input, attn_decode, attn_combine, the
    // output projection adding into x, the router with the norm folded in, route, mv_glu
    // (norm folded in), mv_sum (adding into x). Then the embedding and the head.
    assert_eq!(
        dispatches,
        9 * layers + 2,
        "dispatch steps of one decode step"
    );
}
