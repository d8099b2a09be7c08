// The lightning indexer's top-k (deepseek4, ratio-4 layers): token t keeps the `top_k`
// visible rows of highest score, ties to the earlier row. Row b is kept when fewer than
// top_k visible rows rank above it (a higher score, or an equal one earlier):
//   picked[t][b] = b < visible(t) && #{c < visible(t) : s_c > s_b || (s_c == s_b && c < b)} < top_k
// with visible(t) = (pos0 + t + 1) / ratio. One thread per (token, row): each compares its
// row with every visible row of its token, so every pick is independent of the others.
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_index).
// Params: IndexParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: IndexParams;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> picked: array<u32>;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let i = linear_index(grid, li);
    if i >= params.n_tokens * params.n_comp {
        return;
    }
    let t = i / params.n_comp;
    let b = i - t * params.n_comp;
    let visible = min((params.pos0 + t + 1u) / params.ratio, params.n_comp);
    if b >= visible {
        picked[i] = 0u;
        return;
    }
    let row = t * params.n_comp;
    let s = scores[row + b];
    var above = 0u;
    for (var c = 0u; c < visible; c++) {
        let sc = scores[row + c];
        above += select(0u, 1u, sc > s || (sc == s && c < b));
    }
    picked[i] = select(0u, 1u, above < params.top_k);
}
