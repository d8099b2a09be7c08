// out[t][c] = sum over k = 0 .. K of y[t * K + k][c] (plus its expert's weighted bias:
// bias/down.wgsl; zero with bias/no_down.wgsl), in that order.
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_index), bias/down.wgsl or bias/no_down.wgsl
//   (down_bias_of).
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
        let p = t * params.n_used + k;
        s += y[p * params.n_cols + c] + down_bias_of(p, c);
    }
    out[i] = s;
}
