// BF16 weights (the top half of an f32), read as blocks of 32 values (16 words); the value in
// a word's low half comes first.
// Expects: QK (32), BLOCK_WORDS (16), `weights: array<u32>`.
// Defines: dequant8(block, group): values 8 * group .. 8 * group + 8 of GPU block `block`.

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w = block * BLOCK_WORDS + 4u * group;
    var out: array<f32, 8>;
    for (var i = 0u; i < 4u; i++) {
        let pair = weights[w + i];
        out[2u * i] = bitcast<f32>(pair << 16u);
        out[2u * i + 1u] = bitcast<f32>(pair & 0xffff0000u);
    }
    return out;
}
