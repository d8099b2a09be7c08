// mv_id activations as int8: each round's values quantized per 32-value block in workgroup
// memory (d = max |x| / 127, q = round(x / d), ties to even; moetile_cpu::int8_blocks is the
// reference), and the weights multiplied in their integer form by 4-byte dot products
// (dot/<type>.wgsl: dot4I8Packed, one instruction on GPUs with integer dot products). As
// llama.cpp's q8_1 mat-vecs: each activation moves by at most d / 2, far below the weights'
// own quantization error, for a fraction of the decode work per weight.
// Per 8-value group the staging also keeps d * sum(q) for the weight types with offsets.
// Expects: WG_SIZE, LANES, QK, `params` (matmul.wgsl), QSTEP / wdot (dot/<type>.wgsl),
//   act_load / act_values (act/<type>.wgsl), value_weights (mv/plain.wgsl or mv/norm.wgsl),
//   mv_pairs (mv/<epilogue>.wgsl), pair_x0 / pair_block0 / NO_BLOCK (mv_id.wgsl).
// Defines: X_CHUNK, round_dot, xq, xd, xs16, xs32.

// Activation values staged per round (2 KiB of quants).
const X_CHUNK: u32 = 2048u;
const_assert X_CHUNK % QK == 0u;
const_assert QK % QSTEP == 0u;
// 8-value groups each thread stages.
const STAGE_GROUPS: u32 = X_CHUNK / 8u / WG_SIZE;
const_assert STAGE_GROUPS * WG_SIZE * 8u == X_CHUNK;

// Value 4i + j of the round is byte j of x_q[i].
var<workgroup> x_q: array<u32, X_CHUNK / 4u>;
// Per 32-value block: the scale d, per 8-value group max |x| and d * sum(q).
var<workgroup> x_d: array<f32, X_CHUNK / 32u>;
var<workgroup> x_max: array<vec4<f32>, X_CHUNK / 32u>;
var<workgroup> x_sum: array<vec4<f32>, X_CHUNK / 32u>;

// Quants 4i .. 4i + 3 of the round.
fn xq(i: u32) -> u32 {
    return x_q[i];
}

// The scale of 32-value block b of the round.
fn xd(b: u32) -> f32 {
    return x_d[b];
}

// The sum of the quantized values of half h (16 values) of block b.
fn xs16(b: u32, h: u32) -> f32 {
    let s = x_sum[b];
    return select(s.x + s.y, s.z + s.w, h == 1u);
}

// The sum of the quantized values of block b.
fn xs32(b: u32) -> f32 {
    let s = x_sum[b];
    return (s.x + s.y) + (s.z + s.w);
}

// This lane's share of the dot product of values c0 .. c0 + X_CHUNK (the round) of the
// group's pairs' rows, concatenated (pair_x0, pair_block0 in mv_id.wgsl), with row `row` of
// each pair's expert, activations times `scale`. Called by every thread in uniform control
// flow (it holds barriers); `valid` says whether the thread's row exists.
fn round_dot(group: u32, c0: u32, scale: f32, li: u32, lane: u32, row: u32, valid: bool) -> f32 {
    let groups = min(X_CHUNK, mv_pairs() * params.n_cols - c0) / 8u;
    var lo: array<vec4<f32>, STAGE_GROUPS>;
    var hi: array<vec4<f32>, STAGE_GROUPS>;
    for (var i = 0u; i < STAGE_GROUPS; i++) {
        let u = li + i * WG_SIZE;
        if u < groups {
            let at = c0 + 8u * u;
            let c = at % params.n_cols;
            let v = act_values(act_load(pair_x0(group, at / params.n_cols) + c / 8u));
            lo[i] = vec4<f32>(v[0], v[1], v[2], v[3]) * scale * value_weights(c);
            hi[i] = vec4<f32>(v[4], v[5], v[6], v[7]) * scale * value_weights(c + 4u);
            let m = max(abs(lo[i]), abs(hi[i]));
            x_max[u / 4u][u % 4u] = max(max(m.x, m.y), max(m.z, m.w));
        }
    }
    workgroupBarrier();
    for (var i = 0u; i < STAGE_GROUPS; i++) {
        let u = li + i * WG_SIZE;
        if u < groups {
            let m4 = x_max[u / 4u];
            let m = max(max(m4.x, m4.y), max(m4.z, m4.w));
            let d = m / 127.0;
            let inv = select(0.0, 127.0 / m, m > 0.0);
            let q_lo = vec4<i32>(round(lo[i] * inv));
            let q_hi = vec4<i32>(round(hi[i] * inv));
            x_q[2u * u] = pack4xI8(q_lo);
            x_q[2u * u + 1u] = pack4xI8(q_hi);
            let q_sum = q_lo + q_hi;
            x_sum[u / 4u][u % 4u] = d * f32(q_sum.x + q_sum.y + q_sum.z + q_sum.w);
            if u % 4u == 0u {
                x_d[u / 4u] = d;
            }
        }
    }
    workgroupBarrier();
    var sum = 0.0;
    if valid {
        // Pair by pair, so that no step divides by n_cols to find its weights: pair slot k
        // covers values first .. last of the concatenated rows (its own from k * n_cols). A
        // step's round offset v and its place c in the pair's row sit at the same place in
        // their block (c0 and n_cols are multiples of QK).
        let end = c0 + groups * 8u;
        for (var k = c0 / params.n_cols; k * params.n_cols < end; k++) {
            let block0 = pair_block0(group, k, row);
            if block0 == NO_BLOCK {
                continue;
            }
            let first = max(c0, k * params.n_cols);
            let last = min(end, (k + 1u) * params.n_cols);
            for (var v = first - c0 + lane * QSTEP; v < last - c0; v += LANES * QSTEP) {
                let c = c0 + v - k * params.n_cols;
                sum += wdot(block0 + c / QK, (v % QK) / QSTEP, v - v % QK);
            }
        }
    }
    workgroupBarrier();
    return sum;
}
