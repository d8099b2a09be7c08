// Grouped matmul over the expert-major work list, cooperative-matrix path: the same work
// decomposition, inputs and output as mm_id.wgsl, with f16 tiles in workgroup memory
// multiplied as FRAG x FRAG cooperative matrices into f32 accumulators.
//
// Per K_STEP columns, the weight tile (ROWS_PER_WG x K_STEP) and the activation tile
// (TILE_N x K_STEP, gathered through the pair list) are stored row-major as f16 (TileElem
// holds TILE_PACK of them), each row padded by 8 halves so the fragment loads of a subgroup
// hit distinct banks; each thread loads at most one 8-value group of each. The loads run
// STAGES steps ahead: a thread holds the words of STAGES steps in registers, issues the loads
// of step s + STAGES right after storing step s, and decodes them STAGES steps later, so
// their latency overlaps STAGES multiplies.
//
// The output tile (ROWS_PER_WG x TILE_N) is cut into SLOTS rectangles of SLOT_ROW_FRAGS x
// SLOT_TOKEN_FRAGS fragments, SLOT_COLS of them side by side along the tokens; subgroup s
// computes slot s, keeping its accumulators in registers for the whole K loop and reusing
// each loaded A fragment for SLOT_TOKEN_FRAGS products and each B fragment for
// SLOT_ROW_FRAGS. Slots whose first token or row is past the end skip the multiply. The
// layout needs SLOTS subgroups (subgroups of at most WG_SIZE / SLOTS lanes: the runtime
// refuses the path on adapters with wider ones); should the adapter run fewer, every output
// of the workgroup is written as NaN rather than silently wrong. Results leave through a
// per-slot FRAG x FRAG staging tile, one fragment per slot at a time, and are scattered to
// `y` by pair. Rows past n_rows and tokens past the expert's count are not stored.
//
// Every loop has a constant trip count or a uniform bound (the host may run this module
// without naga's loop guards); every workgroup-memory index is in range by construction.
//
// Consts: WG_SIZE, ROWS_PER_WG, TILE_N, K_STEP, STAGES, FRAG, SLOTS, SLOT_COLS,
//   SLOT_ROW_FRAGS, SLOT_TOKEN_FRAGS, QK, BLOCK_WORDS.
// Fragments: dequant/<type>.wgsl (WRaw, wload, wdecode over `weights`), act/<type>.wgsl
//   (ActChunk, ActRaw, act_load, act_values), coop/<FRAG>.wgsl (CoopA, CoopB, CoopC, TileElem,
//   TILE_PACK, tile_elems8), matmul.wgsl (params: MatmulParams, weights, act).

const_assert K_STEP % 32u == 0u;
const_assert K_STEP % FRAG == 0u;
const_assert SLOTS % SLOT_COLS == 0u;
const_assert SLOT_ROW_FRAGS * FRAG * (SLOTS / SLOT_COLS) == ROWS_PER_WG;
const_assert SLOT_COLS * SLOT_TOKEN_FRAGS * FRAG == TILE_N;
const_assert WG_SIZE % SLOTS == 0u;
const_assert ROWS_PER_WG * (K_STEP / 8u) <= WG_SIZE;
const_assert TILE_N * (K_STEP / 8u) <= WG_SIZE;

@group(0) @binding(3) var<storage, read> experts: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> list: array<u32>;
@group(0) @binding(5) var<storage, read> items: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

// 8-value groups per row and step.
const GROUPS: u32 = K_STEP / 8u;
// Tile elements per row: K_STEP values and 8 halves of padding.
const STRIDE: u32 = (K_STEP + 8u) / TILE_PACK;
const SLOT_FRAGS: u32 = SLOT_ROW_FRAGS * SLOT_TOKEN_FRAGS;
const FRAG_VALUES: u32 = FRAG * FRAG;

var<workgroup> a_tile: array<TileElem, ROWS_PER_WG * STRIDE>; // [row][col]
var<workgroup> b_tile: array<TileElem, TILE_N * STRIDE>; // [token][col]
var<workgroup> stage: array<f32, SLOTS * FRAG_VALUES>; // per slot, [token][row]
var<workgroup> tile_pairs: array<u32, TILE_N>;

// This thread's loads: group li % GROUPS of weight row li / GROUPS (if li is below
// ROWS_PER_WG * GROUPS) and of token li / GROUPS (if that token exists).
var<private> a_loads: bool;
var<private> a_block: u32;
var<private> b_loads: bool;
var<private> b_chunk: u32;
var<private> group: u32;

// The words of this thread's weight group at column k0 + 8 * group (zeros past n_cols).
fn load_a(k0: u32) -> WRaw {
    let col = k0 + 8u * group;
    if a_loads && col < params.n_cols {
        return wload(a_block + col / QK, (col % QK) / 8u);
    }
    return WRaw();
}

// The same for this thread's activation group (zeros for tokens past the count).
fn load_b(k0: u32) -> ActRaw {
    let col = k0 + 8u * group;
    if b_loads && col < params.n_cols {
        return act_load(b_chunk + col / 8u);
    }
    return ActRaw();
}

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
    // Accumulators start as zeros loaded from the staging tile: a loaded value is defined on
    // every backend, where a default-constructed matrix may not be (Metal).
    for (var i = li; i < FRAG_VALUES; i += WG_SIZE) {
        stage[i] = 0.0;
    }
    workgroupBarrier();

    // A weight row past n_rows reads a valid row (clamped; its outputs are not stored).
    let line = li / GROUPS;
    group = li % GROUPS;
    a_loads = line < ROWS_PER_WG;
    let row = min(row0 + line, params.n_rows - 1u);
    a_block = ((expert - params.expert_base) * params.n_rows + row) * (params.n_cols / QK);
    b_loads = line < n_tokens;
    b_chunk = (tile_pairs[min(line, TILE_N - 1u)] / params.act_row_div) * (params.n_cols / 8u);
    var a_raw: array<WRaw, STAGES>;
    var b_raw: array<ActRaw, STAGES>;
    for (var h = 0u; h < STAGES; h++) {
        a_raw[h] = load_a(h * K_STEP);
        b_raw[h] = load_b(h * K_STEP);
    }

    // This subgroup's slot: its first row and token fragment, and whether it has work.
    let complete = n_sg >= SLOTS;
    let rb0 = (sg / SLOT_COLS) * SLOT_ROW_FRAGS;
    let tb0 = (sg % SLOT_COLS) * SLOT_TOKEN_FRAGS;
    let busy = sg < SLOTS && tb0 * FRAG < n_tokens && row0 + rb0 * FRAG < params.n_rows;
    var acc: array<CoopC, SLOT_FRAGS>;
    for (var f = 0u; f < SLOT_FRAGS; f++) {
        acc[f] = coopLoad<CoopC>(&stage[0], FRAG);
    }

    for (var k0 = 0u; k0 < params.n_cols; k0 += STAGES * K_STEP) {
        for (var h = 0u; h < STAGES; h++) {
            let k = k0 + h * K_STEP;
            if k < params.n_cols {
                let at = line * STRIDE + group * (8u / TILE_PACK);
                if a_loads {
                    let e = tile_elems8(wdecode(a_raw[h], ((k + 8u * group) % QK) / 8u));
                    for (var j = 0u; j < 8u / TILE_PACK; j++) {
                        a_tile[at + j] = e[j];
                    }
                }
                if line < TILE_N {
                    let e = tile_elems8(act_values(b_raw[h]));
                    for (var j = 0u; j < 8u / TILE_PACK; j++) {
                        b_tile[at + j] = e[j];
                    }
                }
                workgroupBarrier();

                let next = k + STAGES * K_STEP;
                if next < params.n_cols {
                    a_raw[h] = load_a(next);
                    b_raw[h] = load_b(next);
                }

                if busy {
                    for (var kk = 0u; kk < K_STEP; kk += FRAG) {
                        var a: array<CoopA, SLOT_ROW_FRAGS>;
                        var b: array<CoopB, SLOT_TOKEN_FRAGS>;
                        for (var r = 0u; r < SLOT_ROW_FRAGS; r++) {
                            // FRAG rows x FRAG cols of the weight tile, row-major.
                            let at = (rb0 + r) * FRAG * STRIDE + kk / TILE_PACK;
                            a[r] = coopLoadT<CoopA>(&a_tile[at], STRIDE);
                        }
                        for (var t = 0u; t < SLOT_TOKEN_FRAGS; t++) {
                            // FRAG cols x FRAG tokens; the tile is token-major, so column-major.
                            let at = (tb0 + t) * FRAG * STRIDE + kk / TILE_PACK;
                            b[t] = coopLoad<CoopB>(&b_tile[at], STRIDE);
                        }
                        for (var r = 0u; r < SLOT_ROW_FRAGS; r++) {
                            for (var t = 0u; t < SLOT_TOKEN_FRAGS; t++) {
                                let f = r * SLOT_TOKEN_FRAGS + t;
                                acc[f] = coopMultiplyAdd(a[r], b[t], acc[f]);
                            }
                        }
                    }
                }
                workgroupBarrier();
            }
        }
    }

    let poison = bitcast<f32>(0x7fc00000u);
    for (var f = 0u; f < SLOT_FRAGS; f++) {
        if busy {
            // Column-major: element (row r, token t) at t * FRAG + r.
            coopStore(acc[f], &stage[sg * FRAG_VALUES], FRAG);
        }
        workgroupBarrier();
        for (var v = li; v < SLOTS * FRAG_VALUES; v += WG_SIZE) {
            let s = v / FRAG_VALUES;
            let e = v % FRAG_VALUES;
            let row = row0 + ((s / SLOT_COLS) * SLOT_ROW_FRAGS + f / SLOT_TOKEN_FRAGS) * FRAG
                + e % FRAG;
            let c = ((s % SLOT_COLS) * SLOT_TOKEN_FRAGS + f % SLOT_TOKEN_FRAGS) * FRAG + e / FRAG;
            if c < n_tokens && row < params.n_rows {
                y[y_at(tile_pairs[c], row)] = select(poison, stage[v], complete);
            }
        }
        workgroupBarrier();
    }
}
