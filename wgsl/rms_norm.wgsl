// RMS norm of every group of group_len consecutive values (a row, or one head of a row) times
// the weight vector: out[i] = x[i] / sqrt(mean(group^2) + eps) * w[i % group_len].
// One workgroup per group (the grid is folded in two dimensions past 65535 groups): strided
// partial sums of squares, then their workgroup sum.
//
// Every loop has a bound uniform over the workgroup and every workgroup-array index is in
// range by construction (the host may run this module without naga's loop guards and clamps).
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_group), reduce/sum.wgsl (workgroup_sum).
// Params: NormParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: NormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, WG_SIZE>;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let group = linear_group(grid);
    if group >= params.n_groups {
        return;
    }
    let base = group * params.group_len;
    var sum = 0.0;
    for (var i = li; i < params.group_len; i += WG_SIZE) {
        let v = x[base + i];
        sum = fma(v, v, sum);
    }
    let scale = 1.0 / sqrt(workgroup_sum(li, sum) / f32(params.group_len) + params.eps);
    for (var i = li; i < params.group_len; i += WG_SIZE) {
        out[base + i] = x[base + i] * scale * w[i];
    }
}
