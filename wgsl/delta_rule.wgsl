// qwen35moe's gated delta rule in its recurrent form, token by token, and the gated RMS norm of
// its output. One workgroup per value head h (reading key head h % n_k_heads), thread j owning
// column j of the head's HEAD_DIM x HEAD_DIM state in registers for the whole batch. Per
// token, from the convolved x = [q | k | v] and the projection row [qkv | z | beta | alpha]:
//   q, k = L2-normed (x / sqrt(sum x^2 + eps)), q times 1/sqrt(HEAD_DIM)
//   decay = exp(head_log_decay), b = head_beta
//   S = decay S;  S[:, j] += k (b (v[j] - S[:, j] . k));  o[j] = S[:, j] . q
// then write_gated. The column is read before the first token and written after the last.
//
// Every loop has a bound uniform over the workgroup (params) or a constant one, and every
// barrier (in workgroup_sum) is reached by all threads: the workgroup is exactly one head.
//
// Consts: WG_SIZE (= HEAD_DIM), HEAD_DIM.
// Fragments: reduce/sum.wgsl (workgroup_sum), delta/layout.wgsl (head_layout, token_row),
//   delta/state.wgsl (load_column, store_column),
//   delta/gates.wgsl (head_log_decay, head_beta), delta/out.wgsl (write_gated).
// Params: DeltaParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: DeltaParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> proj: array<f32>;
@group(0) @binding(3) var<storage, read> dt_bias: array<f32>;
@group(0) @binding(4) var<storage, read> decay_rate: array<f32>;
@group(0) @binding(5) var<storage, read> norm: array<f32>;
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

const_assert WG_SIZE == HEAD_DIM;

var<workgroup> partial: array<f32, WG_SIZE>;
var<workgroup> q: array<f32, HEAD_DIM>;
var<workgroup> k: array<f32, HEAD_DIM>;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) j: u32) {
    let h = wg.x;
    if h >= params.n_v_heads {
        return;
    }
    let at = head_layout(h);
    let scale = 1.0 / sqrt(f32(HEAD_DIM));
    var s = load_column(h, j);
    for (var t = 0u; t < params.n_tokens; t++) {
        let row = token_row(t) * at.channels;
        let qj = x[row + at.q + j];
        let kj = x[row + at.k + j];
        let vj = x[row + at.v + j];
        let q_norm = 1.0 / sqrt(workgroup_sum(j, qj * qj) + params.eps);
        let k_norm = 1.0 / sqrt(workgroup_sum(j, kj * kj) + params.eps);
        q[j] = qj * q_norm * scale;
        k[j] = kj * k_norm;
        workgroupBarrier();

        let p = token_row(t) * params.proj_cols + at.channels + at.values;
        let decay = exp(head_log_decay(p, h));
        let b = head_beta(p, h);
        var sk = 0.0;
        for (var i = 0u; i < HEAD_DIM; i++) {
            s[i] *= decay;
            sk = fma(s[i], k[i], sk);
        }
        let delta = (vj - sk) * b;
        var o = 0.0;
        for (var i = 0u; i < HEAD_DIM; i++) {
            s[i] = fma(k[i], delta, s[i]);
            o = fma(s[i], q[i], o);
        }
        write_gated(j, h, t, o);
    }
    store_column(h, j, s);
}
