// Q4_K: 256 values as 8 sub-blocks of 32, 4-bit quants, 6-bit scale and min per sub-block:
// value = d * scale * q - dmin * min.
// GPU block = GGUF block (36 words): word 0 = d | dmin << 16, bytes 4..16 packed scales/mins,
// bytes 16..144 quants; sub-block s reads the low (s even) or high (s odd) nibbles of quant
// bytes 32 * (s / 2) .. + 32.
// Expects: QK (256), BLOCK_WORDS (36), `weights: array<u32>`, dequant/bytes.wgsl,
//   dequant/scale_min_k4.wgsl.
// Defines: dequant8(block, group): values 8 * group .. 8 * group + 8 of GPU block `block`.

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    let w0 = block * BLOCK_WORDS;
    let dm = unpack2x16float(weights[w0]);
    let sub = group / 4u;
    let sm = scale_min_k4(w0, 4u, sub);
    let d = dm.x * f32(sm.x);
    let m = dm.y * f32(sm.y);
    let q = weight_words2(w0, 16u + 32u * (sub / 2u) + 8u * (group % 4u));
    let shift = 4u * (sub % 2u);
    var out: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        out[i] = d * f32(extractBits(q[i / 4u], 8u * (i % 4u) + shift, 4u)) - m;
    }
    return out;
}
