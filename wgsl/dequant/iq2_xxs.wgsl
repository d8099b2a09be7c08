// IQ2_XXS: 256 values as 8 groups of 32; each group is two words: four 8-bit indices into a
// 256-entry grid of 8 magnitudes (word a), and four 7-bit sign indices plus a 4-bit scale
// (word b, scale in the top 4 bits): value = d * (0.5 + scale) / 4 * grid[idx][j] * sign.
// The 8th sign bit of each index is its parity (ggml's ksigns_iq2xs table, computed here).
// GPU block (17 words): word 0 = d in the low half (high half padding), words 1..16 = groups.
// The grid (256 x 8 bytes, from moetile::quant) is a storage buffer, never a per-thread array.
// Expects: QK (256), BLOCK_WORDS (17), `weights: array<u32>`.
// Defines: the `iq2xxs_grid` binding, WRaw, wload, wdecode, dequant8 (the contract is in
//   q8_0.wgsl).

@group(0) @binding(7) var<storage, read> iq2xxs_grid: array<vec2<u32>, 256>;

// d, then the group's index word a and sign/scale word b.
alias WRaw = vec3<u32>;

fn wload(block: u32, group: u32) -> WRaw {
    let w = block * BLOCK_WORDS + 2u * (group / 4u);
    return vec3<u32>(weights[block * BLOCK_WORDS], weights[w + 1u], weights[w + 2u]);
}

fn wdecode(r: WRaw, group: u32) -> array<f32, 8> {
    let l = group % 4u;
    let db = unpack2x16float(r.x).x * (0.5 + f32(r.z >> 28u)) * 0.25;
    let grid = iq2xxs_grid[extractBits(r.y, 8u * l, 8u)];
    let s7 = extractBits(r.z, 7u * l, 7u);
    let signs = vec4<u32>(s7 | ((countOneBits(s7) & 1u) << 7u));
    // 1 - 2 * bit: +1 or -1 per value
    let s_lo = 1.0 - 2.0 * vec4<f32>((signs >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u));
    let s_hi = 1.0 - 2.0 * vec4<f32>((signs >> vec4<u32>(4u, 5u, 6u, 7u)) & vec4<u32>(1u));
    let lo = db * vec4<f32>(unpack4xU8(grid.x)) * s_lo;
    let hi = db * vec4<f32>(unpack4xU8(grid.y)) * s_hi;
    return array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
}

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    return wdecode(wload(block, group), group);
}
