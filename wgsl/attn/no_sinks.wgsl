// Attention without sinks: the softmax is over the keys alone.
// Defines: sink_score(h), MASKED (never enters a sum).

fn sink_score(h: u32) -> f32 {
    return MASKED;
}
