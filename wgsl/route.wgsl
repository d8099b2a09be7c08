// Router, one workgroup per token: the n_used largest of the token's n_experts logits in
// descending order, ties to the lower expert id (the selection compares logits, whose order
// softmax and sigmoid keep), with weights
//   gating 0 (softmax): p_e = exp(l_e - max) / sum over all experts of exp(l - max)
//   gating 1 (sigmoid): p_e = 1 / (1 + exp(-l_e))
// divided by their sum over the selected when normalize is set, times weight_scale. NaN
// logits are never selected; a row of them gives id NO_EXPERT, which the map skips.
// Threads take every WG_SIZE-th expert; each of the n_used picks is a tree reduction in
// workgroup memory (in a fixed order, so the result does not depend on the subgroup size).
// A thread per token instead would read the row n_used times serially: ~90 us per layer
// at decode on the H100.
//
// Every loop has a bound uniform over the workgroup and every workgroup-array index is in
// range by construction (the host may run this module without naga's loop guards and clamps).
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_group).
// Params: RouteParams, declared by the generator from codegen/src/params.rs.

const_assert 0u == (WG_SIZE & (WG_SIZE - 1u));

@group(0) @binding(0) var<uniform> params: RouteParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;

const NO_EXPERT: u32 = 0xffffffffu;

var<workgroup> best_values: array<f32, WG_SIZE>;
var<workgroup> best_ids: array<u32, WG_SIZE>;

// Whether candidate (v, e) ranks before (w, f): higher value, then lower id; NO_EXPERT last.
fn ranks_before(v: f32, e: u32, w: f32, f: u32) -> bool {
    if e == NO_EXPERT {
        return false;
    }
    return f == NO_EXPERT || v > w || (v == w && e < f);
}

// best_values[0] = the combination of every thread's `v` (max, or sum).
fn reduce(li: u32, v: f32, is_max: bool) -> f32 {
    best_values[li] = v;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if li < s {
            let other = best_values[li + s];
            if is_max {
                best_values[li] = max(best_values[li], other);
            } else {
                best_values[li] += other;
            }
        }
        workgroupBarrier();
    }
    let r = best_values[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let t = linear_group(grid);
    if t >= params.n_tokens {
        return;
    }
    let row = t * params.n_experts;
    let out = t * params.n_used;
    var top = logits[row];
    for (var e = li; e < params.n_experts; e += WG_SIZE) {
        top = max(top, logits[row + e]);
    }
    top = reduce(li, top, true);
    var total = 0.0;
    if params.gating == 0u {
        for (var e = li; e < params.n_experts; e += WG_SIZE) {
            total += exp(logits[row + e] - top);
        }
    }
    total = reduce(li, total, false);
    var prev_value = 0.0;
    var prev_id = NO_EXPERT;
    var selected = 0.0;
    for (var k = 0u; k < params.n_used; k++) {
        // This thread's best candidate after the previous pick in (value descending, id
        // ascending) order, then the workgroup's.
        var best = NO_EXPERT;
        var best_value = 0.0;
        for (var e = li; e < params.n_experts; e += WG_SIZE) {
            let v = logits[row + e];
            let after = k == 0u || v < prev_value || (v == prev_value && e > prev_id);
            if after && v == v && ranks_before(v, e, best_value, best) {
                best = e;
                best_value = v;
            }
        }
        best_values[li] = best_value;
        best_ids[li] = best;
        workgroupBarrier();
        for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
            if li < s {
                let v = best_values[li + s];
                let e = best_ids[li + s];
                if ranks_before(v, e, best_values[li], best_ids[li]) {
                    best_values[li] = v;
                    best_ids[li] = e;
                }
            }
            workgroupBarrier();
        }
        best = best_ids[0];
        best_value = best_values[0];
        workgroupBarrier();
        var p = 0.0;
        if best != NO_EXPERT {
            if params.gating == 0u {
                p = exp(best_value - top) / total;
            } else {
                p = 1.0 / (1.0 + exp(-best_value));
            }
        }
        if li == 0u {
            ids[out + k] = best;
            weights[out + k] = p;
        }
        selected += p;
        prev_value = best_value;
        prev_id = best;
    }
    var factor = params.weight_scale;
    if params.normalize != 0u {
        factor /= selected;
    }
    if li == 0u {
        for (var k = 0u; k < params.n_used; k++) {
            weights[out + k] *= factor;
        }
    }
}
