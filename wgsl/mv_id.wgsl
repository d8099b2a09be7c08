// Grouped mat-vec for small batches: y[p][row] = W[ids[p]][row] . act[p / act_row_div] for
// pair p = wg.y and ROWS_PER_WG rows of row tile wg.x. Each row is reduced by LANES threads:
// lane l takes 8-value groups l, l + LANES, ..., then a tree in workgroup memory, in a fixed
// order and without subgroup operations, so any subgroup size gives the same result.
//
// Consts: WG_SIZE, ROWS_PER_WG, LANES, TILE_N (1), QK, BLOCK_WORDS.
// Fragments: dequant/<type>.wgsl (dequant8 over `weights`), act/<type>.wgsl (ActChunk, act8).

const_assert ROWS_PER_WG * LANES == WG_SIZE;
const_assert 0u == (LANES & (LANES - 1u));

struct MatmulParams {
    n_rows: u32,
    n_cols: u32,
    act_row_div: u32,
    expert_base: u32,
    expert_count: u32,
    n_pairs: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> weights: array<u32>;
@group(0) @binding(2) var<storage, read> act: array<ActChunk>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

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
    var sum = 0.0;
    if row < params.n_rows {
        let block0 = ((expert - params.expert_base) * params.n_rows + row) * (params.n_cols / QK);
        let x0 = (p / params.act_row_div) * (params.n_cols / 8u);
        for (var g = lane; g < params.n_cols / 8u; g += LANES) {
            let w = dequant8(block0 + g / (QK / 8u), g % (QK / 8u));
            let x = act8(x0 + g);
            for (var i = 0u; i < 8u; i++) {
                sum = fma(w[i], x[i], sum);
            }
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
    if lane == 0u && row < params.n_rows {
        y[p * params.n_rows + row] = partial[li];
    }
}
