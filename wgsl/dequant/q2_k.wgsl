// Q2_K: 256 values as 16 sub-blocks of 16, 2-bit quants, 4-bit scale and min per sub-block:
// value = d * (sc & 15) * q - dmin * (sc >> 4).
// GPU block = GGUF block (21 words): bytes 0..16 scales, 16..80 quants, 80..84 d | dmin << 16.
// Value v: half n = v / 128, j = (v % 128) / 32, l = v % 32 -> bits 2j.. of quant byte
// 32n + l, scale byte 8n + 2j + l / 16.
// Expects: QK (256), BLOCK_WORDS (21), `weights: array<u32>`, dequant/bytes.wgsl.
// Defines: dequant8(block, group): values 8 * group .. 8 * group + 8 of GPU block `block`.

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w0 = block * BLOCK_WORDS;
    let dm = unpack2x16float(weights[w0 + 20u]);
    let v0 = 8u * group;
    let n = v0 / 128u;
    let j = (v0 % 128u) / 32u;
    let l0 = v0 % 32u;
    let sc = weight_byte(w0, 8u * n + 2u * j + l0 / 16u);
    let d = dm.x * f32(sc & 15u);
    let m = dm.y * f32(sc >> 4u);
    let q = weight_words2(w0, 16u + 32u * n + l0);
    var out: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        out[i] = d * f32(extractBits(q[i / 4u], 8u * (i % 4u) + 2u * j, 2u)) - m;
    }
    return out;
}
