// The expert activation, element-wise over (pairs, F), two values per invocation:
//   mid = silu(g) * u * route_weight                                   (clamp == 0)
//   mid = silu(min(g, limit)) * clamp(u, -limit, limit) * route_weight (clamp == 1)
// gate/up are the (pairs, F) outputs of the gate and up matmuls; route holds one weight per
// pair p = t * K + k.
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_index), mid/<type>.wgsl (MidPair, mid_pair).
// Params: ActParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: ActParams;
@group(0) @binding(1) var<storage, read> gate: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> up: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> route: array<f32>;
@group(0) @binding(4) var<storage, read_write> mid: array<MidPair>;

fn silu(x: vec2<f32>) -> vec2<f32> {
    return x / (1.0 + exp(-x));
}

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let i = linear_index(grid, li);
    let pairs_per_row = params.n_cols / 2u;
    if i >= params.n_pairs * pairs_per_row {
        return;
    }
    var g = gate[i];
    var u = up[i];
    if params.clamp != 0u {
        g = min(g, vec2<f32>(params.limit));
        u = clamp(u, vec2<f32>(-params.limit), vec2<f32>(params.limit));
    }
    mid[i] = mid_pair(silu(g) * u * route[i / pairs_per_row]);
}
