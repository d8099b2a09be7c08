// hc_pre's weights for the output head: its mixes are the pre ones only (N_MIXES == HC).
// Expects: pre_of (hc_pre.wgsl).
// Defines: token_weights.

const_assert N_MIXES == HC;

fn token_weights(t: u32, inv_rms: f32) -> vec4<f32> {
    return pre_of(t, inv_rms);
}
