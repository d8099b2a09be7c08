//! Bind groups are made once and reused: a decode step binds the same buffers as the one before
//! (weights, KV cache, parameter chunks, and pooled scratch buffers, which the pool hands out in
//! a fixed order, and the RoPE angle table, which covers positions from 0), so in steady state
//! it creates only the group of the one input uploaded fresh every step (the token ids),
//! however many layers the model has; and a new session forgets the groups of the last one,
//! which would otherwise keep its KV cache (and a dropped model's weights) alive.

mod common;

use moetile::RuntimeConfig;
use moetile::session::Session;

#[test]
fn decode_steps_reuse_bind_groups_and_a_new_session_forgets_them() {
    let Some(ctx) = common::shared_ctx() else {
        return;
    };
    let (mut gpu, model) = common::mat_vec_model(ctx, 3);
    let mut session = common::prefilled_session(&model, &mut gpu, &[1, 2, 3, 4]);
    // The first steps after the prefill find other buffers free than later ones do.
    for token in 5..8 {
        session.decode(&model, &mut gpu, token).unwrap();
    }
    let warm = ctx.cached_bind_groups();
    assert!(warm > 0, "no bind group was cached");
    let steps = 4;
    for token in 8..8 + steps {
        session.decode(&model, &mut gpu, token).unwrap();
    }
    let created = ctx.cached_bind_groups() - warm;
    assert!(
        created <= steps as usize,
        "{created} bind groups created in {steps} steady decode steps (at most 1 a step: the \
         token ids')"
    );
    drop(session);
    let config = RuntimeConfig {
        ctx: Some(64),
        ..RuntimeConfig::default()
    };
    let _session = Session::new(&model, &mut gpu, &config).unwrap();
    assert_eq!(
        ctx.cached_bind_groups(),
        0,
        "a new session kept the bind groups of the last one (and so its KV cache)"
    );
}
