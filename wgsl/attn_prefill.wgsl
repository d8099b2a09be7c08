// Causal flash attention over the KV cache for a batch of queries (prefill):
//   out[t][h] = sum_j softmax_j(scale * q[t][h] . K[j][g]) V[j][g],  j = 0 ..= pos0 + t,
// with g = h / (n_heads / n_kv_heads) the query head's key/value head (grouped-query). The
// cache already holds the batch's own keys and values (kv_store runs first).
//
// Workgroup (wg.x, wg.y) takes queries Q_TILE * wg.x .. + Q_TILE of head wg.y and walks the
// keys in tiles of KV_TILE: scores S = Q K^T into workgroup memory (Q pre-scaled), an online
// softmax per query row (running max and sum, one thread per row, rescale factor alpha), then
// O = alpha * O + P V with each thread holding DIMS_PER_THREAD output values of one query in
// registers (dims d0, d0 + THREADS_PER_QUERY, ...). K and V tiles share one buffer; rows are
// padded to ROW values so row- and column-parallel reads hit distinct banks. Masked scores
// (future keys, queries past the batch) are MASKED and never enter the sums.
//
// Consts: WG_SIZE, HEAD_DIM, Q_TILE, KV_TILE, THREADS_PER_QUERY, DIMS_PER_THREAD.
// Fragments: kv/<type>.wgsl (KvPair, kv_unpack).

const_assert Q_TILE * THREADS_PER_QUERY == WG_SIZE;
const_assert THREADS_PER_QUERY * DIMS_PER_THREAD == HEAD_DIM;
const_assert HEAD_DIM % 2u == 0u;

struct AttnParams {
    n_tokens: u32,
    pos0: u32,
    n_heads: u32,
    n_kv_heads: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: AttnParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k_cache: array<KvPair>;
@group(0) @binding(3) var<storage, read> v_cache: array<KvPair>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const ROW: u32 = HEAD_DIM + 1u;
const HALF_DIM: u32 = HEAD_DIM / 2u;
const MASKED: f32 = -3.0e38;

var<workgroup> q_tile: array<f32, Q_TILE * ROW>;
var<workgroup> kv_tile: array<f32, KV_TILE * ROW>;
var<workgroup> s_tile: array<f32, Q_TILE * KV_TILE>;
var<workgroup> row_max: array<f32, Q_TILE>;
var<workgroup> row_sum: array<f32, Q_TILE>;
var<workgroup> row_alpha: array<f32, Q_TILE>;

// Keys (`values` false) or values of positions j0 .. j0 + KV_TILE into kv_tile; zeros past n_keys.
fn load_kv_tile(li: u32, values: bool, j0: u32, n_keys: u32, first: u32, kv_pairs: u32) {
    for (var i = li; i < KV_TILE * HALF_DIM; i += WG_SIZE) {
        let c = i / HALF_DIM;
        let d = 2u * (i % HALF_DIM);
        var pair = vec2<f32>(0.0);
        if j0 + c < n_keys {
            let at = (j0 + c) * kv_pairs + first + d / 2u;
            if values {
                pair = kv_unpack(v_cache[at]);
            } else {
                pair = kv_unpack(k_cache[at]);
            }
        }
        kv_tile[c * ROW + d] = pair.x;
        kv_tile[c * ROW + d + 1u] = pair.y;
    }
}

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let head = wg.y;
    let kv_head = head / (params.n_heads / params.n_kv_heads);
    let q0 = wg.x * Q_TILE;
    let q_width = params.n_heads * HEAD_DIM;
    let kv_pairs = params.n_kv_heads * HALF_DIM;
    let first = kv_head * HALF_DIM;

    for (var i = li; i < Q_TILE * HEAD_DIM; i += WG_SIZE) {
        let r = i / HEAD_DIM;
        let d = i % HEAD_DIM;
        var v = 0.0;
        if q0 + r < params.n_tokens {
            v = q[(q0 + r) * q_width + head * HEAD_DIM + d] * params.scale;
        }
        q_tile[r * ROW + d] = v;
    }
    if li < Q_TILE {
        row_max[li] = MASKED;
        row_sum[li] = 0.0;
    }
    let my_query = li / THREADS_PER_QUERY;
    let my_dim = li % THREADS_PER_QUERY;
    var acc: array<f32, DIMS_PER_THREAD>;
    // Keys 0 .. n_keys cover every query of the tile.
    let n_keys = params.pos0 + min(q0 + Q_TILE, params.n_tokens);
    workgroupBarrier();

    for (var j0 = 0u; j0 < n_keys; j0 += KV_TILE) {
        load_kv_tile(li, false, j0, n_keys, first, kv_pairs);
        workgroupBarrier();
        for (var i = li; i < Q_TILE * KV_TILE; i += WG_SIZE) {
            let r = i / KV_TILE;
            let c = i % KV_TILE;
            var s = MASKED;
            if q0 + r < params.n_tokens && j0 + c <= params.pos0 + q0 + r {
                s = 0.0;
                for (var d = 0u; d < HEAD_DIM; d++) {
                    s = fma(q_tile[r * ROW + d], kv_tile[c * ROW + d], s);
                }
            }
            s_tile[i] = s;
        }
        workgroupBarrier();
        if li < Q_TILE {
            let m_old = row_max[li];
            var m = m_old;
            for (var c = 0u; c < KV_TILE; c++) {
                m = max(m, s_tile[li * KV_TILE + c]);
            }
            let alpha = exp(m_old - m);
            var l = row_sum[li] * alpha;
            for (var c = 0u; c < KV_TILE; c++) {
                let s = s_tile[li * KV_TILE + c];
                let p = select(exp(s - m), 0.0, s == MASKED);
                s_tile[li * KV_TILE + c] = p;
                l += p;
            }
            row_max[li] = m;
            row_sum[li] = l;
            row_alpha[li] = alpha;
        }
        workgroupBarrier();
        load_kv_tile(li, true, j0, n_keys, first, kv_pairs);
        workgroupBarrier();
        let alpha = row_alpha[my_query];
        for (var k = 0u; k < DIMS_PER_THREAD; k++) {
            let d = my_dim + k * THREADS_PER_QUERY;
            var o = acc[k] * alpha;
            for (var c = 0u; c < KV_TILE; c++) {
                o = fma(s_tile[my_query * KV_TILE + c], kv_tile[c * ROW + d], o);
            }
            acc[k] = o;
        }
        workgroupBarrier();
    }

    if q0 + my_query < params.n_tokens {
        let inv = 1.0 / row_sum[my_query];
        let row = (q0 + my_query) * q_width + head * HEAD_DIM;
        for (var k = 0u; k < DIMS_PER_THREAD; k++) {
            out[row + my_dim + k * THREADS_PER_QUERY] = acc[k] * inv;
        }
    }
}
