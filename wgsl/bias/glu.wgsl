// act.wgsl with per-expert biases of the gate and up outputs (gpt-oss), added before the
// activation: pair p's expert is ids[p], its biases rows of (E, F) matrices.
// Defines: bindings 5 (ids), 6 (gate_bias), 7 (up_bias); glu_bias(p, c2, pairs_per_row): the
//   biases of value pair c2 of pair p's row, as (g, u).

@group(0) @binding(5) var<storage, read> ids: array<u32>;
@group(0) @binding(6) var<storage, read> gate_bias: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read> up_bias: array<vec2<f32>>;

fn glu_bias(p: u32, c2: u32, pairs_per_row: u32) -> mat2x2<f32> {
    let at = ids[p] * pairs_per_row + c2;
    return mat2x2<f32>(gate_bias[at], up_bias[at]);
}
