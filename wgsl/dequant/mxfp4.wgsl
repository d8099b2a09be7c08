// MXFP4: 32 FP4 E2M1 codes sharing an E8M0 exponent e: value = KVALUES[q] * 2^(e - 128), where
// KVALUES are ggml's doubled E2M1 values (0, 1, 2, 3, 4, 6, 8, 12, then the same negated), hence
// the halved scale. Value j < 16 is the low nibble of code byte j, value j + 16 its high nibble.
// GPU block (5 words): word 0 = e in the low byte (the other three bytes are padding), words
// 1..5 = the 16 code bytes; group g reads the low (g < 2) or high nibbles of bytes 8 * (g % 2)
// .. + 8.
// Expects: QK (32), BLOCK_WORDS (5), `weights: array<u32>`.
// Defines: WRaw, wload, wdecode, dequant8 (the contract is in q8_0.wgsl).

// The word holding e, then the group's two code words.
alias WRaw = vec3<u32>;

// The eight E2M1 magnitudes (doubled), nibble m holding that of code m & 7: 0 1 2 3 4 6 8 12.
const MXFP4_MAGNITUDES: u32 = 0xc8643210u;

fn wload(block: u32, group: u32) -> WRaw {
    let w = block * BLOCK_WORDS;
    let q = w + 1u + 2u * (group % 2u);
    return vec3<u32>(weights[w], weights[q], weights[q + 1u]);
}

// The values of the four codes at bit `shift` of each byte of `w`, times `d`.
fn mxfp4_values4(w: u32, shift: u32, d: f32) -> vec4<f32> {
    let q = (vec4<u32>(w) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(15u);
    let m = (vec4<u32>(MXFP4_MAGNITUDES) >> (4u * (q & vec4<u32>(7u)))) & vec4<u32>(15u);
    // Bit 3 is the sign: 1 - 2 * bit.
    let sign = 1.0 - 2.0 * vec4<f32>(q >> vec4<u32>(3u));
    return vec4<f32>(m) * sign * d;
}

fn wdecode(r: WRaw, group: u32) -> array<f32, 8> {
    // 2^(e - 128) built from its bits as ggml_e8m0_to_fp32_half does: subnormal for e < 2,
    // which a GPU may flush to zero (e 0 and 1 only: blocks of values under 2^-123).
    let e = r.x & 0xffu;
    let d = bitcast<f32>(select((e - 1u) << 23u, 0x00200000u << e, e < 2u));
    let shift = 4u * (group / 2u);
    let lo = mxfp4_values4(r.y, shift, d);
    let hi = mxfp4_values4(r.z, shift, d);
    return array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
}

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    return wdecode(wload(block, group), group);
}
