// Q6_K: 256 values as 16 sub-blocks of 16, 6-bit quants, int8 scale per sub-block:
// value = d * scale * (q - 32).
// GPU block (53 words): bytes 0..128 low nibbles, 128..192 high bit pairs, 192..208 int8
// scales, 208..210 d, 210..212 padding. Value v: half n = v / 128, quarter k = (v % 128) / 32,
// l = v % 32 -> low nibble (k / 2) of byte 64n + 32(k % 2) + l, bits 2k.. of byte 128 + 32n + l,
// scale 192 + 8n + 2k + l / 16.
// Expects: QK (256), BLOCK_WORDS (53), `weights: array<u32>`, dequant/bytes.wgsl (nibbles4).
// Defines: WRaw, wload, wdecode, dequant8 (the contract is in q8_0.wgsl).

struct WRaw {
    // The group's low-nibble words (xy) and high-bit-pair words (zw).
    q: vec4<u32>,
    // The word holding the group's scale byte, and d.
    sd: vec2<u32>,
}

fn wload(block: u32, group: u32) -> WRaw {
    let w = block * BLOCK_WORDS;
    let n = group / 16u;
    let k = (group % 16u) / 4u;
    let l0 = 8u * (group % 4u);
    let ql = w + 16u * n + 8u * (k % 2u) + l0 / 4u;
    let qh = w + 32u + 8u * n + l0 / 4u;
    return WRaw(
        vec4<u32>(weights[ql], weights[ql + 1u], weights[qh], weights[qh + 1u]),
        vec2<u32>(weights[w + 48u + 2u * n + k / 2u], weights[w + 52u]),
    );
}

fn wdecode(r: WRaw, group: u32) -> array<f32, 8> {
    let k = (group % 16u) / 4u;
    let l0 = 8u * (group % 4u);
    // scale byte 8n + 2k + l0 / 16 is byte (2k + l0 / 16) % 4 of its word
    let sc = f32(extractBits(i32(r.sd.x), 8u * ((2u * k + l0 / 16u) % 4u), 8u));
    let d = unpack2x16float(r.sd.y).x * sc;
    let hs = vec4<u32>(0u, 8u, 16u, 24u) + 2u * k;
    let q_lo = nibbles4(r.q.x, 4u * (k / 2u)) + 16.0 * vec4<f32>((vec4<u32>(r.q.z) >> hs) & vec4<u32>(3u));
    let q_hi = nibbles4(r.q.y, 4u * (k / 2u)) + 16.0 * vec4<f32>((vec4<u32>(r.q.w) >> hs) & vec4<u32>(3u));
    let lo = d * (q_lo - 32.0);
    let hi = d * (q_hi - 32.0);
    return array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
}

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    return wdecode(wload(block, group), group);
}
