// Q2_K: 256 values as 16 sub-blocks of 16, 2-bit quants, 4-bit scale and min per sub-block:
// value = d * (sc & 15) * q - dmin * (sc >> 4).
// GPU block = GGUF block (21 words): bytes 0..16 scales, 16..80 quants, 80..84 d | dmin << 16.
// Value v: half n = v / 128, j = (v % 128) / 32, l = v % 32 -> bits 2j.. of quant byte
// 32n + l, scale byte 8n + 2j + l / 16.
// Expects: QK (256), BLOCK_WORDS (21), `weights: array<u32>`.
// Defines: WRaw, wload, wdecode, dequant8 (the contract is in q8_0.wgsl).

// d | dmin << 16, the word holding the group's scale byte, the group's two quant words.
alias WRaw = vec4<u32>;

fn wload(block: u32, group: u32) -> WRaw {
    let w = block * BLOCK_WORDS;
    let n = group / 16u;
    let l0 = 8u * (group % 4u);
    let j = (group % 16u) / 4u;
    let q = w + 4u + 8u * n + l0 / 4u;
    return vec4<u32>(weights[w + 20u], weights[w + 2u * n + j / 2u], weights[q], weights[q + 1u]);
}

fn wdecode(r: WRaw, group: u32) -> array<f32, 8> {
    let dm = unpack2x16float(r.x);
    let j = (group % 16u) / 4u;
    let l0 = 8u * (group % 4u);
    // scale byte 8n + 2j + l0 / 16 is byte (2j + l0 / 16) % 4 of its word
    let sc = extractBits(r.y, 8u * ((2u * j + l0 / 16u) % 4u), 8u);
    let d = dm.x * f32(sc & 15u);
    let m = dm.y * f32(sc >> 4u);
    let shift = vec4<u32>(0u, 8u, 16u, 24u) + 2u * j;
    let lo = fma(vec4<f32>((vec4<u32>(r.z) >> shift) & vec4<u32>(3u)), vec4<f32>(d), vec4<f32>(-m));
    let hi = fma(vec4<f32>((vec4<u32>(r.w) >> shift) & vec4<u32>(3u)), vec4<f32>(d), vec4<f32>(-m));
    return array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
}

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    return wdecode(wload(block, group), group);
}
