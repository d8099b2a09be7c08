// Grouped matmul over the expert-major work list, register-tile path:
//   y[p][row] = sum_col W[e][row][col] * act[p / act_row_div][col]
// for every pair p of token tile `items[wg.x]` (expert e, tokens first .. first + TILE_N of
// its list) and every row of row tile wg.y (ROWS_PER_WG rows).
//
// Per K_STEP columns, the weight tile (ROWS_PER_WG x K_STEP, f32) and the activation tile
// (TILE_N x K_STEP, gathered through the pair list) go to workgroup memory, both row-major
// with one vec4 of padding per row. Then thread (tr, tc) accumulates 4 rows (tr + ROW_THREADS
// * i) x TOKENS_PER_THREAD tokens (tc * TOKENS_PER_THREAD + j) in registers: per 4 columns,
// 4 + TOKENS_PER_THREAD vec4 loads for 16 * TOKENS_PER_THREAD FMAs. The 16 row threads of a
// warp read 16 different rows of the padded tile (distinct banks) and broadcast the tokens.
//
// The global loads of the next step are issued before the multiply of the current one and
// decoded after it (wload/act_load, then wdecode/act_values), so their latency overlaps the
// arithmetic. Warps whose tokens are all past the expert's count skip the multiply, so a wide
// tile over few tokens costs little more than a narrow one. Rows past n_rows read a valid row
// (clamped) and are not stored; tokens past the count load zeros and are not stored.
//
// Every loop has a constant trip count or a uniform bound (the host may run this module
// without naga's loop guards); every workgroup-memory index is in range by construction.
//
// Consts: WG_SIZE, ROWS_PER_WG, TILE_N, K_STEP, ROW_THREADS, TOKEN_THREADS, ROWS_PER_THREAD,
//   TOKENS_PER_THREAD, QK, BLOCK_WORDS.
// Fragments: dequant/<type>.wgsl (WRaw, wload, wdecode over `weights`), act/<type>.wgsl
//   (ActChunk, ActRaw, act_load, act_values), matmul.wgsl (params: MatmulParams, weights,
//   act).

const_assert ROW_THREADS * TOKEN_THREADS == WG_SIZE;
const_assert ROWS_PER_THREAD * ROW_THREADS == ROWS_PER_WG;
const_assert TOKENS_PER_THREAD * TOKEN_THREADS == TILE_N;
const_assert ROWS_PER_THREAD == 4u;
const_assert TOKENS_PER_THREAD % 4u == 0u;
const_assert QK % K_STEP == 0u;
const_assert K_STEP == 32u;

@group(0) @binding(3) var<storage, read> experts: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> list: array<u32>;
@group(0) @binding(5) var<storage, read> items: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

// 8-value groups per row and step.
const GROUPS: u32 = K_STEP / 8u;
// vec4s per tile row: K_STEP values and one vec4 of padding.
const STRIDE: u32 = K_STEP / 4u + 1u;
// Weight and activation groups each thread loads per step.
const W_UNITS: u32 = ROWS_PER_WG * GROUPS / WG_SIZE;
const X_UNITS: u32 = TILE_N * GROUPS / WG_SIZE;
const_assert W_UNITS * WG_SIZE == ROWS_PER_WG * GROUPS;
const_assert X_UNITS * WG_SIZE == TILE_N * GROUPS;

var<workgroup> w_tile: array<vec4<f32>, ROWS_PER_WG * STRIDE>; // [row][col / 4]
var<workgroup> x_tile: array<vec4<f32>, TILE_N * STRIDE>; // [token][col / 4]
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
    workgroupBarrier();

    // Loads: weight unit u = li + i * WG_SIZE is group u / ROWS_PER_WG of row u % ROWS_PER_WG
    // (a warp stores 32 rows of one group: distinct banks); activation unit u is group
    // u % GROUPS of token u / GROUPS (a warp reads whole 128-byte rows).
    let blocks_per_row = params.n_cols / QK;
    let expert_rows = (expert - params.expert_base) * params.n_rows;
    var w_block: array<u32, W_UNITS>;
    for (var i = 0u; i < W_UNITS; i++) {
        let row = min(row0 + (li + i * WG_SIZE) % ROWS_PER_WG, params.n_rows - 1u);
        w_block[i] = (expert_rows + row) * blocks_per_row;
    }
    var x_chunk: array<u32, X_UNITS>;
    for (var i = 0u; i < X_UNITS; i++) {
        let c = (li + i * WG_SIZE) / GROUPS;
        x_chunk[i] = (tile_pairs[c] / params.act_row_div) * (params.n_cols / 8u);
    }
    var w_raw: array<WRaw, W_UNITS>;
    var x_raw: array<ActRaw, X_UNITS>;
    for (var i = 0u; i < W_UNITS; i++) {
        let col = 8u * ((li + i * WG_SIZE) / ROWS_PER_WG);
        w_raw[i] = wload(w_block[i] + col / QK, (col % QK) / 8u);
    }
    for (var i = 0u; i < X_UNITS; i++) {
        let u = li + i * WG_SIZE;
        if u / GROUPS < n_tokens {
            x_raw[i] = act_load(x_chunk[i] + u % GROUPS);
        } else {
            x_raw[i] = ActRaw();
        }
    }

    // The outputs this thread accumulates; whether any of its tokens exist.
    let tr = li % ROW_THREADS;
    let tc = li / ROW_THREADS;
    let busy = tc * TOKENS_PER_THREAD < n_tokens;
    var acc: array<vec4<f32>, TOKENS_PER_THREAD>;

    for (var k0 = 0u; k0 < params.n_cols; k0 += K_STEP) {
        for (var i = 0u; i < W_UNITS; i++) {
            let u = li + i * WG_SIZE;
            let g = u / ROWS_PER_WG;
            let v = wdecode(w_raw[i], ((k0 + 8u * g) % QK) / 8u);
            let at = (u % ROWS_PER_WG) * STRIDE + 2u * g;
            w_tile[at] = vec4<f32>(v[0], v[1], v[2], v[3]);
            w_tile[at + 1u] = vec4<f32>(v[4], v[5], v[6], v[7]);
        }
        for (var i = 0u; i < X_UNITS; i++) {
            let u = li + i * WG_SIZE;
            let v = act_values(x_raw[i]);
            let at = (u / GROUPS) * STRIDE + 2u * (u % GROUPS);
            x_tile[at] = vec4<f32>(v[0], v[1], v[2], v[3]);
            x_tile[at + 1u] = vec4<f32>(v[4], v[5], v[6], v[7]);
        }
        workgroupBarrier();

        let next = k0 + K_STEP;
        if next < params.n_cols {
            for (var i = 0u; i < W_UNITS; i++) {
                let col = next + 8u * ((li + i * WG_SIZE) / ROWS_PER_WG);
                w_raw[i] = wload(w_block[i] + col / QK, (col % QK) / 8u);
            }
            for (var i = 0u; i < X_UNITS; i++) {
                let u = li + i * WG_SIZE;
                if u / GROUPS < n_tokens {
                    x_raw[i] = act_load(x_chunk[i] + next / 8u + u % GROUPS);
                }
            }
        }

        if busy {
            for (var k = 0u; k < K_STEP / 4u; k++) {
                let w0 = w_tile[tr * STRIDE + k];
                let w1 = w_tile[(tr + ROW_THREADS) * STRIDE + k];
                let w2 = w_tile[(tr + 2u * ROW_THREADS) * STRIDE + k];
                let w3 = w_tile[(tr + 3u * ROW_THREADS) * STRIDE + k];
                for (var j = 0u; j < TOKENS_PER_THREAD; j++) {
                    let x = x_tile[(tc * TOKENS_PER_THREAD + j) * STRIDE + k];
                    var a = acc[j];
                    a = fma(vec4<f32>(w0.x, w1.x, w2.x, w3.x), vec4<f32>(x.x), a);
                    a = fma(vec4<f32>(w0.y, w1.y, w2.y, w3.y), vec4<f32>(x.y), a);
                    a = fma(vec4<f32>(w0.z, w1.z, w2.z, w3.z), vec4<f32>(x.z), a);
                    a = fma(vec4<f32>(w0.w, w1.w, w2.w, w3.w), vec4<f32>(x.w), a);
                    acc[j] = a;
                }
            }
        }
        workgroupBarrier();
    }

    for (var j = 0u; j < TOKENS_PER_THREAD; j++) {
        let c = tc * TOKENS_PER_THREAD + j;
        if c < n_tokens {
            for (var i = 0u; i < ROWS_PER_THREAD; i++) {
                let row = row0 + tr + i * ROW_THREADS;
                if row < params.n_rows {
                    y[y_at(tile_pairs[c], row)] = acc[j][i];
                }
            }
        }
    }
}
