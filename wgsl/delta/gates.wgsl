// The per-token gates of a Gated DeltaNet value head, from its projection row
// [qkv | z | beta | alpha]: `p` is the row's offset of beta (row start + channels + values).
// Expects: `params: DeltaParams`, `proj`, `dt_bias`, `decay_rate`.
// Defines: head_log_decay, head_beta.

// ln of the head's state decay: softplus(alpha + dt_bias) * decay_rate (<= 0), softplus being
// the input itself above 20 as ggml cuts it.
fn head_log_decay(p: u32, h: u32) -> f32 {
    let v = proj[p + params.n_v_heads + h] + dt_bias[h];
    var softplus = v;
    if v <= 20.0 {
        softplus = log(1.0 + exp(v));
    }
    return softplus * decay_rate[h];
}

// The head's write strength: sigmoid(beta).
fn head_beta(p: u32, h: u32) -> f32 {
    return 1.0 / (1.0 + exp(-proj[p + h]));
}
