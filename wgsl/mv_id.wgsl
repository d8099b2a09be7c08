// Grouped mat-vec for small batches. Workgroup (wg.x, wg.y) computes ROWS_PER_WG rows of row
// tile wg.x for output group g = wg.y: the sum, over the pairs p = mv_pair(g, s) of the group
// (s < mv_pairs()), of W[ids[p]][row] . act[p / act_row_div]; the epilogue fragment stores it
// (mv/rows.wgsl: one pair per group, y[p][row]; mv/glu.wgsl: the activation of (gate, up) row
// pairs into mid; mv/sum.wgsl: a token's K pairs summed into out[t][row]).
//
// The activation rows of a group's pairs, concatenated, are staged in workgroup memory
// (X_CHUNK values a round; n_cols is a multiple of QK, so no weight block straddles two
// pairs), so the loop over the weights holds only weight words in registers: with fewer
// registers per thread more workgroups stay resident, which is what a memory-bound kernel needs. How it is staged
// and multiplied is the input fragment's (mv/x_f32.wgsl: f32 values and FMAs, every weight
// type; mv/x_int8.wgsl: int8 quants and integer dot products). Each row is reduced by LANES
// threads, then a tree in workgroup memory, in a fixed order and without subgroup
// operations, so any subgroup size gives the same result. A group's pairs accumulate into
// the same lanes before the one reduction.
//
// Every loop has a constant trip count or a uniform bound (the host may run this module
// without naga's loop guards); every workgroup-memory index is in range by construction;
// every barrier is in workgroup-uniform control flow (the pair and its expert depend only on
// the workgroup).
//
// Consts: WG_SIZE, ROWS_PER_WG, LANES, TILE_N (1), QK, BLOCK_WORDS.
// Fragments: dequant/<type>.wgsl (WRaw, wload, wdecode over `weights`) and, for int8
//   activations, dot/<type>.wgsl (QSTEP, wdot); act/<type>.wgsl (ActChunk, ActRaw, act_load,
//   act_values), matmul.wgsl (params: MatmulParams, weights, act), mv/plain.wgsl or
//   mv/norm.wgsl (row_scale, value_weights: the prologue that may RMS-norm each activation
//   row as it is staged), mv/x_f32.wgsl or mv/x_int8.wgsl (X_CHUNK, round_dot: the
//   input), mv/<epilogue>.wgsl (mv_store and the output bindings; mv_groups, mv_pairs,
//   mv_pair from mv/sum.wgsl or mv/per_pair.wgsl).

const_assert ROWS_PER_WG * LANES == WG_SIZE;
const_assert 0u == (LANES & (LANES - 1u));

@group(0) @binding(3) var<storage, read> ids: array<u32>;

// Per-thread partial sums; after the reduction, partial[r * LANES] is row r's result.
var<workgroup> partial: array<f32, WG_SIZE>;

// Marks a pair whose expert lies outside the bound weight chunk.
const NO_BLOCK: u32 = 0xffffffffu;

// The first weight block of row `row` (clamped) of the expert of pair slot k of `group`, or
// NO_BLOCK when that expert lies outside the bound weight chunk.
fn pair_block0(group: u32, k: u32, row: u32) -> u32 {
    let expert = ids[mv_pair(group, k)];
    if expert < params.expert_base || expert - params.expert_base >= params.expert_count {
        return NO_BLOCK;
    }
    return ((expert - params.expert_base) * params.n_rows + min(row, params.n_rows - 1u))
        * (params.n_cols / QK);
}

// The first 8-value group of the activation row of pair slot k of `group`.
fn pair_x0(group: u32, k: u32) -> u32 {
    return (mv_pair(group, k) / params.act_row_div) * (params.n_cols / 8u);
}

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let group = wg.y;
    if group >= mv_groups() {
        return;
    }
    let r = li / LANES;
    let lane = li % LANES;
    let row = wg.x * ROWS_PER_WG + r;
    let valid = row < params.n_rows;
    // Whether any pair of the group has its expert in the bound weight chunk.
    var used = false;
    for (var k = 0u; k < mv_pairs(); k++) {
        used = used || pair_block0(group, k, row) != NO_BLOCK;
    }
    // The prologues that scale a row (the norms) run with one pair per group (the host never
    // pairs them with the sum epilogue), so pair 0's row is the row.
    let scale = row_scale(pair_x0(group, 0u), li);
    // The group's pairs' activation rows, concatenated, in rounds of X_CHUNK values: a round
    // covers several short rows (down's K rows of mid), so their loads are in flight together
    // rather than one row's round trip after the other's.
    var sum = 0.0;
    for (var c0 = 0u; c0 < mv_pairs() * params.n_cols; c0 += X_CHUNK) {
        sum += round_dot(group, c0, scale, li, lane, row, valid);
    }
    partial[li] = sum;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            partial[li] += partial[li + s];
        }
        workgroupBarrier();
    }
    if used && lane == 0u && valid {
        mv_store(group, r, row);
    }
}
