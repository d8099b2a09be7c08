// mv/glu.wgsl without biases.
// Defines: glu_bias(p, i), zero.

fn glu_bias(p: u32, i: u32) -> mat2x2<f32> {
    return mat2x2<f32>(vec2<f32>(0.0), vec2<f32>(0.0));
}
