// mv/sum.wgsl without biases.
// Defines: sum_bias(t, row), zero.

fn sum_bias(t: u32, row: u32) -> f32 {
    return 0.0;
}
