// The packed 6-bit scales and mins of Q4_K and Q5_K (ggml's get_scale_min_k4).
// Expects: weight_byte (dequant/bytes.wgsl).
// Defines: scale_min_k4.

// (scale, min) of sub-block `sub` (0..8), from the 12 bytes at byte `at` of the block at `w0`.
fn scale_min_k4(w0: u32, at: u32, sub: u32) -> vec2<u32> {
    if sub < 4u {
        return vec2<u32>(weight_byte(w0, at + sub) & 63u, weight_byte(w0, at + sub + 4u) & 63u);
    }
    let packed = weight_byte(w0, at + sub + 4u);
    let scale_hi = weight_byte(w0, at + sub - 4u) >> 6u;
    let min_hi = weight_byte(w0, at + sub) >> 6u;
    return vec2<u32>((packed & 15u) | (scale_hi << 4u), (packed >> 4u) | (min_hi << 4u));
}
