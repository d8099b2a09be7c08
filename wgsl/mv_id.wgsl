// Grouped mat-vec for small batches: y[p][row] = W[ids[p]][row] . act[p / act_row_div] for
// pair p = wg.y and ROWS_PER_WG rows of row tile wg.x.
//
// The activation row is staged in workgroup memory (X_CHUNK values at a time, as f32), so
// the loop over the weights holds only weight words in registers: with fewer registers per
// thread more workgroups stay resident, which is what a memory-bound kernel needs. Each row
// is reduced by LANES threads: lane l takes 8-value groups l, l + LANES, ..., UNROLL per
// iteration with all their loads issued before the arithmetic, then a tree in workgroup
// memory, in a fixed order and without subgroup operations, so any subgroup size gives the
// same result.
//
// Every loop has a constant trip count or a uniform bound (the host may run this module
// without naga's loop guards); every workgroup-memory index is in range by construction.
//
// Consts: WG_SIZE, ROWS_PER_WG, LANES, TILE_N (1), QK, BLOCK_WORDS.
// Fragments: dequant/<type>.wgsl (WRaw, wload, wdecode over `weights`), act/<type>.wgsl
//   (ActChunk, ActRaw, act_load, act_values), matmul.wgsl (params: MatmulParams, weights,
//   act).

const_assert ROWS_PER_WG * LANES == WG_SIZE;
const_assert 0u == (LANES & (LANES - 1u));

@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// 8-value groups per lane and iteration.
const UNROLL: u32 = 4u;
// 8-value groups per weight block.
const PER_BLOCK: u32 = QK / 8u;
// Activation values staged per round (8 KiB as f32).
const X_CHUNK: u32 = 2048u;
const_assert X_CHUNK % 8u == 0u;

var<workgroup> x_tile: array<vec4<f32>, X_CHUNK / 4u>;
var<workgroup> partial: array<f32, WG_SIZE>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let p = wg.y;
    if p >= params.n_pairs {
        return;
    }
    let expert = ids[p];
    if expert < params.expert_base || expert - params.expert_base >= params.expert_count {
        return;
    }
    let r = li / LANES;
    let lane = li % LANES;
    let row = wg.x * ROWS_PER_WG + r;
    let valid = row < params.n_rows;
    let block0 = ((expert - params.expert_base) * params.n_rows + min(row, params.n_rows - 1u))
        * (params.n_cols / QK);
    let x0 = (p / params.act_row_div) * (params.n_cols / 8u);
    var sum = 0.0;
    for (var c0 = 0u; c0 < params.n_cols; c0 += X_CHUNK) {
        // Stage this round's activations: group u of the round is x_tile[2u], x_tile[2u + 1].
        let groups = min(X_CHUNK, params.n_cols - c0) / 8u;
        for (var u = li; u < groups; u += WG_SIZE) {
            let v = act_values(act_load(x0 + c0 / 8u + u));
            x_tile[2u * u] = vec4<f32>(v[0], v[1], v[2], v[3]);
            x_tile[2u * u + 1u] = vec4<f32>(v[4], v[5], v[6], v[7]);
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
    partial[li] = sum;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            partial[li] += partial[li + s];
        }
        workgroupBarrier();
    }
    if lane == 0u && valid {
        y[p * params.n_rows + row] = partial[li];
    }
}
