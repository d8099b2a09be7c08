// sum.wgsl with per-expert biases of the down outputs (gpt-oss). The route weight is already
// in y (act.wgsl scales mid, and down is linear), so the bias is added scaled by it:
// w * (down . mid + b) = down . (w mid) + w b. Pair p's expert is ids[p], its bias a row of an
// (E, D) matrix.
// Defines: bindings 3 (ids), 4 (route), 5 (down_bias); down_bias_of(p, c): value c of pair p's
//   weighted bias.

@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read> route: array<f32>;
@group(0) @binding(5) var<storage, read> down_bias: array<f32>;

fn down_bias_of(p: u32, c: u32) -> f32 {
    return route[p] * down_bias[ids[p] * params.n_cols + c];
}
