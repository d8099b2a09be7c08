// The chunked (WY) form of qwen35moe's gated delta rule, first step: what a chunk of CHUNK
// tokens needs besides the state it starts from, for every (chunk, value head) at once. With
// q, k the L2-normed queries and keys (q times 1/sqrt(HEAD_DIM)), G_t the cumulative sum of
// the head's log decays over the chunk's tokens up to t, b_t its betas, the delta rule's
// updates u_t (S_t = e^(g_t) S_(t-1) + k_t u_t^T) solve
//   (I + L) U = diag(b) (V - diag(e^G) K S_0),   L[t][s] = b_t e^(G_t - G_s) (k_t . k_s), s < t
// and the outputs are o_t = e^(G_t) S_0^T q_t + sum_(s <= t) e^(G_t - G_s) (q_t . k_s) u_s.
// This kernel writes, per (value head, chunk), WY_FLOATS values: T = (I + L)^-1 (CHUNK x
// CHUNK, by forward substitution: unit lower triangular), the masked decayed scores
// QK[t][s] = e^(G_t - G_s) (q_t . k_s) for s <= t (else 0), then per token G, b, and the
// inverse norms of q (times 1/sqrt(HEAD_DIM)) and k. Rows past the batch's last token are
// zero (b = 0, G flat), so a short last chunk solves its valid rows exactly.
//
// Every loop has a bound uniform over the workgroup or a constant one; barriers are in
// uniform control flow.
//
// Consts: WG_SIZE (= CHUNK * CHUNK), HEAD_DIM, CHUNK, WY_FLOATS.
// Fragments: delta/layout.wgsl (head_layout, token_row), delta/gates.wgsl (head_log_decay,
//   head_beta).
// Params: DeltaParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: DeltaParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> proj: array<f32>;
@group(0) @binding(3) var<storage, read> dt_bias: array<f32>;
@group(0) @binding(4) var<storage, read> decay_rate: array<f32>;
@group(0) @binding(5) var<storage, read_write> wy: array<f32>;

const_assert WG_SIZE == CHUNK * CHUNK;
const_assert WY_FLOATS == 2u * CHUNK * CHUNK + 4u * CHUNK;

var<workgroup> inv_q: array<f32, CHUNK>;
var<workgroup> inv_k: array<f32, CHUNK>;
var<workgroup> cum_decay: array<f32, CHUNK>;
var<workgroup> beta: array<f32, CHUNK>;
var<workgroup> lower: array<f32, WG_SIZE>;
var<workgroup> inverse: array<f32, WG_SIZE>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let c = wg.x;
    let h = wg.y;
    let n_chunks = (params.n_tokens + CHUNK - 1u) / CHUNK;
    if c >= n_chunks || h >= params.n_v_heads {
        return;
    }
    let at = head_layout(h);
    let t0 = c * CHUNK;
    if li < CHUNK {
        var sq = 0.0;
        var sk = 0.0;
        var g = 0.0;
        var b = 0.0;
        let tok = t0 + li;
        if tok < params.n_tokens {
            let row = token_row(tok) * at.channels;
            for (var i = 0u; i < HEAD_DIM; i++) {
                let qi = x[row + at.q + i];
                let ki = x[row + at.k + i];
                sq = fma(qi, qi, sq);
                sk = fma(ki, ki, sk);
            }
            let p = token_row(tok) * params.proj_cols + at.channels + at.values;
            g = head_log_decay(p, h);
            b = head_beta(p, h);
        }
        inv_q[li] = 1.0 / sqrt(sq + params.eps) / sqrt(f32(HEAD_DIM));
        inv_k[li] = 1.0 / sqrt(sk + params.eps);
        cum_decay[li] = g;
        beta[li] = b;
    }
    workgroupBarrier();
    if li == 0u {
        for (var t = 1u; t < CHUNK; t++) {
            cum_decay[t] += cum_decay[t - 1u];
        }
    }
    workgroupBarrier();

    let t = li / CHUNK;
    let s = li % CHUNK;
    var kk = 0.0;
    var qk = 0.0;
    if s <= t && t0 + t < params.n_tokens {
        let rt = token_row(t0 + t) * at.channels;
        let rs = token_row(t0 + s) * at.channels;
        for (var i = 0u; i < HEAD_DIM; i++) {
            let ks = x[rs + at.k + i];
            kk = fma(x[rt + at.k + i], ks, kk);
            qk = fma(x[rt + at.q + i], ks, qk);
        }
        let decay = exp(cum_decay[t] - cum_decay[s]);
        kk *= inv_k[t] * inv_k[s] * decay * beta[t];
        qk *= inv_q[t] * inv_k[s] * decay;
    }
    lower[li] = select(0.0, kk, s < t);
    inverse[li] = select(0.0, 1.0, s == t);
    let base = (h * n_chunks + c) * WY_FLOATS;
    wy[base + CHUNK * CHUNK + li] = qk;
    workgroupBarrier();
    // Row r of T = e_r - sum_(m < r) L[r][m] T[m][:], rows in order; a thread per column.
    for (var r = 1u; r < CHUNK; r++) {
        if t == r {
            var acc = select(0.0, 1.0, s == r);
            for (var m = 0u; m < r; m++) {
                acc -= lower[r * CHUNK + m] * inverse[m * CHUNK + s];
            }
            inverse[li] = acc;
        }
        workgroupBarrier();
    }
    wy[base + li] = inverse[li];
    if li < CHUNK {
        let scalars = base + 2u * CHUNK * CHUNK + li;
        wy[scalars] = cum_decay[li];
        wy[scalars + CHUNK] = beta[li];
        wy[scalars + 2u * CHUNK] = inv_q[li];
        wy[scalars + 3u * CHUNK] = inv_k[li];
    }
}
