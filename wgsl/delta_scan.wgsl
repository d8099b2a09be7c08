// The chunked (WY) form of qwen35moe's gated delta rule, second step: one workgroup per value
// head h walks the batch a chunk of CHUNK tokens at a time (not a token at a time), thread j
// owning column j of the head's state in registers. From delta_wy's T, QK and per-token
// G, b and inverse norms of the chunk, with S the state before the chunk (column j):
//   r_s = b_s (v_s[j] - e^(G_s) k_s . S)        u = T r
//   o_t = e^(G_t) q_t . S + sum_(s <= t) QK[t][s] u_s
//   S   = e^(G_n) S + sum_s e^(G_n - G_s) k_s u_s          (n: the chunk's last token)
// then write_gated per token. Within a chunk the tokens' work is independent given S, so the
// only sequential chain is the chunks'.
//
// Every loop has a bound uniform over the workgroup (params) or a constant one, and every
// barrier (in workgroup_sum) is reached by all threads: the workgroup is exactly one head.
//
// Consts: WG_SIZE (= HEAD_DIM), HEAD_DIM, CHUNK, WY_FLOATS.
// Fragments: reduce/sum.wgsl (workgroup_sum), delta/layout.wgsl (head_layout, token_row),
//   delta/state.wgsl (load_column, store_column),
//   delta/out.wgsl (write_gated).
// Params: DeltaParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: DeltaParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> proj: array<f32>;
@group(0) @binding(3) var<storage, read> wy: array<f32>;
@group(0) @binding(4) var<storage, read> norm: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

const_assert WG_SIZE == HEAD_DIM;

var<workgroup> partial: array<f32, WG_SIZE>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) j: u32) {
    let h = wg.x;
    if h >= params.n_v_heads {
        return;
    }
    let at = head_layout(h);
    let n_chunks = (params.n_tokens + CHUNK - 1u) / CHUNK;
    var s = load_column(h, j);
    var r: array<f32, CHUNK>;
    var u: array<f32, CHUNK>;
    var o: array<f32, CHUNK>;
    for (var c = 0u; c < n_chunks; c++) {
        let t0 = c * CHUNK;
        let n = min(CHUNK, params.n_tokens - t0);
        let wy_at = (h * n_chunks + c) * WY_FLOATS;
        let scalars = wy_at + 2u * CHUNK * CHUNK;
        for (var t = 0u; t < n; t++) {
            let row = token_row(t0 + t) * at.channels;
            var ks = 0.0;
            var qs = 0.0;
            for (var i = 0u; i < HEAD_DIM; i++) {
                ks = fma(x[row + at.k + i], s[i], ks);
                qs = fma(x[row + at.q + i], s[i], qs);
            }
            let decay = exp(wy[scalars + t]);
            let b = wy[scalars + CHUNK + t];
            r[t] = b * (x[row + at.v + j] - decay * ks * wy[scalars + 3u * CHUNK + t]);
            o[t] = decay * qs * wy[scalars + 2u * CHUNK + t];
        }
        for (var t = 0u; t < n; t++) {
            var acc = 0.0;
            for (var m = 0u; m <= t; m++) {
                acc = fma(wy[wy_at + t * CHUNK + m], r[m], acc);
            }
            u[t] = acc;
        }
        let last = wy[scalars + n - 1u];
        for (var t = 0u; t < n; t++) {
            var acc = o[t];
            for (var m = 0u; m <= t; m++) {
                acc = fma(wy[wy_at + CHUNK * CHUNK + t * CHUNK + m], u[m], acc);
            }
            o[t] = acc;
            // u_t's share of the state after the chunk, per unit of raw key.
            r[t] = exp(last - wy[scalars + t]) * wy[scalars + 3u * CHUNK + t] * u[t];
        }
        let chunk_decay = exp(last);
        for (var i = 0u; i < HEAD_DIM; i++) {
            var acc = s[i] * chunk_decay;
            for (var t = 0u; t < n; t++) {
                acc = fma(x[token_row(t0 + t) * at.channels + at.k + i], r[t], acc);
            }
            s[i] = acc;
        }
        for (var t = 0u; t < n; t++) {
            write_gated(j, h, t0 + t, o[t]);
        }
    }
    store_column(h, j, s);
}
