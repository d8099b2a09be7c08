// mv_id activations as f32: each round's values staged in workgroup memory as they are, and
// the weights decoded to f32 (dequant/<type>.wgsl) and multiplied by FMAs. Exact up to f32
// rounding; every weight type has it.
// Each row is reduced by LANES threads: lane l takes 8-value groups l, l + LANES, ..., UNROLL
// per iteration with all their loads issued before the arithmetic.
// Expects: WG_SIZE, LANES, QK, `params` (matmul.wgsl), WRaw / wload / wdecode
//   (dequant/<type>.wgsl), act_load / act_values (act/<type>.wgsl), value_weights
//   (mv/plain.wgsl or mv/norm.wgsl), mv_pairs (mv/<epilogue>.wgsl), pair_x0 / pair_block0 /
//   NO_BLOCK (mv_id.wgsl).
// Defines: X_CHUNK, round_dot.

// 8-value groups per lane and iteration.
const UNROLL: u32 = 4u;
// 8-value groups per weight block.
const PER_BLOCK: u32 = QK / 8u;
// Activation values staged per round (8 KiB as f32).
const X_CHUNK: u32 = 2048u;
const_assert X_CHUNK % QK == 0u;

var<workgroup> x_tile: array<vec4<f32>, X_CHUNK / 4u>;

// This lane's share of the dot product of values c0 .. c0 + X_CHUNK (the round) of the
// group's pairs' rows, concatenated (pair_x0, pair_block0 in mv_id.wgsl), with row `row` of
// each pair's expert, activations times `scale`. Called by every thread in uniform control
// flow (it holds barriers); `valid` says whether the thread's row exists.
fn round_dot(group: u32, c0: u32, scale: f32, li: u32, lane: u32, row: u32, valid: bool) -> f32 {
    // Stage this round's activations: group u of the round is x_tile[2u], x_tile[2u + 1].
    let groups = min(X_CHUNK, mv_pairs() * params.n_cols - c0) / 8u;
    for (var u = li; u < groups; u += WG_SIZE) {
        let at = c0 + 8u * u;
        let c = at % params.n_cols;
        let v = act_values(act_load(pair_x0(group, at / params.n_cols) + c / 8u));
        x_tile[2u * u] = vec4<f32>(v[0], v[1], v[2], v[3]) * scale * value_weights(c);
        x_tile[2u * u + 1u] = vec4<f32>(v[4], v[5], v[6], v[7]) * scale * value_weights(c + 4u);
    }
    workgroupBarrier();
    var sum = 0.0;
    if valid {
        // Pair by pair, so that no group divides by n_cols to find its weights: pair slot k
        // covers 8-value groups first .. last of the concatenated rows (its own groups from
        // k * row_groups).
        let row_groups = params.n_cols / 8u;
        let end = c0 / 8u + groups;
        for (var k = c0 / params.n_cols; k * row_groups < end; k++) {
            let block0 = pair_block0(group, k, row);
            if block0 == NO_BLOCK {
                continue;
            }
            let first = max(c0 / 8u, k * row_groups);
            let last = min(end, (k + 1u) * row_groups);
            for (var g0 = first + lane; g0 < last; g0 += UNROLL * LANES) {
                var w: array<WRaw, UNROLL>;
                for (var u = 0u; u < UNROLL; u++) {
                    let g = g0 + u * LANES - k * row_groups;
                    w[u] = WRaw();
                    if g0 + u * LANES < last {
                        w[u] = wload(block0 + g / PER_BLOCK, g % PER_BLOCK);
                    }
                }
                // Zero words decode to zeros: groups past the pair's span add nothing.
                for (var u = 0u; u < UNROLL; u++) {
                    let g = g0 + u * LANES;
                    let v = wdecode(w[u], (g - k * row_groups) % PER_BLOCK);
                    let at = 2u * (min(g, last - 1u) - c0 / 8u);
                    sum += dot(vec4<f32>(v[0], v[1], v[2], v[3]), x_tile[at])
                        + dot(vec4<f32>(v[4], v[5], v[6], v[7]), x_tile[at + 1u]);
                }
            }
        }
    }
    workgroupBarrier();
    return sum;
}
