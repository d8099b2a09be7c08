// Byte access into a GPU weight block.
// Expects: `weights: array<u32>` (declared by the template).
// Defines: weight_byte, weight_words2, nibbles4.

// Byte `byte` of the block starting at word `w0`.
fn weight_byte(w0: u32, byte: u32) -> u32 {
    return extractBits(weights[w0 + byte / 4u], 8u * (byte % 4u), 8u);
}

// Bytes `byte .. byte + 8` (byte a multiple of 4) of the block at word `w0`, as two words:
// byte `byte + i` is `extractBits(words[i / 4], 8 * (i % 4), 8)`.
fn weight_words2(w0: u32, byte: u32) -> vec2<u32> {
    let w = w0 + byte / 4u;
    return vec2<u32>(weights[w], weights[w + 1u]);
}

// The 4-bit fields at bit `shift` of each byte of `w`, as floats (byte 0 first).
fn nibbles4(w: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(w) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(15u));
}
