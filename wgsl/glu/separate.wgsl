// The input of act.wgsl as two matrices: the (pairs, F) f32 outputs of the gate and up
// matmuls.
// Defines: bindings 1 (gate), 2 (up); glu_in(i): the i-th two (gate, up) value pairs of the
//   flat (pairs, F) matrices, as (g, u).

@group(0) @binding(1) var<storage, read> gate: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> up: array<vec2<f32>>;

fn glu_in(i: u32) -> mat2x2<f32> {
    return mat2x2<f32>(gate[i], up[i]);
}
