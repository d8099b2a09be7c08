// deepseek4's attention of one query head of one token (a workgroup each) over its keys,
// which are also its values: the raw window (the last `window` positions up to its own) and
// the compressed rows it sees (b < (pos + 1) / ratio; when `masked`, the first
// min(that, top_k) rows listed in picked[t][..], ds4_index_pick's list), with the head's
// sink logit in the softmax denominator:
//   out = sum_j e^(s_j - M) k_j / (sum_j e^(s_j - M) + e^(sink - M)),  s_j = scale q . k_j
// The keys are walked in chunks of WG_SIZE, one key per thread while scoring, with a running
// maximum M (starting at the sink) that rescales what was summed before; while summing the
// values each thread owns the head dims li, li + WG_SIZE, ...
//
// Every loop bound and barrier is uniform over the workgroup (params and the workgroup id).
//
// Consts: WG_SIZE, MAX_HEAD_DIM.
// Fragments: grid.wgsl (GridGroup, linear_group), reduce/sum.wgsl (workgroup_sum).
// Params: Ds4AttnParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: Ds4AttnParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> raw: array<f32>;
@group(0) @binding(3) var<storage, read> comp: array<f32>;
@group(0) @binding(4) var<storage, read> picked: array<u32>;
@group(0) @binding(5) var<storage, read> sinks: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, WG_SIZE>;
var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> acc: array<f32, MAX_HEAD_DIM>;
var<workgroup> weights: array<f32, WG_SIZE>;
// The chunk's keys' rows: a compressed row, or a raw one with RAW_ROW set.
var<workgroup> key_rows: array<u32, WG_SIZE>;

const RAW_ROW: u32 = 0x80000000u;

// Token t's key j: raw keys first (from raw row r0), then its compressed rows (the listed ones
// from picked[list] when masked), as a key_rows entry.
fn key_row(j: u32, n_raw: u32, r0: u32, list: u32) -> u32 {
    if j < n_raw {
        return (r0 + j) | RAW_ROW;
    }
    if params.masked == 1u {
        return picked[list + j - n_raw];
    }
    return j - n_raw;
}

// Value d of the key in key_rows entry `at`.
fn key_value(at: u32, d: u32) -> f32 {
    let dim = params.head_dim;
    if at >= RAW_ROW {
        return raw[(at - RAW_ROW) * dim + d];
    }
    return comp[at * dim + d];
}

// The largest of every thread's `v`; every thread calls it in uniform control flow.
fn workgroup_max(li: u32, v: f32) -> f32 {
    partial[li] = v;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if li < s {
            partial[li] = max(partial[li], partial[li + s]);
        }
        workgroupBarrier();
    }
    let m = partial[0];
    workgroupBarrier();
    return m;
}

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let item = linear_group(grid);
    if item >= params.n_tokens * params.n_heads {
        return;
    }
    let dim = params.head_dim;
    let t = item / params.n_heads;
    let h = item - t * params.n_heads;
    let pos = params.pos0 + t;
    let n_raw = min(pos + 1u, params.window);
    // Raw row of position pos + 1 - n_raw (row raw_before + t holds position pos).
    let r0 = params.raw_before + t + 1u - n_raw;
    var n_comp = 0u;
    if params.ratio > 0u {
        n_comp = min((pos + 1u) / params.ratio, params.n_comp);
    }
    if params.masked == 1u {
        n_comp = min(n_comp, params.top_k);
    }
    let list = t * params.top_k;
    let n_keys = n_raw + n_comp;
    let q_at = item * dim;
    for (var d = li; d < dim; d += WG_SIZE) {
        qs[d] = q[q_at + d];
        acc[d] = 0.0;
    }
    workgroupBarrier();
    var m = sinks[h];
    var den = 1.0;
    for (var base = 0u; base < n_keys; base += WG_SIZE) {
        let j = base + li;
        let live = j < n_keys;
        var s = -3.0e38;
        if live {
            let at = key_row(j, n_raw, r0, list);
            key_rows[li] = at;
            var dot = 0.0;
            for (var d = 0u; d < dim; d++) {
                dot = fma(qs[d], key_value(at, d), dot);
            }
            s = dot * params.scale;
        }
        let m_new = max(m, workgroup_max(li, s));
        var e = 0.0;
        if live {
            e = exp(s - m_new);
        }
        weights[li] = e;
        let sum = workgroup_sum(li, e);
        let rescale = exp(m - m_new);
        den = fma(den, rescale, sum);
        m = m_new;
        let n = min(WG_SIZE, n_keys - base);
        for (var d = li; d < dim; d += WG_SIZE) {
            var a = acc[d] * rescale;
            for (var k = 0u; k < n; k++) {
                let w = weights[k];
                if w != 0.0 {
                    a = fma(w, key_value(key_rows[k], d), a);
                }
            }
            acc[d] = a;
        }
        workgroupBarrier();
    }
    for (var d = li; d < dim; d += WG_SIZE) {
        out[q_at + d] = acc[d] / den;
    }
}
