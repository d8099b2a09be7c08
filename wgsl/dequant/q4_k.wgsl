// Q4_K: 256 values as 8 sub-blocks of 32, 4-bit quants, 6-bit scale and min per sub-block:
// value = d * scale * q - dmin * min.
// GPU block = GGUF block (36 words): word 0 = d | dmin << 16, words 1..3 packed scales/mins,
// bytes 16..144 quants; sub-block s reads the low (s even) or high (s odd) nibbles of quant
// bytes 32 * (s / 2) .. + 32.
// Expects: QK (256), BLOCK_WORDS (36), `weights: array<u32>`, dequant/bytes.wgsl (nibbles4),
//   dequant/scale_min_k4.wgsl.
// Defines: WRaw, wload, wdecode, dequant8 (the contract is in q8_0.wgsl).

struct WRaw {
    // d | dmin << 16, then the three words of packed scales and mins.
    head: vec4<u32>,
    // The 8 quant bytes of the group.
    q: vec2<u32>,
}

fn wload(block: u32, group: u32) -> WRaw {
    let w = block * BLOCK_WORDS;
    let q = w + 4u + 8u * (group / 8u) + 2u * (group % 4u);
    return WRaw(
        vec4<u32>(weights[w], weights[w + 1u], weights[w + 2u], weights[w + 3u]),
        vec2<u32>(weights[q], weights[q + 1u]),
    );
}

fn wdecode(r: WRaw, group: u32) -> array<f32, 8> {
    let dm = unpack2x16float(r.head.x);
    let sub = group / 4u;
    let sm = vec2<f32>(scale_min_k4(r.head.yzw, sub)) * dm;
    let shift = 4u * (sub % 2u);
    let lo = fma(nibbles4(r.q.x, shift), vec4<f32>(sm.x), vec4<f32>(-sm.y));
    let hi = fma(nibbles4(r.q.y, shift), vec4<f32>(sm.x), vec4<f32>(-sm.y));
    return array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
}

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    return wdecode(wload(block, group), group);
}
