// F32 weights, read as blocks of 32 values (32 words).
// Expects: QK (32), BLOCK_WORDS (32), `weights: array<u32>`.
// Defines: dequant8(block, group): values 8 * group .. 8 * group + 8 of GPU block `block`.

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w = block * BLOCK_WORDS + 8u * group;
    var out: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        out[i] = bitcast<f32>(weights[w + i]);
    }
    return out;
}
