// Grouped mat-vec for small batches: y[p][row] = W[ids[p]][row] . act[p / act_row_div] for
// pair p = wg.y and ROWS_PER_WG rows of row tile wg.x. Each row is reduced by LANES threads:
// lane l takes 8-value groups l, l + LANES, ..., UNROLL per iteration with all their loads
// issued before the arithmetic (a 2048-wide row is two memory round trips per lane), then a
// tree in workgroup memory, in a fixed order and without subgroup operations, so any subgroup
// size gives the same result.
//
// Every loop has a constant trip count or a uniform bound (the host may run this module
// without naga's loop guards); every workgroup-memory index is in range by construction.
//
// Consts: WG_SIZE, ROWS_PER_WG, LANES, TILE_N (1), QK, BLOCK_WORDS.
// Fragments: dequant/<type>.wgsl (WRaw, wload, wdecode over `weights`), act/<type>.wgsl
//   (ActChunk, ActRaw, act_load, act_values).

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

// 8-value groups per lane and iteration.
const UNROLL: u32 = 4u;
// 8-value groups per weight block.
const PER_BLOCK: u32 = QK / 8u;

var<workgroup> partial: array<f32, WG_SIZE>;

fn dot8(w: array<f32, 8>, x: array<f32, 8>) -> f32 {
    return dot(vec4<f32>(w[0], w[1], w[2], w[3]), vec4<f32>(x[0], x[1], x[2], x[3]))
        + dot(vec4<f32>(w[4], w[5], w[6], w[7]), vec4<f32>(x[4], x[5], x[6], x[7]));
}

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
        let groups = params.n_cols / 8u;
        for (var g0 = lane; g0 < groups; g0 += UNROLL * LANES) {
            var w: array<WRaw, UNROLL>;
            var x: array<ActRaw, UNROLL>;
            for (var u = 0u; u < UNROLL; u++) {
                let g = g0 + u * LANES;
                w[u] = WRaw();
                x[u] = ActRaw();
                if g < groups {
                    w[u] = wload(block0 + g / PER_BLOCK, g % PER_BLOCK);
                    x[u] = act_load(x0 + g);
                }
            }
            // Zero words decode to zeros: groups past the row add nothing.
            for (var u = 0u; u < UNROLL; u++) {
                let g = g0 + u * LANES;
                sum += dot8(wdecode(w[u], g % PER_BLOCK), act_values(x[u]));
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
