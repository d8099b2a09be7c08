// Router, one invocation per token: the n_used largest of the token's n_experts logits in
// descending order, ties to the lower expert id (the selection compares logits, whose order
// softmax and sigmoid keep), with weights
//   gating 0 (softmax): p_e = exp(l_e - max) / sum over all experts of exp(l - max)
//   gating 1 (sigmoid): p_e = 1 / (1 + exp(-l_e))
// divided by their sum over the selected when normalize is set, times weight_scale. NaN
// logits are never selected; a row of them gives id NO_EXPERT, which the map skips.
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_index).

struct RouteParams {
    n_tokens: u32,
    n_experts: u32,
    n_used: u32,
    gating: u32,
    normalize: u32,
    weight_scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: RouteParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;

const NO_EXPERT: u32 = 0xffffffffu;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let t = linear_index(grid, li);
    if t >= params.n_tokens {
        return;
    }
    let row = t * params.n_experts;
    let out = t * params.n_used;
    var top = logits[row];
    for (var e = 1u; e < params.n_experts; e++) {
        top = max(top, logits[row + e]);
    }
    var total = 0.0;
    if params.gating == 0u {
        for (var e = 0u; e < params.n_experts; e++) {
            total += exp(logits[row + e] - top);
        }
    }
    var prev_value = 0.0;
    var prev_id = NO_EXPERT;
    var selected = 0.0;
    for (var k = 0u; k < params.n_used; k++) {
        var best = NO_EXPERT;
        var best_value = 0.0;
        for (var e = 0u; e < params.n_experts; e++) {
            let v = logits[row + e];
            // Only candidates after the previous pick in (value descending, id ascending) order.
            let after = k == 0u || v < prev_value || (v == prev_value && e > prev_id);
            if after && (best == NO_EXPERT || v > best_value) {
                best = e;
                best_value = v;
            }
        }
        var p = 0.0;
        if best != NO_EXPERT {
            if params.gating == 0u {
                p = exp(best_value - top) / total;
            } else {
                p = 1.0 / (1.0 + exp(-best_value));
            }
        }
        ids[out + k] = best;
        weights[out + k] = p;
        selected += p;
        prev_value = best_value;
        prev_id = best;
    }
    var factor = params.weight_scale;
    if params.normalize != 0u {
        factor /= selected;
    }
    for (var k = 0u; k < params.n_used; k++) {
        weights[out + k] *= factor;
    }
}
