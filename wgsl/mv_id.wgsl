// Grouped mat-vec for small batches. Workgroup (wg.x, wg.y) computes ROWS_PER_WG rows of row
// tile wg.x for output group g = wg.y: the sum, over the pairs p = mv_pair(g, s) of the group
// (s < mv_pairs()), of W[ids[p]][row] . act[p / act_row_div]; the epilogue fragment stores it
// (mv/rows.wgsl: one pair per group, y[p][row]; mv/glu.wgsl: the activation of (gate, up) row
// pairs into mid; mv/sum.wgsl: a token's K pairs summed into out[t][row]).
//
// The activation row is staged in workgroup memory (X_CHUNK values at a time, as f32), so
// the loop over the weights holds only weight words in registers: with fewer registers per
// thread more workgroups stay resident, which is what a memory-bound kernel needs. Each row
// is reduced by LANES threads: lane l takes 8-value groups l, l + LANES, ..., UNROLL per
// iteration with all their loads issued before the arithmetic, then a tree in workgroup
// memory, in a fixed order and without subgroup operations, so any subgroup size gives the
// same result. A group's pairs accumulate into the same lanes before the one reduction.
//
// Every loop has a constant trip count or a uniform bound (the host may run this module
// without naga's loop guards); every workgroup-memory index is in range by construction;
// every barrier is in workgroup-uniform control flow (the pair and its expert depend only on
// the workgroup).
//
// Consts: WG_SIZE, ROWS_PER_WG, LANES, TILE_N (1), QK, BLOCK_WORDS.
// Fragments: dequant/<type>.wgsl (WRaw, wload, wdecode over `weights`), act/<type>.wgsl
//   (ActChunk, ActRaw, act_load, act_values), matmul.wgsl (params: MatmulParams, weights,
//   act), mv/plain.wgsl or mv/norm.wgsl (row_scale, value_weights: the prologue that may
//   RMS-norm each activation row as it is staged), mv/<epilogue>.wgsl (mv_store and the
//   output bindings; mv_groups, mv_pairs, mv_pair
//   from mv/sum.wgsl or mv/per_pair.wgsl).

const_assert ROWS_PER_WG * LANES == WG_SIZE;
const_assert 0u == (LANES & (LANES - 1u));

@group(0) @binding(3) var<storage, read> ids: array<u32>;

// 8-value groups per lane and iteration.
const UNROLL: u32 = 4u;
// 8-value groups per weight block.
const PER_BLOCK: u32 = QK / 8u;
// Activation values staged per round (8 KiB as f32).
const X_CHUNK: u32 = 2048u;
const_assert X_CHUNK % 8u == 0u;

var<workgroup> x_tile: array<vec4<f32>, X_CHUNK / 4u>;
// Per-thread partial sums; after the reduction, partial[r * LANES] is row r's result.
var<workgroup> partial: array<f32, WG_SIZE>;

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
    var sum = 0.0;
    // Whether any pair of the group has its expert in the bound weight chunk.
    var used = false;
    for (var s = 0u; s < mv_pairs(); s++) {
        let p = mv_pair(group, s);
        let expert = ids[p];
        if expert < params.expert_base || expert - params.expert_base >= params.expert_count {
            continue;
        }
        used = true;
        let block0 = ((expert - params.expert_base) * params.n_rows
            + min(row, params.n_rows - 1u)) * (params.n_cols / QK);
        let x0 = (p / params.act_row_div) * (params.n_cols / 8u);
        let scale = row_scale(x0, li);
        for (var c0 = 0u; c0 < params.n_cols; c0 += X_CHUNK) {
            // Stage this round's activations: group u of the round is x_tile[2u], x_tile[2u + 1].
            let groups = min(X_CHUNK, params.n_cols - c0) / 8u;
            for (var u = li; u < groups; u += WG_SIZE) {
                let v = act_values(act_load(x0 + c0 / 8u + u));
                let c = c0 + 8u * u;
                x_tile[2u * u] = vec4<f32>(v[0], v[1], v[2], v[3]) * scale * value_weights(c);
                x_tile[2u * u + 1u] = vec4<f32>(v[4], v[5], v[6], v[7]) * scale
                    * value_weights(c + 4u);
            }
            workgroupBarrier();
            if valid {
                for (var g0 = lane; g0 < groups; g0 += UNROLL * LANES) {
                    var w: array<WRaw, UNROLL>;
                    for (var u = 0u; u < UNROLL; u++) {
                        let g = c0 / 8u + g0 + u * LANES;
                        w[u] = WRaw();
                        if g0 + u * LANES < groups {
                            w[u] = wload(block0 + g / PER_BLOCK, g % PER_BLOCK);
                        }
                    }
                    // Zero words decode to zeros: groups past the round add nothing.
                    for (var u = 0u; u < UNROLL; u++) {
                        let g = g0 + u * LANES;
                        let v = wdecode(w[u], (c0 / 8u + g) % PER_BLOCK);
                        let at = 2u * min(g, groups - 1u);
                        sum += dot(vec4<f32>(v[0], v[1], v[2], v[3]), x_tile[at])
                            + dot(vec4<f32>(v[4], v[5], v[6], v[7]), x_tile[at + 1u]);
                    }
                }
            }
            workgroupBarrier();
        }
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
