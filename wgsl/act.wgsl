// The expert activation, element-wise over (pairs, F), two values per invocation:
//   mid = swiglu(g + bg, u + bu) * route_weight
// where g and u are the gate and up outputs (two matrices, or one interleaved: glu/*.wgsl),
// bg and bu the pair's expert's biases (bias/glu.wgsl; zero with bias/no_glu.wgsl) and route
// holds one weight per pair p = t * K + k.
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_index), mid/<type>.wgsl (MidPair, mid_pair),
//   glu/swiglu.wgsl (swiglu), glu/separate.wgsl or glu/interleaved.wgsl (bindings 1-2,
//   glu_in), bias/glu.wgsl or bias/no_glu.wgsl (glu_bias).
// Params: ActParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: ActParams;
@group(0) @binding(3) var<storage, read> route: array<f32>;
@group(0) @binding(4) var<storage, read_write> mid: array<MidPair>;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let i = linear_index(grid, li);
    let pairs_per_row = params.n_cols / 2u;
    if i >= params.n_pairs * pairs_per_row {
        return;
    }
    let p = i / pairs_per_row;
    let gu = glu_in(i) + glu_bias(p, i % pairs_per_row, pairs_per_row);
    mid[i] = mid_pair(swiglu(gu[0], gu[1], params.clamp, params.limit, params.alpha) * route[p]);
}
