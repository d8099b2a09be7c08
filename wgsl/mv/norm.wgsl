// mv_id prologue: each activation row RMS-normed as it is read (the norm before a layer's
// projections, folded into them): value c of a row becomes x[c] / sqrt(mean(x^2) + eps) *
// norm_w[c]. Every workgroup reduces its row's squares itself (n_cols values, from cache).
// Expects: `params` (matmul.wgsl), act_load and act_values (act/<type>.wgsl), workgroup_sum
//   (reduce/sum.wgsl over mv_id.wgsl's `partial`).
// Defines: binding 6 (norm_w); row_scale, value_weights.

@group(0) @binding(6) var<storage, read> norm_w: array<vec4<f32>>;

// 1 / rms of the activation row starting at 8-value group x0. Called in uniform control flow
// (it holds barriers).
fn row_scale(x0: u32, li: u32) -> f32 {
    var sum = 0.0;
    for (var u = li; u < params.n_cols / 8u; u += WG_SIZE) {
        let v = act_values(act_load(x0 + u));
        let a = vec4<f32>(v[0], v[1], v[2], v[3]);
        let b = vec4<f32>(v[4], v[5], v[6], v[7]);
        sum += dot(a, a) + dot(b, b);
    }
    return 1.0 / sqrt(workgroup_sum(li, sum) / f32(params.n_cols) + params.norm_eps);
}

// The norm weights of values c .. c + 3 (c a multiple of 4).
fn value_weights(c: u32) -> vec4<f32> {
    return norm_w[c / 4u];
}
