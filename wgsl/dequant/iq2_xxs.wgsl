// IQ2_XXS: 256 values as 8 groups of 32; each group is two words: four 8-bit indices into a
// 256-entry grid of 8 magnitudes (word a), and four 7-bit sign indices plus a 4-bit scale
// (word b, scale in the top 4 bits): value = d * (0.5 + scale) / 4 * grid[idx][j] * sign.
// The 8th sign bit of each index is its parity (ggml's ksigns_iq2xs table, computed here).
// GPU block (17 words): word 0 = d in the low half (high half padding), words 1..16 = groups.
// The grid (256 x 8 bytes, from moetile::quant) is a storage buffer, never a per-thread array.
// Expects: QK (256), BLOCK_WORDS (17), `weights: array<u32>`.
// Defines: the `iq2xxs_grid` binding, dequant8(block, group): values 8 * group .. + 8.

@group(0) @binding(7) var<storage, read> iq2xxs_grid: array<vec2<u32>, 256>;

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w0 = block * BLOCK_WORDS;
    let d = unpack2x16float(weights[w0]).x;
    let ib = group / 4u;
    let l = group % 4u;
    let a = weights[w0 + 1u + 2u * ib];
    let b = weights[w0 + 2u + 2u * ib];
    let db = d * (0.5 + f32(b >> 28u)) * 0.25;
    let grid = iq2xxs_grid[extractBits(a, 8u * l, 8u)];
    let s7 = extractBits(b, 7u * l, 7u);
    let signs = s7 | ((countOneBits(s7) & 1u) << 7u);
    var out: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let v = db * f32(extractBits(grid[i / 4u], 8u * (i % 4u), 8u));
        out[i] = select(v, -v, extractBits(signs, i, 1u) == 1u);
    }
    return out;
}
