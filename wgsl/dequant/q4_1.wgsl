// Q4_1: 32 4-bit quants with an f16 scale and min: value = d * q + m.
// GPU block = GGUF block (5 words): word 0 = d | m << 16, words 1..5 = quants.
// Expects: QK (32), BLOCK_WORDS (5), `weights: array<u32>`, dequant/legacy.wgsl.
// Defines: dequant8(block, group): values 8 * group .. 8 * group + 8 of GPU block `block`.

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w0 = block * BLOCK_WORDS;
    let dm = unpack2x16float(weights[w0]);
    let q = nibbles8(w0 + 1u, group);
    var out: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        out[i] = f32(q[i]) * dm.x + dm.y;
    }
    return out;
}
