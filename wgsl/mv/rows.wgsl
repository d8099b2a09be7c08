// mv_id epilogue: plain rows. One pair per group: y[y_at(p, row)] = W[ids[p]][row] . act[p / div],
// or += with params.accumulate (the residual add of an output projection).
// Expects: `partial` (mv_id.wgsl), `params` (matmul.wgsl), mv/per_pair.wgsl (mv_groups,
//   mv_pairs, mv_pair).
// Defines: binding 4 (y); mv_store.

@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Called by lane 0 of every valid row r (output row `row`) of a group.
fn mv_store(p: u32, r: u32, row: u32) {
    let at = y_at(p, row);
    if params.accumulate != 0u {
        y[at] += partial[r * LANES];
    } else {
        y[at] = partial[r * LANES];
    }
}
