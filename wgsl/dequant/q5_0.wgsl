// Q5_0: 32 5-bit quants with an f16 scale: value = d * (q - 16); bit j of `qh` is the fifth
// bit of value j.
// GPU block (6 words): word 0 = d in the low half (high half is padding), word 1 = qh,
// words 2..6 = low nibbles.
// Expects: QK (32), BLOCK_WORDS (6), `weights: array<u32>`, dequant/legacy.wgsl.
// Defines: dequant8(block, group): values 8 * group .. 8 * group + 8 of GPU block `block`.

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w0 = block * BLOCK_WORDS;
    let d = unpack2x16float(weights[w0]).x;
    let qh = weights[w0 + 1u];
    let q = nibbles8(w0 + 2u, group);
    var out: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let code = q[i] | (extractBits(qh, 8u * group + i, 1u) << 4u);
        out[i] = f32(i32(code) - 16) * d;
    }
    return out;
}
