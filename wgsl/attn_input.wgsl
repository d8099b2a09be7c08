// One layer's q, k and v rows made ready for attention (Backend::attention in the runtime):
// workgroup (h, t) takes head h of row t of `qkv`, whose rows hold the n_heads query heads, then
// the n_kv_heads key heads, then the n_kv_heads value heads. A query or key head is RMS-normed
// (attn_input/norm.wgsl; attn_input/plain.wgsl leaves it) and rotated by the angles of position
// pos0 + t of `angles`, entry k the (cos, sin) of position * freq_k (computed on the host in f64,
// as the CPU reference does): pairs (k, k + n_half) in the NeoX layout, (2k, 2k + 1) in the normal
// one; values past 2 * n_half pass through. Queries go to q (T, n_heads * head_dim), keys and
// values to cache rows pos0 + t, packed as the cache stores them.
// Token t is row row0 + t of `qkv`. With attn/seq_table.wgsl the tokens are of different
// sequences, each at its own position of its own region of one arena (seq_entry(t)).
//
// The head is staged in workgroup memory, so each thread computes two adjacent outputs (one
// packed pair) from values other threads loaded.
//
// Every loop has a bound uniform over the workgroup, every barrier is in uniform control flow
// (the head's kind depends only on the workgroup) and every workgroup-array index is in range
// by construction.
//
// Consts: WG_SIZE.
// Fragments: kv/<type>.wgsl (KvPair, kv_pack), reduce/sum.wgsl (workgroup_sum),
//   attn_input/norm.wgsl or attn_input/plain.wgsl (NORM, norm_weight), attn/seq_one.wgsl or
//   attn/seq_table.wgsl (seq_entry).
// Params: AttnInputParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: AttnInputParams;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> angles: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> q: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> k_cache: array<KvPair>;
@group(0) @binding(5) var<storage, read_write> v_cache: array<KvPair>;

// The widest head of the generated attention kernels (HEAD_DIMS).
const MAX_HEAD_DIM: u32 = 256u;
const QUERY: u32 = 0u;
const KEY: u32 = 1u;
const VALUE: u32 = 2u;

var<workgroup> head: array<f32, MAX_HEAD_DIM>;
var<workgroup> partial: array<f32, WG_SIZE>;

// Value i of the staged head, normed.
fn normed(kind: u32, i: u32, scale: f32) -> f32 {
    return head[i] * scale * norm_weight(kind, i);
}

// Output i of a query or key head at position `pos`: normed, then rotated.
fn rotated(kind: u32, pos: u32, i: u32, scale: f32) -> f32 {
    let x = normed(kind, i, scale);
    let n_half = params.n_half;
    if i >= 2u * n_half {
        return x;
    }
    if params.neox != 0u {
        let cs = angles[pos * n_half + i % n_half];
        if i < n_half {
            return x * cs.x - normed(kind, i + n_half, scale) * cs.y;
        }
        return normed(kind, i - n_half, scale) * cs.y + x * cs.x;
    }
    let cs = angles[pos * n_half + i / 2u];
    if i % 2u == 0u {
        return x * cs.x - normed(kind, i + 1u, scale) * cs.y;
    }
    return normed(kind, i - 1u, scale) * cs.y + x * cs.x;
}

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h = wg.x;
    let t = wg.y;
    let n_qk = params.n_heads + params.n_kv_heads;
    if h >= n_qk + params.n_kv_heads || t >= params.n_tokens {
        return;
    }
    let hd = min(params.head_dim, MAX_HEAD_DIM);
    let src = ((params.row0 + t) * (n_qk + params.n_kv_heads) + h) * params.head_dim;
    var kind = VALUE;
    if h < params.n_heads {
        kind = QUERY;
    } else if h < n_qk {
        kind = KEY;
    }

    var sum = 0.0;
    for (var i = li; i < hd; i += WG_SIZE) {
        let v = qkv[src + i];
        head[i] = v;
        sum = fma(v, v, sum);
    }
    var scale = 1.0;
    if NORM && kind != VALUE {
        scale = 1.0 / sqrt(workgroup_sum(li, sum) / f32(hd) + params.eps);
    }
    workgroupBarrier();

    let pairs = hd / 2u;
    // The token's position, and the cache row it goes to.
    let entry = seq_entry(t);
    let pos = entry.y;
    let row = entry.x + pos;
    for (var j = li; j < pairs; j += WG_SIZE) {
        let i = 2u * j;
        switch kind {
            case QUERY: {
                let o = vec2<f32>(rotated(kind, pos, i, scale), rotated(kind, pos, i + 1u, scale));
                q[(t * params.n_heads + h) * pairs + j] = o;
            }
            case KEY: {
                let o = vec2<f32>(rotated(kind, pos, i, scale), rotated(kind, pos, i + 1u, scale));
                let g = h - params.n_heads;
                k_cache[(row * params.n_kv_heads + g) * pairs + j] = kv_pack(o);
            }
            default: {
                let g = h - n_qk;
                let o = vec2<f32>(head[i], head[i + 1u]);
                v_cache[(row * params.n_kv_heads + g) * pairs + j] = kv_pack(o);
            }
        }
    }
}
