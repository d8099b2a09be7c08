// act.wgsl without biases.
// Defines: glu_bias(p, c2, pairs_per_row), zero.

fn glu_bias(p: u32, c2: u32, pairs_per_row: u32) -> mat2x2<f32> {
    return mat2x2<f32>(vec2<f32>(0.0), vec2<f32>(0.0));
}
