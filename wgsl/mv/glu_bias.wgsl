// mv/glu.wgsl's per-expert biases of the gate and up rows (gpt-oss), added before the
// activation: pair p's expert is ids[p], its biases rows of (E, F) matrices.
// Expects: `ids` (mv_id.wgsl), `params` (matmul.wgsl).
// Defines: bindings 8 (gate_bias), 9 (up_bias; binding 7 is IQ2_XXS's grid); glu_bias(p, i): the biases of mid values
//   i, i + 1 of pair p (i even), as (gate, up).

@group(0) @binding(8) var<storage, read> gate_bias: array<vec2<f32>>;
@group(0) @binding(9) var<storage, read> up_bias: array<vec2<f32>>;

fn glu_bias(p: u32, i: u32) -> mat2x2<f32> {
    let at = (ids[p] * (params.n_rows / 2u) + i) / 2u;
    return mat2x2<f32>(gate_bias[at], up_bias[at]);
}
