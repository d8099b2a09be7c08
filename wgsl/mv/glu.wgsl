// mv_id epilogue: gate, up and the expert activation at once, over a gate/up tensor of
// interleaved rows (row 2i gate row i, row 2i + 1 up row i; n_rows = 2F). One pair per group:
//   mid[p][i] = swiglu(gate_i . x + bg_i, up_i . x + bu_i) * route[p]
// with pair p's expert's biases bg, bu (mv/glu_bias.wgsl; zero from mv/glu_no_bias.wgsl).
// A workgroup's rows are whole (gate, up) pairs, two mid values per thread of every fourth
// row (mid_pair packs them as one element).
// Expects: `partial` (mv_id.wgsl), `params` (matmul.wgsl), MidPair and mid_pair
//   (mid/<type>.wgsl), swiglu (glu/swiglu.wgsl), mv/per_pair.wgsl (mv_groups, mv_pairs,
//   mv_pair), glu_bias (mv/glu_bias.wgsl or mv/glu_no_bias.wgsl).
// Defines: bindings 4 (mid), 5 (route); mv_store.

const_assert ROWS_PER_WG % 4u == 0u;

@group(0) @binding(4) var<storage, read_write> mid: array<MidPair>;
@group(0) @binding(5) var<storage, read> route: array<f32>;

// Called by lane 0 of every valid row r (output row `row`) of a group. n_rows is a multiple
// of 4 (the host checks), so rows row .. row + 3 of a row that is a multiple of 4 are valid.
fn mv_store(p: u32, r: u32, row: u32) {
    if r % 4u != 0u {
        return;
    }
    let g = vec2<f32>(partial[r * LANES], partial[(r + 2u) * LANES]);
    let u = vec2<f32>(partial[(r + 1u) * LANES], partial[(r + 3u) * LANES]);
    let b = glu_bias(p, row / 2u);
    let v = swiglu(g + b[0], u + b[1], params.clamp, params.limit, params.alpha) * route[p];
    mid[p * (params.n_rows / 4u) + row / 4u] = mid_pair(v);
}
