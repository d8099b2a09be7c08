// The input of act.wgsl as one (pairs, 2F) f32 matrix of interleaved columns, the output of
// one matmul over a gate/up tensor of interleaved rows: column 2i is gate value i, column
// 2i + 1 up value i.
// Defines: binding 1 (gate_up); glu_in(i): the i-th two (gate, up) value pairs of the flat
//   (pairs, F) gate and up values, as (g, u).

@group(0) @binding(1) var<storage, read> gate_up: array<vec4<f32>>;

fn glu_in(i: u32) -> mat2x2<f32> {
    let v = gate_up[i];
    return mat2x2<f32>(v.xz, v.yw);
}
