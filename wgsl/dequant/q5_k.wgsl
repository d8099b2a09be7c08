// Q5_K: Q4_K plus a fifth bit per value: value = d * scale * (q + 16 * h) - dmin * min.
// GPU block = GGUF block (44 words): word 0 = d | dmin << 16, words 1..3 packed scales/mins,
// bytes 16..48 high bits (bit s of byte l is value l of sub-block s), bytes 48..176 low nibbles
// (as Q4_K).
// Expects: QK (256), BLOCK_WORDS (44), `weights: array<u32>`, dequant/bytes.wgsl (nibbles4),
//   dequant/scale_min_k4.wgsl.
// Defines: WRaw, wload, wdecode, dequant8 (the contract is in q8_0.wgsl).

struct WRaw {
    // d | dmin << 16, then the three words of packed scales and mins.
    head: vec4<u32>,
    // The group's low nibbles (xy) and high-bit bytes (zw).
    q: vec4<u32>,
}

fn wload(block: u32, group: u32) -> WRaw {
    let w = block * BLOCK_WORDS;
    let q = w + 12u + 8u * (group / 8u) + 2u * (group % 4u);
    let h = w + 4u + 2u * (group % 4u);
    return WRaw(
        vec4<u32>(weights[w], weights[w + 1u], weights[w + 2u], weights[w + 3u]),
        vec4<u32>(weights[q], weights[q + 1u], weights[h], weights[h + 1u]),
    );
}

fn wdecode(r: WRaw, group: u32) -> array<f32, 8> {
    let dm = unpack2x16float(r.head.x);
    let sub = group / 4u;
    let sm = vec2<f32>(scale_min_k4(r.head.yzw, sub)) * dm;
    let shift = 4u * (sub % 2u);
    let bit = vec4<u32>(0u, 8u, 16u, 24u) + sub;
    let h_lo = vec4<f32>((vec4<u32>(r.q.z) >> bit) & vec4<u32>(1u));
    let h_hi = vec4<f32>((vec4<u32>(r.q.w) >> bit) & vec4<u32>(1u));
    let lo = fma(fma(h_lo, vec4<f32>(16.0), nibbles4(r.q.x, shift)), vec4<f32>(sm.x), vec4<f32>(-sm.y));
    let hi = fma(fma(h_hi, vec4<f32>(16.0), nibbles4(r.q.y, shift)), vec4<f32>(sm.x), vec4<f32>(-sm.y));
    return array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
}

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    return wdecode(wload(block, group), group);
}
