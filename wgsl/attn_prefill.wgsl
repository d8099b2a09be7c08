// Causal flash attention of a batch of queries over the cache (attn/common.wgsl
// says what is computed and how rows are numbered).
//
// Workgroup (wg.x, wg.y) takes rows Q_ROWS * wg.x .. + Q_ROWS of key/value head wg.y: every
// query head of the group for Q_ROWS / group consecutive tokens. It walks the keys those rows
// see in tiles of KV_TILE, from the tile of the first row's first key (0, or where its sliding
// window starts) to the last row's diagonal (fully masked tiles are never loaded). Per tile:
//   K tile -> kv_tile; S = Q K^T -> s_tile; V tile -> kv_tile (its loads were issued before S);
//   online softmax -> p_tile; O = alpha * O + P V.
// Threads form Q_ROWS / ROWS_PER_THREAD row groups of ROW_THREADS; thread (rg, tc) owns rows
// rg * ROWS_PER_THREAD .. + ROWS_PER_THREAD, key columns tc + ROW_THREADS * i of S and dims
// tc + ROW_THREADS * i of O, all in registers (accumulators are indexed by constants only).
// Every thread of a row group computes the row maxima itself from s_tile (the same values in
// the same order, so they agree exactly); row sums stay per-thread partials over the thread's
// own columns until the end, where the row's sink (attn/sinks.wgsl) joins them. Tiles hold
// f32 (the cache's f16 values convert exactly), with rows padded by one vec4 so row-parallel
// reads hit distinct banks. Keys past the batch are read clamped to the last one (finite,
// masked) so the poisoned tail of a cache never enters.
//
// Every loop has a constant trip count or a bound uniform over the workgroup; every
// workgroup and per-thread array index is in range by construction (const_asserts below);
// cache indices are clamped to positions the batch wrote.
//
// Consts: WG_SIZE, HEAD_DIM, Q_ROWS, KV_TILE, ROWS_PER_THREAD, ROW_THREADS, COLS_PER_THREAD,
//   DIMS_PER_THREAD, TILE_LOADS.
// Fragments: attn/common.wgsl (MASKED, one_seq, row_keys, row_first_key, out_row), kv/<type>.wgsl
//   (KvOct, kv_oct), attn/sinks.wgsl or attn/no_sinks.wgsl (sink_score).
// Params: AttnParams, declared by the generator from codegen/src/params.rs.

const_assert Q_ROWS / ROWS_PER_THREAD * ROW_THREADS == WG_SIZE;
const_assert Q_ROWS % ROWS_PER_THREAD == 0u;
const_assert COLS_PER_THREAD * ROW_THREADS == KV_TILE;
const_assert DIMS_PER_THREAD * ROW_THREADS == HEAD_DIM;
const_assert HEAD_DIM % 8u == 0u;
const_assert KV_TILE % 4u == 0u;
const_assert ROW_THREADS <= KV_TILE + 4u;
const_assert TILE_LOADS * WG_SIZE >= KV_TILE * (HEAD_DIM / 8u);

@group(0) @binding(0) var<uniform> params: AttnParams;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k_cache: array<KvOct>;
@group(0) @binding(3) var<storage, read> v_cache: array<KvOct>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// vec4s per head row, and per padded tile row.
const Q4: u32 = HEAD_DIM / 4u;
const HSTRIDE: u32 = Q4 + 1u;
const OCTS: u32 = HEAD_DIM / 8u;
// vec4s per padded score row.
const SSTRIDE: u32 = KV_TILE / 4u + 1u;

var<workgroup> q_tile: array<vec4<f32>, Q_ROWS * HSTRIDE>; // [row][dim], pre-scaled
var<workgroup> kv_tile: array<vec4<f32>, KV_TILE * HSTRIDE>; // [key][dim], K then V
var<workgroup> s_tile: array<vec4<f32>, Q_ROWS * SSTRIDE>; // [row][key] scores
var<workgroup> p_tile: array<vec4<f32>, Q_ROWS * SSTRIDE>; // [row][key] weights

// Cache octs per position, this workgroup's first oct in a position, its last key, local id.
var<private> kv_octs: u32;
var<private> head_oct: u32;
var<private> last_key: u32;
var<private> lid: u32;

// Index in the cache of element e of the tile at j0 (key e / OCTS, oct e % OCTS).
fn tile_index(e: u32, j0: u32) -> u32 {
    return min(j0 + e / OCTS, last_key) * kv_octs + head_oct + e % OCTS;
}

// This thread's share of the key (or, with `values`, the value) tile at j0.
fn load_tile(j0: u32, values: bool) -> array<KvOct, TILE_LOADS> {
    var raw: array<KvOct, TILE_LOADS>;
    for (var i = 0u; i < TILE_LOADS; i++) {
        let e = lid + i * WG_SIZE;
        if e < KV_TILE * OCTS {
            let at = tile_index(e, j0);
            if values {
                raw[i] = v_cache[at];
            } else {
                raw[i] = k_cache[at];
            }
        }
    }
    return raw;
}

fn store_tile(raw: array<KvOct, TILE_LOADS>) {
    for (var i = 0u; i < TILE_LOADS; i++) {
        let e = lid + i * WG_SIZE;
        if e < KV_TILE * OCTS {
            let v = kv_oct(raw[i]);
            let at = (e / OCTS) * HSTRIDE + 2u * (e % OCTS);
            kv_tile[at] = v[0];
            kv_tile[at + 1u] = v[1];
        }
    }
}

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    lid = li;
    let seq = one_seq();
    let g = wg.y;
    let r0 = wg.x * Q_ROWS;
    kv_octs = params.n_kv_heads * OCTS;
    head_oct = g * OCTS;
    // Keys 0 .. n_keys cover every row of the tile (the last row sees the most).
    let n_keys = row_keys(seq, min(r0 + Q_ROWS, params.n_rows) - 1u);
    last_key = n_keys - 1u;
    // Keys before the first row's window are seen by no row of the tile.
    let first_tile = row_first_key(seq, r0) / KV_TILE * KV_TILE;

    for (var i = li; i < Q_ROWS * Q4; i += WG_SIZE) {
        let r = i / Q4;
        var v = vec4<f32>(0.0);
        if r0 + r < params.n_rows {
            v = q[out_row(seq, g, r0 + r) * Q4 + i % Q4] * params.scale;
        }
        q_tile[r * HSTRIDE + i % Q4] = v;
    }

    let rg = li / ROW_THREADS;
    let tc = li % ROW_THREADS;
    let row0 = rg * ROWS_PER_THREAD;
    var keys: array<u32, ROWS_PER_THREAD>;
    var first_keys: array<u32, ROWS_PER_THREAD>;
    var m: array<f32, ROWS_PER_THREAD>;
    var l: array<f32, ROWS_PER_THREAD>;
    var o: array<f32, ROWS_PER_THREAD * DIMS_PER_THREAD>;
    for (var k = 0u; k < ROWS_PER_THREAD; k++) {
        keys[k] = row_keys(seq, r0 + row0 + k);
        first_keys[k] = row_first_key(seq, r0 + row0 + k);
        m[k] = MASKED;
        l[k] = 0.0;
    }
    for (var i = 0u; i < ROWS_PER_THREAD * DIMS_PER_THREAD; i++) {
        o[i] = 0.0;
    }

    var k_raw = load_tile(first_tile, false);
    for (var j0 = first_tile; j0 < n_keys; j0 += KV_TILE) {
        store_tile(k_raw);
        workgroupBarrier();
        let v_raw = load_tile(j0, true);

        // S = Q K^T for this thread's rows and columns.
        var s: array<f32, ROWS_PER_THREAD * COLS_PER_THREAD>;
        for (var i = 0u; i < ROWS_PER_THREAD * COLS_PER_THREAD; i++) {
            s[i] = 0.0;
        }
        for (var d4 = 0u; d4 < Q4; d4++) {
            var kk: array<vec4<f32>, COLS_PER_THREAD>;
            for (var c = 0u; c < COLS_PER_THREAD; c++) {
                kk[c] = kv_tile[(tc + c * ROW_THREADS) * HSTRIDE + d4];
            }
            for (var k = 0u; k < ROWS_PER_THREAD; k++) {
                let qv = q_tile[(row0 + k) * HSTRIDE + d4];
                for (var c = 0u; c < COLS_PER_THREAD; c++) {
                    s[k * COLS_PER_THREAD + c] += dot(qv, kk[c]);
                }
            }
        }
        for (var k = 0u; k < ROWS_PER_THREAD; k++) {
            for (var c = 0u; c < COLS_PER_THREAD; c++) {
                let col = tc + c * ROW_THREADS;
                let i = k * COLS_PER_THREAD + c;
                let j = j0 + col;
                s[i] = select(MASKED, s[i], j < keys[k] && j >= first_keys[k]);
                s_tile[(row0 + k) * SSTRIDE + col / 4u][col % 4u] = s[i];
            }
        }
        workgroupBarrier();

        store_tile(v_raw);
        if j0 + KV_TILE < n_keys {
            k_raw = load_tile(j0 + KV_TILE, false);
        }
        // Online softmax: the new row maxima, the rescale of what came before, this tile's
        // weights for this thread's columns.
        for (var k = 0u; k < ROWS_PER_THREAD; k++) {
            var mx = m[k];
            for (var c4 = 0u; c4 < KV_TILE / 4u; c4++) {
                let v = s_tile[(row0 + k) * SSTRIDE + c4];
                mx = max(mx, max(max(v.x, v.y), max(v.z, v.w)));
            }
            let alpha = exp2(m[k] - mx);
            m[k] = mx;
            l[k] *= alpha;
            for (var i = 0u; i < DIMS_PER_THREAD; i++) {
                o[k * DIMS_PER_THREAD + i] *= alpha;
            }
            for (var c = 0u; c < COLS_PER_THREAD; c++) {
                let col = tc + c * ROW_THREADS;
                let sv = s[k * COLS_PER_THREAD + c];
                let p = select(exp2(sv - mx), 0.0, sv == MASKED);
                l[k] += p;
                p_tile[(row0 + k) * SSTRIDE + col / 4u][col % 4u] = p;
            }
        }
        workgroupBarrier();

        // O += P V.
        for (var c4 = 0u; c4 < KV_TILE / 4u; c4++) {
            var pv: array<vec4<f32>, ROWS_PER_THREAD>;
            for (var k = 0u; k < ROWS_PER_THREAD; k++) {
                pv[k] = p_tile[(row0 + k) * SSTRIDE + c4];
            }
            for (var cc = 0u; cc < 4u; cc++) {
                for (var i = 0u; i < DIMS_PER_THREAD; i++) {
                    let d = tc + i * ROW_THREADS;
                    let v = kv_tile[(4u * c4 + cc) * HSTRIDE + d / 4u][d % 4u];
                    for (var k = 0u; k < ROWS_PER_THREAD; k++) {
                        o[k * DIMS_PER_THREAD + i] = fma(pv[k][cc], v, o[k * DIMS_PER_THREAD + i]);
                    }
                }
            }
        }
        workgroupBarrier();
    }

    // Row sums: each thread's partial goes to p_tile (no longer read), then every thread adds
    // the ROW_THREADS partials of its rows and the row's sink, raising the maximum to it.
    for (var k = 0u; k < ROWS_PER_THREAD; k++) {
        p_tile[(row0 + k) * SSTRIDE + tc / 4u][tc % 4u] = l[k];
    }
    workgroupBarrier();
    for (var k = 0u; k < ROWS_PER_THREAD; k++) {
        let r = r0 + row0 + k;
        if r < params.n_rows {
            var sum = 0.0;
            for (var t = 0u; t < ROW_THREADS; t++) {
                sum += p_tile[(row0 + k) * SSTRIDE + t / 4u][t % 4u];
            }
            let row = out_row(seq, g, r);
            let sink = sink_score(row % params.n_heads);
            let mx = max(m[k], sink);
            let alpha = exp2(m[k] - mx);
            sum = sum * alpha + select(exp2(sink - mx), 0.0, sink == MASKED);
            let inv = alpha / sum;
            let at = (params.out_row0 * params.n_heads + row) * HEAD_DIM;
            for (var i = 0u; i < DIMS_PER_THREAD; i++) {
                out[at + tc + i * ROW_THREADS] = o[k * DIMS_PER_THREAD + i] * inv;
            }
        }
    }
}
