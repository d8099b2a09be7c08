// out[t][c] = sum over k = 0 .. K of y[t * K + k][c], in that order.
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_index).
// Params: SumParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: SumParams;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let i = linear_index(grid, li);
    if i >= params.n_tokens * params.n_cols {
        return;
    }
    let t = i / params.n_cols;
    let c = i % params.n_cols;
    var s = 0.0;
    for (var k = 0u; k < params.n_used; k++) {
        s += y[(t * params.n_used + k) * params.n_cols + c];
    }
    out[i] = s;
}
