// Router, one workgroup per token: n_used experts in rank order, chosen by selection
//   0: the n_used largest logits in descending order, ties to the lower expert id (the
//      ranking compares logits, whose order every gating keeps)
//   1: the n_used largest of p_e + bias[e] (DeepSeek's exp_probs_b), ties to the lower id
//   2: given[t * n_used + k] (deepseek4's hash routing: ids the host read from its table)
// with weights p_e of
//   gating 0 (softmax): p_e = exp(l_e - max) / sum over all experts of exp(l - max)
//   gating 1 (sigmoid): p_e = 1 / (1 + exp(-l_e))
//   gating 2 (sqrt-softplus): p_e = sqrt(softplus(l_e))
// divided by their sum over the selected (at least 2^-14, ggml's floor) when normalize is
// set, times weight_scale. NaN logits (or biases) are never ranked in; a row of them gives
// id NO_EXPERT, which the map skips.
//
// The row is read from memory once, into workgroup memory; the maximum and the softmax sum
// are tree reductions there (in a fixed order, so the result does not depend on the subgroup
// size). Each expert then counts the experts that rank before it, four at a time over the
// whole row (no data-dependent exit, so the loads pipeline), and the n_used first write their
// slot: one pass, where picking the K winners one after the other costs K reductions. A
// thread per token instead would read the row n_used times serially: ~90 us per layer at
// decode on the H100. A biased ranking first turns each thread's own entries into p + bias
// in place (the raw logits of the winners are read again from memory).

// Every loop has a bound uniform over the workgroup or a constant one, and every
// workgroup-array index is in range by construction (the host refuses rows over MAX_EXPERTS
// and selections over MAX_USED, and checks given ids against n_experts;
// it may run this module without naga's loop guards and clamps).
//
// Consts: WG_SIZE, MAX_EXPERTS, MAX_USED.
// Fragments: grid.wgsl (GridGroup, linear_group).
// Params: RouteParams, declared by the generator from codegen/src/params.rs.

const_assert 0u == (WG_SIZE & (WG_SIZE - 1u));

@group(0) @binding(0) var<uniform> params: RouteParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;
// Selection 1 only, (n_experts); other selections bind any buffer here.
@group(0) @binding(4) var<storage, read> bias: array<f32>;
// Selection 2 only, (n_tokens, n_used); other selections bind any buffer here.
@group(0) @binding(5) var<storage, read> given: array<u32>;

const NO_EXPERT: u32 = 0xffffffffu;

// The row, NaN past its end (a NaN ranks before nothing).
var<workgroup> row_logits: array<vec4<f32>, MAX_EXPERTS / 4u>;
var<workgroup> partial: array<f32, WG_SIZE>;
// The selected experts in rank order, and their logits.
var<workgroup> picked_ids: array<u32, MAX_USED>;
var<workgroup> picked_values: array<f32, MAX_USED>;

// partial[0] = the combination of every thread's `v` (max, or sum).
fn reduce(li: u32, v: f32, is_max: bool) -> f32 {
    partial[li] = v;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if li < s {
            let other = partial[li + s];
            if is_max {
                partial[li] = max(partial[li], other);
            } else {
                partial[li] += other;
            }
        }
        workgroupBarrier();
    }
    let r = partial[0];
    workgroupBarrier();
    return r;
}

// ln(1 + e^x), and x itself above 20 as ggml cuts it. Below e^x = 1/16 a series: ln(1 + y)
// of a y that small would lose y's digits in the sum (and GPUs' log near 1 is only
// 2^-21-accurate in absolute terms); the terms past y^6 are below 1e-8 of it.
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        return x;
    }
    let y = exp(x);
    if y < 0.0625 {
        return y * (1.0 - y * (0.5 - y * (1.0 / 3.0 - y * (0.25 - y * (0.2 - y / 6.0)))));
    }
    return log(1.0 + y);
}

// The gate of logit v.
fn gate(v: f32, top: f32, total: f32) -> f32 {
    if params.gating == 0u {
        return exp(v - top) / total;
    }
    if params.gating == 2u {
        return sqrt(softplus(v));
    }
    return 1.0 / (1.0 + exp(-v));
}

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let t = linear_group(grid);
    if t >= params.n_tokens {
        return;
    }
    let n = params.n_experts;
    let row = t * n;
    let out = t * params.n_used;
    let n4 = (n + 3u) / 4u;
    var top = logits[row];
    for (var e = li; e < 4u * n4; e += WG_SIZE) {
        var v = bitcast<f32>(0x7fc00000u);
        if e < n {
            v = logits[row + e];
            top = max(top, v);
        }
        row_logits[e / 4u][e % 4u] = v;
    }
    for (var k = li; k < params.n_used; k += WG_SIZE) {
        picked_ids[k] = NO_EXPERT;
        picked_values[k] = 0.0;
    }
    top = reduce(li, top, true);
    var total = 0.0;
    if params.gating == 0u {
        for (var e = li; e < n; e += WG_SIZE) {
            total += exp(row_logits[e / 4u][e % 4u] - top);
        }
    }
    total = reduce(li, total, false);

    if params.selection == 2u {
        for (var k = li; k < params.n_used; k += WG_SIZE) {
            let id = given[out + k];
            picked_ids[k] = id;
            picked_values[k] = logits[row + id];
        }
    } else {
        if params.selection == 1u {
            // Each thread's own entries (the reductions' barriers are behind every read).
            for (var e = li; e < n; e += WG_SIZE) {
                let v = row_logits[e / 4u][e % 4u];
                row_logits[e / 4u][e % 4u] = gate(v, top, total) + bias[e];
            }
            workgroupBarrier();
        }
        // Each expert's rank; the first n_used take their slots.
        for (var e = li; e < n; e += WG_SIZE) {
            let v = row_logits[e / 4u][e % 4u];
            if !(v == v) {
                continue;
            }
            var before = vec4<u32>(0u);
            for (var q = 0u; q < n4; q++) {
                let w = row_logits[q];
                let f = vec4<u32>(4u * q) + vec4<u32>(0u, 1u, 2u, 3u);
                let ahead = (w > vec4<f32>(v)) | ((w == vec4<f32>(v)) & (f < vec4<u32>(e)));
                before += select(vec4<u32>(0u), vec4<u32>(1u), ahead);
            }
            let rank = before.x + before.y + before.z + before.w;
            if rank < params.n_used {
                picked_ids[rank] = e;
                picked_values[rank] = logits[row + e];
            }
        }
    }
    workgroupBarrier();

    // Every thread sums the selected gates in rank order (the same sum everywhere).
    var selected = 0.0;
    for (var k = 0u; k < params.n_used; k++) {
        if picked_ids[k] != NO_EXPERT {
            selected += gate(picked_values[k], top, total);
        }
    }
    var factor = params.weight_scale;
    if params.normalize != 0u {
        factor /= max(selected, 6.103515625e-5);
    }
    for (var k = li; k < params.n_used; k += WG_SIZE) {
        let id = picked_ids[k];
        ids[out + k] = id;
        weights[out + k] = select(0.0, gate(picked_values[k], top, total), id != NO_EXPERT)
            * factor;
    }
}
