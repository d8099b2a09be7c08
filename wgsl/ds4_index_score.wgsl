// The lightning indexer's score of compressed row b for token t (deepseek4, ratio-4 layers):
//   scores[t][b] = sum_h relu(q[t][h] . keys[b]) * weights[t][h] * weight_scale
// for the rows the token sees (b < (pos0 + t + 1) / ratio); rows it does not see are left
// as they are (ds4_index_pick never reads them). One thread per (token, row).
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_index).
// Params: IndexParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: IndexParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> keys: array<f32>;
@group(0) @binding(3) var<storage, read> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let i = linear_index(grid, li);
    if i >= params.n_tokens * params.n_comp {
        return;
    }
    let t = i / params.n_comp;
    let b = i - t * params.n_comp;
    if b >= (params.pos0 + t + 1u) / params.ratio {
        return;
    }
    let dim = params.head_dim;
    var score = 0.0;
    for (var h = 0u; h < params.n_heads; h++) {
        let qh = (t * params.n_heads + h) * dim;
        var dot = 0.0;
        for (var d = 0u; d < dim; d++) {
            dot = fma(q[qh + d], keys[b * dim + d], dot);
        }
        score = fma(max(dot, 0.0), weights[t * params.n_heads + h] * params.weight_scale, score);
    }
    scores[i] = score;
}
