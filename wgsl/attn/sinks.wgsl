// Attention with learned per-head sinks (gpt-oss): query head h's softmax denominator also
// holds exp(sinks[h]), a logit with no value (so the weights of the keys sum to less than 1).
// Defines: binding 9 (sinks, f32 per query head); sink_score(h), in the kernels' base-2 units.

@group(0) @binding(9) var<storage, read> sinks: array<f32>;

fn sink_score(h: u32) -> f32 {
    return sinks[h] * 1.4426950408889634;
}
