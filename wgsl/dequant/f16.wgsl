// F16 weights, read as blocks of 32 values (16 words).
// Expects: QK (32), BLOCK_WORDS (16), `weights: array<u32>`.
// Defines: dequant8(block, group): values 8 * group .. 8 * group + 8 of GPU block `block`.

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w = block * BLOCK_WORDS + 4u * group;
    let a = unpack2x16float(weights[w]);
    let b = unpack2x16float(weights[w + 1u]);
    let c = unpack2x16float(weights[w + 2u]);
    let d = unpack2x16float(weights[w + 3u]);
    return array<f32, 8>(a.x, a.y, b.x, b.y, c.x, c.y, d.x, d.y);
}
