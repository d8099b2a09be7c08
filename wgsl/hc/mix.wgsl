// hc_pre's weights for a sub-block: the pre weights, and the mixing values hc_post reads,
// written to `mix` (pre, post, then comb row by row):
//   post = 2 sigmoid(a) over mixes HC .. 2 HC (factor scale[1])
//   comb = a row softmax of a (over dst, per src; factor scale[2]) plus eps, then Sinkhorn: a
//          column pass, then sinkhorn_iterations - 1 times a row pass and a column pass, each
//          sum plus eps
// Expects: pre_of, sigmoid, mixes, scale, base, params (hc_pre.wgsl).
// Defines: binding 6 (mix), token_weights.

// A comb row is a vec4.
const_assert N_MIXES == (2u + HC) * HC;

@group(0) @binding(6) var<storage, read_write> mix: array<f32>;

// Divides every column of c by its sum plus eps.
fn normalize_cols(c: array<vec4<f32>, HC>) -> array<vec4<f32>, HC> {
    let sums = c[0] + c[1] + c[2] + c[3] + vec4<f32>(params.eps);
    return array<vec4<f32>, HC>(c[0] / sums, c[1] / sums, c[2] / sums, c[3] / sums);
}

// Token t's mixing values, written to mix; returns its pre weights.
fn token_weights(t: u32, inv_rms: f32) -> vec4<f32> {
    let m = t * N_MIXES;
    let pre = pre_of(t, inv_rms);
    var post: vec4<f32>;
    var comb: array<vec4<f32>, HC>;
    for (var s = 0u; s < HC; s++) {
        post[s] = 2.0 * sigmoid(mixes[m + HC + s] * inv_rms * scale[1] + base[HC + s]);
        for (var d = 0u; d < HC; d++) {
            let i = 2u * HC + HC * s + d;
            comb[s][d] = mixes[m + i] * inv_rms * scale[2] + base[i];
        }
    }
    for (var s = 0u; s < HC; s++) {
        let r = comb[s];
        let e = exp(r - vec4<f32>(max(max(r.x, r.y), max(r.z, r.w))));
        comb[s] = e / (e.x + e.y + e.z + e.w) + vec4<f32>(params.eps);
    }
    comb = normalize_cols(comb);
    for (var i = 1u; i < params.sinkhorn_iterations; i++) {
        for (var s = 0u; s < HC; s++) {
            let r = comb[s];
            comb[s] = r / (r.x + r.y + r.z + r.w + params.eps);
        }
        comb = normalize_cols(comb);
    }
    for (var s = 0u; s < HC; s++) {
        mix[m + s] = pre[s];
        mix[m + HC + s] = post[s];
        for (var d = 0u; d < HC; d++) {
            mix[m + 2u * HC + HC * s + d] = comb[s][d];
        }
    }
    return pre;
}
