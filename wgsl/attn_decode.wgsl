// Attention of one query per workgroup (decode and other small batches): head wg.x, batch row
// wg.y at position pos0 + wg.y, over cached positions 0 ..= pos0 + wg.y (the same result as
// attn_prefill.wgsl, see there). Positions go in chunks of WG_SIZE: each thread scores one
// position (its cached key against the pre-scaled query in workgroup memory), the chunk's max
// and sum come from trees in workgroup memory and update a running max and sum, and thread
// (slice, d) accumulates dim d of the chunk's positions slice, slice + SLICES, ... into a
// register; the slices are summed at the end. Every thread holds the same running max and sum.
//
// Consts: WG_SIZE, HEAD_DIM, SLICES.
// Fragments: kv/<type>.wgsl (KvPair, kv_unpack).

const_assert SLICES * HEAD_DIM <= WG_SIZE;
const_assert HEAD_DIM % 2u == 0u;
const_assert 0u == (WG_SIZE & (WG_SIZE - 1u));

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

const HALF_DIM: u32 = HEAD_DIM / 2u;
const MASKED: f32 = -3.0e38;

var<workgroup> q_vec: array<f32, HEAD_DIM>;
var<workgroup> probs: array<f32, WG_SIZE>;
var<workgroup> tree: array<f32, WG_SIZE>;
var<workgroup> partial: array<f32, SLICES * HEAD_DIM>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let head = wg.x;
    let t = wg.y;
    if t >= params.n_tokens {
        return;
    }
    let q_width = params.n_heads * HEAD_DIM;
    let kv_pairs = params.n_kv_heads * HALF_DIM;
    let first = (head / (params.n_heads / params.n_kv_heads)) * HALF_DIM;
    let n_pos = params.pos0 + t + 1u;
    if li < HEAD_DIM {
        q_vec[li] = q[t * q_width + head * HEAD_DIM + li] * params.scale;
    }
    let slice = li / HEAD_DIM;
    let d = li % HEAD_DIM;
    var m = MASKED;
    var l = 0.0;
    var o = 0.0;
    workgroupBarrier();

    for (var j0 = 0u; j0 < n_pos; j0 += WG_SIZE) {
        var s = MASKED;
        if j0 + li < n_pos {
            let at = (j0 + li) * kv_pairs + first;
            s = 0.0;
            for (var i = 0u; i < HALF_DIM; i++) {
                let k = kv_unpack(k_cache[at + i]);
                s = fma(q_vec[2u * i], k.x, s);
                s = fma(q_vec[2u * i + 1u], k.y, s);
            }
        }
        tree[li] = s;
        workgroupBarrier();
        for (var st = WG_SIZE / 2u; st > 0u; st >>= 1u) {
            if li < st {
                tree[li] = max(tree[li], tree[li + st]);
            }
            workgroupBarrier();
        }
        let m_new = max(m, tree[0]);
        workgroupBarrier();
        let p = select(exp(s - m_new), 0.0, s == MASKED);
        probs[li] = p;
        tree[li] = p;
        workgroupBarrier();
        for (var st = WG_SIZE / 2u; st > 0u; st >>= 1u) {
            if li < st {
                tree[li] += tree[li + st];
            }
            workgroupBarrier();
        }
        let alpha = exp(m - m_new);
        l = l * alpha + tree[0];
        m = m_new;
        o *= alpha;
        if slice < SLICES {
            for (var c = slice; c < WG_SIZE && j0 + c < n_pos; c += SLICES) {
                let v = kv_unpack(v_cache[(j0 + c) * kv_pairs + first + d / 2u]);
                o = fma(probs[c], select(v.x, v.y, d % 2u == 1u), o);
            }
        }
        workgroupBarrier();
    }

    if slice < SLICES {
        partial[slice * HEAD_DIM + d] = o;
    }
    workgroupBarrier();
    if li < HEAD_DIM {
        var sum = 0.0;
        for (var i = 0u; i < SLICES; i++) {
            sum += partial[i * HEAD_DIM + li];
        }
        out[t * q_width + head * HEAD_DIM + li] = sum / l;
    }
}
