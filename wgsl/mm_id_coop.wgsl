// Grouped matmul over the expert-major work list, cooperative-matrix path: the same work
// decomposition, inputs and output as mm_id.wgsl, with f16 tiles in workgroup memory
// multiplied as FRAG x FRAG cooperative matrices into f32 accumulators.
//
// The output tile (ROWS_PER_WG x TILE_N) is FRAGS fragments, numbered row block major. Subgroup
// s owns fragments s, s + n_subgroups, ...; its accumulators are FRAGS_PER_SUBGROUP matrices,
// enough when subgroups have at most COOP_MAX_SUBGROUP_SIZE lanes (the runtime checks the
// adapter; with smaller subgroups some entries stay unused). Results pass through a
// STAGE_ROWS x TILE_N f32 staging tile, one row band per pass, and are scattered to `y` by
// pair. Rows past n_rows and tokens past the expert's count are masked.
//
// Consts: WG_SIZE, ROWS_PER_WG, TILE_N, K_STEP, FRAG, TOKEN_FRAGS, FRAGS, FRAGS_PER_SUBGROUP,
//   STAGE_ROWS, QK, BLOCK_WORDS.
// Fragments: dequant/<type>.wgsl (dequant8 over `weights`), act/<type>.wgsl (ActChunk, act8),
//   coop/<FRAG>.wgsl (CoopA, CoopB, CoopC).

const_assert ROWS_PER_WG * (K_STEP / 8u) == WG_SIZE;
const_assert QK % K_STEP == 0u;
const_assert K_STEP % FRAG == 0u;
const_assert ROWS_PER_WG % STAGE_ROWS == 0u;
const_assert STAGE_ROWS % FRAG == 0u;
const_assert TOKEN_FRAGS * FRAG == TILE_N;
const_assert FRAGS * FRAG * FRAG == ROWS_PER_WG * TILE_N;

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

var<workgroup> w_tile: array<f16, ROWS_PER_WG * K_STEP>; // [row][col]
var<workgroup> x_tile: array<f16, TILE_N * K_STEP>; // [token][col]
var<workgroup> stage: array<f32, TILE_N * STAGE_ROWS>; // [token][row]
var<workgroup> tile_pairs: array<u32, TILE_N>;

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) n_sg: u32,
) {
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

    let w_row = li / GROUPS_PER_STEP;
    let w_group = li % GROUPS_PER_STEP;
    let w_valid = row0 + w_row < params.n_rows;
    let w_block0 = ((expert - params.expert_base) * params.n_rows + row0 + w_row) * (params.n_cols / QK);
    // Accumulators start as zeros loaded from the staging tile: a loaded value is defined on
    // every backend, where a default-constructed matrix may not be (Metal).
    for (var i = li; i < FRAG * FRAG; i += WG_SIZE) {
        stage[i] = 0.0;
    }
    workgroupBarrier();
    var acc: array<CoopC, FRAGS_PER_SUBGROUP>;
    for (var j = 0u; j < FRAGS_PER_SUBGROUP; j++) {
        acc[j] = coopLoad<CoopC>(&stage[0], FRAG);
    }

    for (var k0 = 0u; k0 < params.n_cols; k0 += K_STEP) {
        var w: array<f32, 8>;
        if w_valid {
            let col = k0 + 8u * w_group;
            w = dequant8(w_block0 + col / QK, (col % QK) / 8u);
        }
        for (var i = 0u; i < 8u; i++) {
            w_tile[w_row * K_STEP + 8u * w_group + i] = f16(w[i]);
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
                x_tile[c * K_STEP + 8u * sub + i] = f16(x[i]);
            }
        }
        workgroupBarrier();
        for (var j = 0u; j < FRAGS_PER_SUBGROUP; j++) {
            let f = sg + j * n_sg;
            if f < FRAGS {
                let rb = f / TOKEN_FRAGS;
                let tb = f % TOKEN_FRAGS;
                for (var kk = 0u; kk < K_STEP; kk += FRAG) {
                    // A: FRAG rows x FRAG cols of the weight tile, row-major.
                    let a = coopLoadT<CoopA>(&w_tile[rb * FRAG * K_STEP + kk], K_STEP);
                    // B: FRAG cols x FRAG tokens; x_tile is token-major, so column-major.
                    let b = coopLoad<CoopB>(&x_tile[tb * FRAG * K_STEP + kk], K_STEP);
                    acc[j] = coopMultiplyAdd(a, b, acc[j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var band = 0u; band < ROWS_PER_WG / STAGE_ROWS; band++) {
        for (var j = 0u; j < FRAGS_PER_SUBGROUP; j++) {
            let f = sg + j * n_sg;
            let rb = f / TOKEN_FRAGS;
            if f < FRAGS && (rb * FRAG) / STAGE_ROWS == band {
                let tb = f % TOKEN_FRAGS;
                let at = tb * FRAG * STAGE_ROWS + rb * FRAG - band * STAGE_ROWS;
                // Column-major store: element (row r, token t) at stage[t * STAGE_ROWS + r].
                coopStore(acc[j], &stage[at], STAGE_ROWS);
            }
        }
        workgroupBarrier();
        for (var i = li; i < TILE_N * STAGE_ROWS; i += WG_SIZE) {
            let c = i / STAGE_ROWS;
            let row = row0 + band * STAGE_ROWS + i % STAGE_ROWS;
            if c < n_tokens && row < params.n_rows {
                y[tile_pairs[c] * params.n_rows + row] = stage[i];
            }
        }
        workgroupBarrier();
    }
}
