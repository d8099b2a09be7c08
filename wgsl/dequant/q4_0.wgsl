// Q4_0: 32 4-bit quants with an f16 scale: value = d * (q - 8).
// GPU block (5 words): word 0 = d in the low half (high half is padding), words 1..5 = quants.
// Expects: QK (32), BLOCK_WORDS (5), `weights: array<u32>`, dequant/legacy.wgsl.
// Defines: dequant8(block, group): values 8 * group .. 8 * group + 8 of GPU block `block`.

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w0 = block * BLOCK_WORDS;
    let d = unpack2x16float(weights[w0]).x;
    let q = nibbles8(w0 + 1u, group);
    var out: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        out[i] = f32(i32(q[i]) - 8) * d;
    }
    return out;
}
