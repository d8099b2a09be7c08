// Q5_K: Q4_K plus a fifth bit per value: value = d * scale * (q + 16 * h) - dmin * min.
// GPU block = GGUF block (44 words): word 0 = d | dmin << 16, bytes 4..16 packed scales/mins,
// bytes 16..48 high bits (bit s of byte l is value l of sub-block s), bytes 48..176 low nibbles
// (as Q4_K).
// Expects: QK (256), BLOCK_WORDS (44), `weights: array<u32>`, dequant/bytes.wgsl,
//   dequant/scale_min_k4.wgsl.
// Defines: dequant8(block, group): values 8 * group .. 8 * group + 8 of GPU block `block`.

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w0 = block * BLOCK_WORDS;
    let dm = unpack2x16float(weights[w0]);
    let sub = group / 4u;
    let sm = scale_min_k4(w0, 4u, sub);
    let d = dm.x * f32(sm.x);
    let m = dm.y * f32(sm.y);
    let l0 = 8u * (group % 4u);
    let q = weight_words2(w0, 48u + 32u * (sub / 2u) + l0);
    let h = weight_words2(w0, 16u + l0);
    let shift = 4u * (sub % 2u);
    var out: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let lo = extractBits(q[i / 4u], 8u * (i % 4u) + shift, 4u);
        let hi = extractBits(h[i / 4u], 8u * (i % 4u) + sub, 1u);
        out[i] = d * f32(lo | (hi << 4u)) - m;
    }
    return out;
}
