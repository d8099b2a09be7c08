// IQ2_XXS against int8 activations. One call takes one 32-value group (two words: four grid
// indices, four 7-bit sign sets and the 4-bit scale): each grid entry's 8 magnitudes (< 64)
// become signed bytes by negating, byte-wise, those whose sign bit is set (x ^ 0xFF + 1 never
// carries, the magnitudes being nonzero).
// Expects: QK (256), BLOCK_WORDS (17), `weights: array<u32>`, iq2xxs_grid
//   (dequant/iq2_xxs.wgsl), xq / xd (mv/x_int8.wgsl).
// Defines: QSTEP, wdot (the contract is in dot/q8_0.wgsl).

const QSTEP: u32 = 32u;

// 0xFF in byte i of the result where bit i of `bits` (4 bits) is set.
fn byte_mask4(bits: u32) -> u32 {
    // bit i moves to bit 8i (the shifted copies do not overlap), then 1 -> 0xFF per byte
    return ((bits * 0x00204081u) & 0x01010101u) * 0xFFu;
}

fn signed_bytes(magnitudes: u32, bits: u32) -> u32 {
    let m = byte_mask4(bits);
    return (magnitudes ^ m) + (m & 0x01010101u);
}

fn wdot(block: u32, step: u32, xb: u32) -> f32 {
    let w = block * BLOCK_WORDS;
    let idx = weights[w + 1u + 2u * step];
    let ss = weights[w + 2u + 2u * step];
    let x0 = (xb + QSTEP * step) / 4u;
    var acc = 0;
    for (var l = 0u; l < 4u; l++) {
        let grid = iq2xxs_grid[extractBits(idx, 8u * l, 8u)];
        let s7 = extractBits(ss, 7u * l, 7u);
        let signs = s7 | ((countOneBits(s7) & 1u) << 7u);
        acc += dot4I8Packed(signed_bytes(grid.x, signs & 15u), xq(x0 + 2u * l))
            + dot4I8Packed(signed_bytes(grid.y, signs >> 4u), xq(x0 + 2u * l + 1u));
    }
    let db = unpack2x16float(weights[w]).x * (0.5 + f32(ss >> 28u)) * 0.25;
    return db * xd((xb + QSTEP * step) / 32u) * f32(acc);
}
