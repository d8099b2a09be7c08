// Router, one workgroup per token: the n_used largest of the token's n_experts logits in
// descending order, ties to the lower expert id (the selection compares logits, whose order
// softmax and sigmoid keep), with weights
//   gating 0 (softmax): p_e = exp(l_e - max) / sum over all experts of exp(l - max)
//   gating 1 (sigmoid): p_e = 1 / (1 + exp(-l_e))
// divided by their sum over the selected when normalize is set, times weight_scale. NaN
// logits are never selected; slots past the experts with a number stay NO_EXPERT, which the
// map skips. Threads take every WG_SIZE-th expert for the maximum and the softmax sum (tree
// reductions in workgroup memory, in a fixed order, so the result does not depend on the
// subgroup size) and for the selection: an expert's rank is the count of experts ranking
// before it (the row read from cache, no barrier), and the first n_used write their slots.
// The earlier selection, n_used rounds of a tree reduction, took ~27 us a layer with the
// router mat-vec at decode on the H100; a thread per token, reading the row n_used times,
// ~90 us.
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
// The selected experts' weights before the final factor, by slot (the host keeps n_used <=
// WG_SIZE).
var<workgroup> selected_p: array<f32, WG_SIZE>;

// From the bits: compilers may fold `v != v` to false, assuming no NaNs.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Whether expert e of logit v ranks before expert f of logit w: higher value, then lower id.
fn ranks_before(v: f32, e: u32, w: f32, f: u32) -> bool {
    return v > w || (v == w && e < f);
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
    // Slots past the experts whose logit is a number stay empty.
    for (var k = li; k < params.n_used; k += WG_SIZE) {
        ids[out + k] = NO_EXPERT;
        weights[out + k] = 0.0;
        selected_p[k] = 0.0;
    }
    storageBarrier();
    workgroupBarrier();
    // An expert's rank is how many experts rank before it; the first n_used take their slots.
    for (var e = li; e < params.n_experts; e += WG_SIZE) {
        let v = logits[row + e];
        if is_nan(v) {
            continue;
        }
        var rank = 0u;
        for (var f = 0u; f < params.n_experts && rank < params.n_used; f++) {
            let w = logits[row + f];
            if !is_nan(w) && ranks_before(w, f, v, e) {
                rank++;
            }
        }
        if rank < params.n_used {
            var p = 1.0 / (1.0 + exp(-v));
            if params.gating == 0u {
                p = exp(v - top) / total;
            }
            ids[out + rank] = e;
            selected_p[rank] = p;
        }
    }
    workgroupBarrier();
    // The selected weights' sum in rank order, the same in every thread.
    var selected = 0.0;
    for (var k = 0u; k < params.n_used; k++) {
        selected += selected_p[k];
    }
    var factor = params.weight_scale;
    if params.normalize != 0u {
        factor /= selected;
    }
    for (var k = li; k < params.n_used; k += WG_SIZE) {
        weights[out + k] = selected_p[k] * factor;
    }
}
