// What the Q2_K and Q6_K dot fragments share: a call takes a quarter of a block, the 16
// positions of part h of half n across the four 32-value quarters of that half, whose four
// 16-value sub-blocks have their scale bytes at 8n + 2j + h (j = 0..3, in two words).
// Expects: xd / xs16 (mv/x_int8.wgsl).
// Defines: quarter_scales, quarter_xd, quarter_sums.

// Scale bytes 2j + h (j = 0..3) of the two words s01 (bytes 0..3) and s23 (bytes 4..7).
fn quarter_scales(s01: u32, s23: u32, h: u32) -> vec4<u32> {
    return vec4<u32>(
        extractBits(s01, 8u * h, 8u),
        extractBits(s01, 8u * (2u + h), 8u),
        extractBits(s23, 8u * h, 8u),
        extractBits(s23, 8u * (2u + h), 8u),
    );
}

// The scales of activation blocks b .. b + 3 (the four quarters).
fn quarter_xd(b: u32) -> vec4<f32> {
    return vec4<f32>(xd(b), xd(b + 1u), xd(b + 2u), xd(b + 3u));
}

// The sums of half h of activation blocks b .. b + 3.
fn quarter_sums(b: u32, h: u32) -> vec4<f32> {
    return vec4<f32>(xs16(b, h), xs16(b + 1u, h), xs16(b + 2u, h), xs16(b + 3u, h));
}
