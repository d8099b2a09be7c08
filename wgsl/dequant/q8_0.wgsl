// Q8_0: 32 int8 quants with an f16 scale, value = d * q.
// GPU block (9 words): word 0 = d in the low half (high half is padding), words 1..8 = quants.
// Expects: QK (32), BLOCK_WORDS (9), `weights: array<u32>`.
// Defines: dequant8(block, group): values 8 * group .. 8 * group + 8 of GPU block `block`.

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w = block * BLOCK_WORDS;
    let d = unpack2x16float(weights[w]).x;
    let lo = vec4<f32>(unpack4xI8(weights[w + 1u + 2u * group])) * d;
    let hi = vec4<f32>(unpack4xI8(weights[w + 2u + 2u * group])) * d;
    return array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
}
