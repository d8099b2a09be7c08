// Q3_K: 256 values as 16 sub-blocks of 16, 3-bit quants (2 low bits + a high bit), 6-bit
// scale per sub-block: value = d * (scale - 32) * (q - 4 * !high).
// GPU block (28 words): bytes 0..32 high bits, 32..96 low bit pairs (as Q2_K), 96..108 scales,
// 108..110 d, 110..112 padding. Value v: half n = v / 128, j = (v % 128) / 32, l = v % 32 ->
// bits 2j.. of byte 32 + 32n + l, bit 4n + j of byte l; sub-block s = 8n + 2j + l / 16 has
// scale low nibble s / 8 of byte 96 + s % 8 and top bits 2 (s / 4).. of byte 104 + s % 4.
// Expects: QK (256), BLOCK_WORDS (28), `weights: array<u32>`, dequant/bytes.wgsl.
// Defines: dequant8(block, group): values 8 * group .. 8 * group + 8 of GPU block `block`.

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w0 = block * BLOCK_WORDS;
    let d = unpack2x16float(weights[w0 + 27u]).x;
    let v0 = 8u * group;
    let n = v0 / 128u;
    let j = (v0 % 128u) / 32u;
    let l0 = v0 % 32u;
    let s = 8u * n + 2u * j + l0 / 16u;
    let low = extractBits(weight_byte(w0, 96u + s % 8u), 4u * (s / 8u), 4u);
    let high = extractBits(weight_byte(w0, 104u + s % 4u), 2u * (s / 4u), 2u);
    let dl = d * f32(i32(low | (high << 4u)) - 32);
    let q = weight_words2(w0, 32u + 32u * n + l0);
    let h = weight_words2(w0, l0);
    var out: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let lo = i32(extractBits(q[i / 4u], 8u * (i % 4u) + 2u * j, 2u));
        let hi = extractBits(h[i / 4u], 8u * (i % 4u) + 4u * n + j, 1u);
        out[i] = dl * f32(lo - select(4, 0, hi == 1u));
    }
    return out;
}
