// Q6_K: 256 values as 16 sub-blocks of 16, 6-bit quants, int8 scale per sub-block:
// value = d * scale * (q - 32).
// GPU block (53 words): bytes 0..128 low nibbles, 128..192 high bit pairs, 192..208 int8
// scales, 208..210 d, 210..212 padding. Value v: half n = v / 128, quarter k = (v % 128) / 32,
// l = v % 32 -> low nibble (k / 2) of byte 64n + 32(k % 2) + l, bits 2k.. of byte 128 + 32n + l,
// scale 192 + 8n + 2k + l / 16.
// Expects: QK (256), BLOCK_WORDS (53), `weights: array<u32>`, dequant/bytes.wgsl.
// Defines: dequant8(block, group): values 8 * group .. 8 * group + 8 of GPU block `block`.

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w0 = block * BLOCK_WORDS;
    let d = unpack2x16float(weights[w0 + 52u]).x;
    let v0 = 8u * group;
    let n = v0 / 128u;
    let k = (v0 % 128u) / 32u;
    let l0 = v0 % 32u;
    let ql = weight_words2(w0, 64u * n + 32u * (k % 2u) + l0);
    let qh = weight_words2(w0, 128u + 32u * n + l0);
    let sc = f32(extractBits(i32(weight_byte(w0, 192u + 8u * n + 2u * k + l0 / 16u)), 0u, 8u));
    let lo_shift = 4u * (k / 2u);
    let hi_shift = 2u * k;
    var out: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let lo = extractBits(ql[i / 4u], 8u * (i % 4u) + lo_shift, 4u);
        let hi = extractBits(qh[i / 4u], 8u * (i % 4u) + hi_shift, 2u);
        out[i] = d * sc * f32(i32(lo | (hi << 4u)) - 32);
    }
    return out;
}
