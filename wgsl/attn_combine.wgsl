// Attention of a few queries (decode), second pass: merges the n_splits partial softmaxes
// attn_decode.wgsl wrote for row wg.x (token t, query head h: t * n_heads + h), stored at
// row out_row0 * n_heads + wg.x of `out` (token t is out's token out_row0 + t):
//   M = max_s m_s,  out = sum_s exp2(m_s - M) acc_s / sum_s exp2(m_s - M) l_s.
// A split in which the row saw no position has m = MASKED (attn/common.wgsl), l = 0, acc = 0
// and weighs 0. The row's sink (attn/sinks.wgsl) enters here, once, as one more partial:
// m = sink, l = 1, acc = 0.
// Thread i computes dims 4 * i .. + 4.
//
// Consts: WG_SIZE, HEAD_DIM.
// Fragments: attn/common.wgsl (MASKED), attn/sinks.wgsl or attn/no_sinks.wgsl (sink_score).
// Params: AttnParams, declared by the generator from codegen/src/params.rs.

const_assert HEAD_DIM / 4u <= WG_SIZE;

@group(0) @binding(0) var<uniform> params: AttnParams;
@group(0) @binding(1) var<storage, read> part_acc: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> part_ml: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;

const Q4: u32 = HEAD_DIM / 4u;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = wg.x;
    if li >= Q4 {
        return;
    }
    let first = row * params.n_splits;
    // One pass, rescaling the running sums whenever the maximum grows (the loads of the
    // splits do not wait on each other).
    var mx = sink_score(row % params.n_heads);
    var acc = vec4<f32>(0.0);
    var l = select(1.0, 0.0, mx == MASKED);
    for (var s = 0u; s < params.n_splits; s++) {
        let ml = part_ml[first + s];
        let part = part_acc[(first + s) * Q4 + li];
        let m = max(mx, ml.x);
        let old = exp2(mx - m);
        let w = exp2(ml.x - m);
        acc = fma(vec4<f32>(w), part, acc * old);
        l = fma(w, ml.y, l * old);
        mx = m;
    }
    out[(params.out_row0 * params.n_heads + row) * Q4 + li] = acc / l;
}
