// mv/sum.wgsl's per-expert down biases (gpt-oss), each times its pair's route weight: `mid`
// holds the route weight already (mv/glu.wgsl scales it, and down is linear), so
// w * (down . mid + b) = down . (w mid) + w b. Pair p's expert is ids[p], its bias a row of
// an (E, D) matrix; a pair of no expert in the bound chunk adds nothing, as its product does.
// Expects: `ids` (mv_id.wgsl), `params` (matmul.wgsl).
// Defines: bindings 5 (route), 8 (down_bias; binding 7 is IQ2_XXS's grid); sum_bias(t, row): output `row`'s biases summed
//   over token t's K pairs.

@group(0) @binding(5) var<storage, read> route: array<f32>;
@group(0) @binding(8) var<storage, read> down_bias: array<f32>;

fn sum_bias(t: u32, row: u32) -> f32 {
    var b = 0.0;
    for (var k = 0u; k < params.n_used; k++) {
        let p = t * params.n_used + k;
        let e = ids[p];
        if e >= params.expert_base && e - params.expert_base < params.expert_count {
            b = fma(route[p], down_bias[e * params.n_rows + row], b);
        }
    }
    return b;
}
