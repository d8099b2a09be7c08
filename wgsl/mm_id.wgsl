// Grouped matmul over the expert-major work list, register-tile path:
//   y[p][row] = sum_col W[e][row][col] * act[p / act_row_div][col]
// for every pair p of token tile `items[wg.x]` (expert e, tokens first .. first + TILE_N of
// its list) and every row of row tile wg.y (ROWS_PER_WG rows).
//
// Per K_STEP columns, the weight tile (ROWS_PER_WG x K_STEP) is dequantized into workgroup
// memory, one 8-value group per thread, and the activation tile (TILE_N x K_STEP) is gathered
// through the pair list; then every thread accumulates ROWS_PER_THREAD x TOKENS_PER_THREAD
// outputs in registers: rows 4 tr .. 4 tr + 4 (one vec4 per token) of tokens
// TOKENS_PER_THREAD * tc .. + TOKENS_PER_THREAD, read from the tiles as vec4 (rows) and vec2
// (token pairs), so each step of k costs 1 + TOKENS_PER_THREAD / 2 workgroup loads for
// 4 * TOKENS_PER_THREAD FMAs. The accumulators cover the whole tile for every TILE_N
// (const_asserts below). Rows past n_rows and tokens past the expert's count are masked: zero
// inputs, no store.
//
// Consts: WG_SIZE, ROWS_PER_WG, TILE_N, K_STEP, ROW_THREADS, TOKEN_THREADS, ROWS_PER_THREAD,
//   TOKENS_PER_THREAD, QK, BLOCK_WORDS.
// Fragments: dequant/<type>.wgsl (dequant8 over `weights`), act/<type>.wgsl (ActChunk, act8).

const_assert ROW_THREADS * TOKEN_THREADS == WG_SIZE;
const_assert ROWS_PER_THREAD * ROW_THREADS == ROWS_PER_WG;
const_assert TOKENS_PER_THREAD * TOKEN_THREADS == TILE_N;
const_assert ROWS_PER_WG * (K_STEP / 8u) == WG_SIZE;
const_assert QK % K_STEP == 0u;
const_assert ROWS_PER_THREAD == 4u;
const_assert TOKENS_PER_THREAD % 2u == 0u;

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
@group(0) @binding(3) var<storage, read> experts: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> list: array<u32>;
@group(0) @binding(5) var<storage, read> items: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

const GROUPS_PER_STEP: u32 = K_STEP / 8u;

const ROW_QUADS: u32 = ROWS_PER_WG / 4u;
const TOKEN_PAIRS: u32 = TILE_N / 2u;

var<workgroup> w_tile: array<vec4<f32>, K_STEP * ROW_QUADS>; // [col][row / 4][row % 4]
var<workgroup> x_tile: array<vec2<f32>, K_STEP * TOKEN_PAIRS>; // [col][token / 2][token % 2]
var<workgroup> tile_pairs: array<u32, TILE_N>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let item = items[wg.x];
    let expert = item.x;
    if expert < params.expert_base || expert - params.expert_base >= params.expert_count {
        return;
    }
    let span = experts[expert];
    let n_tokens = min(TILE_N, span.y - item.y);
    let row0 = wg.y * ROWS_PER_WG;
    for (var c = li; c < TILE_N; c += WG_SIZE) {
        var p = 0u;
        if c < n_tokens {
            p = list[span.x + item.y + c];
        }
        tile_pairs[c] = p;
    }

    // The row and 8-value group this thread dequantizes.
    let w_row = li / GROUPS_PER_STEP;
    let w_group = li % GROUPS_PER_STEP;
    let w_valid = row0 + w_row < params.n_rows;
    let w_block0 = ((expert - params.expert_base) * params.n_rows + row0 + w_row) * (params.n_cols / QK);
    // The outputs this thread accumulates.
    let tr = li % ROW_THREADS;
    let tc = li / ROW_THREADS;
    var acc: array<vec4<f32>, TOKENS_PER_THREAD>;
    workgroupBarrier();

    for (var k0 = 0u; k0 < params.n_cols; k0 += K_STEP) {
        var w: array<f32, 8>;
        if w_valid {
            let col = k0 + 8u * w_group;
            w = dequant8(w_block0 + col / QK, (col % QK) / 8u);
        }
        for (var i = 0u; i < 8u; i++) {
            w_tile[(8u * w_group + i) * ROW_QUADS + w_row / 4u][w_row % 4u] = w[i];
        }
        for (var g = li; g < TILE_N * GROUPS_PER_STEP; g += WG_SIZE) {
            let c = g / GROUPS_PER_STEP;
            let sub = g % GROUPS_PER_STEP;
            var x: array<f32, 8>;
            if c < n_tokens {
                let row = tile_pairs[c] / params.act_row_div;
                x = act8((row * params.n_cols + k0) / 8u + sub);
            }
            for (var i = 0u; i < 8u; i++) {
                x_tile[(8u * sub + i) * TOKEN_PAIRS + c / 2u][c % 2u] = x[i];
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < K_STEP; k++) {
            let w4 = w_tile[k * ROW_QUADS + tr];
            for (var j = 0u; j < TOKENS_PER_THREAD; j += 2u) {
                let x2 = x_tile[k * TOKEN_PAIRS + (tc * TOKENS_PER_THREAD + j) / 2u];
                acc[j] = fma(w4, vec4<f32>(x2.x), acc[j]);
                acc[j + 1u] = fma(w4, vec4<f32>(x2.y), acc[j + 1u]);
            }
        }
        workgroupBarrier();
    }

    for (var j = 0u; j < TOKENS_PER_THREAD; j++) {
        let c = tc * TOKENS_PER_THREAD + j;
        if c < n_tokens {
            let out = tile_pairs[c] * params.n_rows;
            for (var i = 0u; i < ROWS_PER_THREAD; i++) {
                let row = row0 + 4u * tr + i;
                if row < params.n_rows {
                    y[out + row] = acc[j][i];
                }
            }
        }
    }
}
