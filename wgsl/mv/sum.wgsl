// mv_id epilogue: down and the sum over K. One token t per group, its K pairs accumulated in
// the same lanes: out[t][row] = sum_k W[ids[t*K + k]][row] . act[t*K + k] (act is mid, the
// route weight already applied; act_row_div is 1), or += with params.accumulate (the routed
// experts added into the residual stream), plus the pairs' down biases where the experts have
// them (sum_bias: mv/sum_bias.wgsl, or zero from mv/sum_no_bias.wgsl). Runs over one weight
// chunk only: a pair whose expert lies outside the bound chunk adds nothing.
// Expects: `partial` (mv_id.wgsl), `params` (matmul.wgsl), sum_bias.
// Defines: binding 4 (out); mv_groups, mv_pairs, mv_pair, mv_store.

@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn mv_groups() -> u32 {
    return params.n_pairs / params.n_used;
}

fn mv_pairs() -> u32 {
    return params.n_used;
}

fn mv_pair(t: u32, k: u32) -> u32 {
    return t * params.n_used + k;
}

// Called by lane 0 of every valid row r (output row `row`) of a group.
fn mv_store(t: u32, r: u32, row: u32) {
    let at = t * params.n_rows + row;
    let v = partial[r * LANES] + sum_bias(t, row);
    if params.accumulate != 0u {
        out[at] += v;
    } else {
        out[at] = v;
    }
}
